package main

import (
	"fmt"
	"math"
	"path/filepath"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/knctl/knctl/sdk"
)

// benchPrompts are the fact the benchmark attributes.
var benchPrompts = []string{
	"The capital of France is",
	"France's capital city is",
	"The Eiffel Tower is located in the city of",
	"Q: What is the capital of France?\nA:",
	"The French government sits in",
	"The largest city in France is",
	"The Louvre museum is in",
	"The city of light, the capital of France, is",
}

const benchTarget = " Paris"

// benchRules are the quadrature rules and step counts of the completeness
// table.
var benchRules = []struct {
	rule  string
	steps []int
}{
	{"right", []int{20}},
	{"left", []int{20}},
	{"midpoint", []int{20}},
	{"trapezoid", []int{20}},
	{"gauss-legendre", []int{2, 3, 4, 6, 8, 10}},
}

func (a *app) benchCmd() *cobra.Command {
	c := &cobra.Command{
		Use:   "bench",
		Short: "Time knowledge-neuron attribution and compare quadrature rules",
		Long: `Attribute one fact (--prompts prompts x 20 steps x all layers, integrated
gradients) through the plugins and print the seconds per fact and the share of
that time spent outside the model's computation (crossing the plugin boundary
and the attributor's own work). Then print, for each quadrature rule, the mean
relative completeness error |sum(scores) - (P(w) - P(0))| / |P(w) - P(0)| over
--table-prompts prompts and all layers, to show how few Gauss-Legendre nodes
reach the 20-step Riemann sums' error.

Without --checkpoint it uses a GPT-2-124M-shaped model: the real GPT-2 config and
tokenizer in testdata/gpt2-tokenizer with random weights (init=random).`,
		Example: `  knctl bench
  knctl bench --checkpoint gpt2 --prompts 4`,
		Args: cobra.NoArgs,
		RunE: a.runBench,
	}
	modelFlags(c)
	c.Flags().Lookup("checkpoint").Usage = "checkpoint directory, or a HuggingFace model id found in the local cache (default: a GPT-2-124M-shaped model with random weights)"
	c.Flags().Int("prompts", 4, "prompts per fact for the timing")
	c.Flags().Int("table-prompts", 2, "prompts for the quadrature table (0: no table)")
	c.Flags().Int("noisegrad", 0, "also time a fact with NoiseGrad over ig with this many noise samples (0: skip)")
	return c
}

type benchRow struct {
	Rule     string  `json:"quadrature"`
	Steps    int     `json:"steps"`
	RelError float64 `json:"mean_relative_completeness_error"`
	AbsError float64 `json:"mean_abs_completeness_error"`
	Seconds  float64 `json:"seconds_per_prompt"`
}

type benchResult struct {
	Model           sdk.ModelInfo `json:"model"`
	Prompts         int           `json:"prompts"`
	Steps           int           `json:"steps"`
	SecondsPerFact  float64       `json:"seconds_per_fact"`
	ModelSeconds    float64       `json:"model_seconds"`
	BoundaryShare   float64       `json:"boundary_share"`
	Passes          int64         `json:"passes"`
	Quadrature      []benchRow    `json:"quadrature,omitempty"`
	NoiseGradN      int           `json:"noisegrad_n,omitempty"`
	NoiseGradFact   float64       `json:"noisegrad_seconds_per_fact,omitempty"`
	NoiseGradModel  float64       `json:"noisegrad_model_seconds,omitempty"`
	GaussLegendreTo int           `json:"gauss_legendre_steps_to_match_right20,omitempty"`
}

func (a *app) runBench(cmd *cobra.Command, _ []string) error {
	nPrompts, nTable := a.v.GetInt("prompts"), a.v.GetInt("table-prompts")
	if nPrompts < 1 || nPrompts > len(benchPrompts) || nTable < 0 || nTable > len(benchPrompts) {
		return usageErr("--prompts and --table-prompts: expected 1..%d (and 0 for no table)", len(benchPrompts))
	}
	if !a.v.IsSet("checkpoint") {
		d := repoData(filepath.Join("testdata", "gpt2-tokenizer"))
		if d == "" {
			return usageErr("--checkpoint: not given, and the GPT-2-124M config the repo ships (testdata/gpt2-tokenizer) is not beside knctl or in the working directory")
		}
		a.v.Set("checkpoint", d)
		a.v.Set("model-option", append(a.v.GetStringSlice("model-option"), "init=random"))
	}
	h := a.host()
	defer h.Close()
	m, err := a.openModel(cmd, h)
	if err != nil {
		return err
	}
	at, err := h.OpenAttributor(cmd.Context(), "ig")
	if err != nil {
		return err
	}
	ctx := cmd.Context()
	attribute := func(prompt string, opts map[string]string) (*sdk.Attribution, time.Duration, error) {
		start := time.Now()
		res, err := at.Attribute(ctx, m, sdk.AttributionQuery{Query: sdk.Query{Prompt: prompt, Answer: benchTarget}}, sdk.Options{Values: opts})
		return res, time.Since(start), err
	}
	// Warm up (first-call allocations, thread pools).
	if _, _, err := attribute(benchPrompts[0], map[string]string{"steps": "2"}); err != nil {
		return err
	}
	out := benchResult{Model: m.ModelInfo, Prompts: nPrompts, Steps: 20}
	var wall time.Duration
	for _, p := range benchPrompts[:nPrompts] {
		res, d, err := attribute(p, map[string]string{"steps": "20", "quadrature": "right"})
		if err != nil {
			return err
		}
		wall += d
		out.ModelSeconds += res.ModelSeconds
		out.Passes += res.Passes
	}
	out.SecondsPerFact = wall.Seconds()
	out.BoundaryShare = 1 - out.ModelSeconds/out.SecondsPerFact

	if n := a.v.GetInt("noisegrad"); n > 0 {
		ng, err := h.OpenAttributor(ctx, "noisegrad")
		if err != nil {
			return err
		}
		peers := h.NewPeers(m)
		var qs []sdk.AttributionQuery
		for _, p := range benchPrompts[:nPrompts] {
			qs = append(qs, sdk.AttributionQuery{Query: sdk.Query{Prompt: p, Answer: benchTarget}})
		}
		start := time.Now()
		opts := sdk.Options{Values: map[string]string{"n": fmt.Sprint(n), "base.steps": "20", "base.quadrature": "right"}, Peers: peers}
		res, err := sdk.AttributeFact(ctx, ng, m, qs, opts)
		if err != nil {
			return err
		}
		out.NoiseGradN, out.NoiseGradFact = n, time.Since(start).Seconds()
		for _, r := range res {
			out.NoiseGradModel += r.ModelSeconds
		}
	}

	var right20 float64
	for _, r := range benchRules {
		for _, steps := range r.steps {
			if nTable == 0 {
				break
			}
			row := benchRow{Rule: r.rule, Steps: steps}
			var n int
			var secs time.Duration
			for _, p := range benchPrompts[:nTable] {
				res, d, err := attribute(p, map[string]string{"steps": fmt.Sprint(steps), "quadrature": r.rule})
				if err != nil {
					return err
				}
				secs += d
				for _, ld := range res.LayerDiagnostics {
					row.AbsError += math.Abs(ld.CompletenessError)
					if diff := math.Abs(ld.ProbFull - ld.ProbBaseline); diff > 0 {
						row.RelError += math.Abs(ld.CompletenessError) / diff
					}
					n++
				}
			}
			row.AbsError /= float64(n)
			row.RelError /= float64(n)
			row.Seconds = secs.Seconds() / float64(nTable)
			if r.rule == "right" {
				right20 = row.RelError
			}
			if r.rule == "gauss-legendre" && out.GaussLegendreTo == 0 && row.RelError <= right20 {
				out.GaussLegendreTo = steps
			}
			out.Quadrature = append(out.Quadrature, row)
		}
	}
	if a.v.GetBool("json") {
		return a.printJSON(out)
	}
	info := m.ModelInfo
	fmt.Fprintf(a.out, "model %s %s: %d layers, FFN %d, %.0fM parameters\n", info.Architecture, info.Checkpoint, info.Layers, info.FFNWidth, float64(info.Parameters)/1e6)
	fmt.Fprintf(a.out, "one fact = %d prompts x %d layers x 20 steps (ig, right Riemann sum): %.2f s per fact, %d forward+backward passes\n",
		nPrompts, info.Layers, out.SecondsPerFact, out.Passes)
	fmt.Fprintf(a.out, "model computation %.2f s; crossing the plugin boundary and attributor work %.3f s = %.1f%% of the time\n",
		out.ModelSeconds, out.SecondsPerFact-out.ModelSeconds, 100*out.BoundaryShare)
	if out.NoiseGradN > 0 {
		fmt.Fprintf(a.out, "noisegrad (N=%d over ig, 20 steps): %.2f s per fact = %.2f x ig; ig on the noisy models %.2f s = %.2f x ig, the rest (drawing noise, plugin calls) %.2f s\n",
			out.NoiseGradN, out.NoiseGradFact, out.NoiseGradFact/out.SecondsPerFact, out.NoiseGradModel, out.NoiseGradModel/out.ModelSeconds, out.NoiseGradFact-out.NoiseGradModel)
	}
	if len(out.Quadrature) == 0 {
		return nil
	}
	fmt.Fprintf(a.out, "\ncompleteness error by quadrature rule (%d prompts x %d layers)\n", nTable, info.Layers)
	tw := tabwriter.NewWriter(a.out, 0, 4, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "quadrature\tsteps\tmean |error| / |P(w)-P(0)|\tmean |error|\ts per prompt\t")
	for _, r := range out.Quadrature {
		fmt.Fprintf(tw, "%s\t%d\t%.2e\t%.2e\t%.2f\t\n", r.Rule, r.Steps, r.RelError, r.AbsError, r.Seconds)
	}
	tw.Flush()
	if out.GaussLegendreTo > 0 {
		fmt.Fprintf(a.out, "gauss-legendre reaches the 20-step right Riemann sum's error with %d steps (%.0f%% of the passes)\n",
			out.GaussLegendreTo, 100*float64(out.GaussLegendreTo+2)/22)
	} else {
		fmt.Fprintln(a.out, "gauss-legendre did not reach the 20-step right Riemann sum's error with up to 10 steps")
	}
	return nil
}
