// Package ig is the integrated-gradients attributor of Dai et al. (2022):
// the attribution of FFN neuron i in layer l for a prompt and its answer is
//
//	Attr_i = (w_i - b_i) * integral_0^1 dP(answer | x = b + alpha (w - b)) / dx_i dalpha
//
// where w is layer l's activation at the target position, b the baseline
// (zero by default) and P the answer's probability, computed by a
// quadrature rule from one batch of alphas per (prompt, layer). Every
// result carries the completeness error sum_i Attr_i - (P(w) - P(b)) per
// layer, which is zero for the exact integral.
//
// The package is pure Go: it drives any sdk.Model.
package ig

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"strconv"
	"time"

	"github.com/knctl/knctl/sdk"
)

// Name is the attributor's plugin name.
const Name = "ig"

// Options of the attributor, as listed in Info.
var optionSpecs = []sdk.OptionSpec{
	{Name: "steps", Default: "20", Help: "quadrature nodes m (forward+backward passes per prompt and layer)"},
	{Name: "quadrature", Default: string(Right), Help: "right (Dai et al. eq. 3), left (their released code), midpoint, trapezoid, eleutherai (linspace(0,1,m), sum/m), gauss-legendre"},
	{Name: "baseline", Default: "zero", Help: "zero, or a JSON file with one activation vector per layer: [[...], ...] or {\"LAYER\": [...]}"},
	{Name: "batch", Default: "0", Help: "alphas per model request (0: all m, plus the path's end points, in one request)"},
	{Name: "input-noise", Default: "0", Help: "standard deviation of Gaussian noise added to the input embeddings (FusionGrad's input samples; 0: none)"},
	{Name: "input-noise-seed", Default: "0", Help: "seed of the input noise"},
}

// Attributor computes integrated gradients. The zero value is ready to use.
type Attributor struct{}

var _ sdk.Attributor = Attributor{}

// Info implements sdk.Attributor.
func (Attributor) Info(context.Context) (sdk.AttributorInfo, error) {
	return sdk.AttributorInfo{
		Name:        Name,
		Description: "integrated gradients of the answer probability w.r.t. FFN activations (Dai et al. 2022)",
		Version:     "1",
		Options:     optionSpecs,
	}, nil
}

// config is the parsed options.
type config struct {
	steps     int
	rule      Rule
	baselines map[int][]float32 // nil: zero
	batch     int
	noise     *sdk.InputNoise
}

func parseOptions(opts sdk.Options) (config, error) {
	var c config
	if err := opts.CheckKnown(Name, optionSpecs); err != nil {
		return c, err
	}
	var err error
	if c.steps, err = opts.Int("steps", 20); err != nil {
		return c, err
	}
	if c.rule, err = ParseRule(opts.String("quadrature", string(Right))); err != nil {
		return c, err
	}
	if c.batch, err = opts.Int("batch", 0); err != nil {
		return c, err
	}
	if c.batch < 0 {
		return c, sdk.InvalidInputf("option batch=%d: expected >= 0", c.batch)
	}
	sigma, err := opts.Float("input-noise", 0)
	if err != nil {
		return c, err
	}
	if sigma < 0 {
		return c, sdk.InvalidInputf("option input-noise=%g: expected >= 0", sigma)
	}
	seed, err := opts.Int("input-noise-seed", 0)
	if err != nil {
		return c, err
	}
	if sigma > 0 {
		c.noise = &sdk.InputNoise{Sigma: sigma, Seed: int64(seed)}
	}
	if b := opts.String("baseline", "zero"); b != "zero" {
		if c.baselines, err = readBaselines(b); err != nil {
			return c, err
		}
	}
	return c, nil
}

// readBaselines reads per-layer baseline vectors from a JSON file: a list
// indexed by layer, or an object keyed by layer number.
func readBaselines(path string) (map[int][]float32, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, sdk.InvalidInputf("baseline file: %w", err)
	}
	out := map[int][]float32{}
	var list [][]float32
	if err := json.Unmarshal(b, &list); err == nil {
		for l, v := range list {
			out[l] = v
		}
		return out, nil
	}
	var obj map[string][]float32
	if err := json.Unmarshal(b, &obj); err != nil {
		return nil, sdk.InvalidInputf("baseline file %s: expected JSON [[...], ...] or {\"LAYER\": [...]}: %v", path, err)
	}
	for k, v := range obj {
		l, err := strconv.Atoi(k)
		if err != nil {
			return nil, sdk.InvalidInputf("baseline file %s: key %q is not a layer number", path, k)
		}
		out[l] = v
	}
	return out, nil
}

// Attribute implements sdk.Attributor.
func (Attributor) Attribute(ctx context.Context, model sdk.Model, q sdk.AttributionQuery, opts sdk.Options) (*sdk.Attribution, error) {
	start := time.Now()
	c, err := parseOptions(opts)
	if err != nil {
		return nil, err
	}
	info, err := model.Info(ctx)
	if err != nil {
		return nil, fmt.Errorf("ig: model info: %w", err)
	}
	hook, err := sdk.ParseHook(string(q.Hook))
	if err != nil {
		return nil, err
	}
	layers := q.Layers
	if len(layers) == 0 {
		for l := 0; l < info.Layers; l++ {
			layers = append(layers, l)
		}
	}
	alphas, weights, err := c.rule.Nodes(c.steps)
	if err != nil {
		return nil, err
	}
	// The completeness check needs P at both ends of the path; evaluate
	// them in the same batch when the rule's nodes do not include them.
	full := append([]float64(nil), alphas...)
	iEnd, iStart := indexOf(alphas, 1), indexOf(alphas, 0)
	if iEnd < 0 {
		iEnd = len(full)
		full = append(full, 1)
	}
	if iStart < 0 {
		iStart = len(full)
		full = append(full, 0)
	}
	out := &sdk.Attribution{Layers: layers, Method: fmt.Sprintf("ig(%s, m=%d)", c.rule, c.steps)}
	for _, l := range layers {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		var base []float32
		if c.baselines != nil {
			v, ok := c.baselines[l]
			if !ok {
				return nil, sdk.InvalidInputf("baseline file: no vector for layer %d", l)
			}
			base = v
		}
		g, err := gradients(ctx, model, gradRequest{q: q.Query, layer: l, hook: hook, base: base, noise: c.noise}, full, c.batch)
		if err != nil {
			return nil, fmt.Errorf("ig: layer %d: %w", l, err)
		}
		out.Passes += int64(len(full))
		out.ModelSeconds += g.ComputeSeconds
		if base != nil && len(base) != len(g.Activation) {
			return nil, sdk.InvalidInputf("baseline file: layer %d has %d values; expected %d", l, len(base), len(g.Activation))
		}
		n := g.Positions * g.Width
		sum := make([]float64, n)
		for k, wk := range weights {
			for i, x := range g.Grads[k] {
				sum[i] += wk * float64(x)
			}
		}
		scores := make([]float32, g.Width)
		var total float64
		for i := 0; i < n; i++ {
			var b float64
			if base != nil {
				b = float64(base[i])
			}
			a := (float64(g.Activation[i]) - b) * sum[i]
			// Positions of a multi-position target add up per neuron.
			scores[i%g.Width] += float32(a)
			total += a
		}
		out.Scores = append(out.Scores, scores)
		pFull, pBase := g.Probs[iEnd], g.Probs[iStart]
		out.LayerDiagnostics = append(out.LayerDiagnostics, sdk.LayerDiagnostics{
			Layer: l, ProbFull: pFull, ProbBaseline: pBase, ScoreSum: total,
			CompletenessError: total - (pFull - pBase),
		})
	}
	out.Seconds = time.Since(start).Seconds()
	return out, nil
}

// gradRequest is what stays the same across a layer's gradient requests.
type gradRequest struct {
	q     sdk.Query
	layer int
	hook  sdk.Hook
	base  []float32
	noise *sdk.InputNoise
}

// gradients asks the model for the alphas in batches of at most batch (0:
// one request).
func gradients(ctx context.Context, m sdk.Model, r gradRequest, alphas []float64, batch int) (sdk.Gradients, error) {
	if batch <= 0 {
		batch = len(alphas)
	}
	var out sdk.Gradients
	for lo := 0; lo < len(alphas); lo += batch {
		hi := min(lo+batch, len(alphas))
		a := make([]float32, hi-lo)
		for i := range a {
			a[i] = float32(alphas[lo+i])
		}
		g, err := m.Gradients(ctx, sdk.GradientsRequest{Query: r.q, Layer: r.layer, Hook: r.hook, Alphas: a, Baseline: r.base, InputNoise: r.noise})
		if err != nil {
			return out, err
		}
		if len(g.Grads) != len(a) || len(g.Probs) != len(a) {
			return out, fmt.Errorf("model returned %d gradients and %d probabilities for %d alphas", len(g.Grads), len(g.Probs), len(a))
		}
		if lo == 0 {
			out = g
			continue
		}
		out.Grads = append(out.Grads, g.Grads...)
		out.Probs = append(out.Probs, g.Probs...)
		out.ComputeSeconds += g.ComputeSeconds
	}
	return out, nil
}

func indexOf(v []float64, x float64) int {
	for i, y := range v {
		if math.Abs(y-x) < 1e-12 {
			return i
		}
	}
	return -1
}
