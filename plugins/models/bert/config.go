package bert

import (
	"strings"

	"github.com/knctl/knctl/plugins/models/checkpoint"
	"github.com/knctl/knctl/sdk"
)

// Config is the part of a HuggingFace BertConfig the backend uses; missing
// fields take BertConfig's defaults (the bert-base-uncased sizes).
type Config struct {
	VocabSize             int     `json:"vocab_size"`
	HiddenSize            int     `json:"hidden_size"`
	NumHiddenLayers       int     `json:"num_hidden_layers"`
	NumAttentionHeads     int     `json:"num_attention_heads"`
	IntermediateSize      int     `json:"intermediate_size"`
	HiddenAct             string  `json:"hidden_act"`
	MaxPositionEmbeddings int     `json:"max_position_embeddings"`
	TypeVocabSize         int     `json:"type_vocab_size"`
	LayerNormEps          float64 `json:"layer_norm_eps"`
	InitializerRange      float64 `json:"initializer_range"`
	PositionEmbeddingType string  `json:"position_embedding_type"`
	// TieWordEmbeddings (default true) makes the MLM decoder reuse the word
	// embeddings, as every released BERT checkpoint does.
	TieWordEmbeddings *bool    `json:"tie_word_embeddings"`
	Architectures     []string `json:"architectures"`
}

// ReadConfig reads dir/config.json, fills BertConfig's defaults and checks
// that the backend can run it.
func ReadConfig(dir string) (Config, error) {
	c := Config{
		VocabSize: 30522, HiddenSize: 768, NumHiddenLayers: 12, NumAttentionHeads: 12,
		IntermediateSize: 3072, HiddenAct: "gelu", MaxPositionEmbeddings: 512, TypeVocabSize: 2,
		LayerNormEps: 1e-12, InitializerRange: 0.02, PositionEmbeddingType: "absolute",
	}
	mt, err := checkpoint.ReadConfig(dir, &c)
	if err != nil {
		return c, err
	}
	if mt != "bert" && !(mt == "" && c.bertArchitecture()) {
		return c, sdk.InvalidInputf("checkpoint %s: model_type %q in config.json; the bert backend expects \"bert\"", dir, mt)
	}
	if c.TieWordEmbeddings == nil {
		t := true
		c.TieWordEmbeddings = &t
	}
	if c.HiddenSize <= 0 || c.NumHiddenLayers <= 0 || c.NumAttentionHeads <= 0 || c.IntermediateSize <= 0 ||
		c.VocabSize <= 0 || c.MaxPositionEmbeddings <= 0 || c.TypeVocabSize <= 0 || c.HiddenSize%c.NumAttentionHeads != 0 {
		return c, sdk.InvalidInputf("checkpoint %s: config.json has hidden_size=%d num_hidden_layers=%d num_attention_heads=%d intermediate_size=%d vocab_size=%d max_position_embeddings=%d type_vocab_size=%d; expected positive sizes with hidden_size divisible by num_attention_heads",
			dir, c.HiddenSize, c.NumHiddenLayers, c.NumAttentionHeads, c.IntermediateSize, c.VocabSize, c.MaxPositionEmbeddings, c.TypeVocabSize)
	}
	if c.PositionEmbeddingType != "absolute" {
		return c, sdk.InvalidInputf("checkpoint %s: position_embedding_type %q in config.json; the bert backend supports only \"absolute\"", dir, c.PositionEmbeddingType)
	}
	if c.LayerNormEps < 0 {
		return c, sdk.InvalidInputf("checkpoint %s: layer_norm_eps %g in config.json; expected >= 0", dir, c.LayerNormEps)
	}
	return c, nil
}

// bertArchitecture reports whether config.json names a BERT class: very
// old configs have no model_type, and transformers then goes by the name.
func (c Config) bertArchitecture() bool {
	for _, a := range c.Architectures {
		if strings.HasPrefix(a, "Bert") {
			return true
		}
	}
	return false
}

// tied reports whether the MLM decoder is the word-embedding matrix.
func (c Config) tied() bool { return c.TieWordEmbeddings == nil || *c.TieWordEmbeddings }
