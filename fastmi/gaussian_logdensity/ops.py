"""The log densities of a diagonal Gaussian conditional q(y | x_j) = N(mu_j, diag exp(logvar_j)), and
the L1Out statistics without the n x n matrix.

    G[i, j] = log q(y_i | x_j) = -1/2 sum_d [ (y_id - mu_jd)^2 exp(-logvar_jd) + logvar_jd + log 2 pi ]

is an inner product of per-row features, G = U V^T, with (after shifting y and mu by a common c_d,
which leaves every difference y_id - mu_jd unchanged) p = exp(-logvar), y' = y - c, mu' = mu - c:

    U_i = [ y'_i^2,       y'_i,       1 ]
    V_j = [ -p_j / 2,     mu'_j p_j,  -1/2 sum_d (mu'_jd^2 p_jd + logvar_jd) - (d/2) log 2 pi ]

so the leave-one-out log-sum-exp over j != i of G[i, j] is the separable family's fused row
statistic of (U, V) with the diagonal excluded: S = U V^T exists tile by tile only, forward and
backward, and autograd carries the gradient from U and V to y, mu and logvar. The expansion costs
accuracy where (y - mu)^2 / sigma^2 is small against y'^2 / sigma^2: an absolute error of about
eps * sum_d (y'_d^2 + mu'_d^2) / sigma_d^2 in G (c = the batch mean of y keeps y' small); the
reference backend builds G directly, one feature at a time (O(n^2) memory, no expansion).
"""
from __future__ import annotations

import math

import torch

from .._core.dtypes import acc_dtype
from ..critic_lse.ops import masked_logsumexp
from ..separable import ops as separable_ops

LOG_2PI = math.log(2 * math.pi)


def log_likelihood_rows(mu, logvar, y) -> torch.Tensor:
    """log q(y_i | x_i) per row, directly (O(n d))."""
    return -0.5 * (((y - mu) ** 2) * torch.exp(-logvar) + logvar + LOG_2PI).sum(1)


def log_density_matrix(mu, logvar, y) -> torch.Tensor:
    """G[i, j] = log q(y_i | x_j), built densely one feature at a time (n x n memory, no n x n x d)."""
    n, d = y.shape
    G = torch.zeros(n, n, dtype=y.dtype, device=y.device)
    for k in range(d):
        G = G - 0.5 * ((y[:, k, None] - mu[None, :, k]) ** 2 * torch.exp(-logvar[None, :, k]) + logvar[None, :, k])
    return G - 0.5 * d * LOG_2PI


def features(mu, logvar, y) -> tuple[torch.Tensor, torch.Tensor]:
    """(U, V), n x (2 d + 1) each, with G = U V^T (module docstring)."""
    c = y.detach().mean(0)
    yc, mc = y - c, mu - c
    p = torch.exp(-logvar)
    ones = torch.ones_like(y[:, :1])
    const = -0.5 * (mc * mc * p + logvar).sum(1, keepdim=True) - 0.5 * y.shape[1] * LOG_2PI
    return torch.cat([yc * yc, yc, ones], 1), torch.cat([-0.5 * p, mc * p, const], 1)


def leave_one_out_lse(mu, logvar, y, backend: str, name: str) -> torch.Tensor:
    """log sum_{j != i} q(y_i | x_j) per row: fused (separable kernels on the features) or, on the
    reference backend, from the dense matrix."""
    dt = acc_dtype(y.dtype)
    mu, logvar, y = mu.to(dt), logvar.to(dt), y.to(dt)
    U, V = features(mu, logvar, y)
    chosen, separable_stats = separable_ops.FAMILY.select(backend, U, name)
    n = y.shape[0]
    if chosen == "reference":
        G = log_density_matrix(mu, logvar, y)
        return masked_logsumexp(G, ~torch.eye(n, dtype=torch.bool, device=G.device))
    one = torch.ones((), dtype=dt, device=y.device)  # S = U V^T: inverse temperature 1, no norms
    row_lse, _, _, _ = separable_stats(U, V, one, False, None, separable_ops.EXCLUDE_DIAG, False)
    return row_lse
