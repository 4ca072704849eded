package main

import (
	"fmt"
	"strings"

	"github.com/spf13/cobra"

	"github.com/knctl/knctl/sdk"
)

func (a *app) predictCmd() *cobra.Command {
	c := &cobra.Command{
		Use:   "predict",
		Short: "Show the model's next-token prediction for a prompt",
		Long: `Run the model once on --prompt and print the top-k next tokens at the target
position (GPT-2: the last prompt token; BERT: the [MASK]) and, with --target,
the target's probability. A target of several tokens is teacher-forced; its
probability is the product of its tokens' probabilities.`,
		Example: `  knctl predict --model gpt2 --checkpoint testdata/gpt2-tiny --prompt "The capital of France is" --target " Paris"`,
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			prompt := a.v.GetString("prompt")
			if prompt == "" {
				return usageErr("--prompt: required")
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
			p, err := m.Predict(cmd.Context(), sdk.PredictRequest{Query: sdk.Query{Prompt: prompt, Answer: a.v.GetString("target")}, TopK: top})
			if err != nil {
				return err
			}
			return a.printPrediction(p, a.v.GetString("target"))
		},
	}
	modelFlags(c)
	c.Flags().String("prompt", "", "the prompt")
	c.Flags().String("target", "", "the answer whose probability to report, e.g. \" Paris\" (GPT-2 tokens carry their leading space)")
	c.Flags().Int("top", 10, "how many top tokens to list")
	return c
}

// predictOutput is predict's JSON, a contract other tools read.
type predictOutput struct {
	Tokens          []string        `json:"tokens"`
	InputIDs        []int           `json:"input_ids"`
	TargetPositions []int           `json:"target_positions"`
	TargetIDs       []int           `json:"target_ids,omitempty"`
	TargetTokens    []string        `json:"target_tokens,omitempty"`
	TargetTokenProb []float64       `json:"target_token_probs,omitempty"`
	TargetProb      *float64        `json:"target_prob,omitempty"`
	TargetRank      *int            `json:"target_rank,omitempty"`
	Top             []sdk.TokenProb `json:"top"`
}

func (a *app) printPrediction(p sdk.Prediction, target string) error {
	out := predictOutput{
		Tokens: p.Tokens, InputIDs: p.InputIDs, TargetPositions: p.TargetPositions,
		TargetIDs: p.AnswerIDs, TargetTokens: p.AnswerTokens, TargetTokenProb: p.AnswerTokenProb, Top: p.Top,
	}
	if len(p.AnswerIDs) > 0 {
		out.TargetProb, out.TargetRank = &p.AnswerProb, &p.AnswerRank
	}
	if out.Top == nil {
		out.Top = []sdk.TokenProb{}
	}
	if a.v.GetBool("json") {
		return a.printJSON(out)
	}
	fmt.Fprintf(a.out, "tokens: %s\n", strings.Join(quoteAll(p.Tokens), " "))
	if len(p.AnswerIDs) > 0 {
		fmt.Fprintf(a.out, "target %q (tokens %s): p = %.6g, first token ranked %d\n", target, strings.Join(quoteAll(p.AnswerTokens), " "), p.AnswerProb, p.AnswerRank+1)
		if len(p.AnswerIDs) > 1 {
			for i, t := range p.AnswerTokens {
				fmt.Fprintf(a.out, "  %q: %.6g\n", t, p.AnswerTokenProb[i])
			}
		}
	}
	if len(p.Top) > 0 {
		fmt.Fprintf(a.out, "top %d at position %d:\n", len(p.Top), p.TargetPositions[0])
		for i, t := range p.Top {
			fmt.Fprintf(a.out, "%4d. %-20q %.6f  (id %d)\n", i+1, t.Token, t.Prob, t.ID)
		}
	}
	return nil
}

func quoteAll(ss []string) []string {
	out := make([]string, len(ss))
	for i, s := range ss {
		out[i] = fmt.Sprintf("%q", s)
	}
	return out
}
