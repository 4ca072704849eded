package ig

import (
	"fmt"
	"strings"

	"gonum.org/v1/gonum/integrate/quad"

	"github.com/knctl/knctl/sdk"
)

// Rule is a quadrature rule for the path integral from alpha = 0 to 1.
type Rule string

// The quadrature rules.
const (
	// Left is the left Riemann sum: alpha_k = k/m, k = 0..m-1, weights 1/m
	// (what Dai et al.'s released code computes).
	Left Rule = "left"
	// Right is the right Riemann sum: alpha_k = k/m, k = 1..m, weights 1/m
	// (the formula of Dai et al. 2022, eq. 3). The default.
	Right Rule = "right"
	// Midpoint puts alpha_k = (k+1/2)/m, weights 1/m.
	Midpoint Rule = "midpoint"
	// Trapezoid uses alpha_k = k/(m-1), k = 0..m-1, halving the end weights.
	Trapezoid Rule = "trapezoid"
	// EleutherAI is the convention of the EleutherAI knowledge-neurons
	// library: alpha_k = linspace(0, 1, m), every weight 1/m (both end
	// points at full weight). It exists to reproduce that library's numbers.
	EleutherAI Rule = "eleutherai"
	// GaussLegendre uses the m-point Gauss-Legendre nodes and weights on
	// [0, 1]: exact for polynomials of degree 2m-1, so far fewer steps reach
	// a given completeness error on smooth paths.
	GaussLegendre Rule = "gauss-legendre"
)

// Rules lists every rule, for help texts.
var Rules = []Rule{Right, Left, Midpoint, Trapezoid, EleutherAI, GaussLegendre}

// ParseRule returns the rule named s.
func ParseRule(s string) (Rule, error) {
	for _, r := range Rules {
		if string(r) == s {
			return r, nil
		}
	}
	names := make([]string, len(Rules))
	for i, r := range Rules {
		names[i] = string(r)
	}
	return "", sdk.InvalidInputf("quadrature %q: expected one of %s", s, strings.Join(names, ", "))
}

// Nodes returns the m nodes alpha_k in [0, 1] and weights of rule r, so
// that integral_0^1 f(alpha) dalpha ~ sum_k weight_k f(alpha_k).
func (r Rule) Nodes(m int) (alphas, weights []float64, err error) {
	if m < 1 {
		return nil, nil, sdk.InvalidInputf("steps %d: expected at least 1", m)
	}
	alphas, weights = make([]float64, m), make([]float64, m)
	fm := float64(m)
	switch r {
	case Left:
		for k := range alphas {
			alphas[k], weights[k] = float64(k)/fm, 1/fm
		}
	case Right:
		for k := range alphas {
			alphas[k], weights[k] = float64(k+1)/fm, 1/fm
		}
	case Midpoint:
		for k := range alphas {
			alphas[k], weights[k] = (float64(k)+0.5)/fm, 1/fm
		}
	case Trapezoid, EleutherAI:
		if m < 2 {
			return nil, nil, sdk.InvalidInputf("steps %d: the %s rule needs at least 2", m, r)
		}
		for k := range alphas {
			alphas[k] = float64(k) / (fm - 1)
			if r == EleutherAI {
				weights[k] = 1 / fm
			} else {
				weights[k] = 1 / (fm - 1)
			}
		}
		if r == Trapezoid {
			weights[0] /= 2
			weights[m-1] /= 2
		}
	case GaussLegendre:
		quad.Legendre{}.FixedLocations(alphas, weights, 0, 1)
	default:
		return nil, nil, fmt.Errorf("unknown quadrature rule %q", r)
	}
	return alphas, weights, nil
}
