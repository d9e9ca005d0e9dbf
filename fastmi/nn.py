"""nn.Module wrappers of fastmi.functional. Constructor arguments are the loss's options; forward
takes the scores (or joint=/marginal=) and returns ``MIResult(loss, mi)``. MINE owns its moving
average as a buffer."""
from __future__ import annotations

import math

import torch
from torch import nn

from . import functional as F


class _CriticLoss(nn.Module):
    _fn = None

    def __init__(self, *, negatives=None, reg_weight=0.0, reg_target=0.0, reg_norm="l2", backend="auto", **options):
        super().__init__()
        self.options = dict(negatives=negatives, reg_weight=reg_weight, reg_target=reg_target, reg_norm=reg_norm,
                            backend=backend, **options)

    def forward(self, scores=None, positives=None, **vector_form):
        return type(self)._fn(scores, positives=positives, **vector_form, **self.options)

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v!r}" for k, v in self.options.items())


class InfoNCE(_CriticLoss):
    """``F.infonce`` as a module (InfoNCE / CPC; ReInfoNCE with reg_weight > 0)."""

    _fn = staticmethod(F.infonce)

    def forward(self, scores, positives=None):
        return F.infonce(scores, positives=positives, **self.options)


class DV(_CriticLoss):
    """``F.dv``: Donsker-Varadhan (MINE value without moving average); ReDV/ReMINE with reg_weight."""

    _fn = staticmethod(F.dv)

    def __init__(self, *, clip=None, **kw):
        super().__init__(clip=clip, **kw)


class NWJ(_CriticLoss):
    """``F.nwj``; ReNWJ with reg_weight > 0."""

    _fn = staticmethod(F.nwj)

    def __init__(self, *, clip=None, **kw):
        super().__init__(clip=clip, **kw)


class JS(_CriticLoss):
    """``F.js``: JS training, NWJ value; ReJS with reg_weight > 0."""

    _fn = staticmethod(F.js)


class SMILE(_CriticLoss):
    """``F.smile``: clipped DV value, JS gradient; ReSMILE with reg_weight > 0."""

    _fn = staticmethod(F.smile)

    def __init__(self, *, clip=5.0, clip_positives=False, **kw):
        super().__init__(clip=clip, clip_positives=clip_positives, **kw)


class TUBA(_CriticLoss):
    """``F.tuba``; the log-baseline is given per call (a scalar, or one value per row, learnable)."""

    def __init__(self, *, clip=None, **kw):
        super().__init__(clip=clip, **kw)

    def forward(self, scores=None, log_baseline=0.0, positives=None, **vector_form):
        return F.tuba(scores, log_baseline, positives=positives, **vector_form, **self.options)


class MINE(_CriticLoss):
    """``F.mine`` with its moving average of E_N[exp S] kept (in log space) as the buffer ``running_lme``.

    momentum: weight of the old average (0.9 = the common default); reset() empties the average.
    The average is updated in training mode only (as BatchNorm's running statistics).
    """

    def __init__(self, *, momentum=0.9, **kw):
        super().__init__(**kw)
        if not 0.0 <= float(momentum) < 1.0:
            raise ValueError(f"MINE: momentum must be in [0, 1), got {momentum}")
        self.momentum = float(momentum)
        self.register_buffer("running_lme", torch.tensor(math.nan))

    def reset(self) -> None:
        self.running_lme.fill_(math.nan)

    def forward(self, scores=None, positives=None, **vector_form):
        return F.mine(scores, self.running_lme, momentum=self.momentum, update=self.training, positives=positives,
                      **vector_form, **self.options)


class NeuralBayesMIM(nn.Module):
    """``F.nb_mim`` as a module: forward(states) -> NBMIMResult(loss, entropy, prior).

    alpha: weight of the prior term, (1 + alpha) R_p; prior: "v2" (the authors' code) or "v1";
    pool: kernel of the extra average-pooled scale of each 4-D state (0: none)."""

    def __init__(self, *, alpha=2.0, prior="v2", pool=2, eps=1e-7, backend="auto"):
        super().__init__()
        self.options = dict(alpha=alpha, prior=prior, pool=pool, eps=eps, backend=backend)

    def forward(self, states):
        return F.nb_mim(states, **self.options)

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v!r}" for k, v in self.options.items())


class NeuralBayesDMS(nn.Module):
    """``F.nb_dms`` as a module: forward(logits) -> scalar loss. scale="code" (the authors' code,
    default) or "paper" (Eq 5, half of it)."""

    def __init__(self, *, eps=1e-7, scale="code", backend="auto"):
        super().__init__()
        self.options = dict(eps=eps, scale=scale, backend=backend)

    def forward(self, logits):
        return F.nb_dms(logits, **self.options)

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v!r}" for k, v in self.options.items())
