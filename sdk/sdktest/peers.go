package sdktest

import (
	"context"

	"github.com/knctl/knctl/sdk"
)

// Peers is an in-process sdk.AttributorSource: it runs the named
// attributor of Attributors on Model, lending itself as the peers, as the
// host does with plugins.
type Peers struct {
	Model       sdk.Model
	Attributors map[string]sdk.Attributor
}

// Attribute implements sdk.AttributorSource.
func (p *Peers) Attribute(ctx context.Context, name string, q sdk.AttributionQuery, opts map[string]string) (*sdk.Attribution, error) {
	a, ok := p.Attributors[name]
	if !ok {
		return nil, sdk.InvalidInputf("unknown attributor %q", name)
	}
	return a.Attribute(ctx, p.Model, q, sdk.Options{Values: opts, Peers: p})
}
