"""The separable family's op: log-sum-exp statistics of S that never build S, where

    S_ij = a_i b_j (x_i . y_j)      x: n x d, y: m x d, a = x_scale [n], b = y_scale [m]

(a and b carry the temperature and the cosine critic's inverse norms, in fp32, so that half inputs
stay half for the matmuls; the backward returns fp32 gradients for fp16/bf16 inputs, fp64 for float64). With N_i the negatives of row i (all columns, or all but one excluded
column: the diagonal or ``pos_index[i]``) and N^j those of column j (the same entries):

    separable_lse(x, y, a, b, pos_index, exclude, cols) -> (row_lse [n], col_lse [m or 0], pos [n])
    row_lse[i] = log sum_{j in N_i} exp S_ij
    col_lse[j] = log sum_{i in N^j} exp S_ij        (only when ``cols``; else an empty tensor)
    pos[i]     = S_{i p(i)}                          (p(i) = pos_index[i], or i when pos_index is None)

Backward, with g = dL/drow_lse, h = dL/dcol_lse and q = dL/dpos:

    dS_ij = g_i exp(S_ij - row_lse_i) + h_j exp(S_ij - col_lse_j)   on the negatives (0 elsewhere)
            + q_i [j = p(i)]
    E = diag(a) dS diag(b):  dx = E y,  dy = E^T x,  da_i = sum_j dS_ij b_j x_i.y_j,  db_j = sum_i dS_ij a_i x_i.y_j

(a term whose statistic is +-inf adds nothing at finite entries). Fused (``fastmi::separable_lse``:
csrc/cpu/separable.cpp; ``fastmi::separable_lse_triton``: kernels/separable.py, the GPU path): S is
recomputed tile by tile in the backward kernels, so the op saves only x, y, a, b and the O(n)
statistics. "reference": S built densely with torch ops.

The losses call every backend through one interface,

    separable_stats(x, y, inv_t, normalize, pos_index, exclude, cols, exp_shift) -> (row_lse, col_lse, pos, E)

which makes a and b from the inverse temperature (and the norms for the cosine critic) in the same
autograd node as the kernel: the cosine critic's two gradient branches (the kernel's dS y and the
norms' -da_i a_i x_i / |x_i|^2) cancel to a small result, so they are added in fp32 (fp64 for
float64) before one rounding to x's dtype. With ``exp_shift`` (0-d or [n]), E_i = exp(row_lse_i -
a_i) of a bound's exponential term, its gradient merged into the kernel's row coefficient
(``fastmi._core.exp_terms``) rather than passing through exp(row_lse); else E is empty.
"""
from __future__ import annotations

import torch
from torch import Tensor

from .._core import exp_terms, registry
from .._core.dtypes import acc_dtype, upcast
from .._core.fused_op import FusedOp
from ..critic_lse.ops import masked_logsumexp, masked_sum

EXCLUDE_NONE, EXCLUDE_DIAG, EXCLUDE_POSITIVE = 0, 1, 2


def _fake_forward(x, y, x_scale, y_scale, pos_index, exclude, cols):
    dt = acc_dtype(x.dtype)
    n = x.shape[0]
    return x.new_empty((n,), dtype=dt), y.new_empty((y.shape[0] if cols else 0,), dtype=dt), x.new_empty((n,), dtype=dt)


def _fake_backward(grad_row, grad_col, grad_pos, x, y, x_scale, y_scale, pos_index, exclude, cols, row_lse, col_lse):
    dt = acc_dtype(x.dtype)
    return (torch.empty_like(x, dtype=dt), torch.empty_like(y, dtype=dt), x_scale.new_empty(x_scale.shape, dtype=dt),
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
    return dx.to(x.dtype), dy.to(y.dtype), da.to(x_scale.dtype), db.to(y_scale.dtype), None, None, None


OP = FusedOp(
    "separable_lse",
    "(Tensor x, Tensor y, Tensor x_scale, Tensor y_scale, Tensor? pos_index, int exclude, bool cols) "
    "-> (Tensor, Tensor, Tensor)",
    backward_schema="(Tensor grad_row, Tensor grad_col, Tensor grad_pos, Tensor x, Tensor y, Tensor x_scale, "
                    "Tensor y_scale, Tensor? pos_index, int exclude, bool cols, Tensor row_lse, Tensor col_lse) "
                    "-> (Tensor, Tensor, Tensor, Tensor)",
    fake=_fake_forward, fake_backward=_fake_backward, save=_save, backward=_backward,
    triton=("separable", "separable_lse_fwd", "separable_lse_bwd"))


def scales(x, y, inv_t, normalize: bool):
    """(a, b, 1/|x|, 1/|y|) in the accumulation dtype; the inverse norms are ones without normalize."""
    dt = acc_dtype(x.dtype)
    if normalize:
        ix = 1.0 / torch.linalg.vector_norm(x.to(dt), dim=1)
        iy = 1.0 / torch.linalg.vector_norm(y.to(dt), dim=1)
    else:
        ix, iy = x.new_ones(x.shape[0], dtype=dt), y.new_ones(y.shape[0], dtype=dt)
    return ix * inv_t.to(dt), iy, ix, iy


class _SeparableStats(torch.autograd.Function):
    """``separable_stats`` on a fused backend (module docstring)."""

    @staticmethod
    def forward(ctx, x, y, inv_t, shift, normalize, pos_index, exclude, cols, backend):
        dt = acc_dtype(x.dtype)
        xk, yk = (x, y) if backend == "triton" else (x.to(dt), y.to(dt))  # the CPU kernel reads fp32/fp64
        a, b, ix, iy = scales(x, y, inv_t, normalize)
        row, col, pos = OP.implementation(backend).forward(xk, yk, a, b, pos_index, exclude, cols)
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
            raise RuntimeError("fastmi: second-order gradients through the fused separable kernels are not supported; "
                               "use backend='reference' for double backward")
        xk, yk, a, b, ix, iy, pos_index, row, col, sa, E = ctx.saved_tensors
        normalize, exclude, cols, backend, t_shape, shift_shape = ctx.args
        g = torch.zeros_like(row) if grad_row is None else grad_row
        lse, h = row, None
        if shift_shape is not None:
            h = torch.zeros_like(E) if grad_exp is None else grad_exp
            g, lse = exp_terms.merge(g, row, h, sa)
        grad_col = torch.zeros_like(col) if grad_col is None else grad_col
        grad_pos = torch.zeros_like(row) if grad_pos is None else grad_pos
        dx, dy, da, db = OP.implementation(backend).backward(
            g.contiguous(), grad_col.contiguous(), grad_pos.contiguous(), xk, yk, a, b, pos_index, exclude, cols,
            lse.contiguous(), col)
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


def _fused(backend: str):
    def separable_stats(x, y, inv_t, normalize: bool, pos_index, exclude: int, cols: bool, exp_shift=None):
        return _SeparableStats.apply(x, y, inv_t, exp_shift, bool(normalize), pos_index, exclude, cols, backend)

    return separable_stats


def _positive_columns(n: int, pos_index, device) -> Tensor:
    return torch.arange(n, device=device) if pos_index is None else pos_index


def separable_stats_reference(x, y, inv_t, normalize: bool, pos_index, exclude: int, cols: bool, exp_shift=None):
    """The same statistics from the dense S (n x m) with torch ops (autograd differentiates them)."""
    dt = acc_dtype(x.dtype)
    a, b, _, _ = scales(x, y, inv_t, normalize)
    S = a[:, None] * (upcast(x).to(dt) @ upcast(y).to(dt).T) * b[None, :]
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
    if exp_shift is None:
        return row, col, pos, S.new_zeros(0)
    sa = exp_terms.row_shift(exp_shift, row)[:, None]
    return row, col, pos, masked_sum(lambda v: torch.exp(v - sa), S, keep)


FAMILY = registry.family("separable", ext_ops=("separable_lse", "separable_lse_backward"))
for _b in ("cpu", "triton"):  # no CUDA C++ kernel: tiled matmuls are what Triton's tl.dot does best
    FAMILY.register(_b, _fused(_b))
FAMILY.register("reference", separable_stats_reference)
FAMILY.availability()
