"""The separable critic S = x y^T / temperature (or the cosine critic) as fused statistics.

Everything that touches x y^T, log sum_j exp S_ij per row (and per column for the symmetric loss)
and the positive scores S_ip(i), with the per-row scales 1 / (temperature |x_i|) and 1 / |y_j|
(norms only for the cosine critic), comes from one autograd node of the fused op
(``fastmi.ops.separable.separable_stats``; a learnable temperature gets its gradient there), and the
bounds are assembled by the critic_lse family's formulas (``fastmi._critic_bounds``) from those
statistics.
"""
from __future__ import annotations

import math

import torch

from . import _critic_bounds, _scores, _validate
from ._result import MIResult
from .ops import separable as op
from .ops.critic_lse import LSE, POS


def check_pair(x, y, name: str) -> tuple[torch.Tensor, torch.Tensor]:
    x = _validate.tensor(x, "x", name, ndim=2)
    y = _validate.tensor(y, "y", name, ndim=2)
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"{name}: x has {x.shape[1]} features per row but y has {y.shape[1]} (x is n x d, y is m x d)")
    _validate.same_device(name, x=x, y=y)
    if x.dtype != y.dtype:
        raise TypeError(f"{name}: x is {x.dtype} but y is {y.dtype}; give both the same dtype")
    return x, y


def check_temperature(temperature, x: torch.Tensor, name: str):
    """A positive finite number, or a positive 1-element floating tensor (learnable)."""
    if not isinstance(temperature, torch.Tensor):
        t = _validate.number(temperature, "temperature", name, low=0.0, strict=True)
        if math.isinf(t):
            raise ValueError(f"{name}: temperature must be finite, got {t}")
        return t
    if not temperature.is_floating_point() or temperature.numel() != 1:
        raise TypeError(f"{name}: temperature must be a number or a 1-element floating tensor, "
                        f"got {temperature.dtype} of shape {tuple(temperature.shape)}")
    _validate.same_device(name, x=x, temperature=temperature)
    if not torch.compiler.is_compiling() and temperature.device.type != "meta":
        t = float(temperature.detach())  # one host sync, eager mode only
        if not (t > 0 and math.isfinite(t)):
            raise ValueError(f"{name}: temperature must be positive and finite, got {t}")
    return temperature.reshape(())


def layout_of(x, y, positives, negatives, *, infonce: bool, name: str) -> _scores.Layout:
    if isinstance(positives, torch.Tensor) and positives.dtype == torch.bool:
        raise TypeError(f"{name}: positives must be None (the diagonal) or a column index per row; a boolean "
                        "mask is not supported by the separable critic (use fastmi.functional on x @ y.T)")
    return _scores.resolve_shape(x.shape[0], y.shape[0], x.device, positives, negatives, infonce=infonce,
                                 name=name, what="x @ y.T")


def _exclusion(layout: _scores.Layout) -> int:
    if layout.negatives == "all":
        return op.EXCLUDE_NONE
    if layout.negatives == "off_diagonal":
        return op.EXCLUDE_DIAG
    return op.EXCLUDE_POSITIVE


def row_stats(x, y, temperature, normalize: bool, layout, backend: str, *, symmetric: bool = False, exp_shift=None):
    """RowStats of S = x y^T / temperature (cosine critic with normalize), and of S^T when symmetric,
    for the critic_lse bound formulas. ``exp_shift``: the shift a of an exponential term
    mean_N exp(S - a) of the bound (NWJ: 1), see RowStats.exp_mean."""
    index = layout.pos_index if layout.kind == "index" else None
    dt = op.stats_dtype(x.dtype)
    inv_t = 1.0 / temperature.to(dt) if isinstance(temperature, torch.Tensor) else 1.0 / temperature
    shift = None if exp_shift is None else _critic_bounds.mean_shift(exp_shift, layout, dt, x.device)
    row_lse, col_lse, pos, exp_rows = op.separable_stats(x, y, inv_t, normalize, index, _exclusion(layout), symmetric,
                                                         backend, shift)
    rows = _critic_bounds.RowStats.from_stats(_stats(row_lse, pos), layout,
                                              None if exp_shift is None else exp_rows)
    if not symmetric:
        return rows, None
    return rows, _critic_bounds.RowStats.from_stats(_stats(col_lse, pos), layout)


def _stats(lse, pos):
    st = [None] * 6
    st[LSE], st[POS] = lse, pos
    return st


def average(a: MIResult, b: MIResult) -> MIResult:
    return MIResult((a.loss + b.loss) / 2, (a.mi + b.mi) / 2)
