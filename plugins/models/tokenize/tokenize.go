// Package tokenize implements, in pure Go, the two HuggingFace tokenizers the
// model backends need:
//
//   - [BPE]: GPT-2's byte-level BPE, identical to transformers' (slow, Python)
//     GPT2Tokenizer;
//   - [WordPiece]: BERT's BasicTokenizer + WordPiece, identical to
//     transformers' (slow, Python) BertTokenizer.
//
// Both load from a checkpoint directory as written by save_pretrained
// (vocab.json + merges.txt, or vocab.txt, with tokenizer_config.json and
// special_tokens_map.json when present) or from a fast-tokenizer
// tokenizer.json. Whatever file the vocabulary comes from, tokenization
// follows the slow Python tokenizers' algorithms, which are the reference the
// parity tests check against.
//
// Tokenizers are safe for concurrent use once loaded.
package tokenize

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"unicode"
)

// Encoding is the result of encoding a text: token ids and, position for
// position, the token strings they stand for (for GPT-2 in the byte-level
// alphabet, e.g. "Ġcapital"; for BERT word pieces, e.g. "##ing").
type Encoding struct {
	// IDs are the vocabulary ids, in order.
	IDs []int
	// Tokens are the token strings of IDs, position for position.
	Tokens []string
}

// Tokenizer is what both tokenizers offer the model backends.
type Tokenizer interface {
	// Encode tokenizes text as the HuggingFace tokenizer's encode() does with
	// its default arguments: GPT-2 adds no special token (no BOS unless the
	// checkpoint sets add_bos_token), BERT wraps the pieces in [CLS] … [SEP].
	Encode(text string) (Encoding, error)
	// Decode turns ids back into text as the HuggingFace tokenizer's decode()
	// does with its default arguments. Unknown ids are skipped.
	Decode(ids []int) string
	// TokenToID looks up a token string (added tokens first, then the
	// vocabulary).
	TokenToID(tok string) (int, bool)
	// IDToToken looks up an id's token string.
	IDToToken(id int) (string, bool)
	// VocabSize is one more than the largest id, added tokens included: the
	// number of rows an embedding matrix for this tokenizer has.
	VocabSize() int
}

var (
	_ Tokenizer = (*BPE)(nil)
	_ Tokenizer = (*WordPiece)(nil)
)

// vocabulary is the token <-> id table both tokenizers share, including the
// added tokens (special tokens and user-added ones).
type vocabulary struct {
	encoder  map[string]int // the model's vocabulary
	decoder  map[int]string // the model's vocabulary, by id
	added    addedVocab
	maxID    int
	specials map[string]bool // all_special_tokens: the named ones and additional_special_tokens
	extra    map[string]bool // additional_special_tokens
}

func newVocabulary(enc map[string]int) *vocabulary {
	v := &vocabulary{encoder: enc, decoder: make(map[int]string, len(enc)), maxID: -1,
		specials: map[string]bool{}, extra: map[string]bool{}}
	// Like Python's {v: k for k, v in vocab.items()} the decoder keeps one
	// token per id; iterate in a fixed order so that duplicates resolve
	// deterministically (the lexically last token wins).
	keys := make([]string, 0, len(enc))
	for k := range enc {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		id := enc[k]
		v.decoder[id] = k
		if id > v.maxID {
			v.maxID = id
		}
	}
	return v
}

func (v *vocabulary) tokenToID(tok string) (int, bool) {
	if a, ok := v.added.byContent[tok]; ok {
		return a.ID, true
	}
	id, ok := v.encoder[tok]
	return id, ok
}

func (v *vocabulary) idToToken(id int) (string, bool) {
	if a, ok := v.added.byID[id]; ok {
		return a.Content, true
	}
	s, ok := v.decoder[id]
	return s, ok
}

// decode is PreTrainedTokenizer._decode with its defaults
// (skip_special_tokens=False, spaces_between_special_tokens=True, before
// clean-up): runs of ordinary tokens go through convert (the tokenizer's
// convert_tokens_to_string), "legacy" added tokens (added tokens that are
// not special tokens) stand alone, and the parts are joined by spaces.
// Unknown ids are skipped.
func (v *vocabulary) decode(ids []int, convert func([]string) string) string {
	var parts, cur []string
	for _, id := range ids {
		tok, ok := v.idToToken(id)
		if !ok {
			continue
		}
		if v.isLegacyAdded(tok) {
			if len(cur) > 0 {
				if s := convert(cur); s != "" {
					parts = append(parts, s)
				}
				cur = nil
			}
			parts = append(parts, tok)
			continue
		}
		cur = append(cur, tok)
	}
	if len(cur) > 0 {
		parts = append(parts, convert(cur))
	}
	return strings.Join(parts, " ")
}

// isLegacyAdded reports whether tok is one of _decode's legacy_added_tokens.
func (v *vocabulary) isLegacyAdded(tok string) bool {
	a, ok := v.added.byContent[tok]
	if !ok {
		return false
	}
	if v.extra[tok] {
		return a.ID >= len(v.encoder)
	}
	return !v.specials[tok]
}

// addToken registers an added token as transformers' _add_tokens does: a
// token already in the vocabulary keeps its id, an explicit id (from
// added_tokens_decoder or tokenizer.json) is used as given, and any other
// token is appended after the last id.
func (v *vocabulary) addToken(t addedToken, explicitID bool) {
	if old, ok := v.added.byContent[t.Content]; ok {
		// Already known: keep its id and mark it special if asked to.
		old.Special = old.Special || t.Special
		return
	}
	if !explicitID {
		if id, ok := v.encoder[t.Content]; ok {
			t.ID = id
		} else {
			t.ID = v.maxID + 1
		}
	}
	v.added.add(t)
	if t.ID > v.maxID {
		v.maxID = t.ID
	}
}

// addedToken is an AddedToken of transformers: a string that is cut out of
// the text before the model's own tokenization and mapped to one id.
type addedToken struct {
	Content    string
	ID         int
	Special    bool
	LStrip     bool
	RStrip     bool
	SingleWord bool
}

// addedVocab holds added tokens, indexed for splitting text on them.
type addedVocab struct {
	byContent map[string]*addedToken
	byID      map[int]*addedToken
	byFirst   *[256][]*addedToken // by first byte, longest first
}

func (a *addedVocab) add(t addedToken) {
	if a.byContent == nil {
		a.byContent = map[string]*addedToken{}
		a.byID = map[int]*addedToken{}
		a.byFirst = new([256][]*addedToken)
	}
	if t.Content == "" {
		return
	}
	p := &t
	a.byContent[t.Content] = p
	a.byID[t.ID] = p
	l := append(a.byFirst[t.Content[0]], p)
	sort.SliceStable(l, func(i, j int) bool { return len(l[i].Content) > len(l[j].Content) })
	a.byFirst[t.Content[0]] = l
}

// split cuts text on added tokens as transformers' Trie.split does (the
// leftmost match, the longest of those) and then applies the tokens'
// lstrip/rstrip/single_word rules as PreTrainedTokenizer.tokenize does. A
// returned piece is an added token iff it is a key of a.byContent; empty
// pieces are to be skipped.
func (a *addedVocab) split(text string) []string {
	if len(a.byContent) == 0 {
		return []string{text}
	}
	var pieces []string
	start := 0
	for i := 0; i < len(text); {
		var match *addedToken
		for _, t := range a.byFirst[text[i]] {
			if strings.HasPrefix(text[i:], t.Content) {
				match = t
				break
			}
		}
		if match == nil {
			i++
			continue
		}
		if i > start {
			pieces = append(pieces, text[start:i])
		}
		pieces = append(pieces, match.Content)
		i += len(match.Content)
		start = i
	}
	if start < len(text) {
		pieces = append(pieces, text[start:])
	}
	for i, p := range pieces {
		t, ok := a.byContent[p]
		if !ok {
			continue
		}
		var left, right string
		if i > 0 {
			left = pieces[i-1]
		}
		if i+1 < len(pieces) {
			right = pieces[i+1]
		}
		if t.RStrip && right != "" {
			pieces[i+1] = strings.TrimLeftFunc(right, pyIsSpace)
		}
		if t.LStrip && left != "" {
			pieces[i-1] = strings.TrimRightFunc(left, pyIsSpace)
		}
		if t.SingleWord && left != "" && !strings.HasSuffix(left, " ") {
			pieces[i-1] += p
			pieces[i] = ""
		} else if t.SingleWord && right != "" && !strings.HasPrefix(right, " ") {
			pieces[i] += right
			pieces[i+1] = ""
		}
	}
	return pieces
}

// pyIsSpace is Python's str.isspace for one character (used by str.split()
// and str.strip()): Unicode White_Space plus the separators U+001C..U+001F.
func pyIsSpace(r rune) bool {
	return unicode.IsSpace(r) || (r >= 0x1c && r <= 0x1f)
}

// cleanUpTokenization is transformers' clean_up_tokenization, applied by
// decode() when the tokenizer's clean_up_tokenization_spaces is true.
func cleanUpTokenization(s string) string {
	for _, r := range [][2]string{
		{" .", "."}, {" ?", "?"}, {" !", "!"}, {" ,", ","}, {" ' ", "'"},
		{" n't", "n't"}, {" 'm", "'m"}, {" 's", "'s"}, {" 've", "'ve"}, {" 're", "'re"},
	} {
		s = strings.ReplaceAll(s, r[0], r[1])
	}
	return s
}

// ---- checkpoint directory files ----

const (
	fileTokenizerJSON   = "tokenizer.json"
	fileTokenizerConfig = "tokenizer_config.json"
	fileSpecialTokens   = "special_tokens_map.json"
	fileAddedTokens     = "added_tokens.json"
)

// exists reports whether dir/name is a regular file (following links).
func exists(dir, name string) bool {
	st, err := os.Stat(filepath.Join(dir, name))
	return err == nil && !st.IsDir()
}

// checkDir returns a descriptive error if dir is not a readable directory.
func checkDir(dir string) error {
	st, err := os.Stat(dir)
	if err != nil {
		return fmt.Errorf("tokenizer directory %s: %w", dir, err)
	}
	if !st.IsDir() {
		return fmt.Errorf("tokenizer directory %s: not a directory", dir)
	}
	return nil
}

// readJSON reads and decodes path into v; errors name the file (a missing
// file's error wraps fs.ErrNotExist).
func readJSON(path string, v any) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("read %s: %w", path, err)
	}
	if err := json.Unmarshal(data, v); err != nil {
		return fmt.Errorf("parse %s: expected JSON: %w", path, err)
	}
	return nil
}

// readOptionalJSON is readJSON for a file that may be absent (then v is left
// as it is).
func readOptionalJSON(dir, name string, v any) error {
	err := readJSON(filepath.Join(dir, name), v)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	return err
}

// tokenSpec is a special-token value in tokenizer_config.json or
// special_tokens_map.json: a string, an AddedToken object, or null.
type tokenSpec struct {
	set        bool
	Content    string
	LStrip     bool
	RStrip     bool
	SingleWord bool
}

// UnmarshalJSON accepts a string, an AddedToken object or null.
func (s *tokenSpec) UnmarshalJSON(b []byte) error {
	b = bytes.TrimSpace(b)
	if bytes.Equal(b, []byte("null")) {
		*s = tokenSpec{}
		return nil
	}
	if len(b) > 0 && b[0] == '"' {
		var str string
		if err := json.Unmarshal(b, &str); err != nil {
			return err
		}
		*s = tokenSpec{set: true, Content: str}
		return nil
	}
	var obj struct {
		Content    string `json:"content"`
		LStrip     bool   `json:"lstrip"`
		RStrip     bool   `json:"rstrip"`
		SingleWord bool   `json:"single_word"`
	}
	if err := json.Unmarshal(b, &obj); err != nil {
		return fmt.Errorf("special token: expected a string, an object with \"content\" or null: %w", err)
	}
	*s = tokenSpec{set: true, Content: obj.Content, LStrip: obj.LStrip, RStrip: obj.RStrip, SingleWord: obj.SingleWord}
	return nil
}

func (s tokenSpec) token(special bool) addedToken {
	return addedToken{Content: s.Content, Special: special, LStrip: s.LStrip, RStrip: s.RStrip, SingleWord: s.SingleWord}
}

// addedTokenJSON is one entry of tokenizer_config.json's added_tokens_decoder
// or of tokenizer.json's added_tokens.
type addedTokenJSON struct {
	ID         *int   `json:"id"`
	Content    string `json:"content"`
	LStrip     bool   `json:"lstrip"`
	RStrip     bool   `json:"rstrip"`
	SingleWord bool   `json:"single_word"`
	Special    bool   `json:"special"`
}

func (a addedTokenJSON) token(id int) addedToken {
	return addedToken{Content: a.Content, ID: id, Special: a.Special, LStrip: a.LStrip, RStrip: a.RStrip, SingleWord: a.SingleWord}
}

// tokenizerConfig is the part of tokenizer_config.json (and, for the token
// fields, special_tokens_map.json) this package reads.
type tokenizerConfig struct {
	BOS        tokenSpec   `json:"bos_token"`
	EOS        tokenSpec   `json:"eos_token"`
	UNK        tokenSpec   `json:"unk_token"`
	PAD        tokenSpec   `json:"pad_token"`
	CLS        tokenSpec   `json:"cls_token"`
	SEP        tokenSpec   `json:"sep_token"`
	Mask       tokenSpec   `json:"mask_token"`
	Additional []tokenSpec `json:"additional_special_tokens"`

	AddedTokensDecoder map[string]addedTokenJSON `json:"added_tokens_decoder"`

	AddPrefixSpace            *bool    `json:"add_prefix_space"`
	AddBOSToken               *bool    `json:"add_bos_token"`
	CleanUpTokenizationSpaces *bool    `json:"clean_up_tokenization_spaces"`
	DoLowerCase               *bool    `json:"do_lower_case"`
	DoBasicTokenize           *bool    `json:"do_basic_tokenize"`
	StripAccents              *bool    `json:"strip_accents"`
	TokenizeChineseChars      *bool    `json:"tokenize_chinese_chars"`
	NeverSplit                []string `json:"never_split"`
}

// specialFields lists the named special-token fields in transformers'
// SPECIAL_TOKENS_ATTRIBUTES order.
func (c *tokenizerConfig) specialFields() []*tokenSpec {
	return []*tokenSpec{&c.BOS, &c.EOS, &c.UNK, &c.SEP, &c.PAD, &c.CLS, &c.Mask}
}

// readConfigFile reads one optional tokenizer_config.json-like file, both
// decoded and as raw fields (to tell an explicit null from an absent key).
func readConfigFile(dir, name string) (tokenizerConfig, map[string]json.RawMessage, error) {
	var cfg tokenizerConfig
	var raw map[string]json.RawMessage
	path := filepath.Join(dir, name)
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return cfg, raw, nil
	}
	if err != nil {
		return cfg, raw, fmt.Errorf("read %s: %w", path, err)
	}
	if err := json.Unmarshal(data, &raw); err != nil {
		return cfg, raw, fmt.Errorf("parse %s: expected a JSON object: %w", path, err)
	}
	if err := json.Unmarshal(data, &cfg); err != nil {
		return cfg, raw, fmt.Errorf("parse %s: %w", path, err)
	}
	return cfg, raw, nil
}

// specialNames are the JSON keys of tokenizerConfig.specialFields, in order.
var specialNames = []string{"bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token"}

// loadConfig reads tokenizer_config.json and special_tokens_map.json (both
// optional); the latter's tokens override the former's, as in transformers'
// from_pretrained. defaults fills in the special tokens neither file
// mentions (an explicit null, like GPT-2's pad_token, stays unset).
func loadConfig(dir string, defaults tokenizerConfig) (tokenizerConfig, error) {
	cfg, raw, err := readConfigFile(dir, fileTokenizerConfig)
	if err != nil {
		return cfg, err
	}
	stm, rawStm, err := readConfigFile(dir, fileSpecialTokens)
	if err != nil {
		return cfg, err
	}
	cf, sf, df := cfg.specialFields(), stm.specialFields(), defaults.specialFields()
	for i, name := range specialNames {
		_, inCfg := raw[name]
		_, inStm := rawStm[name]
		switch {
		case inStm:
			*cf[i] = *sf[i]
		case !inCfg:
			*cf[i] = *df[i]
		}
	}
	if stm.Additional != nil {
		cfg.Additional = stm.Additional
	}
	return cfg, nil
}

// addConfigTokens registers the added tokens a checkpoint declares, in the
// order transformers does: added_tokens_decoder (explicit ids),
// added_tokens.json (legacy, explicit ids), then every special token.
func addConfigTokens(v *vocabulary, dir string, cfg tokenizerConfig) error {
	ids := make([]int, 0, len(cfg.AddedTokensDecoder))
	byID := map[int]addedTokenJSON{}
	for k, a := range cfg.AddedTokensDecoder {
		id, err := strconv.Atoi(k)
		if err != nil {
			return fmt.Errorf("parse %s: added_tokens_decoder key %q: expected an integer id", filepath.Join(dir, fileTokenizerConfig), k)
		}
		ids = append(ids, id)
		byID[id] = a
	}
	sort.Ints(ids)
	for _, id := range ids {
		v.addToken(byID[id].token(id), true)
	}
	var legacy map[string]int
	if err := readOptionalJSON(dir, fileAddedTokens, &legacy); err != nil {
		return err
	}
	names := make([]string, 0, len(legacy))
	for k := range legacy {
		names = append(names, k)
	}
	sort.Slice(names, func(i, j int) bool { return legacy[names[i]] < legacy[names[j]] })
	for _, k := range names {
		v.addToken(addedToken{Content: k, ID: legacy[k]}, true)
	}
	for _, s := range cfg.specialFields() {
		if s.set && s.Content != "" {
			v.addToken(s.token(true), false)
			v.specials[s.Content] = true
		}
	}
	for _, s := range cfg.Additional {
		if s.set && s.Content != "" {
			v.addToken(s.token(true), false)
			v.specials[s.Content] = true
			v.extra[s.Content] = true
		}
	}
	return nil
}

// tokenizerJSON is the part of a fast-tokenizer tokenizer.json this package
// reads.
type tokenizerJSON struct {
	AddedTokens   []addedTokenJSON `json:"added_tokens"`
	Normalizer    json.RawMessage  `json:"normalizer"`
	PreTokenizer  json.RawMessage  `json:"pre_tokenizer"`
	PostProcessor json.RawMessage  `json:"post_processor"`
	Model         struct {
		Type                    string            `json:"type"`
		Vocab                   json.RawMessage   `json:"vocab"`
		Merges                  []json.RawMessage `json:"merges"`
		UnkToken                *string           `json:"unk_token"`
		ContinuingSubwordPrefix *string           `json:"continuing_subword_prefix"`
		MaxInputCharsPerWord    *int              `json:"max_input_chars_per_word"`
	} `json:"model"`
}

// loadTokenizerJSON reads dir/tokenizer.json and checks that its model is of
// the wanted type ("BPE" or "WordPiece"), returning its vocabulary.
func loadTokenizerJSON(dir, wantType string) (*tokenizerJSON, map[string]int, error) {
	path := filepath.Join(dir, fileTokenizerJSON)
	var tj tokenizerJSON
	if err := readJSON(path, &tj); err != nil {
		return nil, nil, err
	}
	typ := tj.Model.Type
	if typ == "" { // old files omit the type
		switch {
		case tj.Model.Merges != nil:
			typ = "BPE"
		case tj.Model.ContinuingSubwordPrefix != nil || tj.Model.MaxInputCharsPerWord != nil:
			typ = "WordPiece"
		}
	}
	if typ != wantType {
		return nil, nil, fmt.Errorf("parse %s: expected a %s model, found model type %q", path, wantType, tj.Model.Type)
	}
	var vocab map[string]int
	if err := json.Unmarshal(tj.Model.Vocab, &vocab); err != nil || vocab == nil {
		return nil, nil, fmt.Errorf("parse %s: expected model.vocab to be an object of token to id: %v", path, err)
	}
	return &tj, vocab, nil
}

// addJSONTokens registers tokenizer.json's added_tokens (explicit ids).
func addJSONTokens(v *vocabulary, tj *tokenizerJSON, dir string) error {
	for i, a := range tj.AddedTokens {
		if a.ID == nil {
			return fmt.Errorf("parse %s: added_tokens[%d] (%q): expected an \"id\"", filepath.Join(dir, fileTokenizerJSON), i, a.Content)
		}
		v.addToken(a.token(*a.ID), true)
	}
	return nil
}

// missingFiles builds the error for a directory that has none of the file
// sets a loader can read.
func missingFiles(dir, kind string, sets ...string) error {
	return fmt.Errorf("%s tokenizer: no vocabulary in %s: looked for %s: %w", kind, dir, strings.Join(sets, " or "), fs.ErrNotExist)
}

func boolOr(p *bool, def bool) bool {
	if p == nil {
		return def
	}
	return *p
}
