package factworld

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/sugarme/tokenizer/pretokenizer"
)

// Arch is the shape of a world model.
type Arch struct {
	Layers, Hidden, Heads, FFN int
}

// DefaultArch returns the shape knctl trains for a model: small enough to
// train on two CPU cores in minutes, big enough to learn the world. The
// FFN width was chosen by measurement (knctl factworld eval, see README):
// GPT-2 with 512 neurons per layer spread a fact over up to 25 knowledge
// neurons whose suppression cost it 45% of its probability; with 256, 2 to
// 15 neurons and 60%. BERT with 256 lost only 25% under suppression; with
// 512, 31%.
func DefaultArch(model string) Arch {
	a := Arch{Layers: 4, Hidden: 128, Heads: 4, FFN: 256}
	if model == "bert" {
		a.FFN = 512
	}
	return a
}

// MaxPositions bounds the world's sentences (they have at most ~15 tokens).
const MaxPositions = 64

// EndOfText is the GPT-2 special token.
const EndOfText = "<|endoftext|>"

// byteLevel maps text to GPT-2's byte-level alphabet.
func byteLevel(s string) string {
	var b strings.Builder
	for _, c := range []byte(s) {
		b.WriteString(pretokenizer.BytesChar[c])
	}
	return b.String()
}

// gpt2Words returns the byte-level pre-tokens of the world's sentences:
// words after a space carry GPT-2's "Ġ" marker; words that open a sentence
// do not.
func (w *World) gpt2Words() (spaced, initial []string) {
	sp, in := map[string]bool{}, map[string]bool{}
	for _, q := range append(w.Examples(Causal, false), w.Examples(Causal, true)...) {
		for i, field := range strings.Fields(q.Prompt + q.Answer) {
			for j, word := range splitWords(field) {
				switch {
				case word == "'s" || word == "," || word == ".":
					in[byteLevel(word)] = true
				case i == 0 && j == len(splitWords(field))-1:
					in[byteLevel(word)] = true
				default:
					sp[byteLevel(" "+word)] = true
				}
			}
		}
	}
	for _, r := range w.Relations {
		for _, o := range r.Objects {
			sp[byteLevel(" "+o)] = true
		}
	}
	// Every word also gets its spaced form, so it is one token mid-sentence.
	for word := range in {
		if word != byteLevel("'s") && word != "," && word != "." {
			sp[byteLevel(" ")+word] = true
		}
	}
	return sortedKeys(sp), sortedKeys(in)
}

func sortedKeys(m map[string]bool) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// GPT2Vocab builds a GPT-2 byte-level BPE vocabulary and merge list in
// which every word of the world is a single token. Each word gets a chain
// of merges growing it from its first symbol one character at a time. All
// chains of spaced words (which start with "Ġ") come first: within a
// spaced word the only applicable merges are then its own chain's, so the
// word always merges into one token whatever other chains exist.
func (w *World) GPT2Vocab() (vocab map[string]int, merges [][2]string) {
	vocab = map[string]int{}
	add := func(tok string) {
		if _, ok := vocab[tok]; !ok {
			vocab[tok] = len(vocab)
		}
	}
	for b := 0; b < 256; b++ {
		add(pretokenizer.BytesChar[uint8(b)])
	}
	seen := map[[2]string]bool{}
	chain := func(word string) {
		runes := []rune(word)
		left := string(runes[0])
		for _, r := range runes[1:] {
			m := [2]string{left, string(r)}
			left += string(r)
			if !seen[m] {
				seen[m] = true
				merges = append(merges, m)
				add(left)
			}
		}
	}
	spaced, initial := w.gpt2Words()
	for _, word := range spaced {
		chain(word)
	}
	for _, word := range initial {
		chain(word)
	}
	add(EndOfText)
	return vocab, merges
}

// BERTVocab builds a WordPiece vocabulary: the special tokens,
// punctuation, single letters and digits with their "##" forms (so any
// lower-case word can be spelled), and every word of the world, lower-cased.
func (w *World) BERTVocab() []string {
	vocab := []string{"[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", ".", ",", "'", "-"}
	have := map[string]bool{}
	for _, v := range vocab {
		have[v] = true
	}
	add := func(t string) {
		if !have[t] {
			have[t] = true
			vocab = append(vocab, t)
		}
	}
	for c := 'a'; c <= 'z'; c++ {
		add(string(c))
	}
	for c := '0'; c <= '9'; c++ {
		add(string(c))
	}
	for c := 'a'; c <= 'z'; c++ {
		add("##" + string(c))
	}
	for c := '0'; c <= '9'; c++ {
		add("##" + string(c))
	}
	for _, word := range w.Words() {
		add(strings.ToLower(word))
	}
	return vocab
}

// WriteSkeleton writes, for model "gpt2" or "bert", the config.json and
// tokenizer files of an untrained model of shape a: what a model plugin
// loads with init=random before training.
func (w *World) WriteSkeleton(dir, model string, a Arch) error {
	if a.Layers < 1 || a.Hidden < 1 || a.Heads < 1 || a.FFN < 1 || a.Hidden%a.Heads != 0 {
		return fmt.Errorf("fact world: model shape %+v: expected positive sizes with hidden divisible by heads", a)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	files := map[string]any{}
	switch model {
	case "gpt2":
		vocab, merges := w.GPT2Vocab()
		eos := vocab[EndOfText]
		files["vocab.json"] = vocab
		var b strings.Builder
		b.WriteString("#version: 0.2\n")
		for _, m := range merges {
			b.WriteString(m[0] + " " + m[1] + "\n")
		}
		files["merges.txt"] = b.String()
		files["config.json"] = map[string]any{
			"model_type": "gpt2", "architectures": []string{"GPT2LMHeadModel"},
			"vocab_size": len(vocab), "n_positions": MaxPositions, "n_ctx": MaxPositions,
			"n_embd": a.Hidden, "n_layer": a.Layers, "n_head": a.Heads, "n_inner": a.FFN,
			"activation_function": "gelu_new", "layer_norm_epsilon": 1e-5,
			"resid_pdrop": 0.0, "embd_pdrop": 0.0, "attn_pdrop": 0.0, "initializer_range": 0.02,
			"scale_attn_weights": true, "tie_word_embeddings": true, "use_cache": true,
			"bos_token_id": eos, "eos_token_id": eos, "torch_dtype": "float32",
		}
		special := map[string]any{"bos_token": EndOfText, "eos_token": EndOfText, "unk_token": EndOfText}
		files["special_tokens_map.json"] = special
		files["tokenizer_config.json"] = map[string]any{
			"tokenizer_class": "GPT2Tokenizer", "model_max_length": MaxPositions, "add_prefix_space": false,
			"bos_token": EndOfText, "eos_token": EndOfText, "unk_token": EndOfText,
		}
	case "bert":
		vocab := w.BERTVocab()
		files["vocab.txt"] = strings.Join(vocab, "\n") + "\n"
		files["config.json"] = map[string]any{
			"model_type": "bert", "architectures": []string{"BertForMaskedLM"},
			"vocab_size": len(vocab), "hidden_size": a.Hidden, "num_hidden_layers": a.Layers,
			"num_attention_heads": a.Heads, "intermediate_size": a.FFN, "hidden_act": "gelu",
			"hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0,
			"max_position_embeddings": MaxPositions, "type_vocab_size": 2, "layer_norm_eps": 1e-12,
			"initializer_range": 0.02, "pad_token_id": 0, "position_embedding_type": "absolute",
			"torch_dtype": "float32",
		}
		files["special_tokens_map.json"] = map[string]any{
			"unk_token": "[UNK]", "sep_token": "[SEP]", "pad_token": "[PAD]", "cls_token": "[CLS]", "mask_token": "[MASK]",
		}
		files["tokenizer_config.json"] = map[string]any{
			"tokenizer_class": "BertTokenizer", "do_lower_case": true, "model_max_length": MaxPositions,
			"unk_token": "[UNK]", "sep_token": "[SEP]", "pad_token": "[PAD]", "cls_token": "[CLS]", "mask_token": "[MASK]",
		}
	default:
		return fmt.Errorf("fact world: no model %q (expected gpt2 or bert)", model)
	}
	for name, v := range files {
		var b []byte
		if s, ok := v.(string); ok {
			b = []byte(s)
		} else {
			var err error
			if b, err = json.MarshalIndent(v, "", "  "); err != nil {
				return err
			}
			b = append(b, '\n')
		}
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o644); err != nil {
			return fmt.Errorf("write %s: %w", name, err)
		}
	}
	return nil
}
