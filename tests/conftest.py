"""Test set-up: without a GPU, Triton kernels run through the interpreter on CPU tensors.

TRITON_INTERPRET must be set before triton is imported, hence here, before fastmi is imported.
"""
import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
