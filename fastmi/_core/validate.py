"""Input checks shared by every loss: clear errors that name the argument."""
from __future__ import annotations

import math
import numbers
from typing import Optional

import torch


def tensor(x, arg: str, name: str, *, ndim: Optional[int] = None, floating: bool = True) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name}: {arg} must be a torch.Tensor, got {type(x).__name__}")
    if floating and not x.is_floating_point():
        raise TypeError(f"{name}: {arg} must have a floating dtype (float16/bfloat16/float32/float64), got {x.dtype}")
    if ndim is not None and x.dim() != ndim:
        raise ValueError(f"{name}: {arg} must be {ndim}-D, got shape {tuple(x.shape)}")
    if x.numel() == 0:
        raise ValueError(f"{name}: {arg} is empty (shape {tuple(x.shape)})")
    return x


def same_device(name: str, **tensors) -> None:
    items = [(k, v) for k, v in tensors.items() if isinstance(v, torch.Tensor)]
    for k, v in items[1:]:
        if v.device != items[0][1].device:
            raise ValueError(f"{name}: {k} is on {v.device} but {items[0][0]} is on {items[0][1].device}")


def number(x, arg: str, name: str, *, low: Optional[float] = None, strict: bool = False, high: Optional[float] = None,
           high_strict: bool = False) -> float:
    # numbers.Real admits numpy's scalars (np.float32 is not a float subclass); bool is refused.
    if isinstance(x, bool) or not isinstance(x, numbers.Real):
        raise TypeError(f"{name}: {arg} must be a number, got {type(x).__name__}")
    x = float(x)
    if math.isnan(x):
        raise ValueError(f"{name}: {arg} is NaN")
    if low is not None and (x < low or (strict and x == low)):
        raise ValueError(f"{name}: {arg} must be {'>' if strict else '>='} {low}, got {x}")
    if high is not None and (x > high or (high_strict and x == high)):
        raise ValueError(f"{name}: {arg} must be {'<' if high_strict else '<='} {high}, got {x}")
    return x


def regularization(reg_weight, reg_target, reg_norm, name: str) -> tuple[float, float, str]:
    w = number(reg_weight, "reg_weight", name, low=0.0)
    if math.isinf(w):
        raise ValueError(f"{name}: reg_weight must be finite")
    t = number(reg_target, "reg_target", name)
    if math.isinf(t):
        raise ValueError(f"{name}: reg_target must be finite")
    if reg_norm not in ("l2", "l1"):
        raise ValueError(f"{name}: reg_norm must be 'l2' (squared difference) or 'l1', got {reg_norm!r}")
    return w, t, reg_norm


def flag(value, arg: str, name: str) -> bool:
    """A True/False option (numpy's bool too); anything else is a TypeError, not a truthy guess."""
    kind = type(value)
    if isinstance(value, bool) or (kind.__module__ == "numpy" and kind.__name__ in ("bool_", "bool")):
        return bool(value)
    raise TypeError(f"{name}: {arg} must be True or False, got {value!r}")


def clip(value, name: str, arg: str = "clip") -> Optional[float]:
    if value is None:
        return None
    v = number(value, arg, name, low=0.0, strict=True)
    return None if math.isinf(v) else v


def finite(x: torch.Tensor, arg: str, name: str) -> None:
    """ValueError if x holds NaN or Inf. Costs one device sync, so it is skipped while torch.compile
    traces (data-dependent control flow would break the graph)."""
    if torch.compiler.is_compiling():
        return
    if not bool(torch.isfinite(x).all()):
        raise ValueError(f"{name}: {arg} contains NaN or Inf")


def like(name: str, a: torch.Tensor, b: torch.Tensor, arg_a: str, arg_b: str, *, shape: bool = True,
         dtype: bool = True) -> None:
    """``b`` on ``a``'s device, with its shape (when ``shape``) and dtype (when ``dtype``); errors name both."""
    same_device(name, **{arg_a: a, arg_b: b})
    if shape and a.shape != b.shape:
        raise ValueError(f"{name}: {arg_a} has shape {tuple(a.shape)} but {arg_b} has shape {tuple(b.shape)}")
    if dtype and a.dtype != b.dtype:
        raise TypeError(f"{name}: {arg_a} is {a.dtype} but {arg_b} is {b.dtype}")
def nonzero_rows(x: torch.Tensor, arg: str, name: str) -> None:
    """ValueError if a row of x has norm 0 (in fp32, fp64 for float64): the cosine critic divides by
    it. One host sync, eager mode only."""
    if torch.compiler.is_compiling() or x.device.type == "meta":
        return
    dt = torch.float64 if x.dtype == torch.float64 else torch.float32
    zero = (torch.linalg.vector_norm(x.detach().to(dt), dim=1) == 0).nonzero()
    if zero.numel():
        raise ValueError(f"{name}: normalize=True but {arg} has {zero.numel()} zero-norm row(s) "
                         f"(first: row {int(zero[0])}); the cosine critic is undefined there")


def generator(gen, name: str, alternative: str) -> None:
    """``gen`` is None or a torch.Generator; under torch.compile a Generator (not a graph input)
    raises a RuntimeError naming the compile-friendly ``alternative``."""
    if gen is None:
        return
    if not isinstance(gen, torch.Generator):
        raise TypeError(f"{name}: generator must be a torch.Generator or None, got {type(gen).__name__}")
    if torch.compiler.is_compiling():
        raise RuntimeError(
            f"{name}: generator= cannot be traced by torch.compile (a torch.Generator is not a graph input). "
            "Inside a compiled function leave generator=None: the draws then come from torch's default "
            "generator, so torch.manual_seed(s) before the call makes them reproducible (compiled code draws "
            f"other values than eager code for the same seed). Or draw outside the compiled function: {alternative}")
