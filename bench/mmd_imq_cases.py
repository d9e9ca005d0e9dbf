"""The mmd_imq benchmark cases, shared by bench_mmd_imq.py (CPU), bench/memory.py and gpu.py (CUDA).

Each case is MMD^2 between two n x K samples (K = 64, the VIM CIFAR latent size) with the IMQ kernel
C / (C + ||a - b||^2): "mmd_imq" is VIM's single scale C = K, "mmd_imq_wae" the 7-scale WAE sum.
impl: "fused" (fastmi's kernels), "reference" (dense eager), "compiled" (torch.compile of the
reference), "keops" (pykeops LazyTensors, only when pykeops is installed).
"""
from __future__ import annotations

import functools
import importlib.util

import torch

import fastmi.functional as F
from fastmi import reference as R

K = 64
CASES = {
    "mmd_imq": dict(scales=None),
    "mmd_imq_wae": dict(scales=F.WAE_SCALES),
}
HAVE_KEOPS = importlib.util.find_spec("pykeops") is not None


def _cs(name: str, K: int) -> list:
    s = CASES[name]["scales"]
    return [float(K)] if s is None else [K * r for r in s]


def _reference(name):
    return lambda x, y: R.mmd_imq(x, y, scales=_cs(name, x.shape[1]))


@functools.lru_cache(maxsize=None)
def compiled_reference(name: str):
    return torch.compile(_reference(name))


def _keops(name):
    from pykeops.torch import LazyTensor

    def ksum(a, b, cs):
        d2 = ((LazyTensor(a[:, None, :]) - LazyTensor(b[None, :, :])) ** 2).sum(-1)
        k = sum(c / (c + d2) for c in cs)
        return k.sum(dim=1).sum()

    def fn(x, y):
        cs, n, m = _cs(name, x.shape[1]), x.shape[0], y.shape[0]
        diag = len(cs)
        return ((ksum(x, x, cs) - n * diag) / (n * (n - 1)) + (ksum(y, y, cs) - m * diag) / (m * (m - 1))
                - 2 * ksum(x, y, cs) / (n * m))

    return fn


def impls() -> list:
    return ["fused", "reference", "compiled"] + (["keops"] if HAVE_KEOPS else [])


def loss_fn(name: str, impl: str, backend: str = "auto"):
    if impl == "fused":
        scales = CASES[name]["scales"]
        return lambda x, y: F.mmd_imq(x, y, scales=scales, backend=backend)
    if impl == "reference":
        return _reference(name)
    if impl == "compiled":
        return compiled_reference(name)
    if impl == "keops":
        return _keops(name)
    raise ValueError(impl)


def inputs(n: int, device="cpu", dtype=torch.float32):
    """Codes and a prior sample, n x K each."""
    gen = torch.Generator(device="cpu").manual_seed(n)
    x = 0.5 * torch.randn(n, K, generator=gen) + 0.2
    y = torch.randn(n, K, generator=gen)
    return x.to(device=device, dtype=dtype), y.to(device=device, dtype=dtype)


def step(fn, xy):
    """One forward + backward from fresh leaves; returns the gradients."""
    x, y = (t.detach().requires_grad_(True) for t in xy)
    fn(x, y).backward()
    return x.grad, y.grad


def input_bytes(xy) -> int:
    return sum(t.numel() * t.element_size() for t in xy)


grad_bytes = input_bytes  # what bench.memory subtracts: the gradients of x and y
