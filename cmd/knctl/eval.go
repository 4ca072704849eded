package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/knctl/knctl/framework"
	"github.com/knctl/knctl/internal/atomicfile"
	"github.com/knctl/knctl/sdk"
)

func (a *app) evalCmd() *cobra.Command {
	c := &cobra.Command{
		Use:   "eval",
		Short: "Measure suppression, amplification, updates and erasure through knowledge neurons",
		Long: `Evaluate knowledge neurons (--neurons, a knctl run result) on the facts of
--facts, with the paper's metrics and a random-neuron control (same count, same
layers) for every effect:

  suppress / amplify: change of the answer probability on the fact's prompts
    and on --others facts of other relations, as ratio of means and mean of
    ratios, and top-1 accuracy before and after;
  update: each fact's answer moved to a new one (--counterfactuals FILE, lines
    {"id", "target_new"}; default: another answer of the same relation) by its
    neurons' value slots (--rule, --l1, --l2): success rate (new answer top-1),
    change rate (old answer no longer top-1), rank and MRR of the new answer,
    perplexity and accuracy change on --probe facts of the same and of other
    relations, and ROME-style efficacy, paraphrase, specificity and their
    harmonic mean;
  erase: each relation's --erase-top most frequent knowledge neurons set to
    --to (zero or unk): accuracy and perplexity on that relation vs the others.
Every edit is undone before the next.`,
		Args: cobra.NoArgs,
		RunE: a.runEval,
	}
	modelFlags(c)
	c.Flags().String("facts", "", "JSONL facts file")
	c.Flags().String("neurons", "", "knctl run result file (JSONL)")
	c.Flags().String("counterfactuals", "", "JSONL file of {\"id\", \"target_new\"} (default: another answer of the same relation)")
	c.Flags().Int("others", 5, "facts of other relations probed per suppressed/amplified fact")
	c.Flags().Int("probe", 5, "facts of the same and of other relations probed per update")
	c.Flags().String("rule", "dai", "update rule: dai or eleutherai")
	c.Flags().Float64("l1", 1, "λ1 of the dai rule")
	c.Flags().Float64("l2", 8, "λ2 of the dai rule")
	c.Flags().Int("erase-top", 5, "neurons per relation to erase (0: skip erasure)")
	c.Flags().String("to", "zero", "erase to zero or unk")
	c.Flags().String("hook", "post", "post or pre (activation interventions)")
	c.Flags().Int64("seed", 1, "seed of the probes and the random control")
	c.Flags().String("out", "", "write the JSON report to this file")
	return c
}

// evalReport is knctl eval's result.
type evalReport struct {
	Facts         int                      `json:"facts"`
	WithNeurons   int                      `json:"facts_with_neurons"`
	Suppress      framework.EffectReport   `json:"suppress"`
	Amplify       framework.EffectReport   `json:"amplify"`
	Update        framework.UpdateMetrics  `json:"update"`
	UpdateRandom  framework.UpdateMetrics  `json:"update_random_neurons"`
	Erase         []framework.EraseMetrics `json:"erase,omitempty"`
	EraseRandom   []framework.EraseMetrics `json:"erase_random_neurons,omitempty"`
	UpdateRule    string                   `json:"update_rule"`
	EraseTo       string                   `json:"erase_to,omitempty"`
	NeuronsSource string                   `json:"neurons_file"`
}

func (a *app) runEval(cmd *cobra.Command, _ []string) error {
	ctx := cmd.Context()
	factsPath, neuronsPath := a.v.GetString("facts"), a.v.GetString("neurons")
	if factsPath == "" || neuronsPath == "" {
		return usageErr("--facts and --neurons: required")
	}
	facts, err := framework.ReadFacts(factsPath)
	if err != nil {
		return err
	}
	results, _, err := framework.ReadResults(neuronsPath)
	if err != nil {
		return sdk.InvalidInputf("--neurons: %w", err)
	}
	neurons := map[string][]framework.Neuron{}
	for _, r := range results {
		neurons[r.ID] = r.Neurons
	}
	hook, err := sdk.ParseHook(a.v.GetString("hook"))
	if err != nil {
		return err
	}
	rule := framework.UpdateRule(a.v.GetString("rule"))
	if rule != framework.RuleDai && rule != framework.RuleEleutherAI {
		return sdk.InvalidInputf("--rule %q: expected dai or eleutherai", rule)
	}
	seed := uint64(a.v.GetInt64("seed"))
	cfs, err := counterfactuals(facts, a.v.GetString("counterfactuals"), seed)
	if err != nil {
		return err
	}
	h := a.host()
	defer h.Close()
	m, err := a.openModel(cmd, h)
	if err != nil {
		return err
	}
	width := m.ModelInfo.FFNWidth
	for id, ns := range neurons {
		for _, n := range ns {
			if n.Layer() >= m.ModelInfo.Layers || n.Index() >= width {
				return sdk.InvalidInputf("--neurons: fact %s has neuron %s outside the model (layers 0..%d, neurons 0..%d)", id, n, m.ModelInfo.Layers-1, width-1)
			}
		}
	}
	rep := evalReport{Facts: len(facts), UpdateRule: string(rule), NeuronsSource: neuronsPath}
	for _, f := range facts {
		if len(neurons[f.ID]) > 0 {
			rep.WithNeurons++
		}
	}
	ecfg := framework.EffectConfig{Hook: hook, Op: sdk.OpSet, Value: 0, Others: a.v.GetInt("others"), Width: width, Seed: seed}
	if rep.Suppress, err = framework.Effect(ctx, m, facts, neurons, facts, ecfg); err != nil {
		return err
	}
	ecfg.Op, ecfg.Value = sdk.OpScale, 2
	if rep.Amplify, err = framework.Effect(ctx, m, facts, neurons, facts, ecfg); err != nil {
		return err
	}
	ucfg := framework.UpdateConfig{Rule: rule, L1: a.v.GetFloat64("l1"), L2: a.v.GetFloat64("l2"), Probe: a.v.GetInt("probe"), Seed: seed}
	if rep.Update, err = framework.EvaluateUpdates(ctx, m, cfs, neurons, facts, ucfg); err != nil {
		return err
	}
	if rep.UpdateRandom, err = framework.EvaluateUpdates(ctx, m, cfs, framework.RandomControl(neurons, width, seed), facts, ucfg); err != nil {
		return err
	}
	if k := a.v.GetInt("erase-top"); k > 0 {
		var vec []float32
		rep.EraseTo = a.v.GetString("to")
		switch rep.EraseTo {
		case "zero":
		case "unk":
			id, ok := m.ModelInfo.SpecialTokens["unk"]
			if !ok {
				return sdk.InvalidInputf("--to unk: the model has no [UNK] token; use --to zero")
			}
			rows, err := m.Embeddings(ctx, []int{id})
			if err != nil {
				return err
			}
			vec = rows[0]
		default:
			return sdk.InvalidInputf("--to %q: expected zero or unk", rep.EraseTo)
		}
		r := rand.New(rand.NewPCG(seed, 0x6572617365))
		seen := map[string]bool{}
		for _, f := range facts {
			if seen[f.Relation] {
				continue
			}
			seen[f.Relation] = true
			ns := framework.RelationTopNeurons(results, f.Relation, k)
			if len(ns) == 0 {
				continue
			}
			e, err := framework.EvaluateErase(ctx, m, f.Relation, ns, vec, facts)
			if err != nil {
				return err
			}
			rep.Erase = append(rep.Erase, e)
			e, err = framework.EvaluateErase(ctx, m, f.Relation, framework.RandomLike(r, ns, width), vec, facts)
			if err != nil {
				return err
			}
			rep.EraseRandom = append(rep.EraseRandom, e)
		}
	}
	if out := a.v.GetString("out"); out != "" {
		b, _ := json.MarshalIndent(rep, "", "  ")
		if err := atomicfile.WriteBytes(out, append(b, '\n')); err != nil {
			return err
		}
	}
	if a.v.GetBool("json") {
		return a.printJSON(rep)
	}
	a.printEval(rep)
	return nil
}

// counterfactuals reads path ({"id", "target_new"} lines) or, without it,
// gives each fact the answer of the next fact of its relation with a
// different answer, and two neighbors of its relation.
func counterfactuals(facts []framework.Fact, path string, seed uint64) ([]framework.Counterfactual, error) {
	byRel := map[string][]framework.Fact{}
	for _, f := range facts {
		byRel[f.Relation] = append(byRel[f.Relation], f)
	}
	newTarget := map[string]string{}
	if path != "" {
		file, err := os.Open(path)
		if err != nil {
			return nil, sdk.InvalidInputf("--counterfactuals: %w", err)
		}
		defer file.Close()
		sc := bufio.NewScanner(file)
		line := 0
		for sc.Scan() {
			line++
			if strings.TrimSpace(sc.Text()) == "" {
				continue
			}
			var cf struct {
				ID        string `json:"id"`
				TargetNew string `json:"target_new"`
			}
			if err := json.Unmarshal(sc.Bytes(), &cf); err != nil || cf.ID == "" || cf.TargetNew == "" {
				return nil, sdk.InvalidInputf("%s:%d: expected {\"id\", \"target_new\"}", path, line)
			}
			newTarget[cf.ID] = cf.TargetNew
		}
	}
	r := rand.New(rand.NewPCG(seed, 0x6366))
	var out []framework.Counterfactual
	for _, f := range facts {
		rel := byRel[f.Relation]
		cf := framework.Counterfactual{Fact: f, TargetNew: newTarget[f.ID]}
		if cf.TargetNew == "" && path == "" {
			for k := 1; k < len(rel); k++ {
				idx := 0
				for i, g := range rel {
					if g.ID == f.ID {
						idx = i
					}
				}
				if g := rel[(idx+k)%len(rel)]; g.Target != f.Target {
					cf.TargetNew = g.Target
					break
				}
			}
		}
		if cf.TargetNew == "" {
			continue
		}
		var nb []framework.Fact
		for _, g := range rel {
			if g.ID != f.ID && g.Target != cf.TargetNew {
				nb = append(nb, g)
			}
		}
		r.Shuffle(len(nb), func(i, j int) { nb[i], nb[j] = nb[j], nb[i] })
		cf.Neighbors = nb[:min(2, len(nb))]
		out = append(out, cf)
	}
	return out, nil
}

func (a *app) printEval(r evalReport) {
	fmt.Fprintf(a.out, "%d facts, %d with knowledge neurons (%s)\n\n", r.Facts, r.WithNeurons, r.NeuronsSource)
	tw := tabwriter.NewWriter(a.out, 0, 4, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "intervention\tprompts\tP before\tP after\tratio of means\tmean of ratios\ttop-1 before\ttop-1 after\t")
	row := func(name string, c framework.Change) {
		fmt.Fprintf(tw, "%s\t%d\t%.4f\t%.4f\t%+.1f%%\t%+.1f%%\t%.0f%%\t%.0f%%\t\n", name, c.N, c.MeanBefore, c.MeanAfter,
			100*c.RatioOfMeans, 100*c.MeanOfRatios, 100*c.CorrectBefore, 100*c.CorrectAfter)
	}
	for _, e := range []struct {
		name string
		rep  framework.EffectReport
	}{{"suppress", r.Suppress}, {"amplify", r.Amplify}} {
		row(e.name+": own fact", e.rep.Own)
		row(e.name+": other relations", e.rep.Others)
		row(e.name+": random neurons", e.rep.RandomOn)
	}
	tw.Flush()
	fmt.Fprintf(a.out, "\nupdate (%s rule)\n", r.UpdateRule)
	tw = tabwriter.NewWriter(a.out, 0, 4, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "neurons\tfacts\tsuccess\tchange\tnew rank\tnew MRR\tPPL same\tPPL other\tΔacc same\tΔacc other\tefficacy\tparaphrase\tspecificity\tscore\t")
	urow := func(name string, u framework.UpdateMetrics) {
		spec, score := "n/a", "n/a" // no neighbors: every other fact of the relation has the new answer
		if u.NeighborPrompts > 0 {
			spec, score = fmt.Sprintf("%.2f", u.Specificity), fmt.Sprintf("%.2f", u.Score)
		}
		fmt.Fprintf(tw, "%s\t%d\t%.0f%%\t%.0f%%\t%.1f→%.1f\t%.3f→%.3f\t%.2f→%.2f\t%.2f→%.2f\t%+.1f\t%+.1f\t%.2f\t%.2f\t%s\t%s\t\n",
			name, u.Facts, 100*u.SuccessRate, 100*u.ChangeRate, u.RankBefore, u.RankAfter, u.MRRBefore, u.MRRAfter,
			u.PPLSameBefore, u.PPLSameAfter, u.PPLOtherBefore, u.PPLOtherAfter, 100*u.AccuracySameDelta, 100*u.AccuracyOtherDelta,
			u.Efficacy, u.Paraphrase, spec, score)
	}
	urow("knowledge", r.Update)
	urow("random", r.UpdateRandom)
	tw.Flush()
	if len(r.Erase) > 0 {
		fmt.Fprintf(a.out, "\nerase (value slots to %s)\n", r.EraseTo)
		tw = tabwriter.NewWriter(a.out, 0, 4, 2, ' ', tabwriter.AlignRight)
		fmt.Fprintln(tw, "relation\tneurons\tacc relation\tacc others\tPPL relation\tPPL others\t")
		for i, e := range r.Erase {
			for _, x := range []struct {
				name string
				m    framework.EraseMetrics
			}{{"knowledge", e}, {"random", r.EraseRandom[i]}} {
				fmt.Fprintf(tw, "%s (%s)\t%d\t%.0f%%→%.0f%%\t%.0f%%→%.0f%%\t%.2f→%.2f\t%.2f→%.2f\t\n", e.Relation, x.name, len(x.m.Neurons),
					100*x.m.AccSameBefore, 100*x.m.AccSameAfter, 100*x.m.AccOtherBefore, 100*x.m.AccOtherAfter,
					x.m.PPLSameBefore, x.m.PPLSameAfter, x.m.PPLOtherBefore, x.m.PPLOtherAfter)
			}
		}
		tw.Flush()
	}
}
