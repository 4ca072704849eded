package main

import (
	"encoding/csv"
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/knctl/knctl/framework"
	"github.com/knctl/knctl/internal/atomicfile"
	"github.com/knctl/knctl/sdk"
)

func (a *app) compareCmd() *cobra.Command {
	c := &cobra.Command{
		Use:   "compare",
		Short: "Compare attribution methods and prompt budgets against a reference",
		Long: `Run every --method over the facts of --facts at every prompt budget
(--prompts-per-fact, taking a seeded random subset of each fact's prompts; smaller
budgets are subsets of larger ones, and each budget is a run of its own that
sees only its prompts) and report, per method and budget: knowledge neurons per
fact; precision, recall and Jaccard index against the reference (--reference
run on all of a fact's prompts); the suppression effect of the found neurons on
the fact itself and on facts of other relations, and of as many random neurons
of the same layers (the control, in --csv and --json; ratio of means, as knctl
factworld eval); and seconds per fact. A method is NAME or
NAME:key=value,... with the attributor's options (see knctl plugins), e.g.
"noisegrad:n=10,sigma=0.005,base.steps=20". Neurons come from the rules of
knctl run (--threshold, --p, --min-count; with one prompt the coarse neurons).`,
		Example: `  knctl compare --facts factworld/facts-gpt2.jsonl --sample 4 \
    --method ig --method noisegrad:n=10 --prompts-per-fact 1,2,4,8`,
		Args: cobra.NoArgs,
		RunE: a.runCompare,
	}
	modelFlags(c)
	c.Flags().String("facts", "", "JSONL facts file")
	c.Flags().Int("sample", 0, "facts per relation to use (0: all)")
	c.Flags().StringArray("method", []string{"ig"}, "attributor[:key=value,...] to compare (repeatable)")
	c.Flags().String("reference", "ig", "attributor[:key=value,...] whose neurons from all prompts are the reference")
	c.Flags().String("prompts-per-fact", "1,2,4,8", "prompt budgets")
	c.Flags().Int("others", 5, "facts of other relations probed per fact for the suppression effect (0: skip)")
	c.Flags().Int64("seed", 1, "seed of the prompt subsets and probes")
	c.Flags().String("out", "", "JSONL file of per-fact results (method, budget, id, neurons, reference)")
	c.Flags().String("csv", "", "CSV file of the table, for plotting")
	c.Flags().String("layers", "", "layers to attribute (default: all)")
	c.Flags().String("hook", "post", "post or pre")
	ruleFlags(c)
	return c
}

func (a *app) runCompare(cmd *cobra.Command, _ []string) error {
	path := a.v.GetString("facts")
	if path == "" {
		return usageErr("--facts: required")
	}
	facts, err := framework.ReadFacts(path)
	if err != nil {
		return err
	}
	if n := a.v.GetInt("sample"); n > 0 {
		facts = framework.SampleFacts(facts, n, uint64(a.v.GetInt64("seed")))
	}
	var methods []framework.Method
	for _, s := range a.v.GetStringSlice("method") {
		m, err := framework.ParseMethod(s)
		if err != nil {
			return err
		}
		methods = append(methods, m)
	}
	ref, err := framework.ParseMethod(a.v.GetString("reference"))
	if err != nil {
		return err
	}
	var budgets []int
	for _, s := range strings.Split(a.v.GetString("prompts-per-fact"), ",") {
		b, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil || b < 1 {
			return usageErr("--prompts-per-fact %q: expected positive integers like 1,2,4,8", a.v.GetString("prompts-per-fact"))
		}
		budgets = append(budgets, b)
	}
	hook, err := sdk.ParseHook(a.v.GetString("hook"))
	if err != nil {
		return err
	}
	layers, err := parseLayers(a.v.GetString("layers"))
	if err != nil {
		return err
	}
	rules, err := a.rules()
	if err != nil {
		return err
	}
	if a.v.GetBool("adaptive-p") {
		return usageErr("--adaptive-p: compare uses one p for every method and budget")
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
	prog := newProgress(a.errOut, a.v.GetBool("quiet"), "facts")
	res, err := h.Compare(cmd.Context(), framework.CompareConfig{
		Model: name, Checkpoint: ckpt, ModelOptions: modelOpts, Methods: methods, Reference: ref,
		Budgets: budgets, Rules: rules, Hook: hook, Layers: layers, Others: a.v.GetInt("others"),
		Seed: uint64(a.v.GetInt64("seed")), Progress: &runReport{progress: prog, a: a, silent: true},
	}, facts)
	if err != nil {
		return err
	}
	if out := a.v.GetString("out"); out != "" {
		if err := atomicfile.Write(out, func(w io.Writer) error {
			enc := json.NewEncoder(w)
			for _, f := range res.Facts {
				if err := enc.Encode(f); err != nil {
					return err
				}
			}
			return nil
		}); err != nil {
			return err
		}
	}
	if out := a.v.GetString("csv"); out != "" {
		if err := atomicfile.Write(out, func(w io.Writer) error { return writeCompareCSV(w, res.Rows) }); err != nil {
			return err
		}
	}
	if a.v.GetBool("json") {
		return a.printJSON(res.Rows)
	}
	fmt.Fprintf(a.out, "%d facts, reference %s on all prompts\n", len(facts), ref.Label)
	tw := tabwriter.NewWriter(a.out, 0, 4, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "method\tprompts\tneurons/fact\tprecision\trecall\tjaccard\tsuppress own\tsuppress others\ts/fact\t")
	for _, r := range res.Rows {
		fmt.Fprintf(tw, "%s\t%d\t%.2f\t%.2f\t%.2f\t%.2f\t%+.1f%%\t%+.1f%%\t%.2f\t\n", r.Method, r.Budget, r.NeuronsPerFact,
			r.Precision, r.Recall, r.Jaccard, 100*r.Suppress.Own.RatioOfMeans, 100*r.Suppress.Others.RatioOfMeans, r.SecondsPerFact)
	}
	return tw.Flush()
}

func writeCompareCSV(w io.Writer, rows []framework.CompareRow) error {
	cw := csv.NewWriter(w)
	_ = cw.Write([]string{"method", "prompts_per_fact", "facts", "neurons_per_fact", "precision", "recall", "jaccard",
		"suppress_own_ratio_of_means", "suppress_others_ratio_of_means", "suppress_random_ratio_of_means", "seconds_per_fact"})
	f := func(x float64) string { return strconv.FormatFloat(x, 'g', 6, 64) }
	for _, r := range rows {
		_ = cw.Write([]string{r.Method, strconv.Itoa(r.Budget), strconv.Itoa(r.Facts), f(r.NeuronsPerFact), f(r.Precision),
			f(r.Recall), f(r.Jaccard), f(r.Suppress.Own.RatioOfMeans), f(r.Suppress.Others.RatioOfMeans), f(r.Suppress.RandomOn.RatioOfMeans), f(r.SecondsPerFact)})
	}
	cw.Flush()
	return cw.Error()
}
