package framework

import (
	"encoding/json"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/knctl/knctl/sdk"
)

func TestCoarseRelative(t *testing.T) {
	// max = 10, t = 0.2 -> cut 2: 2 passes (>=), 1.99 does not, negatives never.
	scores := [][]float32{{10, 2, 1.99, -50}, {0, 3, -2, 2}}
	r := Rules{Mode: Relative, Threshold: 0.2, P: 0.7, MinCount: 3}
	assert.Equal(t, []Neuron{{4, 0}, {4, 1}, {7, 1}, {7, 3}}, r.Coarse([]int{4, 7}, scores))
	r.Strict = true // EleutherAI: > cut, so ties at the cut drop out
	assert.Equal(t, []Neuron{{4, 0}, {7, 1}}, r.Coarse([]int{4, 7}, scores))
	// All scores negative: nothing is coarse, even though t*max is negative.
	assert.Empty(t, Rules{Mode: Relative, Threshold: 0.2}.Coarse([]int{0}, [][]float32{{-1, -2}}))
}

func TestCoarseAbsoluteAndPercentile(t *testing.T) {
	scores := [][]float32{{0.5, 1, 1.5, 2, 2.5}}
	abs := Rules{Mode: Absolute, Threshold: 1.5}
	assert.Equal(t, []Neuron{{0, 2}, {0, 3}, {0, 4}}, abs.Coarse([]int{0}, scores))
	// numpy.percentile([0.5,1,1.5,2,2.5], 75) = 2.0
	pct := Rules{Mode: Percentile, Threshold: 75}
	assert.InDelta(t, 2.0, pct.Cut(scores), 1e-12)
	assert.Equal(t, []Neuron{{0, 3}, {0, 4}}, pct.Coarse([]int{0}, scores))
	// numpy.percentile([0.5,1,1.5,2,2.5], 90) = 2.3 (interpolated)
	assert.InDelta(t, 2.3, Rules{Mode: Percentile, Threshold: 90}.Cut(scores), 1e-12)
}

func TestRefine(t *testing.T) {
	a, b, c, d := Neuron{0, 1}, Neuron{1, 5}, Neuron{2, 9}, Neuron{3, 3}
	coarse := [][]Neuron{{a, b, c}, {a, b}, {a, c, d}, {a, b}, {b}}
	// n = 5, p = 0.7 -> ceil(3.5) = 4 prompts: a (4), b (4); c (2) and d (1) not.
	r := Rules{Mode: Relative, Threshold: 0.2, P: 0.7, MinCount: 3}
	assert.Equal(t, 4, r.Needed(5))
	n, counts := r.Refine(coarse)
	assert.Equal(t, []Neuron{a, b}, n)
	assert.Equal(t, []int{4, 4}, counts)
	// min_count dominates when p*n is small: p = 0.1 -> ceil(0.5) = 1, but 3 needed.
	r.P = 0.1
	assert.Equal(t, 3, r.Needed(5))
	n, _ = r.Refine(coarse)
	assert.Equal(t, []Neuron{a, b}, n)
	// Never more than n: with two prompts and min_count 3, both are needed.
	assert.Equal(t, 2, r.Needed(2))
	n, _ = r.Refine([][]Neuron{{a, c}, {a}})
	assert.Equal(t, []Neuron{a}, n)
	// Exact p*n: p = 0.6 of 5 = 3 prompts; non-strict keeps 3, strict needs > 3.
	r = Rules{P: 0.6, MinCount: 1}
	n, _ = r.Refine([][]Neuron{{a, c}, {a, c}, {a, c}, {a}, {}})
	assert.Equal(t, []Neuron{a, c}, n)
	r.Strict = true
	n, _ = r.Refine([][]Neuron{{a, c}, {a, c}, {a, c}, {a}, {}})
	assert.Equal(t, []Neuron{a}, n)
	// EleutherAI: p = 0.5 strict with 4 prompts needs 3.
	r = Rules{P: 0.5, MinCount: 1, Strict: true}
	n, _ = r.Refine([][]Neuron{{a, b}, {a, b}, {a}, {}})
	assert.Equal(t, []Neuron{a}, n)
	// A neuron repeated within one prompt counts once.
	r = Rules{P: 1, MinCount: 1}
	n, _ = r.Refine([][]Neuron{{a, a}, {b}})
	assert.Empty(t, n)
}

func TestRelationNeurons(t *testing.T) {
	a, b, c := Neuron{0, 1}, Neuron{1, 5}, Neuron{2, 9}
	facts := make([][]Neuron, 20)
	facts[0] = []Neuron{a, b}
	facts[1] = []Neuron{a, c}
	facts[2] = []Neuron{a}
	facts[3] = []Neuron{b}
	// 20 facts: 10% is 2 facts. a: 3, b: 2, c: 1.
	n, counts := RelationNeurons(facts)
	assert.Equal(t, []Neuron{a, b}, n)
	assert.Equal(t, []int{3, 2}, counts)
}

func TestAdaptP(t *testing.T) {
	x := func(i int) Neuron { return Neuron{0, i} }
	// Each fact has 10 prompts; neuron i is coarse in 10-i of them, so at
	// p the fact has the neurons with 10-i >= ceil(10p).
	fact := make([][]Neuron, 10)
	for k := range fact {
		for i := 0; i < 10-k; i++ {
			fact[k] = append(fact[k], x(i))
		}
	}
	r := Rules{MinCount: 1}
	// p = 0.7 -> 7 prompts -> neurons 0..3 (4): inside 2..5, p stays.
	p, mean := r.AdaptP([][][]Neuron{fact, fact})
	assert.InDelta(t, 0.7, p, 1e-9)
	assert.InDelta(t, 4, mean, 1e-9)
	// Facts whose neurons are rarer: neuron i coarse in 6-i prompts of 10.
	rare := make([][]Neuron, 10)
	for k := range rare {
		for i := 0; i < 6-k; i++ {
			rare[k] = append(rare[k], x(i))
		}
	}
	// p 0.7: 0 neurons; 0.65 -> ceil 6.5 = 7: 0; 0.6 -> 6: 1; 0.55 -> 6: 1; 0.5 -> 5: 2. Stop.
	p, mean = r.AdaptP([][][]Neuron{rare})
	assert.InDelta(t, 0.5, p, 1e-9)
	assert.InDelta(t, 2, mean, 1e-9)
	// Too many neurons: every prompt has 8 neurons in common.
	many := make([][]Neuron, 4)
	for k := range many {
		for i := 0; i < 8; i++ {
			many[k] = append(many[k], x(i))
		}
	}
	// Raising p never drops a neuron shared by all prompts: six rounds, then stop.
	p, mean = r.AdaptP([][][]Neuron{many})
	assert.InDelta(t, 1.0, p, 1e-9)
	assert.InDelta(t, 8, mean, 1e-9)
}

func TestRulesValidate(t *testing.T) {
	require.NoError(t, DefaultRules().Validate())
	for _, r := range []Rules{
		{Mode: "median", P: 0.5, MinCount: 1},
		{Mode: Relative, Threshold: 2, P: 0.5, MinCount: 1},
		{Mode: Percentile, Threshold: 101, P: 0.5, MinCount: 1},
		{Mode: Relative, Threshold: 0.2, P: 1.5, MinCount: 1},
		{Mode: Relative, Threshold: 0.2, P: 0.5, MinCount: 0},
	} {
		assert.ErrorIs(t, r.Validate(), sdk.ErrInvalidInput, "%+v", r)
	}
}

func TestNeuronJSON(t *testing.T) {
	b, err := json.Marshal([]Neuron{{3, 17}})
	require.NoError(t, err)
	assert.Equal(t, "[[3,17]]", string(b))
}
