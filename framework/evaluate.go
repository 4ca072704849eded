package framework

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"

	"github.com/knctl/knctl/sdk"
)

// Counterfactual asks to change a fact's answer to TargetNew.
type Counterfactual struct {
	Fact      Fact   `json:"fact"`
	TargetNew string `json:"target_new"`
	// Neighbors are facts of the same relation about other subjects, whose
	// answers must not change (ROME's specificity).
	Neighbors []Fact `json:"neighbors,omitempty"`
}

// UpdateMetrics are the paper's and ROME's measures of fact updates,
// averaged over the edited facts (each measured on all its prompts).
type UpdateMetrics struct {
	Facts int `json:"facts"`
	// SuccessRate: the new answer becomes top-1. ChangeRate: the old answer
	// is no longer top-1 (Dai et al.).
	SuccessRate float64 `json:"success_rate"`
	ChangeRate  float64 `json:"change_rate"`
	// Rank of the new answer's first token (0 = top-1) and its reciprocal,
	// before and after.
	RankBefore float64 `json:"new_rank_before"`
	RankAfter  float64 `json:"new_rank_after"`
	MRRBefore  float64 `json:"new_mrr_before"`
	MRRAfter   float64 `json:"new_mrr_after"`
	// Perplexity of the true answers of other facts of the same relation
	// and of other relations, before and after.
	PPLSameBefore  float64 `json:"ppl_same_relation_before"`
	PPLSameAfter   float64 `json:"ppl_same_relation_after"`
	PPLOtherBefore float64 `json:"ppl_other_relations_before"`
	PPLOtherAfter  float64 `json:"ppl_other_relations_after"`
	// ROME-style: Efficacy, P(new) > P(old) on the first prompt; Paraphrase,
	// the same on the other prompts; Specificity, neighbors keep P(true) >
	// P(new); Score, their harmonic mean.
	Efficacy    float64 `json:"efficacy"`
	Paraphrase  float64 `json:"paraphrase"`
	Specificity float64 `json:"specificity"`
	Score       float64 `json:"score"`
	// NeighborPrompts is the number of neighbor prompts Specificity (and so
	// Score) is measured on; 0 when no fact had neighbors.
	NeighborPrompts int `json:"neighbor_prompts"`
	// AccuracySame/Other: top-1 accuracy on the probed facts after the
	// edit, minus before (in points of share).
	AccuracySameDelta  float64 `json:"accuracy_same_relation_delta"`
	AccuracyOtherDelta float64 `json:"accuracy_other_relations_delta"`
}

// UpdateConfig configures EvaluateUpdates.
type UpdateConfig struct {
	Rule   UpdateRule
	L1, L2 float64
	// Probe is how many facts of the same relation and of other relations
	// are probed for side effects per edit.
	Probe int
	Seed  uint64
}

// nll sums -log P(answer) over prompts and counts answer tokens.
type nll struct {
	sum    float64
	tokens int
	right  int
	n      int
}

func (a *nll) add(p sdk.Prediction) {
	a.sum += -math.Log(math.Max(p.AnswerProb, 1e-300))
	a.tokens += len(p.AnswerIDs)
	a.n++
	if p.AnswerRank == 0 {
		a.right++
	}
}

func (a nll) ppl() float64 {
	if a.tokens == 0 {
		return 0
	}
	return math.Exp(a.sum / float64(a.tokens))
}

func (a nll) acc() float64 {
	if a.n == 0 {
		return 0
	}
	return float64(a.right) / float64(a.n)
}

// probeFacts predicts every prompt of facts.
func probeFacts(ctx context.Context, m sdk.Model, facts []Fact) (nll, error) {
	var acc nll
	for _, f := range facts {
		prompts, err := f.Queries()
		if err != nil {
			return acc, err
		}
		for _, p := range prompts {
			pred, err := m.Predict(ctx, sdk.PredictRequest{Query: sdk.Query{Prompt: p, Answer: f.Target}})
			if err != nil {
				return acc, fmt.Errorf("fact %s: %w", f.ID, err)
			}
			acc.add(pred)
		}
	}
	return acc, nil
}

// EvaluateUpdates edits each counterfactual's fact through its neurons
// (neurons[fact id]; facts without neurons are skipped), measures, and
// undoes the edit. pool supplies the side-effect probes.
func EvaluateUpdates(ctx context.Context, m sdk.Model, cfs []Counterfactual, neurons map[string][]Neuron, pool []Fact, cfg UpdateConfig) (UpdateMetrics, error) {
	r := rand.New(rand.NewPCG(cfg.Seed, 0x757064617465))
	var out UpdateMetrics
	var success, change, rankB, rankA, mrrB, mrrA, eff, para, spec float64
	var paraN, specN int
	var sameB, sameA, otherB, otherA nll
	var accSame, accOther float64
	for _, cf := range cfs {
		ns := neurons[cf.Fact.ID]
		if len(ns) == 0 {
			continue
		}
		prompts, err := cf.Fact.Queries()
		if err != nil {
			return out, err
		}
		var same, other []Fact
		for _, f := range pool {
			switch {
			case f.ID == cf.Fact.ID:
			case f.Relation == cf.Fact.Relation:
				same = append(same, f)
			default:
				other = append(other, f)
			}
		}
		same, other = pick(r, same, cfg.Probe), pick(r, other, cfg.Probe)
		measure := func() (newP, oldP []sdk.Prediction, nb []sdk.Prediction, s, o nll, err error) {
			for _, p := range prompts {
				pn, err := m.Predict(ctx, sdk.PredictRequest{Query: sdk.Query{Prompt: p, Answer: cf.TargetNew}})
				if err != nil {
					return nil, nil, nil, s, o, err
				}
				po, err := m.Predict(ctx, sdk.PredictRequest{Query: sdk.Query{Prompt: p, Answer: cf.Fact.Target}})
				if err != nil {
					return nil, nil, nil, s, o, err
				}
				newP, oldP = append(newP, pn), append(oldP, po)
			}
			for _, f := range cf.Neighbors {
				fp, err := f.Queries()
				if err != nil {
					return nil, nil, nil, s, o, err
				}
				for _, p := range fp {
					pt, err := m.Predict(ctx, sdk.PredictRequest{Query: sdk.Query{Prompt: p, Answer: f.Target}})
					if err != nil {
						return nil, nil, nil, s, o, err
					}
					pn, err := m.Predict(ctx, sdk.PredictRequest{Query: sdk.Query{Prompt: p, Answer: cf.TargetNew}})
					if err != nil {
						return nil, nil, nil, s, o, err
					}
					nb = append(nb, pt, pn)
				}
			}
			if s, err = probeFacts(ctx, m, same); err != nil {
				return
			}
			o, err = probeFacts(ctx, m, other)
			return
		}
		nb0, ob0, _, s0, o0, err := measure()
		if err != nil {
			return out, err
		}
		eOld, err := Embedding(ctx, m, cf.Fact.Target)
		if err != nil {
			return out, fmt.Errorf("fact %s: old answer: %w", cf.Fact.ID, err)
		}
		eNew, err := Embedding(ctx, m, cf.TargetNew)
		if err != nil {
			return out, fmt.Errorf("fact %s: new answer: %w", cf.Fact.ID, err)
		}
		edit, err := Update(ctx, m, ns, eOld, eNew, cfg.Rule, cfg.L1, cfg.L2)
		if err != nil {
			return out, fmt.Errorf("fact %s: %w", cf.Fact.ID, err)
		}
		nb1, ob1, nbr, s1, o1, err := measure()
		if uerr := edit.Undo(context.WithoutCancel(ctx), m); uerr != nil && err == nil {
			err = uerr
		}
		if err != nil {
			return out, err
		}
		out.Facts++
		k := float64(len(prompts))
		for i := range prompts {
			if nb1[i].AnswerRank == 0 {
				success += 1 / k
			}
			if ob0[i].AnswerRank == 0 && ob1[i].AnswerRank != 0 {
				change += 1 / k
			}
			rankB += float64(nb0[i].AnswerRank) / k
			rankA += float64(nb1[i].AnswerRank) / k
			mrrB += 1 / float64(nb0[i].AnswerRank+1) / k
			mrrA += 1 / float64(nb1[i].AnswerRank+1) / k
			wins := nb1[i].AnswerProb > ob1[i].AnswerProb
			if i == 0 {
				if wins {
					eff++
				}
			} else {
				paraN++
				if wins {
					para++
				}
			}
		}
		for i := 0; i+1 < len(nbr); i += 2 {
			specN++
			if nbr[i].AnswerProb > nbr[i+1].AnswerProb {
				spec++
			}
		}
		sameB, sameA = merge(sameB, s0), merge(sameA, s1)
		otherB, otherA = merge(otherB, o0), merge(otherA, o1)
		accSame += s1.acc() - s0.acc()
		accOther += o1.acc() - o0.acc()
	}
	if out.Facts == 0 {
		return out, nil
	}
	n := float64(out.Facts)
	out.SuccessRate, out.ChangeRate = success/n, change/n
	out.RankBefore, out.RankAfter, out.MRRBefore, out.MRRAfter = rankB/n, rankA/n, mrrB/n, mrrA/n
	out.PPLSameBefore, out.PPLSameAfter = sameB.ppl(), sameA.ppl()
	out.PPLOtherBefore, out.PPLOtherAfter = otherB.ppl(), otherA.ppl()
	out.AccuracySameDelta, out.AccuracyOtherDelta = accSame/n, accOther/n
	out.Efficacy = eff / n
	if paraN > 0 {
		out.Paraphrase = para / float64(paraN)
	}
	out.NeighborPrompts = specN
	if specN > 0 {
		out.Specificity = spec / float64(specN)
		out.Score = harmonic(out.Efficacy, out.Paraphrase, out.Specificity)
	}
	return out, nil
}

func merge(a, b nll) nll {
	return nll{sum: a.sum + b.sum, tokens: a.tokens + b.tokens, right: a.right + b.right, n: a.n + b.n}
}

func harmonic(xs ...float64) float64 {
	var s float64
	for _, x := range xs {
		if x <= 0 {
			return 0
		}
		s += 1 / x
	}
	return float64(len(xs)) / s
}

func pick(r *rand.Rand, facts []Fact, n int) []Fact {
	idx := r.Perm(len(facts))
	out := make([]Fact, 0, min(n, len(facts)))
	for _, i := range idx[:min(n, len(facts))] {
		out = append(out, facts[i])
	}
	return out
}

// EraseMetrics measure erasing a relation's neurons: accuracy and
// perplexity on the relation's facts and on other relations' facts.
type EraseMetrics struct {
	Relation       string   `json:"relation"`
	Neurons        []Neuron `json:"neurons"`
	AccSameBefore  float64  `json:"accuracy_relation_before"`
	AccSameAfter   float64  `json:"accuracy_relation_after"`
	AccOtherBefore float64  `json:"accuracy_other_before"`
	AccOtherAfter  float64  `json:"accuracy_other_after"`
	PPLSameBefore  float64  `json:"ppl_relation_before"`
	PPLSameAfter   float64  `json:"ppl_relation_after"`
	PPLOtherBefore float64  `json:"ppl_other_before"`
	PPLOtherAfter  float64  `json:"ppl_other_after"`
}

// EvaluateErase erases neurons (value slots set to vector, zero when nil),
// measures the relation's facts and the others, and undoes the edit.
func EvaluateErase(ctx context.Context, m sdk.Model, relation string, neurons []Neuron, vector []float32, facts []Fact) (EraseMetrics, error) {
	out := EraseMetrics{Relation: relation, Neurons: nonNil(neurons)}
	var same, other []Fact
	for _, f := range facts {
		if f.Relation == relation {
			same = append(same, f)
		} else {
			other = append(other, f)
		}
	}
	measure := func() (nll, nll, error) {
		s, err := probeFacts(ctx, m, same)
		if err != nil {
			return s, nll{}, err
		}
		o, err := probeFacts(ctx, m, other)
		return s, o, err
	}
	s0, o0, err := measure()
	if err != nil {
		return out, err
	}
	edit, err := Erase(ctx, m, neurons, vector)
	if err != nil {
		return out, err
	}
	s1, o1, err := measure()
	if uerr := edit.Undo(context.WithoutCancel(ctx), m); uerr != nil && err == nil {
		err = uerr
	}
	if err != nil {
		return out, err
	}
	out.AccSameBefore, out.AccSameAfter, out.AccOtherBefore, out.AccOtherAfter = s0.acc(), s1.acc(), o0.acc(), o1.acc()
	out.PPLSameBefore, out.PPLSameAfter, out.PPLOtherBefore, out.PPLOtherAfter = s0.ppl(), s1.ppl(), o0.ppl(), o1.ppl()
	return out, nil
}

// RelationTopNeurons returns the k neurons that are knowledge neurons of the
// most facts of the relation.
func RelationTopNeurons(results []*FactResult, relation string, k int) []Neuron {
	var facts [][]Neuron
	for _, r := range results {
		if r.Relation == relation {
			facts = append(facts, r.Neurons)
		}
	}
	ns, _ := RelationNeurons(facts)
	if len(ns) > k {
		ns = ns[:k]
	}
	return ns
}

// RandomControl returns, for each fact's neurons, random neurons of the
// same layers (RandomLike), seeded.
func RandomControl(neurons map[string][]Neuron, width int, seed uint64) map[string][]Neuron {
	r := rand.New(rand.NewPCG(seed, 0x636f6e74726f6c))
	ids := make([]string, 0, len(neurons))
	for id := range neurons {
		ids = append(ids, id)
	}
	sortStrings(ids)
	out := make(map[string][]Neuron, len(neurons))
	for _, id := range ids {
		out[id] = RandomLike(r, neurons[id], width)
	}
	return out
}
