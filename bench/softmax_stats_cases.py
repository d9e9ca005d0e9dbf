"""The softmax_stats (Neural Bayes MIM) benchmark cases, shared by bench_softmax_stats.py (CPU),
softmax_stats_memory.py and gpu.py (CUDA).

Cases: "cifar": the four post-ReLU states of the paper's CIFAR CNN at batch 500 (200x30x30,
500x13x13, 700x11x11, 1000x3x3), each with its 2x2-pooled scale (8 scales), NCHW; "cifar_cl": the
same in channels-last; "h0pool": one 500x200x15x15 state without pooling (the issue's yardstick).
"""
from __future__ import annotations

import functools

import torch

import fastmi.functional as F
from fastmi import reference as R

CASES = {
    "cifar": ([(500, 200, 30, 30), (500, 500, 13, 13), (500, 700, 11, 11), (500, 1000, 3, 3)], 2, False),
    "cifar_cl": ([(500, 200, 30, 30), (500, 500, 13, 13), (500, 700, 11, 11), (500, 1000, 3, 3)], 2, True),
    "h0pool": ([(500, 200, 15, 15)], 0, False),
}


def states(case: str, device="cpu", dtype=torch.float32, batch: int | None = None) -> list[torch.Tensor]:
    """Post-ReLU states (as the CNN feeds them to the softmax), fixed seed."""
    shapes, _, cl = CASES[case]
    gen = torch.Generator().manual_seed(0)
    out = []
    for s in shapes:
        s = (batch or s[0],) + tuple(s[1:])
        x = torch.relu(torch.randn(*s, generator=gen)).to(device=device, dtype=dtype)
        out.append(x.contiguous(memory_format=torch.channels_last) if cl else x)
    return out


def _reference(pool):
    return lambda xs: R.nb_mim(xs, pool=pool)


@functools.lru_cache(maxsize=None)
def compiled_reference(case: str):
    """torch.compile of the reference loss (the strongest unfused baseline)."""
    return torch.compile(_reference(CASES[case][1]))


def loss_fn(case: str, impl: str, backend: str = "auto"):
    pool = CASES[case][1]
    if impl == "fused":
        return lambda xs: F.nb_mim(xs, pool=pool, backend=backend)
    if impl == "reference":
        return _reference(pool)
    if impl == "compiled":
        return compiled_reference(case)
    raise ValueError(impl)


def step(fn, xs: list[torch.Tensor]):
    """One forward + backward from fresh leaves; returns the gradients."""
    leaves = [x.detach().requires_grad_(True) for x in xs]
    fn(leaves).loss.backward()
    return [x.grad for x in leaves]
