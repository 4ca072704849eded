package torch

import (
	"github.com/sugarme/gotch/ts"
)

// CrossEntropySum is torch.nn.functional.cross_entropy(logits [N,V],
// labels [N] int64, reduction="sum", label_smoothing=smoothing): the sum
// over rows of (1-smoothing)·(-log p[label]) + smoothing·(mean over the
// vocabulary of -log p). Rows labelled -100 are ignored.
func (s *Scope) CrossEntropySum(logits, labels *ts.Tensor, smoothing float64) *ts.Tensor {
	if !s.ok(logits, labels) {
		return nil
	}
	const reductionSum, ignoreIndex = 2, -100
	// A zero Tensor is libtorch's undefined tensor: no class weights.
	t, err := logits.CrossEntropyLoss(labels, &ts.Tensor{}, reductionSum, ignoreIndex, smoothing, false)
	return s.track("cross entropy", t, err)
}
