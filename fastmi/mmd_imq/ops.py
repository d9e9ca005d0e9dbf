"""The mmd_imq family's op: MMD^2 with the inverse-multiquadric kernel, with autograd.

    value = sum_{i,j} c_ij k(z_i, z_j),  k(a, b) = sum_C C / (C + ||a - b||^2),  z = rows of [x; y]
    c = 1/(n(n-1)) on x-x pairs i != j, 1/(m(m-1)) on y-y pairs, -1/(nm) on x-y and y-x pairs
    (biased: 1/n^2, 1/m^2 with the diagonals included).

The value is a scalar, so the fused kernels produce dvalue/dx and dvalue/dy in the same pass as the
value (one sweep over the tiles instead of a forward and a recomputing backward sweep) when a
gradient will be needed (want_grad); autograd's backward is then grad_output * (dx, dy). When the
forward ran without want_grad, backward recomputes the tiles (one more sweep). Saved between
forward and backward: two n x K / m x K tensors, nothing pairwise.

Fused: ``fastmi::mmd_imq`` (csrc/cpu/mmd_imq.cpp, csrc/cuda/mmd_imq.cu) and ``fastmi::mmd_imq_triton``
(kernels/mmd_imq.py, composed here). Both return (value, dx, dy), dx and dy 0 x K when want_grad is
false. "reference": the dense MMD^2 with torch ops (autograd differentiates it).
"""
from __future__ import annotations

from typing import List

import torch
from torch import Tensor

from .._core import registry
from .._core.dtypes import upcast
from .._core.fused_op import FusedOp


def _fake(x, y, scales, unbiased, want_grad):
    K = x.shape[1]
    return (x.new_empty(()), x.new_empty((x.shape[0], K) if want_grad else (0, K)),
            y.new_empty((y.shape[0], K) if want_grad else (0, K)))


def _save(ctx, inputs, output):
    x, y, scales, unbiased, want_grad = inputs
    _, gx, gy = output
    if want_grad:
        ctx.save_for_backward(gx, gy)
    else:  # no gradient from the forward pass: backward recomputes it from x and y
        ctx.save_for_backward(x, y)
    ctx.args = (scales, unbiased, want_grad)


def _backward(ctx, impl, grad_value, _gdx, _gdy):
    scales, unbiased, want_grad = ctx.args
    if want_grad:
        gx, gy = ctx.saved_tensors
    else:
        x, y = ctx.saved_tensors
        _, gx, gy = impl.forward(x, y, scales, unbiased, True)
    dx = grad_value * gx if ctx.needs_input_grad[0] else None
    dy = grad_value * gy if ctx.needs_input_grad[1] else None
    return dx, dy, None, None, None


# --- Triton op ----------------------------------------------------------------------------------
def prepare(x: Tensor, y: Tensor, scales: List[float]):
    """Well-conditioned copies for the Triton kernel (the C++ kernels do the same internally), fp32
    (fp64 for float64 inputs, which the kernel then computes in fp64): x and y centred on their own
    means (for the x-x and y-y pairs) and on the midpoint of the two means (for the x-y pairs), all
    divided by s = 2^e (exact) where e >= 0 brings the largest magnitude to <= 2^20 so that ||z||^2
    cannot overflow; C becomes C / s^2. No host sync."""
    if x.dtype != torch.float64:
        x, y = x.float(), y.float()
    mx, my = x.mean(0), y.mean(0)
    mid = 0.5 * (mx + my)
    xs, ys, xc, yc = x - mx, y - my, x - mid, y - mid
    big = torch.stack([t.abs().amax() for t in (xs, ys, xc, yc)]).amax()
    e = torch.clamp(torch.ceil(torch.log2(big.clamp_min(1.0))) - 20.0, min=0.0)
    inv_s = torch.exp2(-e)
    pts = [(t * inv_s).contiguous() for t in (xs, ys, xc, yc)]
    norms = [(t * t).sum(1).contiguous() for t in pts]
    c = torch.tensor(scales, dtype=torch.float64, device=x.device)
    c = (c * torch.exp2(-2.0 * e.double())).clamp_min(torch.finfo(x.dtype).tiny).to(x.dtype)
    return pts, norms, c.contiguous(), inv_s.reshape(1).contiguous()


def mmd_imq_triton(x: Tensor, y: Tensor, scales: List[float], unbiased: bool, want_grad: bool):
    """The Triton implementation: two row passes (x rows against x and y, y rows against y and x)."""
    from ..kernels import mmd_imq as kernels

    n, m, K = x.shape[0], y.shape[0], x.shape[1]
    (xs, ys, xc, yc), (qxs, qys, qxc, qyc), c, inv_s = prepare(x, y, scales)
    a = 1.0 / (n * (n - 1)) if unbiased else 1.0 / (n * n)
    b = 1.0 / (m * (m - 1)) if unbiased else 1.0 / (m * m)
    cross = -1.0 / (n * m)
    vx, gx = kernels.rows_pass(xs, qxs, xc, qxc, yc, qyc, c, inv_s, a, cross, unbiased, want_grad)
    vy, gy = kernels.rows_pass(ys, qys, yc, qyc, xc, qxc, c, inv_s, b, cross, unbiased, want_grad)
    value = (vx.double().sum() + vy.double().sum()).to(x.dtype)
    if not want_grad:
        return value, x.new_empty((0, K)), y.new_empty((0, K))
    return value, gx.to(x.dtype), gy.to(y.dtype)


OP = FusedOp("mmd_imq", "(Tensor x, Tensor y, float[] scales, bool unbiased, bool want_grad) -> (Tensor, Tensor, Tensor)",
             fake=_fake, save=_save, backward=_backward, triton=(mmd_imq_triton,))


def _fused(backend: str):
    impl = OP.implementation(backend)

    def mmd_sq(x: Tensor, y: Tensor, scales: List[float], unbiased: bool) -> Tensor:
        x, y = upcast(x), upcast(y)  # fp16/bf16 inputs are computed in fp32
        want_grad = torch.is_grad_enabled() and (x.requires_grad or y.requires_grad)
        return impl.forward(x, y, [float(c) for c in scales], unbiased, want_grad)[0]

    return mmd_sq


def _sq_dists(a: Tensor, b: Tensor) -> Tensor:
    """||a_i - b_j||^2 by the expansion ||a||^2 + ||b||^2 - 2 a.b (clamped at 0). Callers centre the
    points first: the expansion cancels catastrophically for a large common offset."""
    d2 = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2 * a @ b.T
    return d2.clamp_min(0)


def mmd_sq_reference(x: Tensor, y: Tensor, scales: List[float], unbiased: bool) -> Tensor:
    """Dense MMD^2: three kernel matrices, k(a, b) = sum_C C / (C + ||a - b||^2)."""
    x, y = upcast(x), upcast(y)
    n, m = x.shape[0], y.shape[0]
    mx, my = x.mean(0).detach(), y.mean(0).detach()  # distances do not move with a common shift
    mid = 0.5 * (mx + my)

    def kernel_sum(a, b):
        d2 = _sq_dists(a, b)
        return sum(c / (c + d2) for c in scales).sum()

    kxx, kyy, kxy = kernel_sum(x - mx, x - mx), kernel_sum(y - my, y - my), kernel_sum(x - mid, y - mid)
    if unbiased:  # k(a, a) = len(scales) exactly: remove the diagonal by value
        diag = float(len(scales))
        sxx, syy = (kxx - n * diag) / (n * (n - 1)), (kyy - m * diag) / (m * (m - 1))
    else:
        sxx, syy = kxx / (n * n), kyy / (m * m)
    return sxx + syy - 2 * kxy / (n * m)


FAMILY = registry.family("mmd_imq", ext_ops=("mmd_imq",))
for _b in ("cpu", "cuda", "triton"):
    FAMILY.register(_b, _fused(_b))
FAMILY.register("reference", mmd_sq_reference)
FAMILY.availability()
