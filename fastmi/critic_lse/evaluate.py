"""From row statistics to ``MIResult(loss, mi)``: the part every critic bound shares.

    loss = -straight_through(surrogate, value) + reg_weight * d(stat, reg_target),   mi = sg(value)

d is the squared difference ("l2", the papers' regularizer) or the absolute difference ("l1"). A
batch with no positive or no negative pair is skipped: loss 0 with zero gradient, mi NaN.
"""
from __future__ import annotations

import math
from typing import Callable

import torch

from .._core.result import MIResult
from .bounds import Bound
from .stats import RowStats


class _GradientOnly(torch.autograd.Function):
    """0 in value, the identity in gradient."""

    @staticmethod
    def forward(ctx, g):
        return torch.zeros_like(g)

    @staticmethod
    def backward(ctx, grad):
        return grad


def straight_through(grad_value: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
    """A tensor with the value of ``value`` and the gradient of ``grad_value`` (g + sg(v - g) in the
    papers' code), exactly: sg(v) + 0 * g with g's gradient, so an overflowed value (inf) keeps the
    surrogate's gradient, as in exact arithmetic, instead of becoming inf - inf = NaN."""
    return value.detach() + _GradientOnly.apply(grad_value)


def regularizer(stat: torch.Tensor, weight: float, target: float, norm: str = "l2") -> torch.Tensor:
    """R = weight * (stat - target)^2 ("l2") or weight * |stat - target| ("l1")."""
    d = stat - target
    return weight * (d * d if norm == "l2" else d.abs())


def finish(surrogate, value, stat, reg: tuple, skip, upper: bool = False) -> MIResult:
    """The loss and the reported estimate; ``skip`` (0-d bool) marks a skipped batch. When the
    surrogate is the value itself no straight-through is needed (an infinite value stays infinite
    instead of becoming inf - inf = NaN). An upper bound is minimized as it is (loss = +bound)."""
    weight, target, norm = reg
    bound = value if surrogate is value else straight_through(surrogate, value)
    loss = bound if upper else -bound
    if weight:
        loss = loss + regularizer(stat, weight, target, norm)
    loss = torch.where(skip, torch.zeros_like(loss), loss)
    mi = torch.where(skip, torch.full_like(value, math.nan), value.detach())
    return MIResult(loss, mi)


def mean_shift(shift, layout, dtype: torch.dtype, device):
    """a + log |N|: the exponential term's shift, so that E_i = exp(LSE_i - a_i - log |N|) summed over
    rows is mean_N exp(S - a) with no intermediate larger than the mean. ``shift``: a number, a
    tensor, or a function of the detached [NUM_STATS, n] statistics (MINE)."""
    log_n = torch.log(layout.negative_counts(dtype, device).sum().clamp_min(1))
    if callable(shift):
        return lambda st: shift(st) + log_n
    if not isinstance(shift, torch.Tensor):
        shift = torch.tensor(float(shift), dtype=dtype, device=device)
    return shift.to(dtype) + log_n


def exp_request(bound: Bound, opts: dict, reg: tuple, layout, dtype: torch.dtype, device):
    """(slot, shift) of the bound's exponential term for ``row_stats``/``stats_of`` (the shift a +
    log |N| of ``mean_shift``), or None for a bound without one."""
    if bound.exp_shift is None:
        return None
    needed = bound.stats_needed(opts, bool(reg[0]))
    return bound.exp_slot(opts), mean_shift(bound.exp_shift(opts, layout, needed), layout, dtype, device)


def evaluate(bound: Bound, opts: dict, reg: tuple, layout, stats_of: Callable, dtype: torch.dtype, device,
             second_pass=None) -> MIResult:
    """``bound`` on the statistics ``stats_of(needed, exp)`` returns: {stat: vector} for the needed
    ones, or with ``exp = (slot, shift)`` (the bound's exponential term, ``exp_request``) the
    triple ({stat: vector}, E, a) (see ``ops``). ``dtype``: the statistics' dtype. ``second_pass``:
    the per-row vector of a bound with a second pass."""
    needed = bound.stats_needed(opts, bool(reg[0]))
    exp = exp_request(bound, opts, reg, layout, dtype, device)
    if exp is None:
        rs = RowStats(stats_of(needed, None), layout, bound.skip_rule, second_pass=second_pass)
    else:
        stats, exp_rows, _ = stats_of(needed, exp)
        rs = RowStats(stats, layout, bound.skip_rule, exp_rows, second_pass)
    value = bound.value(rs, opts)
    surrogate = value if bound.surrogate is None else bound.surrogate(rs, opts)
    stat = bound.reg_stat(rs, opts) if reg[0] else None
    return finish(surrogate, value, stat, reg, rs.skip, bound.upper)
