package gpt2

import (
	"github.com/knctl/knctl/plugins/models/checkpoint"
	"github.com/knctl/knctl/sdk"
)

// Config is the part of a HuggingFace GPT2Config the backend uses; missing
// fields take GPT2Config's defaults.
type Config struct {
	VocabSize                  int     `json:"vocab_size"`
	NPositions                 int     `json:"n_positions"`
	NCtx                       int     `json:"n_ctx"`
	NEmbd                      int     `json:"n_embd"`
	NLayer                     int     `json:"n_layer"`
	NHead                      int     `json:"n_head"`
	NInner                     *int    `json:"n_inner"`
	Activation                 string  `json:"activation_function"`
	LayerNormEps               float64 `json:"layer_norm_epsilon"`
	ScaleAttnWeights           *bool   `json:"scale_attn_weights"`
	ScaleAttnByInverseLayerIdx bool    `json:"scale_attn_by_inverse_layer_idx"`
}

// ReadConfig reads dir/config.json, fills defaults and checks consistency.
func ReadConfig(dir string) (Config, error) {
	c := Config{VocabSize: 50257, NEmbd: 768, NLayer: 12, NHead: 12, Activation: "gelu_new", LayerNormEps: 1e-5}
	mt, err := checkpoint.ReadConfig(dir, &c)
	if err != nil {
		return c, err
	}
	if mt != "gpt2" {
		return c, sdk.InvalidInputf("checkpoint %s: model_type %q in config.json; the gpt2 backend expects \"gpt2\"", dir, mt)
	}
	if c.NPositions == 0 {
		c.NPositions = c.NCtx
	}
	if c.NPositions == 0 {
		c.NPositions = 1024
	}
	if c.ScaleAttnWeights == nil {
		t := true
		c.ScaleAttnWeights = &t
	}
	if c.NEmbd <= 0 || c.NLayer <= 0 || c.NHead <= 0 || c.VocabSize <= 0 || c.NEmbd%c.NHead != 0 {
		return c, sdk.InvalidInputf("checkpoint %s: config.json has n_embd=%d n_layer=%d n_head=%d vocab_size=%d; expected positive sizes with n_embd divisible by n_head", dir, c.NEmbd, c.NLayer, c.NHead, c.VocabSize)
	}
	return c, nil
}

// FFN is the FFN's intermediate width (n_inner, default 4*n_embd).
func (c Config) FFN() int {
	if c.NInner != nil && *c.NInner > 0 {
		return *c.NInner
	}
	return 4 * c.NEmbd
}
