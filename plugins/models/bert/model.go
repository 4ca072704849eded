package bert

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

// Model is a loaded BERT masked-LM checkpoint. It is not safe for
// concurrent use; the sdk's plugin server serialises calls.
type Model struct {
	cfg   Config
	dir   string
	tok   *tokenize.WordPiece
	w     *torch.Weights
	act   torch.Activation
	info  sdk.ModelInfo
	cache *baseRun
	// specials are the ids of the tokenizer's special tokens, which an
	// answer may not contain.
	specials map[int]string
}

var _ sdk.Model = (*Model)(nil)

// Load opens a BERT checkpoint: a directory or a model id in the local
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
// directory and draws its weights at random (seeded, normal with
// config.json's initializer_range as BertPreTrainedModel initialises
// them): the "untrained model" control of interpretability studies, and
// benchmarks of any model size without its weights.
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
	act, err := torch.ActivationByName(cfg.HiddenAct)
	if err != nil {
		return nil, fmt.Errorf("checkpoint %s: hidden_act: %w", dir, err)
	}
	if cfg.HiddenAct == "gelu" {
		// torch.nn.functional.gelu itself, as transformers calls it: one op
		// and one backward node instead of the composed formula's five.
		act = torch.GeluFused
	}
	tok, err := tokenize.LoadBERT(dir)
	if err != nil {
		return nil, sdk.InvalidInputf("checkpoint %s: tokenizer: %w", dir, err)
	}
	if tok.VocabSize() > cfg.VocabSize {
		return nil, sdk.InvalidInputf("checkpoint %s: tokenizer has %d tokens but config.json vocab_size is %d", dir, tok.VocabSize(), cfg.VocabSize)
	}
	special := map[string]int{}
	specials := map[int]string{}
	for _, st := range []struct {
		name string
		id   int
	}{{"cls", tok.CLSID()}, {"sep", tok.SEPID()}, {"mask", tok.MaskID()}, {"unk", tok.UNKID()}, {"pad", tok.PadID()}} {
		if st.id < 0 {
			if st.name == "pad" {
				continue // only needed for batches of different lengths, which the backend never pads
			}
			return nil, sdk.InvalidInputf("checkpoint %s: the tokenizer has no %s token; the bert backend needs [CLS], [SEP], [MASK] and [UNK]", dir, st.name)
		}
		special[st.name] = st.id
		tokStr, _ := tok.IDToToken(st.id)
		specials[st.id] = tokStr
	}
	var params map[string]*ts.Tensor
	if random {
		params, err = torch.RandomParams(paramSpecs(cfg), seed, cfg.InitializerRange)
	} else {
		params, err = loadParams(dir, cfg)
	}
	if err != nil {
		return nil, err
	}
	m := &Model{cfg: cfg, dir: dir, tok: tok, w: torch.NewWeights(params, cfg.NumHiddenLayers), act: act, specials: specials}
	m.info = sdk.ModelInfo{
		Architecture:  "bert",
		Backend:       "libtorch 1.13 (gotch v0.7.0)",
		Checkpoint:    dir,
		Layers:        cfg.NumHiddenLayers,
		Hidden:        cfg.HiddenSize,
		FFNWidth:      cfg.IntermediateSize,
		VocabSize:     cfg.VocabSize,
		MaxPositions:  cfg.MaxPositionEmbeddings,
		Heads:         cfg.NumAttentionHeads,
		Activation:    cfg.HiddenAct,
		Causal:        false,
		MaskToken:     tok.MaskToken(),
		SpecialTokens: special,
		Parameters:    m.w.Count(),
	}
	return m, nil
}

// Parameter names of the masked-LM head, which transformers keeps outside
// the "bert." prefix.
const (
	headBias        = "cls.predictions.bias"
	headDecoderW    = "cls.predictions.decoder.weight"
	headDecoderBias = "cls.predictions.decoder.bias"
	wordEmbeddings  = "embeddings.word_embeddings.weight"
)

func loadParams(dir string, cfg Config) (map[string]*ts.Tensor, error) {
	path, isST, err := checkpoint.WeightFile(dir)
	if err != nil {
		return nil, err
	}
	raw, err := torch.LoadTensors(path, isST)
	if err != nil {
		return nil, err
	}
	fixLegacyNames(raw)
	hasHead := false
	for name := range raw {
		if strings.HasPrefix(name, "cls.predictions.") {
			hasHead = true
			break
		}
	}
	if !hasHead {
		torch.DropAll(raw)
		return nil, sdk.InvalidInputf("checkpoint %s: %s has no masked-LM head (cls.predictions.*); the bert backend needs a BertForMaskedLM or BertForPreTraining checkpoint (such as bert-base-cased), not a bare BertModel or a fine-tuned classifier", dir, path)
	}
	// cls.predictions.bias and the decoder's bias are one tied parameter;
	// some writers keep only the latter.
	if _, ok := raw[headBias]; !ok {
		if b, ok := raw[headDecoderBias]; ok {
			raw[headBias] = b
			delete(raw, headDecoderBias)
		}
	}
	return torch.Take(raw, path, []string{"bert."}, paramSpecs(cfg))
}

// fixLegacyNames renames the LayerNorm "gamma"/"beta" parameters of
// checkpoints converted from the original TensorFlow BERT (such as the hub's
// bert-base-uncased pytorch_model.bin) to "weight"/"bias", as transformers
// does when it loads them.
func fixLegacyNames(raw map[string]*ts.Tensor) {
	for name, t := range raw {
		var fixed string
		switch {
		case strings.HasSuffix(name, ".gamma"):
			fixed = strings.TrimSuffix(name, "gamma") + "weight"
		case strings.HasSuffix(name, ".beta"):
			fixed = strings.TrimSuffix(name, "beta") + "bias"
		default:
			continue
		}
		if _, clash := raw[fixed]; clash {
			continue
		}
		raw[fixed] = t
		delete(raw, name)
	}
}

// paramSpecs lists the parameters (names without the "bert." prefix; the
// head's names as they are) and the shapes config.json implies.
// torch.nn.Linear stores weights as [out, in].
func paramSpecs(c Config) []torch.Spec {
	h, f, v := int64(c.HiddenSize), int64(c.IntermediateSize), int64(c.VocabSize)
	specs := []torch.Spec{
		{Name: wordEmbeddings, Shape: []int64{v, h}},
		{Name: "embeddings.position_embeddings.weight", Shape: []int64{int64(c.MaxPositionEmbeddings), h}},
		{Name: "embeddings.token_type_embeddings.weight", Shape: []int64{int64(c.TypeVocabSize), h}},
		{Name: "embeddings.LayerNorm.weight", Shape: []int64{h}},
		{Name: "embeddings.LayerNorm.bias", Shape: []int64{h}},
		{Name: "cls.predictions.transform.dense.weight", Shape: []int64{h, h}},
		{Name: "cls.predictions.transform.dense.bias", Shape: []int64{h}},
		{Name: "cls.predictions.transform.LayerNorm.weight", Shape: []int64{h}},
		{Name: "cls.predictions.transform.LayerNorm.bias", Shape: []int64{h}},
		{Name: headBias, Shape: []int64{v}},
	}
	if !c.tied() {
		specs = append(specs, torch.Spec{Name: headDecoderW, Shape: []int64{v, h}})
	}
	for l := 0; l < c.NumHiddenLayers; l++ {
		add := func(name string, shape ...int64) {
			specs = append(specs, torch.Spec{Name: layerParam(l, name), Shape: shape})
		}
		for _, p := range []string{"attention.self.query", "attention.self.key", "attention.self.value", "attention.output.dense"} {
			add(p+".weight", h, h)
			add(p+".bias", h)
		}
		add("attention.output.LayerNorm.weight", h)
		add("attention.output.LayerNorm.bias", h)
		add("intermediate.dense.weight", f, h)
		add("intermediate.dense.bias", f)
		add("output.dense.weight", h, f)
		add("output.dense.bias", h)
		add("output.LayerNorm.weight", h)
		add("output.LayerNorm.bias", h)
	}
	return specs
}

func layerParam(l int, name string) string { return fmt.Sprintf("encoder.layer.%d.%s", l, name) }

// Close frees the weights.
func (m *Model) Close() {
	m.cache.close()
	m.cache = nil
	m.w.Close()
}

// encoded is a query as the model reads it: [CLS] prompt [SEP] with the
// mask slot widened to one [MASK] per answer piece (one without an
// answer); targets are those masks' positions.
type encoded struct {
	ids     []int64
	tokens  []string
	targets []int // consecutive
	answer  []int64
	ansTok  []string
}

// first is the first target position, where Predict's top-k is taken.
func (e *encoded) first() int { return e.targets[0] }

func (m *Model) encode(q sdk.Query, needAnswer bool) (*encoded, error) {
	maskTok, maskID := m.tok.MaskToken(), m.tok.MaskID()
	example := fmt.Sprintf("e.g. \"The capital of France is %s.\"", maskTok)
	if strings.TrimSpace(q.Prompt) == "" {
		return nil, sdk.InvalidInputf("prompt %q: empty; expected text with one %s where the answer goes (%s)", q.Prompt, maskTok, example)
	}
	p, err := m.tok.Encode(q.Prompt)
	if err != nil {
		return nil, sdk.InvalidInputf("tokenize prompt %q: %w", q.Prompt, err)
	}
	slot, slots := -1, 0
	for i, id := range p.IDs {
		if id == maskID {
			slot = i
			slots++
		}
	}
	if slots != 1 {
		return nil, sdk.InvalidInputf("prompt %q: has %d %s tokens; expected exactly one mask slot %s where the answer goes (%s; an answer of several word pieces fills it with as many masks)", q.Prompt, slots, maskTok, maskTok, example)
	}
	enc := &encoded{}
	k := 1
	if q.Answer == "" {
		if needAnswer {
			return nil, sdk.InvalidInputf("answer: empty; expected the text that fills the %s slot (e.g. \"paris\")", maskTok)
		}
	} else {
		a, err := m.tok.EncodePlain(q.Answer)
		if err != nil {
			return nil, sdk.InvalidInputf("tokenize answer %q: %w", q.Answer, err)
		}
		if len(a.IDs) == 0 {
			return nil, sdk.InvalidInputf("answer %q: encodes to no word pieces; expected text the vocabulary can spell", q.Answer)
		}
		for i, id := range a.IDs {
			if id == m.tok.UNKID() {
				return nil, sdk.InvalidInputf("answer %q: the vocabulary cannot express it (word piece %d of %d is %s); expected an answer made of the checkpoint's word pieces", q.Answer, i+1, len(a.IDs), a.Tokens[i])
			}
			if tok, special := m.specials[id]; special {
				return nil, sdk.InvalidInputf("answer %q: contains the special token %s; expected plain text", q.Answer, tok)
			}
			enc.answer = append(enc.answer, int64(id))
			enc.ansTok = append(enc.ansTok, a.Tokens[i])
		}
		k = len(a.IDs)
	}
	for i, id := range p.IDs {
		if i != slot {
			enc.ids = append(enc.ids, int64(id))
			enc.tokens = append(enc.tokens, p.Tokens[i])
			continue
		}
		for j := 0; j < k; j++ {
			enc.targets = append(enc.targets, len(enc.ids))
			enc.ids = append(enc.ids, int64(maskID))
			enc.tokens = append(enc.tokens, p.Tokens[i])
		}
	}
	if len(enc.ids) > m.cfg.MaxPositionEmbeddings {
		return nil, sdk.InvalidInputf("prompt %q: %d tokens with [CLS], [SEP] and %d %s for the answer's word pieces; the model takes at most max_position_embeddings=%d", q.Prompt, len(enc.ids), k, maskTok, m.cfg.MaxPositionEmbeddings)
	}
	return enc, nil
}

func (m *Model) checkLayer(l int) error { return m.w.CheckLayer(l) }

// Info implements sdk.Model.
func (m *Model) Info(context.Context) (sdk.ModelInfo, error) { return m.info, nil }

// Tokenize implements sdk.Model: the word pieces of text without [CLS] and
// [SEP].
func (m *Model) Tokenize(_ context.Context, text string) (sdk.Encoding, error) {
	e, err := m.tok.EncodePlain(text)
	if err != nil {
		return sdk.Encoding{}, sdk.InvalidInputf("tokenize %q: %w", text, err)
	}
	return sdk.Encoding{IDs: e.IDs, Tokens: e.Tokens}, nil
}

// Predict implements sdk.Model.
func (m *Model) Predict(_ context.Context, req sdk.PredictRequest) (sdk.Prediction, error) {
	enc, err := m.encode(req.Query, false)
	if err != nil {
		return sdk.Prediction{}, err
	}
	if err := torch.CheckInterventions(req.Interventions, m.cfg.NumHiddenLayers, m.cfg.IntermediateSize); err != nil {
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
	h := m.embed(s, enc.ids, nil)
	for l := 0; l < m.cfg.NumHiddenLayers; l++ {
		var hook ffnHook
		if ivs := byLayer[l]; len(ivs) > 0 {
			hook = func(s *torch.Scope, pre *ts.Tensor) *ts.Tensor {
				return torch.InterventionHook(s, m.act, pre, enc.targets, ivs)
			}
		}
		h = m.layer(s, l, h, span{}, hook, nil).out
	}
	logits := m.logits(s, s.Narrow(h, 1, int64(enc.first()), int64(len(enc.targets))))
	probs := s.Float32s(s.Softmax(logits, -1))
	lg := s.Float32s(logits)
	if err := s.Err(); err != nil {
		return sdk.Prediction{}, fmt.Errorf("predict: %w", err)
	}
	return m.prediction(enc, probs, lg, req.TopK), nil
}

// prediction assembles Predict's answer from the softmax probabilities and
// logits [k,V] at the target positions. Top tokens are decoded as
// BertTokenizer.decode([id]) does (a continuation keeps its "##"); ids
// beyond the tokenizer's vocabulary decode to "".
func (m *Model) prediction(enc *encoded, probs, logits []float32, topK int) sdk.Prediction {
	e := &torch.Encoded{IDs: enc.ids, Tokens: enc.tokens, Targets: enc.targets, Answer: enc.answer, AnsTok: enc.ansTok}
	return torch.Prediction(e, probs, logits, m.cfg.VocabSize, topK, func(id int) string { return m.tok.Decode([]int{id}) })
}

// Activations implements sdk.Model: one row per target position.
func (m *Model) Activations(_ context.Context, req sdk.ActivationsRequest) (sdk.Activations, error) {
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
		for l := 0; l < m.cfg.NumHiddenLayers; l++ {
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
	f := m.cfg.IntermediateSize
	out := sdk.Activations{Hook: hook, Layers: layers, Positions: enc.targets}
	for _, l := range layers {
		rows := s.Narrow(br.pre[l], 1, int64(enc.first()), int64(len(enc.targets)))
		if hook == sdk.HookPost {
			rows = m.act(s, rows)
		}
		flat := s.Float32s(rows)
		if flat == nil {
			break
		}
		perPos := make([][]float32, len(enc.targets))
		for j := range perPos {
			perPos[j] = flat[j*f : (j+1)*f : (j+1)*f]
		}
		out.Values = append(out.Values, perPos)
	}
	if err := s.Err(); err != nil {
		return sdk.Activations{}, fmt.Errorf("activations: %w", err)
	}
	return out, nil
}

// Gradients implements sdk.Model.
func (m *Model) Gradients(_ context.Context, req sdk.GradientsRequest) (sdk.Gradients, error) {
	return m.gradients(req, true)
}

// gradients is Gradients by the cached path (fast) or by recomputing every
// layer for the whole batch (the reference the fast path is tested
// against).
func (m *Model) gradients(req sdk.GradientsRequest, fast bool) (sdk.Gradients, error) {
	start := time.Now()
	enc, err := m.encode(req.Query, true)
	if err != nil {
		return sdk.Gradients{}, err
	}
	f, k := m.cfg.IntermediateSize, len(enc.targets)
	hook, in, err := m.w.CheckGradients(req, k, f)
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
	return torch.PackGradients(p, g, wv, k, f, start), nil
}

// Embeddings implements sdk.Model: rows of the word-embedding matrix.
func (m *Model) Embeddings(_ context.Context, ids []int) ([][]float32, error) {
	return torch.Rows(m.w.Get(wordEmbeddings), ids, "token id")
}

func valueSlotName(layer int) string { return layerParam(layer, "output.dense.weight") }

// ValueSlots implements sdk.Model: column i of the layer's
// output.dense.weight ([hidden, intermediate]).
func (m *Model) ValueSlots(_ context.Context, layer int, neurons []int) ([][]float32, error) {
	if err := m.checkLayer(layer); err != nil {
		return nil, err
	}
	return torch.Columns(m.w.Get(valueSlotName(layer)), neurons, "neuron")
}

// SetValueSlots implements sdk.Model.
func (m *Model) SetValueSlots(_ context.Context, layer int, neurons []int, values [][]float32) (sdk.EditID, error) {
	if err := m.checkLayer(layer); err != nil {
		return 0, err
	}
	name := valueSlotName(layer)
	t, err := torch.WithColumns(m.w.Get(name), neurons, values, "neuron")
	if err != nil {
		return 0, err
	}
	return m.w.ReplaceSlots(name, t)
}

// UndoEdit implements sdk.Model.
func (m *Model) UndoEdit(_ context.Context, id sdk.EditID) error { return m.w.UndoEdit(id) }

// isFFN selects the FFN linear layers of every encoder layer
// (intermediate.dense and output.dense, not attention.output.dense) for
// noise of scope ffn.
func isFFN(name string) bool {
	return strings.HasPrefix(name, "encoder.layer.") &&
		(strings.Contains(name, ".intermediate.dense.") ||
			(strings.Contains(name, ".output.dense.") && !strings.Contains(name, ".attention.")))
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

// Save implements sdk.Model: config, weights under transformers' names
// (without the tied decoder weight and bias, as transformers writes
// safetensors) and tokenizer files.
func (m *Model) Save(_ context.Context, dir string) error {
	names := m.w.Names()
	hf := make(map[string]string, len(names))
	for _, n := range names {
		if strings.HasPrefix(n, "cls.") {
			hf[n] = n
		} else {
			hf[n] = "bert." + n
		}
	}
	return torch.SaveCheckpoint(dir, m.dir, m.w.Store, hf, []string{
		"config.json", "generation_config.json", "vocab.txt", "tokenizer.json",
		"tokenizer_config.json", "special_tokens_map.json", "added_tokens.json",
	})
}
