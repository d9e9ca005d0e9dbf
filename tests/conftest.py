"""Test set-up: without a GPU, Triton kernels run through the interpreter on CPU tensors.

TRITON_INTERPRET must be set before triton is imported, hence here, before fastmi is imported.
"""
import os
import sys

import torch

# tests/ on the path: oracle.py and helpers.py are imported by the test modules of every folder
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

# Hypothesis: a fixed example stream by default, so CI cannot fail on an example no earlier run saw;
# `pytest --hypothesis-profile=explore` searches with fresh random examples.
from hypothesis import settings  # noqa: E402

settings.register_profile("ci", derandomize=True, print_blob=True)
settings.register_profile("explore", derandomize=False)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
