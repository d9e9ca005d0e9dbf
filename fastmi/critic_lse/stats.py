"""Row statistics of one score matrix, and the O(n) terms every critic bound is made of.

A ``RowStats`` holds only the statistics its bound requested (``contract.STATS``): reading one that
was not requested raises, so a bound that forgets to ask for a statistic fails loudly instead of
reading the zeros the kernels write for it.
"""
from __future__ import annotations

import torch

from .contract import CLSE, CPOS, LSE, POS, PSP, SP, STATS
from .layout import Layout


class RowStats:
    """The requested statistics (each a length-n vector), with the layout's positive and negative
    counts. ``skip`` (a 0-d bool tensor) marks a batch with no positive or no negative pair: its
    statistics read as zeros, so nothing computed from them can send inf or NaN into the gradient
    that the skipped step discards."""

    def __init__(self, stats: dict[int, torch.Tensor], layout: Layout, skip_rule: str = "batch", exp_rows=None,
                 second_pass: torch.Tensor | None = None):
        """``exp_rows``: E_i = exp(LSE_i - a_i - log |N|) (CLSE when clipped) of the bound's exponential
        term, with its own gradient path (``ops`` module docstring); read by ``exp_mean``.
        ``second_pass``: the per-row vector of a bound's second pass (Bound.second_pass)."""
        first = next(iter(stats.values()))
        dtype, dev = first.dtype, first.device
        self.pos_count = layout.positive_counts(dtype, dev)
        self.neg_count = layout.negative_counts(dtype, dev)
        if skip_rule == "anchors":  # InfoNCE: an anchor needs a positive and a negative
            self.anchor = (self.pos_count > 0) & (self.neg_count > 0)
            self.pos_count = torch.where(self.anchor, self.pos_count, torch.zeros_like(self.pos_count))
        self.n_pos = self.pos_count.sum()
        self.n_neg = self.neg_count.sum()
        self.skip = (self.n_pos == 0) | (self.n_neg == 0)
        self._pos_div = self.n_pos.clamp_min(1)
        self._neg_div = self.n_neg.clamp_min(1)
        self._stats = {k: torch.where(self.skip, torch.zeros_like(v), v) for k, v in stats.items()}
        self._second = None if second_pass is None else torch.where(self.skip, torch.zeros_like(second_pass),
                                                                     second_pass)
        self._exp_rows = None if exp_rows is None else torch.where(self.skip, torch.zeros_like(exp_rows), exp_rows)

    def __getitem__(self, k: int) -> torch.Tensor:
        try:
            return self._stats[k]
        except KeyError:
            raise LookupError(f"fastmi: the statistic {STATS[k]} was read but not requested "
                              f"(requested: {[STATS[i] for i in sorted(self._stats)]}); add it to the bound's needs") from None

    @property
    def second_pass(self) -> torch.Tensor:
        """The bound's own per-row vector from its second pass over the scores (``Bound.second_pass``)."""
        if self._second is None:
            raise LookupError("fastmi: the bound read its second-pass vector but declares no second_pass")
        return self._second

    @property
    def dtype(self) -> torch.dtype:
        return next(iter(self._stats.values())).dtype

    # --- the terms of the bounds -------------------------------------------------------------------
    def lme_neg(self, clipped: bool = False) -> torch.Tensor:
        """LME_N(S) = log mean over all negative pairs of exp(S) (of clip(S) when clipped)."""
        return torch.logsumexp(self[CLSE if clipped else LSE], 0) - torch.log(self._neg_div)

    def neg_exp_mean(self, log_shift, clipped: bool = False) -> torch.Tensor:
        """mean_N exp(S_ij - shift_i) = sum_i exp(LSE_i - shift_i - log |N|), for values only (its
        gradient would pass through exp(LSE_i - shift_i), which overflows; see exp_mean). No term is
        larger than the mean, and a row whose negatives are all -inf contributes 0."""
        return torch.exp(self[CLSE if clipped else LSE] - log_shift - torch.log(self._neg_div)).sum()

    def exp_mean(self) -> torch.Tensor:
        """mean_N exp(S_ij - a_i), a the bound's ``exp_shift`` (on clip(S) when clipped). Its gradient
        reaches each entry as exp(S_ij - a_i) / |N|, finite wherever that is, whatever the row's other
        scores."""
        if self._exp_rows is None:
            raise LookupError("fastmi: exp_mean() was read but the bound declares no exp_shift")
        return self._exp_rows.sum()  # the shift includes log |N|

    def pos_mean(self, clipped: bool = False) -> torch.Tensor:
        """mean_P S (of clip(S) when clipped)."""
        return self[CPOS if clipped else POS].sum() / self._pos_div

    def pos_shifted_mean(self, log_shift, clipped: bool = False) -> torch.Tensor:
        """mean over positive pairs (i, p) of S_ip - shift_i."""
        return (self[CPOS if clipped else POS] - self.pos_count * log_shift).sum() / self._pos_div

    def neg_softplus_mean(self) -> torch.Tensor:
        """mean_N softplus(S)."""
        return self[SP].sum() / self._neg_div

    def js_surrogate(self) -> torch.Tensor:
        """J = mean_P(-softplus(-S)) - mean_N softplus(S)."""
        return -self[PSP].sum() / self._pos_div - self.neg_softplus_mean()

    def anchor_lme(self) -> torch.Tensor:
        """Per anchor row, LME_{j in N_i} S_ij (0 for rows that are not anchors)."""
        row = self[LSE] - torch.log(self.neg_count.clamp_min(1))
        return torch.where(self.anchor, row, torch.zeros_like(row))

    def anchor_mean(self, per_row: torch.Tensor) -> torch.Tensor:
        """The mean over positive pairs of a per-anchor quantity (anchors weighted by their positives)."""
        return (self.pos_count * per_row).sum() / self._pos_div
