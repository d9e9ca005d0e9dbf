"""CLUB and L1Out upper bounds for a Gaussian variational conditional q(y|x) = N(mu(x), diag exp(logvar(x))).

Inputs: ``mu`` and ``logvar`` (n x d, the conditional's outputs for x_1..x_n) and ``y`` (n x d), one
sample pair (x_i, y_i) per row. Each bound returns ``MIResult(loss, mi)`` with loss = +bound: these
are upper bounds on I(X; Y), minimized to reduce MI (e.g. with respect to an encoder producing x or
y). q itself is fitted separately by maximizing ``gaussian_log_likelihood(mu, logvar, y)`` (Cheng
et al. 2020 alternate the two). Neither function builds the n x n matrix log q(y_j | x_i).
"""
from __future__ import annotations

import math

import torch

from .._core import registry, validate
from .._core.dtypes import acc_dtype
from .._core.result import MIResult
from . import ops


def _check(mu, logvar, y, name: str, n_min: int = 1):
    mu = validate.tensor(mu, "mu", name, ndim=2)
    logvar = validate.tensor(logvar, "logvar", name, ndim=2)
    y = validate.tensor(y, "y", name, ndim=2)
    validate.like(name, mu, logvar, "mu", "logvar")
    validate.like(name, mu, y, "mu", "y")
    if y.shape[0] < n_min:
        raise ValueError(f"{name}: needs n >= {n_min} sample pairs (leave-one-out over the others), got n={y.shape[0]}")
    return mu, logvar, y


def _result(bound: torch.Tensor) -> MIResult:
    return MIResult(bound, bound.detach())


def gaussian_log_likelihood(mu, logvar, y) -> torch.Tensor:
    """mean_i log q(y_i | x_i) = -1/2 mean_i sum_d [ (y_id - mu_id)^2 exp(-logvar_id) + logvar_id + log 2 pi ]:
    maximize it to fit q (fp32 for half inputs)."""
    mu, logvar, y = _check(mu, logvar, y, "gaussian_log_likelihood")
    dt = acc_dtype(y.dtype)
    return ops.log_likelihood_rows(mu.to(dt), logvar.to(dt), y.to(dt)).mean()


def gaussian_club(mu, logvar, y, *, backend="auto") -> MIResult:
    """CLUB (Cheng et al. 2020): mean_i log q(y_i | x_i) - mean_i mean_j log q(y_j | x_i), all n^2 pairs
    (j = i included, as in the paper). For a diagonal Gaussian the normalizers cancel and the mean over
    j is a closed form in the batch mean and variance of y (O(n d), any backend):

        I_CLUB = mean_i sum_d [ v_d + (ybar_d - mu_id)^2 - (y_id - mu_id)^2 ] / (2 exp(logvar_id))
        ybar_d = mean_j y_jd,   v_d = mean_j (y_jd - ybar_d)^2
    """
    name = "gaussian_club"
    mu, logvar, y = _check(mu, logvar, y, name)
    registry.validate(backend, y, name)
    dt = acc_dtype(y.dtype)
    mu, logvar, y = mu.to(dt), logvar.to(dt), y.to(dt)
    ybar = y.mean(0)
    v = ((y - ybar) ** 2).mean(0)
    spread = v + (ybar - mu) ** 2 - (y - mu) ** 2
    return _result((0.5 * spread * torch.exp(-logvar)).sum(1).mean())


def gaussian_l1out(mu, logvar, y, *, backend="auto") -> MIResult:
    """L1Out (Cheng et al. 2020; the score-matrix version is fastmi.functional.l1out):

        I_L1Out = mean_i [ log q(y_i | x_i) - log( 1/(n - 1) sum_{j != i} q(y_i | x_j) ) ]

    The leave-one-out log-sum-exp over the x's runs on the separable family's fused kernels over
    n x (2 d + 1) features of (y, mu, logvar) (fastmi.gaussian_logdensity.ops): O(n d) memory; the
    positive term is computed directly. backend="reference" builds the n x n matrix instead.
    """
    name = "gaussian_l1out"
    mu, logvar, y = _check(mu, logvar, y, name, n_min=2)
    registry.check_name(backend, name)
    dt = acc_dtype(y.dtype)
    pos = ops.log_likelihood_rows(mu.to(dt), logvar.to(dt), y.to(dt))
    lse = ops.leave_one_out_lse(mu, logvar, y, backend, name)
    return _result((pos - lse).mean() + math.log(y.shape[0] - 1))


__all__ = ["gaussian_log_likelihood", "gaussian_club", "gaussian_l1out"]
