"""Neural Bayes (Arpit et al.): the MIM loss over hidden states and their pooled scales, the
closed-form MI of a softmax state, and the disjoint-manifold-separation loss."""
from __future__ import annotations

import math

import torch

from .._core import distributed, registry, validate
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


def _batch_sums(states, pool: int, eps: float, softmax_stats):
    """Per scale (in the order of NBMIMResult): (sum_{b,pos,c} S log(sg(S) + eps), sum_b S as C x
    positions, B), and the index of the state it belongs to."""
    sums, owner = [], []
    for i, h in enumerate(states):
        x = _as_4d(h)
        H, W = x.shape[2], x.shape[3]
        k = min(pool, H, W) if (h.dim() == 4 and pool) else 0
        ent_sum, marg, marg_pool = softmax_stats(x, k, eps)
        sums.append((ent_sum[0], marg, x.shape[0]))
        if k:
            sums.append((ent_sum[1], marg_pool, x.shape[0]))
        owner += [i] * (2 if k else 1)
    return sums, owner


def _sum_over_ranks(sums, group, batch: int):
    """The batch sums of every scale summed over the ranks (``batch`` rows in all), in one
    differentiable all-reduce."""
    flat = distributed.all_reduce_sum(torch.cat([torch.cat([e.reshape(1), m.reshape(-1)]) for e, m, _ in sums]),
                                      group)
    out, at = [], 0
    for e, m, _ in sums:
        out.append((flat[at], flat[at + 1: at + 1 + m.numel()].view_as(m), batch))
        at += 1 + m.numel()
    return out


def _facts(checked, *options) -> dict:
    """What the ranks must share under group=: the dtype, the states' shapes past the batch, the options."""
    states, pool, eps = checked[:3]
    return {"rows": states[0].shape[0], "dtype": distributed.dtype_code(states[0].dtype),
            "options": distributed.fingerprint([tuple(h.shape[1:]) for h in states], pool, eps, *options)}


def _sums(name: str, group, check, rows, options=()):
    """``check()`` -> (states, pool, eps, softmax_stats op), run here or agreed across the ranks of
    ``group`` (with ``options``, the other options the ranks must share); returns (per scale: the batch sums and the batch size, summed over the ranks; the
    owner state of each scale)."""
    group = distributed.resolve(group, name)
    if group is None:
        return _batch_sums(*check())
    (states, pool, eps, softmax_stats), shards, _ = distributed.agree(
        group, name, rows, check, lambda checked: _facts(checked, *options), sizes=("rows",), same=("dtype", "options"))
    sums, owner = _batch_sums(states, pool, eps, softmax_stats)
    return _sum_over_ranks(sums, group, shards["rows"].total), owner


def nb_mim(states, *, alpha=2.0, prior="v2", pool=2, eps=1e-7, backend="auto", group=None) -> NBMIMResult:
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
    ValueError (checked from the entropy sums; skipped under torch.compile). ``group=``: each rank
    passes its own rows and the batch means (E, ent) are over every rank's rows (one all-reduce of
    the batch sums).
    """
    name = "nb_mim"
    if isinstance(states, torch.Tensor):
        states = [states]

    def check():
        if not isinstance(states, (list, tuple)) or not states:
            raise TypeError(f"{name}: states must be a non-empty list of tensors")
        hs = [_state(h, f"states[{i}]", name) for i, h in enumerate(states)]
        validate.same_device(name, **{f"states[{i}]": h for i, h in enumerate(hs)})
        a = validate.number(alpha, "alpha", name)
        if math.isinf(a):
            raise ValueError(f"{name}: alpha must be finite")
        if prior not in ("v1", "v2"):
            raise ValueError(f"{name}: prior must be 'v2' (cross-entropy to the uniform prior) or 'v1', got {prior!r}")
        k = 0 if pool is None else pool
        if isinstance(k, bool) or not isinstance(k, int) or k < 0:
            raise ValueError(f"{name}: pool must be an int >= 0 (0: no pooled scale), got {pool!r}")
        e = validate.number(eps, "eps", name, low=0.0, strict=True, high=0.5, high_strict=True)
        if group is not None and len({h.shape[0] for h in hs}) > 1:
            raise ValueError(f"{name}: with group=, every state must have this rank's batch size, got "
                             f"{[h.shape[0] for h in hs]}")
        _, softmax_stats = ops.FAMILY.select(backend, hs[0], name)
        return hs, k, e, softmax_stats

    rows = list(states) if isinstance(states, (list, tuple)) else []
    sums, owner = _sums(name, group, check, rows, (alpha, prior))
    a, e = float(alpha), float(eps)
    ents = [-ent_sum / (batch * marg.shape[1]) for ent_sum, marg, batch in sums]
    priors = [prior_term(marg / batch, prior, e) for _, marg, batch in sums]
    ent, rp = torch.stack(ents), torch.stack(priors)
    if not torch.compiler.is_compiling():
        bad = (~torch.isfinite(ent)).nonzero()
        if bad.numel():
            where = " (on one of the ranks)" if group is not None else ""
            raise ValueError(f"{name}: states[{owner[int(bad[0, 0])]}] has non-finite values (NaN or +inf){where}")
    loss = (ent + (1.0 + a) * rp).mean()
    return NBMIMResult(loss, ent.detach(), rp.detach())


def nb_mi(state, *, backend="auto", group=None) -> torch.Tensor:
    """Closed-form mutual information of a softmax state (Neural Bayes), detached:

        I(x; z) = mean_pos [ H(mean_b S) - mean_b H(S) ],   S = softmax_c(state),  H(p) = -sum_c p log p

    ``state``: B x C or B x C x H x W, pre-softmax. 0 <= I <= log C. ``group=``: the means over
    every rank's rows.
    """
    name = "nb_mi"

    def check():
        h = _state(state, "state", name)
        _, softmax_stats = ops.FAMILY.select(backend, h, name)
        return [h], 0, 0.0, softmax_stats

    with torch.no_grad():
        sums, _ = _sums(name, group, check, [state])
        ent_sum, marg, batch = sums[0]
        E = marg / batch
        marg_h = -torch.special.xlogy(E, E).sum(0).mean()
        mi = marg_h + ent_sum / (batch * marg.shape[1])
    _check_finite(mi[None], "state", name)
    return mi


def nb_dms(logits, *, eps=1e-7, scale="code", backend="auto", group=None) -> torch.Tensor:
    """Neural Bayes disjoint-manifold-separation loss (paper Eq 5; K-partition: Appendix B Eq 23),
    for K >= 2 softmax outputs (K = 2: the binary partition):

        L = softmax(logits),  E = mean_b L  (with gradient: the batch is the estimate of E_x[L])
        f = L / E + eps,      g = (1 - L) / (1 - E) + eps
        scale="code":  loss = mean_{b,k} [ f log(1 + g/f) + g log(1 + f/g) ]   (the authors' DML.ipynb)
        scale="paper": loss = code / 2                                           (Eq 5 / Eq 23: 1/2 per term)

    E is clamped to [eps, 1 - eps]. The factor 2 does not move the minimizer, only the loss scale
    (and so the effective weight of R_c next to it). B x K is small: every backend runs the same
    PyTorch composite (the cost is in the network); ``backend`` is validated for uniformity.
    ``group=``: each rank passes its own rows; E and the mean are over every rank's rows (two
    all-reduces of K + 1 numbers).
    """
    name = "nb_dms"
    group = distributed.resolve(group, name)

    def check():
        x = validate.tensor(logits, "logits", name, ndim=2)
        if x.shape[1] < 2:
            raise ValueError(f"{name}: logits need K >= 2 outputs (use two softmax units for a binary partition), "
                             f"got K={x.shape[1]}")
        e = validate.number(eps, "eps", name, low=0.0, strict=True, high=0.5, high_strict=True)
        if scale not in ("code", "paper"):
            raise ValueError(f"{name}: scale must be 'code' (the authors' code) or 'paper' (Eq 5, half of it), "
                             f"got {scale!r}")
        registry.validate(backend, x, name)  # composed of torch ops on every backend: no fused kernel to pick
        return x, e

    def facts(checked):
        x, e = checked
        return {"rows": x.shape[0], "outputs": x.shape[1], "dtype": distributed.dtype_code(x.dtype),
                "options": distributed.fingerprint(e, scale)}

    if group is None:
        x, e = check()
        batch = x.shape[0]
    else:
        (x, e), shards, _ = distributed.agree(group, name, [logits], check, facts, sizes=("rows",),
                                              same=("outputs", "dtype", "options"))
        batch = shards["rows"].total
    L = torch.softmax(x if x.dtype in (torch.float32, torch.float64) else x.float(), dim=1)
    column_sums = L.sum(0, keepdim=True)
    if group is not None:
        column_sums = distributed.all_reduce_sum(column_sums, group)
    E = (column_sums / batch).clamp(e, 1.0 - e)  # a collapsed unit: finite, not 0/0
    f = L / E + e
    g = (1.0 - L) / (1.0 - E) + e
    total = (f * torch.log1p(g / f) + g * torch.log1p(f / g)).sum()
    if group is not None:
        total = distributed.all_reduce_sum(total, group)
    loss = total / (batch * L.shape[1])
    loss = loss if scale == "code" else 0.5 * loss
    _check_finite(loss.detach()[None], "logits", name)
    return loss


__all__ = ["nb_mim", "nb_mi", "nb_dms"]
