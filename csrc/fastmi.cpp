// The module fastmi._C: importing it only has to run the static kernel registrations of
// csrc/cpu/<family>.cpp and csrc/cuda/<family>.cu (TORCH_LIBRARY_IMPL per dispatch key). The ops'
// schemas are defined once, in Python (fastmi/<family>/ops.py, through fastmi._core.fused_op), for
// both these kernels and the Triton ones; the dispatcher accepts kernels registered before the schema.
#include <Python.h>

extern "C" PyObject* PyInit__C(void) {
  static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_C", nullptr, -1, nullptr};
  return PyModule_Create(&module);
}
