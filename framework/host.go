package framework

import (
	"context"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/knctl/knctl/sdk"
)

// Host launches and supervises plugin processes. Close kills every process
// it started; plugins also exit on their own if the host dies.
type Host struct {
	// Dirs are searched for plugin binaries (see SearchPath).
	Dirs []string
	// CallTimeout bounds each call to a plugin (0: none), so a hung plugin
	// is reported instead of blocking forever.
	CallTimeout time.Duration
	// Stderr receives plugins' stderr when non-nil.
	Stderr io.Writer

	mu    sync.Mutex
	procs []*sdk.Process
}

// NewHost returns a host searching dirs.
func NewHost(dirs []string) *Host { return &Host{Dirs: dirs} }

// Close kills every plugin process the host started.
func (h *Host) Close() {
	h.mu.Lock()
	procs := h.procs
	h.procs = nil
	h.mu.Unlock()
	for _, p := range procs {
		p.Close()
	}
}

func (h *Host) launch(ctx context.Context, kind, name string) (*sdk.Process, error) {
	pl, err := Find(h.Dirs, kind, name)
	if err != nil {
		return nil, err
	}
	proc, err := sdk.Launch(ctx, pl.Path, kind, sdk.LaunchOptions{Name: pl.String(), CallTimeout: h.CallTimeout, Stderr: h.Stderr})
	if err != nil {
		return nil, err
	}
	h.mu.Lock()
	h.procs = append(h.procs, proc)
	h.mu.Unlock()
	return proc, nil
}

// ModelInstance is a model plugin process with a checkpoint loaded.
type ModelInstance struct {
	sdk.Model
	ModelInfo sdk.ModelInfo
	Proc      *sdk.Process
}

// Close kills the model's plugin process.
func (m *ModelInstance) Close() { m.Proc.Close() }

// OpenModel launches model plugin name and loads checkpoint into it.
func (h *Host) OpenModel(ctx context.Context, name, checkpoint string, opts map[string]string) (*ModelInstance, error) {
	proc, err := h.launch(ctx, sdk.KindModel, name)
	if err != nil {
		return nil, err
	}
	mc := proc.Model()
	info, err := mc.Load(ctx, sdk.LoadRequest{Checkpoint: checkpoint, Options: opts})
	if err != nil {
		proc.Close()
		return nil, fmt.Errorf("load checkpoint %s: %w", checkpoint, err)
	}
	return &ModelInstance{Model: mc, ModelInfo: info, Proc: proc}, nil
}

// AttributorInstance is a running attributor plugin. It is an
// sdk.FactAttributor whatever the method: the plugin answers AttributeFact
// itself or prompt by prompt.
type AttributorInstance struct {
	*sdk.AttributorClient
	Name string
	Proc *sdk.Process
}

// OpenAttributor launches attributor plugin name.
func (h *Host) OpenAttributor(ctx context.Context, name string) (*AttributorInstance, error) {
	proc, err := h.launch(ctx, sdk.KindAttributor, name)
	if err != nil {
		return nil, err
	}
	return &AttributorInstance{AttributorClient: proc.Attributor(), Name: name, Proc: proc}, nil
}

// Peers runs attributors by name on one model; it is the AttributorSource
// the host lends to methods that wrap a base method. Attributor plugins are
// launched on first use and reused.
type Peers struct {
	host  *Host
	model sdk.Model

	mu    sync.Mutex
	procs map[string]*AttributorInstance
}

var _ sdk.FactAttributor = (*AttributorInstance)(nil)

// NewPeers returns the attributor source for model.
func (h *Host) NewPeers(model sdk.Model) *Peers {
	return &Peers{host: h, model: model, procs: map[string]*AttributorInstance{}}
}

// Attribute implements sdk.AttributorSource.
func (p *Peers) Attribute(ctx context.Context, name string, q sdk.AttributionQuery, opts map[string]string) (*sdk.Attribution, error) {
	p.mu.Lock()
	a, ok := p.procs[name]
	if !ok || a.Proc.Exited() {
		var err error
		a, err = p.host.OpenAttributor(ctx, name)
		if err != nil {
			p.mu.Unlock()
			return nil, err
		}
		p.procs[name] = a
	}
	p.mu.Unlock()
	return a.Attribute(ctx, p.model, q, sdk.Options{Values: opts, Peers: p})
}
