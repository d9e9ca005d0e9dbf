"""Pure-PyTorch definitions of every fastmi loss: the math, the test oracle, the fallback backend.

Written densely and directly from ../SPEC.md (sections 4 and 7), independently of the fused
kernels' row-statistics decomposition, so that comparing the two checks the kernels. Notation:
S is the n x m score matrix with S[i, j] = T(x_i, y_j); P and N are the positive and negative
pairs (see ``fastmi._scores``); mean_P, mean_N average over them; LME_N(S) = log mean_N exp(S);
sg() is stop-gradient; clip(S) = clamp(S, -tau, tau).

Every function returns ``MIResult(loss, mi)``: ``mi`` is the bound's value (detached),
``loss = -surrogate + R`` where the surrogate has the bound's value and the gradient the paper
trains with, and R = reg_weight * d(stat, reg_target) is the regularizer of Choi & Lee
(d = squared difference by default, absolute difference with reg_norm="l1").
"""
from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn.functional as TF

from . import _scores
from ._result import MIResult, NBMIMResult


def straight_through(grad_value: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
    """A tensor with the value of ``value`` and the gradient of ``grad_value``: g + sg(v - g)."""
    return grad_value + (value - grad_value).detach()


def regularizer(stat: torch.Tensor, weight: float, target: float, norm: str = "l2") -> torch.Tensor:
    """R = weight * (stat - target)^2 ("l2", the papers' default) or weight * |stat - target| ("l1")."""
    d = stat - target
    return weight * (d * d if norm == "l2" else d.abs())


def _finish(surrogate, value, stat, reg_weight, reg_target, reg_norm, n_pos=None) -> MIResult:
    """loss = -straight_through(surrogate, value) + R. With no positive pair (n_pos == 0) the step
    is skipped: loss 0 with zero gradient, mi NaN (the bound is undefined)."""
    loss = -straight_through(surrogate, value)
    if reg_weight:
        loss = loss + regularizer(stat, reg_weight, reg_target, reg_norm)
    mi = value.detach()
    if n_pos is not None:
        has = n_pos > 0
        loss = torch.where(has, loss, torch.zeros_like(loss))
        mi = torch.where(has, mi, torch.full_like(mi, math.nan))
    return MIResult(loss, mi)


def _count(mask: torch.Tensor, dtype) -> torch.Tensor:
    return mask.sum().to(dtype)


def _mean(S: torch.Tensor, mask: torch.Tensor, fn=None) -> torch.Tensor:
    """Mean of fn(S) over the pairs in mask (0 for an empty mask). Masked-out entries are replaced
    before fn, so an inf/NaN outside the mask touches neither the value nor the gradient."""
    S = torch.where(mask, S, torch.zeros_like(S))
    values = S if fn is None else torch.where(mask, fn(S), torch.zeros_like(S))
    return values.sum() / _count(mask, S.dtype).clamp_min(1)


def _lme(S: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """LME over the pairs in mask: log mean exp."""
    return torch.logsumexp(S.masked_fill(~mask, -math.inf).reshape(-1), 0) - torch.log(_count(mask, S.dtype))


def _clip(S: torch.Tensor, tau: Optional[float]) -> torch.Tensor:
    return S if tau is None else S.clamp(-tau, tau)


def _masks(scores, positives, negatives, *, infonce, name):
    layout = _scores.resolve(scores, positives, negatives, infonce=infonce, name=name)
    return layout.dense_masks(scores.device)


def _upcast(scores: torch.Tensor) -> torch.Tensor:
    """fp16/bf16 scores are computed in fp32 (counts and sums overflow or lose digits otherwise)."""
    return scores.float() if scores.dtype in (torch.float16, torch.bfloat16) else scores


def _exp_m1(S):
    return (S - 1).exp()


def infonce(scores, *, positives=None, negatives=None, reg_weight=0.0, reg_target=0.0, reg_norm="l2") -> MIResult:
    """I = mean over positive pairs (i, p) of [S_ip - LME_{j in N_i} S_ij]; with the diagonal and
    all entries, I = log m + mean_i [S_ii - logsumexp_j S_ij]. Regularized statistic: the mean over
    anchors (weighted by their number of positives) of LME_{j in N_i} S_ij."""
    scores = _upcast(scores)
    P, N = _masks(scores, positives, negatives, infonce=True, name="infonce")
    row_lme = torch.logsumexp(scores.masked_fill(~N, -math.inf), 1) - N.sum(1).to(scores.dtype).log()
    I = _mean(scores - row_lme[:, None], P)
    counts = P.sum(1).to(scores.dtype)
    stat = (counts * torch.where(counts > 0, row_lme, torch.zeros_like(row_lme))).sum() / counts.sum().clamp_min(1)
    return _finish(I, I, stat, reg_weight, reg_target, reg_norm, P.sum())


def dv(scores, *, positives=None, negatives=None, clip=None, reg_weight=0.0, reg_target=0.0, reg_norm="l2") -> MIResult:
    """Donsker-Varadhan / MINE value: I = mean_P S - LME_N(S) (on clip(S) when clip is given).
    Regularized statistic: LME_N(S), unclipped (ReMINE / ReDV)."""
    scores = _upcast(scores)
    P, N = _masks(scores, positives, negatives, infonce=False, name="dv")
    Sv = _clip(scores, clip)
    I = _mean(Sv, P) - _lme(Sv, N)
    return _finish(I, I, _lme(scores, N), reg_weight, reg_target, reg_norm, P.sum())


def nwj(scores, *, positives=None, negatives=None, clip=None, reg_weight=0.0, reg_target=0.0, reg_norm="l2") -> MIResult:
    """NWJ: I = mean_P S - mean_N exp(S - 1) (on clip(S) when clip is given). Statistic: LME_N(S)."""
    scores = _upcast(scores)
    P, N = _masks(scores, positives, negatives, infonce=False, name="nwj")
    Sv = _clip(scores, clip)
    I = _mean(Sv, P) - _mean(Sv, N, _exp_m1)
    return _finish(I, I, _lme(scores, N), reg_weight, reg_target, reg_norm, P.sum())


def tuba(scores, log_baseline=0.0, *, positives=None, negatives=None, clip=None, reg_weight=0.0, reg_target=0.0,
         reg_norm="l2") -> MIResult:
    """TUBA with per-row log-baseline a_i: I = 1 + mean_P (S_ip - a_i) - mean_N exp(S_ij - a_i).
    a = 1 gives NWJ. Statistic: LME_N(S)."""
    scores = _upcast(scores)
    P, N = _masks(scores, positives, negatives, infonce=False, name="tuba")
    a = torch.as_tensor(log_baseline, device=scores.device).to(scores.dtype)
    shifted = _clip(scores, clip) - (a[:, None] if a.dim() == 1 else a)
    I = 1 + _mean(shifted, P) - _mean(shifted, N, torch.exp)
    return _finish(I, I, _lme(scores, N), reg_weight, reg_target, reg_norm, P.sum())


def _js_surrogate(scores, P, N):
    return -_mean(-scores, P, TF.softplus) - _mean(scores, N, TF.softplus)


def js(scores, *, positives=None, negatives=None, reg_weight=0.0, reg_target=0.0, reg_norm="l2") -> MIResult:
    """f-GAN Jensen-Shannon: trained on J = mean_P(-softplus(-S)) - mean_N softplus(S); reports the
    NWJ value of the same scores. Statistic: mean_N softplus(S) (ReJS)."""
    scores = _upcast(scores)
    P, N = _masks(scores, positives, negatives, infonce=False, name="js")
    I = _mean(scores, P) - _mean(scores, N, _exp_m1)
    J = _js_surrogate(scores, P, N)
    return _finish(J, I, _mean(scores, N, TF.softplus), reg_weight, reg_target, reg_norm, P.sum())


def smile(scores, *, positives=None, negatives=None, clip=5.0, clip_positives=False, reg_weight=0.0, reg_target=0.0,
          reg_norm="l2") -> MIResult:
    """SMILE(tau): value mean_P S - LME_N(clip(S)) (positives clipped too with clip_positives=True);
    gradient from JS. clip=None gives the DV value with the JS gradient. Statistic: LME_N(S), unclipped."""
    scores = _upcast(scores)
    P, N = _masks(scores, positives, negatives, infonce=False, name="smile")
    Sc = _clip(scores, clip)
    I = _mean(Sc if clip_positives else scores, P) - _lme(Sc, N)
    J = _js_surrogate(scores, P, N)
    return _finish(J, I, _lme(scores, N), reg_weight, reg_target, reg_norm, P.sum())


def mine_running_update(running_lme: torch.Tensor, batch_lme: torch.Tensor, momentum: float) -> torch.Tensor:
    """Moving average of E_N[e^S] in log space: log(momentum * e^running + (1 - momentum) * e^batch);
    an empty (NaN) running value starts at the batch value."""
    batch_lme = batch_lme.detach().to(running_lme.dtype)
    mixed = torch.logaddexp(running_lme + math.log(momentum), batch_lme + math.log1p(-momentum)) if momentum > 0 else batch_lme
    return torch.where(torch.isnan(running_lme), batch_lme, mixed)


def mine(scores, running_lme, *, momentum=0.9, update=True, positives=None, negatives=None, reg_weight=0.0,
         reg_target=0.0, reg_norm="l2") -> MIResult:
    """MINE: the DV value; the gradient replaces the batch partition function E_N[e^S] by its moving
    average (Belghazi et al.): surrogate = mean_P S - E_N[e^S] / sg(ema). ``running_lme`` (log of the
    moving average, a 0-d tensor, NaN when empty) is updated in place, like F.batch_norm's running stats."""
    scores = _upcast(scores)
    P, N = _masks(scores, positives, negatives, infonce=False, name="mine")
    batch_lme = _lme(scores, N)
    with torch.no_grad():
        ema = mine_running_update(running_lme, batch_lme, momentum)
        if update:
            running_lme.copy_(ema)
    pos = _mean(scores, P)
    I = pos - batch_lme
    surrogate = pos - torch.exp(batch_lme - ema.to(scores.dtype))
    return _finish(surrogate, I, batch_lme, reg_weight, reg_target, reg_norm, P.sum())


# --- Neural Bayes (paper 000; SPEC sections 1.1-1.4) -------------------------------------------


def nb_scales(state: torch.Tensor, pool: int) -> list[torch.Tensor]:
    """The scales of one hidden state: the state itself and, for a B x C x H x W state with pool > 0,
    its average pool with kernel = stride = min(pool, H, W), floor mode (the authors' AvgPool2d)."""
    if state.dim() == 4 and pool:
        k = min(pool, state.shape[2], state.shape[3])
        return [state, TF.avg_pool2d(state, k, k)]
    return [state]


def nb_prior(marginal: torch.Tensor, prior: str, eps: float) -> torch.Tensor:
    """The prior term R_p of one scale from its batch marginal E (C x positions, with gradient):

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


def nb_scale_terms(z: torch.Tensor, prior: str, eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(ent, R_p) of one scale z (B x C or B x C x H x W, pre-softmax):

        S = softmax_c(z),  ent = -(1/(B*pos)) sum_{b,pos} sum_c S log(sg(S) + eps),  E = mean_b S
    """
    S = torch.softmax(_upcast(z), dim=1)
    ent = -(S * (S.detach() + eps).log()).sum(1).mean()
    E = S.mean(0).reshape(S.shape[1], -1)
    return ent, nb_prior(E, prior, eps)


def nb_mim(states, *, alpha: float = 2.0, prior: str = "v2", pool: int = 2, eps: float = 1e-7):
    """Neural Bayes MIM loss (v2 prior by default, v1 with prior="v1") over every state and scale:

        loss = (1/N_s) sum_{scales} [ ent + (1 + alpha) R_p ]

    Returns NBMIMResult(loss, entropy, prior): the scalar loss and the detached per-scale terms
    (1-D tensors in the order state 0, state 0 pooled, state 1, ...)."""
    ents, priors = [], []
    for h in states:
        for z in nb_scales(h, pool):
            e, r = nb_scale_terms(z, prior, eps)
            ents.append(e)
            priors.append(r)
    ent, rp = torch.stack(ents), torch.stack(priors)
    loss = (ent + (1.0 + alpha) * rp).mean()
    return NBMIMResult(loss, ent.detach(), rp.detach())


def nb_mi(state: torch.Tensor) -> torch.Tensor:
    """Closed-form I(x; z) of a softmax state, per position, averaged over positions (detached):

        I = mean_pos [ H(mean_b S) - mean_b H(S) ],   H(p) = -sum_c p log p
    """
    with torch.no_grad():
        logp = torch.log_softmax(_upcast(state), dim=1)
        S = logp.exp()
        cond = -(S * logp).sum(1).mean(0)
        E = S.mean(0)
        marg = -torch.special.xlogy(E, E).sum(0)
        return (marg - cond).mean()


def nb_dms(logits: torch.Tensor, *, eps: float = 1e-7, scale: str = "code") -> torch.Tensor:
    """Neural Bayes DMS loss (K >= 2 softmax outputs; K = 2 is the binary case, K > 2 Appendix B Eq 23):

        L = softmax(logits), E = mean_b L (with gradient),
        f = L / E + eps,  g = (1 - L) / (1 - E) + eps,
        code:  loss = mean_{b,k} [ f log(1 + g/f) + g log(1 + f/g) ]
        paper: loss = code / 2   (Eq 5 and Eq 23 carry a 1/2 on each term; the authors' code does not)

    E is clamped to [eps, 1 - eps] so that a unit that is 0 or 1 on the whole batch stays finite.
    """
    L = torch.softmax(_upcast(logits), dim=1)
    E = L.mean(0, keepdim=True).clamp(eps, 1.0 - eps)  # a collapsed unit: finite, not 0/0
    f = L / E + eps
    g = (1.0 - L) / (1.0 - E) + eps
    val = (f * torch.log1p(g / f) + g * torch.log1p(f / g)).mean()
    return val if scale == "code" else 0.5 * val
