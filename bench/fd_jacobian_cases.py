"""The fd_jacobian benchmark cases, shared by bench_fd_jacobian.py (CPU) and gpu.py (CUDA).

perturb_*: x_tilde, zeta = perturb_in_span(x) for x of B x 3 x 32 x 32 (forward only: no gradient
flows through the perturbation). penalty_*: fd_smoothness forward + backward into both states, on
the input-sized state (pool=None) and on the authors' last CNN state B x 1000 x 3 x 3 (pool="global").
"""
from __future__ import annotations

import functools

import torch

import fastmi.functional as F
from fastmi import reference as R

X_SHAPE = (3, 32, 32)
STATE = {"penalty_flat": ((3, 32, 32), None), "penalty_pool": ((1000, 3, 3), "global")}

# name -> (fused call, reference call); both take the case's inputs
CASES = {
    "perturb_bernoulli": (lambda x, b: F.perturb_in_span(x, noise="bernoulli", backend=b),
                          lambda x: R.perturb_in_span(x, noise="bernoulli")),
    "perturb_gaussian": (lambda x, b: F.perturb_in_span(x, noise="gaussian", backend=b),
                         lambda x: R.perturb_in_span(x, noise="gaussian")),
    "penalty_flat": (lambda a, p, b: F.fd_smoothness(a, p, 0.1, backend=b),
                     lambda a, p: R.fd_smoothness(a, p, 0.1)),
    "penalty_pool": (lambda a, p, b: F.fd_smoothness(a, p, 0.1, pool="global", backend=b),
                     lambda a, p: R.fd_smoothness(a, p, 0.1, pool="global")),
}


@functools.lru_cache(maxsize=None)
def compiled_reference(name: str):
    """torch.compile of the reference (the strongest unfused baseline)."""
    return torch.compile(CASES[name][1])


def case_fn(name: str, impl: str, backend: str = "auto"):
    fused, ref = CASES[name]
    if impl == "fused":
        return lambda *t: fused(*t, backend)
    if impl == "reference":
        return ref
    if impl == "compiled":
        return compiled_reference(name)
    raise ValueError(impl)


def inputs(name: str, B: int, device="cpu", dtype=torch.float32) -> tuple:
    gen = torch.Generator(device="cpu").manual_seed(B)
    if name.startswith("perturb"):
        return (torch.rand(B, *X_SHAPE, generator=gen).to(device=device, dtype=dtype),)
    shape, _ = STATE[name]
    a = torch.randn(B, *shape, generator=gen)
    return a.to(device=device, dtype=dtype), (a + 0.01 * torch.randn(B, *shape, generator=gen)).to(device, dtype)


def step(name: str, fn, args: tuple):
    """One call: the perturbation, or the penalty's forward + backward from fresh leaves."""
    if name.startswith("perturb"):
        return fn(*args)[0]
    leaves = [a.detach().requires_grad_(True) for a in args]
    fn(*leaves).backward()
    return leaves[0].grad


def output_bytes(name: str, args: tuple) -> int:
    """What a call must allocate anyway: x_tilde, or the two input gradients."""
    n = args[0].numel() * args[0].element_size()
    return n if name.startswith("perturb") else 2 * n
