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


def straight_through(grad_value: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
    """A tensor with the value of ``value`` and the gradient of ``grad_value``: g + sg(v - g); an
    infinite value is returned as it is (g + sg(v - g) would be NaN when g is infinite too)."""
    mixed = grad_value + (value - grad_value).detach()
    return torch.where(torch.isinf(value), value, mixed)


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


def evaluate(bound: Bound, opts: dict, reg: tuple, layout, stats_of: Callable[[tuple], dict],
             second_pass=None) -> MIResult:
    """``bound`` on the statistics ``stats_of(needed)`` returns ({stat: vector} for the needed ones)
    and, for a bound with a second pass, its per-row vector."""
    needed = bound.stats_needed(opts, bool(reg[0]))
    rs = RowStats(stats_of(needed), layout, bound.skip_rule, second_pass)
    value = bound.value(rs, opts)
    surrogate = value if bound.surrogate is None else bound.surrogate(rs, opts)
    stat = bound.reg_stat(rs, opts) if reg[0] else None
    return finish(surrogate, value, stat, reg, rs.skip, bound.upper)
