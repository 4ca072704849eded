package gpt2

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/sugarme/gotch/ts"

	"github.com/knctl/knctl/plugins/models/checkpoint"
	"github.com/knctl/knctl/plugins/models/tokenize"
	"github.com/knctl/knctl/plugins/models/torch"
	"github.com/knctl/knctl/sdk"
)

// Model is a loaded GPT-2 checkpoint. It is not safe for concurrent use;
// the sdk's plugin server serialises calls.
type Model struct {
	cfg   Config
	dir   string
	tok   *tokenize.BPE
	w     *torch.Weights
	act   torch.Activation
	info  sdk.ModelInfo
	cache *baseRun
}

var _ sdk.Model = (*Model)(nil)

// Load opens a GPT-2 checkpoint: a directory or a model id in the local
// HuggingFace cache. Options (see torch.ParseLoadOptions): "threads"
// (libtorch threads, default all CPUs), "init" ("checkpoint", or "random":
// the architecture of config.json with freshly drawn weights, no weights
// file needed) and "seed" (for init=random).
func Load(_ context.Context, req sdk.LoadRequest) (sdk.Model, error) {
	opts, err := torch.ParseLoadOptions(req.Options)
	if err != nil {
		return nil, err
	}
	torch.SetNumThreads(opts.Threads)
	if opts.Random {
		return OpenRandom(req.Checkpoint, opts.Seed)
	}
	return Open(req.Checkpoint)
}

// Open loads a checkpoint directory or cached model id.
func Open(spec string) (*Model, error) {
	return open(spec, false, 0)
}

// OpenRandom loads the configuration and tokenizer of a checkpoint
// directory and draws its weights at random (seeded): the
// "untrained model" control of interpretability studies, and benchmarks of
// any model size without its weights.
func OpenRandom(spec string, seed int64) (*Model, error) {
	return open(spec, true, seed)
}

func open(spec string, random bool, seed int64) (*Model, error) {
	dir, err := checkpoint.Resolve(spec)
	if err != nil {
		return nil, err
	}
	cfg, err := ReadConfig(dir)
	if err != nil {
		return nil, err
	}
	act, err := torch.ActivationByName(cfg.Activation)
	if err != nil {
		return nil, fmt.Errorf("checkpoint %s: %w", dir, err)
	}
	tok, err := tokenize.LoadGPT2(dir)
	if err != nil {
		return nil, sdk.InvalidInputf("checkpoint %s: tokenizer: %w", dir, err)
	}
	if tok.VocabSize() > cfg.VocabSize {
		return nil, sdk.InvalidInputf("checkpoint %s: tokenizer has %d tokens but config.json vocab_size is %d", dir, tok.VocabSize(), cfg.VocabSize)
	}
	var params map[string]*ts.Tensor
	if random {
		params, err = torch.RandomParams(paramSpecs(cfg), seed, 0.02)
	} else {
		params, err = loadParams(dir, cfg)
	}
	if err != nil {
		return nil, err
	}
	m := &Model{cfg: cfg, dir: dir, tok: tok, w: torch.NewWeights(params, cfg.NLayer), act: act}
	special := map[string]int{}
	if id, ok := tok.EOSID(); ok {
		special["eos"] = id
	}
	if id, ok := tok.BOSID(); ok {
		special["bos"] = id
	}
	m.info = sdk.ModelInfo{
		Architecture:  "gpt2",
		Backend:       "libtorch 1.13 (gotch v0.7.0)",
		Checkpoint:    dir,
		Layers:        cfg.NLayer,
		Hidden:        cfg.NEmbd,
		FFNWidth:      cfg.FFN(),
		VocabSize:     cfg.VocabSize,
		MaxPositions:  cfg.NPositions,
		Heads:         cfg.NHead,
		Activation:    cfg.Activation,
		Causal:        true,
		SpecialTokens: special,
		Parameters:    m.w.Count(),
	}
	return m, nil
}

func loadParams(dir string, cfg Config) (map[string]*ts.Tensor, error) {
	path, isST, err := checkpoint.WeightFile(dir)
	if err != nil {
		return nil, err
	}
	raw, err := torch.LoadTensors(path, isST)
	if err != nil {
		return nil, err
	}
	return torch.Take(raw, path, []string{"transformer."}, paramSpecs(cfg))
}

// paramSpecs lists the parameters (names without the "transformer." prefix)
// and shapes config.json implies. HuggingFace's Conv1D stores weights as
// [in, out].
func paramSpecs(c Config) []torch.Spec {
	e, f := int64(c.NEmbd), int64(c.FFN())
	specs := []torch.Spec{
		{Name: "wte.weight", Shape: []int64{int64(c.VocabSize), e}},
		{Name: "wpe.weight", Shape: []int64{int64(c.NPositions), e}},
		{Name: "ln_f.weight", Shape: []int64{e}},
		{Name: "ln_f.bias", Shape: []int64{e}},
	}
	for l := 0; l < c.NLayer; l++ {
		add := func(name string, shape ...int64) {
			specs = append(specs, torch.Spec{Name: fmt.Sprintf("h.%d.%s", l, name), Shape: shape})
		}
		add("ln_1.weight", e)
		add("ln_1.bias", e)
		add("attn.c_attn.weight", e, 3*e)
		add("attn.c_attn.bias", 3*e)
		add("attn.c_proj.weight", e, e)
		add("attn.c_proj.bias", e)
		add("ln_2.weight", e)
		add("ln_2.bias", e)
		add("mlp.c_fc.weight", e, f)
		add("mlp.c_fc.bias", f)
		add("mlp.c_proj.weight", f, e)
		add("mlp.c_proj.bias", e)
	}
	return specs
}

// Close frees the weights.
func (m *Model) Close() {
	m.cache.close()
	m.cache = nil
	m.w.Close()
}

// encoded is a query as token ids: the model reads ids (prompt +
// answer[:-1]); positions target.. predict the answer tokens.
type encoded struct {
	ids    []int64
	tokens []string
	target int
	answer []int64
	ansTok []string
}

func (m *Model) encode(q sdk.Query, needAnswer bool) (*encoded, error) {
	if strings.TrimSpace(q.Prompt) == "" {
		return nil, sdk.InvalidInputf("prompt %q: empty; expected text whose next token is the answer", q.Prompt)
	}
	p, err := m.tok.Encode(q.Prompt)
	if err != nil {
		return nil, sdk.InvalidInputf("tokenize prompt %q: %w", q.Prompt, err)
	}
	if len(p.IDs) == 0 {
		return nil, sdk.InvalidInputf("prompt %q: encodes to no tokens", q.Prompt)
	}
	enc := &encoded{target: len(p.IDs) - 1, tokens: p.Tokens}
	for _, id := range p.IDs {
		enc.ids = append(enc.ids, int64(id))
	}
	if q.Answer == "" {
		if needAnswer {
			return nil, sdk.InvalidInputf("answer: empty; expected the text the prompt should be completed with (e.g. \" Paris\")")
		}
	} else {
		a, err := m.tok.Encode(q.Answer)
		if err != nil {
			return nil, sdk.InvalidInputf("tokenize answer %q: %w", q.Answer, err)
		}
		if len(a.IDs) == 0 {
			return nil, sdk.InvalidInputf("answer %q: encodes to no tokens", q.Answer)
		}
		for i, id := range a.IDs {
			enc.answer = append(enc.answer, int64(id))
			enc.ansTok = append(enc.ansTok, a.Tokens[i])
			if i < len(a.IDs)-1 {
				enc.ids = append(enc.ids, int64(id))
				enc.tokens = append(enc.tokens, a.Tokens[i])
			}
		}
	}
	if len(enc.ids) > m.cfg.NPositions {
		return nil, sdk.InvalidInputf("prompt %q: %d tokens (with the answer's teacher-forced tokens); the model takes at most n_positions=%d", q.Prompt, len(enc.ids), m.cfg.NPositions)
	}
	return enc, nil
}

func (m *Model) checkLayer(l int) error { return m.w.CheckLayer(l) }

// Info implements sdk.Model.
func (m *Model) Info(context.Context) (sdk.ModelInfo, error) { return m.info, nil }

// Tokenize implements sdk.Model.
func (m *Model) Tokenize(_ context.Context, text string) (sdk.Encoding, error) {
	e, err := m.tok.Encode(text)
	if err != nil {
		return sdk.Encoding{}, sdk.InvalidInputf("tokenize %q: %w", text, err)
	}
	return sdk.Encoding{IDs: e.IDs, Tokens: e.Tokens}, nil
}

// Predict implements sdk.Model.
func (m *Model) Predict(ctx context.Context, req sdk.PredictRequest) (sdk.Prediction, error) {
	enc, err := m.encode(req.Query, false)
	if err != nil {
		return sdk.Prediction{}, err
	}
	if err := torch.CheckInterventions(req.Interventions, m.cfg.NLayer, m.cfg.FFN()); err != nil {
		return sdk.Prediction{}, err
	}
	if req.TopK < 0 {
		return sdk.Prediction{}, sdk.InvalidInputf("top-k %d: expected >= 0", req.TopK)
	}
	s := torch.NewScope()
	defer s.Close()
	byLayer := map[int][]sdk.Intervention{}
	for _, iv := range req.Interventions {
		if iv.Hook == "" {
			iv.Hook = sdk.HookPost
		}
		byLayer[iv.Layer] = append(byLayer[iv.Layer], iv)
	}
	t := enc.target
	h := m.embed(s, enc.ids, 0, 0)
	for l := 0; l < m.cfg.NLayer; l++ {
		var hook ffnHook
		if ivs := byLayer[l]; len(ivs) > 0 {
			hook = func(s *torch.Scope, pre *ts.Tensor) *ts.Tensor {
				return torch.InterventionHook(s, m.act, pre, []int{t}, ivs)
			}
		}
		h = m.block(s, l, h, nil, nil, 0, hook).out
	}
	rows := s.Narrow(h, 1, int64(t), int64(len(enc.ids)-t))
	_, logits := m.answerLogProb(s, rows, nil)
	probs := s.Float32s(s.Softmax(logits, -1))
	lg := s.Float32s(logits)
	if err := s.Err(); err != nil {
		return sdk.Prediction{}, fmt.Errorf("predict: %w", err)
	}
	return m.prediction(enc, probs, lg, req.TopK), nil
}

// prediction assembles Predict's answer from the softmax probabilities and
// logits [S,V] of the rows at the target positions.
func (m *Model) prediction(enc *encoded, probs, logits []float32, topK int) sdk.Prediction {
	e := &torch.Encoded{IDs: enc.ids, Tokens: enc.tokens, Targets: []int{enc.target}, Answer: enc.answer, AnsTok: enc.ansTok}
	return torch.Prediction(e, probs, logits, m.cfg.VocabSize, topK, func(id int) string { return m.tok.Decode([]int{id}) })
}

// Activations implements sdk.Model.
func (m *Model) Activations(ctx context.Context, req sdk.ActivationsRequest) (sdk.Activations, error) {
	enc, err := m.encode(req.Query, false)
	if err != nil {
		return sdk.Activations{}, err
	}
	hook, err := sdk.ParseHook(string(req.Hook))
	if err != nil {
		return sdk.Activations{}, err
	}
	layers := req.Layers
	if len(layers) == 0 {
		for l := 0; l < m.cfg.NLayer; l++ {
			layers = append(layers, l)
		}
	}
	for _, l := range layers {
		if err := m.checkLayer(l); err != nil {
			return sdk.Activations{}, err
		}
	}
	br, err := m.base(enc, nil)
	if err != nil {
		return sdk.Activations{}, err
	}
	s := torch.NewScope()
	defer s.Close()
	out := sdk.Activations{Hook: hook, Layers: layers, Positions: []int{enc.target}}
	for _, l := range layers {
		row := s.Narrow(br.pre[l], 1, int64(enc.target), 1)
		if hook == sdk.HookPost {
			row = m.act(s, row)
		}
		out.Values = append(out.Values, [][]float32{s.Float32s(row)})
	}
	if err := s.Err(); err != nil {
		return sdk.Activations{}, fmt.Errorf("activations: %w", err)
	}
	return out, nil
}

// Gradients implements sdk.Model.
func (m *Model) Gradients(ctx context.Context, req sdk.GradientsRequest) (sdk.Gradients, error) {
	return m.gradients(req, true)
}

func (m *Model) gradients(req sdk.GradientsRequest, fast bool) (sdk.Gradients, error) {
	start := time.Now()
	enc, err := m.encode(req.Query, true)
	if err != nil {
		return sdk.Gradients{}, err
	}
	f := m.cfg.FFN()
	hook, in, err := m.w.CheckGradients(req, 1, f)
	if err != nil {
		return sdk.Gradients{}, err
	}
	var noise *inputNoise
	if in != nil {
		noise = &inputNoise{sigma: in.Sigma, seed: in.Seed}
	}
	s := torch.NewScope()
	defer s.Close()
	probs, grads, w, err := m.scaledRun(s, enc, req.Layer, hook == sdk.HookPost, req.Alphas, req.Baseline, noise, fast)
	if err != nil {
		return sdk.Gradients{}, err
	}
	p, g, wv := s.Float32s(probs), s.Float32s(grads), s.Float32s(w)
	if err := s.Err(); err != nil {
		return sdk.Gradients{}, fmt.Errorf("gradients: %w", err)
	}
	return torch.PackGradients(p, g, wv, 1, f, start), nil
}

// Embeddings implements sdk.Model.
func (m *Model) Embeddings(_ context.Context, ids []int) ([][]float32, error) {
	return torch.Rows(m.w.Get("wte.weight"), ids, "token id")
}

func (m *Model) valueSlotName(layer int) string { return fmt.Sprintf("h.%d.mlp.c_proj.weight", layer) }

// ValueSlots implements sdk.Model: row i of the layer's mlp.c_proj weight.
func (m *Model) ValueSlots(_ context.Context, layer int, neurons []int) ([][]float32, error) {
	if err := m.checkLayer(layer); err != nil {
		return nil, err
	}
	return torch.Rows(m.w.Get(m.valueSlotName(layer)), neurons, "neuron")
}

// SetValueSlots implements sdk.Model.
func (m *Model) SetValueSlots(_ context.Context, layer int, neurons []int, values [][]float32) (sdk.EditID, error) {
	if err := m.checkLayer(layer); err != nil {
		return 0, err
	}
	name := m.valueSlotName(layer)
	t, err := torch.WithRows(m.w.Get(name), neurons, values, "neuron")
	if err != nil {
		return 0, err
	}
	return m.w.ReplaceSlots(name, t)
}

// UndoEdit implements sdk.Model.
func (m *Model) UndoEdit(_ context.Context, id sdk.EditID) error { return m.w.UndoEdit(id) }

// isFFN selects the FFN linear layers for noise of scope ffn.
func isFFN(name string) bool {
	return strings.Contains(name, ".mlp.c_fc.") || strings.Contains(name, ".mlp.c_proj.")
}

// ApplyNoise implements sdk.Model.
func (m *Model) ApplyNoise(_ context.Context, spec sdk.NoiseSpec) error {
	return m.w.Noise(spec, isFFN)
}

// RemoveNoise implements sdk.Model.
func (m *Model) RemoveNoise(context.Context) error {
	m.w.Denoise()
	return nil
}

// Save implements sdk.Model: config, weights (without the tied lm_head, as
// transformers writes safetensors) and tokenizer files.
func (m *Model) Save(_ context.Context, dir string) error {
	names := m.w.Names()
	hf := make(map[string]string, len(names))
	for _, n := range names {
		hf[n] = "transformer." + n
	}
	return torch.SaveCheckpoint(dir, m.dir, m.w.Store, hf, []string{
		"config.json", "generation_config.json", "vocab.json", "merges.txt", "tokenizer.json",
		"tokenizer_config.json", "special_tokens_map.json", "added_tokens.json",
	})
}
