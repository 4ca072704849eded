package torch

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"runtime"
	"sort"
	"time"

	"github.com/sugarme/gotch/ts"

	"github.com/knctl/knctl/sdk"
)

// MaxGradNorm is the global gradient norm RunTraining clips to.
const MaxGradNorm = 1.0

// StoppedTargetProb is TrainProgress.Stopped when training ended because
// the evaluated mean answer probability reached TrainRequest.TargetProb.
const StoppedTargetProb = "target_prob reached"

// CheckTrainRequest validates the fields of a training request every
// backend reads the same way; the backend checks the examples themselves
// (that they encode, and fit the model).
func CheckTrainRequest(req sdk.TrainRequest) error {
	finite := func(x float64) bool { return !math.IsNaN(x) && !math.IsInf(x, 0) }
	switch {
	case len(req.Examples) == 0:
		return sdk.InvalidInputf("examples: empty; expected at least one prompt/answer pair to train on")
	case req.Steps < 1:
		return sdk.InvalidInputf("steps %d: expected >= 1", req.Steps)
	case req.BatchSize < 1:
		return sdk.InvalidInputf("batch_size %d: expected >= 1", req.BatchSize)
	case !(req.LearningRate > 0) || !finite(req.LearningRate):
		return sdk.InvalidInputf("learning_rate %g: expected a finite value > 0", req.LearningRate)
	case !(req.WeightDecay >= 0) || !finite(req.WeightDecay):
		return sdk.InvalidInputf("weight_decay %g: expected a finite value >= 0", req.WeightDecay)
	case req.WarmupSteps < 0:
		// More warm-up steps than steps is allowed (the run ends while
		// warming up), so that a short trial run needs no other settings.
		return sdk.InvalidInputf("warmup_steps %d: expected >= 0", req.WarmupSteps)
	case !(req.LabelSmoothing >= 0 && req.LabelSmoothing < 1):
		return sdk.InvalidInputf("label_smoothing %g: expected 0 <= label_smoothing < 1", req.LabelSmoothing)
	case !(req.MaskRate >= 0 && req.MaskRate < 1):
		return sdk.InvalidInputf("mask_rate %g: expected 0 <= mask_rate < 1", req.MaskRate)
	case req.EvalEvery < 0:
		return sdk.InvalidInputf("eval_every %d: expected >= 0 (0: evaluate only at the end)", req.EvalEvery)
	case !(req.TargetProb >= 0 && req.TargetProb <= 1):
		return sdk.InvalidInputf("target_prob %g: expected 0..1 (0: never stop early)", req.TargetProb)
	}
	return nil
}

// LengthBatches is one epoch of batches: example indices grouped by
// length (so a batch needs no padding), shuffled within each length,
// cut into batches of at most size, and the batches shuffled. Every
// example appears once; a length's last batch may be smaller.
func LengthBatches(lengths []int, size int, rng *rand.Rand) [][]int {
	byLen := map[int][]int{}
	for i, n := range lengths {
		byLen[n] = append(byLen[n], i)
	}
	keys := make([]int, 0, len(byLen))
	for n := range byLen {
		keys = append(keys, n)
	}
	sort.Ints(keys) // map order is random; the seed must fix the batches
	var batches [][]int
	for _, n := range keys {
		idx := byLen[n]
		rng.Shuffle(len(idx), func(i, j int) { idx[i], idx[j] = idx[j], idx[i] })
		for len(idx) > 0 {
			k := min(size, len(idx))
			batches = append(batches, idx[:k:k])
			idx = idx[k:]
		}
	}
	rng.Shuffle(len(batches), func(i, j int) { batches[i], batches[j] = batches[j], batches[i] })
	return batches
}

// TrainSpec is what a backend supplies to RunTraining: the validated
// request, its store, and its objective and evaluation.
type TrainSpec struct {
	Req   sdk.TrainRequest
	Store *Store
	// Lengths[i] is the token length of Req.Examples[i]; batches hold
	// examples of one length.
	Lengths []int
	// Loss builds, in s, the summed loss of a micro-batch (indices into
	// Req.Examples) from the store's parameters, and the number of terms
	// summed (e.g. predicted tokens). A step's loss is the sum over its
	// micro-batches divided by their total count. The micro-batches of a
	// step may run at the same time, each on its own OS thread with its own
	// scope and rng (seeded from Req.Seed, the step and the micro-batch),
	// so Loss must not write shared state.
	Loss func(s *Scope, batch []int, rng *rand.Rand) (sum *ts.Tensor, count int)
	// Evaluate returns the mean answer probability and top-1 accuracy of
	// the evaluation examples. It runs with grad mode off, and may spread
	// independent work (e.g. one batch of examples per call) over the run's
	// worker threads with each.
	Evaluate func(each Parallel) (meanProb, accuracy float64, err error)
	// Progress, when non-nil, receives the reports.
	Progress func(sdk.TrainProgress)
}

// Parallel calls fn(0..n-1), spreading the calls over worker threads,
// and returns the first error. Calls must be independent: which thread
// runs which call, and in which order, is not fixed.
type Parallel func(n int, fn func(k int) error) error

// MicroBatches is how many parts each batch is split into. The split is
// part of the arithmetic (it fixes the order in which losses and gradients
// are summed), so results do not depend on how many parts run at once: up
// to the libtorch thread count (the model's threads option), each part on
// its own core with single-threaded ops, which for models of a few million
// parameters is much faster than multi-threaded ops on one batch.
const MicroBatches = 2

// RunTraining trains the store's parameters in place: AdamW (see
// DefaultAdamW) with WarmupLinearLR, gradients clipped to MaxGradNorm,
// batches from LengthBatches drawn by a PCG seeded with Req.Seed, each
// split into MicroBatches. It reports the running loss at least every 10
// steps, evaluates every Req.EvalEvery steps and at the end, and stops
// early once the evaluated mean answer probability reaches Req.TargetProb
// > 0. On success the store holds the trained weights, which no longer
// require grad; on error or cancellation (checked between steps) it holds
// the original weights, bit for bit. The final report (evaluated, with
// Done set) is returned and not passed to Progress, as the sdk's plugin
// server sends it on its own. Results are bit-identical for the same
// request, seed and weights, whatever the thread count.
func RunTraining(ctx context.Context, spec TrainSpec) (sdk.TrainProgress, error) {
	req := spec.Req
	if len(spec.Lengths) != len(req.Examples) {
		return sdk.TrainProgress{}, fmt.Errorf("train: %d lengths for %d examples", len(spec.Lengths), len(req.Examples))
	}
	start := time.Now()
	progress := spec.Progress
	if progress == nil {
		progress = func(sdk.TrainProgress) {}
	}
	// libtorch keeps grad mode, errors and the OpenMP thread count per OS
	// thread: the whole run stays on one.
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	w := startWorkers(min(max(NumThreads(), 1), MicroBatches))
	defer w.stop()

	tr, err := spec.Store.BeginTraining()
	if err != nil {
		return sdk.TrainProgress{}, err
	}
	defer tr.Rollback() // no-op after Commit
	opt, err := NewAdamW(tr.Params(), DefaultAdamW(req.WeightDecay))
	if err != nil {
		return sdk.TrainProgress{}, fmt.Errorf("train: %w", err)
	}
	defer opt.Close()
	opt.workers = w.size()

	batchRNG := rand.New(rand.NewPCG(uint64(req.Seed), 0x6b6e63746c)) // "knctl"
	every := min(max(req.Steps/100, 1), 10)
	var (
		queue   [][]int
		lossSum float64
		lossN   int
		last    sdk.TrainProgress
	)
	report := func(step int) sdk.TrainProgress {
		p := sdk.TrainProgress{Step: step, Steps: req.Steps, Loss: last.Loss, Seconds: time.Since(start).Seconds()}
		if lossN > 0 {
			p.Loss = lossSum / float64(lossN)
			lossSum, lossN = 0, 0
		}
		last = p
		return p
	}
	// Evaluation builds no graph, on any of the workers.
	noGradEach := func(n int, fn func(k int) error) error {
		return w.each(n, func(k int) error { return NoGrad(func() error { return fn(k) }) })
	}
	evaluate := func(p *sdk.TrainProgress) error {
		var err error
		p.MeanAnswerProb, p.Accuracy, err = spec.Evaluate(noGradEach)
		if err != nil {
			return fmt.Errorf("train: evaluate at step %d: %w", p.Step, err)
		}
		p.Evaluated = true
		p.Seconds = time.Since(start).Seconds()
		return nil
	}

	var final *sdk.TrainProgress
	for step := 0; step < req.Steps; step++ {
		if err := ctx.Err(); err != nil {
			return sdk.TrainProgress{}, fmt.Errorf("train: stopped before step %d of %d: %w", step+1, req.Steps, err)
		}
		if len(queue) == 0 {
			queue = LengthBatches(spec.Lengths, req.BatchSize, batchRNG)
		}
		batch := queue[0]
		queue = queue[1:]
		loss, err := trainStep(spec, w, opt, batch, step, WarmupLinearLR(req.LearningRate, step, req.WarmupSteps, req.Steps))
		if err != nil {
			return sdk.TrainProgress{}, fmt.Errorf("train: step %d: %w", step+1, err)
		}
		lossSum += loss
		lossN++
		done := step + 1
		switch {
		case done == req.Steps:
			// the final evaluation follows the loop
		case req.EvalEvery > 0 && done%req.EvalEvery == 0:
			p := report(done)
			if err := evaluate(&p); err != nil {
				return sdk.TrainProgress{}, err
			}
			if req.TargetProb > 0 && p.MeanAnswerProb >= req.TargetProb {
				p.Stopped = StoppedTargetProb
				final = &p // returned, not reported: see RunTraining
				break
			}
			progress(p)
		case done%every == 0:
			progress(report(done))
		}
		if final != nil {
			break
		}
	}
	if final == nil {
		p := report(req.Steps)
		if err := evaluate(&p); err != nil {
			return sdk.TrainProgress{}, err
		}
		final = &p
	}
	if err := tr.Commit(); err != nil {
		return sdk.TrainProgress{}, fmt.Errorf("train: %w", err)
	}
	final.Done = true
	final.Seconds = time.Since(start).Seconds()
	return *final, nil
}

// splitBatch cuts a batch into up to MicroBatches contiguous parts of
// near-equal size.
func splitBatch(batch []int) [][]int {
	n := min(MicroBatches, len(batch))
	parts := make([][]int, n)
	for k := range parts {
		lo, hi := k*len(batch)/n, (k+1)*len(batch)/n
		parts[k] = batch[lo:hi:hi]
	}
	return parts
}

// trainStep runs forward and backward on the micro-batches of one batch,
// clips the gradients, updates the parameters with learning rate lr and
// zeroes the gradients. It returns the batch's loss.
func trainStep(spec TrainSpec, w *workers, opt *AdamW, batch []int, step int, lr float64) (float64, error) {
	parts := splitBatch(batch)
	n := len(parts)
	scopes := make([]*Scope, n)
	sums := make([]*ts.Tensor, n)
	counts := make([]int, n)
	vals := make([]float64, n)
	for k := range scopes {
		scopes[k] = NewScope()
		defer scopes[k].Close() // frees the graphs' activations
	}
	// Forward: each part's summed loss.
	err := w.each(n, func(k int) error {
		s := scopes[k]
		rng := rand.New(rand.NewPCG(uint64(spec.Req.Seed), uint64(step)*MicroBatches+uint64(k)))
		sums[k], counts[k] = spec.Loss(s, parts[k], rng)
		v := s.Float32s(sums[k])
		if err := s.Err(); err != nil {
			return fmt.Errorf("forward: %w", err)
		}
		vals[k] = float64(v[0])
		return nil
	})
	if err != nil {
		return 0, err
	}
	total, sum := 0, 0.0
	for k := range parts {
		total += counts[k]
		sum += vals[k]
	}
	if total <= 0 {
		return 0, fmt.Errorf("the batch has no loss terms")
	}
	loss := sum / float64(total)
	if math.IsNaN(loss) || math.IsInf(loss, 0) {
		return 0, fmt.Errorf("loss is %g (learning rate %g too high?)", loss, lr)
	}
	// Backward: each part's share of the mean, accumulated into the
	// parameters' gradients (libtorch serialises the accumulation; the sum
	// of two terms does not depend on their order).
	err = w.each(n, func(k int) error {
		s := scopes[k]
		l := s.Scale(sums[k], 1/float64(total))
		if err := s.Err(); err != nil {
			return fmt.Errorf("backward: %w", err)
		}
		if err := l.Backward(); err != nil {
			return fmt.Errorf("backward: %w", err)
		}
		s.Close()
		return nil
	})
	if err != nil {
		_ = opt.ZeroGrad()
		return 0, err
	}
	if _, err := opt.ClipGradNorm(MaxGradNorm); err != nil {
		return 0, err
	}
	if err := opt.Step(lr); err != nil {
		return 0, err
	}
	if err := opt.ZeroGrad(); err != nil {
		return 0, err
	}
	return loss, nil
}

// workers runs the parts of a step: part 0 on the calling goroutine, the
// others on helpers, each locked to its own OS thread with libtorch's
// intra-op threads and OpenBLAS at one thread for the run.
type workers struct {
	jobs        []chan func()
	done        chan struct{}
	prevThreads int
	prevBLAS    int
}

// startWorkers prepares n-way parallelism; the caller must be locked to
// its OS thread, and must call stop.
func startWorkers(n int) *workers {
	w := &workers{done: make(chan struct{}), prevThreads: NumThreads(), prevBLAS: BLASThreads()}
	SetNumThreads(1)
	SetBLASThreads(1)
	for i := 1; i < n; i++ {
		ch := make(chan func())
		w.jobs = append(w.jobs, ch)
		ready := make(chan struct{})
		go func() {
			runtime.LockOSThread()
			defer runtime.UnlockOSThread()
			SetNumThreads(1) // OpenMP's thread count is per OS thread
			close(ready)
			for job := range ch {
				job()
			}
			SetNumThreads(w.prevThreads)
			w.done <- struct{}{}
		}()
		<-ready
	}
	return w
}

// each runs fn(0..n-1), spreading the calls over the workers, and returns
// the first error.
func (w *workers) each(n int, fn func(k int) error) error {
	errs := make([]error, n)
	call := func(k int) {
		defer func() {
			if r := recover(); r != nil {
				errs[k] = fmt.Errorf("internal error: %v", r)
			}
		}()
		errs[k] = fn(k)
	}
	for k := 0; k < n; {
		started := 0
		for _, ch := range w.jobs {
			if k+1+started >= n {
				break
			}
			kk := k + 1 + started
			ch <- func() { call(kk); w.done <- struct{}{} }
			started++
		}
		call(k)
		for range started {
			<-w.done
		}
		k += 1 + started
	}
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}

// size is the number of workers, the caller included.
func (w *workers) size() int { return 1 + len(w.jobs) }

// stop ends the helpers and restores the thread counts.
func (w *workers) stop() {
	for _, ch := range w.jobs {
		close(ch)
		<-w.done
	}
	w.jobs = nil
	SetNumThreads(w.prevThreads)
	if w.prevBLAS > 0 {
		SetBLASThreads(w.prevBLAS)
	}
}
