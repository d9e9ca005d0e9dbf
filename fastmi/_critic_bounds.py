"""Critic bounds as O(n) functions of the fused row statistics (see fastmi.ops.critic_lse).

The same math as ``fastmi.reference`` (the oracle), rewritten in terms of per-row sums so that the
n x m score matrix is read once by the kernel and autograd only sees vectors of length n.
"""
from __future__ import annotations

import math
from typing import Optional

import torch

from . import reference
from ._scores import Layout
from .ops import critic_lse as op
from .ops.critic_lse import CLSE, CPOS, LSE, POS, PSP, SP


def zero_where(cond: torch.Tensor, st):
    """The statistics (a [6, n] tensor, or a list with None for the unneeded ones) set to 0 where cond."""
    if isinstance(st, torch.Tensor):
        return torch.where(cond, torch.zeros_like(st), st)
    return type(st)(t if t is None else torch.where(cond, torch.zeros_like(t), t) for t in st)


def mean_shift(shift, layout: Layout, dtype: torch.dtype, device):
    """a + log |N|: exp(LSE_i - a - log |N|) summed over rows is mean_N exp(S - a) with no
    intermediate larger than the mean (the sum of the exponentials may overflow where the mean does
    not). ``shift``: a number, a tensor, or a function of the statistics."""
    log_n = torch.log(layout.negative_counts(dtype, device).sum().clamp_min(1))
    if callable(shift):
        return lambda st: shift(st) + log_n
    if not isinstance(shift, torch.Tensor):
        shift = torch.tensor(float(shift), dtype=dtype, device=device)
    return shift + log_n


class RowStats:
    """Row statistics of one score matrix plus the positive/negative counts of its layout."""

    def __init__(self, scores: torch.Tensor, layout: Layout, clip: Optional[float], need: int, backend: str,
                 exp_shift=False):
        """``exp_shift``: the shift a of the bound's exponential term mean_N exp(S - a) (a number, a 0-d
        or [n] tensor, or a function of the detached statistics: MINE's moving average), see ``exp_mean``."""
        if exp_shift is False:
            self._count(op.row_stats(scores, layout, clip, need, backend), layout)
            return
        slot = CLSE if clip is not None else LSE
        shift = mean_shift(exp_shift, layout, op.stats_dtype(scores.dtype), scores.device)
        st, exp_rows, ref = op.row_stats(scores, layout, clip, need, backend, shift, slot)
        self._count(st, layout, exp_rows, ref)

    @classmethod
    def from_stats(cls, st, layout: Layout, exp_rows=None, exp_ref=None) -> "RowStats":
        """Row statistics computed elsewhere (the separable family): ``st[k]`` for the k it needs."""
        rs = cls.__new__(cls)
        rs._count(st, layout, exp_rows, exp_ref)
        return rs

    def _count(self, st, layout: Layout, exp_rows=None, exp_ref=None) -> None:
        dtype, dev = st[LSE].dtype, st[LSE].device
        self.pos_count = layout.positive_counts(dtype, dev)
        self.neg_count = layout.negative_counts(dtype, dev)
        self.n_pos = self.pos_count.sum()
        self.n_neg = self.neg_count.sum()
        self._pos_div = self.n_pos.clamp_min(1)
        self._neg_div = self.n_neg.clamp_min(1)
        # No positive or no negative pair: the step is skipped (reference._finish). The statistics
        # of such a batch are replaced by zeros so that no inf/NaN reaches the discarded gradient.
        self.skip = (self.n_pos == 0) | (self.n_neg == 0)
        self.st = zero_where(self.skip, st)
        # E_i = exp(LSE_i - a_i) (CLSE when clipped) with its own gradient path, and a (see exp_mean)
        self.exp_rows = None if exp_rows is None else zero_where(self.skip, exp_rows)
        self.exp_ref = exp_ref

    def lme_neg(self, clipped: bool = False) -> torch.Tensor:
        """LME_N(S) = log mean over all negative pairs of exp(S) (of clip(S) when clipped)."""
        return torch.logsumexp(self.st[CLSE if clipped else LSE], 0) - torch.log(self._neg_div)

    def neg_exp_mean(self, log_shift, clipped: bool = False) -> torch.Tensor:
        """mean_N exp(S_ij - shift_i) = sum_i exp(LSE_i - shift_i) / |N|, for values only (its gradient
        would pass through exp(LSE_i - shift_i), which overflows; see exp_mean). Summed directly rather
        than through a log-sum-exp over rows: a row whose negatives are all -inf contributes 0."""
        return torch.exp(self.st[CLSE if clipped else LSE] - log_shift - torch.log(self._neg_div)).sum()

    def exp_mean(self) -> torch.Tensor:
        """mean_N exp(S_ij - a_i) with a the ``exp_shift`` these statistics were made with (on clip(S)
        when clipped). Its gradient reaches each entry as exp(S_ij - a_i) / |N|, finite wherever that
        is, whatever the row's other scores (fastmi.ops.exp_terms)."""
        return self.exp_rows.sum()  # the shift includes log |N| (mean_shift)

    def pos_mean(self, clipped: bool = False) -> torch.Tensor:
        return self.st[CPOS if clipped else POS].sum() / self._pos_div

    def neg_softplus_mean(self) -> torch.Tensor:
        return self.st[SP].sum() / self._neg_div

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
    # Anchors need a positive and a negative; an anchor without either is skipped.
    anchor = (rs.pos_count > 0) & (rs.neg_count > 0)
    pc = torch.where(anchor, rs.pos_count, torch.zeros_like(rs.pos_count))
    n_pos = pc.sum()
    skip = n_pos == 0
    st = zero_where(skip, rs.st)
    row_lme = st[LSE] - torch.log(rs.neg_count.clamp_min(1))
    weighted = torch.where(anchor, pc * row_lme, torch.zeros_like(row_lme))
    div = n_pos.clamp_min(1)
    I = (torch.where(anchor, st[POS], torch.zeros_like(row_lme)) - weighted).sum() / div
    stat = weighted.sum() / div
    return reference._finish(I, I, stat, *reg, skip)


def dv(rs: RowStats, clipped: bool, reg):
    I = rs.pos_mean(clipped) - rs.lme_neg(clipped)
    return reference._finish(I, I, rs.lme_neg() if reg[0] else None, *reg, rs.skip)


def nwj(rs: RowStats, clipped: bool, reg):
    """``rs`` made with exp_shift=1."""
    I = rs.pos_mean(clipped) - rs.exp_mean()
    return reference._finish(I, I, rs.lme_neg() if reg[0] else None, *reg, rs.skip)


def tuba(rs: RowStats, log_baseline: torch.Tensor, clipped: bool, reg):
    """``rs`` made with exp_shift=log_baseline."""
    a = log_baseline.to(rs.st.dtype)
    a_rows = a.expand(rs.st.shape[1])
    pos = (rs.st[CPOS if clipped else POS] - rs.pos_count * a_rows).sum() / rs._pos_div
    I = 1 + pos - rs.exp_mean()
    return reference._finish(I, I, rs.lme_neg() if reg[0] else None, *reg, rs.skip)


def js(rs: RowStats, reg, value: str = "nwj"):
    """value "nwj": NWJ(S) (the papers' code); "nwj_shifted": NWJ(S + 1) (see functional.js)."""
    if value == "nwj":
        I = rs.pos_mean() - rs.neg_exp_mean(1.0)
    else:
        I = rs.pos_mean() + 1 - rs.neg_exp_mean(0.0)
    return reference._finish(rs.js_surrogate(), I, rs.neg_softplus_mean() if reg[0] else None, *reg, rs.skip)


def smile(rs: RowStats, clipped: bool, clip_positives: bool, reg):
    I = rs.pos_mean(clipped and clip_positives) - rs.lme_neg(clipped)
    return reference._finish(rs.js_surrogate(), I, rs.lme_neg() if reg[0] else None, *reg, rs.skip)


def _mine_averages(running_lme: torch.Tensor, momentum: float, batch_lme: torch.Tensor, skip: torch.Tensor):
    """(the updated moving average, the one the surrogate divides by), both log E_N e^S (detached)."""
    # a skipped batch (no positive or negative pair) does not move the average
    ema = reference.mine_running_update(running_lme, torch.where(skip, math.nan, batch_lme), momentum)
    return ema, reference.mine_surrogate_ema(ema, batch_lme)


def mine_shift(layout: Layout, running_lme: torch.Tensor, momentum: float):
    """MINE's exp_shift for RowStats: the surrogate's average, a function of the batch statistics."""
    def shift(st: torch.Tensor) -> torch.Tensor:
        rs = RowStats.from_stats(st, layout)
        return _mine_averages(running_lme, momentum, rs.lme_neg(), rs.skip)[1]
    return shift


def mine(rs: RowStats, running_lme: torch.Tensor, momentum: float, update: bool, reg):
    """``rs`` made with exp_shift=mine_shift(...): rs.exp_mean() = mean_N exp(S - ema)."""
    batch_lme = rs.lme_neg()
    with torch.no_grad():
        ema, _ = _mine_averages(running_lme, momentum, batch_lme, rs.skip)
        if update:
            running_lme.copy_(ema)
    pos = rs.pos_mean()
    surrogate = pos - rs.exp_mean()
    return reference._finish(surrogate, pos - batch_lme, batch_lme, *reg, rs.skip)
