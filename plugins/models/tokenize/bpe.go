package tokenize

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"unicode/utf8"

	"github.com/sugarme/tokenizer/pretokenizer"
)

const (
	fileVocabJSON = "vocab.json"
	fileMerges    = "merges.txt"

	// gpt2EndOfText is GPT2Tokenizer's default bos, eos and unk token.
	gpt2EndOfText = "<|endoftext|>"

	// bpeCacheMax bounds the per-word cache (transformers' is unbounded);
	// past it the cache starts over.
	bpeCacheMax = 1 << 16
)

// BPE is GPT-2's byte-level BPE tokenizer, identical to transformers'
// GPT2Tokenizer: text is cut on added tokens (such as <|endoftext|>), split
// with GPT-2's pre-tokenization pattern, mapped byte by byte to GPT-2's
// printable byte alphabet, and each word is merged by the ranked merges.
type BPE struct {
	voc            *vocabulary
	ranks          map[symbolPair]int
	byteEnc        [256]string
	byteDec        map[rune]byte
	unk            string
	bos, eos       string
	addPrefixSpace bool
	addBOS         bool
	cleanUp        bool

	mu    sync.RWMutex
	cache map[string]bpeWord // pre-tokenized word -> its tokens
}

// bpeWord is a cached word's tokens and their ids.
type bpeWord struct {
	ids  []int
	toks []string
}

type symbolPair struct{ a, b string }

// LoadGPT2 loads a GPT-2 tokenizer from a checkpoint directory: vocab.json
// and merges.txt when both are there, otherwise tokenizer.json. Optional
// tokenizer_config.json, special_tokens_map.json and added_tokens.json add
// special tokens and settings (add_prefix_space, add_bos_token,
// clean_up_tokenization_spaces) as transformers reads them.
func LoadGPT2(dir string) (*BPE, error) {
	if err := checkDir(dir); err != nil {
		return nil, err
	}
	var (
		voc            *vocabulary
		ranks          map[symbolPair]int
		tj             *tokenizerJSON
		addPrefixSpace bool
	)
	switch hasVocab, hasMerges := exists(dir, fileVocabJSON), exists(dir, fileMerges); {
	case hasVocab && hasMerges:
		var enc map[string]int
		if err := readJSON(filepath.Join(dir, fileVocabJSON), &enc); err != nil {
			return nil, err
		}
		if enc == nil {
			return nil, fmt.Errorf("parse %s: expected an object of token to id", filepath.Join(dir, fileVocabJSON))
		}
		voc = newVocabulary(enc)
		var err error
		if ranks, err = readMergesTxt(filepath.Join(dir, fileMerges)); err != nil {
			return nil, err
		}
	case exists(dir, fileTokenizerJSON):
		var (
			enc map[string]int
			err error
		)
		if tj, enc, err = loadTokenizerJSON(dir, "BPE"); err != nil {
			return nil, err
		}
		voc = newVocabulary(enc)
		if ranks, err = jsonMerges(tj.Model.Merges, filepath.Join(dir, fileTokenizerJSON)); err != nil {
			return nil, err
		}
		var pt struct {
			Type           string `json:"type"`
			AddPrefixSpace bool   `json:"add_prefix_space"`
		}
		if len(tj.PreTokenizer) > 0 && json.Unmarshal(tj.PreTokenizer, &pt) == nil && pt.Type == "ByteLevel" {
			addPrefixSpace = pt.AddPrefixSpace
		}
	case hasVocab:
		return nil, fmt.Errorf("gpt2 tokenizer: %s has %s but no %s (and no %s): %w", dir, fileVocabJSON, fileMerges, fileTokenizerJSON, os.ErrNotExist)
	case hasMerges:
		return nil, fmt.Errorf("gpt2 tokenizer: %s has %s but no %s (and no %s): %w", dir, fileMerges, fileVocabJSON, fileTokenizerJSON, os.ErrNotExist)
	default:
		return nil, missingFiles(dir, "gpt2", fileVocabJSON+" + "+fileMerges, fileTokenizerJSON)
	}

	defaults := tokenizerConfig{
		BOS: tokenSpec{set: true, Content: gpt2EndOfText},
		EOS: tokenSpec{set: true, Content: gpt2EndOfText},
		UNK: tokenSpec{set: true, Content: gpt2EndOfText},
	}
	cfg, err := loadConfig(dir, defaults)
	if err != nil {
		return nil, err
	}
	if tj != nil {
		if err := addJSONTokens(voc, tj, dir); err != nil {
			return nil, err
		}
	}
	if err := addConfigTokens(voc, dir, cfg); err != nil {
		return nil, err
	}
	t := &BPE{
		voc:            voc,
		ranks:          ranks,
		unk:            cfg.UNK.Content,
		bos:            cfg.BOS.Content,
		eos:            cfg.EOS.Content,
		addPrefixSpace: boolOr(cfg.AddPrefixSpace, addPrefixSpace),
		addBOS:         boolOr(cfg.AddBOSToken, false),
		cleanUp:        boolOr(cfg.CleanUpTokenizationSpaces, true),
		byteDec:        make(map[rune]byte, 256),
		cache:          map[string]bpeWord{},
	}
	for b := 0; b < 256; b++ {
		s := pretokenizer.BytesChar[uint8(b)]
		r, _ := utf8.DecodeRuneInString(s)
		t.byteEnc[b] = s
		t.byteDec[r] = byte(b)
	}
	return t, nil
}

// readMergesTxt reads merges.txt exactly as GPT2Tokenizer does:
// read().split("\n")[1:-1] (the first line is the "#version" header, the
// last is what follows the final newline), each line split on whitespace,
// ranked by position (a repeated merge keeps its last rank).
func readMergesTxt(path string) (map[symbolPair]int, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	if !utf8.Valid(data) {
		return nil, fmt.Errorf("parse %s: expected UTF-8 text", path)
	}
	lines := strings.Split(string(data), "\n")
	if len(lines) < 2 {
		return nil, fmt.Errorf("parse %s: expected a \"#version\" header line followed by merges, one \"a b\" pair a line", path)
	}
	lines = lines[1 : len(lines)-1]
	ranks := make(map[symbolPair]int, len(lines))
	for i, line := range lines {
		f := strings.Fields(line)
		if len(f) != 2 {
			// transformers keeps such lines as tuples that never match a
			// pair; skipping them is the same.
			continue
		}
		ranks[symbolPair{f[0], f[1]}] = i
	}
	return ranks, nil
}

// jsonMerges reads tokenizer.json's model.merges: "a b" strings or [a, b]
// pairs.
func jsonMerges(merges []json.RawMessage, path string) (map[symbolPair]int, error) {
	ranks := make(map[symbolPair]int, len(merges))
	for i, m := range merges {
		var s string
		var pair []string
		var p symbolPair
		switch {
		case json.Unmarshal(m, &s) == nil:
			f := strings.Split(s, " ")
			if len(f) != 2 {
				return nil, fmt.Errorf("parse %s: model.merges[%d] = %q: expected two symbols separated by one space", path, i, s)
			}
			p = symbolPair{f[0], f[1]}
		case json.Unmarshal(m, &pair) == nil && len(pair) == 2:
			p = symbolPair{pair[0], pair[1]}
		default:
			return nil, fmt.Errorf("parse %s: model.merges[%d] = %s: expected \"a b\" or [\"a\", \"b\"]", path, i, m)
		}
		ranks[p] = i // a repeated merge keeps its last rank, as with merges.txt
	}
	return ranks, nil
}

// Encode tokenizes text as GPT2Tokenizer.encode(text) does: no special token
// is added (and no BOS, unless the checkpoint's tokenizer_config.json sets
// add_bos_token). Added tokens such as <|endoftext|> written in the text
// become their single id. An empty text gives an empty Encoding.
func (t *BPE) Encode(text string) (Encoding, error) {
	var enc Encoding
	if text == "" && !t.addBOS {
		return enc, nil
	}
	// English averages well over 3 bytes a token: one allocation mostly.
	enc.IDs = make([]int, 0, len(text)/3+2)
	enc.Tokens = make([]string, 0, len(text)/3+2)
	if t.addBOS {
		if id, ok := t.voc.tokenToID(t.bos); ok {
			enc.IDs = append(enc.IDs, id)
			enc.Tokens = append(enc.Tokens, t.bos)
		}
	}
	if t.addPrefixSpace {
		text = " " + text
	}
	words := make([]string, 0, len(text)/4+1)
	for _, piece := range t.voc.added.split(text) {
		if piece == "" {
			continue
		}
		if a, ok := t.voc.added.byContent[piece]; ok {
			enc.IDs = append(enc.IDs, a.ID)
			enc.Tokens = append(enc.Tokens, a.Content)
			continue
		}
		words = splitGPT2(piece, words[:0])
		for _, w := range words {
			bw, err := t.word(w)
			if err != nil {
				return Encoding{}, err
			}
			enc.IDs = append(enc.IDs, bw.ids...)
			enc.Tokens = append(enc.Tokens, bw.toks...)
		}
	}
	return enc, nil
}

// word encodes one pre-tokenized word (cached): byte-level mapping, BPE
// merges, ids (a token missing from the vocabulary gets the unknown token's
// id, as in GPT2Tokenizer._convert_token_to_id).
func (t *BPE) word(w string) (bpeWord, error) {
	t.mu.RLock()
	bw, ok := t.cache[w]
	t.mu.RUnlock()
	if ok {
		return bw, nil
	}
	bw.toks = t.bpe(t.byteEncode(w))
	bw.ids = make([]int, len(bw.toks))
	for i, sym := range bw.toks {
		id, ok := t.voc.tokenToID(sym)
		if !ok {
			if id, ok = t.voc.tokenToID(t.unk); !ok {
				return bpeWord{}, fmt.Errorf("gpt2 tokenizer: token %q is not in the vocabulary and there is no unknown token", sym)
			}
		}
		bw.ids[i] = id
	}
	t.mu.Lock()
	if len(t.cache) >= bpeCacheMax {
		t.cache = map[string]bpeWord{}
	}
	t.cache[strings.Clone(w)] = bw
	t.mu.Unlock()
	return bw, nil
}

// byteEncode maps every byte of w to its character of GPT-2's byte alphabet.
func (t *BPE) byteEncode(w string) string {
	var sb strings.Builder
	sb.Grow(2 * len(w))
	for i := 0; i < len(w); i++ {
		sb.WriteString(t.byteEnc[w[i]])
	}
	return sb.String()
}

// bpe is GPT2Tokenizer.bpe: starting from single characters, repeatedly
// merge the adjacent pair of lowest rank, every occurrence of it left to
// right, until no adjacent pair has a rank.
func (t *BPE) bpe(word string) []string {
	syms := make([]string, 0, utf8.RuneCountInString(word))
	for i := 0; i < len(word); {
		_, n := utf8.DecodeRuneInString(word[i:])
		syms = append(syms, word[i:i+n])
		i += n
	}
	for len(syms) > 1 {
		best, bestRank := -1, 0
		for i := 0; i+1 < len(syms); i++ {
			if r, ok := t.ranks[symbolPair{syms[i], syms[i+1]}]; ok && (best < 0 || r < bestRank) {
				best, bestRank = i, r
			}
		}
		if best < 0 {
			break
		}
		first, second := syms[best], syms[best+1]
		merged := first + second
		out := syms[:best] // everything before the first occurrence stays
		for i := best; i < len(syms); {
			if i+1 < len(syms) && syms[i] == first && syms[i+1] == second {
				out = append(out, merged)
				i += 2
			} else {
				out = append(out, syms[i])
				i++
			}
		}
		syms = out
	}
	return syms
}

// Decode turns ids back into text as GPT2Tokenizer.decode(ids) does: the
// tokens' byte-alphabet characters are mapped back to bytes, decoded as UTF-8
// with invalid sequences replaced by U+FFFD as Python's errors="replace"
// does, and, when the checkpoint's clean_up_tokenization_spaces is true (its
// default), transformers' clean_up_tokenization is applied (" ," -> ",",
// " 's" -> "'s", …). Special tokens are kept; added tokens that are not
// special stand apart, space-separated, as in transformers; unknown ids are
// skipped. Use DecodeBytes for the exact bytes.
func (t *BPE) Decode(ids []int) string {
	s := t.voc.decode(ids, func(toks []string) string {
		return decodeUTF8Replace(t.tokenBytes(nil, toks))
	})
	if t.cleanUp {
		s = cleanUpTokenization(s)
	}
	return s
}

// DecodeBytes is the exact inverse of the byte-level encoding: the bytes the
// ids' tokens stand for, concatenated, with no UTF-8 repair and no clean-up.
// Unknown ids are skipped.
func (t *BPE) DecodeBytes(ids []int) []byte {
	var out []byte
	for _, id := range ids {
		if tok, ok := t.voc.idToToken(id); ok {
			out = t.tokenBytes(out, []string{tok})
		}
	}
	return out
}

// tokenBytes appends the bytes byte-alphabet tokens stand for.
func (t *BPE) tokenBytes(out []byte, toks []string) []byte {
	for _, tok := range toks {
		for _, r := range tok {
			if b, ok := t.byteDec[r]; ok {
				out = append(out, b)
			} else {
				// Not in the byte alphabet (only possible for an added token
				// with such characters): keep the character itself.
				out = utf8.AppendRune(out, r)
			}
		}
	}
	return out
}

// TokenToID returns the id of a token string (byte-alphabet form, e.g.
// "ĠParis"; added tokens such as "<|endoftext|>" as written).
func (t *BPE) TokenToID(tok string) (int, bool) { return t.voc.tokenToID(tok) }

// IDToToken returns the token string of an id.
func (t *BPE) IDToToken(id int) (string, bool) { return t.voc.idToToken(id) }

// VocabSize is one more than the largest id, added tokens included (50257
// for GPT-2).
func (t *BPE) VocabSize() int { return t.voc.maxID + 1 }

// EOSID returns the id of the end-of-sequence token (<|endoftext|> unless
// the checkpoint names another), if it has one.
func (t *BPE) EOSID() (int, bool) { return t.specialID(t.eos) }

// BOSID returns the id of the beginning-of-sequence token (<|endoftext|>
// unless the checkpoint names another), if it has one. Encode prepends it
// only when the checkpoint sets add_bos_token.
func (t *BPE) BOSID() (int, bool) { return t.specialID(t.bos) }

func (t *BPE) specialID(tok string) (int, bool) {
	if tok == "" {
		return 0, false
	}
	return t.voc.tokenToID(tok)
}

// decodeUTF8Replace decodes b as Python's bytes.decode("utf-8",
// errors="replace") does: each maximal ill-formed subsequence (per the
// Unicode recommendation CPython follows) becomes one U+FFFD.
func decodeUTF8Replace(b []byte) string {
	if utf8.Valid(b) {
		return string(b)
	}
	var sb strings.Builder
	sb.Grow(len(b) + 8)
	for i := 0; i < len(b); {
		c := b[i]
		if c < 0x80 {
			sb.WriteByte(c)
			i++
			continue
		}
		n, lo, hi := 0, byte(0x80), byte(0xBF)
		switch {
		case c >= 0xC2 && c <= 0xDF:
			n = 1
		case c == 0xE0:
			n, lo = 2, 0xA0
		case c == 0xED:
			n, hi = 2, 0x9F
		case c >= 0xE1 && c <= 0xEF:
			n = 2
		case c == 0xF0:
			n, lo = 3, 0x90
		case c == 0xF4:
			n, hi = 3, 0x8F
		case c >= 0xF1 && c <= 0xF3:
			n = 3
		default: // 0x80..0xC1, 0xF5..0xFF never start a sequence
			sb.WriteRune(utf8.RuneError)
			i++
			continue
		}
		j, ok := i+1, true
		for k := 0; k < n; k++ {
			l, h := byte(0x80), byte(0xBF)
			if k == 0 {
				l, h = lo, hi
			}
			if j >= len(b) || b[j] < l || b[j] > h {
				ok = false
				break
			}
			j++
		}
		if ok {
			sb.Write(b[i:j])
		} else {
			sb.WriteRune(utf8.RuneError)
		}
		i = j
	}
	return sb.String()
}
