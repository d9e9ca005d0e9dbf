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
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

from .._core import registry
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


def _fused(backend: str):
    impl = OP.implementation(backend)

    def row_stats(scores: Tensor, layout: Layout, tau: float, need: int) -> Tensor:
        if backend == "cpu":
            scores = upcast(scores)  # the CPU kernel computes half types in fp32
        return impl.forward(scores, layout.pos_index, layout.pos_mask, layout.neg_mode, tau, need)

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


def row_stats_reference(scores: Tensor, layout: Layout, tau: float, need: int) -> Tensor:
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
    return torch.stack([make[k]() if need & (1 << k) else zero for k in range(NUM_STATS)])


FAMILY = registry.family("critic_lse", ext_ops=("critic_lse", "critic_lse_backward"))
for _b in ("cpu", "cuda", "triton"):
    FAMILY.register(_b, _fused(_b))
FAMILY.register("reference", row_stats_reference)
FAMILY.availability()
