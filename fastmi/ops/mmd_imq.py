"""Custom ops of the mmd_imq family: MMD^2 with the inverse-multiquadric kernel, with autograd.

    value = sum_{i,j} c_ij k(z_i, z_j),  k(a, b) = sum_C C / (C + ||a - b||^2),  z = rows of [x; y]
    c = 1/(n(n-1)) on x-x pairs i != j, 1/(m(m-1)) on y-y pairs, -1/(nm) on x-y and y-x pairs
    (biased: 1/n^2, 1/m^2 with the diagonals included).

The value is a scalar, so the fused kernels produce dvalue/dx and dvalue/dy in the same pass as the
value (one sweep over the tiles instead of a forward and a recomputing backward sweep) when a
gradient will be needed (want_grad); autograd's backward is then grad_output * (dx, dy). When the
forward ran without want_grad, backward recomputes the tiles (one more sweep). Saved between
forward and backward: two n x K / m x K tensors, nothing pairwise.

Ops: ``fastmi::mmd_imq`` (C++ schema in csrc/fastmi.cpp; CPU and CUDA kernels) and
``fastmi::mmd_imq_triton`` (defined here). Both return (value, dx, dy), dx and dy 0 x K when
want_grad is false; both have fake implementations and autograd, so torch.compile traces them.
"""
from __future__ import annotations

from typing import List, Tuple

import torch
from torch import Tensor

from .. import _backend


def _fake(x, y, scales, unbiased, want_grad):
    K = x.shape[1]
    return (x.new_empty(()), x.new_empty((x.shape[0], K) if want_grad else (0, K)),
            y.new_empty((y.shape[0], K) if want_grad else (0, K)))


def _make_autograd(op):
    def setup_context(ctx, inputs, output):
        x, y, scales, unbiased, want_grad = inputs
        _, gx, gy = output
        if want_grad:
            ctx.save_for_backward(gx, gy)
        else:  # no gradient from the forward pass: backward recomputes it from x and y
            ctx.save_for_backward(x, y)
        ctx.args = (scales, unbiased, want_grad)

    def backward(ctx, grad_value, _gdx, _gdy):
        if torch.is_grad_enabled():  # create_graph=True: the fused gradient has no derivative of its own
            raise RuntimeError("fastmi: second-order gradients through the fused mmd_imq kernels are not supported; "
                               "use backend='reference' for double backward")
        scales, unbiased, want_grad = ctx.args
        if want_grad:
            gx, gy = ctx.saved_tensors
        else:
            x, y = ctx.saved_tensors
            _, gx, gy = op(x, y, scales, unbiased, True)
        dx = grad_value * gx if ctx.needs_input_grad[0] else None
        dy = grad_value * gy if ctx.needs_input_grad[1] else None
        return dx, dy, None, None, None

    return setup_context, backward


# --- C++ / CUDA extension op ------------------------------------------------------------------
def _has_ext_op() -> bool:
    """The loaded fastmi._C registers fastmi::mmd_imq (False for an extension built before this family)."""
    if not _backend.availability()["cpu"][0]:
        return False
    try:
        torch.ops.fastmi.mmd_imq.default
        return True
    except (AttributeError, RuntimeError):
        return False


EXT_OP = _has_ext_op()
if EXT_OP:
    torch.library.register_fake("fastmi::mmd_imq")(_fake)
    _ctx, _bwd = _make_autograd(lambda *a: torch.ops.fastmi.mmd_imq(*a))
    torch.library.register_autograd("fastmi::mmd_imq", _bwd, setup_context=_ctx)


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


@torch.library.custom_op("fastmi::mmd_imq_triton", mutates_args=())
def mmd_imq_triton(x: Tensor, y: Tensor, scales: List[float], unbiased: bool,
                   want_grad: bool) -> Tuple[Tensor, Tensor, Tensor]:
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


mmd_imq_triton.register_fake(_fake)
_ctx, _bwd = _make_autograd(lambda *a: mmd_imq_triton(*a))
mmd_imq_triton.register_autograd(_bwd, setup_context=_ctx)


def mmd_sq(x: Tensor, y: Tensor, scales: List[float], unbiased: bool, backend: str) -> Tensor:
    """MMD^2 (autograd-aware) with the chosen fused backend; fp16/bf16 inputs are computed in fp32."""
    if x.dtype not in (torch.float32, torch.float64):
        x, y = x.float(), y.float()
    want_grad = torch.is_grad_enabled() and (x.requires_grad or y.requires_grad)
    scales = [float(c) for c in scales]
    if backend == "triton":
        return mmd_imq_triton(x, y, scales, unbiased, want_grad)[0]
    return torch.ops.fastmi.mmd_imq(x, y, scales, unbiased, want_grad)[0]
