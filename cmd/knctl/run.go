package main

import (
	"encoding/json"
	"fmt"
	"sort"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/knctl/knctl/framework"
	"github.com/knctl/knctl/sdk"
)

const runLong = `Find the knowledge neurons of one fact (--prompt, repeated, and --target) or
of a dataset (--facts FILE.jsonl), as Dai et al. (2022) define them:

 1. Attribution. For each prompt, the attributor scores every FFN neuron of the
    chosen layers (--layers, default all) at the target position. With ig:
    Attr_i = w_i * integral_0^1 dP(target | alpha*w)/dw_i dalpha, by --quadrature
    with --steps nodes (default: right Riemann sum, 20 steps, zero baseline).
 2. Coarse neurons of a prompt: neurons with a positive score s that reaches the
    cut: s >= t * (the prompt's largest score over all its layers and neurons)
    with --threshold-mode relative (default, t = --threshold = 0.2); s >= t with
    absolute; s >= the t-th percentile of the prompt's scores (numpy's linear
    interpolation) with percentile.
 3. Knowledge (refined) neurons of a fact with n prompts: coarse in at least
    max(ceil(p*n), min-count) prompts (--p 0.7, --min-count 3), but never more
    than n.
 4. Relation neurons: knowledge neurons of at least 10% of a relation's facts
    (listed at the end of a dataset run).
 --strict uses the EleutherAI library's comparisons instead: s > cut, and
 coarse in more than p*n prompts (and at least min(min-count, n)).
 --adaptive-p adapts p per relation as the paper does: start at 0.7 and move by
 0.05 (down when the relation's facts average fewer than 2 knowledge neurons, up
 when more than 5), at most 6 rounds. A relation's facts are then written
 together once all of them are done.

A --facts line is {"id", "relation", "subject", "target", "prompts": [...]} or
with "templates": [...] whose {subject} slot is filled from "subject".

--out FILE.jsonl gets one line per finished fact, appended and flushed at once:
{"id", "relation", "target", "prompts", "neurons": [[layer, index], ...],
"neuron_scores", "neuron_counts", "coarse": [[[layer, index], ...] per prompt],
"p", "seconds", "model_seconds", "passes", "max_completeness_error",
"answer_prob", ...}. --json writes the same lines to stdout. --resume skips the
facts already in --out (and repairs a line torn by a crash). A fact that fails
(bad input, a crashed or hung plugin) is reported and the run goes on with a
fresh plugin, unless --fail-fast; failed facts are not written, so --resume
retries them. Ctrl-C leaves every finished fact in --out.`

func (a *app) runCmd() *cobra.Command {
	c := &cobra.Command{
		Use:   "run",
		Short: "Find the knowledge neurons of a fact or of a dataset of facts",
		Long:  runLong,
		Example: `  knctl run --attributor ig --model gpt2 --checkpoint testdata/gpt2-tiny \
    --prompt "The capital of France is" --prompt "France's capital city is" \
    --prompt "The Eiffel Tower is located in the city of" --target " Paris"
  knctl run --facts facts.jsonl --out neurons.jsonl --workers 2 --resume`,
		Args: cobra.NoArgs,
		RunE: a.runRun,
	}
	modelFlags(c)
	c.Flags().String("attributor", "ig", "attributor plugin (knctl-attributor-NAME)")
	c.Flags().StringArray("prompt", nil, "a prompt of the fact (repeat for several)")
	c.Flags().String("target", "", "the fact's answer, e.g. \" Paris\" (with --prompt)")
	c.Flags().String("id", "fact", "the fact's id (with --prompt)")
	c.Flags().String("relation", "", "the fact's relation (with --prompt)")
	c.Flags().String("facts", "", "JSONL file of facts")
	c.Flags().Int("sample", 0, "with --facts: only this many facts per relation, picked at random with --seed (0: all)")
	c.Flags().Int64("seed", 1, "seed of --sample")
	c.Flags().String("out", "", "JSONL file to append results to")
	c.Flags().Bool("resume", false, "skip facts already in --out")
	c.Flags().Int("workers", 1, "model plugin instances run concurrently")
	c.Flags().Bool("fail-fast", false, "stop at the first failed fact")
	attributionFlags(c)
	ruleFlags(c)
	return c
}

// ruleFlags adds the flags of the coarse and refining rules (knctl run
// --help documents them).
func ruleFlags(c *cobra.Command) {
	c.Flags().String("threshold-mode", "relative", "coarse threshold: relative (t * max), absolute (t) or percentile (t-th)")
	c.Flags().Float64("threshold", 0.2, "t of --threshold-mode")
	c.Flags().Float64("p", 0.7, "share of a fact's prompts a coarse neuron must appear in")
	c.Flags().Int("min-count", 3, "least number of prompts a knowledge neuron appears in")
	c.Flags().Bool("adaptive-p", false, "adapt p per relation until facts average 2..5 neurons (Dai et al.)")
	c.Flags().Bool("strict", false, "EleutherAI's comparisons: score > t*max, coarse in more than p*n prompts")
}

// rules reads the rule flags.
func (a *app) rules() (framework.Rules, error) {
	r := framework.Rules{
		Mode:      framework.ThresholdMode(a.v.GetString("threshold-mode")),
		Threshold: a.v.GetFloat64("threshold"),
		P:         a.v.GetFloat64("p"),
		MinCount:  a.v.GetInt("min-count"),
		Strict:    a.v.GetBool("strict"),
	}
	return r, r.Validate()
}

// scoring reads the flags that say how a prompt is attributed: hook,
// layers and attributor options.
func (a *app) scoring() (sdk.Hook, []int, map[string]string, error) {
	hook, err := sdk.ParseHook(a.v.GetString("hook"))
	if err != nil {
		return "", nil, nil, err
	}
	layers, err := parseLayers(a.v.GetString("layers"))
	if err != nil {
		return "", nil, nil, err
	}
	opts, err := a.attributorOptions()
	return hook, layers, opts, err
}

// attributionFlags adds the flags that choose and configure the attributor's
// scoring of one prompt.
func attributionFlags(c *cobra.Command) {
	c.Flags().String("layers", "", "layers to attribute, e.g. 0,3,8-11 (default: all)")
	c.Flags().String("hook", "post", "which FFN value is a neuron: post (activation output) or pre (first linear output)")
	c.Flags().Int("steps", 20, "attributor option steps: quadrature nodes per prompt and layer")
	c.Flags().String("quadrature", "right", "attributor option quadrature: right, left, midpoint, trapezoid, eleutherai, gauss-legendre")
	c.Flags().String("baseline", "zero", "attributor option baseline: zero, or a JSON file of per-layer vectors")
	c.Flags().String("sigma", "", "attributor option sigma of noisegrad: weight-noise standard deviation, or auto (default 0.005)")
	c.Flags().StringArray("option", nil, "other attributor option as key=value (repeatable); see knctl plugins")
}

// attributorOptions collects the options to pass the attributor: those of
// --steps, --quadrature, --baseline and --sigma the user set, and every
// --option. A wrapping method (noisegrad) hands IG's options to its base.
func (a *app) attributorOptions() (map[string]string, error) {
	opts := map[string]string{}
	for _, k := range []string{"steps", "quadrature", "baseline", "sigma"} {
		if a.v.IsSet(k) {
			opts[k] = a.v.GetString(k)
		}
	}
	for _, kv := range a.v.GetStringSlice("option") {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || k == "" {
			return nil, usageErr("--option %q: expected key=value", kv)
		}
		opts[k] = v
	}
	return opts, nil
}

func (a *app) runRun(cmd *cobra.Command, _ []string) error {
	facts, err := a.factsFromFlags()
	if err != nil {
		return err
	}
	hook, layers, opts, err := a.scoring()
	if err != nil {
		return err
	}
	rules, err := a.rules()
	if err != nil {
		return err
	}
	workers := a.v.GetInt("workers")
	if workers < 1 {
		return usageErr("--workers %d: expected at least 1", workers)
	}
	h := a.host()
	defer h.Close()
	name := a.v.GetString("model")
	if _, err := framework.Find(h.Dirs, sdk.KindModel, name); err != nil {
		return err
	}
	ckpt, modelOpts, err := a.modelSpec(name)
	if err != nil {
		return err
	}
	cfg := framework.RunConfig{
		Model: name, Checkpoint: ckpt, ModelOptions: modelOpts,
		Attributor: a.v.GetString("attributor"), AttributorOptions: opts,
		Layers: layers, Hook: hook, Rules: rules, AdaptiveP: a.v.GetBool("adaptive-p"),
		Workers: workers, FailFast: a.v.GetBool("fail-fast"),
		Out: a.v.GetString("out"), Resume: a.v.GetBool("resume"),
	}
	jsonOut := a.v.GetBool("json")
	prog := newProgress(a.errOut, a.v.GetBool("quiet"), "facts")
	cfg.Progress = &runReport{progress: prog, a: a, json: jsonOut}
	sum, err := h.Run(cmd.Context(), cfg, facts)
	if sum != nil && !jsonOut {
		a.printRunSummary(sum, cfg.Out)
	}
	if err != nil {
		return err
	}
	if len(sum.Failed) > 0 {
		return fmt.Errorf("%d of %d facts failed (first: %s: %s)", len(sum.Failed), sum.Facts, sum.Failed[0].ID, sum.Failed[0].Err)
	}
	return nil
}

// factsFromFlags reads --facts, or makes one fact of --prompt and --target.
func (a *app) factsFromFlags() ([]framework.Fact, error) {
	path := a.v.GetString("facts")
	prompts := a.v.GetStringSlice("prompt")
	switch {
	case path != "" && len(prompts) > 0:
		return nil, usageErr("give --facts or --prompt, not both")
	case path != "":
		facts, err := framework.ReadFacts(path)
		if err != nil {
			return nil, err
		}
		if n := a.v.GetInt("sample"); n > 0 {
			facts = framework.SampleFacts(facts, n, uint64(a.v.GetInt64("seed")))
		}
		return facts, nil
	case len(prompts) == 0:
		return nil, usageErr("--prompt (repeatable) with --target, or --facts FILE: required")
	}
	f := framework.Fact{ID: a.v.GetString("id"), Relation: a.v.GetString("relation"), Target: a.v.GetString("target"), Prompts: prompts}
	if f.Target == "" {
		return nil, usageErr("--target: required with --prompt")
	}
	if _, err := f.Queries(); err != nil {
		return nil, err
	}
	return []framework.Fact{f}, nil
}

// runReport prints each finished fact (as JSON with --json) and drives the
// progress display.
type runReport struct {
	progress *progress
	a        *app
	json     bool
	// silent prints no per-fact output (callers that report otherwise).
	silent bool
}

func (r *runReport) Start(total, skipped int) {
	r.progress.start(total, skipped)
}

func (r *runReport) FactDone(res *framework.FactResult, err error, id string) {
	if err != nil {
		if r.progress.bar != nil {
			r.progress.logf("fact %s failed: %v", id, err)
		}
		r.progress.step(fmt.Sprintf("fact %s failed: %v", id, err))
		return
	}
	if res == nil {
		r.progress.step("fact " + id + " done")
		return
	}
	if r.silent {
		// nothing: the caller reports
	} else if r.json {
		b, _ := json.Marshal(res)
		fmt.Fprintln(r.a.out, string(b))
	} else {
		r.progress.clear()
		r.a.printFact(res)
	}
	r.progress.step(fmt.Sprintf("fact %s: %d knowledge neurons, %.2fs", id, len(res.Neurons), res.Seconds))
}

func (r *runReport) Finish() { r.progress.finish() }

func (a *app) printFact(r *framework.FactResult) {
	fmt.Fprintf(a.out, "\nfact %s", r.ID)
	if r.Relation != "" {
		fmt.Fprintf(a.out, " (%s)", r.Relation)
	}
	fmt.Fprintf(a.out, ": target %q, %d prompts, P(target) %.4g, %.2fs (%s)\n", r.Target, len(r.Prompts), r.AnswerProb, r.Seconds, r.Method)
	if len(r.Neurons) == 0 {
		fmt.Fprintf(a.out, "  no knowledge neurons at p = %.2f (coarse per prompt: %s)\n", r.P, coarseCounts(r.Coarse))
		return
	}
	tw := tabwriter.NewWriter(a.out, 0, 4, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "  layer\tindex\tmean score\tprompts\t")
	for i, n := range r.Neurons {
		fmt.Fprintf(tw, "  %d\t%d\t%.4g\t%d/%d\t\n", n.Layer(), n.Index(), r.NeuronScores[i], r.NeuronCounts[i], len(r.Prompts))
	}
	tw.Flush()
}

func coarseCounts(c [][]framework.Neuron) string {
	parts := make([]string, len(c))
	for i, x := range c {
		parts[i] = fmt.Sprint(len(x))
	}
	return strings.Join(parts, ", ")
}

func (a *app) printRunSummary(sum *framework.Summary, out string) {
	var neurons, secs float64
	for _, r := range sum.Results {
		neurons += float64(len(r.Neurons))
		secs += r.Seconds
	}
	fmt.Fprintf(a.out, "\n%d facts: %d done", sum.Facts, sum.Done)
	if sum.Skipped > 0 {
		fmt.Fprintf(a.out, ", %d already in %s", sum.Skipped, out)
	}
	if len(sum.Failed) > 0 {
		fmt.Fprintf(a.out, ", %d failed", len(sum.Failed))
	}
	if n := len(sum.Results); n > 0 {
		fmt.Fprintf(a.out, "; %.2f knowledge neurons and %.2fs per fact", neurons/float64(n), secs/float64(n))
	}
	fmt.Fprintf(a.out, " (%.1fs in all)\n", sum.Seconds)
	for _, f := range sum.Failed {
		fmt.Fprintf(a.out, "  failed %s: %s\n", f.ID, f.Err)
	}
	byRel := map[string][][]framework.Neuron{}
	for _, r := range sum.Results {
		if r.Relation != "" {
			byRel[r.Relation] = append(byRel[r.Relation], r.Neurons)
		}
	}
	rels := make([]string, 0, len(byRel))
	for rel, facts := range byRel {
		if len(facts) > 1 {
			rels = append(rels, rel)
		}
	}
	sort.Strings(rels)
	for _, rel := range rels {
		ns, counts := framework.RelationNeurons(byRel[rel])
		parts := make([]string, 0, len(ns))
		for i, n := range ns {
			if i == 10 {
				parts = append(parts, fmt.Sprintf("… %d more", len(ns)-10))
				break
			}
			parts = append(parts, fmt.Sprintf("%s (%d)", n, counts[i]))
		}
		if len(parts) == 0 {
			parts = []string{"none"}
		}
		fmt.Fprintf(a.out, "relation %s, %d facts: relation neurons %s\n", rel, len(byRel[rel]), strings.Join(parts, ", "))
	}
}
