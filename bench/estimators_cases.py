"""The cases of bench_estimators.py: the estimators added beyond the four papers, fused against the
plain-PyTorch code a user would write from the paper (``plain``: the published formulation, dense)
and fastmi's own reference backend (``reference``), forward + backward.

    alpha_tuba      F.alpha_tuba(S, a)              plain: Poole et al.'s interpolated_lower_bound (vbmi),
                                                    leave-one-out log-mean-exp for every entry
    l1out           F.l1out(M)                      plain: column logsumexp with a -inf diagonal
    flo             F.flo(S, u)                     plain: the official LossFLO (Guo et al.)
    nwj_sep_k8      F.nwj_separable(x, y, negatives=8)   plain: x @ y.T, then gather the 8 shifted negatives
    gaussian_club   F.gaussian_club(mu, logvar, y)  plain: CLUB's code, (y_j - mu_i)^2 for all pairs (n x n x d)
    gaussian_l1out  F.gaussian_l1out(mu, logvar, y) plain: CLUB repo's L1OutUB, n x n x d log densities
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as TF

import fastmi.functional as F

D = 16  # feature dimension of the embedding and Gaussian cases


def _off_diagonal_lme(S):
    n = S.shape[0]
    return torch.logsumexp(S - torch.diag(torch.full((n,), math.inf, dtype=S.dtype)), dim=1) - math.log(n - 1)


def _plain_alpha_tuba(S, a, alpha=0.01):
    """vbmi's interpolated_lower_bound on fastmi's orientation (rows = anchors), in torch."""
    n = S.shape[0]
    mx = S.max(1, keepdim=True).values
    d = torch.logsumexp(S - mx, 1, keepdim=True) + (mx - S)
    safe = torch.where(d != 0, d, torch.ones_like(d))
    loo = S + torch.log(torch.expm1(safe)) - math.log(n - 1)  # log mean over the other n - 1 columns
    b = torch.logaddexp(math.log(alpha) + loo, math.log1p(-alpha) + a[:, None].expand(n, n))
    marg = torch.exp(torch.logsumexp((S - b.diagonal()[:, None]) - torch.diag(torch.full((n,), math.inf)), (0, 1))
                     - math.log(n * (n - 1)))
    crit_joint = S.diagonal()[:, None] - b
    joint = (crit_joint.sum() - crit_joint.diagonal().sum()) / (n * (n - 1))
    return 1 + joint - marg


def _plain_flo(S, u):
    n = S.shape[0]
    neg = S.masked_fill(torch.eye(n, dtype=torch.bool), -math.inf)
    loss = u + torch.exp(-u + torch.logsumexp(neg, 1) - S.diagonal()) / (n - 1) - 1
    return -loss.mean()


def _plain_gaussian_club(mu, logvar, y):
    positive = -(mu - y) ** 2 / 2 / logvar.exp()
    negative = -((y[None, :, :] - mu[:, None, :]) ** 2).mean(1) / 2 / logvar.exp()
    return (positive.sum(-1) - negative.sum(-1)).mean()


def _plain_gaussian_l1out(mu, logvar, y):
    n = y.shape[0]
    positive = (-(mu - y) ** 2 / 2 / logvar.exp() - logvar / 2).sum(-1)
    all_probs = (-(y[None, :, :] - mu[:, None, :]) ** 2 / 2 / logvar[:, None, :].exp() - logvar[:, None, :] / 2).sum(-1)
    negative = torch.logsumexp(all_probs - torch.diag(torch.full((n,), math.inf)), 0) - math.log(n - 1)
    return (positive - negative).mean()


def _plain_nwj_sep_k8(x, y):
    S = x @ y.T
    n = S.shape[0]
    idx = (torch.arange(n)[:, None] + torch.arange(1, 9)[None, :]) % n
    return S.diagonal().mean() - torch.exp(S.gather(1, idx) - 1).mean()


class _Value:
    """A bound's value as ``.loss`` (its negative; an upper bound as it is), like MIResult."""

    def __init__(self, loss):
        self.loss = loss


# name -> (input names, fused call, plain-PyTorch value, lower bound?)
CASES = {
    "alpha_tuba": (("S", "a"), lambda b, S, a: F.alpha_tuba(S, a, alpha=0.01, backend=b), _plain_alpha_tuba, True),
    "l1out": (("S",), lambda b, S: F.l1out(S, backend=b), lambda S: (S.diagonal() - _off_diagonal_lme(S.T)).mean(),
              False),
    "flo": (("S", "u"), lambda b, S, u: F.flo(S, u, backend=b), _plain_flo, True),
    "nwj_sep_k8": (("x", "y"), lambda b, x, y: F.nwj_separable(x, y, negatives=8, backend=b), _plain_nwj_sep_k8, True),
    "gaussian_club": (("mu", "logvar", "y"), lambda b, mu, lv, y: F.gaussian_club(mu, lv, y, backend=b),
                      _plain_gaussian_club, False),
    "gaussian_l1out": (("mu", "logvar", "y"), lambda b, mu, lv, y: F.gaussian_l1out(mu, lv, y, backend=b),
                       _plain_gaussian_l1out, False),
}


def loss_fn(name: str, impl: str, backend: str = "auto"):
    names, fused, plain, lower = CASES[name]
    if impl == "fused":
        fn = lambda *t: fused(backend, *t)  # noqa: E731
    elif impl == "reference":
        fn = lambda *t: fused("reference", *t)  # noqa: E731
    elif impl == "plain":
        fn = lambda *t: _Value(-plain(*t) if lower else plain(*t))  # noqa: E731
    else:
        raise ValueError(impl)
    return fn


def inputs_for(name: str, n: int, dtype=torch.float32):
    """The case's inputs at size n (a trained-critic-like scale: positives above the negatives)."""
    g = torch.Generator().manual_seed(n)
    made = {}
    for k in CASES[name][0]:
        if k == "S":
            made[k] = 2 * torch.randn(n, n, generator=g) + 3 * torch.eye(n)
        elif k in ("a", "u"):
            made[k] = 0.1 * torch.randn(n, generator=g)
        elif k == "x":
            made[k] = torch.randn(n, D, generator=g) / D ** 0.5
        elif k == "y" and "x" in made:
            made[k] = made["x"] + 0.5 * torch.randn(n, D, generator=g) / D ** 0.5
        elif k == "mu":
            made[k] = torch.randn(n, D, generator=g)
        elif k == "logvar":
            made[k] = 0.3 * torch.randn(n, D, generator=g)
        else:  # y of the Gaussian cases: near mu
            made[k] = made["mu"] + torch.exp(0.5 * made["logvar"]) * torch.randn(n, D, generator=g)
    return tuple(t.to(dtype) for t in made.values())


def step(fn, data):
    """One forward + backward from fresh leaves; returns the gradients."""
    leaves = [t.detach().requires_grad_(True) for t in data]
    fn(*leaves).loss.backward()
    return [t.grad for t in leaves]


def grad_bytes(data) -> int:
    return sum(t.numel() * t.element_size() for t in data)
