package torch

import (
	"sort"
	"time"

	"github.com/sugarme/gotch/ts"

	"github.com/knctl/knctl/sdk"
)

// Weights is what both backends keep about their parameters: the Store, the
// layer count, and a version that changes with every weight change so that
// cached forward passes are never reused across one.
type Weights struct {
	*Store
	Layers  int
	Version int
}

// NewWeights takes ownership of params.
func NewWeights(params map[string]*ts.Tensor, layers int) *Weights {
	return &Weights{Store: NewStore(params), Layers: layers}
}

// CheckLayer reports a layer out of range as invalid input.
func (w *Weights) CheckLayer(l int) error {
	if l < 0 || l >= w.Layers {
		return sdk.InvalidInputf("layer %d: out of range; the model has layers 0..%d", l, w.Layers-1)
	}
	return nil
}

// ReplaceSlots swaps in t, a copy of parameter name with some value slots
// changed, as an undoable edit; it drops t when it fails.
func (w *Weights) ReplaceSlots(name string, t *ts.Tensor) (sdk.EditID, error) {
	id, err := w.Replace(name, t)
	if err != nil {
		_ = t.Drop()
		return 0, err
	}
	w.Version++
	return id, nil
}

// UndoEdit restores what edit id replaced.
func (w *Weights) UndoEdit(id sdk.EditID) error {
	if err := w.Undo(id); err != nil {
		return err
	}
	w.Version++
	return nil
}

// Noise applies spec to all parameters, or with scope ffn to those ffn
// selects.
func (w *Weights) Noise(spec sdk.NoiseSpec, ffn func(name string) bool) error {
	selected, err := NoiseSelector(spec, ffn)
	if err != nil {
		return err
	}
	w.Version++
	return ApplyNoise(w.Store, spec, selected)
}

// Denoise restores the weights noise replaced.
func (w *Weights) Denoise() {
	if w.Noisy() {
		w.Version++
	}
	w.RemoveNoise()
}

// CheckGradients validates a gradients request for a query with the given
// number of target positions and FFN width, returning its hook and input
// noise (nil for none).
func (w *Weights) CheckGradients(req sdk.GradientsRequest, positions, width int) (sdk.Hook, *sdk.InputNoise, error) {
	hook, err := sdk.ParseHook(string(req.Hook))
	if err != nil {
		return "", nil, err
	}
	if err := w.CheckLayer(req.Layer); err != nil {
		return "", nil, err
	}
	if len(req.Alphas) == 0 {
		return "", nil, sdk.InvalidInputf("alphas: empty; expected at least one scaling factor")
	}
	if req.Baseline != nil && len(req.Baseline) != positions*width {
		return "", nil, sdk.InvalidInputf("baseline: %d values; expected %d (%d target positions x FFN width %d)", len(req.Baseline), positions*width, positions, width)
	}
	var noise *sdk.InputNoise
	if req.InputNoise != nil && req.InputNoise.Sigma > 0 {
		noise = req.InputNoise
	}
	return hook, noise, nil
}

// PackGradients assembles the answer to a gradients request from the
// probabilities [B], gradients [B, positions*width] and activation read
// back from libtorch.
func PackGradients(probs, grads, act []float32, positions, width int, start time.Time) sdk.Gradients {
	n := positions * width
	out := sdk.Gradients{Positions: positions, Width: width, Activation: act, Probs: make([]float64, len(probs))}
	for i := range probs {
		out.Probs[i] = float64(probs[i])
		out.Grads = append(out.Grads, grads[i*n:(i+1)*n:(i+1)*n])
	}
	out.ComputeSeconds = time.Since(start).Seconds()
	return out
}

// Encoded is a query as token ids, as a backend sees it.
type Encoded struct {
	IDs     []int64  // what the model reads
	Tokens  []string // their tokens
	Targets []int    // target positions
	Answer  []int64  // the answer's tokens
	AnsTok  []string
}

// Prediction assembles Predict's answer from the softmax probabilities and
// logits [k, vocab] of the rows that predict the answer's k tokens (the
// first row when there is no answer); decode turns an id into text.
func Prediction(enc *Encoded, probs, logits []float32, vocab, topK int, decode func(id int) string) sdk.Prediction {
	p := sdk.Prediction{Tokens: enc.Tokens, TargetPositions: enc.Targets, AnswerProb: 1}
	for _, id := range enc.IDs {
		p.InputIDs = append(p.InputIDs, int(id))
	}
	for k, id := range enc.Answer {
		pr := float64(probs[k*vocab+int(id)])
		p.AnswerIDs = append(p.AnswerIDs, int(id))
		p.AnswerTokens = append(p.AnswerTokens, enc.AnsTok[k])
		p.AnswerTokenProb = append(p.AnswerTokenProb, pr)
		p.AnswerProb *= pr
	}
	if len(enc.Answer) == 0 {
		p.AnswerProb = 0
	} else {
		first := logits[enc.Answer[0]]
		for _, x := range logits[:vocab] {
			if x > first {
				p.AnswerRank++
			}
		}
	}
	p.Top = TopTokens(probs[:vocab], logits[:vocab], topK, decode)
	return p
}

// TopTokens lists the k ids of highest logit.
func TopTokens(probs, logits []float32, k int, decode func(id int) string) []sdk.TokenProb {
	k = min(k, len(probs))
	idx := make([]int, len(probs))
	for i := range idx {
		idx[i] = i
	}
	sort.SliceStable(idx, func(a, b int) bool { return logits[idx[a]] > logits[idx[b]] })
	out := make([]sdk.TokenProb, 0, k)
	for _, i := range idx[:k] {
		out = append(out, sdk.TokenProb{ID: i, Token: decode(i), Prob: float64(probs[i]), Logit: float64(logits[i])})
	}
	return out
}
