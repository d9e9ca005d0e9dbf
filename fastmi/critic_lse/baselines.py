"""Baselines of TUBA as modules: the log-baseline a that ``fastmi.functional.tuba(scores, a)`` (and
``alpha_tuba``) subtracts from each row. NWJ is TUBA with the fixed a = 1.

    LearnedBaseline()                  a scalar parameter a, trained with the critic (TUBA is a lower
                                       bound for every a, maximal at a = log E_N[e^S])
    LearnedBaseline(in_features, ...)  a small network a(x_i) of each row's sample, one value per row
                                       (maximal at a(x_i) = log E_y[e^T(x_i, y)])
    MovingAverageBaseline(momentum)    a = log of the moving average of the batches' E_N[e^S], detached, as
                                       ``fastmi.nn.MINE`` keeps it: TUBA's gradient is then MINE's
                                       bias-corrected gradient, and its value a bound for that a

    baseline = fastmi.nn.LearnedBaseline(x_dim, hidden=(64,))
    loss, mi = fastmi.functional.tuba(scores, baseline(x))
"""
from __future__ import annotations

import math

import torch
from torch import nn

from .._core import validate
from .api import negative_lme
from .bounds import mine_running_update


class LearnedBaseline(nn.Module):
    """a as a parameter (``in_features=None``: one scalar, initial value ``init``) or as an MLP
    in_features -> hidden -> 1 of each row's sample (forward(x) -> [n], the last layer's bias
    starting at ``init``)."""

    def __init__(self, in_features: int | None = None, hidden=(64,), init: float = 0.0, activation=nn.ReLU):
        super().__init__()
        init = validate.number(init, "init", "LearnedBaseline")
        if in_features is None:
            self.value = nn.Parameter(torch.tensor(init))
            self.net = None
            return
        layers, d = [], int(in_features)
        for h in hidden:
            layers += [nn.Linear(d, h), activation()]
            d = h
        last = nn.Linear(d, 1)
        nn.init.zeros_(last.weight)
        nn.init.constant_(last.bias, init)
        self.net = nn.Sequential(*layers, last)

    def forward(self, x: torch.Tensor | None = None) -> torch.Tensor:
        if self.net is None:
            return self.value
        if x is None:
            raise TypeError("LearnedBaseline(in_features=...).forward needs the rows' samples x (n x in_features)")
        return self.net(x).squeeze(-1)


class MovingAverageBaseline(nn.Module):
    """a = log(ema), ema <- momentum * ema + (1 - momentum) * mean_N e^S over the batches seen in
    training mode (the first batch fills it; a batch with non-finite scores leaves it as it is); in
    eval mode the average is read, not moved. forward(scores, positives=None) -> 0-d detached tensor.
    ``negatives``: the negative pairs averaged (TUBA's default: off the positives). One extra pass
    over the scores, forward only."""

    def __init__(self, momentum: float = 0.9, *, negatives=None, backend: str = "auto"):
        super().__init__()
        self.momentum = validate.number(momentum, "momentum", "MovingAverageBaseline", low=0.0, high=1.0,
                                        high_strict=True)
        self.negatives = negatives
        self.backend = backend
        self.register_buffer("running_lme", torch.tensor(math.nan))

    def reset(self) -> None:
        self.running_lme.fill_(math.nan)

    @torch.no_grad()
    def forward(self, scores: torch.Tensor, positives=None) -> torch.Tensor:
        batch = negative_lme(scores, positives, self.negatives, backend=self.backend, name="MovingAverageBaseline")
        ema = mine_running_update(self.running_lme, batch, self.momentum)
        if self.training:
            self.running_lme.copy_(ema)
        ema = torch.where(torch.isnan(ema), batch.to(ema.dtype), ema)  # still empty: this batch's own value
        return ema.to(batch.dtype)

    def extra_repr(self) -> str:
        return f"momentum={self.momentum}, negatives={self.negatives!r}, backend={self.backend!r}"


__all__ = ["LearnedBaseline", "MovingAverageBaseline"]
