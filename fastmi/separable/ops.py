"""The separable family's op: log-sum-exp statistics of S that never build S, where

    S_ij = a_i b_j (x_i . y_j)      x: n x d, y: m x d, a = x_scale [n], b = y_scale [m]

(a and b carry the temperature and the cosine critic's inverse norms, in fp32, so that half inputs
stay half for the matmuls). With N_i the negatives of row i (all columns, or all but one excluded
column: the diagonal or ``pos_index[i]``) and N^j those of column j (the same entries):

    lse_stats(x, y, a, b, pos_index, exclude, cols) -> (row_lse [n], col_lse [m or 0], pos [n])
    row_lse[i] = log sum_{j in N_i} exp S_ij
    col_lse[j] = log sum_{i in N^j} exp S_ij        (only when ``cols``; else an empty tensor)
    pos[i]     = S_{i p(i)}                          (p(i) = pos_index[i], or i when pos_index is None)

Backward, with g = dL/drow_lse, h = dL/dcol_lse and q = dL/dpos:

    dS_ij = g_i exp(S_ij - row_lse_i) + h_j exp(S_ij - col_lse_j)   on the negatives (0 elsewhere)
            + q_i [j = p(i)]
    E = diag(a) dS diag(b):  dx = E y,  dy = E^T x,  da_i = sum_j dS_ij b_j x_i.y_j,  db_j = sum_i dS_ij a_i x_i.y_j

Fused (``fastmi::separable_lse``: csrc/cpu/separable.cpp; ``fastmi::separable_lse_triton``:
kernels/separable.py, the GPU path): S is recomputed tile by tile in the backward kernels, so the op
saves only x, y, a, b and the O(n) statistics. "reference": S built densely with torch ops.
"""
from __future__ import annotations

import torch
from torch import Tensor

from .._core import registry
from .._core.dtypes import acc_dtype, upcast
from .._core.fused_op import FusedOp
from ..critic_lse.ops import masked_logsumexp

EXCLUDE_NONE, EXCLUDE_DIAG, EXCLUDE_POSITIVE = 0, 1, 2


def _fake_forward(x, y, x_scale, y_scale, pos_index, exclude, cols):
    dt = acc_dtype(x.dtype)
    n = x.shape[0]
    return x.new_empty((n,), dtype=dt), y.new_empty((y.shape[0] if cols else 0,), dtype=dt), x.new_empty((n,), dtype=dt)


def _fake_backward(grad_row, grad_col, grad_pos, x, y, x_scale, y_scale, pos_index, exclude, cols, row_lse, col_lse):
    dt = acc_dtype(x.dtype)
    return (torch.empty_like(x), torch.empty_like(y), x_scale.new_empty(x_scale.shape, dtype=dt),
            y_scale.new_empty(y_scale.shape, dtype=dt))


def _save(ctx, inputs, output):
    x, y, x_scale, y_scale, pos_index, exclude, cols = inputs
    row_lse, col_lse, _ = output
    ctx.save_for_backward(x, y, x_scale, y_scale, pos_index, row_lse, col_lse)
    ctx.args = (exclude, cols)


def _backward(ctx, impl, grad_row, grad_col, grad_pos):
    x, y, x_scale, y_scale, pos_index, row_lse, col_lse = ctx.saved_tensors
    grad_row = torch.zeros_like(row_lse) if grad_row is None else grad_row
    grad_col = torch.zeros_like(col_lse) if grad_col is None else grad_col
    grad_pos = torch.zeros_like(row_lse) if grad_pos is None else grad_pos
    dx, dy, da, db = impl.backward(grad_row.contiguous(), grad_col.contiguous(), grad_pos.contiguous(), x, y, x_scale,
                                   y_scale, pos_index, *ctx.args, row_lse, col_lse)
    return dx, dy, da.to(x_scale.dtype), db.to(y_scale.dtype), None, None, None


OP = FusedOp(
    "separable_lse",
    "(Tensor x, Tensor y, Tensor x_scale, Tensor y_scale, Tensor? pos_index, int exclude, bool cols) "
    "-> (Tensor, Tensor, Tensor)",
    backward_schema="(Tensor grad_row, Tensor grad_col, Tensor grad_pos, Tensor x, Tensor y, Tensor x_scale, "
                    "Tensor y_scale, Tensor? pos_index, int exclude, bool cols, Tensor row_lse, Tensor col_lse) "
                    "-> (Tensor, Tensor, Tensor, Tensor)",
    fake=_fake_forward, fake_backward=_fake_backward, save=_save, backward=_backward,
    triton=("separable", "separable_lse_fwd", "separable_lse_bwd"))


def _fused(backend: str):
    impl = OP.implementation(backend)

    def lse_stats(x, y, x_scale, y_scale, pos_index, exclude: int, cols: bool):
        if backend == "cpu":
            x, y = upcast(x), upcast(y)  # the CPU kernel computes half types in fp32
        return impl.forward(x, y, x_scale, y_scale, pos_index, exclude, cols)

    return lse_stats


def _positive_columns(n: int, pos_index, device) -> Tensor:
    return torch.arange(n, device=device) if pos_index is None else pos_index


def lse_stats_reference(x, y, x_scale, y_scale, pos_index, exclude: int, cols: bool):
    """The same statistics from the dense S (n x m) with torch ops."""
    dt = acc_dtype(x.dtype)
    S = x_scale.to(dt)[:, None] * (upcast(x).to(dt) @ upcast(y).to(dt).T) * y_scale.to(dt)[None, :]
    n, m = S.shape
    p = _positive_columns(n, pos_index, S.device)
    keep = torch.ones(n, m, dtype=torch.bool, device=S.device)
    if exclude == EXCLUDE_DIAG:
        keep &= ~torch.eye(n, m, dtype=torch.bool, device=S.device)
    elif exclude == EXCLUDE_POSITIVE:
        keep[torch.arange(n, device=S.device), p] = False
    row = masked_logsumexp(S, keep)
    col = masked_logsumexp(S.T, keep.T) if cols else S.new_empty((0,))
    pos = S.gather(1, p[:, None]).squeeze(1)
    return row, col, pos


FAMILY = registry.family("separable", ext_ops=("separable_lse", "separable_lse_backward"))
for _b in ("cpu", "triton"):  # no CUDA C++ kernel: tiled matmuls are what Triton's tl.dot does best
    FAMILY.register(_b, _fused(_b))
FAMILY.register("reference", lse_stats_reference)
FAMILY.availability()
