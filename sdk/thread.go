package sdk

import (
	"context"
	"fmt"
	"runtime"
	"runtime/debug"
)

// lockedThread runs functions one at a time on a single OS thread.
//
// Tensor libraries keep state per OS thread — libtorch's grad mode and
// thread count, gotch's last error — while Go moves goroutines between
// threads at will. A model plugin therefore runs every call on one locked
// thread, so a setting made in Load holds for later calls and an error is
// read on the thread that raised it.
type lockedThread struct {
	fns chan func()
}

func newLockedThread() *lockedThread {
	t := &lockedThread{fns: make(chan func())}
	go func() {
		runtime.LockOSThread()
		for f := range t.fns {
			f()
		}
	}()
	return t
}

// do runs f on the thread and waits. A panic in f becomes an error, so a
// bug in a model never takes the plugin process down with it.
func (t *lockedThread) do(f func()) (err error) {
	done := make(chan struct{})
	t.fns <- func() {
		defer close(done)
		defer func() {
			if r := recover(); r != nil {
				err = fmt.Errorf("model plugin panic: %v\n%s", r, debug.Stack())
			}
		}()
		f()
	}
	<-done
	return err
}

func onThread[T any](t *lockedThread, f func() (T, error)) (T, error) {
	var out T
	var err error
	if perr := t.do(func() { out, err = f() }); perr != nil {
		return out, perr
	}
	return out, err
}

// lockedModel runs every call of a Model on one locked thread.
type lockedModel struct {
	m Model
	t *lockedThread
}

func (l *lockedModel) Info(ctx context.Context) (ModelInfo, error) {
	return onThread(l.t, func() (ModelInfo, error) { return l.m.Info(ctx) })
}

func (l *lockedModel) Tokenize(ctx context.Context, text string) (Encoding, error) {
	return onThread(l.t, func() (Encoding, error) { return l.m.Tokenize(ctx, text) })
}

func (l *lockedModel) Predict(ctx context.Context, req PredictRequest) (Prediction, error) {
	return onThread(l.t, func() (Prediction, error) { return l.m.Predict(ctx, req) })
}

func (l *lockedModel) Activations(ctx context.Context, req ActivationsRequest) (Activations, error) {
	return onThread(l.t, func() (Activations, error) { return l.m.Activations(ctx, req) })
}

func (l *lockedModel) Gradients(ctx context.Context, req GradientsRequest) (Gradients, error) {
	return onThread(l.t, func() (Gradients, error) { return l.m.Gradients(ctx, req) })
}

func (l *lockedModel) Embeddings(ctx context.Context, ids []int) ([][]float32, error) {
	return onThread(l.t, func() ([][]float32, error) { return l.m.Embeddings(ctx, ids) })
}

func (l *lockedModel) ValueSlots(ctx context.Context, layer int, neurons []int) ([][]float32, error) {
	return onThread(l.t, func() ([][]float32, error) { return l.m.ValueSlots(ctx, layer, neurons) })
}

func (l *lockedModel) SetValueSlots(ctx context.Context, layer int, neurons []int, values [][]float32) (EditID, error) {
	return onThread(l.t, func() (EditID, error) { return l.m.SetValueSlots(ctx, layer, neurons, values) })
}

func (l *lockedModel) UndoEdit(ctx context.Context, id EditID) error {
	_, err := onThread(l.t, func() (struct{}, error) { return struct{}{}, l.m.UndoEdit(ctx, id) })
	return err
}

func (l *lockedModel) ApplyNoise(ctx context.Context, spec NoiseSpec) error {
	_, err := onThread(l.t, func() (struct{}, error) { return struct{}{}, l.m.ApplyNoise(ctx, spec) })
	return err
}

func (l *lockedModel) RemoveNoise(ctx context.Context) error {
	_, err := onThread(l.t, func() (struct{}, error) { return struct{}{}, l.m.RemoveNoise(ctx) })
	return err
}

func (l *lockedModel) Save(ctx context.Context, dir string) error {
	_, err := onThread(l.t, func() (struct{}, error) { return struct{}{}, l.m.Save(ctx, dir) })
	return err
}

// Train runs the model's training, if it has any, on the locked thread.
func (l *lockedModel) Train(ctx context.Context, req TrainRequest, progress func(TrainProgress)) (TrainProgress, error) {
	tr, ok := l.m.(Trainer)
	if !ok {
		return TrainProgress{}, ErrNoTraining
	}
	return onThread(l.t, func() (TrainProgress, error) { return tr.Train(ctx, req, progress) })
}
