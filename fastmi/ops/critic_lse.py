"""Custom ops of the critic_lse family: fused row statistics of a score matrix, with autograd.

Forward: ``stats[k, i]`` for k in (LSE, CLSE, SP, POS, PSP, CPOS), see ``csrc/critic_lse.h``:
    LSE_i  = log sum_{j in N_i} exp S_ij          CLSE_i = log sum_{j in N_i} exp clip(S_ij)
    SP_i   = sum_{j in N_i} softplus(S_ij)        POS_i  = sum_{j in P_i} S_ij
    PSP_i  = sum_{j in P_i} softplus(-S_ij)       CPOS_i = sum_{j in P_i} clip(S_ij)
Every critic bound is an O(n) function of these (``fastmi._critic_bounds``), so autograd only has
to carry ``dL/dstats`` (6 x n) back to the kernel, which recomputes dS tile by tile (FlashAttention
style): nothing n x m is saved between forward and backward.

A row whose LSE (CLSE) is +-inf gets nothing through that statistic at its finite entries (exp(S -
lse) = 0 there, whatever its gradient). Exponential terms of the bounds, mean_N exp(S - a), reach the
kernel through ``row_stats(..., exp_shift=a)`` instead of through exp(LSE) (``fastmi.ops.exp_terms``).
fp16/bf16 scores are read by the kernels themselves (the CPU kernel one row at a time in fp32).

Ops: ``fastmi::critic_lse`` / ``fastmi::critic_lse_backward`` (C++ schema in csrc/fastmi.cpp, CPU
and CUDA kernels) and ``fastmi::critic_lse_triton`` / ``fastmi::critic_lse_triton_backward``
(Triton, defined here). All have fake implementations and autograd, so torch.compile traces them.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from .. import _backend
from . import exp_terms

LSE, CLSE, SP, POS, PSP, CPOS = range(6)
NUM_STATS = 6


def bits(*stats: int) -> int:
    out = 0
    for s in stats:
        out |= 1 << s
    return out


def stats_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def _fake_forward(scores, pos_index, pos_mask, neg_mode, clip, need):
    return scores.new_empty((NUM_STATS, scores.shape[0]), dtype=stats_dtype(scores.dtype))


def _fake_backward(grad_stats, scores, pos_index, pos_mask, neg_mode, clip, need, stats):
    return scores.new_empty(scores.shape)


def _make_autograd(backward_op):
    def setup_context(ctx, inputs, output):
        scores, pos_index, pos_mask, neg_mode, clip, need = inputs
        ctx.save_for_backward(scores, pos_index, pos_mask, output)
        ctx.args = (neg_mode, clip, need)

    def backward(ctx, grad_stats):
        if torch.is_grad_enabled():  # create_graph=True: the backward kernel has no derivative of its own
            raise RuntimeError(
                "fastmi: second-order gradients through the fused critic_lse kernels are not supported; "
                "use backend='reference' for double backward"
            )
        scores, pos_index, pos_mask, stats = ctx.saved_tensors
        neg_mode, clip, need = ctx.args
        grad = backward_op(grad_stats.contiguous(), scores, pos_index, pos_mask, neg_mode, clip, need, stats)
        return grad, None, None, None, None, None

    return setup_context, backward


# --- C++ / CUDA extension ops ---------------------------------------------------------------
if _backend.availability()["cpu"][0]:
    torch.library.register_fake("fastmi::critic_lse")(_fake_forward)
    torch.library.register_fake("fastmi::critic_lse_backward")(_fake_backward)
    _ctx, _bwd = _make_autograd(lambda *a: torch.ops.fastmi.critic_lse_backward(*a))
    torch.library.register_autograd("fastmi::critic_lse", _bwd, setup_context=_ctx)


# --- Triton ops -------------------------------------------------------------------------------
@torch.library.custom_op("fastmi::critic_lse_triton", mutates_args=())
def critic_lse_triton(
    scores: Tensor, pos_index: Optional[Tensor], pos_mask: Optional[Tensor], neg_mode: int, clip: float, need: int
) -> Tensor:
    from ..kernels import critic_lse as kernels

    return kernels.critic_lse_fwd(scores, pos_index, pos_mask, neg_mode, clip, need)


@torch.library.custom_op("fastmi::critic_lse_triton_backward", mutates_args=())
def critic_lse_triton_backward(
    grad_stats: Tensor,
    scores: Tensor,
    pos_index: Optional[Tensor],
    pos_mask: Optional[Tensor],
    neg_mode: int,
    clip: float,
    need: int,
    stats: Tensor,
) -> Tensor:
    from ..kernels import critic_lse as kernels

    return kernels.critic_lse_bwd(grad_stats, scores, pos_index, pos_mask, neg_mode, clip, need, stats)


critic_lse_triton.register_fake(_fake_forward)
critic_lse_triton_backward.register_fake(_fake_backward)
_ctx, _bwd = _make_autograd(lambda *a: critic_lse_triton_backward(*a))
critic_lse_triton.register_autograd(_bwd, setup_context=_ctx)


def _ops(backend: str):
    """(forward, backward) ops of a fused backend."""
    if backend == "triton":
        return critic_lse_triton, critic_lse_triton_backward
    return torch.ops.fastmi.critic_lse, torch.ops.fastmi.critic_lse_backward


class _StatsWithExp(torch.autograd.Function):
    """The op's statistics plus E_i = exp(stats[slot, i] - a_i), with E's gradient merged into the
    kernel's coefficient of that slot (``fastmi.ops.exp_terms``): never through exp(stats), which
    overflows on a row with one large score although the row's other entries have finite gradients.
    ``shift`` may also be a function of the (detached) statistics giving a constant a (MINE's moving
    average includes the batch); a is returned as ``ref``."""

    @staticmethod
    def forward(ctx, scores, shift, pos_index, pos_mask, neg_mode, clip, need, backend, slot):
        forward_op, _ = _ops(backend)
        stats = forward_op(scores, pos_index, pos_mask, neg_mode, clip, need)
        if callable(shift):
            ref = shift(stats.detach()).to(stats.dtype)
            shift = None  # a constant: no gradient
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
            raise RuntimeError(
                "fastmi: second-order gradients through the fused critic_lse kernels are not supported; "
                "use backend='reference' for double backward"
            )
        scores, pos_index, pos_mask, stats, a, E = ctx.saved_tensors
        neg_mode, clip, need, backend, slot, shift_shape = ctx.args
        g = torch.zeros_like(stats) if g_stats is None else g_stats.clone()
        h = torch.zeros_like(E) if g_exp is None else g_exp
        coef, shift = exp_terms.merge(g[slot], stats[slot], h, a)
        g[slot] = coef
        st = stats.clone()
        st[slot] = shift
        grad = _ops(backend)[1](g.contiguous(), scores, pos_index, pos_mask, neg_mode, clip, need, st)
        grad_shift = None
        if ctx.needs_input_grad[1]:
            grad_shift = exp_terms.shift_gradient(h, E, shift_shape)
        return grad, grad_shift, None, None, None, None, None, None, None


def row_stats(scores: Tensor, layout, clip: Optional[float], need: int, backend: str, exp_shift=False,
              exp_slot: int = LSE):
    """The [6, n] row statistics of ``scores`` (autograd-aware) with the chosen fused backend.

    With ``exp_shift`` (a number, a 0-d or [n] tensor, or a function of the detached statistics):
    (stats, E, a) where E_i = exp(stats[exp_slot, i] - a_i) carries its own gradient (see
    ``_StatsWithExp``) and a is the shift used."""
    tau = float("inf") if clip is None else float(clip)
    args = (layout.pos_index, layout.pos_mask, layout.neg_mode, tau, need)
    if exp_shift is not False:
        if not callable(exp_shift) and not isinstance(exp_shift, Tensor):
            exp_shift = torch.tensor(float(exp_shift), dtype=stats_dtype(scores.dtype), device=scores.device)
        return _StatsWithExp.apply(scores, exp_shift, *args[:4], need, backend, exp_slot)
    if backend == "triton":
        return critic_lse_triton(scores, *args)
    return torch.ops.fastmi.critic_lse(scores, *args)
