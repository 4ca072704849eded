package main

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/knctl/knctl/framework"
	"github.com/knctl/knctl/sdk"
)

func (a *app) editCmd() *cobra.Command {
	c := &cobra.Command{
		Use:   "edit",
		Short: "Suppress, amplify, erase or update a fact through its knowledge neurons",
		Long: `Control a fact through its knowledge neurons and show, before and after, the
answer's probability and the top prediction on the fact's prompts and on facts
of other relations.

Neurons are given as --neuron LAYER:INDEX (repeatable) or taken from a knctl run
result (--from results.jsonl --fact ID, whose prompts and target are used);
--relation R takes the --top most frequent knowledge neurons of relation R's
facts in --from. Unrelated facts come from --from (other relations) or
--facts FILE.

suppress, amplify and scale change activations at the target position during
inference only (x0, x2, x--factor). erase and update change the FFN value slots
(the second linear layer's weights for those neurons); --save DIR then writes
the edited model as a HuggingFace checkpoint.`,
	}
	for _, sub := range []struct {
		name, short string
	}{
		{"suppress", "Set the neurons' activations to 0 at the target position"},
		{"amplify", "Double the neurons' activations at the target position"},
		{"scale", "Multiply the neurons' activations by --factor at the target position"},
		{"erase", "Set the neurons' value slots to zero, or to the [UNK] or a token's embedding (--to)"},
		{"update", "Move the neurons' value slots from the old answer's embedding to --target-new's"},
	} {
		sc := &cobra.Command{Use: sub.name, Short: sub.short, Args: cobra.NoArgs, RunE: a.runEdit}
		modelFlags(sc)
		sc.Flags().StringArray("neuron", nil, "a neuron LAYER:INDEX (repeatable)")
		sc.Flags().String("from", "", "knctl run result file (JSONL) to take neurons, prompts and targets from")
		sc.Flags().String("fact", "", "the fact id in --from")
		sc.Flags().String("relation", "", "use the most frequent knowledge neurons of this relation's facts in --from")
		sc.Flags().Int("top", 5, "with --relation: how many of its neurons")
		sc.Flags().StringArray("prompt", nil, "prompts to show (default: the fact's)")
		sc.Flags().String("target", "", "the answer to measure (default: the fact's)")
		sc.Flags().String("facts", "", "JSONL facts file to draw unrelated facts from")
		sc.Flags().Int("others", 3, "unrelated facts to show")
		sc.Flags().String("hook", "post", "post or pre (activation interventions)")
		sc.Flags().Int64("seed", 1, "seed for picking unrelated facts")
		switch sub.name {
		case "scale":
			sc.Flags().Float64("factor", 2, "multiplier of the activations")
		case "erase":
			sc.Flags().String("to", "zero", "zero, unk (the [UNK] embedding) or a token's text whose embedding to use")
			sc.Flags().String("save", "", "write the edited model to this directory")
		case "update":
			sc.Flags().String("target-new", "", "the new answer (one token)")
			sc.Flags().String("rule", "dai", "dai (v - l1·|v|/|e_old|·e_old + l2·|v|/|e_new|·e_new) or eleutherai (v - 2·e_old + 2·e_new)")
			sc.Flags().Float64("l1", 1, "λ1 of the dai rule")
			sc.Flags().Float64("l2", 8, "λ2 of the dai rule")
			sc.Flags().String("save", "", "write the edited model to this directory")
		}
		c.AddCommand(sc)
	}
	return c
}

// editTarget is what an edit acts on and is measured on.
type editTarget struct {
	neurons []framework.Neuron
	fact    framework.Fact
	others  []framework.Fact
}

func parseNeuron(s string) (framework.Neuron, error) {
	l, i, ok := strings.Cut(s, ":")
	layer, err1 := strconv.Atoi(l)
	index, err2 := strconv.Atoi(i)
	if !ok || err1 != nil || err2 != nil || layer < 0 || index < 0 {
		return framework.Neuron{}, sdk.InvalidInputf("--neuron %q: expected LAYER:INDEX, e.g. 3:1027", s)
	}
	return framework.Neuron{layer, index}, nil
}

func (a *app) editTarget() (*editTarget, error) {
	t := &editTarget{}
	for _, s := range a.v.GetStringSlice("neuron") {
		n, err := parseNeuron(s)
		if err != nil {
			return nil, err
		}
		t.neurons = append(t.neurons, n)
	}
	var results []*framework.FactResult
	if from := a.v.GetString("from"); from != "" {
		var err error
		if results, _, err = framework.ReadResults(from); err != nil {
			return nil, sdk.InvalidInputf("--from: %w", err)
		}
	}
	id, rel := a.v.GetString("fact"), a.v.GetString("relation")
	switch {
	case id != "":
		if results == nil {
			return nil, usageErr("--fact needs --from")
		}
		var found *framework.FactResult
		for _, r := range results {
			if r.ID == id {
				found = r
			}
		}
		if found == nil {
			return nil, sdk.InvalidInputf("--fact %q: not in %s", id, a.v.GetString("from"))
		}
		t.fact = framework.Fact{ID: found.ID, Relation: found.Relation, Target: found.Target, Prompts: found.Prompts}
		if len(t.neurons) == 0 {
			t.neurons = found.Neurons
		}
	case rel != "":
		if results == nil {
			return nil, usageErr("--relation needs --from")
		}
		t.neurons = framework.RelationTopNeurons(results, rel, a.v.GetInt("top"))
		for _, r := range results {
			if r.Relation == rel {
				t.fact = framework.Fact{ID: r.ID, Relation: r.Relation, Target: r.Target, Prompts: r.Prompts}
				break
			}
		}
	}
	if p := a.v.GetStringSlice("prompt"); len(p) > 0 {
		t.fact.Prompts = p
	}
	if tg := a.v.GetString("target"); tg != "" {
		t.fact.Target = tg
	}
	if len(t.neurons) == 0 {
		return nil, usageErr("no neurons: give --neuron LAYER:INDEX, or --from with --fact or --relation (whose facts have knowledge neurons)")
	}
	if len(t.fact.Prompts) == 0 || t.fact.Target == "" {
		return nil, usageErr("nothing to measure: give --prompt and --target, or --from with --fact")
	}
	var pool []framework.Fact
	for _, r := range results {
		pool = append(pool, framework.Fact{ID: r.ID, Relation: r.Relation, Target: r.Target, Prompts: r.Prompts})
	}
	if path := a.v.GetString("facts"); path != "" {
		facts, err := framework.ReadFacts(path)
		if err != nil {
			return nil, err
		}
		pool = append(pool, facts...)
	}
	var others []framework.Fact
	for _, f := range pool {
		if f.ID != t.fact.ID && (t.fact.Relation == "" || f.Relation != t.fact.Relation) {
			others = append(others, f)
		}
	}
	byRel := framework.SampleFacts(others, len(others), uint64(a.v.GetInt64("seed")))
	t.others = byRel[:min(a.v.GetInt("others"), len(byRel))]
	return t, nil
}

// editRow is one prompt measured before and after.
type editRow struct {
	Fact   string  `json:"fact"`
	Own    bool    `json:"own"`
	Prompt string  `json:"prompt"`
	Target string  `json:"target"`
	Before float64 `json:"prob_before"`
	After  float64 `json:"prob_after"`
	TopB   string  `json:"top_before"`
	TopA   string  `json:"top_after"`
}

func (a *app) runEdit(cmd *cobra.Command, _ []string) error {
	ctx := cmd.Context()
	op := cmd.Name()
	t, err := a.editTarget()
	if err != nil {
		return err
	}
	hook, err := sdk.ParseHook(a.v.GetString("hook"))
	if err != nil {
		return err
	}
	h := a.host()
	defer h.Close()
	m, err := a.openModel(cmd, h)
	if err != nil {
		return err
	}
	for _, n := range t.neurons {
		if n.Layer() >= m.ModelInfo.Layers || n.Index() >= m.ModelInfo.FFNWidth {
			return sdk.InvalidInputf("neuron %s: out of range; the model has layers 0..%d and neurons 0..%d", n, m.ModelInfo.Layers-1, m.ModelInfo.FFNWidth-1)
		}
	}
	var ivs []sdk.Intervention
	var describe string
	switch op {
	case "suppress":
		ivs, describe = framework.Interventions(t.neurons, hook, sdk.OpSet, 0), "activations x0"
	case "amplify":
		ivs, describe = framework.Interventions(t.neurons, hook, sdk.OpScale, 2), "activations x2"
	case "scale":
		f := a.v.GetFloat64("factor")
		ivs, describe = framework.Interventions(t.neurons, hook, sdk.OpScale, float32(f)), fmt.Sprintf("activations x%g", f)
	}
	var prompts []editRow
	add := func(f framework.Fact, own bool) error {
		ps, err := f.Queries()
		if err != nil {
			return err
		}
		for _, p := range ps {
			prompts = append(prompts, editRow{Fact: f.ID, Own: own, Prompt: p, Target: f.Target})
		}
		return nil
	}
	if err := add(t.fact, true); err != nil {
		return err
	}
	if op == "update" {
		newT := a.v.GetString("target-new")
		if newT == "" {
			return usageErr("--target-new: required")
		}
		// Measure the new answer on the fact's prompts too.
		if err := add(framework.Fact{ID: t.fact.ID, Target: newT, Prompts: t.fact.Prompts}, true); err != nil {
			return err
		}
	}
	for _, f := range t.others {
		if err := add(f, false); err != nil {
			return err
		}
	}
	measure := func(after bool, ivs []sdk.Intervention) error {
		for i := range prompts {
			p, err := m.Predict(ctx, sdk.PredictRequest{Query: sdk.Query{Prompt: prompts[i].Prompt, Answer: prompts[i].Target}, TopK: 1, Interventions: ivs})
			if err != nil {
				return err
			}
			if after {
				prompts[i].After, prompts[i].TopA = p.AnswerProb, p.Top[0].Token
			} else {
				prompts[i].Before, prompts[i].TopB = p.AnswerProb, p.Top[0].Token
			}
		}
		return nil
	}
	if err := measure(false, nil); err != nil {
		return err
	}
	switch op {
	case "erase", "update":
		if describe, err = a.surgery(ctx, m, op, t); err != nil {
			return err
		}
		if err := measure(true, nil); err != nil {
			return err
		}
		if dir := a.v.GetString("save"); dir != "" {
			if err := m.Save(ctx, dir); err != nil {
				return fmt.Errorf("save the edited model: %w", err)
			}
			defer fmt.Fprintf(a.errOut, "saved the edited model to %s\n", dir)
		}
	default:
		if err := measure(true, ivs); err != nil {
			return err
		}
	}
	if a.v.GetBool("json") {
		return a.printJSON(struct {
			Op      string             `json:"op"`
			Edit    string             `json:"edit"`
			Neurons []framework.Neuron `json:"neurons"`
			Prompts []editRow          `json:"prompts"`
		}{op, describe, t.neurons, prompts})
	}
	fmt.Fprintf(a.out, "%s %d neurons (%s): %v\n", op, len(t.neurons), describe, t.neurons)
	tw := tabwriter.NewWriter(a.out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "fact\tprompt\ttarget\tP before\tP after\tchange\ttop before\ttop after")
	for _, r := range prompts {
		name := r.Fact
		if !r.Own {
			name += " (other)"
		}
		change := 0.0
		if r.Before > 0 {
			change = (r.After - r.Before) / r.Before
		}
		fmt.Fprintf(tw, "%s\t%q\t%q\t%.4g\t%.4g\t%+.1f%%\t%q\t%q\n", name, r.Prompt, r.Target, r.Before, r.After, 100*change, r.TopB, r.TopA)
	}
	return tw.Flush()
}

// surgery applies erase or update to the model's value slots.
func (a *app) surgery(ctx context.Context, m *framework.ModelInstance, op string, t *editTarget) (string, error) {
	if op == "erase" {
		to := a.v.GetString("to")
		var vec []float32
		switch to {
		case "zero", "":
			to = "zero"
		case "unk":
			id, ok := m.ModelInfo.SpecialTokens["unk"]
			if !ok {
				return "", sdk.InvalidInputf("--to unk: the model has no [UNK] token; use --to zero or --to TOKEN")
			}
			rows, err := m.Embeddings(ctx, []int{id})
			if err != nil {
				return "", err
			}
			vec = rows[0]
		default:
			var err error
			if vec, err = framework.Embedding(ctx, m, to); err != nil {
				return "", fmt.Errorf("--to: %w", err)
			}
		}
		_, err := framework.Erase(ctx, m, t.neurons, vec)
		return "value slots set to " + to, err
	}
	newT := a.v.GetString("target-new")
	eOld, err := framework.Embedding(ctx, m, t.fact.Target)
	if err != nil {
		return "", fmt.Errorf("old answer: %w", err)
	}
	eNew, err := framework.Embedding(ctx, m, newT)
	if err != nil {
		return "", fmt.Errorf("--target-new: %w", err)
	}
	rule := framework.UpdateRule(a.v.GetString("rule"))
	_, err = framework.Update(ctx, m, t.neurons, eOld, eNew, rule, a.v.GetFloat64("l1"), a.v.GetFloat64("l2"))
	return fmt.Sprintf("value slots moved from %q to %q (%s rule)", t.fact.Target, newT, rule), err
}
