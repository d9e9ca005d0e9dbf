"""The critic_lse benchmark cases, shared by bench_critic_lse.py (CPU) and gpu.py (CUDA)."""
from __future__ import annotations

import functools

import torch

import fastmi.functional as F
from fastmi import reference as R

# name -> (fused call, reference call); the regularized variant is ReDV (ReMINE) with lambda = 0.1.
CASES = {
    "infonce": (lambda s, b: F.infonce(s, backend=b), lambda s: R.infonce(s)),
    "dv": (lambda s, b: F.dv(s, backend=b), lambda s: R.dv(s)),
    "nwj": (lambda s, b: F.nwj(s, backend=b), lambda s: R.nwj(s)),
    "smile": (lambda s, b: F.smile(s, clip=5.0, backend=b), lambda s: R.smile(s, clip=5.0)),
    "redv": (lambda s, b: F.dv(s, reg_weight=0.1, backend=b), lambda s: R.dv(s, reg_weight=0.1)),
}


@functools.lru_cache(maxsize=None)
def compiled_reference(name: str):
    """torch.compile of the reference loss (the strongest unfused baseline)."""
    return torch.compile(CASES[name][1])


def loss_fn(name: str, impl: str, backend: str = "auto"):
    fused, ref = CASES[name]
    if impl == "fused":
        return lambda s: fused(s, backend)
    if impl == "reference":
        return ref
    if impl == "compiled":
        return compiled_reference(name)
    raise ValueError(impl)


def scores(n: int, device="cpu", dtype=torch.float32) -> torch.Tensor:
    gen = torch.Generator(device="cpu").manual_seed(n)
    return (2 * torch.randn(n, n, generator=gen)).to(device=device, dtype=dtype)


def step(fn, s: torch.Tensor):
    """One forward + backward from a fresh leaf; returns the gradient."""
    leaf = s.detach().requires_grad_(True)
    fn(leaf).loss.backward()
    return leaf.grad
