// knctl_compat.h: lets gotch v0.7.0 (generated for libtorch 1.11) compile
// against Debian's libtorch 1.13.1.
//
// It is force-included (-include, see lib.go) before libtch/torch_api.cpp.
// torch_api_generated.cpp.h calls `torch::X(...)` for ops whose signature
// changed or which were removed in 1.13. Namespace torch only pulls in `at`
// through `using namespace at;`, so a function declared here, directly in
// namespace torch, is found first by qualified lookup and hides every
// at::X overload of the same name. Each shim therefore keeps the OLD 1.11
// signature and forwards to the 1.13 op; where the generated code also calls
// overloads that are still valid, `using at::X;` re-exports them.
// Ops that no longer exist throw; PROTECT() in torch_api.cpp turns that into
// an ordinary Go error ("Libtorch API Error").
#pragma once

#include <torch/torch.h>

#include <array>
#include <stdexcept>
#include <string>
#include <tuple>

namespace torch {
namespace knctl_compat {

[[noreturn]] inline void removed(const char *op) {
  throw std::runtime_error(std::string(op) +
                           " was removed in libtorch 1.13 (not available in this build)");
}

// 1.11 passed "absent" optional tensors as undefined Tensors; 1.13 wants nullopt.
inline c10::optional<at::Tensor> opt(const at::Tensor &t) {
  if (t.defined()) return t;
  return c10::nullopt;
}

}  // namespace knctl_compat

// _cat / _cat_out were folded into cat / cat_out.
inline at::Tensor _cat(at::TensorList tensors, int64_t dim) {
  return at::cat(tensors, dim);
}
inline at::Tensor &_cat_out(at::Tensor &out, at::TensorList tensors, int64_t dim) {
  return at::cat_out(out, tensors, dim);
}

// _det_lu_based_helper -> _linalg_det, both return (det, LU, pivots).
inline std::tuple<at::Tensor, at::Tensor, at::Tensor> _det_lu_based_helper(const at::Tensor &self) {
  return at::_linalg_det(self);
}

// _linalg_qr_helper -> linalg_qr.
inline std::tuple<at::Tensor, at::Tensor> _linalg_qr_helper(const at::Tensor &self, c10::string_view mode) {
  return at::linalg_qr(self, mode);
}

// _s_where -> where.
inline at::Tensor _s_where(const at::Tensor &condition, const at::Tensor &self, const at::Tensor &other) {
  return at::where(condition, self, other);
}

// 1.13 inserted an `offsets` argument before `axis`.
inline at::Tensor _segment_reduce_backward(const at::Tensor &grad, const at::Tensor &output,
                                           const at::Tensor &data, c10::string_view reduce,
                                           const at::Tensor &lengths, int64_t axis) {
  return at::_segment_reduce_backward(grad, output, data, reduce, knctl_compat::opt(lengths),
                                      c10::nullopt, axis);
}
inline at::Tensor segment_reduce(const at::Tensor &data, c10::string_view reduce,
                                 const at::Tensor &lengths, const at::Tensor &indices,
                                 int64_t axis, bool unsafe, const c10::optional<at::Scalar> &initial) {
  return at::segment_reduce(data, reduce, knctl_compat::opt(lengths), knctl_compat::opt(indices),
                            c10::nullopt, axis, unsafe, initial);
}

// torch.solve(B, A) was removed; linalg's solver returns (X, LU, pivots, info).
inline std::tuple<at::Tensor, at::Tensor> solve(const at::Tensor &self, const at::Tensor &A) {
  auto r = at::_linalg_solve_ex(A, self, /*left=*/true, /*check_errors=*/true);
  return std::make_tuple(std::get<0>(r), std::get<1>(r));
}
inline std::tuple<at::Tensor, at::Tensor> _solve_helper(const at::Tensor &self, const at::Tensor &A) {
  return solve(self, A);
}
inline std::tuple<at::Tensor &, at::Tensor &> solve_out(at::Tensor &solution, at::Tensor &lu,
                                                      const at::Tensor &self, const at::Tensor &A) {
  auto pivots = at::empty({0}, A.options().dtype(at::kInt));
  auto info = at::empty({0}, A.options().dtype(at::kInt));
  at::_linalg_solve_ex_out(solution, lu, pivots, info, A, self, /*left=*/true, /*check_errors=*/true);
  return std::tuple<at::Tensor &, at::Tensor &>(solution, lu);
}

// The CUDA-only weight-norm entry points became device-generic.
inline std::tuple<at::Tensor, at::Tensor> _weight_norm_cuda_interface(const at::Tensor &v,
                                                                      const at::Tensor &g, int64_t dim) {
  return at::_weight_norm_interface(v, g, dim);
}
inline std::tuple<at::Tensor, at::Tensor> _weight_norm_cuda_interface_backward(
    const at::Tensor &grad_w, const at::Tensor &saved_v, const at::Tensor &saved_g,
    const at::Tensor &saved_norms, int64_t dim) {
  return at::_weight_norm_interface_backward(grad_w, saved_v, saved_g, saved_norms, dim);
}

// arange_out(out, start, end) lost its default step; keep (out, end) too.
using at::arange_out;
inline at::Tensor &arange_out(at::Tensor &out, const at::Scalar &start, const at::Scalar &end) {
  return at::arange_out(out, start, end, 1);
}

// bernoulli_out(out, self) is ambiguous in 1.13 (generator vs. p=0.5 overload).
inline at::Tensor &bernoulli_out(at::Tensor &out, const at::Tensor &self) {
  return at::bernoulli_out(out, self, c10::optional<at::Generator>());
}

// col2im_backward is im2col and im2col_backward is col2im.
inline at::Tensor col2im_backward(const at::Tensor &grad_output, at::IntArrayRef kernel_size,
                                  at::IntArrayRef dilation, at::IntArrayRef padding,
                                  at::IntArrayRef stride) {
  return at::im2col(grad_output, kernel_size, dilation, padding, stride);
}
inline at::Tensor &col2im_backward_out(at::Tensor &grad_input, const at::Tensor &grad_output,
                                       at::IntArrayRef kernel_size, at::IntArrayRef dilation,
                                       at::IntArrayRef padding, at::IntArrayRef stride) {
  return at::im2col_out(grad_input, grad_output, kernel_size, dilation, padding, stride);
}
inline at::Tensor im2col_backward(const at::Tensor &grad_output, at::IntArrayRef input_size,
                                  at::IntArrayRef kernel_size, at::IntArrayRef dilation,
                                  at::IntArrayRef padding, at::IntArrayRef stride) {
  return at::col2im(grad_output, input_size, kernel_size, dilation, padding, stride);
}
inline at::Tensor &im2col_backward_out(at::Tensor &grad_input, const at::Tensor &grad_output,
                                       at::IntArrayRef input_size, at::IntArrayRef kernel_size,
                                       at::IntArrayRef dilation, at::IntArrayRef padding,
                                       at::IntArrayRef stride) {
  return at::col2im_out(grad_input, grad_output, input_size, kernel_size, dilation, padding, stride);
}

// grid_sampler_3d_backward gained an output_mask; 1.11 always computed both grads.
inline std::tuple<at::Tensor, at::Tensor> grid_sampler_3d_backward(
    const at::Tensor &grad_output, const at::Tensor &input, const at::Tensor &grid,
    int64_t interpolation_mode, int64_t padding_mode, bool align_corners) {
  return at::grid_sampler_3d_backward(grad_output, input, grid, interpolation_mode, padding_mode,
                                      align_corners, std::array<bool, 2>{true, true});
}

// l1_loss_out is gone; compute l1_loss and write it into `out`.
inline at::Tensor &l1_loss_out(at::Tensor &out, const at::Tensor &self, const at::Tensor &target,
                               int64_t reduction) {
  auto r = at::l1_loss(self, target, reduction);
  out.resize_(r.sizes());
  out.copy_(r);
  return out;
}

// matrix_rank -> linalg_matrix_rank (explicit optional<double> avoids ambiguity).
inline at::Tensor matrix_rank(const at::Tensor &self, bool symmetric) {
  return at::linalg_matrix_rank(self, c10::optional<double>(), c10::optional<double>(), symmetric);
}
inline at::Tensor matrix_rank(const at::Tensor &self, double tol, bool symmetric) {
  return at::linalg_matrix_rank(self, tol, symmetric);
}

// nansum(self, dtype): dim became an optional list before dtype.
using at::nansum;
inline at::Tensor nansum(const at::Tensor &self, at::ScalarType dtype) {
  return at::nansum(self, c10::nullopt, false, dtype);
}

// normal_out(out, Tensor mean, double std) is ambiguous with
// normal_out(out, self, double mean, double std); the non-const `mean`
// makes this shim the best match for the generated call.
using at::normal_out;
inline at::Tensor &normal_out(at::Tensor &out, at::Tensor &mean, double std) {
  return at::normal_out(out, static_cast<const at::Tensor &>(mean), std,
                        c10::optional<at::Generator>());
}

// Removed ops: keep the symbol so the generated wrapper compiles, fail at run time.
inline at::Tensor _det_lu_based_helper_backward_helper(const at::Tensor &, const at::Tensor &,
                                                       const at::Tensor &, const at::Tensor &,
                                                       const at::Tensor &) {
  knctl_compat::removed("_det_lu_based_helper_backward_helper");
}
inline at::Tensor _linalg_inv_out_helper_(const at::Tensor &, const at::Tensor &, const at::Tensor &) {
  knctl_compat::removed("_linalg_inv_out_helper_");
}
inline at::Tensor binary_cross_entropy_with_logits_backward(const at::Tensor &, const at::Tensor &,
                                                           const at::Tensor &, const at::Tensor &,
                                                           const at::Tensor &, int64_t) {
  knctl_compat::removed("binary_cross_entropy_with_logits_backward");
}
inline at::Tensor kl_div_backward(const at::Tensor &, const at::Tensor &, const at::Tensor &,
                                  int64_t, bool) {
  knctl_compat::removed("kl_div_backward");
}
inline at::Tensor l1_loss_backward(const at::Tensor &, const at::Tensor &, const at::Tensor &,
                                   int64_t) {
  knctl_compat::removed("l1_loss_backward");
}
inline at::Tensor l1_loss_backward_out(at::Tensor &, const at::Tensor &, const at::Tensor &,
                                       const at::Tensor &, int64_t) {
  knctl_compat::removed("l1_loss_backward_out");
}
inline std::tuple<at::Tensor, at::Tensor> eig(const at::Tensor &, bool) {
  knctl_compat::removed("eig");
}
inline std::tuple<at::Tensor, at::Tensor> eig_out(at::Tensor &, at::Tensor &, const at::Tensor &, bool) {
  knctl_compat::removed("eig_out");
}
inline std::tuple<at::Tensor, at::Tensor> lstsq(const at::Tensor &, const at::Tensor &) {
  knctl_compat::removed("lstsq");
}
inline std::tuple<at::Tensor, at::Tensor> lstsq_out(at::Tensor &, at::Tensor &, const at::Tensor &,
                                                    const at::Tensor &) {
  knctl_compat::removed("lstsq_out");
}
inline at::Tensor max_unpool2d_backward(const at::Tensor &, const at::Tensor &, const at::Tensor &,
                                        at::IntArrayRef) {
  knctl_compat::removed("max_unpool2d_backward");
}
inline at::Tensor max_unpool2d_backward_out(at::Tensor &, const at::Tensor &, const at::Tensor &,
                                            const at::Tensor &, at::IntArrayRef) {
  knctl_compat::removed("max_unpool2d_backward_out");
}
inline at::Tensor max_unpool3d_backward(const at::Tensor &, const at::Tensor &, const at::Tensor &,
                                        at::IntArrayRef, at::IntArrayRef, at::IntArrayRef) {
  knctl_compat::removed("max_unpool3d_backward");
}
inline at::Tensor max_unpool3d_backward_out(at::Tensor &, const at::Tensor &, const at::Tensor &,
                                            const at::Tensor &, at::IntArrayRef, at::IntArrayRef,
                                            at::IntArrayRef) {
  knctl_compat::removed("max_unpool3d_backward_out");
}

}  // namespace torch
