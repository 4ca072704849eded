package framework

import (
	"fmt"
	"math"
	"sort"

	"github.com/knctl/knctl/sdk"
)

// Neuron is (layer, index) of an FFN's intermediate activation. It
// marshals as [layer, index].
type Neuron [2]int

// Layer is the neuron's layer.
func (n Neuron) Layer() int { return n[0] }

// Index is the neuron's index within its layer.
func (n Neuron) Index() int { return n[1] }

func (n Neuron) String() string { return fmt.Sprintf("%d:%d", n[0], n[1]) }

// ThresholdMode selects how a prompt's coarse neurons are chosen.
type ThresholdMode string

// Threshold modes.
const (
	// Relative keeps neurons scoring >= t * the prompt's maximum score over
	// all its layers and neurons (Dai et al.: t = 0.2).
	Relative ThresholdMode = "relative"
	// Absolute keeps neurons scoring >= t.
	Absolute ThresholdMode = "absolute"
	// Percentile keeps neurons scoring >= the t-th percentile (0..100,
	// linear interpolation as numpy.percentile) of the prompt's scores.
	Percentile ThresholdMode = "percentile"
)

// Rules are the coarse and refining rules of the method.
type Rules struct {
	Mode      ThresholdMode
	Threshold float64
	// P is the share of a fact's prompts a coarse neuron must appear in.
	P float64
	// MinCount is the least number of prompts, whatever P says.
	MinCount int
	// Strict uses the EleutherAI library's comparisons: score > threshold
	// and coarse in more than P*n prompts.
	Strict bool
}

// DefaultRules are the paper's: t = 0.2 of the maximum, p = 0.7, at least
// 3 prompts.
func DefaultRules() Rules {
	return Rules{Mode: Relative, Threshold: 0.2, P: 0.7, MinCount: 3}
}

// Validate checks the rules' ranges.
func (r Rules) Validate() error {
	switch r.Mode {
	case Relative:
		if r.Threshold < 0 || r.Threshold > 1 {
			return sdk.InvalidInputf("threshold %g: a relative threshold is a fraction of the maximum score, expected 0..1", r.Threshold)
		}
	case Absolute:
	case Percentile:
		if r.Threshold < 0 || r.Threshold > 100 {
			return sdk.InvalidInputf("threshold %g: a percentile is expected in 0..100", r.Threshold)
		}
	default:
		return sdk.InvalidInputf("threshold mode %q: expected relative, absolute or percentile", r.Mode)
	}
	if r.P < 0 || r.P > 1 {
		return sdk.InvalidInputf("p %g: expected a share of prompts in 0..1", r.P)
	}
	if r.MinCount < 1 {
		return sdk.InvalidInputf("min-count %d: expected at least 1", r.MinCount)
	}
	return nil
}

// Cut is the score a coarse neuron must reach for one prompt's scores
// (scores[i] belongs to layers[i]).
func (r Rules) Cut(scores [][]float32) float64 {
	switch r.Mode {
	case Absolute:
		return r.Threshold
	case Percentile:
		var all []float64
		for _, row := range scores {
			for _, x := range row {
				all = append(all, float64(x))
			}
		}
		return percentile(all, r.Threshold)
	}
	max := math.Inf(-1)
	for _, row := range scores {
		for _, x := range row {
			max = math.Max(max, float64(x))
		}
	}
	return r.Threshold * max
}

// Coarse returns one prompt's coarse neurons, sorted: those whose score
// reaches the cut (strictly exceeds it with Strict). Only positive scores
// count: a neuron whose activation lowers the answer's probability does
// not carry the fact.
func (r Rules) Coarse(layers []int, scores [][]float32) []Neuron {
	cut := r.Cut(scores)
	var out []Neuron
	for i, row := range scores {
		for j, x := range row {
			v := float64(x)
			if v <= 0 {
				continue
			}
			if v > cut || (!r.Strict && v == cut) {
				out = append(out, Neuron{layers[i], j})
			}
		}
	}
	sortNeurons(out)
	return out
}

// Needed is how many of n prompts a neuron must be coarse in: at least
// ceil(P*n) and MinCount, never more than n. With Strict the share test
// is count > P*n instead (see Refine).
func (r Rules) Needed(n int) int {
	need := int(math.Ceil(r.P*float64(n) - 1e-9))
	if need < r.MinCount {
		need = r.MinCount
	}
	if need > n {
		need = n
	}
	return need
}

// Refine returns a fact's knowledge neurons from its prompts' coarse
// neurons, with how many prompts share each.
func (r Rules) Refine(coarse [][]Neuron) (neurons []Neuron, counts []int) {
	n := len(coarse)
	if n == 0 {
		return nil, nil
	}
	count := map[Neuron]int{}
	for _, c := range coarse {
		seen := map[Neuron]bool{}
		for _, x := range c {
			if !seen[x] {
				seen[x] = true
				count[x]++
			}
		}
	}
	for x, c := range count {
		if r.keeps(c, n) {
			neurons = append(neurons, x)
		}
	}
	sortNeurons(neurons)
	for _, x := range neurons {
		counts = append(counts, count[x])
	}
	return neurons, counts
}

func (r Rules) keeps(count, n int) bool {
	if r.Strict {
		return float64(count) > r.P*float64(n) && count >= min(r.MinCount, n)
	}
	return count >= r.Needed(n)
}

// RelationShare is the share of a relation's facts a neuron must be a
// knowledge neuron of to be a relation neuron (Dai et al.: 10%).
const RelationShare = 0.1

// RelationNeurons returns the neurons that are knowledge neurons of at
// least RelationShare of the facts, with their fact counts, most shared
// first.
func RelationNeurons(facts [][]Neuron) (neurons []Neuron, counts []int) {
	count := map[Neuron]int{}
	for _, f := range facts {
		for _, x := range f {
			count[x]++
		}
	}
	for x, c := range count {
		if float64(c) >= RelationShare*float64(len(facts))-1e-9 {
			neurons = append(neurons, x)
		}
	}
	sort.Slice(neurons, func(i, j int) bool {
		if count[neurons[i]] != count[neurons[j]] {
			return count[neurons[i]] > count[neurons[j]]
		}
		return less(neurons[i], neurons[j])
	})
	for _, x := range neurons {
		counts = append(counts, count[x])
	}
	return neurons, counts
}

// Adaptive-p schedule of Dai et al.: start at 0.7, move by 0.05 for at most
// six rounds until the relation's facts average 2..5 knowledge neurons.
const (
	adaptiveStart  = 0.7
	adaptiveStep   = 0.05
	adaptiveRounds = 6
	adaptiveLow    = 2.0
	adaptiveHigh   = 5.0
)

// AdaptP chooses p for one relation from its facts' coarse neurons (one
// [][]Neuron per fact): lower p when facts average fewer than 2 knowledge
// neurons, raise it when more than 5. It returns the chosen p and the
// average at that p.
func (r Rules) AdaptP(facts [][][]Neuron) (p, mean float64) {
	p = adaptiveStart
	average := func(p float64) float64 {
		rr := r
		rr.P = p
		var total int
		for _, c := range facts {
			n, _ := rr.Refine(c)
			total += len(n)
		}
		return float64(total) / float64(max(len(facts), 1))
	}
	mean = average(p)
	for round := 0; round < adaptiveRounds; round++ {
		switch {
		case mean < adaptiveLow && p-adaptiveStep >= -1e-9:
			p -= adaptiveStep
		case mean > adaptiveHigh && p+adaptiveStep <= 1+1e-9:
			p += adaptiveStep
		default:
			return p, mean
		}
		p = math.Round(p*100) / 100
		mean = average(p)
	}
	return p, mean
}

// percentile is numpy.percentile's default (linear) interpolation.
func percentile(v []float64, q float64) float64 {
	if len(v) == 0 {
		return math.Inf(1)
	}
	s := append([]float64(nil), v...)
	sort.Float64s(s)
	pos := q / 100 * float64(len(s)-1)
	lo := int(math.Floor(pos))
	hi := int(math.Ceil(pos))
	return s[lo] + (s[hi]-s[lo])*(pos-float64(lo))
}

func less(a, b Neuron) bool {
	if a[0] != b[0] {
		return a[0] < b[0]
	}
	return a[1] < b[1]
}

func sortNeurons(v []Neuron) { sort.Slice(v, func(i, j int) bool { return less(v[i], v[j]) }) }

func sortStrings(v []string) { sort.Strings(v) }
