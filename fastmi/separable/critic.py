"""The separable critic S_ij = a_i b_j <x_i, y_j>: argument checks, the temperature and the layout.

a_i = 1 / (temperature |x_i|) and b_j = 1 / |y_j| (norms only for the cosine critic, normalize=True)
are made inside the family's op (``ops.separable_stats``), in one autograd node with the kernel.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .._core import validate
from .._core.dtypes import acc_dtype
from ..critic_lse.api import check_options
from ..critic_lse.layout import Layout, resolve_shape
from .ops import EXCLUDE_DIAG, EXCLUDE_NONE, EXCLUDE_POSITIVE


@dataclass(frozen=True)
class Args:
    """The checked arguments of one call: the bound's options, the regularizer, the flags, x and y,
    and the temperature (a number, or a 0-d tensor)."""

    opts: dict
    reg: tuple
    normalize: bool
    symmetric: bool
    x: torch.Tensor
    y: torch.Tensor
    temperature: object


def check_args(bound, name: str, x, y, temperature, normalize, symmetric, positives, reg_weight, reg_target,
               reg_norm) -> Args:
    """Every check that needs only this process's arguments (the layout needs the global sizes)."""
    opts, reg = check_options(bound, name, {o.name: o.default for o in bound.options}, reg_weight, reg_target,
                              reg_norm)
    normalize = validate.flag(normalize, "normalize", name)
    symmetric = validate.flag(symmetric, "symmetric", name)
    if symmetric and positives is not None:
        raise ValueError(f"{name}: symmetric=True needs diagonal positives (positives=None)")
    check_positives(positives, name)
    x, y = check_pair(x, y, name)
    if normalize:
        validate.nonzero_rows(x, "x", name)
        validate.nonzero_rows(y, "y", name)
    return Args(opts, reg, normalize, symmetric, x, y, check_temperature(temperature, x, name))


def check_pair(x, y, name: str) -> tuple[torch.Tensor, torch.Tensor]:
    x = validate.tensor(x, "x", name, ndim=2)
    y = validate.tensor(y, "y", name, ndim=2)
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"{name}: x has {x.shape[1]} features per row but y has {y.shape[1]} (x is n x d, y is m x d)")
    validate.same_device(name, x=x, y=y)
    if x.dtype != y.dtype:
        raise TypeError(f"{name}: x is {x.dtype} but y is {y.dtype}; give both the same dtype")
    return x, y


def check_temperature(temperature, x: torch.Tensor, name: str):
    """A positive finite number, or a positive 1-element floating tensor (learnable)."""
    if not isinstance(temperature, torch.Tensor):
        t = validate.number(temperature, "temperature", name, low=0.0, strict=True)
        if math.isinf(t):
            raise ValueError(f"{name}: temperature must be finite, got {t}")
        return t
    if not temperature.is_floating_point() or temperature.numel() != 1:
        raise TypeError(f"{name}: temperature must be a number or a 1-element floating tensor, "
                        f"got {temperature.dtype} of shape {tuple(temperature.shape)}")
    validate.same_device(name, x=x, temperature=temperature)
    if not torch.compiler.is_compiling() and temperature.device.type != "meta":
        t = float(temperature.detach())  # one host sync, eager mode only
        if not (t > 0 and math.isfinite(t)):
            raise ValueError(f"{name}: temperature must be positive and finite, got {t}")
    return temperature.reshape(())


def inverse_temperature(temperature, x: torch.Tensor) -> torch.Tensor:
    """1 / temperature as a 0-d tensor in x's accumulation dtype (with the gradient of a tensor)."""
    dt = acc_dtype(x.dtype)
    if isinstance(temperature, torch.Tensor):
        return 1.0 / temperature.to(dt)
    return torch.tensor(1.0 / temperature, dtype=dt, device=x.device)


def check_positives(positives, name: str) -> None:
    if isinstance(positives, torch.Tensor) and positives.dtype == torch.bool:
        raise TypeError(f"{name}: positives must be None (the diagonal) or a column index per row; a boolean "
                        "mask is not supported by the separable critic (use fastmi.functional on x @ y.T)")


def layout_of(n: int, m: int, device, positives, negatives, *, infonce: bool, name: str) -> Layout:
    """The layout of the n x m matrix x @ y.T (built from the global sizes under group=)."""
    check_positives(positives, name)
    return resolve_shape(n, m, device, positives, negatives, infonce=infonce, name=name, what="x @ y.T")


def exclusion(layout: Layout) -> int:
    """The column each row's negatives leave out: none, the diagonal, or the row's positive."""
    if layout.negatives == "all":
        return EXCLUDE_NONE
    if layout.negatives == "off_diagonal":
        return EXCLUDE_DIAG
    return EXCLUDE_POSITIVE
