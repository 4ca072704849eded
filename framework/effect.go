package framework

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"sort"

	"github.com/knctl/knctl/sdk"
)

// Probe is what one prompt's prediction says about its answer.
type Probe struct {
	Prob float64 `json:"prob"` // P(answer), joint over its tokens
	// Margin is log P(first answer token) - log P(best other token): the
	// logit margin over the runner-up (negative when the answer is not top-1).
	Margin  float64 `json:"margin"`
	Correct bool    `json:"correct"` // the first answer token is top-1
}

// ProbeQuery predicts q under interventions.
func ProbeQuery(ctx context.Context, m sdk.Model, q sdk.Query, ivs []sdk.Intervention) (Probe, error) {
	p, err := m.Predict(ctx, sdk.PredictRequest{Query: q, TopK: 2, Interventions: ivs})
	if err != nil {
		return Probe{}, err
	}
	if len(p.AnswerIDs) == 0 || len(p.Top) < 2 {
		return Probe{}, fmt.Errorf("probe %q: no answer or top-2 in the prediction", q.Prompt)
	}
	best := p.Top[0]
	if best.ID == p.AnswerIDs[0] {
		best = p.Top[1]
	}
	return Probe{
		Prob:    p.AnswerProb,
		Margin:  math.Log(p.AnswerTokenProb[0]) - math.Log(best.Prob),
		Correct: p.AnswerRank == 0,
	}, nil
}

// Interventions sets (op set) or scales (op scale) the given neurons.
func Interventions(neurons []Neuron, hook sdk.Hook, op sdk.InterventionOp, value float32) []sdk.Intervention {
	out := make([]sdk.Intervention, len(neurons))
	for i, n := range neurons {
		out[i] = sdk.Intervention{Layer: n.Layer(), Neuron: n.Index(), Hook: hook, Op: op, Value: value}
	}
	return out
}

// RandomLike draws, for each neuron, a random neuron of the same layer that
// is not among neurons: the control set of the same size and layers.
func RandomLike(r *rand.Rand, neurons []Neuron, width int) []Neuron {
	taken := map[Neuron]bool{}
	for _, n := range neurons {
		taken[n] = true
	}
	out := make([]Neuron, 0, len(neurons))
	for _, n := range neurons {
		for {
			c := Neuron{n.Layer(), r.IntN(width)}
			if !taken[c] {
				taken[c] = true
				out = append(out, c)
				break
			}
		}
	}
	sortNeurons(out)
	return out
}

// Change aggregates answer probabilities before and after an intervention
// over many prompts.
type Change struct {
	N             int     `json:"n"`
	MeanBefore    float64 `json:"mean_before"`
	MeanAfter     float64 `json:"mean_after"`
	RatioOfMeans  float64 `json:"ratio_of_means"` // (mean after - mean before) / mean before, as Dai et al. report
	MeanOfRatios  float64 `json:"mean_of_ratios"` // mean of (after - before) / before
	MarginBefore  float64 `json:"margin_before"`  // mean logit margin over the runner-up
	MarginAfter   float64 `json:"margin_after"`
	CorrectBefore float64 `json:"correct_before"` // share with the answer top-1
	CorrectAfter  float64 `json:"correct_after"`
}

type changeAcc struct {
	n                            int
	before, after, ratios        float64
	mBefore, mAfter, cBef, cAftr float64
}

func (a *changeAcc) add(before, after Probe) {
	a.n++
	a.before += before.Prob
	a.after += after.Prob
	if before.Prob > 0 {
		a.ratios += (after.Prob - before.Prob) / before.Prob
	}
	a.mBefore += before.Margin
	a.mAfter += after.Margin
	if before.Correct {
		a.cBef++
	}
	if after.Correct {
		a.cAftr++
	}
}

func (a *changeAcc) result() Change {
	if a.n == 0 {
		return Change{}
	}
	n := float64(a.n)
	c := Change{N: a.n, MeanBefore: a.before / n, MeanAfter: a.after / n, MeanOfRatios: a.ratios / n,
		MarginBefore: a.mBefore / n, MarginAfter: a.mAfter / n, CorrectBefore: a.cBef / n, CorrectAfter: a.cAftr / n}
	if a.before > 0 {
		c.RatioOfMeans = (a.after - a.before) / a.before
	}
	return c
}

// EffectReport is the outcome of intervening on each fact's neurons: on the
// fact's own prompts, on prompts of facts of other relations, and, as the
// control, on the own prompts with random neurons of the same layers.
type EffectReport struct {
	Op       string  `json:"op"`
	Value    float32 `json:"value"`
	Facts    int     `json:"facts"`
	Own      Change  `json:"own"`
	Others   Change  `json:"other_relations"`
	RandomOn Change  `json:"random_neurons"`
}

// EffectConfig configures Effect.
type EffectConfig struct {
	Hook  sdk.Hook
	Op    sdk.InterventionOp
	Value float32
	// Others is the number of facts of other relations probed per fact.
	Others int
	// Width is the model's FFN width, for the random control.
	Width int
	Seed  uint64
}

// Effect intervenes on each fact's neurons (facts without neurons are
// skipped) and measures the change of answer probabilities. pool supplies
// facts of other relations.
func Effect(ctx context.Context, m sdk.Model, facts []Fact, neurons map[string][]Neuron, pool []Fact, cfg EffectConfig) (EffectReport, error) {
	r := rand.New(rand.NewPCG(cfg.Seed, 0x65666665637473))
	rep := EffectReport{Op: string(cfg.Op), Value: cfg.Value}
	var own, others, random changeAcc
	cache := map[string]Probe{}
	baseline := func(q sdk.Query) (Probe, error) {
		key := q.Prompt + "\x00" + q.Answer
		if p, ok := cache[key]; ok {
			return p, nil
		}
		p, err := ProbeQuery(ctx, m, q, nil)
		if err == nil {
			cache[key] = p
		}
		return p, err
	}
	probe := func(acc *changeAcc, f Fact, ivs []sdk.Intervention) error {
		prompts, err := f.Queries()
		if err != nil {
			return err
		}
		for _, p := range prompts {
			q := sdk.Query{Prompt: p, Answer: f.Target}
			before, err := baseline(q)
			if err != nil {
				return fmt.Errorf("fact %s: %w", f.ID, err)
			}
			after, err := ProbeQuery(ctx, m, q, ivs)
			if err != nil {
				return fmt.Errorf("fact %s: %w", f.ID, err)
			}
			acc.add(before, after)
		}
		return nil
	}
	for _, f := range facts {
		ns := neurons[f.ID]
		if len(ns) == 0 {
			continue
		}
		rep.Facts++
		ivs := Interventions(ns, cfg.Hook, cfg.Op, cfg.Value)
		if err := probe(&own, f, ivs); err != nil {
			return rep, err
		}
		if cfg.Width > 0 {
			ctrl := Interventions(RandomLike(r, ns, cfg.Width), cfg.Hook, cfg.Op, cfg.Value)
			if err := probe(&random, f, ctrl); err != nil {
				return rep, err
			}
		}
		var cands []Fact
		for _, o := range pool {
			if o.Relation != f.Relation {
				cands = append(cands, o)
			}
		}
		r.Shuffle(len(cands), func(i, j int) { cands[i], cands[j] = cands[j], cands[i] })
		for _, o := range cands[:min(cfg.Others, len(cands))] {
			if err := probe(&others, o, ivs); err != nil {
				return rep, err
			}
		}
	}
	rep.Own, rep.Others, rep.RandomOn = own.result(), others.result(), random.result()
	return rep, nil
}

// Sharing compares how many knowledge neurons pairs of facts share within a
// relation and across relations.
type Sharing struct {
	WithinPairs   int     `json:"within_pairs"`
	WithinShared  float64 `json:"within_mean_shared"`
	AcrossPairs   int     `json:"across_pairs"`
	AcrossShared  float64 `json:"across_mean_shared"`
	LayerCounts   []int   `json:"layer_counts"` // knowledge neurons per layer, over all facts
	NeuronsPerFct float64 `json:"mean_neurons_per_fact"`
}

// ShareNeurons computes Sharing for results over a model with layers layers.
func ShareNeurons(results []*FactResult, layers int) Sharing {
	var s Sharing
	s.LayerCounts = make([]int, layers)
	var within, across float64
	sets := make([]map[Neuron]bool, len(results))
	for i, r := range results {
		sets[i] = map[Neuron]bool{}
		for _, n := range r.Neurons {
			sets[i][n] = true
			if n.Layer() >= 0 && n.Layer() < layers {
				s.LayerCounts[n.Layer()]++
			}
		}
		s.NeuronsPerFct += float64(len(r.Neurons))
	}
	if len(results) > 0 {
		s.NeuronsPerFct /= float64(len(results))
	}
	for i := range results {
		for j := i + 1; j < len(results); j++ {
			shared := 0
			for n := range sets[i] {
				if sets[j][n] {
					shared++
				}
			}
			if results[i].Relation == results[j].Relation {
				s.WithinPairs++
				within += float64(shared)
			} else {
				s.AcrossPairs++
				across += float64(shared)
			}
		}
	}
	if s.WithinPairs > 0 {
		s.WithinShared = within / float64(s.WithinPairs)
	}
	if s.AcrossPairs > 0 {
		s.AcrossShared = across / float64(s.AcrossPairs)
	}
	return s
}

// SampleFacts picks up to perRelation facts of each relation, in a seeded
// random order, keeping the input order of the picks.
func SampleFacts(facts []Fact, perRelation int, seed uint64) []Fact {
	r := rand.New(rand.NewPCG(seed, 0x73616d706c65))
	byRel := map[string][]int{}
	var rels []string
	for i, f := range facts {
		if _, ok := byRel[f.Relation]; !ok {
			rels = append(rels, f.Relation)
		}
		byRel[f.Relation] = append(byRel[f.Relation], i)
	}
	var picked []int
	for _, rel := range rels {
		idx := byRel[rel]
		r.Shuffle(len(idx), func(i, j int) { idx[i], idx[j] = idx[j], idx[i] })
		picked = append(picked, idx[:min(perRelation, len(idx))]...)
	}
	sort.Ints(picked)
	out := make([]Fact, len(picked))
	for i, k := range picked {
		out[i] = facts[k]
	}
	return out
}
