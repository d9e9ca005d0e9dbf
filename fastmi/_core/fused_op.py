"""A family's fused op, defined once for its two kernel implementations.

``FusedOp(name, schema, ...)`` defines the torch.library ops ``fastmi::<name>`` (kernels registered
by the compiled extension, csrc/cpu/<family>.cpp and csrc/cuda/<family>.cu, per dispatch key) and
``fastmi::<name>_triton`` (the Triton kernels of ``fastmi.kernels.<family>``), each with its
backward op when the family has one. Both share the schema, the fake (meta) kernels and the autograd
formula, so torch.compile(fullgraph=True) traces either and torch.library.opcheck passes.

The autograd formula is the family's ``save(ctx, inputs, output)`` and
``backward(ctx, ops, *grads) -> input grads``, where ``ops`` is the implementation's
``(forward, backward)`` pair; this helper adds the one guard every fused backward needs: the backward
kernels have no derivative of their own, so create_graph=True (double backward) raises and names the
reference backend, which supports it.
"""
from __future__ import annotations

import importlib
from typing import Callable, Optional

import torch


def _exists(qualname: str) -> bool:
    ns, name = qualname.split("::")
    try:
        getattr(getattr(torch.ops, ns), name)
        return True
    except (AttributeError, RuntimeError):
        return False


def _define(qualname: str, schema: str) -> None:
    # an extension built by an older fastmi defines its schemas itself: keep those
    if not _exists(qualname):
        torch.library.define(qualname, schema)


# qualname of every Triton op -> the Python callable that launches its kernels (bench/aot_triton.py
# replays recorded calls through it to compile every specialization without a GPU)
TRITON_BODIES: dict[str, Callable] = {}


class _Implementation:
    """The (forward, backward) callables of one implementation of a FusedOp."""

    def __init__(self, qualname: str, has_backward: bool):
        self.qualname = qualname
        self.backward_qualname = qualname + "_backward" if has_backward else None

    def forward(self, *args):
        ns, name = self.qualname.split("::")
        return getattr(getattr(torch.ops, ns), name)(*args)

    def backward(self, *args):
        ns, name = self.backward_qualname.split("::")
        return getattr(getattr(torch.ops, ns), name)(*args)


class FusedOp:
    """``fastmi::<name>`` (extension) and ``fastmi::<name>_triton`` with one schema and one autograd.

    name, schema: the op and its schema without the name, e.g. ``"(Tensor x, int k) -> Tensor"``.
    backward_schema: the backward op's schema (None: the family has no separate backward op).
    fake, fake_backward: meta kernels. save, backward: the autograd formula (module docstring);
    both None for an op without a gradient. triton: (kernel module, forward function[, backward
    function]) in ``fastmi.kernels``, imported on first call, or (forward callable[, backward
    callable]) when the Triton implementation composes several kernels.
    """

    def __init__(self, name: str, schema: str, *, fake: Callable, triton: tuple, backward_schema: Optional[str] = None,
                 fake_backward: Optional[Callable] = None, save: Optional[Callable] = None,
                 backward: Optional[Callable] = None):
        self.name = name
        has_backward = backward_schema is not None
        self.ext = _Implementation(f"fastmi::{name}", has_backward)
        self.triton = _Implementation(f"fastmi::{name}_triton", has_backward)
        for impl in (self.ext, self.triton):
            _define(impl.qualname, schema)
            torch.library.register_fake(impl.qualname)(fake)
            if has_backward:
                _define(impl.backward_qualname, backward_schema)
                torch.library.register_fake(impl.backward_qualname)(fake_backward)
            if backward is not None:
                torch.library.register_autograd(impl.qualname, _guarded(backward, impl, name), setup_context=save)
        if callable(triton[0]):
            fwd, bwd = (tuple(triton) + (None,))[:2]
        else:
            fwd, bwd = _lazy_kernel(triton[0], triton[1]), (_lazy_kernel(*triton[::2]) if len(triton) > 2 else None)
        torch.library.impl(self.triton.qualname, "default")(fwd)
        TRITON_BODIES[self.triton.qualname] = fwd
        if has_backward:
            torch.library.impl(self.triton.backward_qualname, "default")(bwd)
            TRITON_BODIES[self.triton.backward_qualname] = bwd

    def implementation(self, backend: str) -> _Implementation:
        """The extension's ops for "cpu"/"cuda", the Triton ops for "triton"."""
        return self.triton if backend == "triton" else self.ext


def _guarded(backward: Callable, impl: _Implementation, name: str) -> Callable:
    def run(ctx, *grads):
        if torch.is_grad_enabled():  # create_graph=True: the backward kernel has no derivative of its own
            raise RuntimeError(f"fastmi: second-order gradients through the fused {name} kernels are not supported; "
                               "use backend='reference' for double backward")
        return backward(ctx, impl, *grads)

    return run


def _lazy_kernel(module: str, function: str) -> Callable:
    def run(*args):
        kernels = importlib.import_module(f"fastmi.kernels.{module}")
        return getattr(kernels, function)(*args)

    run.__name__ = function
    return run
