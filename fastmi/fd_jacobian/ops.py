"""The fd_jacobian family's ops (Neural Bayes' smoothness regularizer R_c), on every backend:

    perturb(x [B, n], zeta [] or [B], noise, center, generator) -> x_tilde [B, n]   (no gradient)
        x_tilde_i = x_i + zeta_i D_i/||D_i||,  D = C @ Xc,  Xc the (centred) batch, C a B x B matrix of
        Bernoulli {0,1} (noise "bernoulli") or N(0, 1) ("gaussian") coefficients
    sqdiff(f_clean [B, n], f_perturbed [B, n], hw) -> s [B]
        s_b = sum_c ((1/hw) sum_p (f_clean - f_perturbed)[b, c, p])^2     (features laid out as C x hw)

Fused (``fastmi::fd_perturb``, ``fastmi::fd_sqdiff``: csrc/cpu/fd_jacobian.cpp; their ``_triton``
versions: kernels/fd_jacobian.py, the GPU path): the coefficients come from a counter-based Philox
stream keyed by a 64-bit seed drawn from ``generator`` (csrc/fd_jacobian.h), so no B x B matrix
exists; the same stream on both. "reference": the B x B matrix drawn with torch's generator (the same
distribution, not the same values) and dense torch ops.
"""
from __future__ import annotations

import math
from types import SimpleNamespace
from typing import Optional

import torch
from torch import Tensor

from .._core import registry
from .._core.dtypes import acc_dtype, upcast
from .._core.fused_op import FusedOp

NOISE = {"bernoulli": 0, "gaussian": 1}


def _fake_perturb(x, seed, zeta, noise, center):
    return torch.empty_like(x, memory_format=torch.contiguous_format)


def _fake_sqdiff(f_clean, f_perturbed, hw):
    return f_clean.new_empty((f_clean.shape[0],), dtype=acc_dtype(f_clean.dtype))


def _fake_sqdiff_backward(grad, f_clean, f_perturbed, hw):
    like = lambda: torch.empty_like(f_clean, memory_format=torch.contiguous_format)  # noqa: E731
    return like(), like()


def _save_sqdiff(ctx, inputs, output):
    f_clean, f_perturbed, hw = inputs
    ctx.save_for_backward(f_clean, f_perturbed)
    ctx.hw = hw


def _backward_sqdiff(ctx, impl, grad):
    f_clean, f_perturbed = ctx.saved_tensors
    ga, gb = impl.backward(grad.contiguous(), f_clean, f_perturbed, ctx.hw)
    return ga, gb, None


PERTURB = FusedOp("fd_perturb", "(Tensor x, Tensor seed, Tensor zeta, int noise, bool center) -> Tensor",
                  fake=_fake_perturb, triton=("fd_jacobian", "fd_perturb"))
SQDIFF = FusedOp("fd_sqdiff", "(Tensor f_clean, Tensor f_perturbed, int hw) -> Tensor",
                 backward_schema="(Tensor grad, Tensor f_clean, Tensor f_perturbed, int hw) -> (Tensor, Tensor)",
                 fake=_fake_sqdiff, fake_backward=_fake_sqdiff_backward, save=_save_sqdiff, backward=_backward_sqdiff,
                 triton=("fd_jacobian", "fd_sqdiff", "fd_sqdiff_backward"))


def _fused(backend: str) -> SimpleNamespace:
    perturb_impl, sqdiff_impl = PERTURB.implementation(backend), SQDIFF.implementation(backend)

    def perturb(x2d: Tensor, zeta: Tensor, noise: str, center: bool, generator: Optional[torch.Generator]) -> Tensor:
        dev = generator.device if generator is not None else x2d.device
        seed = torch.randint(-(2**63), 2**63 - 1, (1,), generator=generator, device=dev, dtype=torch.int64)
        seed = seed.to(x2d.device if backend == "triton" else "cpu")
        x = x2d.detach()
        if backend == "cpu":
            return perturb_impl.forward(upcast(x), seed, zeta, NOISE[noise], center).to(x.dtype)
        return perturb_impl.forward(x, seed, zeta, NOISE[noise], center)

    def sqdiff(f_clean: Tensor, f_perturbed: Tensor, hw: int) -> Tensor:
        if backend == "cpu":
            f_clean, f_perturbed = upcast(f_clean), upcast(f_perturbed)  # half types compute in fp32
        return sqdiff_impl.forward(f_clean, f_perturbed, hw)

    return SimpleNamespace(perturb=perturb, sqdiff=sqdiff)


# --- reference ----------------------------------------------------------------------------------
def span_directions(x: Tensor, coefficients: Tensor, center: bool = True) -> Tensor:
    """delta_i = D_i / ||D_i|| with D = C @ Xc, Xc_j = x_j - mean_k x_k (x_j when not centring), x [B, n].

    The mean is taken as x_0 + mean_j (x_j - x_0) (identical samples centre to exact zeros). A
    direction at rounding level, ||D_i|| <= 8 sqrt(B) eps sum_j |c_ij| ||Xc_j||, is zero (sample i is
    left unperturbed). Computed in fp32 (fp64 for float64 x)."""
    acc = acc_dtype(x.dtype)
    xf = x.to(acc)
    if center:
        y = xf - xf[:1]
        xc = y - y.to(torch.float64).mean(0).to(acc)
    else:
        xc = xf
    c = coefficients.to(device=x.device, dtype=acc)
    d = c @ xc
    norm = torch.linalg.vector_norm(d, dim=1, dtype=torch.float64)
    rownorm = torch.linalg.vector_norm(xc, dim=1, dtype=torch.float64)
    tol = 8.0 * math.sqrt(x.shape[0]) * torch.finfo(acc).eps * (c.abs().double() @ rownorm)
    keep = (norm > tol) & (norm > 0) & torch.isfinite(norm)  # overflowed directions: unperturbed too
    scale = torch.where(keep, 1.0 / torch.where(keep, norm, 1.0), 0.0).to(acc)
    return torch.where(keep[:, None], d * scale[:, None], 0.0)


def draw_coefficients(B: int, noise: str, generator: Optional[torch.Generator], device) -> Tensor:
    """The B x B coefficient matrix of the reference, drawn with torch's generator."""
    dev = generator.device if generator is not None else device
    if noise == "bernoulli":
        return torch.randint(0, 2, (B, B), generator=generator, device=dev).float()
    return torch.randn(B, B, generator=generator, device=dev)


def _perturb_reference(x2d: Tensor, zeta: Tensor, noise: str, center: bool,
                       generator: Optional[torch.Generator]) -> Tensor:
    with torch.no_grad():
        delta = span_directions(x2d, draw_coefficients(x2d.shape[0], noise, generator, x2d.device), center)
        z = zeta.to(device=x2d.device, dtype=delta.dtype).reshape(-1, 1)
        return (x2d.to(delta.dtype) + z * delta).to(x2d.dtype)


def _sqdiff_reference(f_clean: Tensor, f_perturbed: Tensor, hw: int) -> Tensor:
    d = upcast(f_clean) - upcast(f_perturbed)
    d = d.reshape(d.shape[0], -1, hw).mean(2)
    return (d * d).sum(1)


FAMILY = registry.family("fd_jacobian", ext_ops=("fd_perturb", "fd_sqdiff", "fd_sqdiff_backward"))
for _b in ("cpu", "triton"):  # no CUDA C++ kernel: Triton is the GPU path
    FAMILY.register(_b, _fused(_b))
FAMILY.register("reference", SimpleNamespace(perturb=_perturb_reference, sqdiff=_sqdiff_reference))
FAMILY.availability()
