package torch

/*
#cgo LDFLAGS: -ldl
#define _GNU_SOURCE
#include <dlfcn.h>

// OpenBLAS is loaded as libtorch's BLAS (Debian's libblas.so.3), not linked
// by name, so its thread controls are looked up at run time; another BLAS
// simply lacks them.
typedef int (*knctl_get_fn)(void);
typedef void (*knctl_set_fn)(int);

static int knctl_blas_threads(void) {
	knctl_get_fn f = (knctl_get_fn)dlsym(RTLD_DEFAULT, "openblas_get_num_threads");
	return f ? f() : -1;
}

static int knctl_set_blas_threads(int n) {
	knctl_set_fn f = (knctl_set_fn)dlsym(RTLD_DEFAULT, "openblas_set_num_threads");
	if (!f) return 0;
	f(n);
	return 1;
}
*/
import "C"

// BLASThreads is OpenBLAS's thread count, or -1 when libtorch's BLAS is
// not OpenBLAS.
func BLASThreads() int { return int(C.knctl_blas_threads()) }

// SetBLASThreads sets OpenBLAS's (process-wide) thread count; it reports
// false, changing nothing, when libtorch's BLAS is not OpenBLAS.
// OPENBLAS_NUM_THREADS only counts when set before the library loads.
func SetBLASThreads(n int) bool {
	if n < 1 {
		return false
	}
	return C.knctl_set_blas_threads(C.int(n)) == 1
}
