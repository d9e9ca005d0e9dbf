"""nn.Module versions of the separable-critic losses (``<Bound>Separable`` for every separable bound).

temperature: the initial value; learn_temperature=True makes log(temperature) a parameter
(``log_temperature``), as CLIP learns its logit scale. normalize=True: the cosine critic;
symmetric=True: the mean of both directions (CLIP / NT-Xent). group=: None, "world" or a
torch.distributed ProcessGroup (the loss of the batch concatenated over the ranks; resolved at
each call, so the module can be built before init_process_group).
"""
from __future__ import annotations

import math

import torch
from torch import nn

from .._core import distributed, registry, validate
from ..critic_lse.bounds import BOUNDS, Bound
from ..critic_lse import sampled
from .api import FUNCTIONS


class SeparableLoss(nn.Module):
    """The shared body of the generated modules; S = x y^T / temperature never exists."""

    bound: Bound
    fn = None

    def __init__(self, *, temperature=1.0, learn_temperature=False, normalize=False, symmetric=False, negatives=None,
                 reg_weight=0.0, reg_target=0.0, reg_norm="l2", backend="auto", group=None):
        super().__init__()
        name = type(self).__name__
        t = validate.number(temperature, "temperature", name, low=0.0, strict=True)
        if math.isinf(t):
            raise ValueError(f"{name}: temperature must be positive and finite, got {temperature}")
        learn = validate.flag(learn_temperature, "learn_temperature", name)
        validate.regularization(reg_weight, reg_target, reg_norm, name)
        negatives = sampled.check_spec(negatives, name)
        registry.check_name(backend, name)
        if learn:
            self.log_temperature = nn.Parameter(torch.tensor(math.log(t)))
        else:
            self.log_temperature = None
            self._temperature = t
        self.options = dict(normalize=validate.flag(normalize, "normalize", name),
                            symmetric=validate.flag(symmetric, "symmetric", name), negatives=negatives,
                            reg_weight=reg_weight, reg_target=reg_target, reg_norm=reg_norm, backend=backend,
                            group=distributed.check_group(group, name))

    @property
    def temperature(self):
        return self._temperature if self.log_temperature is None else self.log_temperature.exp()

    def forward(self, x, y, positives=None):
        return type(self).fn(x, y, temperature=self.temperature, positives=positives, **self.options)

    def extra_repr(self) -> str:
        t = "learned" if self.log_temperature is not None else self._temperature
        return ", ".join([f"temperature={t!r}"] + [f"{k}={v!r}" for k, v in self.options.items()])


def make_module(bound: Bound) -> type:
    name = bound.module + "Separable"
    doc = f"``fastmi.functional.{bound.name}_separable`` as a module (see SeparableLoss)."
    return type(name, (SeparableLoss,), {"bound": bound, "fn": staticmethod(FUNCTIONS[f"{bound.name}_separable"]),
                                         "__doc__": doc, "__module__": "fastmi.nn"})


MODULES = {b.module + "Separable": make_module(b) for b in BOUNDS.values() if b.separable}
globals().update(MODULES)
__all__ = list(MODULES)
