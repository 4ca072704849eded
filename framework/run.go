package framework

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"sort"
	"sync"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/knctl/knctl/sdk"
)

// FactResult is the outcome for one fact: a line of a run's JSONL output.
type FactResult struct {
	ID       string   `json:"id"`
	Relation string   `json:"relation,omitempty"`
	Target   string   `json:"target"`
	Prompts  []string `json:"prompts"`
	// Neurons are the fact's knowledge (refined) neurons, [layer, index].
	Neurons []Neuron `json:"neurons"`
	// NeuronScores is each knowledge neuron's mean attribution over the
	// fact's prompts; NeuronCounts how many prompts have it coarse.
	NeuronScores []float64 `json:"neuron_scores"`
	NeuronCounts []int     `json:"neuron_counts"`
	// Coarse holds each prompt's coarse neurons.
	Coarse [][]Neuron `json:"coarse"`
	// P is the sharing threshold used (it differs from --p with adaptive p).
	P          float64 `json:"p"`
	Model      string  `json:"model"`
	Attributor string  `json:"attributor"`
	Method     string  `json:"method,omitempty"`
	Seconds    float64 `json:"seconds"`
	// ModelSeconds is the time the model plugin spent computing.
	ModelSeconds float64 `json:"model_seconds"`
	Passes       int64   `json:"passes"`
	// MaxCompletenessError is the largest |sum of scores - (P(w)-P(b))| over
	// the fact's prompts and layers (integrated-gradients methods).
	MaxCompletenessError float64 `json:"max_completeness_error"`
	// AnswerProb is the model's mean probability of the target over the
	// prompts.
	AnswerProb float64 `json:"answer_prob"`

	sums map[Neuron]float64 // per-neuron score sums, for re-refining
}

// RunConfig configures a knowledge-neuron run.
type RunConfig struct {
	Model             string
	Checkpoint        string
	ModelOptions      map[string]string
	Attributor        string
	AttributorOptions map[string]string
	Layers            []int
	Hook              sdk.Hook
	Rules             Rules
	// AdaptiveP adapts p per relation (Dai et al.); a relation's facts are
	// then written together once all of them are done.
	AdaptiveP bool
	// Workers is the number of model plugin instances run concurrently.
	Workers int
	// FailFast stops the run at the first failed fact.
	FailFast bool
	// Out is the JSONL output file ("" for none); each finished fact is
	// appended and flushed.
	Out string
	// Resume skips facts already in Out; without it an existing Out is an
	// error, so a finished run is never overwritten by accident.
	Resume bool
	// Progress receives events; nil for none.
	Progress Progress
}

// Progress is told about a run's course.
type Progress interface {
	Start(total, skipped int)
	FactDone(r *FactResult, err error, id string)
	Finish()
}

// FactError is a fact that failed.
type FactError struct {
	ID  string `json:"id"`
	Err string `json:"error"`
}

// Summary is the outcome of a run.
type Summary struct {
	Facts   int         `json:"facts"`
	Skipped int         `json:"skipped"`
	Done    int         `json:"done"`
	Failed  []FactError `json:"failed,omitempty"`
	// Results are this run's facts in input order (resumed ones excluded).
	Results []*FactResult `json:"results"`
	Seconds float64       `json:"seconds"`
}

// Run finds the knowledge neurons of facts.
func (h *Host) Run(ctx context.Context, cfg RunConfig, facts []Fact) (*Summary, error) {
	start := time.Now()
	if err := cfg.Rules.Validate(); err != nil {
		return nil, err
	}
	if len(facts) == 0 {
		return nil, sdk.InvalidInputf("no facts to run")
	}
	if cfg.Workers < 1 {
		cfg.Workers = 1
	}
	var done map[string]bool
	out, done, err := openOutput(cfg.Out, cfg.Resume)
	if err != nil {
		return nil, err
	}
	if out != nil {
		defer out.Close()
	}
	var todo []Fact
	for _, f := range facts {
		if !done[f.ID] {
			todo = append(todo, f)
		}
	}
	sum := &Summary{Facts: len(facts), Skipped: len(facts) - len(todo)}
	if cfg.Progress != nil {
		cfg.Progress.Start(len(facts), sum.Skipped)
		defer cfg.Progress.Finish()
	}
	if len(todo) == 0 {
		return sum, nil
	}
	// Launch everything before the first fact, so that a wrong plugin name
	// or checkpoint fails the run at once.
	attr, err := newAttributorPool(ctx, h, cfg.Attributor)
	if err != nil {
		return nil, err
	}
	workers := min(cfg.Workers, len(todo))
	models := make([]*modelSlot, workers)
	var g0 errgroup.Group
	for i := range models {
		models[i] = &modelSlot{h: h, cfg: cfg}
		slot := models[i]
		g0.Go(func() error { return slot.ensure(ctx) })
	}
	if err := g0.Wait(); err != nil {
		for _, m := range models {
			m.close()
		}
		return nil, err
	}
	defer func() {
		for _, m := range models {
			m.close()
		}
	}()

	w := &writer{out: out, cfg: cfg, sum: sum, pending: map[string][]*FactResult{}, remaining: map[string]int{}}
	for _, f := range todo {
		w.remaining[f.Relation]++
	}
	order := map[string]int{}
	for i, f := range todo {
		order[f.ID] = i
	}

	g, gctx := errgroup.WithContext(ctx)
	feed := make(chan Fact)
	g.Go(func() error {
		defer close(feed)
		for _, f := range todo {
			select {
			case feed <- f:
			case <-gctx.Done():
				return nil
			}
		}
		return nil
	})
	for _, slot := range models {
		g.Go(func() error {
			for f := range feed {
				res, err := runFact(gctx, slot, attr, cfg, f)
				if err != nil {
					if gctx.Err() != nil {
						return nil // interrupted: the fact is neither done nor failed
					}
					if !errors.Is(err, sdk.ErrInvalidInput) {
						// The plugin may be dead or in an unknown state.
						slot.close()
						attr.checkAlive()
					}
					w.fail(f, err)
					if cfg.FailFast {
						return fmt.Errorf("fact %q: %w", f.ID, err)
					}
					continue
				}
				if err := w.done(f, res); err != nil {
					return err
				}
			}
			return nil
		})
	}
	err = g.Wait()
	attr.close()
	sort.Slice(sum.Results, func(i, j int) bool { return order[sum.Results[i].ID] < order[sum.Results[j].ID] })
	sum.Seconds = time.Since(start).Seconds()
	if err == nil {
		err = ctx.Err()
	}
	return sum, err
}

// modelSlot is one worker's model plugin, relaunched after a failure.
type modelSlot struct {
	h     *Host
	cfg   RunConfig
	inst  *ModelInstance
	peers *Peers
}

func (s *modelSlot) ensure(ctx context.Context) error {
	if s.inst != nil && !s.inst.Proc.Exited() {
		return nil
	}
	s.close()
	inst, err := s.h.OpenModel(ctx, s.cfg.Model, s.cfg.Checkpoint, s.cfg.ModelOptions)
	if err != nil {
		return err
	}
	s.inst = inst
	s.peers = s.h.NewPeers(inst)
	return nil
}

func (s *modelSlot) close() {
	if s.inst != nil {
		s.inst.Close()
		s.inst, s.peers = nil, nil
	}
}

// attributorPool is the run's attributor plugin, shared by the workers
// (attributors serve concurrent calls) and relaunched if it dies.
type attributorPool struct {
	h    *Host
	name string
	mu   sync.Mutex
	inst *AttributorInstance
}

func newAttributorPool(ctx context.Context, h *Host, name string) (*attributorPool, error) {
	p := &attributorPool{h: h, name: name}
	if _, err := p.get(ctx); err != nil {
		return nil, err
	}
	return p, nil
}

func (p *attributorPool) get(ctx context.Context) (*AttributorInstance, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.inst != nil && !p.inst.Proc.Exited() {
		return p.inst, nil
	}
	inst, err := p.h.OpenAttributor(ctx, p.name)
	if err != nil {
		return nil, err
	}
	p.inst = inst
	return inst, nil
}

func (p *attributorPool) checkAlive() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.inst != nil && p.inst.Proc.Exited() {
		p.inst = nil
	}
}

func (p *attributorPool) close() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.inst != nil {
		p.inst.Proc.Close()
		p.inst = nil
	}
}

// runFact attributes every prompt of f and applies the rules.
func runFact(ctx context.Context, slot *modelSlot, attr *attributorPool, cfg RunConfig, f Fact) (*FactResult, error) {
	start := time.Now()
	prompts, err := f.Queries()
	if err != nil {
		return nil, err
	}
	if err := slot.ensure(ctx); err != nil {
		return nil, err
	}
	a, err := attr.get(ctx)
	if err != nil {
		return nil, err
	}
	model := slot.inst
	res := &FactResult{ID: f.ID, Relation: f.Relation, Target: f.Target, Prompts: prompts, Model: cfg.Model, Attributor: cfg.Attributor, P: cfg.Rules.P}
	sums := map[Neuron]float64{}
	qs := make([]sdk.AttributionQuery, len(prompts))
	for i, prompt := range prompts {
		qs[i] = sdk.AttributionQuery{Query: sdk.Query{Prompt: prompt, Answer: f.Target}, Layers: cfg.Layers, Hook: cfg.Hook}
	}
	// One call for the fact: methods that share work across prompts
	// (NoiseGrad's noisy models) do it once.
	ats, err := sdk.AttributeFact(ctx, a, model, qs, sdk.Options{Values: cfg.AttributorOptions, Peers: slot.peers})
	if err != nil {
		return nil, err
	}
	for _, at := range ats {
		for li, l := range at.Layers {
			for j, x := range at.Scores[li] {
				sums[Neuron{l, j}] += float64(x)
			}
		}
		res.Coarse = append(res.Coarse, cfg.Rules.Coarse(at.Layers, at.Scores))
		res.Method = at.Method
		res.Passes += at.Passes
		res.ModelSeconds += at.ModelSeconds
		for _, d := range at.LayerDiagnostics {
			res.MaxCompletenessError = math.Max(res.MaxCompletenessError, math.Abs(d.CompletenessError))
			res.AnswerProb += d.ProbFull / float64(len(at.LayerDiagnostics)*len(prompts))
		}
	}
	res.Neurons, res.NeuronCounts = cfg.Rules.Refine(res.Coarse)
	res.setScores(sums)
	if res.Neurons == nil {
		res.Neurons = []Neuron{}
	}
	res.Seconds = time.Since(start).Seconds()
	return res, nil
}

// setScores fills NeuronScores (mean over prompts) from per-neuron sums.
func (r *FactResult) setScores(sums map[Neuron]float64) {
	r.NeuronScores = make([]float64, len(r.Neurons))
	for i, n := range r.Neurons {
		r.NeuronScores[i] = sums[n] / float64(len(r.Prompts))
	}
	r.sums = sums
}

// writer appends finished facts to the output and the summary.
type writer struct {
	mu        sync.Mutex
	out       *os.File
	cfg       RunConfig
	sum       *Summary
	pending   map[string][]*FactResult // adaptive p: a relation's finished facts
	remaining map[string]int           // facts of each relation still running
}

func (w *writer) fail(f Fact, err error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.sum.Failed = append(w.sum.Failed, FactError{ID: f.ID, Err: err.Error()})
	w.remaining[f.Relation]--
	if w.cfg.Progress != nil {
		w.cfg.Progress.FactDone(nil, err, f.ID)
	}
	if w.cfg.AdaptiveP {
		_ = w.flushRelation(f.Relation)
	}
}

func (w *writer) done(f Fact, r *FactResult) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.remaining[f.Relation]--
	if !w.cfg.AdaptiveP {
		if w.cfg.Progress != nil {
			w.cfg.Progress.FactDone(r, nil, f.ID)
		}
		return w.write(r)
	}
	w.pending[f.Relation] = append(w.pending[f.Relation], r)
	return w.flushRelation(f.Relation)
}

// flushRelation writes a relation's facts once all are finished, with p
// adapted over them.
func (w *writer) flushRelation(rel string) error {
	if w.remaining[rel] > 0 {
		return nil
	}
	facts := w.pending[rel]
	delete(w.pending, rel)
	if len(facts) == 0 {
		return nil
	}
	coarse := make([][][]Neuron, len(facts))
	for i, r := range facts {
		coarse[i] = r.Coarse
	}
	p, _ := w.cfg.Rules.AdaptP(coarse)
	rules := w.cfg.Rules
	rules.P = p
	for _, r := range facts {
		r.P = p
		r.Neurons, r.NeuronCounts = rules.Refine(r.Coarse)
		if r.Neurons == nil {
			r.Neurons = []Neuron{}
		}
		r.setScores(r.sums)
		if w.cfg.Progress != nil {
			w.cfg.Progress.FactDone(r, nil, r.ID)
		}
		if err := w.write(r); err != nil {
			return err
		}
	}
	return nil
}

func (w *writer) write(r *FactResult) error {
	w.sum.Done++
	w.sum.Results = append(w.sum.Results, r)
	if w.out == nil {
		return nil
	}
	b, err := json.Marshal(r)
	if err != nil {
		return fmt.Errorf("encode result of fact %q: %w", r.ID, err)
	}
	// One write per line, synced: a crash leaves whole lines only (a torn
	// last line is repaired by --resume).
	if _, err := w.out.Write(append(b, '\n')); err != nil {
		return fmt.Errorf("write %s: %w", w.out.Name(), err)
	}
	if err := w.out.Sync(); err != nil {
		return fmt.Errorf("write %s: %w", w.out.Name(), err)
	}
	return nil
}

// openOutput opens the JSONL output for appending. With resume it returns
// the ids already there and cuts a torn last line left by a crash.
func openOutput(path string, resume bool) (*os.File, map[string]bool, error) {
	done := map[string]bool{}
	if path == "" {
		if resume {
			return nil, nil, sdk.InvalidInputf("--resume needs --out, the file to continue")
		}
		return nil, done, nil
	}
	if _, err := os.Stat(path); err == nil && !resume {
		return nil, nil, sdk.InvalidInputf("output %s exists: pass --resume to continue it, or remove it", path)
	}
	if resume {
		results, valid, err := ReadResults(path)
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			return nil, nil, err
		}
		for _, r := range results {
			done[r.ID] = true
		}
		if err == nil {
			if err := os.Truncate(path, valid); err != nil {
				return nil, nil, fmt.Errorf("repair %s: %w", path, err)
			}
		}
	}
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, nil, sdk.InvalidInputf("open output: %w", err)
	}
	return f, done, nil
}

// ReadResults reads a run's JSONL output. A last line without its newline
// (torn by a crash) is ignored; valid is the length of the intact part.
// A corrupt line elsewhere is an error naming the line.
func ReadResults(path string) (results []*FactResult, valid int64, err error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, 0, err
	}
	r := bufio.NewReader(bytes.NewReader(b))
	line := 0
	for {
		text, err := r.ReadBytes('\n')
		if err == io.EOF {
			break // a torn last line, or nothing
		}
		line++
		if len(bytes.TrimSpace(text)) > 0 {
			var res FactResult
			if err := json.Unmarshal(text, &res); err != nil {
				return nil, 0, sdk.InvalidInputf("%s:%d: not a knctl run result: %v", path, line, err)
			}
			results = append(results, &res)
		}
		valid += int64(len(text))
	}
	return results, valid, nil
}
