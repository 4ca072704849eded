package tokenize

import (
	"bufio"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"unicode/utf8"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/sugarme/tokenizer/pretokenizer"
)

// The repository's shared fixtures (written by HuggingFace transformers).
var (
	gpt2FullDir = filepath.Join("..", "..", "..", "testdata", "gpt2-tokenizer")
	gpt2TinyDir = filepath.Join("..", "..", "..", "testdata", "gpt2-tiny")
	bertTinyDir = filepath.Join("..", "..", "..", "testdata", "bert-tiny")
)

type tokCase struct {
	Text    string   `json:"text"`
	IDs     []int    `json:"ids"`
	Tokens  []string `json:"tokens"`
	Decoded *string  `json:"decoded"`
}

type reference struct {
	TokenizationCases []tokCase `json:"tokenization_cases"`
	Facts             []struct {
		Fact     string `json:"fact"`
		Target   string `json:"target"`
		TargetID int    `json:"target_id"`
		Prompts  []struct {
			Text     string   `json:"text"`
			InputIDs []int    `json:"input_ids"`
			Tokens   []string `json:"tokens"`
		} `json:"prompts"`
	} `json:"facts"`
}

func loadReference(t testing.TB, dir string) reference {
	t.Helper()
	var r reference
	data, err := os.ReadFile(filepath.Join(dir, "reference.json"))
	require.NoError(t, err)
	require.NoError(t, json.Unmarshal(data, &r))
	require.NotEmpty(t, r.TokenizationCases)
	require.NotEmpty(t, r.Facts)
	return r
}

var (
	fullOnce sync.Once
	fullTok  *BPE
	fullErr  error
)

func loadFullGPT2(t testing.TB) *BPE {
	t.Helper()
	fullOnce.Do(func() { fullTok, fullErr = LoadGPT2(gpt2FullDir) })
	require.NoError(t, fullErr)
	return fullTok
}

func TestGPT2FullVocabCases(t *testing.T) {
	tok := loadFullGPT2(t)
	var file struct {
		VocabSize int       `json:"vocab_size"`
		Cases     []tokCase `json:"cases"`
	}
	data, err := os.ReadFile(filepath.Join(gpt2FullDir, "cases.json"))
	require.NoError(t, err)
	require.NoError(t, json.Unmarshal(data, &file))
	require.Len(t, file.Cases, 12)
	assert.Equal(t, file.VocabSize, tok.VocabSize())

	for _, c := range file.Cases {
		enc, err := tok.Encode(c.Text)
		require.NoError(t, err, "%q", c.Text)
		assert.Equal(t, nonNil(c.IDs), nonNil(enc.IDs), "ids of %q", c.Text)
		assert.Equal(t, nonNilS(c.Tokens), nonNilS(enc.Tokens), "tokens of %q", c.Text)
		require.NotNil(t, c.Decoded)
		assert.Equal(t, *c.Decoded, tok.Decode(c.IDs), "decode of %q", c.Text)
		assert.Equal(t, c.Text, string(tok.DecodeBytes(c.IDs)), "decode bytes of %q", c.Text)
		for i, id := range c.IDs {
			s, ok := tok.IDToToken(id)
			assert.True(t, ok)
			assert.Equal(t, c.Tokens[i], s)
			back, ok := tok.TokenToID(s)
			assert.True(t, ok)
			assert.Equal(t, id, back)
		}
	}

	eos, ok := tok.EOSID()
	assert.True(t, ok)
	assert.Equal(t, 50256, eos)
	bos, ok := tok.BOSID()
	assert.True(t, ok)
	assert.Equal(t, 50256, bos)
}

// The 40 × "a" case is where sugarme's own BPE merge loop goes wrong (13 ids);
// HF merges the run pairwise, all occurrences per step.
func TestGPT2RepeatedPairRun(t *testing.T) {
	tok := loadFullGPT2(t)
	aaaa, ok := tok.TokenToID("aaaa")
	require.True(t, ok)
	enc, err := tok.Encode(strings.Repeat("a", 40))
	require.NoError(t, err)
	assert.Equal(t, []int{aaaa, aaaa, aaaa, aaaa, aaaa, aaaa, aaaa, aaaa, aaaa, aaaa}, enc.IDs)
	// Served from the cache the second time, same answer.
	enc2, err := tok.Encode(strings.Repeat("a", 40))
	require.NoError(t, err)
	assert.Equal(t, enc.IDs, enc2.IDs)
}

func TestGPT2SpecialTokenInText(t *testing.T) {
	tok := loadFullGPT2(t)
	// "Hello" = 15496 and " world" = 995 (cases.json), <|endoftext|> = 50256.
	enc, err := tok.Encode("Hello<|endoftext|> world<|endoftext|>")
	require.NoError(t, err)
	assert.Equal(t, []int{15496, 50256, 995, 50256}, enc.IDs)
	assert.Equal(t, []string{"Hello", "<|endoftext|>", "Ġworld", "<|endoftext|>"}, enc.Tokens)
	assert.Equal(t, "Hello<|endoftext|> world<|endoftext|>", tok.Decode(enc.IDs))
	// A near miss is ordinary text.
	enc, err = tok.Encode("<|endoftext|")
	require.NoError(t, err)
	assert.NotContains(t, enc.IDs, 50256)
}

func TestGPT2DecodeCleanUpAndReplacement(t *testing.T) {
	tok := loadFullGPT2(t)
	// transformers' decode applies clean_up_tokenization by default.
	enc, err := tok.Encode("Hello , world . It 's")
	require.NoError(t, err)
	assert.Equal(t, "Hello, world. It's", tok.Decode(enc.IDs))
	assert.Equal(t, "Hello , world . It 's", string(tok.DecodeBytes(enc.IDs)))
	// Half an emoji: its first BPE token holds 3 of its 4 bytes, which
	// Python's errors="replace" turns into one U+FFFD.
	enc, err = tok.Encode("😀")
	require.NoError(t, err)
	raw := tok.DecodeBytes(enc.IDs[:1])
	require.False(t, utf8.Valid(raw))
	assert.Equal(t, "\uFFFD", tok.Decode(enc.IDs[:1]))
	// Unknown ids are skipped.
	assert.Equal(t, "", tok.Decode([]int{-1, 1 << 30}))
}

func TestGPT2TinyReference(t *testing.T) {
	tok, err := LoadGPT2(gpt2TinyDir)
	require.NoError(t, err)
	assert.Equal(t, 8257, tok.VocabSize())
	eos, ok := tok.EOSID()
	assert.True(t, ok)
	assert.Equal(t, 8256, eos)

	ref := loadReference(t, gpt2TinyDir)
	require.Len(t, ref.TokenizationCases, 12)
	for _, c := range ref.TokenizationCases {
		enc, err := tok.Encode(c.Text)
		require.NoError(t, err)
		assert.Equal(t, nonNil(c.IDs), nonNil(enc.IDs), "ids of %q", c.Text)
		assert.Equal(t, nonNilS(c.Tokens), nonNilS(enc.Tokens), "tokens of %q", c.Text)
		assert.Equal(t, c.Text, string(tok.DecodeBytes(enc.IDs)))
	}
	n := 0
	for _, f := range ref.Facts {
		// GPT-2 targets are one token (with its leading space).
		enc, err := tok.Encode(f.Target)
		require.NoError(t, err)
		assert.Equal(t, []int{f.TargetID}, enc.IDs, "target %q", f.Target)
		for _, p := range f.Prompts {
			enc, err := tok.Encode(p.Text)
			require.NoError(t, err)
			assert.Equal(t, p.InputIDs, enc.IDs, "prompt %q", p.Text)
			assert.Equal(t, p.Tokens, enc.Tokens, "prompt %q", p.Text)
			n++
		}
	}
	assert.Equal(t, 12, n)
}

func TestBERTTinyReference(t *testing.T) {
	tok, err := LoadBERT(bertTinyDir)
	require.NoError(t, err)
	assert.Equal(t, 201, tok.VocabSize())
	assert.Equal(t, 0, tok.PadID())
	assert.Equal(t, 1, tok.UNKID())
	assert.Equal(t, 2, tok.CLSID())
	assert.Equal(t, 3, tok.SEPID())
	assert.Equal(t, 4, tok.MaskID())
	assert.Equal(t, "[MASK]", tok.MaskToken())

	ref := loadReference(t, bertTinyDir)
	require.Len(t, ref.TokenizationCases, 16)
	for _, c := range ref.TokenizationCases {
		enc, err := tok.Encode(c.Text)
		require.NoError(t, err)
		assert.Equal(t, c.IDs, enc.IDs, "ids of %q", c.Text)
		assert.Equal(t, c.Tokens, enc.Tokens, "tokens of %q", c.Text)
		plain, err := tok.EncodePlain(c.Text)
		require.NoError(t, err)
		assert.Equal(t, nonNil(c.IDs[1:len(c.IDs)-1]), nonNil(plain.IDs), "plain ids of %q", c.Text)
	}
	n := 0
	for _, f := range ref.Facts {
		id, ok := tok.TokenToID(f.Target)
		assert.True(t, ok)
		assert.Equal(t, f.TargetID, id, "target %q", f.Target)
		enc, err := tok.EncodePlain(f.Target)
		require.NoError(t, err)
		assert.Equal(t, []int{f.TargetID}, enc.IDs)
		for _, p := range f.Prompts {
			enc, err := tok.Encode(p.Text)
			require.NoError(t, err)
			assert.Equal(t, p.InputIDs, enc.IDs, "prompt %q", p.Text)
			assert.Equal(t, p.Tokens, enc.Tokens, "prompt %q", p.Text)
			n++
		}
	}
	assert.Equal(t, 12, n)
}

// readVocabLines is an independent reader of vocab.txt for the hand-derived
// expectations: token -> line number.
func readVocabLines(t *testing.T, path string) map[string]int {
	t.Helper()
	f, err := os.Open(path)
	require.NoError(t, err)
	defer f.Close()
	m := map[string]int{}
	sc := bufio.NewScanner(f)
	for i := 0; sc.Scan(); i++ {
		m[sc.Text()] = i
	}
	require.NoError(t, sc.Err())
	return m
}

// BERT cases worked out by hand from BertTokenizer's algorithm, with ids
// read from vocab.txt (not from this package's code).
func TestBERTHandDerivedCases(t *testing.T) {
	tok, err := LoadBERT(bertTinyDir)
	require.NoError(t, err)
	vocab := readVocabLines(t, filepath.Join(bertTinyDir, "vocab.txt"))
	pieces := func(s string) []string { return strings.Fields(s) }
	cases := []struct {
		name, text string
		tokens     []string // without [CLS]/[SEP]
	}{
		{"mask mid text", "Paris is the capital of [MASK].",
			pieces("paris is the capital of [MASK] .")},
		{"mask glued to words", "x[MASK]y",
			pieces("x [MASK] y")},
		{"lower-case mask is text", "[mask]",
			pieces("[ m ##a ##s ##k ]")},
		{"accents stripped when lower-casing", "Café Déjà Vu",
			pieces("c ##a ##f ##e d ##e ##j ##a v ##u")},
		{"decomposed accent", "cafe\u0301",
			pieces("c ##a ##f ##e")},
		{"sharp s is unknown", "ß",
			pieces("[UNK]")},
		{"sharp s makes the whole word unknown", "Straße is",
			pieces("[UNK] is")},
		{"punctuation split", "hello,world!?",
			pieces("h ##e ##l ##l ##o , w ##o ##r ##l ##d ! ?")},
		{"ascii symbols are punctuation", "$100 & 50% ~^`",
			pieces("$ 1 ##0 ##0 & 5 ##0 % ~ ^ `")},
		{"contraction is split", "what's",
			pieces("what ' s")},
		{"unicode punctuation", "paris—london",
			pieces("paris [UNK] london")},
		{"cjk spaced", "a東b",
			pieces("a [UNK] b")},
		{"cjk extension A spaced", "a\u3400b",
			pieces("a [UNK] b")},
		{"hiragana not spaced", "aあb",
			pieces("[UNK]")},
		{"no-break space is whitespace", "the\u00a0city",
			pieces("the city")},
		{"ideographic space is whitespace", "the\u3000city",
			pieces("the city")},
		{"format characters removed", "the\u200bcity",
			pieces("the ##c ##i ##t ##y")},
		{"control characters removed", "the\x00\x07city",
			pieces("the ##c ##i ##t ##y")},
		{"dotted capital I", "İs",
			pieces("is")},
		{"upper case", "PARIS",
			pieces("paris")},
		{"longest match first", "capitals englishes cities",
			pieces("capital ##s english ##es c ##i ##t ##i ##es")},
		{"100 chars is fine", strings.Repeat("a", 100),
			append([]string{"a"}, strings.Fields(strings.Repeat("##a ", 99))...)},
		{"101 chars is unknown", strings.Repeat("a", 101),
			pieces("[UNK]")},
		{"specials at both ends", "[CLS]paris[SEP]",
			pieces("[CLS] paris [SEP]")},
		{"empty", "", nil},
		{"only spaces", " \t\n ", nil},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var want []int
			for _, p := range c.tokens {
				id, ok := vocab[p]
				require.True(t, ok, "token %q not in vocab.txt", p)
				want = append(want, id)
			}
			got, err := tok.EncodePlain(c.text)
			require.NoError(t, err)
			assert.Equal(t, nonNilS(c.tokens), nonNilS(got.Tokens))
			assert.Equal(t, nonNil(want), nonNil(got.IDs))
			full, err := tok.Encode(c.text)
			require.NoError(t, err)
			assert.Equal(t, append(append([]int{vocab["[CLS]"]}, want...), vocab["[SEP]"]), full.IDs)
		})
	}
}

func TestBERTDecode(t *testing.T) {
	tok, err := LoadBERT(bertTinyDir)
	require.NoError(t, err)
	enc, err := tok.Encode("The capital of France is Paris. Leading!")
	require.NoError(t, err)
	assert.Equal(t, "[CLS] the capital of france is paris. leading! [SEP]", tok.Decode(enc.IDs))
	enc, err = tok.EncodePlain("France's capital")
	require.NoError(t, err)
	// clean_up_tokenization turns " ' " into "'".
	assert.Equal(t, "france's capital", tok.Decode(enc.IDs))
}

func TestBERTConfigOptions(t *testing.T) {
	dir := t.TempDir()
	copyFile(t, filepath.Join(bertTinyDir, "vocab.txt"), filepath.Join(dir, "vocab.txt"))
	vocab := readVocabLines(t, filepath.Join(bertTinyDir, "vocab.txt"))

	// do_lower_case false: upper-case letters are not in this vocab.
	writeFile(t, filepath.Join(dir, "tokenizer_config.json"), `{"do_lower_case": false}`)
	tok, err := LoadBERT(dir)
	require.NoError(t, err)
	enc, err := tok.EncodePlain("Paris café")
	require.NoError(t, err)
	assert.Equal(t, []string{"[UNK]", "[UNK]"}, enc.Tokens)

	// Lower-casing without accent stripping: "é" stays and is unknown.
	writeFile(t, filepath.Join(dir, "tokenizer_config.json"), `{"do_lower_case": true, "strip_accents": false}`)
	tok, err = LoadBERT(dir)
	require.NoError(t, err)
	enc, err = tok.EncodePlain("Paris café")
	require.NoError(t, err)
	assert.Equal(t, []string{"paris", "[UNK]"}, enc.Tokens)

	// No CJK spacing: "a東b" is one word, unknown as a whole.
	writeFile(t, filepath.Join(dir, "tokenizer_config.json"), `{"tokenize_chinese_chars": false}`)
	tok, err = LoadBERT(dir)
	require.NoError(t, err)
	enc, err = tok.EncodePlain("a東b")
	require.NoError(t, err)
	assert.Equal(t, []string{"[UNK]"}, enc.Tokens)

	// never_split keeps a word whole through the punctuation split.
	writeFile(t, filepath.Join(dir, "tokenizer_config.json"), `{"never_split": ["what's"]}`)
	tok, err = LoadBERT(dir)
	require.NoError(t, err)
	enc, err = tok.EncodePlain("what's")
	require.NoError(t, err)
	assert.Equal(t, []int{vocab["what's"]}, enc.IDs)

	// A renamed mask token.
	writeFile(t, filepath.Join(dir, "tokenizer_config.json"), `{}`)
	writeFile(t, filepath.Join(dir, "special_tokens_map.json"), `{"mask_token": {"content": "<mask>", "lstrip": true}}`)
	tok, err = LoadBERT(dir)
	require.NoError(t, err)
	assert.Equal(t, "<mask>", tok.MaskToken())
	assert.Equal(t, 201, tok.MaskID()) // appended after the vocabulary
	assert.Equal(t, 202, tok.VocabSize())
	enc, err = tok.EncodePlain("paris <mask>.")
	require.NoError(t, err)
	assert.Equal(t, []string{"paris", "<mask>", "."}, enc.Tokens)
	assert.Equal(t, []int{vocab["paris"], 201, vocab["."]}, enc.IDs)
}

func TestGPT2ConfigOptions(t *testing.T) {
	ref, err := LoadGPT2(gpt2TinyDir)
	require.NoError(t, err)
	hello, err := ref.Encode(" Hello")
	require.NoError(t, err)

	dir := t.TempDir()
	copyFile(t, filepath.Join(gpt2TinyDir, "vocab.json"), filepath.Join(dir, "vocab.json"))
	copyFile(t, filepath.Join(gpt2TinyDir, "merges.txt"), filepath.Join(dir, "merges.txt"))

	// add_prefix_space: "Hello" is encoded as " Hello"; add_bos_token
	// prepends <|endoftext|>.
	writeFile(t, filepath.Join(dir, "tokenizer_config.json"), `{"add_prefix_space": true, "add_bos_token": true}`)
	tok, err := LoadGPT2(dir)
	require.NoError(t, err)
	enc, err := tok.Encode("Hello")
	require.NoError(t, err)
	assert.Equal(t, append([]int{8256}, hello.IDs...), enc.IDs)

	// A user-added (not special) token: one id, and decode sets it apart
	// with spaces as transformers' _decode does.
	writeFile(t, filepath.Join(dir, "tokenizer_config.json"), `{}`)
	writeFile(t, filepath.Join(dir, "added_tokens.json"), `{"<new>": 8257}`)
	tok, err = LoadGPT2(dir)
	require.NoError(t, err)
	assert.Equal(t, 8258, tok.VocabSize())
	enc, err = tok.Encode("a<new>b")
	require.NoError(t, err)
	a, _ := tok.TokenToID("a")
	b, _ := tok.TokenToID("b")
	assert.Equal(t, []int{a, 8257, b}, enc.IDs)
	assert.Equal(t, "a <new> b", tok.Decode(enc.IDs))
	assert.Equal(t, "a<new>b", string(tok.DecodeBytes(enc.IDs)))
}

func TestGPT2TokenizerJSONMatchesVocabFiles(t *testing.T) {
	ref, err := LoadGPT2(gpt2TinyDir)
	require.NoError(t, err)

	var vocab map[string]int
	data, err := os.ReadFile(filepath.Join(gpt2TinyDir, "vocab.json"))
	require.NoError(t, err)
	require.NoError(t, json.Unmarshal(data, &vocab))
	mdata, err := os.ReadFile(filepath.Join(gpt2TinyDir, "merges.txt"))
	require.NoError(t, err)
	lines := strings.Split(strings.TrimSuffix(string(mdata), "\n"), "\n")[1:]
	require.Len(t, lines, 8000)

	texts := []string{"Hello<|endoftext|>world", "Hello <|endoftext|> world"}
	rf := loadReference(t, gpt2TinyDir)
	for _, c := range rf.TokenizationCases {
		texts = append(texts, c.Text)
	}

	for _, form := range []string{"strings", "pairs"} {
		t.Run(form, func(t *testing.T) {
			var merges []any
			for _, l := range lines {
				f := strings.Split(l, " ")
				require.Len(t, f, 2)
				if form == "strings" {
					merges = append(merges, l)
				} else {
					merges = append(merges, []string{f[0], f[1]})
				}
			}
			tj := map[string]any{
				"version": "1.0",
				"added_tokens": []map[string]any{{
					"id": 8256, "content": "<|endoftext|>", "single_word": false, "lstrip": false,
					"rstrip": false, "normalized": true, "special": true,
				}},
				"normalizer":    nil,
				"pre_tokenizer": map[string]any{"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true},
				"model": map[string]any{
					"type": "BPE", "dropout": nil, "unk_token": nil, "continuing_subword_prefix": "",
					"end_of_word_suffix": "", "fuse_unk": false, "byte_fallback": false,
					"vocab": vocab, "merges": merges,
				},
			}
			dir := t.TempDir()
			writeJSON(t, filepath.Join(dir, "tokenizer.json"), tj)
			tok, err := LoadGPT2(dir)
			require.NoError(t, err)
			assert.Equal(t, ref.VocabSize(), tok.VocabSize())
			eos, ok := tok.EOSID()
			assert.True(t, ok)
			assert.Equal(t, 8256, eos)
			for _, text := range texts {
				want, err := ref.Encode(text)
				require.NoError(t, err)
				got, err := tok.Encode(text)
				require.NoError(t, err)
				assert.Equal(t, want, got, "%q", text)
				assert.Equal(t, ref.Decode(want.IDs), tok.Decode(got.IDs))
			}
		})
	}
}

func TestBERTTokenizerJSONMatchesVocabTxt(t *testing.T) {
	ref, err := LoadBERT(bertTinyDir)
	require.NoError(t, err)
	vocab := readVocabLines(t, filepath.Join(bertTinyDir, "vocab.txt"))
	var added []map[string]any
	for i, s := range []string{"[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"} {
		added = append(added, map[string]any{"id": i, "content": s, "single_word": false, "lstrip": false,
			"rstrip": false, "normalized": false, "special": true})
	}
	tj := map[string]any{
		"version":      "1.0",
		"added_tokens": added,
		"normalizer": map[string]any{"type": "BertNormalizer", "clean_text": true, "handle_chinese_chars": true,
			"strip_accents": nil, "lowercase": true},
		"pre_tokenizer":  map[string]any{"type": "BertPreTokenizer"},
		"post_processor": map[string]any{"type": "BertProcessing", "sep": []any{"[SEP]", 3}, "cls": []any{"[CLS]", 2}},
		"model": map[string]any{"type": "WordPiece", "unk_token": "[UNK]", "continuing_subword_prefix": "##",
			"max_input_chars_per_word": 100, "vocab": vocab},
	}
	dir := t.TempDir()
	writeJSON(t, filepath.Join(dir, "tokenizer.json"), tj)
	tok, err := LoadBERT(dir)
	require.NoError(t, err)
	assert.Equal(t, ref.VocabSize(), tok.VocabSize())
	assert.Equal(t, ref.MaskID(), tok.MaskID())
	rf := loadReference(t, bertTinyDir)
	texts := []string{"Café Déjà Vu", "a東b", "Paris is the capital of [MASK]."}
	for _, c := range rf.TokenizationCases {
		texts = append(texts, c.Text)
	}
	for _, text := range texts {
		want, err := ref.Encode(text)
		require.NoError(t, err)
		got, err := tok.Encode(text)
		require.NoError(t, err)
		assert.Equal(t, want, got, "%q", text)
	}
}

func TestLoadErrors(t *testing.T) {
	t.Run("missing dir", func(t *testing.T) {
		dir := filepath.Join(t.TempDir(), "nope")
		_, err := LoadGPT2(dir)
		require.Error(t, err)
		assert.Contains(t, err.Error(), dir)
		assert.True(t, errors.Is(err, fs.ErrNotExist))
		_, err = LoadBERT(dir)
		require.Error(t, err)
		assert.Contains(t, err.Error(), dir)
	})
	t.Run("not a dir", func(t *testing.T) {
		_, err := LoadGPT2(filepath.Join(gpt2TinyDir, "vocab.json"))
		require.Error(t, err)
		assert.Contains(t, err.Error(), "not a directory")
	})
	t.Run("empty dir", func(t *testing.T) {
		dir := t.TempDir()
		_, err := LoadGPT2(dir)
		require.Error(t, err)
		assert.True(t, errors.Is(err, fs.ErrNotExist))
		for _, want := range []string{dir, "vocab.json", "merges.txt", "tokenizer.json"} {
			assert.Contains(t, err.Error(), want)
		}
		_, err = LoadBERT(dir)
		require.Error(t, err)
		for _, want := range []string{dir, "vocab.txt", "tokenizer.json"} {
			assert.Contains(t, err.Error(), want)
		}
	})
	t.Run("missing merges", func(t *testing.T) {
		dir := t.TempDir()
		copyFile(t, filepath.Join(gpt2TinyDir, "vocab.json"), filepath.Join(dir, "vocab.json"))
		_, err := LoadGPT2(dir)
		require.Error(t, err)
		assert.Contains(t, err.Error(), "merges.txt")
		assert.Contains(t, err.Error(), dir)
	})
	t.Run("corrupt vocab.json", func(t *testing.T) {
		dir := t.TempDir()
		writeFile(t, filepath.Join(dir, "vocab.json"), `{"a": 0, `)
		copyFile(t, filepath.Join(gpt2TinyDir, "merges.txt"), filepath.Join(dir, "merges.txt"))
		_, err := LoadGPT2(dir)
		require.Error(t, err)
		assert.Contains(t, err.Error(), filepath.Join(dir, "vocab.json"))
		assert.Contains(t, err.Error(), "JSON")
	})
	t.Run("corrupt tokenizer.json", func(t *testing.T) {
		dir := t.TempDir()
		writeFile(t, filepath.Join(dir, "tokenizer.json"), `not json`)
		_, err := LoadGPT2(dir)
		require.Error(t, err)
		assert.Contains(t, err.Error(), filepath.Join(dir, "tokenizer.json"))
		_, err = LoadBERT(dir)
		require.Error(t, err)
		assert.Contains(t, err.Error(), filepath.Join(dir, "tokenizer.json"))
	})
	t.Run("wrong model type", func(t *testing.T) {
		dir := t.TempDir()
		writeFile(t, filepath.Join(dir, "tokenizer.json"), `{"model": {"type": "Unigram", "vocab": [["a", 0.0]]}}`)
		_, err := LoadGPT2(dir)
		require.Error(t, err)
		assert.Contains(t, err.Error(), "BPE")
		assert.Contains(t, err.Error(), "Unigram")
		_, err = LoadBERT(dir)
		require.Error(t, err)
		assert.Contains(t, err.Error(), "WordPiece")
	})
	t.Run("bad merge entry", func(t *testing.T) {
		dir := t.TempDir()
		writeFile(t, filepath.Join(dir, "tokenizer.json"), `{"model": {"type": "BPE", "vocab": {"a": 0}, "merges": ["a b c"]}}`)
		_, err := LoadGPT2(dir)
		require.Error(t, err)
		assert.Contains(t, err.Error(), "merges[0]")
	})
	t.Run("corrupt tokenizer_config.json", func(t *testing.T) {
		dir := t.TempDir()
		copyFile(t, filepath.Join(bertTinyDir, "vocab.txt"), filepath.Join(dir, "vocab.txt"))
		writeFile(t, filepath.Join(dir, "tokenizer_config.json"), `{"do_lower_case": tru`)
		_, err := LoadBERT(dir)
		require.Error(t, err)
		assert.Contains(t, err.Error(), filepath.Join(dir, "tokenizer_config.json"))
	})
	t.Run("empty vocab.txt", func(t *testing.T) {
		dir := t.TempDir()
		writeFile(t, filepath.Join(dir, "vocab.txt"), ``)
		_, err := LoadBERT(dir)
		require.Error(t, err)
		assert.Contains(t, err.Error(), filepath.Join(dir, "vocab.txt"))
	})
}

// The byte alphabet taken from sugarme must be GPT-2's bytes_to_unicode.
func TestByteAlphabetIsGPT2s(t *testing.T) {
	var bs []int
	for b := '!'; b <= '~'; b++ {
		bs = append(bs, int(b))
	}
	for b := '¡'; b <= '¬'; b++ {
		bs = append(bs, int(b))
	}
	for b := '®'; b <= 'ÿ'; b++ {
		bs = append(bs, int(b))
	}
	cs := append([]int(nil), bs...)
	in := map[int]bool{}
	for _, b := range bs {
		in[b] = true
	}
	n := 0
	for b := 0; b < 256; b++ {
		if !in[b] {
			bs = append(bs, b)
			cs = append(cs, 256+n)
			n++
		}
	}
	for i, b := range bs {
		assert.Equal(t, string(rune(cs[i])), pretokenizer.BytesChar[uint8(b)], "byte %d", b)
	}
}

type pythonRefs struct {
	Pretokenize []struct {
		Text  string   `json:"text"`
		Words []string `json:"words"`
	} `json:"pretokenize"`
	UTF8Replace []struct {
		Hex  string `json:"hex"`
		Text string `json:"text"`
	} `json:"utf8_replace"`
}

func loadPythonRefs(t *testing.T) pythonRefs {
	t.Helper()
	var r pythonRefs
	data, err := os.ReadFile(filepath.Join("testdata", "python_refs.json"))
	require.NoError(t, err)
	require.NoError(t, json.Unmarshal(data, &r))
	return r
}

// Pre-tokenization against Python's `regex` module running GPT-2's pattern
// (testdata/gen_python_refs.py).
func TestSplitGPT2MatchesPythonRegex(t *testing.T) {
	r := loadPythonRefs(t)
	require.Greater(t, len(r.Pretokenize), 300)
	for _, c := range r.Pretokenize {
		assert.Equal(t, nonNilS(c.Words), nonNilS(splitGPT2(c.Text, nil)), "%q", c.Text)
	}
}

// UTF-8 repair against Python's bytes.decode("utf-8", errors="replace").
func TestDecodeUTF8ReplaceMatchesPython(t *testing.T) {
	r := loadPythonRefs(t)
	require.Greater(t, len(r.UTF8Replace), 300)
	for _, c := range r.UTF8Replace {
		b, err := hex.DecodeString(c.Hex)
		require.NoError(t, err)
		assert.Equal(t, c.Text, decodeUTF8Replace(b), "%s", c.Hex)
	}
}

func TestEncodeEmptyAndConcurrent(t *testing.T) {
	tok := loadFullGPT2(t)
	enc, err := tok.Encode("")
	require.NoError(t, err)
	assert.Empty(t, enc.IDs)
	assert.Empty(t, enc.Tokens)

	want, err := tok.Encode(benchParagraph)
	require.NoError(t, err)
	var wg sync.WaitGroup
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 20; i++ {
				got, err := tok.Encode(benchParagraph)
				assert.NoError(t, err)
				assert.Equal(t, want.IDs, got.IDs)
			}
		}()
	}
	wg.Wait()
	assert.Equal(t, benchParagraph, tok.Decode(want.IDs))
}

const benchParagraph = `The Eiffel Tower is a wrought-iron lattice tower on the Champ de Mars in Paris, France. ` +
	`It is named after the engineer Gustave Eiffel, whose company designed and built the tower from 1887 to 1889. ` +
	`Locally nicknamed "La dame de fer" (French for "Iron Lady"), it was constructed as the centrepiece of the ` +
	`1889 World's Fair, and to crown the centennial anniversary of the French Revolution. Although initially ` +
	`criticised by some of France's leading artists and intellectuals for its design, it has since become a ` +
	`global cultural icon of France and one of the most recognisable structures in the world. The tower received ` +
	`5,889,000 visitors in 2022. The Eiffel Tower is the most visited monument with an entrance fee in the world: ` +
	`6.91 million people ascended it in 2015. It was designated a monument historique in 1964, and was named part ` +
	`of a UNESCO World Heritage Site ("Paris, Banks of the Seine") in 1991. The tower is 330 metres (1,083 ft) ` +
	`tall, about the same height as an 81-storey building, and the tallest structure in Paris.`

func BenchmarkGPT2Encode(b *testing.B) {
	tok := loadFullGPT2(b)
	b.Run("warm", func(b *testing.B) {
		b.SetBytes(int64(len(benchParagraph)))
		for i := 0; i < b.N; i++ {
			if _, err := tok.Encode(benchParagraph); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("cold", func(b *testing.B) { // per-word cache emptied every time
		b.SetBytes(int64(len(benchParagraph)))
		for i := 0; i < b.N; i++ {
			tok.mu.Lock()
			tok.cache = map[string]bpeWord{}
			tok.mu.Unlock()
			if _, err := tok.Encode(benchParagraph); err != nil {
				b.Fatal(err)
			}
		}
	})
}

func nonNil(s []int) []int {
	if s == nil {
		return []int{}
	}
	return s
}

func nonNilS(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	require.NoError(t, os.WriteFile(path, []byte(content), 0o644))
}

func writeJSON(t *testing.T, path string, v any) {
	t.Helper()
	data, err := json.Marshal(v)
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(path, data, 0o644))
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	data, err := os.ReadFile(from)
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(to, data, 0o644))
}
