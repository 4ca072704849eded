package torch

import (
	"runtime"
	"strconv"
	"strings"

	"github.com/sugarme/gotch/ts"

	"github.com/knctl/knctl/sdk"
)

// LoadOptions are the load options every backend accepts.
type LoadOptions struct {
	// Threads is libtorch's thread count ("threads"; default all CPUs).
	Threads int
	// Random draws the weights instead of reading them ("init=random").
	Random bool
	// Seed seeds the random weights ("seed", default 0).
	Seed int64
}

// ParseLoadOptions reads load options, rejecting unknown ones.
func ParseLoadOptions(opts map[string]string) (LoadOptions, error) {
	o := LoadOptions{Threads: runtime.NumCPU()}
	for k, v := range opts {
		switch k {
		case "threads":
			n, err := strconv.Atoi(v)
			if err != nil || n < 1 {
				return o, sdk.InvalidInputf("model option threads=%q: expected a positive integer", v)
			}
			o.Threads = n
		case "init":
			switch v {
			case "", "checkpoint":
			case "random":
				o.Random = true
			default:
				return o, sdk.InvalidInputf("model option init=%q: expected checkpoint or random", v)
			}
		case "seed":
			n, err := strconv.ParseInt(v, 10, 64)
			if err != nil {
				return o, sdk.InvalidInputf("model option seed=%q: expected an integer", v)
			}
			o.Seed = n
		default:
			return o, sdk.InvalidInputf("model option %q: unknown (known: %s)", k, strings.Join([]string{"threads", "init", "seed"}, ", "))
		}
	}
	return o, nil
}

// RandomParams draws parameters of the given shapes as HuggingFace
// initialises them: normal(0, std) for matrices and embeddings, ones for
// layer-norm weights, zeros for biases (1-D tensors named *.bias or under
// a layer norm). The caller owns the tensors.
func RandomParams(specs []Spec, seed int64, std float64) (map[string]*ts.Tensor, error) {
	ManualSeed(seed)
	s := NewScope()
	defer s.Close()
	out := map[string]*ts.Tensor{}
	for _, sp := range specs {
		var t *ts.Tensor
		switch {
		case len(sp.Shape) > 1:
			t = s.Scale(s.Randn(sp.Shape...), std)
		case strings.HasSuffix(sp.Name, ".bias"):
			t = s.Zeros(sp.Shape...)
		default: // layer-norm weights
			t = s.Shift(s.Zeros(sp.Shape...), 1)
		}
		if err := s.Err(); err != nil {
			DropAll(out)
			return nil, err
		}
		out[sp.Name] = s.Keep(t)
	}
	return out, nil
}
