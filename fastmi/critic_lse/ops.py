"""The critic_lse family's op: the row statistics of a score matrix (``contract.STATS``), on every backend.

    row_stats(scores, layout, tau, need) -> stats [NUM_STATS, n]   (fp32; fp64 for float64 scores)

Fused (``fastmi::critic_lse``: csrc/cpu/critic_lse.cpp, csrc/cuda/critic_lse.cu;
``fastmi::critic_lse_triton``: kernels/critic_lse.py): one pass over S forward; the backward op
receives dL/dstats (NUM_STATS x n) and recomputes dS tile by tile (FlashAttention style), so nothing
n x m is saved between forward and backward:

    dS_ij = [j in N_i] (G_LSE exp(S_ij - LSE_i) + G_CLSE exp(S_ij - CLSE_i) [|S_ij| <= tau] + G_SP sigmoid(S_ij))
          + [j in P_i] (G_POS - G_PSP sigmoid(-S_ij) + G_CPOS [|S_ij| <= tau])

"reference": the same statistics from dense masks with torch ops (autograd differentiates them; it
is the no-kernel fallback and the torch.func path), written so that an entry whose true gradient is
finite gets a finite gradient whatever its row neighbours hold.

Exponential terms. A bound holding mean_N exp(S - a) (NWJ, TUBA, MINE's surrogate) must not take its
gradient through exp(LSE_i - a_i): with one large score in a row that factor overflows while every
other entry's gradient exp(S_ij - a_i) is finite. So ``row_stats(..., exp=(slot, shift))`` also
returns E_i = exp(stats[slot, i] - a_i) as an output of its own, and the fused backward merges its
gradient with the slot's into one (coefficient, shift) pair per row (``fastmi._core.exp_terms``);
the reference computes E_i directly as sum_{j in N_i} exp(S_ij - a_i). ``shift`` is a number, a 0-d
or [n] tensor (with gradient: TUBA's baseline), or a function of the detached statistics (MINE's
moving average, which includes this batch).
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

from .._core import exp_terms, registry
from .._core.dtypes import acc_dtype, upcast
from .._core.fused_op import FusedOp
from .contract import CLSE, CPOS, LSE, NUM_STATS, POS, PSP, SP
from .layout import Layout


def _fake_forward(scores, pos_index, pos_mask, neg_mode, clip, need):
    return scores.new_empty((NUM_STATS, scores.shape[0]), dtype=acc_dtype(scores.dtype))


def _fake_backward(grad_stats, scores, pos_index, pos_mask, neg_mode, clip, need, stats):
    return scores.new_empty(scores.shape)


def _save(ctx, inputs, output):
    scores, pos_index, pos_mask, neg_mode, clip, need = inputs
    ctx.save_for_backward(scores, pos_index, pos_mask, output)
    ctx.args = (neg_mode, clip, need)


def _backward(ctx, impl, grad_stats):
    scores, pos_index, pos_mask, stats = ctx.saved_tensors
    grad = impl.backward(grad_stats.contiguous(), scores, pos_index, pos_mask, *ctx.args, stats)
    return grad, None, None, None, None, None


OP = FusedOp(
    "critic_lse",
    "(Tensor scores, Tensor? pos_index, Tensor? pos_mask, int neg_mode, float clip, int need) -> Tensor",
    backward_schema="(Tensor grad_stats, Tensor scores, Tensor? pos_index, Tensor? pos_mask, int neg_mode, "
                    "float clip, int need, Tensor stats) -> Tensor",
    fake=_fake_forward, fake_backward=_fake_backward, save=_save, backward=_backward,
    triton=("critic_lse", "critic_lse_fwd", "critic_lse_bwd"))


class _StatsWithExp(torch.autograd.Function):
    """The op's statistics plus E_i = exp(stats[slot, i] - a_i), E's gradient merged into the
    kernel's coefficient of that slot (module docstring); a is returned as ``ref``."""

    @staticmethod
    def forward(ctx, scores, shift, pos_index, pos_mask, neg_mode, clip, need, backend, slot):
        impl = OP.implementation(backend)
        stats = impl.forward(scores, pos_index, pos_mask, neg_mode, clip, need)
        if callable(shift):
            ref = shift(stats.detach()).to(stats.dtype)
            shift = None  # a function of the detached statistics: a constant
        else:
            ref = shift.to(stats.dtype)
        a = exp_terms.row_shift(ref, stats[slot])
        E = torch.exp(stats[slot] - a)
        ctx.save_for_backward(scores, pos_index, pos_mask, stats, a, E)
        ctx.args = (neg_mode, clip, need, backend, slot, None if shift is None else shift.shape)
        ctx.mark_non_differentiable(ref)
        return stats, E, ref

    @staticmethod
    def backward(ctx, g_stats, g_exp, _g_ref):
        if torch.is_grad_enabled():
            raise RuntimeError("fastmi: second-order gradients through the fused critic_lse kernels are not supported; "
                               "use backend='reference' for double backward")
        scores, pos_index, pos_mask, stats, a, E = ctx.saved_tensors
        neg_mode, clip, need, backend, slot, shift_shape = ctx.args
        g = torch.zeros_like(stats) if g_stats is None else g_stats.clone()
        h = torch.zeros_like(E) if g_exp is None else g_exp
        coef, shift = exp_terms.merge(g[slot], stats[slot], h, a)
        g[slot] = coef
        st = stats.clone()
        st[slot] = shift
        grad = OP.implementation(backend).backward(g.contiguous(), scores, pos_index, pos_mask, neg_mode, clip, need, st)
        grad_shift = exp_terms.shift_gradient(h, E, shift_shape) if ctx.needs_input_grad[1] else None
        return grad, grad_shift, None, None, None, None, None, None, None


def _shift_tensor(shift, scores: Tensor):
    if callable(shift) or isinstance(shift, Tensor):
        return shift
    return torch.tensor(float(shift), dtype=acc_dtype(scores.dtype), device=scores.device)


def _fused(backend: str):
    impl = OP.implementation(backend)

    def row_stats(scores: Tensor, layout: Layout, tau: float, need: int, exp=None):
        """fp16/bf16 scores go to the kernels as they are (the CPU kernel converts one row at a time)."""
        args = (layout.pos_index, layout.pos_mask, layout.neg_mode, tau, need)
        if exp is None:
            return impl.forward(scores, *args)
        slot, shift = exp
        return _StatsWithExp.apply(scores, _shift_tensor(shift, scores), *args, backend, slot)

    return row_stats


# --- reference: the same statistics with torch ops --------------------------------------------------
def softplus(x: Tensor) -> Tensor:
    """log(1 + e^x), exact in every dtype (no threshold), gradient sigmoid(x) everywhere (also at +-inf)."""
    up = x > 0
    xp = torch.where(up, x, torch.zeros_like(x))
    xn = torch.where(up, torch.zeros_like(x), x)
    return torch.where(up, xp + torch.log1p(torch.exp(-xp)), torch.log1p(torch.exp(xn)))


def masked_logsumexp(S: Tensor, mask: Tensor) -> Tensor:
    """log sum_{j: mask_ij} exp S_ij per row, with torch.logsumexp's values (an empty or all -inf row:
    -inf; a +inf entry: +inf; NaN: NaN) and gradients that are finite for every finite entry: the
    softmax weights of the row, 0 in a row whose value is not finite."""
    Sm = torch.where(mask, S, torch.full_like(S, -math.inf))
    mx = Sm.amax(1, keepdim=True).detach()
    finite = torch.isfinite(mx)
    shift = torch.where(finite, mx, torch.zeros_like(mx))
    z = torch.where(finite, Sm - shift, torch.full_like(Sm, -math.inf))
    total = torch.exp(z).sum(1, keepdim=True)  # >= 1 in a row with a finite max (its max adds e^0)
    lse = torch.log(torch.where(finite, total, torch.ones_like(total))) + shift
    return torch.where(finite, lse, mx).squeeze(1)


def masked_sum(fn, S: Tensor, mask: Tensor) -> Tensor:
    """sum_{j: mask_ij} fn(S_ij) per row; entries outside the mask touch neither value nor gradient."""
    inside = torch.where(mask, S, torch.zeros_like(S))
    return torch.where(mask, fn(inside), torch.zeros_like(S)).sum(1)


def _clamp(S: Tensor, tau: float) -> Tensor:
    return S if math.isinf(tau) or tau > torch.finfo(S.dtype).max else S.clamp(-tau, tau)


def row_stats_reference(scores: Tensor, layout: Layout, tau: float, need: int, exp=None):
    S = upcast(scores)
    P, N = layout.dense_masks(S.device)
    zero = torch.zeros(S.shape[0], dtype=S.dtype, device=S.device)
    make = {
        LSE: lambda: masked_logsumexp(S, N),
        CLSE: lambda: masked_logsumexp(_clamp(S, tau), N),
        SP: lambda: masked_sum(softplus, S, N),
        POS: lambda: masked_sum(lambda v: v, S, P),
        PSP: lambda: masked_sum(lambda v: softplus(-v), S, P),
        CPOS: lambda: masked_sum(lambda v: _clamp(v, tau), S, P),
    }
    stats = torch.stack([make[k]() if need & (1 << k) else zero for k in range(NUM_STATS)])
    if exp is None:
        return stats
    slot, shift = exp
    ref = shift(stats.detach()).to(S.dtype).detach() if callable(shift) else _shift_tensor(shift, S).to(S.dtype)
    a = exp_terms.row_shift(ref, zero)[:, None]
    x = _clamp(S, tau) if slot == CLSE else S
    # a batch without a positive or a negative pair is skipped (RowStats): its exponentials must not
    # overflow into 0 * inf = NaN in the gradient it discards
    skip = ~(P.any() & N.any())
    x = torch.where(skip, torch.zeros_like(x), x)
    return stats, masked_sum(lambda v: torch.exp(v - a), x, N), ref


FAMILY = registry.family("critic_lse", ext_ops=("critic_lse", "critic_lse_backward"))
for _b in ("cpu", "cuda", "triton"):
    FAMILY.register(_b, _fused(_b))
FAMILY.register("reference", row_stats_reference)
FAMILY.availability()
