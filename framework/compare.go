package framework

import (
	"context"
	"fmt"
	"math/rand/v2"
	"strings"
	"time"

	"github.com/knctl/knctl/sdk"
)

// Method is an attributor with options, as compared by Compare.
type Method struct {
	Label      string            `json:"label"`
	Attributor string            `json:"attributor"`
	Options    map[string]string `json:"options,omitempty"`
}

// ParseMethod reads "NAME" or "NAME:key=value,key=value".
func ParseMethod(s string) (Method, error) {
	s = strings.TrimSpace(s)
	name, rest, _ := strings.Cut(s, ":")
	if name == "" {
		return Method{}, sdk.InvalidInputf("method %q: expected NAME or NAME:key=value,...", s)
	}
	m := Method{Label: s, Attributor: name, Options: map[string]string{}}
	if rest != "" {
		for _, kv := range strings.Split(rest, ",") {
			k, v, ok := strings.Cut(kv, "=")
			if !ok || k == "" {
				return Method{}, sdk.InvalidInputf("method %q: option %q is not key=value", s, kv)
			}
			m.Options[k] = v
		}
	}
	return m, nil
}

// CompareConfig configures Compare.
type CompareConfig struct {
	Model        string
	Checkpoint   string
	ModelOptions map[string]string
	Methods      []Method
	// Reference finds the reference neurons from all of a fact's prompts.
	Reference Method
	// Budgets are the numbers of prompts per fact to try.
	Budgets []int
	Rules   Rules
	Hook    sdk.Hook
	Layers  []int
	// Others is the number of facts of other relations probed per fact for
	// the suppression effect (0: no effect measurement).
	Others int
	// Seed fixes which prompts a budget takes (a seeded permutation per fact,
	// so smaller budgets are subsets of larger ones) and the probes.
	Seed     uint64
	Progress Progress
}

// CompareRow is one (method, budget) line of a comparison.
type CompareRow struct {
	Method         string  `json:"method"`
	Budget         int     `json:"prompts_per_fact"`
	Facts          int     `json:"facts"`
	NeuronsPerFact float64 `json:"neurons_per_fact"`
	// Precision, recall and Jaccard against the reference, averaged over
	// facts; precision over the facts where the method found neurons,
	// recall over those where the reference did.
	Precision      float64      `json:"precision"`
	Recall         float64      `json:"recall"`
	Jaccard        float64      `json:"jaccard"`
	SecondsPerFact float64      `json:"seconds_per_fact"`
	Suppress       EffectReport `json:"suppress"`
}

// CompareFact is one (method, budget, fact) result.
type CompareFact struct {
	Method  string   `json:"method"`
	Budget  int      `json:"prompts_per_fact"`
	ID      string   `json:"id"`
	Prompts []string `json:"prompts"`
	Neurons []Neuron `json:"neurons"`
	// Reference are the reference method's neurons from all prompts.
	Reference []Neuron `json:"reference"`
	Seconds   float64  `json:"seconds"`
}

// CompareResult is the outcome of Compare.
type CompareResult struct {
	Rows  []CompareRow  `json:"rows"`
	Facts []CompareFact `json:"facts"`
}

// Compare runs every method over facts at every prompt budget and scores
// its knowledge neurons against the reference method's (all prompts).
func (h *Host) Compare(ctx context.Context, cfg CompareConfig, facts []Fact) (*CompareResult, error) {
	if err := cfg.Rules.Validate(); err != nil {
		return nil, err
	}
	if len(facts) == 0 || len(cfg.Methods) == 0 || len(cfg.Budgets) == 0 {
		return nil, sdk.InvalidInputf("compare: need facts, methods and prompt budgets")
	}
	for _, b := range cfg.Budgets {
		if b < 1 {
			return nil, sdk.InvalidInputf("prompt budget %d: expected at least 1", b)
		}
	}
	model, err := h.OpenModel(ctx, cfg.Model, cfg.Checkpoint, cfg.ModelOptions)
	if err != nil {
		return nil, err
	}
	defer model.Close()
	peers := h.NewPeers(model)
	attrs := map[string]*AttributorInstance{}
	attributor := func(name string) (*AttributorInstance, error) {
		if a, ok := attrs[name]; ok && !a.Proc.Exited() {
			return a, nil
		}
		a, err := h.OpenAttributor(ctx, name)
		if err != nil {
			return nil, err
		}
		attrs[name] = a
		return a, nil
	}
	r := rand.New(rand.NewPCG(cfg.Seed, 0x636f6d70617265))
	// run attributes prompts as one fact (one call, so a method that shares
	// work across prompts does it once, and one that calibrates on the
	// prompts, like NoiseGrad's sigma=auto, sees only these) and returns
	// each prompt's coarse neurons and the seconds the call took.
	run := func(m Method, f Fact, prompts []string) ([][]Neuron, float64, error) {
		a, err := attributor(m.Attributor)
		if err != nil {
			return nil, 0, err
		}
		qs := make([]sdk.AttributionQuery, len(prompts))
		for i, p := range prompts {
			qs[i] = sdk.AttributionQuery{Query: sdk.Query{Prompt: p, Answer: f.Target}, Layers: cfg.Layers, Hook: cfg.Hook}
		}
		start := time.Now()
		res, err := sdk.AttributeFact(ctx, a, model, qs, sdk.Options{Values: m.Options, Peers: peers})
		if err != nil {
			return nil, 0, fmt.Errorf("method %s, fact %s: %w", m.Label, f.ID, err)
		}
		coarse := make([][]Neuron, len(res))
		for i, r := range res {
			coarse[i] = cfg.Rules.Coarse(r.Layers, r.Scores)
		}
		return coarse, time.Since(start).Seconds(), nil
	}

	type key struct {
		method string
		budget int
	}
	neurons := map[key]map[string][]Neuron{}
	res := &CompareResult{}
	if cfg.Progress != nil {
		cfg.Progress.Start(len(facts), 0)
		defer cfg.Progress.Finish()
	}
	for _, f := range facts {
		all, err := f.Queries()
		if err != nil {
			return nil, err
		}
		perm := r.Perm(len(all))
		order := make([]string, len(all))
		for i, j := range perm {
			order[i] = all[j]
		}
		refCoarse, refSecs, err := run(cfg.Reference, f, order)
		if err != nil {
			return nil, err
		}
		ref, _ := cfg.Rules.Refine(refCoarse)
		for _, m := range cfg.Methods {
			for _, b := range cfg.Budgets {
				// Each budget is a run of its own on the first k prompts
				// of the fact's seeded order: smaller budgets are subsets
				// of larger ones.
				k := min(b, len(order))
				coarse, secs := refCoarse, refSecs
				if !sameMethod(m, cfg.Reference) || k < len(order) {
					if coarse, secs, err = run(m, f, order[:k]); err != nil {
						return nil, err
					}
				}
				ns, _ := cfg.Rules.Refine(coarse)
				kk := key{m.Label, b}
				if neurons[kk] == nil {
					neurons[kk] = map[string][]Neuron{}
				}
				neurons[kk][f.ID] = ns
				res.Facts = append(res.Facts, CompareFact{Method: m.Label, Budget: b, ID: f.ID, Prompts: order[:k], Neurons: nonNil(ns), Reference: nonNil(ref), Seconds: secs})
			}
		}
		if cfg.Progress != nil {
			cfg.Progress.FactDone(nil, nil, f.ID)
		}
	}
	for _, m := range cfg.Methods {
		for _, b := range cfg.Budgets {
			row := CompareRow{Method: m.Label, Budget: b}
			var pN, rN int
			for _, cf := range res.Facts {
				if cf.Method != m.Label || cf.Budget != b {
					continue
				}
				row.Facts++
				row.NeuronsPerFact += float64(len(cf.Neurons))
				row.SecondsPerFact += cf.Seconds
				inter := intersect(cf.Neurons, cf.Reference)
				if len(cf.Neurons) > 0 {
					row.Precision += float64(inter) / float64(len(cf.Neurons))
					pN++
				}
				if len(cf.Reference) > 0 {
					row.Recall += float64(inter) / float64(len(cf.Reference))
					rN++
				}
				union := len(cf.Neurons) + len(cf.Reference) - inter
				if union == 0 {
					row.Jaccard++
				} else {
					row.Jaccard += float64(inter) / float64(union)
				}
			}
			if row.Facts > 0 {
				row.NeuronsPerFact /= float64(row.Facts)
				row.SecondsPerFact /= float64(row.Facts)
				row.Jaccard /= float64(row.Facts)
			}
			if pN > 0 {
				row.Precision /= float64(pN)
			}
			if rN > 0 {
				row.Recall /= float64(rN)
			}
			if cfg.Others > 0 {
				row.Suppress, err = Effect(ctx, model, facts, neurons[key{m.Label, b}], facts, EffectConfig{
					Hook: cfg.Hook, Op: sdk.OpSet, Value: 0, Others: cfg.Others, Width: model.ModelInfo.FFNWidth, Seed: cfg.Seed,
				})
				if err != nil {
					return nil, err
				}
			}
			res.Rows = append(res.Rows, row)
		}
	}
	return res, nil
}

func sameMethod(a, b Method) bool {
	if a.Attributor != b.Attributor || len(a.Options) != len(b.Options) {
		return false
	}
	for k, v := range a.Options {
		if b.Options[k] != v {
			return false
		}
	}
	return true
}

func intersect(a, b []Neuron) int {
	set := map[Neuron]bool{}
	for _, n := range a {
		set[n] = true
	}
	n := 0
	for _, x := range b {
		if set[x] {
			n++
		}
	}
	return n
}

func nonNil(v []Neuron) []Neuron {
	if v == nil {
		return []Neuron{}
	}
	return v
}
