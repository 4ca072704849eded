package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/knctl/knctl/sdk"
)

func (a *app) activationsCmd() *cobra.Command {
	c := &cobra.Command{
		Use:   "activations",
		Short: "Print FFN neuron activations at the target position",
		Long: `Print each layer's FFN intermediate activations at the target position
(GPT-2: the last prompt token; BERT: the [MASK]). --hook post (default) gives
the activation function's output, the neurons of Dai et al. (2022); --hook pre
gives the first FFN linear layer's output, as the EleutherAI library hooks
GPT-2.`,
		Example: `  knctl activations --model gpt2 --checkpoint testdata/gpt2-tiny --prompt "The capital of France is" --json`,
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			prompt := a.v.GetString("prompt")
			if prompt == "" {
				return usageErr("--prompt: required")
			}
			hook, err := sdk.ParseHook(a.v.GetString("hook"))
			if err != nil {
				return err
			}
			layers, err := parseLayers(a.v.GetString("layers"))
			if err != nil {
				return err
			}
			h := a.host()
			defer h.Close()
			m, err := a.openModel(cmd, h)
			if err != nil {
				return err
			}
			act, err := m.Activations(cmd.Context(), sdk.ActivationsRequest{Query: sdk.Query{Prompt: prompt}, Layers: layers, Hook: hook})
			if err != nil {
				return err
			}
			rows := make([][]float32, len(act.Values))
			for i, v := range act.Values {
				rows[i] = v[0]
				for _, p := range v[1:] {
					rows[i] = append(rows[i], p...)
				}
			}
			if a.v.GetBool("json") {
				return a.printJSON(struct {
					Hook      sdk.Hook    `json:"hook"`
					LayerIDs  []int       `json:"layer_ids"`
					Positions []int       `json:"positions"`
					Layers    [][]float32 `json:"layers"`
				}{act.Hook, act.Layers, act.Positions, rows})
			}
			fmt.Fprintf(a.out, "hook %s, position %v, %d neurons per layer\n", act.Hook, act.Positions, len(rows[0]))
			for i, r := range rows {
				top, idx := maxAbs(r)
				fmt.Fprintf(a.out, "layer %2d: mean %+.4f  max |a| %.4f at neuron %d\n", act.Layers[i], mean(r), top, idx)
			}
			return nil
		},
	}
	modelFlags(c)
	c.Flags().String("prompt", "", "the prompt")
	c.Flags().String("hook", "post", "which FFN value is a neuron: post (activation output) or pre (first linear output)")
	c.Flags().String("layers", "", "layers to report, e.g. 0,3,8-11 (default: all)")
	return c
}

func mean(v []float32) float64 {
	var s float64
	for _, x := range v {
		s += float64(x)
	}
	return s / float64(len(v))
}

func maxAbs(v []float32) (float64, int) {
	best, idx := -1.0, 0
	for i, x := range v {
		if a := float64(x); a > best || -a > best {
			if a < 0 {
				a = -a
			}
			best, idx = a, i
		}
	}
	return best, idx
}
