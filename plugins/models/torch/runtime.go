package torch

/*
#include <stdint.h>
// Defined in gotch's libtch (torch_api.cpp), which v0.7.0 does not wrap in Go.
void at_manual_seed(int64_t seed);
void at_set_num_threads(int n);
int at_get_num_threads();
*/
import "C"

// ManualSeed seeds libtorch's global CPU generator.
func ManualSeed(seed int64) { C.at_manual_seed(C.int64_t(seed)) }

// SetNumThreads sets libtorch's intra-op thread count.
func SetNumThreads(n int) {
	if n > 0 {
		C.at_set_num_threads(C.int(n))
	}
}

// NumThreads is libtorch's intra-op thread count.
func NumThreads() int { return int(C.at_get_num_threads()) }
