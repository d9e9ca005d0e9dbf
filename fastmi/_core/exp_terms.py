"""Exponential terms of a loss whose gradient must not pass through exp(row statistic).

The fused backward kernels (critic_lse, separable; each family's ``ops``) give each entry of a row the gradient

    g_i exp(S_ij - l_i)        (g_i = dL/dl_i, l_i the row's log-sum-exp)

That product is where NaN came from: when the loss holds exp(l_i - a_i) (NWJ, TUBA and MINE's
mean_N exp(S - a)), g_i = exp(l_i - a_i) overflows as soon as one score of the row is large, while
each entry's own gradient exp(S_ij - a_i) is finite; inf * exp(S_ij - l_i) = inf * 0 = NaN.

So these terms get their own output E_i = exp(l_i - a_i) (``with_exp_term``), whose gradient h_i is
finite, and the backward hands the kernel one (coefficient, shift) pair per row for both terms:

    coef exp(x - shift) = g exp(x - l) + h exp(x - a)       (``merge``, computed in log space)

The kernels then compute exactly the entries' gradients, in one pass, with no change to them.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor


def merge(g: Tensor, l: Tensor, h: Tensor, a: Tensor) -> tuple[Tensor, Tensor]:
    """(coef, shift), per row, with coef * exp(x - shift) = g exp(x - l) + h exp(x - a) for finite x.

    A term whose gradient is 0, or whose row statistic is +-inf (exp(x - l) = 0 for every finite x),
    adds nothing; with no term left the pair is (0, +inf). |coef| <= 2, so the kernel's product
    overflows only where the entry's gradient itself does. NaN in g, l, h or a propagates.
    """
    dt = g.dtype
    g, l, h, a = (t.to(torch.float64) for t in torch.broadcast_tensors(g, l, h, a))
    live_g = (g != 0) & (l.abs() != math.inf)
    live_h = (h != 0) & (a.abs() != math.inf)
    ninf = torch.full_like(g, -math.inf)
    # log |coefficient of e^x| of each term
    lg = torch.where(live_g, torch.log(g.abs()) - l, ninf)
    lh = torch.where(live_h, torch.log(h.abs()) - a, ninf)
    top = torch.maximum(lg, lh)  # NaN propagates
    ref = torch.where(torch.isfinite(top), top, torch.zeros_like(top))
    coef = (torch.where(live_g, torch.sign(g) * torch.exp(lg - ref), torch.zeros_like(g))
            + torch.where(live_h, torch.sign(h) * torch.exp(lh - ref), torch.zeros_like(h)))
    shift = torch.where(top == -math.inf, torch.full_like(top, math.inf), -ref)
    return coef.to(dt), shift.to(dt)


def row_shift(shift, like: Tensor) -> Tensor:
    """The exponent shift a as a detached-or-not tensor broadcast to the rows of ``like``."""
    if not isinstance(shift, Tensor):
        return torch.full_like(like, float(shift))
    return shift.to(like.dtype).expand(like.shape)


def shift_gradient(h: Tensor, E: Tensor, shape) -> Tensor:
    """dL/da of E = exp(l - a): -h E, summed to a's shape (a scalar shift gets the total)."""
    live = h != 0  # 0 * inf (an overflowed E with no gradient) is 0, not NaN
    d = torch.where(live, -h * E, torch.zeros_like(E))
    return d.sum().reshape(shape) if len(shape) == 0 else d.reshape(shape)
