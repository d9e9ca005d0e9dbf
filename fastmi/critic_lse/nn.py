"""nn.Module versions of the critic-score losses, one per entry of ``bounds.BOUNDS``.

Constructor arguments are the loss's options (checked at construction, with the function's
messages); forward takes the scores (or joint=/marginal=) and the bound's per-call inputs and returns
``MIResult(loss, mi)``. A bound with ``module_state`` (MINE) owns that input as a buffer and
updates it in training mode only, as BatchNorm's running statistics. ``group=`` (None, "world" or a
ProcessGroup, resolved at each call): the bound over every rank's rows; MINE's moving average is
then the global one, identical on every rank.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from .._core import distributed, registry
from .bounds import BOUNDS, Bound
from . import sampled
from .api import FUNCTIONS, check_options
from .baselines import LearnedBaseline, MovingAverageBaseline  # noqa: F401  (re-exported: fastmi.nn)


class CriticLoss(nn.Module):
    """The shared body of the generated modules (``bound`` and ``fn`` are class attributes)."""

    bound: Bound
    fn = None

    def __init__(self, *, negatives=None, reg_weight=0.0, reg_target=0.0, reg_norm="l2", backend="auto", group=None,
                 **options):
        super().__init__()
        name = type(self).__name__
        known = {o.name for o in self._module_options()}
        for key in options:
            if key not in known:
                raise TypeError(f"{name}: unexpected option {key!r}")
        given = {o.name: options.get(o.name, o.default) for o in self.bound.options}
        checked, _ = check_options(self.bound, name, given, reg_weight, reg_target, reg_norm)
        negatives = sampled.check_spec(negatives, name)
        registry.check_name(backend, name)
        self.options = dict(negatives=negatives, reg_weight=reg_weight, reg_target=reg_target, reg_norm=reg_norm,
                            backend=backend, group=distributed.check_group(group, name),
                            **{k: v for k, v in checked.items() if k in known})
        for k in known:  # e.g. MINE(...).momentum
            setattr(self, k, checked[k])
        if self.bound.module_state:
            state, _ = self.bound.module_state
            self.register_buffer(state, torch.tensor(math.nan))

    @classmethod
    def _module_options(cls):
        flag = cls.bound.module_state[1] if cls.bound.module_state else None
        return [o for o in cls.bound.options if o.name != flag]

    def reset(self) -> None:
        """Empty the owned state (MINE: the moving average)."""
        if self.bound.module_state:
            getattr(self, self.bound.module_state[0]).fill_(math.nan)

    def forward(self, scores=None, *inputs, positives=None, **vector_form):
        per_call = [i for i in self.bound.inputs if not self.bound.module_state or i.name != self.bound.module_state[0]]
        if len(inputs) > len(per_call):
            raise TypeError(f"{type(self).__name__}.forward takes scores{''.join(', ' + i.name for i in per_call)} "
                            f"and keywords, got {1 + len(inputs)} positional arguments")
        kw = {i.name: v for i, v in zip(per_call, inputs)}
        for i in per_call[len(inputs):]:
            kw[i.name] = vector_form.pop(i.name, i.default)
        if self.bound.module_state:
            state, flag = self.bound.module_state
            kw[state] = getattr(self, state)
            kw[flag] = self.training
        return type(self).fn(scores, positives=positives, **kw, **vector_form, **self.options)

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v!r}" for k, v in self.options.items())


def make_module(bound: Bound) -> type:
    first = bound.doc.strip().splitlines()[0]
    doc = (f"``fastmi.functional.{bound.name}`` as a module: {first}\n\n    Options: "
           + ", ".join(o.name for o in bound.options) + (", " if bound.options else "")
           + "negatives, reg_weight, reg_target, reg_norm, backend, group.")
    return type(bound.module, (CriticLoss,), {"bound": bound, "fn": staticmethod(FUNCTIONS[bound.name]),
                                              "__doc__": doc, "__module__": "fastmi.nn"})


MODULES = {b.module: make_module(b) for b in BOUNDS.values()}
globals().update(MODULES)
__all__ = list(MODULES) + ["LearnedBaseline", "MovingAverageBaseline"]
