"""Neural Bayes (Arpit et al.): the MIM loss over hidden states and their pooled scales, the
closed-form MI of a softmax state, and the disjoint-manifold-separation loss."""
from __future__ import annotations

import math

import torch

from .._core import registry, validate
from .._core.result import NBMIMResult
from . import ops


def _state(x, arg: str, name: str) -> torch.Tensor:
    x = validate.tensor(x, arg, name)
    if x.dim() not in (2, 4):
        raise ValueError(f"{name}: {arg} must be B x C or B x C x H x W (pre-softmax), got shape {tuple(x.shape)}")
    if x.shape[1] < 2:
        raise ValueError(f"{name}: {arg} needs C >= 2 channels for a softmax, got C={x.shape[1]}")
    return x


def _check_finite(values: torch.Tensor, what: str, name: str) -> None:
    """NaN/+inf in a state makes its entropy sum non-finite; checked once per call (one sync), not
    under torch.compile (a data-dependent branch)."""
    if torch.compiler.is_compiling():
        return
    if not bool(torch.isfinite(values).all()):
        raise ValueError(f"{name}: {what} has non-finite values (NaN or +inf)")


def prior_term(marginal: torch.Tensor, prior: str, eps: float) -> torch.Tensor:
    """R_p of one scale from its batch marginal E (C x positions, with gradient):

        v2: R_p = mean_pos sum_c -[ (1/C) log E + (1 - 1/C) log(1 - E) ]
        v1: R_p = mean_pos sum_c E log sg(E)

    E is clamped to [eps, 1 - eps] inside the logs, so a collapsed unit (E = 0 or 1) gives a finite
    value and no gradient through the clamp instead of inf/NaN.
    """
    C = marginal.shape[0]
    Ec = marginal.clamp(eps, 1.0 - eps)
    if prior == "v2":
        per_pos = -((1.0 / C) * Ec.log() + (1.0 - 1.0 / C) * (-Ec).log1p()).sum(0)
    else:
        per_pos = (marginal * Ec.detach().log()).sum(0)
    return per_pos.mean()


def _as_4d(h: torch.Tensor) -> torch.Tensor:
    return h if h.dim() == 4 else h[:, :, None, None]


def nb_mim(states, *, alpha=2.0, prior="v2", pool=2, eps=1e-7, backend="auto") -> NBMIMResult:
    """Neural Bayes MIM loss (Arpit et al.) over hidden states and their pooled scales.

    ``states``: a list of pre-softmax states, B x C x H x W or B x C. Scales of a 4-D state: the state
    and its average pool with kernel = stride = min(pool, H, W), floor mode (pool=0: no pooled scale).
    Per scale z, with S = softmax_c(z), E = mean_b S (per channel and position, with gradient):

        ent = -(1/(B*pos)) sum_{b,pos} sum_c S log(sg(S) + eps)
        v2:  R_p = mean_pos sum_c -[ (1/C) log E + (1 - 1/C) log(1 - E) ]
        v1:  R_p = mean_pos sum_c E log sg(E)
        loss = (1/N_scales) sum_scales [ ent + (1 + alpha) R_p ]

    E is clamped to [eps, 1 - eps] inside the logs (a collapsed unit: finite loss, no NaN). Returns
    NBMIMResult(loss, entropy, prior) with the detached per-scale terms. NaN/+inf in a state raise
    ValueError (checked from the entropy sums; skipped under torch.compile).
    """
    name = "nb_mim"
    if isinstance(states, torch.Tensor):
        states = [states]
    if not isinstance(states, (list, tuple)) or not states:
        raise TypeError(f"{name}: states must be a non-empty list of tensors")
    states = [_state(h, f"states[{i}]", name) for i, h in enumerate(states)]
    validate.same_device(name, **{f"states[{i}]": h for i, h in enumerate(states)})
    a = validate.number(alpha, "alpha", name)
    if math.isinf(a):
        raise ValueError(f"{name}: alpha must be finite")
    if prior not in ("v1", "v2"):
        raise ValueError(f"{name}: prior must be 'v2' (cross-entropy to the uniform prior) or 'v1', got {prior!r}")
    if pool is None:
        pool = 0
    if isinstance(pool, bool) or not isinstance(pool, int) or pool < 0:
        raise ValueError(f"{name}: pool must be an int >= 0 (0: no pooled scale), got {pool!r}")
    e = validate.number(eps, "eps", name, low=0.0, strict=True, high=0.5, high_strict=True)
    _, softmax_stats = ops.FAMILY.select(backend, states[0], name)
    ents, priors, owner = [], [], []
    for i, h in enumerate(states):
        x = _as_4d(h)
        B, _, H, W = x.shape
        k = min(pool, H, W) if (h.dim() == 4 and pool) else 0
        ent_sum, marg, marg_pool = softmax_stats(x, k, e)
        ents.append(-ent_sum[0] / (B * H * W))
        priors.append(prior_term(marg / B, prior, e))
        if k:
            ents.append(-ent_sum[1] / (B * marg_pool.shape[1]))
            priors.append(prior_term(marg_pool / B, prior, e))
        owner += [i] * (2 if k else 1)
    ent, rp = torch.stack(ents), torch.stack(priors)
    if not torch.compiler.is_compiling():
        bad = (~torch.isfinite(ent)).nonzero()
        if bad.numel():
            raise ValueError(f"{name}: states[{owner[int(bad[0, 0])]}] has non-finite values (NaN or +inf)")
    loss = (ent + (1.0 + a) * rp).mean()
    return NBMIMResult(loss, ent.detach(), rp.detach())


def nb_mi(state, *, backend="auto") -> torch.Tensor:
    """Closed-form mutual information of a softmax state (Neural Bayes), detached:

        I(x; z) = mean_pos [ H(mean_b S) - mean_b H(S) ],   S = softmax_c(state),  H(p) = -sum_c p log p

    ``state``: B x C or B x C x H x W, pre-softmax. 0 <= I <= log C.
    """
    name = "nb_mi"
    h = _state(state, "state", name)
    _, softmax_stats = ops.FAMILY.select(backend, h, name)
    with torch.no_grad():
        x = _as_4d(h)
        B = x.shape[0]
        ent_sum, marg, _ = softmax_stats(x, 0, 0.0)
        E = marg / B
        marg_h = -torch.special.xlogy(E, E).sum(0).mean()
        mi = marg_h + ent_sum[0] / (B * marg.shape[1])
    _check_finite(mi[None], "state", name)
    return mi


def nb_dms(logits, *, eps=1e-7, scale="code", backend="auto") -> torch.Tensor:
    """Neural Bayes disjoint-manifold-separation loss (paper Eq 5; K-partition: Appendix B Eq 23),
    for K >= 2 softmax outputs (K = 2: the binary partition):

        L = softmax(logits),  E = mean_b L  (with gradient: the batch is the estimate of E_x[L])
        f = L / E + eps,      g = (1 - L) / (1 - E) + eps
        scale="code":  loss = mean_{b,k} [ f log(1 + g/f) + g log(1 + f/g) ]   (the authors' DML.ipynb)
        scale="paper": loss = code / 2                                           (Eq 5 / Eq 23: 1/2 per term)

    E is clamped to [eps, 1 - eps]. The factor 2 does not move the minimizer, only the loss scale
    (and so the effective weight of R_c next to it). B x K is small: every backend runs the same
    PyTorch composite (the cost is in the network); ``backend`` is validated for uniformity.
    """
    name = "nb_dms"
    x = validate.tensor(logits, "logits", name, ndim=2)
    if x.shape[1] < 2:
        raise ValueError(f"{name}: logits need K >= 2 outputs (use two softmax units for a binary partition), "
                         f"got K={x.shape[1]}")
    e = validate.number(eps, "eps", name, low=0.0, strict=True, high=0.5, high_strict=True)
    if scale not in ("code", "paper"):
        raise ValueError(f"{name}: scale must be 'code' (the authors' code) or 'paper' (Eq 5, half of it), "
                         f"got {scale!r}")
    registry.validate(backend, x, name)  # composed of torch ops on every backend: no fused kernel to pick
    L = torch.softmax(x if x.dtype in (torch.float32, torch.float64) else x.float(), dim=1)
    E = L.mean(0, keepdim=True).clamp(e, 1.0 - e)  # a collapsed unit: finite, not 0/0
    f = L / E + e
    g = (1.0 - L) / (1.0 - E) + e
    loss = (f * torch.log1p(g / f) + g * torch.log1p(f / g)).mean()
    loss = loss if scale == "code" else 0.5 * loss
    _check_finite(loss.detach()[None], "logits", name)
    return loss


__all__ = ["nb_mim", "nb_mi", "nb_dms"]
