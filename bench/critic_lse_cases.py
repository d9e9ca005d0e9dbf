"""The critic_lse benchmark cases, shared by bench_critic_lse.py (CPU) and gpu.py (CUDA)."""
from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as TF

import fastmi.functional as F
from fastmi import reference as R
from fastmi.critic_lse.bounds import BOUNDS

def _bound_case(name: str):
    """(fused call, reference call) of a bound of the table at its defaults; a stateful bound (MINE)
    gets a fresh, empty moving average each call and leaves it as it was."""
    bound, fused, ref = BOUNDS[name], getattr(F, name), getattr(R, name)
    if bound.module_state:
        state = bound.module_state[1]
        return (lambda s, b: fused(s, torch.full((), math.nan, dtype=torch.float64), backend=b, **{state: False}),
                lambda s: ref(s, torch.full((), math.nan, dtype=torch.float64), **{state: False}))
    return lambda s, b: fused(s, backend=b), lambda s: ref(s)


# name -> (fused call, reference call): every bound of fastmi's table at its defaults (SMILE: clip 5),
# and ReDV (ReMINE) with lambda = 0.1.
CASES = {name: _bound_case(name) for name in BOUNDS}
CASES["redv"] = (lambda s, b: F.dv(s, reg_weight=0.1, backend=b), lambda s: R.dv(s, reg_weight=0.1))


def _lme_nodiag(s: torch.Tensor) -> torch.Tensor:
    """log mean over i != j of exp(s_ij), the way vbmi-style code writes it."""
    n = s.shape[0]
    inf_diag = torch.diag(torch.full((n,), math.inf, device=s.device, dtype=s.dtype))
    return torch.logsumexp(s - inf_diag, dim=(0, 1)) - math.log(n * (n - 1))


def _textbook_js(s):
    n, sp = s.shape[0], TF.softplus(s)
    return -TF.softplus(-s.diag()).mean() - (sp.sum() - sp.diag().sum()) / (n * (n - 1))


# The shortest eager code a user would write for the diagonal case (no masks, no general layouts):
# a second, leaner unfused baseline next to fastmi.reference.
TEXTBOOK = {
    "infonce": lambda s: math.log(s.shape[0]) - TF.cross_entropy(s, torch.arange(s.shape[0], device=s.device)),
    "dv": lambda s: s.diag().mean() - _lme_nodiag(s),
    "nwj": lambda s: s.diag().mean() - torch.exp(_lme_nodiag(s - 1)),
    "smile": lambda s: _textbook_js(s) + (s.diag().mean() - _lme_nodiag(s.clamp(-5, 5)) - _textbook_js(s)).detach(),
    "redv": lambda s: s.diag().mean() - _lme_nodiag(s) - 0.1 * _lme_nodiag(s) ** 2,
}


class _Loss:
    """Wraps a bound so that .loss is its negative, like MIResult."""

    def __init__(self, value):
        self.loss = -value


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
    if impl == "textbook":
        return lambda s: _Loss(TEXTBOOK[name](s))
    raise ValueError(impl)


def scores(n: int, device="cpu", dtype=torch.float32) -> torch.Tensor:
    gen = torch.Generator(device="cpu").manual_seed(n)
    return (2 * torch.randn(n, n, generator=gen)).to(device=device, dtype=dtype)


def step(fn, s: torch.Tensor):
    """One forward + backward from a fresh leaf; returns the gradient."""
    leaf = s.detach().requires_grad_(True)
    fn(leaf).loss.backward()
    return leaf.grad
