// Schemas of fastmi's custom ops. Kernels register their implementations per dispatch key in
// csrc/cpu/<family>.cpp and csrc/cuda/<family>.cu; fake (meta) kernels and autograd are
// registered from Python (fastmi/ops/<family>.py).
#include <torch/library.h>
#include <Python.h>

// Importing fastmi._C only has to run the static registrations below.
extern "C" PyObject* PyInit__C(void) {
  static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_C", nullptr, -1, nullptr};
  return PyModule_Create(&module);
}

TORCH_LIBRARY(fastmi, m) {
  m.def(
      "critic_lse(Tensor scores, Tensor? pos_index, Tensor? pos_mask, int neg_mode, "
      "float clip, int need) -> Tensor");
  m.def(
      "critic_lse_backward(Tensor grad_stats, Tensor scores, Tensor? pos_index, "
      "Tensor? pos_mask, int neg_mode, float clip, int need, Tensor stats) -> Tensor");
  m.def(
      "separable_lse(Tensor x, Tensor y, Tensor x_scale, Tensor y_scale, Tensor? pos_index, int exclude, "
      "bool cols) -> (Tensor, Tensor, Tensor)");
  m.def(
      "separable_lse_backward(Tensor grad_row, Tensor grad_col, Tensor grad_pos, Tensor x, Tensor y, "
      "Tensor x_scale, "
      "Tensor y_scale, Tensor? pos_index, int exclude, bool cols, Tensor row_lse, Tensor col_lse) "
      "-> (Tensor, Tensor, Tensor, Tensor)");
  // fd_jacobian (csrc/cpu/fd_jacobian.cpp): perturbation in the span of the batch, and the
  // per-sample squared difference of the smoothness penalty.
  m.def("fd_perturb(Tensor x, Tensor seed, Tensor zeta, int noise, bool center) -> Tensor");
  m.def("fd_sqdiff(Tensor f_clean, Tensor f_perturbed, int hw) -> Tensor");
  m.def("fd_sqdiff_backward(Tensor grad, Tensor f_clean, Tensor f_perturbed, int hw) -> (Tensor, Tensor)");
  // MMD^2 with the inverse-multiquadric kernel; returns (value, dvalue/dx, dvalue/dy), the gradients
  // computed in the same pass when want_grad (else 0 x K).
  m.def("mmd_imq(Tensor x, Tensor y, float[] scales, bool unbiased, bool want_grad) -> (Tensor, Tensor, Tensor)");
  // softmax_stats: x is B x C x H x W; pool = k x k average-pool kernel of the second scale (0: none)
  m.def("softmax_stats(Tensor x, int pool, float eps) -> (Tensor, Tensor, Tensor, Tensor)");
  m.def(
      "softmax_stats_backward(Tensor grad_ent, Tensor grad_marg, Tensor grad_marg_pool, Tensor x, "
      "Tensor stats, int pool, float eps) -> Tensor");
}
