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

S is recomputed tile by tile in the backward kernels (FlashAttention style), so the op saves only
x, y, a, b and the O(n) statistics. The op is the only consumer of x and y (the positives are
computed in it too), so their gradients are the kernels' outputs: no O(n d) temporaries.

Ops: ``fastmi::separable_lse(_backward)`` (C++ CPU kernel, csrc/cpu/separable.cpp) and
``fastmi::separable_lse_triton(_backward)`` (Triton, kernels/separable.py; the GPU path).
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from .. import _backend

EXCLUDE_NONE, EXCLUDE_DIAG, EXCLUDE_POSITIVE = 0, 1, 2


def stats_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def _fake_forward(x, y, x_scale, y_scale, pos_index, exclude, cols):
    dt = stats_dtype(x.dtype)
    n = x.shape[0]
    return x.new_empty((n,), dtype=dt), y.new_empty((y.shape[0] if cols else 0,), dtype=dt), x.new_empty((n,), dtype=dt)


def _fake_backward(grad_row, grad_col, grad_pos, x, y, x_scale, y_scale, pos_index, exclude, cols, row_lse, col_lse):
    dt = stats_dtype(x.dtype)
    return (torch.empty_like(x), torch.empty_like(y), x_scale.new_empty(x_scale.shape, dtype=dt),
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


def lse_stats(x: Tensor, y: Tensor, x_scale: Tensor, y_scale: Tensor, pos_index: Optional[Tensor], exclude: int,
              cols: bool, backend: str) -> tuple[Tensor, Tensor, Tensor]:
    """(row_lse, col_lse, pos) of S = diag(x_scale) x y^T diag(y_scale) with the chosen fused backend (autograd-aware)."""
    if backend == "triton":
        return separable_lse_triton(x, y, x_scale, y_scale, pos_index, exclude, cols)
    if backend == "cpu" and x.dtype not in (torch.float32, torch.float64):
        x, y = x.float(), y.float()  # the CPU kernel computes half types in fp32
    return torch.ops.fastmi.separable_lse(x, y, x_scale, y_scale, pos_index, exclude, cols)
