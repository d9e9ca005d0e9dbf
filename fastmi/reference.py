"""Every fastmi loss on its plain-PyTorch backend: ``fastmi.reference.f(...)`` is
``fastmi.functional.f(..., backend="reference")``, the no-kernel fallback (dense score matrices,
torch ops, differentiable by autograd to any order and by torch.func). Benchmarks time it, and
``torch.compile`` of it, against the fused kernels. (The test oracle is independent of all of this:
tests/oracle.py.)"""
from __future__ import annotations

import functools
import inspect

import torch

from . import functional as _F
from ._core import validate
from ._core.dtypes import upcast


def _on_reference(fn):
    sig = inspect.signature(fn)

    @functools.wraps(fn)
    def run(*args, **kwargs):
        if "backend" in kwargs:
            raise TypeError(f"reference.{fn.__name__}: takes no backend (it is the reference backend)")
        return fn(*args, backend="reference", **kwargs)

    run.__signature__ = sig.replace(parameters=[p for p in sig.parameters.values() if p.name != "backend"])
    run.__module__ = __name__
    return run


def separable_scores(x, y, *, temperature=1.0, normalize=False) -> torch.Tensor:
    """S = x y^T / temperature, or the cosine critic S_ij = <x_i, y_j> / (|x_i| |y_j| temperature)
    with normalize=True, built densely (n x m): what the separable family never builds."""
    x, y = upcast(x), upcast(y)
    if validate.flag(normalize, "normalize", "separable_scores"):
        validate.nonzero_rows(x, "x", "separable_scores")
        validate.nonzero_rows(y, "y", "separable_scores")
        x = x / torch.linalg.vector_norm(x, dim=1, keepdim=True)
        y = y / torch.linalg.vector_norm(y, dim=1, keepdim=True)
    return (x @ y.T) / temperature


_FUNCTIONS = {name: _on_reference(getattr(_F, name)) for name in _F.__all__ if callable(getattr(_F, name))
              and "backend" in inspect.signature(getattr(_F, name)).parameters}
globals().update(_FUNCTIONS)
__all__ = [*_FUNCTIONS, "separable_scores"]
