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
  // softmax_stats: x is B x C x H x W; pool = k x k average-pool kernel of the second scale (0: none)
  m.def("softmax_stats(Tensor x, int pool, float eps) -> (Tensor, Tensor, Tensor, Tensor)");
  m.def(
      "softmax_stats_backward(Tensor grad_ent, Tensor grad_marg, Tensor grad_marg_pool, Tensor x, "
      "Tensor stats, int pool, float eps) -> Tensor");
}
