"""One place that picks the backend of every call.

``backend`` is "auto" (default), "triton", "cuda", "cpu" or "reference". The environment variable
FASTMI_BACKEND replaces "auto" (an explicit argument in code wins).

auto: CUDA tensors -> Triton, else the CUDA extension, else the reference; CPU tensors -> the C++
CPU kernel, else the reference, with one warning naming what is missing. With TRITON_INTERPRET=1
the Triton backend also accepts CPU tensors (that is how it is tested without a GPU).
"""
from __future__ import annotations

import importlib.util
import os
import warnings

import torch

from . import _ext

BACKENDS = ("auto", "triton", "cuda", "cpu", "reference")


def _probe_triton() -> tuple[bool, str]:
    if importlib.util.find_spec("triton") is None:
        return False, "triton is not installed (pip install triton)"
    if not torch.cuda.is_available() and os.environ.get("TRITON_INTERPRET", "0") != "1":
        return False, "no CUDA device (set TRITON_INTERPRET=1 to run the Triton kernels on CPU through the interpreter)"
    try:
        import triton  # noqa: F401

        from .kernels import critic_lse  # noqa: F401
    except Exception as exc:  # a broken triton install must not break fastmi
        return False, f"triton failed to import: {exc}"
    how = "CUDA" if torch.cuda.is_available() else "CPU tensors through TRITON_INTERPRET=1"
    return True, f"triton {triton.__version__} ({how})"


def _probe_ext() -> tuple[tuple[bool, str], tuple[bool, str]]:
    mod = _ext.load()
    st = _ext.status()
    if mod is None:
        return (False, st["error"]), (False, st["error"])
    cpu = (True, st["how"])
    if not torch.cuda.is_available():
        cuda = (False, "no CUDA device")
    elif not st["cuda"]:
        cuda = (False, "fastmi._C was built without CUDA kernels (torch without CUDA or no nvcc at build time)")
    else:
        cuda = (True, st["how"] + " with CUDA kernels")
    return cpu, cuda


_TRITON = _probe_triton()
_CPU, _CUDA = _probe_ext()
_warned: set = set()


def availability() -> dict[str, tuple[bool, str]]:
    """{backend: (available, why)} for this process."""
    return {
        "triton": _TRITON,
        "cuda": _CUDA,
        "cpu": _CPU,
        "reference": (True, "pure PyTorch (always available)"),
    }


def _fallback(reason: str) -> str:
    if reason not in _warned:
        _warned.add(reason)
        warnings.warn(f"fastmi: using the reference (unfused) backend: {reason}", RuntimeWarning, stacklevel=4)
    return "reference"


_EXT_OPS: dict = {}


def ext_has_op(op: str) -> bool:
    """Whether the loaded fastmi._C has a CPU kernel for ``fastmi::<op>`` (an extension built
    before the op's family was added has not: then that family falls back instead of failing).
    Probed once per op in eager mode (each family's ops module probes at import)."""
    known = _EXT_OPS.get(op)
    if known is not None:
        return known
    if torch.compiler.is_compiling():  # not probed yet: tracing assumes it (a missing op fails loudly there)
        return True
    try:
        known = _CPU[0] and bool(torch._C._dispatch_has_kernel_for_dispatch_key(f"fastmi::{op}", "CPU"))
    except RuntimeError:  # the op's schema is not registered at all
        known = False
    _EXT_OPS[op] = known
    return known


def _differentiating_transform() -> bool:
    """Whether a torch.func transform that differentiates (grad/vjp/jacrev: Grad, jvp/jacfwd: Jvp) is active.
    vmap alone is not one: the fused ops run under it."""
    if torch.compiler.is_compiling():
        return False
    stack_fn = getattr(getattr(torch._C, "_functorch", None), "get_interpreter_stack", None)
    stack = stack_fn() if stack_fn is not None else None
    return bool(stack) and any(i.key().name in ("Grad", "Jvp") for i in stack)


def select(backend: str, tensor: torch.Tensor, name: str, kernels: tuple = ("triton", "cuda", "cpu"),
           ext_op: str | None = None) -> str:
    """The concrete backend for a call on ``tensor``; raises if an explicitly requested one cannot run.

    ``kernels``: the fused backends the loss's family has (e.g. no CUDA kernel where Triton is the
    GPU path). ``ext_op``: the family's op in fastmi._C, checked before "cpu"/"cuda" is chosen."""
    b = _select(backend, tensor, name, kernels)
    if b != "reference" and _differentiating_transform():
        why = ("a torch.func gradient transform (grad, vjp, jacrev, jacfwd, jvp, ...) is active, and torch's custom ops "
               "with registered backward formulas do not support it yet (pytorch/pytorch#168393)")
        if backend != "auto":
            raise RuntimeError(f"{name}: backend={backend!r} cannot run here: {why}; use backend='reference' "
                               "(or 'auto') inside torch.func transforms")
        return _fallback(why)
    if ext_op is not None and b in ("cpu", "cuda") and not ext_has_op(ext_op):
        why = (f"the loaded fastmi._C has no fastmi::{ext_op} (it was built before this family; rebuild with "
               "pip install --no-build-isolation -e .)")
        if backend != "auto":
            raise RuntimeError(f"{name}: backend={backend!r} is not available: {why}")
        b = _fallback(why)
    return b


def validate(backend: str, tensor: torch.Tensor, name: str) -> None:
    """The checks of ``select`` (a known backend that can run on ``tensor``), for a loss made of torch
    ops on every backend (nothing fused to dispatch, so torch.func transforms need no fallback)."""
    _select(backend, tensor, name, ("triton", "cuda", "cpu"))


def _select(backend: str, tensor: torch.Tensor, name: str, kernels: tuple) -> str:
    if backend == "auto":
        backend = os.environ.get("FASTMI_BACKEND", "auto") or "auto"
        if backend not in BACKENDS:
            raise ValueError(f"FASTMI_BACKEND must be one of {BACKENDS}, got {backend!r}")
    elif backend not in BACKENDS:
        raise ValueError(f"{name}: backend must be one of {BACKENDS}, got {backend!r}")
    dev = tensor.device.type
    if backend == "auto":
        if dev == "cuda":
            if _TRITON[0] and "triton" in kernels:
                return "triton"
            if _CUDA[0] and "cuda" in kernels:
                return "cuda"
            return _fallback(f"no GPU kernel ({_TRITON[1]}; {_CUDA[1]})")
        if dev == "cpu":
            return "cpu" if _CPU[0] else _fallback(f"no C++ CPU kernel ({_CPU[1]})")
        return "reference"
    if backend == "reference":
        return backend
    if backend not in kernels:
        raise ValueError(f"{name}: there is no {backend!r} kernel for this loss; its fused backends are {kernels}")
    ok, why = availability()[backend]
    if not ok:
        raise RuntimeError(f"{name}: backend={backend!r} is not available: {why}")
    if backend == "cpu" and dev != "cpu":
        raise ValueError(f"{name}: backend='cpu' needs CPU tensors, got {dev}")
    if backend == "cuda" and dev != "cuda":
        raise ValueError(f"{name}: backend='cuda' needs CUDA tensors, got {dev}")
    if backend == "triton" and dev != "cuda" and not (dev == "cpu" and os.environ.get("TRITON_INTERPRET") == "1"):
        raise ValueError(f"{name}: backend='triton' needs CUDA tensors (or CPU tensors with TRITON_INTERPRET=1)")
    return backend
