// Package noisegrad is the NoiseGrad and FusionGrad attributor (Bykov et
// al., AAAI 2022): a base attribution method averaged over N copies of the
// model whose weights are perturbed — multiplied by e ~ N(1, sigma^2), or
// added e ~ N(0, sigma^2) — and, for FusionGrad, over M samples of Gaussian
// noise on the input embeddings per weight sample.
//
// The base method is any installed attributor, run by the host on the same
// model (sdk.Options.Peers); options prefixed "base." go to it. The model
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
	{Name: "base.OPTION", Default: "", Help: "an option of the base method, e.g. base.steps=20"},
}

// Attributor is NoiseGrad/FusionGrad. The zero value is ready to use.
type Attributor struct{}

var _ sdk.Attributor = Attributor{}

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

func parseOptions(opts sdk.Options) (config, error) {
	c := config{baseOpts: map[string]string{}}
	own := map[string]string{}
	for k, v := range opts.Values {
		if strings.HasPrefix(k, basePrefix) {
			c.baseOpts[strings.TrimPrefix(k, basePrefix)] = v
		} else {
			own[k] = v
		}
	}
	o := sdk.Options{Values: own}
	if err := o.CheckKnown(Name, optionSpecs); err != nil {
		return c, err
	}
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
func (Attributor) Attribute(ctx context.Context, model sdk.Model, q sdk.AttributionQuery, opts sdk.Options) (res *sdk.Attribution, err error) {
	start := time.Now()
	c, err := parseOptions(opts)
	if err != nil {
		return nil, err
	}
	if opts.Peers == nil {
		return nil, fmt.Errorf("noisegrad: the host offers no attributor source to run the base method %q", c.base)
	}
	if q.Query.Answer == "" {
		return nil, sdk.InvalidInputf("answer: empty; expected the text the prompt should be completed with")
	}
	// Whatever happens, the model leaves with its own weights.
	defer func() {
		if rerr := model.RemoveNoise(context.WithoutCancel(ctx)); rerr != nil && err == nil {
			err = fmt.Errorf("noisegrad: remove noise: %w", rerr)
		}
	}()
	if c.auto {
		if c.sigma, err = autoSigma(ctx, model, q.Query, c); err != nil {
			return nil, err
		}
	}
	var sum [][]float64
	var layers []int
	out := &sdk.Attribution{Extra: map[string]float64{"sigma": c.sigma, "n": float64(c.n), "m": float64(c.m)}}
	var completeness float64
	samples := 0
	for i := 0; i < c.n; i++ {
		spec := sdk.NoiseSpec{Seed: c.seed*1_000_003 + int64(i), Sigma: c.sigma, Mode: c.mode, Scope: c.scope}
		if err := model.ApplyNoise(ctx, spec); err != nil {
			return nil, fmt.Errorf("noisegrad: sample %d: %w", i, err)
		}
		inputs := max(c.m, 1)
		for j := 0; j < inputs; j++ {
			bo := c.baseOpts
			if c.m > 0 && c.inputSigma > 0 {
				bo = cloneWith(c.baseOpts, map[string]string{
					"input-noise":      fmt.Sprint(c.inputSigma),
					"input-noise-seed": fmt.Sprint(c.seed*1_000_003 + int64(i*inputs+j)),
				})
			}
			a, err := opts.Peers.Attribute(ctx, c.base, q, bo)
			if err != nil {
				return nil, fmt.Errorf("noisegrad: sample %d: base method %s: %w", i, c.base, err)
			}
			if sum == nil {
				layers = a.Layers
				sum = make([][]float64, len(a.Scores))
				for k := range sum {
					sum[k] = make([]float64, len(a.Scores[k]))
				}
			}
			for k, row := range a.Scores {
				for x, v := range row {
					sum[k][x] += float64(v)
				}
			}
			out.Passes += a.Passes
			out.ModelSeconds += a.ModelSeconds
			for _, d := range a.LayerDiagnostics {
				completeness = math.Max(completeness, math.Abs(d.CompletenessError))
			}
			samples++
		}
	}
	out.Layers = layers
	out.Scores = make([][]float32, len(sum))
	for k, row := range sum {
		out.Scores[k] = make([]float32, len(row))
		for x, v := range row {
			out.Scores[k][x] = float32(v / float64(samples))
		}
	}
	name := "noisegrad"
	if c.m > 0 {
		name = "fusiongrad"
	}
	out.Method = fmt.Sprintf("%s(%s, N=%d, M=%d, σ=%g %s)", name, c.base, c.n, c.m, c.sigma, c.mode)
	out.Extra["max_base_completeness_error"] = completeness
	out.Seconds = time.Since(start).Seconds()
	return out, nil
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
// probability (over 8 noise samples) within 5% of the clean model's.
func autoSigma(ctx context.Context, m sdk.Model, q sdk.Query, c config) (float64, error) {
	clean, err := m.Predict(ctx, sdk.PredictRequest{Query: q})
	if err != nil {
		return 0, fmt.Errorf("noisegrad: sigma auto: %w", err)
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
			p, err := m.Predict(ctx, sdk.PredictRequest{Query: q})
			if err != nil {
				return 0, fmt.Errorf("noisegrad: sigma auto: %w", err)
			}
			mean += p.AnswerProb / samples
		}
		if mean < 0.95*clean.AnswerProb {
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
