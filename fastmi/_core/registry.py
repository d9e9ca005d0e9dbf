"""The backend registry: family -> backend -> op. Dispatch, ``fastmi info``, the tests and the
benchmarks all read it.

``backend`` is "auto" (default), "triton", "cuda", "cpu" or "reference"; the environment variable
FASTMI_BACKEND replaces "auto" (an explicit argument in code wins).

auto: CUDA tensors -> Triton, else the CUDA extension, else the reference; CPU tensors -> the C++
kernel, else the reference, with one warning naming what is missing. With TRITON_INTERPRET=1 the
Triton backend also accepts CPU tensors (that is how it is tested without a GPU). Inside a torch.func
transform that differentiates, auto takes the reference (see ``Family.select``).

Every family registers one op per backend it has, all with the same signature; "reference" is the
family's plain-PyTorch implementation of that same interface (the no-kernel fallback, and the path
torch.func differentiates).
"""
from __future__ import annotations

import importlib.util
import os
import warnings
from typing import Callable

import torch

from .. import _ext

BACKENDS = ("auto", "triton", "cuda", "cpu", "reference")
FUSED = ("triton", "cuda", "cpu")


def _probe_triton() -> tuple[bool, str]:
    if importlib.util.find_spec("triton") is None:
        return False, "triton is not installed (pip install triton)"
    if not torch.cuda.is_available() and os.environ.get("TRITON_INTERPRET", "0") != "1":
        return False, "no CUDA device (set TRITON_INTERPRET=1 to run the Triton kernels on CPU through the interpreter)"
    try:
        import triton
    except Exception as exc:  # a broken triton install must not break fastmi
        return False, f"triton failed to import: {exc}"
    how = "CUDA" if torch.cuda.is_available() else "CPU tensors through TRITON_INTERPRET=1"
    return True, f"triton {triton.__version__} ({how})"


def _probe_extension() -> tuple[tuple[bool, str], tuple[bool, str]]:
    """(cpu, cuda) availability of the compiled extension as a whole."""
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
_CPU, _CUDA = _probe_extension()
_warned: set = set()


def availability() -> dict[str, tuple[bool, str]]:
    """{backend: (available, why)} of this process, for the machinery as a whole."""
    return {"triton": _TRITON, "cuda": _CUDA, "cpu": _CPU, "reference": (True, "pure PyTorch (always available)")}


def fallback(reason: str) -> str:
    """"reference", warning once per distinct reason."""
    if reason not in _warned:
        _warned.add(reason)
        warnings.warn(f"fastmi: using the reference (unfused) backend: {reason}", RuntimeWarning, stacklevel=5)
    return "reference"


def _has_kernel(op: str, key: str) -> bool:
    try:
        return bool(torch._C._dispatch_has_kernel_for_dispatch_key(f"fastmi::{op}", key))
    except RuntimeError:  # the op is not registered at all
        return False


def _differentiating_transform() -> bool:
    """Whether a torch.func transform that differentiates (grad/vjp/jacrev: Grad, jvp/jacfwd: Jvp) is
    active. vmap alone is not one: the fused ops run under it."""
    if torch.compiler.is_compiling():
        return False
    stack_fn = getattr(getattr(torch._C, "_functorch", None), "get_interpreter_stack", None)
    stack = stack_fn() if stack_fn is not None else None
    return bool(stack) and any(i.key().name in ("Grad", "Jvp") for i in stack)


def check_name(backend, name: str) -> str:
    """``backend`` resolved against FASTMI_BACKEND, or ValueError naming the choices."""
    if backend == "auto":
        backend = os.environ.get("FASTMI_BACKEND", "auto") or "auto"
        if backend not in BACKENDS:
            raise ValueError(f"FASTMI_BACKEND must be one of {BACKENDS}, got {backend!r}")
    elif backend not in BACKENDS:
        raise ValueError(f"{name}: backend must be one of {BACKENDS}, got {backend!r}")
    return backend


def check_device(backend: str, tensor: torch.Tensor, name: str) -> None:
    """ValueError when an explicitly chosen fused backend cannot take ``tensor``'s device."""
    dev = tensor.device.type
    if backend == "cpu" and dev != "cpu":
        raise ValueError(f"{name}: backend='cpu' needs CPU tensors, got {dev}")
    if backend == "cuda" and dev != "cuda":
        raise ValueError(f"{name}: backend='cuda' needs CUDA tensors, got {dev}")
    if backend == "triton" and dev != "cuda" and not (dev == "cpu" and os.environ.get("TRITON_INTERPRET") == "1"):
        raise ValueError(f"{name}: backend='triton' needs CUDA tensors (or CPU tensors with TRITON_INTERPRET=1)")


class Family:
    """One kernel family's ops by backend. ``ext_ops``: the ops of fastmi._C that its "cpu" and
    "cuda" backends need (an extension built before the family has none: then they are absent)."""

    def __init__(self, name: str, ext_ops: tuple[str, ...] = ()):
        self.name = name
        self.ext_ops = ext_ops
        self.ops: dict[str, Callable] = {}
        self._availability: dict | None = None

    def register(self, backend: str, op: Callable) -> Callable:
        if backend not in BACKENDS[1:]:
            raise ValueError(f"unknown backend {backend!r}")
        self.ops[backend] = op
        self._availability = None
        return op

    def implemented(self) -> tuple[str, ...]:
        """The fused backends this family has kernels for (whether or not they run here)."""
        return tuple(b for b in FUSED if b in self.ops)

    def availability(self) -> dict[str, tuple[bool, str]]:
        """{backend: (available, why)} for this family in this process (probed once: each family's
        ops module asks at import, so that no probe runs while torch.compile traces a call)."""
        if self._availability is None:
            self._availability = self._probe()
        return self._availability

    def _probe(self) -> dict[str, tuple[bool, str]]:
        out = {}
        for b in BACKENDS[1:]:
            ok, why = availability()[b]
            if b not in self.ops:
                ok, why = False, f"{self.name} has no {b} kernel"
            elif ok and b in ("cpu", "cuda"):
                key = b.upper()
                missing = [op for op in self.ext_ops if not _has_kernel(op, key)]
                if missing:
                    ok, why = False, (f"the loaded fastmi._C has no {key} kernel for fastmi::{missing[0]} (it was "
                                      "built before this family; rebuild: pip install --no-build-isolation -e .)")
            out[b] = (ok, why)
        return out

    def available(self) -> tuple[str, ...]:
        """The fused backends that run in this process (the tests' and benchmarks' list)."""
        avail = self.availability()
        return tuple(b for b in FUSED if avail[b][0])

    def select(self, backend: str, tensor: torch.Tensor, name: str) -> tuple[str, Callable]:
        """(backend, op) for a call of ``name`` on ``tensor``; raises if an explicitly requested
        backend cannot run it, falls back to the reference (one warning) when auto finds no kernel."""
        requested = check_name(backend, name)
        avail = self.availability()
        if requested == "auto":
            chosen = self._auto(tensor, avail)
        elif requested == "reference":
            chosen = "reference"
        else:
            if requested not in self.ops:
                raise ValueError(f"{name}: there is no {requested!r} kernel for this loss; its fused backends are "
                                 f"{self.implemented()}")
            ok, why = avail[requested]
            if not ok:
                raise RuntimeError(f"{name}: backend={requested!r} is not available: {why}")
            check_device(requested, tensor, name)
            chosen = requested
        if chosen != "reference" and _differentiating_transform():
            why = ("a torch.func gradient transform (grad, vjp, jacrev, jacfwd, jvp, ...) is active, and torch's custom "
                   "ops with registered backward formulas do not support it yet (pytorch/pytorch#168393)")
            if requested != "auto":
                raise RuntimeError(f"{name}: backend={requested!r} cannot run here: {why}; use backend='reference' "
                                   "(or 'auto') inside torch.func transforms")
            chosen = fallback(why)
        return chosen, self.ops[chosen]

    def _auto(self, tensor: torch.Tensor, avail) -> str:
        dev = tensor.device.type
        if dev == "cuda":
            for b in ("triton", "cuda"):
                if avail[b][0]:
                    return b
            return fallback(f"no GPU kernel for {self.name} ({avail['triton'][1]}; {avail['cuda'][1]})")
        if dev == "cpu":
            return "cpu" if avail["cpu"][0] else fallback(f"no C++ CPU kernel for {self.name} ({avail['cpu'][1]})")
        return "reference"


_FAMILIES: dict[str, Family] = {}


def family(name: str, ext_ops: tuple[str, ...] = ()) -> Family:
    """The registry entry of ``name`` (created on first use)."""
    if name not in _FAMILIES:
        _FAMILIES[name] = Family(name, ext_ops)
    return _FAMILIES[name]


def families() -> dict[str, Family]:
    """Every registered family, in registration order."""
    return dict(_FAMILIES)


def validate(backend: str, tensor: torch.Tensor, name: str) -> None:
    """The checks of ``select`` for a loss made of torch ops on every backend (nothing fused to pick):
    a known backend name, and a device an explicitly chosen backend could take."""
    requested = check_name(backend, name)
    if requested in FUSED:
        ok, why = availability()[requested]
        if not ok:
            raise RuntimeError(f"{name}: backend={requested!r} is not available: {why}")
        check_device(requested, tensor, name)
