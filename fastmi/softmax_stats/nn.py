"""nn.Module versions of the Neural Bayes losses."""
from __future__ import annotations

from .._core import distributed
from .._core.options_module import OptionsModule
from . import api


class NeuralBayesMIM(OptionsModule):
    """``F.nb_mim`` as a module: forward(states) -> NBMIMResult(loss, entropy, prior).

    alpha: weight of the prior term, (1 + alpha) R_p; prior: "v2" (the authors' code) or "v1";
    pool: kernel of the extra average-pooled scale of each 4-D state (0: none); group: None, "world" or
    a ProcessGroup (batch means over every rank's rows)."""

    def __init__(self, *, alpha=2.0, prior="v2", pool=2, eps=1e-7, backend="auto", group=None):
        super().__init__(alpha=alpha, prior=prior, pool=pool, eps=eps, backend=backend,
                         group=distributed.check_group(group, type(self).__name__))

    def forward(self, states):
        return api.nb_mim(states, **self.options)


class NeuralBayesDMS(OptionsModule):
    """``F.nb_dms`` as a module: forward(logits) -> scalar loss. scale="code" (the authors' code,
    default) or "paper" (Eq 5, half of it); group: None, "world" or a ProcessGroup."""

    def __init__(self, *, eps=1e-7, scale="code", backend="auto", group=None):
        super().__init__(eps=eps, scale=scale, backend=backend, group=distributed.check_group(group, type(self).__name__))

    def forward(self, logits):
        return api.nb_dms(logits, **self.options)


__all__ = ["NeuralBayesMIM", "NeuralBayesDMS"]
