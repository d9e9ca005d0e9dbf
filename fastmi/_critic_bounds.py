"""Critic bounds as O(n) functions of the fused row statistics (see fastmi.ops.critic_lse).

The same math as ``fastmi.reference`` (the oracle), rewritten in terms of per-row sums so that the
n x m score matrix is read once by the kernel and autograd only sees vectors of length n.
"""
from __future__ import annotations

from typing import Optional

import torch

from . import reference
from ._scores import Layout
from .ops import critic_lse as op
from .ops.critic_lse import CLSE, CPOS, LSE, POS, PSP, SP


class RowStats:
    """Row statistics of one score matrix plus the positive/negative counts of its layout."""

    def __init__(self, scores: torch.Tensor, layout: Layout, clip: Optional[float], need: int, backend: str):
        self._count(op.row_stats(scores, layout, clip, need, backend), layout)

    @classmethod
    def from_stats(cls, st, layout: Layout) -> "RowStats":
        """Row statistics computed elsewhere (the separable family): ``st[k]`` for the k it needs."""
        rs = cls.__new__(cls)
        rs._count(st, layout)
        return rs

    def _count(self, st, layout: Layout) -> None:
        self.st = st
        dtype, dev = st[LSE].dtype, st[LSE].device
        self.pos_count = layout.positive_counts(dtype, dev)
        self.neg_count = layout.negative_counts(dtype, dev)
        self.n_pos = self.pos_count.sum()
        self._pos_div = self.n_pos.clamp_min(1)  # no positives: the step is skipped (reference._finish)
        self.n_neg = self.neg_count.sum()

    def lme_neg(self, clipped: bool = False) -> torch.Tensor:
        """LME_N(S) = log mean over all negative pairs of exp(S) (of clip(S) when clipped)."""
        return torch.logsumexp(self.st[CLSE if clipped else LSE], 0) - torch.log(self.n_neg)

    def pos_mean(self, clipped: bool = False) -> torch.Tensor:
        return self.st[CPOS if clipped else POS].sum() / self._pos_div

    def neg_softplus_mean(self) -> torch.Tensor:
        return self.st[SP].sum() / self.n_neg

    def js_surrogate(self) -> torch.Tensor:
        """J = mean_P(-softplus(-S)) - mean_N softplus(S)."""
        return -self.st[PSP].sum() / self._pos_div - self.neg_softplus_mean()


def need_for(estimator: str, *, clip: Optional[float], clip_positives: bool = False, reg: bool = False) -> int:
    clipped = clip is not None
    if estimator == "infonce":
        return op.bits(LSE, POS)
    if estimator in ("dv", "nwj", "tuba"):
        base = op.bits(CLSE, CPOS) if clipped else op.bits(LSE, POS)
        return base | (op.bits(LSE) if reg else 0)
    if estimator == "mine":
        return op.bits(LSE, POS)
    if estimator == "js":
        return op.bits(LSE, POS, SP, PSP)
    if estimator == "smile":
        pos = CPOS if (clipped and clip_positives) else POS
        return op.bits(CLSE if clipped else LSE, pos, SP, PSP) | (op.bits(LSE) if reg else 0)
    raise ValueError(estimator)


def infonce(rs: RowStats, reg):
    pc = rs.pos_count
    row_lme = rs.st[LSE] - torch.log(rs.neg_count)
    anchor = pc > 0
    weighted = torch.where(anchor, pc * row_lme, torch.zeros_like(row_lme))
    I = (torch.where(anchor, rs.st[POS], torch.zeros_like(row_lme)) - weighted).sum() / rs._pos_div
    stat = weighted.sum() / rs._pos_div
    return reference._finish(I, I, stat, *reg, rs.n_pos)


def dv(rs: RowStats, clipped: bool, reg):
    I = rs.pos_mean(clipped) - rs.lme_neg(clipped)
    return reference._finish(I, I, rs.lme_neg() if reg[0] else None, *reg, rs.n_pos)


def nwj(rs: RowStats, clipped: bool, reg):
    I = rs.pos_mean(clipped) - torch.exp(rs.lme_neg(clipped) - 1)
    return reference._finish(I, I, rs.lme_neg() if reg[0] else None, *reg, rs.n_pos)


def tuba(rs: RowStats, log_baseline: torch.Tensor, clipped: bool, reg):
    a = log_baseline.to(rs.st.dtype)
    a_rows = a.expand(rs.st.shape[1])
    pos = (rs.st[CPOS if clipped else POS] - rs.pos_count * a_rows).sum() / rs._pos_div
    neg = torch.exp(torch.logsumexp(rs.st[CLSE if clipped else LSE] - a_rows, 0) - torch.log(rs.n_neg))
    I = 1 + pos - neg
    return reference._finish(I, I, rs.lme_neg() if reg[0] else None, *reg, rs.n_pos)


def js(rs: RowStats, reg):
    I = rs.pos_mean() - torch.exp(rs.lme_neg() - 1)
    return reference._finish(rs.js_surrogate(), I, rs.neg_softplus_mean() if reg[0] else None, *reg, rs.n_pos)


def smile(rs: RowStats, clipped: bool, clip_positives: bool, reg):
    I = rs.pos_mean(clipped and clip_positives) - rs.lme_neg(clipped)
    return reference._finish(rs.js_surrogate(), I, rs.lme_neg() if reg[0] else None, *reg, rs.n_pos)


def mine(rs: RowStats, running_lme: torch.Tensor, momentum: float, update: bool, reg):
    batch_lme = rs.lme_neg()
    with torch.no_grad():
        ema = reference.mine_running_update(running_lme, batch_lme, momentum)
        if update:
            running_lme.copy_(ema)
    pos = rs.pos_mean()
    surrogate = pos - torch.exp(batch_lme - ema.to(batch_lme.dtype))
    return reference._finish(surrogate, pos - batch_lme, batch_lme, *reg, rs.n_pos)


