package tokenize

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/sugarme/tokenizer/model"
	"github.com/sugarme/tokenizer/model/wordpiece"
	"github.com/sugarme/tokenizer/normalizer"
	"golang.org/x/text/unicode/norm"
)

const fileVocabTxt = "vocab.txt"

// WordPiece is BERT's tokenizer, identical to transformers' BertTokenizer:
// special tokens written in the text are kept whole; the rest goes through
// the BasicTokenizer (clean-up of control characters, spacing of CJK
// characters, NFC, whitespace split, lower-casing and NFD accent stripping,
// punctuation split) and then greedy longest-match-first WordPiece with "##"
// continuations, a word longer than max_input_chars_per_word (100) or with
// no match becoming [UNK].
type WordPiece struct {
	voc *vocabulary
	wp  wordpiece.WordPiece

	doLowerCase     bool
	stripAccents    *bool // nil: follow doLowerCase
	tokenizeChinese bool
	doBasicTokenize bool
	neverSplit      map[string]bool // the config's never_split (BertTokenizer's basic_tokenizer.never_split)
	keepWhole       map[string]bool // neverSplit and every special token (what BasicTokenizer.tokenize gets)
	cleanUp         bool

	unk, cls, sep, pad, mask string
}

// LoadBERT loads a BERT tokenizer from a checkpoint directory: vocab.txt when
// it is there, otherwise tokenizer.json. tokenizer_config.json (optional)
// sets do_lower_case (default true), strip_accents (default: follow
// do_lower_case), tokenize_chinese_chars (default true), do_basic_tokenize,
// never_split and clean_up_tokenization_spaces; it and
// special_tokens_map.json name the special tokens ([UNK], [CLS], [SEP],
// [PAD], [MASK] by default). With tokenizer.json and no tokenizer_config.json
// the settings come from its BertNormalizer.
func LoadBERT(dir string) (*WordPiece, error) {
	if err := checkDir(dir); err != nil {
		return nil, err
	}
	t := &WordPiece{}
	var (
		enc        map[string]int
		tj         *tokenizerJSON
		unk        = "[UNK]"
		cls        = "[CLS]"
		sep        = "[SEP]"
		prefix     = "##"
		maxChars   = 100
		jsonLower  = true
		jsonStrip  *bool
		jsonCJK    = true
		jsonSource bool
	)
	switch {
	case exists(dir, fileVocabTxt):
		var err error
		if enc, err = readVocabTxt(filepath.Join(dir, fileVocabTxt)); err != nil {
			return nil, err
		}
	case exists(dir, fileTokenizerJSON):
		var err error
		if tj, enc, err = loadTokenizerJSON(dir, "WordPiece"); err != nil {
			return nil, err
		}
		jsonSource = true
		if tj.Model.UnkToken != nil {
			unk = *tj.Model.UnkToken
		}
		if tj.Model.ContinuingSubwordPrefix != nil {
			prefix = *tj.Model.ContinuingSubwordPrefix
		}
		if tj.Model.MaxInputCharsPerWord != nil {
			maxChars = *tj.Model.MaxInputCharsPerWord
		}
		var bn struct {
			Type               string `json:"type"`
			Lowercase          *bool  `json:"lowercase"`
			StripAccents       *bool  `json:"strip_accents"`
			HandleChineseChars *bool  `json:"handle_chinese_chars"`
		}
		var bp struct {
			Type string `json:"type"`
			CLS  []any  `json:"cls"`
			SEP  []any  `json:"sep"`
		}
		if json.Unmarshal(tj.PostProcessor, &bp) == nil && bp.Type == "BertProcessing" && len(bp.CLS) == 2 && len(bp.SEP) == 2 {
			if c, ok := bp.CLS[0].(string); ok {
				cls = c
			}
			if s, ok := bp.SEP[0].(string); ok {
				sep = s
			}
		}
		switch {
		case len(tj.Normalizer) == 0 || string(tj.Normalizer) == "null":
			jsonLower, jsonCJK = false, false
		case json.Unmarshal(tj.Normalizer, &bn) == nil && bn.Type == "BertNormalizer":
			jsonLower = boolOr(bn.Lowercase, true)
			jsonStrip = bn.StripAccents
			jsonCJK = boolOr(bn.HandleChineseChars, true)
		}
	default:
		return nil, missingFiles(dir, "bert", fileVocabTxt, fileTokenizerJSON)
	}
	t.voc = newVocabulary(enc)

	defaults := tokenizerConfig{
		UNK:  tokenSpec{set: true, Content: unk},
		SEP:  tokenSpec{set: true, Content: sep},
		PAD:  tokenSpec{set: true, Content: "[PAD]"},
		CLS:  tokenSpec{set: true, Content: cls},
		Mask: tokenSpec{set: true, Content: "[MASK]"},
	}
	cfg, err := loadConfig(dir, defaults)
	if err != nil {
		return nil, err
	}
	if tj != nil {
		if err := addJSONTokens(t.voc, tj, dir); err != nil {
			return nil, err
		}
	}
	if err := addConfigTokens(t.voc, dir, cfg); err != nil {
		return nil, err
	}

	t.doLowerCase = boolOr(cfg.DoLowerCase, jsonLower)
	t.stripAccents = cfg.StripAccents
	if cfg.StripAccents == nil && cfg.DoLowerCase == nil && jsonSource {
		t.stripAccents = jsonStrip
	}
	t.tokenizeChinese = boolOr(cfg.TokenizeChineseChars, jsonCJK)
	t.doBasicTokenize = boolOr(cfg.DoBasicTokenize, true)
	t.cleanUp = boolOr(cfg.CleanUpTokenizationSpaces, true)
	t.unk, t.cls, t.sep, t.pad, t.mask = cfg.UNK.Content, cfg.CLS.Content, cfg.SEP.Content, cfg.PAD.Content, cfg.Mask.Content
	t.neverSplit, t.keepWhole = map[string]bool{}, map[string]bool{}
	for _, s := range cfg.NeverSplit {
		t.neverSplit[s], t.keepWhole[s] = true, true
	}
	for _, s := range append(cfg.specialFields(), tokenSpecPtrs(cfg.Additional)...) {
		if s.set && s.Content != "" {
			t.keepWhole[s.Content] = true
		}
	}

	// sugarme's WordPiece model does the greedy longest-match-first search
	// exactly as transformers' WordpieceTokenizer does.
	v := model.Vocab(enc)
	t.wp = wordpiece.NewWordPieceBuilder().
		Vocab(&v).
		UnkToken(t.unk).
		ContinuingSubwordPrefix(prefix).
		MaxInputCharsPerWord(maxChars).
		Build()
	return t, nil
}

func tokenSpecPtrs(s []tokenSpec) []*tokenSpec {
	p := make([]*tokenSpec, len(s))
	for i := range s {
		p[i] = &s[i]
	}
	return p
}

// readVocabTxt reads vocab.txt as BertTokenizer's load_vocab does: one token
// a line (only "\n" is stripped), ids by line number, a repeated token
// keeping its last line.
func readVocabTxt(path string) (map[string]int, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	if !utf8.Valid(data) {
		return nil, fmt.Errorf("parse %s: expected UTF-8 text, one token a line", path)
	}
	text := string(data)
	if text == "" {
		return nil, fmt.Errorf("parse %s: expected one token a line, the file is empty", path)
	}
	text = strings.TrimSuffix(text, "\n")
	lines := strings.Split(text, "\n")
	enc := make(map[string]int, len(lines))
	for i, l := range lines {
		enc[l] = i
	}
	return enc, nil
}

// Encode tokenizes text as BertTokenizer.encode(text) does: [CLS], the word
// pieces, [SEP]. An empty text gives just [CLS] [SEP], as in transformers.
func (t *WordPiece) Encode(text string) (Encoding, error) {
	var enc Encoding
	if err := t.appendToken(&enc, t.cls); err != nil {
		return Encoding{}, err
	}
	if err := t.encodeInto(&enc, text); err != nil {
		return Encoding{}, err
	}
	if err := t.appendToken(&enc, t.sep); err != nil {
		return Encoding{}, err
	}
	return enc, nil
}

// EncodePlain tokenizes text without adding [CLS] and [SEP] (what
// BertTokenizer.tokenize plus convert_tokens_to_ids give), e.g. for a
// target answer. An empty text gives an empty Encoding.
func (t *WordPiece) EncodePlain(text string) (Encoding, error) {
	var enc Encoding
	if err := t.encodeInto(&enc, text); err != nil {
		return Encoding{}, err
	}
	return enc, nil
}

func (t *WordPiece) appendToken(enc *Encoding, tok string) error {
	if tok == "" { // a special token the checkpoint set to null
		return nil
	}
	id, ok := t.voc.tokenToID(tok)
	if !ok {
		if id, ok = t.voc.tokenToID(t.unk); !ok {
			return fmt.Errorf("bert tokenizer: token %q is not in the vocabulary and neither is the unknown token %q", tok, t.unk)
		}
	}
	enc.IDs = append(enc.IDs, id)
	enc.Tokens = append(enc.Tokens, tok)
	return nil
}

// encodeInto is PreTrainedTokenizer.tokenize + BertTokenizer._tokenize.
func (t *WordPiece) encodeInto(enc *Encoding, text string) error {
	for _, piece := range t.voc.added.split(text) {
		if piece == "" {
			continue
		}
		if a, ok := t.voc.added.byContent[piece]; ok {
			enc.IDs = append(enc.IDs, a.ID)
			enc.Tokens = append(enc.Tokens, a.Content)
			continue
		}
		if t.doLowerCase {
			// tokenize() lower-cases the text outside special tokens one
			// character at a time (re.sub with "(.+?)").
			piece = lowerEachChar(piece)
		}
		var words []string
		if t.doBasicTokenize {
			words = t.basicTokenize(piece)
		} else {
			words = strings.FieldsFunc(piece, pyIsSpace)
		}
		for _, w := range words {
			if t.doBasicTokenize && t.neverSplit[w] {
				if err := t.appendToken(enc, w); err != nil {
					return err
				}
				continue
			}
			pieces, err := t.wp.Tokenize(w)
			if err != nil {
				return fmt.Errorf("bert tokenizer: %w", err)
			}
			for _, p := range pieces {
				if err := t.appendToken(enc, p.Value); err != nil {
					return err
				}
			}
		}
	}
	return nil
}

// basicTokenize is transformers' BasicTokenizer.tokenize with never_split set
// to every special token and the config's never_split, as
// BertTokenizer._tokenize calls it.
func (t *WordPiece) basicTokenize(text string) []string {
	text = cleanText(text)
	if t.tokenizeChinese {
		text = spaceChineseChars(text)
	}
	text = norm.NFC.String(text)
	var out []string
	for _, tok := range strings.FieldsFunc(text, pyIsSpace) {
		if t.keepWhole[tok] {
			out = append(out, tok)
			continue
		}
		if t.doLowerCase {
			tok = lowerEachChar(tok)
			if t.stripAccents == nil || *t.stripAccents {
				tok = stripAccents(tok)
			}
		} else if t.stripAccents != nil && *t.stripAccents {
			tok = stripAccents(tok)
		}
		out = splitOnPunctuation(tok, out)
	}
	return out
}

// cleanText is BasicTokenizer._clean_text: drop NUL, U+FFFD and control
// characters (every category C*, unassigned code points included, but not
// \t \n \r), and turn whitespace (\t \n \r, space and category Zs) into a
// space. Bytes that are not UTF-8 decode to U+FFFD and so are dropped too.
func cleanText(s string) string {
	var sb strings.Builder
	sb.Grow(len(s))
	for _, r := range s {
		switch {
		case r == 0 || r == utf8.RuneError || isBertControl(r):
		case isBertWhitespace(r):
			sb.WriteByte(' ')
		default:
			sb.WriteRune(r)
		}
	}
	return sb.String()
}

// isBertWhitespace is BasicTokenizer's _is_whitespace.
func isBertWhitespace(r rune) bool {
	return r == ' ' || r == '\t' || r == '\n' || r == '\r' || unicode.Is(unicode.Zs, r)
}

// isBertControl is BasicTokenizer's _is_control: category C* (Python's
// unicodedata reports unassigned code points as "Cn"), except \t \n \r.
func isBertControl(r rune) bool {
	if r == '\t' || r == '\n' || r == '\r' {
		return false
	}
	if unicode.In(r, unicode.Cc, unicode.Cf, unicode.Co, unicode.Cs) {
		return true
	}
	return !unicode.In(r, unicode.L, unicode.M, unicode.N, unicode.P, unicode.S, unicode.Z)
}

// isChineseChar is BasicTokenizer._is_chinese_char: the CJK Unified
// Ideographs blocks (not Hangul, Hiragana or Katakana).
func isChineseChar(r rune) bool {
	return (r >= 0x4E00 && r <= 0x9FFF) ||
		(r >= 0x3400 && r <= 0x4DBF) ||
		(r >= 0x20000 && r <= 0x2A6DF) ||
		(r >= 0x2A700 && r <= 0x2B73F) ||
		(r >= 0x2B740 && r <= 0x2B81F) ||
		(r >= 0x2B820 && r <= 0x2CEAF) ||
		(r >= 0xF900 && r <= 0xFAFF) ||
		(r >= 0x2F800 && r <= 0x2FA1F)
}

// spaceChineseChars is BasicTokenizer._tokenize_chinese_chars.
func spaceChineseChars(s string) string {
	var sb strings.Builder
	sb.Grow(len(s))
	for _, r := range s {
		if isChineseChar(r) {
			sb.WriteByte(' ')
			sb.WriteRune(r)
			sb.WriteByte(' ')
		} else {
			sb.WriteRune(r)
		}
	}
	return sb.String()
}

// lowerEachChar is Python's str.lower() applied to each character on its
// own: the simple lower-case mapping, except U+0130 (İ), whose full mapping
// is "i̇" (i + U+0307). (Applied per character, Python's final-sigma rule
// never fires; transformers lower-cases BERT input that way.)
func lowerEachChar(s string) string {
	var sb strings.Builder
	sb.Grow(len(s))
	for _, r := range s {
		if r == 0x130 {
			sb.WriteString("i\u0307")
			continue
		}
		sb.WriteRune(unicode.ToLower(r))
	}
	return sb.String()
}

// stripAccents is BasicTokenizer._run_strip_accents: NFD, then drop the
// nonspacing marks (category Mn).
func stripAccents(s string) string {
	var sb strings.Builder
	sb.Grow(len(s))
	for _, r := range norm.NFD.String(s) {
		if !unicode.Is(unicode.Mn, r) {
			sb.WriteRune(r)
		}
	}
	return sb.String()
}

// splitOnPunctuation is BasicTokenizer._run_split_on_punc: every punctuation
// character (sugarme's IsBertPunctuation: category P* plus the ASCII symbol
// ranges 33-47, 58-64, 91-96, 123-126, exactly transformers' _is_punctuation)
// becomes a word of its own. The words are appended to out.
func splitOnPunctuation(s string, out []string) []string {
	start := 0
	for i, r := range s {
		if !normalizer.IsBertPunctuation(r) {
			continue
		}
		if i > start {
			out = append(out, s[start:i])
		}
		n := utf8.RuneLen(r)
		if r == utf8.RuneError {
			n = 1
		}
		out = append(out, s[i:i+n])
		start = i + n
	}
	if start < len(s) {
		out = append(out, s[start:])
	}
	return out
}

// Decode turns ids back into text as BertTokenizer.decode(ids) does: tokens
// joined by spaces with " ##" removed, then, when the checkpoint's
// clean_up_tokenization_spaces is true (its default), transformers'
// clean_up_tokenization (" ." -> ".", " 's" -> "'s", …). Special tokens are
// kept; added tokens that are not special stand apart, space-separated;
// unknown ids are skipped.
func (t *WordPiece) Decode(ids []int) string {
	s := t.voc.decode(ids, func(toks []string) string {
		return strings.TrimFunc(strings.ReplaceAll(strings.Join(toks, " "), " ##", ""), pyIsSpace)
	})
	if t.cleanUp {
		s = cleanUpTokenization(s)
	}
	return s
}

// TokenToID returns the id of a token string, e.g. "paris", "##ing",
// "[MASK]".
func (t *WordPiece) TokenToID(tok string) (int, bool) { return t.voc.tokenToID(tok) }

// IDToToken returns the token string of an id.
func (t *WordPiece) IDToToken(id int) (string, bool) { return t.voc.idToToken(id) }

// VocabSize is one more than the largest id, added tokens included.
func (t *WordPiece) VocabSize() int { return t.voc.maxID + 1 }

// CLSID returns the id of the classification token ([CLS]), or -1 if the checkpoint
// sets that token to null.
func (t *WordPiece) CLSID() int { return t.mustID(t.cls) }

// SEPID returns the id of the separator token ([SEP]), or -1 if the checkpoint
// sets that token to null.
func (t *WordPiece) SEPID() int { return t.mustID(t.sep) }

// MaskID returns the id of the mask token ([MASK]), or -1 if the checkpoint
// sets that token to null.
func (t *WordPiece) MaskID() int { return t.mustID(t.mask) }

// UNKID returns the id of the unknown token ([UNK]), or -1 if the checkpoint
// sets that token to null.
func (t *WordPiece) UNKID() int { return t.mustID(t.unk) }

// PadID returns the id of the padding token ([PAD]), or -1 if the checkpoint
// sets that token to null.
func (t *WordPiece) PadID() int { return t.mustID(t.pad) }

// MaskToken returns the mask token's string ("[MASK]" unless the checkpoint
// names another), to write into prompts.
func (t *WordPiece) MaskToken() string { return t.mask }

// mustID looks up a special token; loading registered every special token,
// so a miss only happens for a token the checkpoint set to null (then -1).
func (t *WordPiece) mustID(tok string) int {
	if tok == "" {
		return -1
	}
	if id, ok := t.voc.tokenToID(tok); ok {
		return id
	}
	return -1
}
