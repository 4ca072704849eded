package sdk

import (
	"context"
	"fmt"
)

// OptionSpec documents one option of an attributor.
type OptionSpec struct {
	Name    string `json:"name"`
	Default string `json:"default"`
	Help    string `json:"help"`
}

// AttributorInfo describes an attribution method.
type AttributorInfo struct {
	Name        string       `json:"name"`
	Description string       `json:"description"`
	Version     string       `json:"version"`
	Options     []OptionSpec `json:"options"`
}

// AttributionQuery is what to attribute: a prompt and answer, the layers
// (empty: all) and which FFN value is the neuron.
type AttributionQuery struct {
	Query  Query `json:"query"`
	Layers []int `json:"layers,omitempty"`
	Hook   Hook  `json:"hook"`
}

// LayerDiagnostics reports integrated-gradients completeness for one layer:
// CompletenessError = ScoreSum - (ProbFull - ProbBaseline).
type LayerDiagnostics struct {
	Layer             int     `json:"layer"`
	ProbFull          float64 `json:"prob_full"`
	ProbBaseline      float64 `json:"prob_baseline"`
	ScoreSum          float64 `json:"score_sum"`
	CompletenessError float64 `json:"completeness_error"`
}

// Attribution is an attributor's result: Scores[i][neuron] belongs to layer
// Layers[i].
type Attribution struct {
	Layers           []int              `json:"layers"`
	Scores           [][]float32        `json:"scores"`
	Method           string             `json:"method"`
	Passes           int64              `json:"passes"`        // forward+backward evaluations
	Seconds          float64            `json:"seconds"`       // wall time of Attribute
	ModelSeconds     float64            `json:"model_seconds"` // time the model spent computing
	LayerDiagnostics []LayerDiagnostics `json:"layer_diagnostics,omitempty"`
	Extra            map[string]float64 `json:"extra,omitempty"`
}

// AttributorSource runs other installed attributors on the same model; the
// host offers it to methods that wrap a base method.
type AttributorSource interface {
	Attribute(ctx context.Context, attributor string, q AttributionQuery, opts map[string]string) (*Attribution, error)
}

// Options are what the host passes an attributor besides the query.
type Options struct {
	// Values are the method's own options, as listed in its AttributorInfo.
	Values map[string]string
	// Peers runs other attributors on the same model; nil when not offered.
	Peers AttributorSource
}

// Attributor is an attribution method. It drives the model it is handed
// through the Model contract and never needs a tensor library.
type Attributor interface {
	Info(ctx context.Context) (AttributorInfo, error)
	Attribute(ctx context.Context, model Model, q AttributionQuery, opts Options) (*Attribution, error)
}

// FactAttributor is an Attributor that attributes all prompts of a fact in
// one call. A method whose work is shared across prompts implements it:
// NoiseGrad draws each noisy model once per fact instead of once per prompt,
// and calibrates sigma=auto on all the fact's prompts. Results are in the
// order of qs.
type FactAttributor interface {
	Attributor
	AttributeFact(ctx context.Context, model Model, qs []AttributionQuery, opts Options) ([]*Attribution, error)
}

// AttributeFact attributes every query of a fact with a: in one call when a
// is a FactAttributor, else one Attribute call per query.
func AttributeFact(ctx context.Context, a Attributor, model Model, qs []AttributionQuery, opts Options) ([]*Attribution, error) {
	if fa, ok := a.(FactAttributor); ok {
		return fa.AttributeFact(ctx, model, qs, opts)
	}
	return attributeEach(ctx, a, model, qs, opts)
}

func attributeEach(ctx context.Context, a Attributor, model Model, qs []AttributionQuery, opts Options) ([]*Attribution, error) {
	out := make([]*Attribution, len(qs))
	for i, q := range qs {
		r, err := a.Attribute(ctx, model, q, opts)
		if err != nil {
			return nil, fmt.Errorf("prompt %d %q: %w", i+1, q.Query.Prompt, err)
		}
		out[i] = r
	}
	return out, nil
}
