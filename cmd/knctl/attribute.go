package main

import (
	"fmt"
	"sort"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/knctl/knctl/sdk"
)

func (a *app) attributeCmd() *cobra.Command {
	c := &cobra.Command{
		Use:   "attribute",
		Short: "Score every FFN neuron for one prompt and target",
		Long: `Run the attributor on one prompt and print its scores: with --json the whole
table (scores[layer][neuron] for the attributed layers) and the diagnostics,
else the --top highest-scoring neurons and, per layer, the integrated-gradients
completeness error sum(scores) - (P(w) - P(baseline)).`,
		Example: `  knctl attribute --model gpt2 --checkpoint testdata/gpt2-tiny --prompt "The capital of France is" --target " Paris"`,
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			prompt, target := a.v.GetString("prompt"), a.v.GetString("target")
			if prompt == "" || target == "" {
				return usageErr("--prompt and --target: required")
			}
			hook, err := sdk.ParseHook(a.v.GetString("hook"))
			if err != nil {
				return err
			}
			layers, err := parseLayers(a.v.GetString("layers"))
			if err != nil {
				return err
			}
			opts, err := a.attributorOptions()
			if err != nil {
				return err
			}
			top := a.v.GetInt("top")
			if top < 0 {
				return usageErr("--top %d: expected >= 0", top)
			}
			h := a.host()
			defer h.Close()
			m, err := a.openModel(cmd, h)
			if err != nil {
				return err
			}
			at, err := h.OpenAttributor(cmd.Context(), a.v.GetString("attributor"))
			if err != nil {
				return err
			}
			res, err := at.Attribute(cmd.Context(), m, sdk.AttributionQuery{Query: sdk.Query{Prompt: prompt, Answer: target}, Layers: layers, Hook: hook},
				sdk.Options{Values: opts, Peers: h.NewPeers(m)})
			if err != nil {
				return err
			}
			if a.v.GetBool("json") {
				return a.printJSON(struct {
					Prompt string `json:"prompt"`
					Target string `json:"target"`
					Hook   string `json:"hook"`
					*sdk.Attribution
				}{prompt, target, string(hook), res})
			}
			a.printAttribution(res, top)
			return nil
		},
	}
	modelFlags(c)
	c.Flags().String("attributor", "ig", "attributor plugin (knctl-attributor-NAME)")
	c.Flags().String("prompt", "", "the prompt")
	c.Flags().String("target", "", "the answer, e.g. \" Paris\"")
	c.Flags().Int("top", 20, "how many top neurons to list")
	attributionFlags(c)
	return c
}

func (a *app) printAttribution(res *sdk.Attribution, top int) {
	type entry struct {
		layer, index int
		score        float32
	}
	var all []entry
	for li, l := range res.Layers {
		for i, s := range res.Scores[li] {
			all = append(all, entry{l, i, s})
		}
	}
	sort.Slice(all, func(i, j int) bool { return all[i].score > all[j].score })
	if top > len(all) {
		top = len(all)
	}
	fmt.Fprintf(a.out, "%s: %d passes, %.2fs (model %.2fs)\n", res.Method, res.Passes, res.Seconds, res.ModelSeconds)
	tw := tabwriter.NewWriter(a.out, 0, 4, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "rank\tlayer\tindex\tscore\t")
	for i, e := range all[:top] {
		fmt.Fprintf(tw, "%d\t%d\t%d\t%.4g\t\n", i+1, e.layer, e.index, e.score)
	}
	tw.Flush()
	if len(res.LayerDiagnostics) > 0 {
		fmt.Fprintln(a.out)
		tw = tabwriter.NewWriter(a.out, 0, 4, 2, ' ', tabwriter.AlignRight)
		fmt.Fprintln(tw, "layer\tP(w)\tP(baseline)\tsum(scores)\tcompleteness error\t")
		for _, d := range res.LayerDiagnostics {
			fmt.Fprintf(tw, "%d\t%.4g\t%.4g\t%.4g\t%.2e\t\n", d.Layer, d.ProbFull, d.ProbBaseline, d.ScoreSum, d.CompletenessError)
		}
		tw.Flush()
	}
}
