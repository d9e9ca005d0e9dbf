"""The numerics tests' oracle: the losses written again from their formulas in float64 plain PyTorch,
on dense masks (``masks``) rather than the public argument forms of tests/oracle.py, plus the
comparison rule of the numerics tests (``assert_matches``: finite where the truth is finite, within
a tolerance scaled by the inputs). It imports nothing from fastmi.

Critic losses return ``(loss, mi, surrogate)``: ``loss`` is the value fastmi's loss must have
(-I + R), ``mi`` the reported estimate I, and ``surrogate`` a tensor whose gradient is the one the
loss must have (-J + R for the straight-through losses JS, SMILE and MINE; the loss itself otherwise).
Masks are dense boolean n x m matrices (``masks``); a batch with no positive or no negative pair
is skipped (loss 0, mi NaN, zero gradient).
"""
from __future__ import annotations

import math

import torch

D = torch.float64


# --- layouts ----------------------------------------------------------------------------------
def masks(n, m, positives=None, negatives=None, *, infonce=False):
    """(P, N): positives (None: the diagonal, an index per row, or a mask) and negatives ("all",
    "off_positive", "off_diagonal"; None: the papers' default for that kind of positives)."""
    if positives is None:
        P, kind = torch.eye(n, m, dtype=torch.bool), "diag"
    elif positives.dtype == torch.bool:
        P, kind = positives.clone(), "mask"
    else:
        P, kind = torch.zeros(n, m, dtype=torch.bool), "index"
        P[torch.arange(n), positives] = True
    if negatives is None:
        negatives = {"diag": ("all", "off_positive"), "index": ("all", "all"),
                     "mask": ("off_diagonal", "off_diagonal")}[kind][0 if infonce else 1]
    if negatives == "all":
        N = torch.ones(n, m, dtype=torch.bool)
    elif negatives == "off_positive":
        N = ~P
    else:
        N = ~torch.eye(n, m, dtype=torch.bool)
    return P, N


# --- pieces -----------------------------------------------------------------------------------
def softplus(x):
    """log(1 + e^x), with the exact gradient sigmoid(x) everywhere."""
    return torch.logaddexp(x, torch.zeros_like(x))


def _mean(values, mask):
    return torch.where(mask, values, torch.zeros_like(values)).sum() / max(int(mask.sum()), 1)


def _lme(S, mask):
    return torch.logsumexp(S[mask], 0) - math.log(int(mask.sum()))


def _clip(S, tau):
    return S if tau is None else S.clamp(-tau, tau)


def _reg(stat, weight, target, norm):
    if not weight:
        return 0.0
    d = stat - target
    return weight * (d * d if norm == "l2" else d.abs())


def critic(name, S, P, N, *, clip=None, clip_positives=False, log_baseline=0.0, js_value="nwj", running_lme=None,
           momentum=0.9, reg_weight=0.0, reg_target=0.0, reg_norm="l2"):
    """(loss, mi, surrogate) of the critic bound ``name`` on scores S (converted to float64, keeping
    the autograd graph) with positives P and negatives N."""
    S = S.to(D)
    if name == "infonce":
        return _infonce(S, P, N, reg_weight, reg_target, reg_norm)
    if not P.any() or not N.any():
        zero = (S * 0).sum()
        return zero.detach(), torch.tensor(math.nan, dtype=D), zero
    Sc = _clip(S, clip)
    J = -_mean(softplus(-S), P) - _mean(softplus(S), N)
    if name == "dv":
        I, grad_I, stat = _mean(Sc, P) - _lme(Sc, N), None, _lme(S, N)
    elif name == "nwj":
        I, grad_I, stat = _mean(Sc, P) - _mean(torch.exp(Sc - 1), N), None, _lme(S, N)
    elif name == "tuba":
        a = torch.as_tensor(log_baseline).to(D)
        a = a[:, None] if a.dim() == 1 else a
        I, grad_I, stat = 1 + _mean(Sc - a, P) - _mean(torch.exp(Sc - a), N), None, _lme(S, N)
    elif name == "js":
        shift = {"nwj": 1.0, "nwj_shifted": 0.0}[js_value]
        I = _mean(S, P) + (1.0 - shift) - _mean(torch.exp(S - shift), N)
        grad_I, stat = J, _mean(softplus(S), N)
    elif name == "smile":
        I = _mean(Sc if clip_positives else S, P) - _lme(Sc, N)
        grad_I, stat = J, _lme(S, N)
    elif name == "mine":
        b = _lme(S, N)
        ema = _mine_average(running_lme, b.detach(), momentum)
        I = _mean(S, P) - b
        grad_I, stat = _mean(S, P) - _mean(torch.exp(S - ema), N), b
    else:
        raise ValueError(name)
    R = _reg(stat, reg_weight, reg_target, reg_norm)
    loss = -I + R
    surrogate = loss if grad_I is None else -grad_I + R
    return loss.detach(), I.detach(), surrogate


def _mine_average(running, batch, momentum):
    """log of the moving average MINE divides by: the batch alone when the average is empty, the
    old average when the batch is NaN or +inf, else log(m e^running + (1 - m) e^batch)."""
    r = torch.as_tensor(math.nan if running is None else running, dtype=D)
    usable = not (torch.isnan(batch) or torch.isposinf(batch))
    if torch.isnan(r):
        return batch
    if not usable:
        return r
    if momentum == 0:
        return batch
    return torch.logaddexp(r + math.log(momentum), batch + math.log1p(-momentum))


def _infonce(S, P, N, reg_weight, reg_target, reg_norm):
    anchors = P.any(1) & N.any(1)
    if not anchors.any():
        zero = (S * 0).sum()
        return zero.detach(), torch.tensor(math.nan, dtype=D), zero
    terms, stats, count = [], [], 0
    for i in torch.nonzero(anchors).reshape(-1).tolist():
        lme = torch.logsumexp(S[i][N[i]], 0) - math.log(int(N[i].sum()))
        k = int(P[i].sum())
        terms.append((S[i][P[i]] - lme).sum())
        stats.append(k * lme)
        count += k
    I = torch.stack(terms).sum() / count
    loss = -I + _reg(torch.stack(stats).sum() / count, reg_weight, reg_target, reg_norm)
    return loss.detach(), I.detach(), loss


def separable_scores(x, y, temperature=1.0, normalize=False):
    """S = x y^T / temperature (cosine critic with normalize), float64."""
    x, y = x.to(D), y.to(D)
    if normalize:
        x = x / x.norm(dim=1, keepdim=True)
        y = y / y.norm(dim=1, keepdim=True)
    t = temperature.to(D) if isinstance(temperature, torch.Tensor) else temperature
    return x @ y.T / t


# --- other families ---------------------------------------------------------------------------
def mmd_imq(x, y, scales, unbiased=True):
    """MMD^2 with k = sum_C C / (C + |a - b|^2), distances from exact differences (no expansion)."""
    x, y = x.to(D), y.to(D)

    def k(a, b):
        d2 = (a[:, None, :] - b[None, :, :]).pow(2).sum(-1)
        return sum(c / (c + d2) for c in scales)

    n, m = x.shape[0], y.shape[0]
    kxx, kyy, kxy = k(x, x), k(y, y), k(x, y)
    if unbiased:
        off_x, off_y = ~torch.eye(n, dtype=torch.bool), ~torch.eye(m, dtype=torch.bool)
        sxx = kxx[off_x].sum() / (n * (n - 1))
        syy = kyy[off_y].sum() / (m * (m - 1))
    else:
        sxx, syy = kxx.sum() / n ** 2, kyy.sum() / m ** 2
    return sxx + syy - 2 * kxy.sum() / (n * m)


def gaussian_kl(mu, std, sigma=1.0):
    """mean over the batch (dim 0) of KL(N(mu_b, diag std_b^2) || N(0, sigma^2 I)), summed over the
    other dimensions (a 1-D input: one scalar code per sample)."""
    mu, std = mu.to(D), std.to(D)
    kl = 0.5 * ((std ** 2 + mu ** 2) / sigma ** 2 - 1 - torch.log(std ** 2 / sigma ** 2))
    return kl.reshape(kl.shape[0], -1).sum(1).mean()


def fd_smoothness(a, b, zeta, pool=None):
    d = a.to(D) - b.to(D)
    if pool == "global":
        d = d.flatten(2).mean(2)
    s = d.reshape(d.shape[0], -1).pow(2).sum(1)
    z = torch.as_tensor(zeta, dtype=D)
    return (s / (z * z)).mean()


def nb_scale(z, prior="v2", eps=1e-7):
    """(ent, R_p) of one scale (B x C [x H x W]) of the Neural Bayes MIM loss."""
    S = torch.softmax(z.to(D), dim=1)
    ent = -(S * torch.log(S.detach() + eps)).sum(1).mean()
    C = S.shape[1]
    E = S.mean(0).reshape(C, -1)
    Ec = E.clamp(eps, 1 - eps)
    if prior == "v2":
        R = -((1 / C) * torch.log(Ec) + (1 - 1 / C) * torch.log(1 - Ec)).sum(0).mean()
    else:
        R = (E * torch.log(Ec.detach())).sum(0).mean()
    return ent, R


def nb_mim(states, alpha=2.0, prior="v2", pool=2, eps=1e-7):
    """(loss, per-scale entropies, per-scale priors), scales: each state and its k x k average pool."""
    ents, priors = [], []
    for h in states:
        scales = [h]
        if h.dim() == 4 and pool:
            k = min(pool, h.shape[2], h.shape[3])
            scales.append(torch.nn.functional.avg_pool2d(h.to(D), k, k))
        for z in scales:
            e, r = nb_scale(z, prior, eps)
            ents.append(e)
            priors.append(r)
    ent, rp = torch.stack(ents), torch.stack(priors)
    return (ent + (1 + alpha) * rp).mean(), ent.detach(), rp.detach()


# --- comparing a backend with the oracle --------------------------------------------------------
def assert_matches(got, want, dtype, *, rtol, atol, what="", scale=None):
    """``got`` (a backend's result in ``dtype``) against ``want`` (the float64 oracle), entry by entry:
    where ``want`` rounded to ``dtype`` is finite, ``got`` is finite and within rtol * |want| +
    atol * scale (scale: the largest finite |want|, at least 1); where it overflows to +-inf, ``got`` is
    not finite either (the same infinity, or NaN where two overflowing terms of opposite signs meet, as
    in every backend's float arithmetic). NaN in ``want`` is not checked."""
    got = got.detach().to(D)
    want = want.detach().to(D)
    rounded = want.to(dtype).to(D)
    # within rounding of the dtype's largest number, an overflow is the rounding's business: not checked
    finite = torch.isfinite(rounded) & (want.abs() < torch.finfo(dtype).max / (1 + rtol + 1e-6))
    band = torch.isfinite(rounded) & ~finite
    if scale is None:
        scale = max(1.0, float(want[finite].abs().max())) if finite.any() else 1.0
    bad_finite = finite & ~torch.isfinite(got)
    assert not bad_finite.any(), f"{what}: non-finite where the oracle is finite at {bad_finite.nonzero()[:5].tolist()}: " \
                                 f"got {got[bad_finite][:5].tolist()}, want {want[bad_finite][:5].tolist()}"
    err = (got - want).abs()
    tol = rtol * want.abs() + atol * scale
    off = finite & (err > tol)
    del band
    assert not off.any(), f"{what}: max error {float(err[finite].max()):.3g} (tolerance {rtol} rel + {atol * scale:.3g}) " \
                          f"at {off.nonzero()[:5].tolist()}: got {got[off][:5].tolist()}, want {want[off][:5].tolist()}"
    inf = torch.isinf(rounded)
    assert not torch.isfinite(got[inf]).any(), f"{what}: the oracle overflows to +-inf but got {got[inf][:5].tolist()}"


def separable_branch_bound(dS, x, y, temperature, normalize):
    """The largest term the fused separable backward forms on its way to dx and dy, in float64:
    a_i sum_j |dS_ij| b_j |y_j| (and the same for columns), with a, b the row scales. Where it exceeds
    a dtype's range, a gradient that is finite only by cancellation of such terms cannot be (the
    reference, which forms them too, overflows in the same way)."""
    x, y, dS = x.detach().to(D), y.detach().to(D), dS.detach().abs().to(D)
    t = float(temperature)
    nx, ny = x.norm(dim=1), y.norm(dim=1)
    a = 1 / (t * nx) if normalize else torch.full_like(nx, 1 / t)
    b = 1 / ny if normalize else torch.ones_like(ny)
    rows = a * (dS @ (b * ny))
    cols = b * (dS.T @ (a * nx))
    return float(torch.cat([rows, cols]).max()) if rows.numel() else 0.0
