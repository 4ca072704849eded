// Package sdktest provides a small pure-Go model with exact, analytic
// gradients. It lets attributors, the pipeline and the conformance kit be
// tested without libtorch, against numbers known in closed form.
package sdktest

import (
	"context"
	"encoding/json"
	"fmt"
	"hash/fnv"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/knctl/knctl/sdk"
)

// Toy is a model whose FFN layers all read one input embedding:
//
//	e      = sum of the prompt's token embeddings             (vocab dims)
//	pre_l  = W_l e + c_l,  post_l = tanh(pre_l)               (width dims)
//	logits = bias + sum_l U_l post_l                          (vocab dims)
//
// so that scaling one layer's activation changes the logits through U_l
// alone and dP/dx has a closed form. Tokens are lower-cased words; a word's
// id is a hash modulo the vocabulary size. The answer's probability is the
// product of its words' probabilities under the same distribution. Column i
// of U_l is neuron (l, i)'s value slot, so Hidden equals the vocabulary
// size.
type Toy struct {
	L, F, V int
	E       [][]float64   // V x V token embeddings
	W       [][][]float64 // L x F x V
	C       [][]float64   // L x F
	U       [][][]float64 // L x V x F
	Bias    []float64     // V

	pristine *Toy
	edits    map[sdk.EditID]toyEdit
	nextEdit sdk.EditID
	// Hook, when set, runs at the start of every call; the fault-injecting
	// test plugin uses it.
	Hook func(method string, q sdk.Query)
}

type toyEdit struct {
	layer   int
	neurons []int
	prev    [][]float64
}

var _ sdk.Model = (*Toy)(nil)

// NewToy returns a toy model with weights drawn from seed.
func NewToy(layers, width, vocab int, seed uint64) *Toy {
	r := rand.New(rand.NewPCG(seed, 0x6b6e63746c))
	m := &Toy{L: layers, F: width, V: vocab, edits: map[sdk.EditID]toyEdit{}, nextEdit: 1}
	m.E = matrix(r, vocab, vocab, 1)
	m.Bias = make([]float64, vocab)
	for i := range m.Bias {
		m.Bias[i] = 0.1 * r.NormFloat64()
	}
	for l := 0; l < layers; l++ {
		m.W = append(m.W, matrix(r, width, vocab, 1/math.Sqrt(float64(vocab))))
		c := make([]float64, width)
		for i := range c {
			c[i] = 0.3 * r.NormFloat64()
		}
		m.C = append(m.C, c)
		m.U = append(m.U, matrix(r, vocab, width, 2/math.Sqrt(float64(width))))
	}
	return m
}

func matrix(r *rand.Rand, rows, cols int, scale float64) [][]float64 {
	out := make([][]float64, rows)
	for i := range out {
		out[i] = make([]float64, cols)
		for j := range out[i] {
			out[i][j] = scale * r.NormFloat64()
		}
	}
	return out
}

// TokenID is the id of a word.
func (m *Toy) TokenID(word string) int {
	h := fnv.New32a()
	h.Write([]byte(strings.ToLower(word)))
	return int(h.Sum32() % uint32(m.V))
}

func (m *Toy) words(text string) []string { return strings.Fields(strings.ToLower(text)) }

func (m *Toy) encode(q sdk.Query, needAnswer bool) (prompt, answer []int, err error) {
	pw := m.words(q.Prompt)
	if len(pw) == 0 {
		return nil, nil, sdk.InvalidInputf("prompt %q: empty; expected words", q.Prompt)
	}
	for _, w := range pw {
		prompt = append(prompt, m.TokenID(w))
	}
	for _, w := range m.words(q.Answer) {
		answer = append(answer, m.TokenID(w))
	}
	if needAnswer && len(answer) == 0 {
		return nil, nil, sdk.InvalidInputf("answer %q: empty; expected at least one word", q.Answer)
	}
	return prompt, answer, nil
}

// forward returns pre and post activations per layer, with Gaussian noise
// on the input embedding when noise is set.
func (m *Toy) forward(prompt []int, noise ...*sdk.InputNoise) (pre, post [][]float64) {
	e := make([]float64, m.V)
	for _, id := range prompt {
		for j := range e {
			e[j] += m.E[id][j]
		}
	}
	if len(noise) > 0 && noise[0] != nil && noise[0].Sigma > 0 {
		r := rand.New(rand.NewPCG(uint64(noise[0].Seed), 0x696e707574))
		for j := range e {
			e[j] += noise[0].Sigma * r.NormFloat64()
		}
	}
	for l := 0; l < m.L; l++ {
		p := make([]float64, m.F)
		q := make([]float64, m.F)
		for i := range p {
			s := m.C[l][i]
			for j, x := range e {
				s += m.W[l][i][j] * x
			}
			p[i] = s
			q[i] = math.Tanh(s)
		}
		pre = append(pre, p)
		post = append(post, q)
	}
	return pre, post
}

func (m *Toy) softmax(post [][]float64) (probs, logits []float64) {
	logits = append([]float64(nil), m.Bias...)
	for l := range post {
		for v := 0; v < m.V; v++ {
			for i, a := range post[l] {
				logits[v] += m.U[l][v][i] * a
			}
		}
	}
	mx := math.Inf(-1)
	for _, z := range logits {
		mx = math.Max(mx, z)
	}
	var sum float64
	probs = make([]float64, m.V)
	for v, z := range logits {
		probs[v] = math.Exp(z - mx)
		sum += probs[v]
	}
	for v := range probs {
		probs[v] /= sum
	}
	return probs, logits
}

func (m *Toy) checkLayer(l int) error {
	if l < 0 || l >= m.L {
		return sdk.InvalidInputf("layer %d: out of range; the model has layers 0..%d", l, m.L-1)
	}
	return nil
}

func (m *Toy) hook(method string, q sdk.Query) {
	if m.Hook != nil {
		m.Hook(method, q)
	}
}

// Info implements sdk.Model.
func (m *Toy) Info(context.Context) (sdk.ModelInfo, error) {
	return sdk.ModelInfo{
		Architecture: "toy", Backend: "pure Go", Layers: m.L, Hidden: m.V, FFNWidth: m.F,
		VocabSize: m.V, MaxPositions: 1 << 20, Heads: 1, Activation: "tanh", Causal: true,
		SpecialTokens: map[string]int{}, Parameters: int64(m.V*m.V + m.V + m.L*(2*m.F*m.V+m.F)),
	}, nil
}

// Tokenize implements sdk.Model.
func (m *Toy) Tokenize(_ context.Context, text string) (sdk.Encoding, error) {
	var enc sdk.Encoding
	for _, w := range m.words(text) {
		enc.IDs = append(enc.IDs, m.TokenID(w))
		enc.Tokens = append(enc.Tokens, w)
	}
	return enc, nil
}

// Predict implements sdk.Model.
func (m *Toy) Predict(_ context.Context, req sdk.PredictRequest) (sdk.Prediction, error) {
	m.hook("Predict", req.Query)
	prompt, answer, err := m.encode(req.Query, false)
	if err != nil {
		return sdk.Prediction{}, err
	}
	pre, post := m.forward(prompt)
	for _, iv := range req.Interventions {
		if err := m.checkLayer(iv.Layer); err != nil {
			return sdk.Prediction{}, err
		}
		if iv.Neuron < 0 || iv.Neuron >= m.F {
			return sdk.Prediction{}, sdk.InvalidInputf("neuron %d: out of range 0..%d", iv.Neuron, m.F-1)
		}
		a := post[iv.Layer]
		if iv.Hook == sdk.HookPre {
			a = pre[iv.Layer]
		}
		if iv.Op == sdk.OpSet {
			a[iv.Neuron] = float64(iv.Value)
		} else {
			a[iv.Neuron] *= float64(iv.Value)
		}
		if iv.Hook == sdk.HookPre {
			post[iv.Layer][iv.Neuron] = math.Tanh(pre[iv.Layer][iv.Neuron])
		}
	}
	probs, logits := m.softmax(post)
	p := sdk.Prediction{TargetPositions: []int{len(prompt) - 1}, AnswerProb: 1}
	for _, id := range prompt {
		p.InputIDs = append(p.InputIDs, id)
	}
	p.Tokens = m.words(req.Query.Prompt)
	for k, id := range answer {
		p.AnswerIDs = append(p.AnswerIDs, id)
		p.AnswerTokens = append(p.AnswerTokens, m.words(req.Query.Answer)[k])
		p.AnswerTokenProb = append(p.AnswerTokenProb, probs[id])
		p.AnswerProb *= probs[id]
	}
	if len(answer) == 0 {
		p.AnswerProb = 0
	} else {
		for _, z := range logits {
			if z > logits[answer[0]] {
				p.AnswerRank++
			}
		}
	}
	idx := make([]int, m.V)
	for i := range idx {
		idx[i] = i
	}
	sort.SliceStable(idx, func(a, b int) bool { return logits[idx[a]] > logits[idx[b]] })
	k := min(req.TopK, m.V)
	for _, i := range idx[:k] {
		p.Top = append(p.Top, sdk.TokenProb{ID: i, Token: fmt.Sprintf("#%d", i), Prob: probs[i], Logit: logits[i]})
	}
	return p, nil
}

// Activations implements sdk.Model.
func (m *Toy) Activations(_ context.Context, req sdk.ActivationsRequest) (sdk.Activations, error) {
	m.hook("Activations", req.Query)
	prompt, _, err := m.encode(req.Query, false)
	if err != nil {
		return sdk.Activations{}, err
	}
	hook, err := sdk.ParseHook(string(req.Hook))
	if err != nil {
		return sdk.Activations{}, err
	}
	layers := req.Layers
	if len(layers) == 0 {
		for l := 0; l < m.L; l++ {
			layers = append(layers, l)
		}
	}
	pre, post := m.forward(prompt)
	out := sdk.Activations{Hook: hook, Layers: layers, Positions: []int{len(prompt) - 1}}
	for _, l := range layers {
		if err := m.checkLayer(l); err != nil {
			return sdk.Activations{}, err
		}
		src := post[l]
		if hook == sdk.HookPre {
			src = pre[l]
		}
		out.Values = append(out.Values, [][]float32{toF32(src)})
	}
	return out, nil
}

// Gradients implements sdk.Model in closed form.
func (m *Toy) Gradients(_ context.Context, req sdk.GradientsRequest) (sdk.Gradients, error) {
	m.hook("Gradients", req.Query)
	prompt, answer, err := m.encode(req.Query, true)
	if err != nil {
		return sdk.Gradients{}, err
	}
	hook, err := sdk.ParseHook(string(req.Hook))
	if err != nil {
		return sdk.Gradients{}, err
	}
	if err := m.checkLayer(req.Layer); err != nil {
		return sdk.Gradients{}, err
	}
	if len(req.Alphas) == 0 {
		return sdk.Gradients{}, sdk.InvalidInputf("alphas: empty; expected at least one")
	}
	if req.Baseline != nil && len(req.Baseline) != m.F {
		return sdk.Gradients{}, sdk.InvalidInputf("baseline: %d values; expected %d", len(req.Baseline), m.F)
	}
	pre, post := m.forward(prompt, req.InputNoise)
	l := req.Layer
	w := post[l]
	if hook == sdk.HookPre {
		w = pre[l]
	}
	out := sdk.Gradients{Positions: 1, Width: m.F, Activation: toF32(w)}
	for _, alpha := range req.Alphas {
		x := make([]float64, m.F)
		for i := range x {
			var b float64
			if req.Baseline != nil {
				b = float64(req.Baseline[i])
			}
			x[i] = b + float64(alpha)*(w[i]-b)
		}
		acts := append([][]float64(nil), post...)
		a := x
		if hook == sdk.HookPre {
			a = make([]float64, m.F)
			for i := range a {
				a[i] = math.Tanh(x[i])
			}
		}
		acts[l] = a
		probs, _ := m.softmax(acts)
		P := 1.0
		for _, id := range answer {
			P *= probs[id]
		}
		// d log p_a / d a_i = U[a,i] - sum_v p_v U[v,i]; P is a product,
		// so dP/da = P * sum over answer tokens.
		g := make([]float64, m.F)
		for i := 0; i < m.F; i++ {
			var mean float64
			for v := 0; v < m.V; v++ {
				mean += probs[v] * m.U[l][v][i]
			}
			for _, id := range answer {
				g[i] += m.U[l][id][i] - mean
			}
			g[i] *= P
			if hook == sdk.HookPre {
				g[i] *= 1 - a[i]*a[i]
			}
		}
		out.Grads = append(out.Grads, toF32(g))
		out.Probs = append(out.Probs, P)
	}
	return out, nil
}

// Embeddings implements sdk.Model.
func (m *Toy) Embeddings(_ context.Context, ids []int) ([][]float32, error) {
	var out [][]float32
	for _, id := range ids {
		if id < 0 || id >= m.V {
			return nil, sdk.InvalidInputf("token id %d: out of range 0..%d", id, m.V-1)
		}
		out = append(out, toF32(m.E[id]))
	}
	return out, nil
}

// ValueSlots implements sdk.Model: column i of U_l.
func (m *Toy) ValueSlots(_ context.Context, layer int, neurons []int) ([][]float32, error) {
	if err := m.checkLayer(layer); err != nil {
		return nil, err
	}
	var out [][]float32
	for _, n := range neurons {
		if n < 0 || n >= m.F {
			return nil, sdk.InvalidInputf("neuron %d: out of range 0..%d", n, m.F-1)
		}
		col := make([]float32, m.V)
		for v := range col {
			col[v] = float32(m.U[layer][v][n])
		}
		out = append(out, col)
	}
	return out, nil
}

// SetValueSlots implements sdk.Model.
func (m *Toy) SetValueSlots(ctx context.Context, layer int, neurons []int, values [][]float32) (sdk.EditID, error) {
	if m.pristine != nil {
		return 0, sdk.InvalidInputf("weight edit while noise is applied: remove the noise first")
	}
	if len(values) != len(neurons) {
		return 0, sdk.InvalidInputf("value slots: %d vectors for %d neurons", len(values), len(neurons))
	}
	prev, err := m.ValueSlots(ctx, layer, neurons)
	if err != nil {
		return 0, err
	}
	e := toyEdit{layer: layer, neurons: append([]int(nil), neurons...)}
	for k, n := range neurons {
		if len(values[k]) != m.V {
			return 0, sdk.InvalidInputf("value slot %d: %d values; expected %d", n, len(values[k]), m.V)
		}
		col := make([]float64, m.V)
		for v := range col {
			col[v] = m.U[layer][v][n]
		}
		e.prev = append(e.prev, col)
	}
	_ = prev
	for k, n := range neurons {
		for v := 0; v < m.V; v++ {
			m.U[layer][v][n] = float64(values[k][v])
		}
	}
	id := m.nextEdit
	m.nextEdit++
	m.edits[id] = e
	return id, nil
}

// UndoEdit implements sdk.Model.
func (m *Toy) UndoEdit(_ context.Context, id sdk.EditID) error {
	e, ok := m.edits[id]
	if !ok {
		return sdk.InvalidInputf("undo edit %d: no such edit", id)
	}
	for k, n := range e.neurons {
		for v := 0; v < m.V; v++ {
			m.U[e.layer][v][n] = e.prev[k][v]
		}
	}
	delete(m.edits, id)
	return nil
}

// ApplyNoise implements sdk.Model.
func (m *Toy) ApplyNoise(ctx context.Context, spec sdk.NoiseSpec) error {
	if spec.Sigma < 0 {
		return sdk.InvalidInputf("noise sigma %g: expected >= 0", spec.Sigma)
	}
	if err := m.RemoveNoise(ctx); err != nil {
		return err
	}
	m.pristine = m.clone()
	r := rand.New(rand.NewPCG(uint64(spec.Seed), 0x6e6f697365))
	perturb := func(x *float64) {
		e := spec.Sigma * r.NormFloat64()
		if spec.Mode == sdk.NoiseAdditive {
			*x += e
		} else {
			*x *= 1 + e
		}
	}
	for l := 0; l < m.L; l++ {
		for i := range m.W[l] {
			for j := range m.W[l][i] {
				perturb(&m.W[l][i][j])
			}
			perturb(&m.C[l][i])
		}
		for v := range m.U[l] {
			for i := range m.U[l][v] {
				perturb(&m.U[l][v][i])
			}
		}
	}
	if spec.Scope != sdk.ScopeFFN {
		for i := range m.E {
			for j := range m.E[i] {
				perturb(&m.E[i][j])
			}
		}
		for i := range m.Bias {
			perturb(&m.Bias[i])
		}
	}
	return nil
}

// RemoveNoise implements sdk.Model.
func (m *Toy) RemoveNoise(context.Context) error {
	if m.pristine != nil {
		p := m.pristine
		m.E, m.W, m.C, m.U, m.Bias = p.E, p.W, p.C, p.U, p.Bias
		m.pristine = nil
	}
	return nil
}

func (m *Toy) clone() *Toy {
	c := &Toy{L: m.L, F: m.F, V: m.V}
	cp2 := func(a [][]float64) [][]float64 {
		out := make([][]float64, len(a))
		for i := range a {
			out[i] = append([]float64(nil), a[i]...)
		}
		return out
	}
	c.E = cp2(m.E)
	c.C = cp2(m.C)
	c.Bias = append([]float64(nil), m.Bias...)
	for l := 0; l < m.L; l++ {
		c.W = append(c.W, cp2(m.W[l]))
		c.U = append(c.U, cp2(m.U[l]))
	}
	return c
}

// Save implements sdk.Model: the weights as JSON in dir/toy.json.
func (m *Toy) Save(_ context.Context, dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return sdk.InvalidInputf("save: %w", err)
	}
	b, err := json.Marshal(struct {
		L, F, V int
		E       [][]float64
		W       [][][]float64
		C       [][]float64
		U       [][][]float64
		Bias    []float64
	}{m.L, m.F, m.V, m.E, m.W, m.C, m.U, m.Bias})
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "config.json"), []byte(`{"model_type":"toy"}`), 0o644); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, "toy.json"), b, 0o644)
}

func toF32(v []float64) []float32 {
	out := make([]float32, len(v))
	for i, x := range v {
		out[i] = float32(x)
	}
	return out
}
