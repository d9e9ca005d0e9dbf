"""The separable benchmark cases, shared by bench_separable.py (CPU) and gpu.py (CUDA).

Baselines build the n x n matrix: ``reference`` is x @ y.T then fastmi.reference's InfoNCE (eager),
``compiled`` is torch.compile of the same; ``fused`` never builds it.
"""
from __future__ import annotations

import functools

import torch

import fastmi.functional as F
from fastmi import reference as R

D = 128
# name -> (fused call, dense reference call)
CASES = {
    # InfoNCE / CPC with a dot-product critic
    "infonce": (lambda x, y, b: F.infonce_separable(x, y, backend=b),
                lambda x, y: R.infonce(x @ y.T)),
    # CLIP / NT-Xent: cosine critic, temperature 0.07, both directions
    "clip": (lambda x, y, b: F.infonce_separable(x, y, temperature=0.07, normalize=True, symmetric=True, backend=b),
             lambda x, y: R.infonce_separable(x, y, temperature=0.07, normalize=True, symmetric=True)),
}


@functools.lru_cache(maxsize=None)
def compiled_reference(name: str):
    return torch.compile(CASES[name][1])


def loss_fn(name: str, impl: str, backend: str = "auto"):
    fused, ref = CASES[name]
    if impl == "fused":
        return lambda x, y: fused(x, y, backend)
    if impl == "reference":
        return ref
    if impl == "compiled":
        return compiled_reference(name)
    raise ValueError(impl)


def inputs(n: int, d: int = D, device="cpu", dtype=torch.float32):
    """(x, y): y a noisy copy of x, so the bound is far from 0 as in training."""
    gen = torch.Generator(device="cpu").manual_seed(n)
    x = torch.randn(n, d, generator=gen)
    y = x + 0.5 * torch.randn(n, d, generator=gen)
    return x.div(d ** 0.5).to(device=device, dtype=dtype), y.div(d ** 0.5).to(device=device, dtype=dtype)


def step(fn, xy):
    """One forward + backward from fresh leaves; returns the gradients."""
    x, y = (t.detach().requires_grad_(True) for t in xy)
    fn(x, y).loss.backward()
    return x.grad, y.grad


def grad_bytes(xy) -> int:
    return sum(t.numel() * t.element_size() for t in xy)
