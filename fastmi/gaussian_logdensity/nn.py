"""Modules for the Gaussian upper bounds: the variational conditional q(y|x) as an MLP, and the CLUB
and L1Out losses."""
from __future__ import annotations

import torch
from torch import nn

from .._core.options_module import OptionsModule
from . import api


class GaussianConditional(nn.Module):
    """q(y | x) = N(mu(x), diag exp(logvar(x))) with mu and logvar from one MLP (x_dim -> hidden ->
    2 * y_dim). ``forward(x) -> (mu, logvar)``; ``log_likelihood(x, y)`` is what fitting q maximizes."""

    def __init__(self, x_dim: int, y_dim: int, hidden=(64, 64), activation=nn.ReLU):
        super().__init__()
        layers, d = [], x_dim
        for h in hidden:
            layers += [nn.Linear(d, h), activation()]
            d = h
        layers.append(nn.Linear(d, 2 * y_dim))
        self.net = nn.Sequential(*layers)
        self.y_dim = y_dim

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mu, logvar = self.net(x).split(self.y_dim, dim=-1)
        return mu, logvar

    def log_likelihood(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        mu, logvar = self(x)
        return api.gaussian_log_likelihood(mu, logvar, y)


class GaussianCLUB(OptionsModule):
    """``fastmi.functional.gaussian_club`` as a module: forward(mu, logvar, y) -> MIResult (loss = +I_CLUB)."""

    def __init__(self, *, backend="auto"):
        super().__init__(backend=backend)

    def forward(self, mu, logvar, y):
        return api.gaussian_club(mu, logvar, y, **self.options)


class GaussianL1Out(OptionsModule):
    """``fastmi.functional.gaussian_l1out`` as a module: forward(mu, logvar, y) -> MIResult (loss = +I_L1Out)."""

    def __init__(self, *, backend="auto"):
        super().__init__(backend=backend)

    def forward(self, mu, logvar, y):
        return api.gaussian_l1out(mu, logvar, y, **self.options)


__all__ = ["GaussianConditional", "GaussianCLUB", "GaussianL1Out"]
