"""Custom ops of the separable family: log-sum-exp statistics of S that never build S, where

    S_ij = a_i b_j (x_i . y_j)      x: n x d, y: m x d, a = x_scale [n], b = y_scale [m]

(a and b carry the temperature and the cosine critic's inverse norms, in fp32, so that half inputs
stay half for the matmuls). Forward, with N_i the negatives of row i (all columns, or all but one
excluded column: the diagonal or ``pos_index[i]``) and N^j those of column j (the same entries):

    row_lse[i] = log sum_{j in N_i} exp S_ij
    col_lse[j] = log sum_{i in N^j} exp S_ij        (only when ``cols``; else an empty tensor)
    pos[i]     = S_{i p(i)}                          (p(i) = pos_index[i], or i when pos_index is None)

Backward, with g = dL/drow_lse, h = dL/dcol_lse and q = dL/dpos:

    dS_ij = g_i exp(S_ij - row_lse_i) + h_j exp(S_ij - col_lse_j)   on the negatives (0 elsewhere)
            + q_i [j = p(i)]
    E = diag(a) dS diag(b):  dx = E y,  dy = E^T x,  da_i = sum_j dS_ij b_j x_i.y_j,  db_j = sum_i dS_ij a_i x_i.y_j

(a term whose statistic is +-inf adds nothing at finite entries). S is recomputed tile by tile in
the backward kernels (FlashAttention style), so the op saves only x, y, a, b and the O(n)
statistics. The backward returns fp32 gradients for fp16/bf16 inputs (fp64 for float64).

Ops: ``fastmi::separable_lse(_backward)`` (C++ CPU kernel, csrc/cpu/separable.cpp) and
``fastmi::separable_lse_triton(_backward)`` (Triton, kernels/separable.py; the GPU path). The
losses reach them through one autograd node, ``separable_stats``, which makes a and b from the
temperature (and the norms), adds the cosine critic's norm branch to dx and dy in fp32, and routes
an exponential term's gradient past exp(row_lse) (``fastmi.ops.exp_terms``).
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from .. import _backend
from . import exp_terms

EXCLUDE_NONE, EXCLUDE_DIAG, EXCLUDE_POSITIVE = 0, 1, 2


def stats_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def _fake_forward(x, y, x_scale, y_scale, pos_index, exclude, cols):
    dt = stats_dtype(x.dtype)
    n = x.shape[0]
    return x.new_empty((n,), dtype=dt), y.new_empty((y.shape[0] if cols else 0,), dtype=dt), x.new_empty((n,), dtype=dt)


def _fake_backward(grad_row, grad_col, grad_pos, x, y, x_scale, y_scale, pos_index, exclude, cols, row_lse, col_lse):
    dt = stats_dtype(x.dtype)  # fp32 gradients for fp16/bf16 inputs (see _SeparableStats)
    return (torch.empty_like(x, dtype=dt), torch.empty_like(y, dtype=dt), x_scale.new_empty(x_scale.shape, dtype=dt),
            y_scale.new_empty(y_scale.shape, dtype=dt))


def _make_autograd(backward_op):
    def setup_context(ctx, inputs, output):
        x, y, x_scale, y_scale, pos_index, exclude, cols = inputs
        row_lse, col_lse, _ = output
        ctx.save_for_backward(x, y, x_scale, y_scale, pos_index, row_lse, col_lse)
        ctx.args = (exclude, cols)

    def backward(ctx, grad_row, grad_col, grad_pos):
        if torch.is_grad_enabled():  # create_graph=True: the backward kernel has no derivative of its own
            raise RuntimeError(
                "fastmi: second-order gradients through the fused separable kernels are not supported; "
                "use backend='reference' for double backward"
            )
        x, y, x_scale, y_scale, pos_index, row_lse, col_lse = ctx.saved_tensors
        exclude, cols = ctx.args
        if grad_row is None:
            grad_row = torch.zeros_like(row_lse)
        if grad_col is None:
            grad_col = torch.zeros_like(col_lse)
        if grad_pos is None:
            grad_pos = torch.zeros_like(row_lse)
        dx, dy, da, db = backward_op(grad_row.contiguous(), grad_col.contiguous(), grad_pos.contiguous(), x, y,
                                     x_scale, y_scale,
                                     pos_index, exclude, cols, row_lse, col_lse)
        return dx, dy, da.to(x_scale.dtype), db.to(y_scale.dtype), None, None, None

    return setup_context, backward


# --- C++ extension ops ------------------------------------------------------------------------
if _backend.ext_has_op("separable_lse"):
    torch.library.register_fake("fastmi::separable_lse")(_fake_forward)
    torch.library.register_fake("fastmi::separable_lse_backward")(_fake_backward)
    _ctx, _bwd = _make_autograd(lambda *a: torch.ops.fastmi.separable_lse_backward(*a))
    torch.library.register_autograd("fastmi::separable_lse", _bwd, setup_context=_ctx)


# --- Triton ops -------------------------------------------------------------------------------
@torch.library.custom_op("fastmi::separable_lse_triton", mutates_args=())
def separable_lse_triton(x: Tensor, y: Tensor, x_scale: Tensor, y_scale: Tensor, pos_index: Optional[Tensor],
                         exclude: int, cols: bool) -> tuple[Tensor, Tensor, Tensor]:
    from ..kernels import separable as kernels

    return kernels.separable_lse_fwd(x, y, x_scale, y_scale, pos_index, exclude, cols)


@torch.library.custom_op("fastmi::separable_lse_triton_backward", mutates_args=())
def separable_lse_triton_backward(grad_row: Tensor, grad_col: Tensor, grad_pos: Tensor, x: Tensor, y: Tensor,
                                  x_scale: Tensor,
                                  y_scale: Tensor, pos_index: Optional[Tensor], exclude: int, cols: bool,
                                  row_lse: Tensor, col_lse: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    from ..kernels import separable as kernels

    return kernels.separable_lse_bwd(grad_row, grad_col, grad_pos, x, y, x_scale, y_scale, pos_index, exclude, cols,
                                     row_lse, col_lse)


separable_lse_triton.register_fake(_fake_forward)
separable_lse_triton_backward.register_fake(_fake_backward)
_ctx, _bwd = _make_autograd(lambda *a: separable_lse_triton_backward(*a))
separable_lse_triton.register_autograd(_bwd, setup_context=_ctx)


def _ops(backend: str):
    """(forward, backward) ops of a fused backend."""
    if backend == "triton":
        return separable_lse_triton, separable_lse_triton_backward
    return torch.ops.fastmi.separable_lse, torch.ops.fastmi.separable_lse_backward


class _SeparableStats(torch.autograd.Function):
    """(row_lse, col_lse, pos, E) of S_ij = a_i b_j (x_i . y_j) with the scales made here from the
    inverse temperature t (and the inverse norms for the cosine critic):

        a_i = t / |x_i|,  b_j = 1 / |y_j|   (normalize)          a_i = t,  b_j = 1   (otherwise)

    One autograd node for the kernel and the scales: the cosine critic's two gradient branches (the
    kernel's E y and the norms' -dL/da_i a_i x_i / |x_i|^2) cancel each other to a small result, so
    they are added here in fp32 (fp64 for float64) before the single rounding to x's dtype (fp16/bf16
    inputs would otherwise round each branch first). The backward kernels return fp32 gradients for
    half inputs for that reason.

    With ``shift`` (0-d or [n]): E_i = exp(row_lse_i - a_i) whose gradient is merged into the kernel's
    row coefficient (``fastmi.ops.exp_terms``) instead of passing through exp(row_lse), so that a row
    with one huge score keeps finite gradients for its other entries; else E is empty."""

    @staticmethod
    def forward(ctx, x, y, inv_t, shift, normalize, pos_index, exclude, cols, backend):
        dt = stats_dtype(x.dtype)
        xk, yk = (x, y) if backend == "triton" else (x.to(dt), y.to(dt))  # the CPU kernel reads fp32/fp64
        if normalize:
            ix = 1.0 / torch.linalg.vector_norm(x.to(dt), dim=1)
            iy = 1.0 / torch.linalg.vector_norm(y.to(dt), dim=1)
        else:
            ix, iy = x.new_ones(x.shape[0], dtype=dt), y.new_ones(y.shape[0], dtype=dt)
        a, b = ix * inv_t.to(dt), iy
        row, col, pos = _ops(backend)[0](xk, yk, a, b, pos_index, exclude, cols)
        if shift is None:
            sa, E = row.new_zeros(0), row.new_zeros(0)
        else:
            sa = exp_terms.row_shift(shift, row)
            E = torch.exp(row - sa)
        ctx.save_for_backward(xk, yk, a, b, ix, iy, pos_index, row, col, sa, E)
        ctx.args = (normalize, exclude, cols, backend, inv_t.shape, None if shift is None else shift.shape)
        return row, col, pos, E

    @staticmethod
    def backward(ctx, grad_row, grad_col, grad_pos, grad_exp):
        if torch.is_grad_enabled():
            raise RuntimeError(
                "fastmi: second-order gradients through the fused separable kernels are not supported; "
                "use backend='reference' for double backward"
            )
        xk, yk, a, b, ix, iy, pos_index, row, col, sa, E = ctx.saved_tensors
        normalize, exclude, cols, backend, t_shape, shift_shape = ctx.args
        g = torch.zeros_like(row) if grad_row is None else grad_row
        lse = row
        h = None
        if shift_shape is not None:
            h = torch.zeros_like(E) if grad_exp is None else grad_exp
            g, lse = exp_terms.merge(g, row, h, sa)
        grad_col = torch.zeros_like(col) if grad_col is None else grad_col
        grad_pos = torch.zeros_like(row) if grad_pos is None else grad_pos
        dx, dy, da, db = _ops(backend)[1](g.contiguous(), grad_col.contiguous(), grad_pos.contiguous(), xk, yk, a, b,
                                          pos_index, exclude, cols, lse.contiguous(), col)
        dt = a.dtype
        dx, dy, da, db = dx.to(dt), dy.to(dt), da.to(dt), db.to(dt)
        if normalize:  # through 1/|x_i|: d a_i / d x_i = -a_i x_i / |x_i|^2
            dx = dx - (da * a * ix * ix)[:, None] * xk.to(dt)
            dy = dy - (db * b * iy * iy)[:, None] * yk.to(dt)
        grad_t = (da * ix).sum().reshape(t_shape) if ctx.needs_input_grad[2] else None
        grad_shift = None
        if shift_shape is not None and ctx.needs_input_grad[3]:
            grad_shift = exp_terms.shift_gradient(h, E, shift_shape)
        return dx, dy, grad_t, grad_shift, None, None, None, None, None


def separable_stats(x: Tensor, y: Tensor, inv_temperature, normalize: bool, pos_index: Optional[Tensor], exclude: int,
                    cols: bool, backend: str, exp_shift=None) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """(row_lse, col_lse, pos, E) of S = x y^T * inv_temperature (the cosine critic with normalize),
    autograd-aware, with the chosen fused backend; see ``_SeparableStats``. ``inv_temperature`` and
    ``exp_shift`` are numbers or tensors (with gradients); E is empty without ``exp_shift``."""
    dt = stats_dtype(x.dtype)
    if not isinstance(inv_temperature, Tensor):
        inv_temperature = torch.tensor(float(inv_temperature), dtype=dt, device=x.device)
    if exp_shift is not None and not isinstance(exp_shift, Tensor):
        exp_shift = torch.tensor(float(exp_shift), dtype=dt, device=x.device)
    return _SeparableStats.apply(x, y, inv_temperature, exp_shift, bool(normalize), pos_index, exclude, cols, backend)
