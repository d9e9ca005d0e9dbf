"""What ``estimate_mi`` trains for each estimator: a critic (and the bound's auxiliary networks) whose
``forward(x, y)`` returns the fused loss of one batch as ``MIResult(loss, mi)``.

    lower bounds (maximized over the critic; the held-out bound is the estimate):
        infonce dv nwj    F.<name>_separable(f(x), g(y)) for a separable critic (fused, no matrix),
                          F.<name>(T(x_i, y_j)) for a joint one
        js                F.js(S, value="nwj_shifted"): trained with the JS objective, reports NWJ of S + 1
        smile             F.smile(S) (clip 5)
        mine              fastmi.nn.MINE (the moving-average gradient), reports DV
        tuba alpha_tuba   with a learned baseline network a(x_i) (fastmi.nn.LearnedBaseline)
        flo               with u(x_i, y_i) a second joint network
    upper bounds (a Gaussian conditional q(y|x) fitted by maximum likelihood; the held-out bound is the
    estimate):
        club l1out        F.gaussian_club / F.gaussian_l1out of q's mean and log-variance
"""
from __future__ import annotations

import torch
from torch import nn

from .. import functional as F
from .._core.result import MIResult
from ..critic_lse.baselines import LearnedBaseline
from ..critic_lse.bounds import BOUNDS
from ..critic_lse.nn import MINE
from ..gaussian_logdensity.nn import GaussianConditional
from .critics import JointCritic

LOWER = ("infonce", "dv", "nwj", "js", "smile", "mine", "tuba", "alpha_tuba", "flo")
UPPER = ("club", "l1out")
ESTIMATORS = LOWER + UPPER
DEFAULTS = {"js": {"value": "nwj_shifted"}}


class Objective(nn.Module):
    """The trainable modules of one estimator; ``forward(x, y) -> MIResult(loss, mi)`` on a batch, and
    ``criterion(x, y)``: what early stopping maximizes on held-out batches (the bound itself for a
    lower bound, q's log-likelihood for an upper bound)."""

    def __init__(self, estimator: str, critic: nn.Module | None, x_dim: int, y_dim: int, hidden, options: dict,
                 backend: str):
        super().__init__()
        self.estimator = estimator
        self.lower = estimator in LOWER
        self.options = {**DEFAULTS.get(estimator, {}), **options, "backend": backend}
        self.critic = critic
        if estimator in ("tuba", "alpha_tuba"):
            self.baseline = LearnedBaseline(x_dim, hidden=hidden)
        elif estimator == "flo":
            self.u = JointCritic(x_dim, y_dim, hidden)
        elif estimator == "mine":
            self.mine = MINE(**self.options)
        elif not self.lower:
            self.q = GaussianConditional(x_dim, y_dim, hidden)

    def _scores(self, x, y):
        return self.critic.scores(x, y)

    def forward(self, x, y) -> MIResult:
        e, opts = self.estimator, self.options
        if not self.lower:
            mu, logvar = self.q(x)
            bound = getattr(F, f"gaussian_{e}")(mu, logvar, y, **opts)
            return MIResult(-F.gaussian_log_likelihood(mu, logvar, y), bound.mi)
        if e == "mine":
            return self.mine(self._scores(x, y))
        if getattr(self.critic, "separable", False) and BOUNDS[e].separable:
            return getattr(F, f"{e}_separable")(*self.critic.embed(x, y), **opts)
        S = self._scores(x, y)
        if e in ("tuba", "alpha_tuba"):
            return getattr(F, e)(S, self.baseline(x), **opts)
        if e == "flo":
            return F.flo(S, self.u(x, y), **opts)
        return getattr(F, e)(S, **opts)

    def criterion(self, x, y) -> torch.Tensor:
        if self.lower:
            return self(x, y).mi
        mu, logvar = self.q(x)
        return F.gaussian_log_likelihood(mu, logvar, y)
