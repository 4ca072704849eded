// Package noisegrad is the NoiseGrad and FusionGrad attributor (Bykov et
// al., AAAI 2022): a base attribution method averaged over N copies of the
// model whose weights are perturbed — multiplied by e ~ N(1, sigma^2), or
// added e ~ N(0, sigma^2) — and, for FusionGrad, over M samples of Gaussian
// noise on the input embeddings per weight sample.
//
// The base method is any installed attributor, run by the host on the same
// model (sdk.Options.Peers); options prefixed "base.", and options
// NoiseGrad does not have, go to it. The model
// applies and removes the weight noise in place; after Attribute the
// weights are bit-exact the originals, also when it fails.
package noisegrad

import (
	"context"
	"fmt"
	"math"
	"strings"
	"time"

	"github.com/knctl/knctl/sdk"
)

// Name is the attributor's plugin name.
const Name = "noisegrad"

// basePrefix marks options passed on to the base method.
const basePrefix = "base."

// DefaultSigma is the noise level for language models: the paper's 0.2 is a
// vision setting that wrecks a transformer; about 0.005 costs a
// transformer a few percent of its accuracy, the paper's criterion.
const DefaultSigma = 0.005

var optionSpecs = []sdk.OptionSpec{
	{Name: "base", Default: "ig", Help: "the base attribution method (an installed attributor)"},
	{Name: "n", Default: "10", Help: "N, weight-noise samples"},
	{Name: "sigma", Default: fmt.Sprint(DefaultSigma), Help: "noise standard deviation, or auto: the largest of 0.001·2^k (k = 0..9) that keeps the mean answer probability under noise within 5% of the clean one"},
	{Name: "mode", Default: string(sdk.NoiseMultiplicative), Help: "multiplicative (w·e, e ~ N(1, σ²)) or additive (w + e, e ~ N(0, σ²))"},
	{Name: "scope", Default: string(sdk.ScopeAll), Help: "weights that get noise: all (as the paper) or ffn"},
	{Name: "seed", Default: "0", Help: "seed of the noise samples"},
	{Name: "m", Default: "0", Help: "FusionGrad: input-noise samples per weight sample (0: NoiseGrad)"},
	{Name: "input-sigma", Default: "0.05", Help: "FusionGrad: standard deviation of the input-embedding noise"},
	{Name: "base.OPTION", Default: "", Help: "an option of the base method, e.g. base.steps=20; options NoiseGrad does not have go to the base method too (steps=20)"},
}

// Attributor is NoiseGrad/FusionGrad. The zero value is ready to use.
type Attributor struct{}

var _ sdk.FactAttributor = Attributor{}

// Info implements sdk.Attributor.
func (Attributor) Info(context.Context) (sdk.AttributorInfo, error) {
	return sdk.AttributorInfo{
		Name:        Name,
		Description: "NoiseGrad / FusionGrad: a base method averaged over weight-noise (and input-noise) samples (Bykov et al. 2022)",
		Version:     "1",
		Options:     optionSpecs,
	}, nil
}

type config struct {
	base       string
	baseOpts   map[string]string
	n, m       int
	sigma      float64
	auto       bool
	mode       sdk.NoiseMode
	scope      sdk.NoiseScope
	seed       int64
	inputSigma float64
}

func isOwn(name string) bool {
	for _, o := range optionSpecs {
		if o.Name == name {
			return true
		}
	}
	return false
}

func parseOptions(opts sdk.Options) (config, error) {
	c := config{baseOpts: map[string]string{}}
	own := map[string]string{}
	for k, v := range opts.Values {
		switch {
		case strings.HasPrefix(k, basePrefix):
			c.baseOpts[strings.TrimPrefix(k, basePrefix)] = v
		case isOwn(k):
			own[k] = v
		default:
			// knctl's --steps, --quadrature and --baseline name options
			// of integrated gradients; they reach the base method, which
			// rejects what it does not know.
			c.baseOpts[k] = v
		}
	}
	o := sdk.Options{Values: own}
	c.base = o.String("base", "ig")
	if c.base == Name {
		return c, sdk.InvalidInputf("option base=%s: NoiseGrad cannot wrap itself", Name)
	}
	var err error
	if c.n, err = o.Int("n", 10); err != nil {
		return c, err
	}
	if c.n < 1 {
		return c, sdk.InvalidInputf("option n=%d: expected at least 1 sample", c.n)
	}
	if c.m, err = o.Int("m", 0); err != nil {
		return c, err
	}
	if c.m < 0 {
		return c, sdk.InvalidInputf("option m=%d: expected >= 0", c.m)
	}
	if s := o.String("sigma", fmt.Sprint(DefaultSigma)); s == "auto" {
		c.auto = true
	} else if c.sigma, err = o.Float("sigma", DefaultSigma); err != nil {
		return c, err
	} else if c.sigma < 0 {
		return c, sdk.InvalidInputf("option sigma=%g: expected >= 0 or auto", c.sigma)
	}
	c.mode = sdk.NoiseMode(o.String("mode", string(sdk.NoiseMultiplicative)))
	if c.mode != sdk.NoiseMultiplicative && c.mode != sdk.NoiseAdditive {
		return c, sdk.InvalidInputf("option mode=%s: expected multiplicative or additive", c.mode)
	}
	c.scope = sdk.NoiseScope(o.String("scope", string(sdk.ScopeAll)))
	if c.scope != sdk.ScopeAll && c.scope != sdk.ScopeFFN {
		return c, sdk.InvalidInputf("option scope=%s: expected all or ffn", c.scope)
	}
	seed, err := o.Int("seed", 0)
	if err != nil {
		return c, err
	}
	c.seed = int64(seed)
	if c.inputSigma, err = o.Float("input-sigma", 0.05); err != nil {
		return c, err
	}
	if c.inputSigma < 0 {
		return c, sdk.InvalidInputf("option input-sigma=%g: expected >= 0", c.inputSigma)
	}
	return c, nil
}

// Attribute implements sdk.Attributor.
func (a Attributor) Attribute(ctx context.Context, model sdk.Model, q sdk.AttributionQuery, opts sdk.Options) (*sdk.Attribution, error) {
	res, err := a.AttributeFact(ctx, model, []sdk.AttributionQuery{q}, opts)
	if err != nil {
		return nil, err
	}
	return res[0], nil
}

// AttributeFact implements sdk.FactAttributor. Each noisy model is drawn
// once and attributes every prompt of the fact, so drawing noise (a pass
// over all weights) is paid N times per fact, not per prompt; sigma=auto is
// calibrated on all the fact's prompts. Sample i uses the same seed for
// every prompt, so a prompt's scores do not depend on the others.
func (Attributor) AttributeFact(ctx context.Context, model sdk.Model, qs []sdk.AttributionQuery, opts sdk.Options) (res []*sdk.Attribution, err error) {
	start := time.Now()
	c, err := parseOptions(opts)
	if err != nil {
		return nil, err
	}
	if opts.Peers == nil {
		return nil, fmt.Errorf("noisegrad: the host offers no attributor source to run the base method %q", c.base)
	}
	if len(qs) == 0 {
		return nil, sdk.InvalidInputf("prompts: none given; expected at least one")
	}
	for i, q := range qs {
		if q.Query.Answer == "" {
			return nil, sdk.InvalidInputf("prompt %d %q: answer: empty; expected the text the prompt should be completed with", i+1, q.Query.Prompt)
		}
	}
	// Whatever happens, the model leaves with its own weights.
	defer func() {
		if rerr := model.RemoveNoise(context.WithoutCancel(ctx)); rerr != nil && err == nil {
			err = fmt.Errorf("noisegrad: remove noise: %w", rerr)
		}
	}()
	if c.auto {
		if c.sigma, err = autoSigma(ctx, model, qs, c); err != nil {
			return nil, err
		}
	}
	acc := make([]sample, len(qs))
	inputs := max(c.m, 1)
	for i := 0; i < c.n; i++ {
		spec := sdk.NoiseSpec{Seed: c.seed*1_000_003 + int64(i), Sigma: c.sigma, Mode: c.mode, Scope: c.scope}
		if err := model.ApplyNoise(ctx, spec); err != nil {
			return nil, fmt.Errorf("noisegrad: sample %d: %w", i, err)
		}
		for j := 0; j < inputs; j++ {
			bo := c.baseOpts
			if c.m > 0 && c.inputSigma > 0 {
				bo = cloneWith(c.baseOpts, map[string]string{
					"input-noise":      fmt.Sprint(c.inputSigma),
					"input-noise-seed": fmt.Sprint(c.seed*1_000_003 + int64(i*inputs+j)),
				})
			}
			for k, q := range qs {
				a, err := opts.Peers.Attribute(ctx, c.base, q, bo)
				if err != nil {
					return nil, fmt.Errorf("noisegrad: prompt %d %q: sample %d: base method %s: %w", k+1, q.Query.Prompt, i, c.base, err)
				}
				if err := acc[k].add(a); err != nil {
					return nil, fmt.Errorf("noisegrad: prompt %d %q: sample %d: %w", k+1, q.Query.Prompt, i, err)
				}
			}
		}
	}
	name := "noisegrad"
	if c.m > 0 {
		name = "fusiongrad"
	}
	method := fmt.Sprintf("%s(%s, N=%d, M=%d, σ=%g %s)", name, c.base, c.n, c.m, c.sigma, c.mode)
	// The wall time is shared: each prompt gets its part of it.
	secs := time.Since(start).Seconds() / float64(len(qs))
	for k := range acc {
		out := acc[k].result()
		out.Method = method
		out.Seconds = secs
		out.Extra = map[string]float64{"sigma": c.sigma, "n": float64(c.n), "m": float64(c.m), "max_base_completeness_error": acc[k].completeness}
		res = append(res, out)
	}
	return res, nil
}

// sample accumulates one prompt's base attributions over the noise samples.
type sample struct {
	layers       []int
	sum          [][]float64
	n            int
	passes       int64
	modelSeconds float64
	completeness float64
	// diag sums the base method's per-layer diagnostics.
	diag []sdk.LayerDiagnostics
}

func (s *sample) add(a *sdk.Attribution) error {
	if s.sum == nil {
		s.layers = a.Layers
		s.sum = make([][]float64, len(a.Scores))
		for k := range s.sum {
			s.sum[k] = make([]float64, len(a.Scores[k]))
		}
	}
	if len(a.Scores) != len(s.sum) {
		return fmt.Errorf("base method returned %d layers, earlier %d", len(a.Scores), len(s.sum))
	}
	for k, row := range a.Scores {
		if len(row) != len(s.sum[k]) {
			return fmt.Errorf("base method returned %d neurons in layer %d, earlier %d", len(row), s.layers[k], len(s.sum[k]))
		}
		for x, v := range row {
			s.sum[k][x] += float64(v)
		}
	}
	s.passes += a.Passes
	s.modelSeconds += a.ModelSeconds
	if s.n == 0 {
		s.diag = make([]sdk.LayerDiagnostics, len(a.LayerDiagnostics))
	}
	for i, d := range a.LayerDiagnostics {
		s.completeness = math.Max(s.completeness, math.Abs(d.CompletenessError))
		if i < len(s.diag) {
			s.diag[i].Layer = d.Layer
			s.diag[i].ProbFull += d.ProbFull
			s.diag[i].ProbBaseline += d.ProbBaseline
			s.diag[i].ScoreSum += d.ScoreSum
		}
	}
	s.n++
	return nil
}

// result is the mean attribution.
func (s *sample) result() *sdk.Attribution {
	out := &sdk.Attribution{Layers: s.layers, Scores: make([][]float32, len(s.sum)), Passes: s.passes, ModelSeconds: s.modelSeconds}
	for k, row := range s.sum {
		out.Scores[k] = make([]float32, len(row))
		for x, v := range row {
			out.Scores[k][x] = float32(v / float64(s.n))
		}
	}
	// Completeness is linear: the mean scores' sum against the mean of the
	// noisy models' probabilities is the NoiseGrad attribution's own.
	for _, d := range s.diag {
		n := float64(s.n)
		d.ProbFull, d.ProbBaseline, d.ScoreSum = d.ProbFull/n, d.ProbBaseline/n, d.ScoreSum/n
		d.CompletenessError = d.ScoreSum - (d.ProbFull - d.ProbBaseline)
		out.LayerDiagnostics = append(out.LayerDiagnostics, d)
	}
	return out
}

func cloneWith(a, b map[string]string) map[string]string {
	out := make(map[string]string, len(a)+len(b))
	for k, v := range a {
		out[k] = v
	}
	for k, v := range b {
		out[k] = v
	}
	return out
}

// autoSigma implements the paper's heuristic for this setting: the
// largest sigma of a doubling grid whose noisy models keep the mean answer
// probability over the fact's prompts (and 8 noise samples) within 5% of
// the clean model's.
func autoSigma(ctx context.Context, m sdk.Model, qs []sdk.AttributionQuery, c config) (float64, error) {
	meanProb := func() (float64, error) {
		var mean float64
		for _, q := range qs {
			p, err := m.Predict(ctx, sdk.PredictRequest{Query: q.Query})
			if err != nil {
				return 0, fmt.Errorf("noisegrad: sigma auto: prompt %q: %w", q.Query.Prompt, err)
			}
			mean += p.AnswerProb / float64(len(qs))
		}
		return mean, nil
	}
	clean, err := meanProb()
	if err != nil {
		return 0, err
	}
	best := 0.0
	for k := 0; k < 10; k++ {
		sigma := 0.001 * math.Pow(2, float64(k))
		var mean float64
		const samples = 8
		for i := 0; i < samples; i++ {
			if err := m.ApplyNoise(ctx, sdk.NoiseSpec{Seed: -1 - int64(i), Sigma: sigma, Mode: c.mode, Scope: c.scope}); err != nil {
				return 0, fmt.Errorf("noisegrad: sigma auto: %w", err)
			}
			p, err := meanProb()
			if err != nil {
				return 0, err
			}
			mean += p / samples
		}
		if mean < 0.95*clean {
			break
		}
		best = sigma
	}
	if err := m.RemoveNoise(ctx); err != nil {
		return 0, err
	}
	if best == 0 {
		best = 0.001
	}
	return best, nil
}
