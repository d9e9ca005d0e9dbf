"""The test oracle: every fastmi loss in plain PyTorch and float64, written from the formulas.

It is the ground truth the backends are tested against, so it is written from the math (SPEC.md
sections 1, 2, 4 and 7, and the docstrings of ``fastmi.functional``), not from fastmi's code, and it
imports nothing from fastmi (``tests/test_oracle.py`` checks this). Clarity over speed: dense n x m
matrices, explicit boolean masks, Python branches on data and loops where they read better. Inputs
of any floating dtype are converted to float64 (autograd flows back to the caller's tensors), and
every function is differentiable by autograd, so that a backend's gradient is checked against
``torch.autograd`` of the oracle.

Notation. S is the n x m score matrix, S[i, j] = T(x_i, y_j). P and N are the boolean masks of the
positive and negative pairs; mean_P and mean_N average over them, LME(v) = log mean exp(v),
LME_N(S) = LME of the negative scores. sg() is stop-gradient, clip(S) = clamp(S, -tau, tau).

Every critic bound returns ``Result(loss, mi)``: ``mi`` is the detached bound (never including the
regularizer), ``loss = -bound + R`` with R = reg_weight * (stat - reg_target)^2 ("l2") or
reg_weight * |stat - reg_target| ("l1"), where ``bound`` has the value of the bound and the
gradient the paper trains with (a straight-through g + sg(v - g) where the two differ).
"""
from __future__ import annotations

import math
from typing import NamedTuple, Optional

import torch

F64 = torch.float64


class Result(NamedTuple):
    loss: torch.Tensor
    mi: torch.Tensor


class NBMIMResult(NamedTuple):
    loss: torch.Tensor
    entropy: torch.Tensor  # per scale, detached
    prior: torch.Tensor  # per scale, detached


def f64(t) -> torch.Tensor:
    """A float64 tensor (differentiable conversion of a tensor; a number becomes a 0-d tensor)."""
    if isinstance(t, torch.Tensor):
        return t.to(F64)
    return torch.tensor(float(t), dtype=F64)


# --- positive and negative pairs (SPEC section 7, fastmi.functional's defaults table) -------------

# When negatives=None: (kind of positives) -> (negatives for InfoNCE, negatives for the other bounds)
DEFAULT_NEGATIVES = {
    "diagonal": ("all", "off_positive"),
    "index": ("all", "all"),
    "mask": ("off_diagonal", "off_diagonal"),
}


def pair_masks(n: int, m: int, positives=None, negatives: Optional[str] = None, *, infonce: bool = False):
    """(P, N): boolean n x m masks of the positive and negative pairs.

    positives: None = the diagonal; an integer vector = one positive column per row; a boolean
    n x m mask. negatives: "all", "off_positive" (every entry not in P), "off_diagonal" (every
    entry with j != i), or None for the papers' choice (DEFAULT_NEGATIVES).
    """
    diagonal = torch.zeros(n, m, dtype=torch.bool)
    for i in range(min(n, m)):
        diagonal[i, i] = True
    if positives is None:
        kind, P = "diagonal", diagonal.clone()
    elif positives.dtype == torch.bool:
        kind, P = "mask", positives.detach().cpu().clone()
    else:
        kind, P = "index", torch.zeros(n, m, dtype=torch.bool)
        for i, j in enumerate(positives.tolist()):
            P[i, j] = True
    if negatives is None:
        negatives = DEFAULT_NEGATIVES[kind][0 if infonce else 1]
    if negatives == "all":
        N = torch.ones(n, m, dtype=torch.bool)
    elif negatives == "off_positive":
        N = ~P
    elif negatives == "off_diagonal":
        N = ~diagonal
    else:
        raise ValueError(f"unknown negatives {negatives!r}")
    return P, N


def is_sampled(negatives) -> bool:
    """k negatives per anchor: an int k (shifted) or an n x k tensor of column indices."""
    return isinstance(negatives, torch.Tensor) or (isinstance(negatives, int) and not isinstance(negatives, bool))


def sampled_pairs(S: torch.Tensor, positives, negatives, *, infonce: bool = False):
    """(C, P, N) for k negatives per anchor. Row i pairs its positive column p(i) (i, or positives[i])
    with the columns idx[i, 0..k-1]: idx[i, r] = (i + r + 1) mod m for negatives=k ("shifted"), or the
    given n x k index (a repeated column is a repeated pair). C lists row i's pairs: the positive
    first, then the k negatives, so that a negative pair listed twice is counted twice. The negatives
    are the k listed pairs; for InfoNCE the positive also joins the denominator (all 1 + k pairs)."""
    n, m = S.shape
    if isinstance(negatives, torch.Tensor):
        idx = negatives.tolist()
    else:
        idx = [[(i + r + 1) % m for r in range(negatives)] for i in range(n)]
    pos = list(range(n)) if positives is None else positives.tolist()
    C = torch.stack([torch.stack([S[i, pos[i]]] + [S[i, j] for j in idx[i]]) for i in range(n)])
    P = torch.zeros(C.shape, dtype=torch.bool, device=S.device)
    P[:, 0] = True
    N = torch.ones_like(P) if infonce else ~P
    return C, P, N


def score_pairs(scores=None, joint=None, marginal=None, positives=None, negatives=None):
    """(S, P, N) in float64. The vector form (joint=, marginal=: critic values on separately drawn
    joint and marginal pairs) is one row whose joint entries are the positives and whose marginal
    entries are the negatives. With k negatives per anchor, S is the n x (1 + k) matrix of each
    row's pairs (sampled_pairs)."""
    if joint is None and marginal is None and is_sampled(negatives):
        return sampled_pairs(f64(scores), positives, negatives)
    if joint is None and marginal is None:
        S = f64(scores)
        P, N = pair_masks(S.shape[0], S.shape[1], positives, negatives)
        return S, P.to(S.device), N.to(S.device)
    j, mg = f64(joint).reshape(-1), f64(marginal).reshape(-1)
    S = torch.cat([j, mg])[None, :]
    P = torch.tensor([True] * j.numel() + [False] * mg.numel())[None, :].to(S.device)
    return S, P, ~P


# --- pieces shared by the bounds ------------------------------------------------------------------


def lme(values: torch.Tensor) -> torch.Tensor:
    """log mean exp of all entries: logsumexp(v) - log(count)."""
    v = values.reshape(-1)
    return torch.logsumexp(v, 0) - math.log(v.numel())


def clip_scores(S: torch.Tensor, tau: Optional[float]) -> torch.Tensor:
    """clamp(S, -tau, tau); tau=None: no clipping."""
    return S if tau is None else S.clamp(-tau, tau)


def softplus(v: torch.Tensor) -> torch.Tensor:
    """log(1 + e^v) = logaddexp(v, 0): exact in float64 for every v (no linear cut-off), and its
    autograd gradient is the sigmoid e^(v - softplus(v))."""
    return torch.logaddexp(v, torch.zeros_like(v))


class _ZeroWithGradient(torch.autograd.Function):
    """0 in value, the identity in gradient."""

    @staticmethod
    def forward(ctx, g):
        return torch.zeros_like(g)

    @staticmethod
    def backward(ctx, grad):
        return grad


def straight_through(grad_from: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
    """The value of ``value`` with the gradient of ``grad_from`` (the papers' g + sg(v - g), taken
    exactly: an infinite v or g would make that inf - inf = NaN)."""
    return value.detach() + _ZeroWithGradient.apply(grad_from)


def regularizer(stat: torch.Tensor, weight: float, target: float, norm: str = "l2") -> torch.Tensor:
    d = stat - target
    return weight * (d * d if norm == "l2" else d.abs())


def finish(value, stat, reg_weight, reg_target, reg_norm, surrogate=None) -> Result:
    """loss = -(the bound with the training gradient) + R; mi = the detached value."""
    bound = value if surrogate is None else straight_through(surrogate, value)
    loss = -bound
    if reg_weight != 0:
        loss = loss + regularizer(stat, reg_weight, reg_target, reg_norm)
    return Result(loss, value.detach())


def skipped(S: torch.Tensor) -> Result:
    """A batch with no positive or no negative pair: loss 0 with a zero gradient (attached to S, so
    that autograd reports zeros rather than no gradient), mi NaN."""
    zero = S.masked_fill(torch.ones_like(S, dtype=torch.bool), 0.0).sum()
    return Result(zero, torch.tensor(math.nan, dtype=F64, device=S.device))


def nothing_to_pair(P, N) -> bool:
    return not bool(P.any()) or not bool(N.any())


# --- the score-matrix bounds (SPEC sections 4.1, 4.2, 7) -------------------------------------------


def infonce(scores, *, positives=None, negatives=None, reg_weight=0.0, reg_target=0.0, reg_norm="l2") -> Result:
    """I = mean over the positive pairs (i, p) of anchors i with at least one positive and one
    negative of [ S_ip - LME_{j in N_i} S_ij ] (an anchor lacking either is left out; no pair left:
    skipped). With the diagonal and all entries: log n + mean_i [S_ii - logsumexp_j S_ij].
    Regularized statistic: the same mean over pairs of LME_{j in N_i} S_ij."""
    S = f64(scores)
    if is_sampled(negatives):
        S, P, N = sampled_pairs(S, positives, negatives, infonce=True)
    else:
        P, N = pair_masks(S.shape[0], S.shape[1], positives, negatives, infonce=True)
    P, N = P.to(S.device), N.to(S.device)
    terms, row_lmes = [], []
    for i in range(S.shape[0]):
        if not bool(P[i].any()) or not bool(N[i].any()):
            continue
        lme_i = lme(S[i][N[i]])
        pos = S[i][P[i]]
        terms.append(pos - lme_i)
        row_lmes.append(lme_i.expand(pos.numel()))  # one entry per positive pair of this anchor
    if not terms:
        return skipped(S)
    I = torch.cat(terms).mean()
    return finish(I, torch.cat(row_lmes).mean(), reg_weight, reg_target, reg_norm)


def dv(scores=None, *, joint=None, marginal=None, positives=None, negatives=None, clip=None, reg_weight=0.0,
       reg_target=0.0, reg_norm="l2") -> Result:
    """Donsker-Varadhan: I = mean_P C - LME_N(C), C = clip(S) (C = S without clip).
    Statistic (ReDV / ReMINE): LME_N(S), unclipped."""
    S, P, N = score_pairs(scores, joint, marginal, positives, negatives)
    if nothing_to_pair(P, N):
        return skipped(S)
    C = clip_scores(S, clip)
    I = C[P].mean() - lme(C[N])
    return finish(I, lme(S[N]), reg_weight, reg_target, reg_norm)


def nwj(scores=None, *, joint=None, marginal=None, positives=None, negatives=None, clip=None, reg_weight=0.0,
        reg_target=0.0, reg_norm="l2") -> Result:
    """NWJ: I = mean_P C - mean_N exp(C - 1), C = clip(S). Statistic (ReNWJ): LME_N(S), unclipped."""
    S, P, N = score_pairs(scores, joint, marginal, positives, negatives)
    if nothing_to_pair(P, N):
        return skipped(S)
    C = clip_scores(S, clip)
    I = C[P].mean() - torch.exp(C[N] - 1).mean()
    return finish(I, lme(S[N]), reg_weight, reg_target, reg_norm)


def tuba(scores=None, log_baseline=0.0, *, joint=None, marginal=None, positives=None, negatives=None, clip=None,
         reg_weight=0.0, reg_target=0.0, reg_norm="l2") -> Result:
    """TUBA with log-baseline a (a number, a 0-d or 1-element tensor, or one a_i per row):

        I = 1 + mean_P (C_ip - a_i) - mean_N exp(C_ij - a_i),   C = clip(S)

    a = 1 gives NWJ; a = 0 is Choi & Lee's TUBA. Statistic (ReTUBA): LME_N(S), unclipped."""
    S, P, N = score_pairs(scores, joint, marginal, positives, negatives)
    if nothing_to_pair(P, N):
        return skipped(S)
    a = f64(log_baseline).to(S.device)
    if a.numel() == 1:
        a = a.reshape(())
    a_rows = a.reshape(-1, 1) if a.dim() == 1 else a  # a_i subtracted from row i
    shifted = clip_scores(S, clip) - a_rows
    I = 1 + shifted[P].mean() - torch.exp(shifted[N]).mean()
    return finish(I, lme(S[N]), reg_weight, reg_target, reg_norm)


def flo(scores, u=0.0, *, positives=None, negatives=None, reg_weight=0.0, reg_target=0.0, reg_norm="l2") -> Result:
    """FLO (Guo et al. 2022) with one positive p(i) per row and u_i per row (a number or a vector):

        I = 1 - mean_i [ u_i + exp(-u_i) * mean_{j in N_i} exp(S_ij - S_ip(i)) ]

    over the rows that have a negative. Statistic (ReFLO): LME_N(S)."""
    S, P, N = score_pairs(scores, None, None, positives, negatives)
    if nothing_to_pair(P, N):
        return skipped(S)
    u = f64(u).to(S.device).reshape(-1)
    terms = []
    for i in range(S.shape[0]):
        if not bool(N[i].any()):
            continue
        ui = u[0] if u.numel() == 1 else u[i]
        pos = S[i][P[i]][0]
        terms.append(ui + torch.exp(-ui) * torch.exp(S[i][N[i]] - pos).mean())
    I = 1 - torch.stack(terms).mean()
    return finish(I, lme(S[N]), reg_weight, reg_target, reg_norm)


def alpha_tuba(scores, log_baseline=0.0, *, alpha=0.01, positives=None, negatives=None, reg_weight=0.0,
               reg_target=0.0, reg_norm="l2") -> Result:
    """The interpolated bound I_alpha of Poole et al. (2019), eq. (13), with the rows of S as the anchors
    (x_i, the roles of Poole et al.'s x and y swapped, which the bound allows), diagonal positives and
    a_i = log_baseline per row (a number or a vector). For the pair of row i and column j != i, the
    multi-sample baseline averages the n - 1 columns other than j:

        m_ij = (1 / (n - 1)) * sum_{k != j} exp S_ik
        B_ij = log( alpha * m_ij + (1 - alpha) * exp a_i )
        I = 1 + mean_{i != j} (S_ii - B_ij) - mean_{i != j} exp(S_ij - B_ii)

    (the joint pair (x_i, y_i) with the other samples of the batch but one; the marginal pair (x_i, y_j)
    with all the samples independent of it). Statistic (regularized): LME_N(S) over the off-diagonal."""
    S = f64(scores)
    n = S.shape[0]
    if positives is not None or negatives not in (None, "off_positive", "off_diagonal") or S.shape[1] != n:
        raise ValueError("alpha_tuba: square scores, diagonal positives, off-diagonal negatives")
    a = f64(log_baseline).to(S.device).reshape(-1)
    log_alpha = torch.log(torch.tensor(float(alpha), dtype=F64))
    log_rest = torch.log(torch.tensor(1.0 - float(alpha), dtype=F64))

    def baseline(i, j):
        others = [k for k in range(n) if k != j]
        m_ij = torch.logsumexp(S[i, others], 0) - math.log(n - 1)
        return torch.logaddexp(log_alpha + m_ij, log_rest + (a[0] if a.numel() == 1 else a[i]))

    joint, marginal = [], []
    for i in range(n):
        b_ii = baseline(i, i)
        for j in range(n):
            if j != i:
                joint.append(S[i, i] - baseline(i, j))
                marginal.append(torch.exp(S[i, j] - b_ii))
    I = 1 + torch.stack(joint).mean() - torch.stack(marginal).mean()
    off = ~torch.eye(n, dtype=torch.bool, device=S.device)
    return finish(I, lme(S[off]), reg_weight, reg_target, reg_norm)


def l1out(log_density, *, positives=None, negatives=None, reg_weight=0.0, reg_target=0.0, reg_norm="l2") -> Result:
    """L1Out (Cheng et al. 2020), an upper bound, on M[i, j] = log q(y_j | x_i):

        I = mean_i [ M_ii - log( (1 / (n - 1)) * sum_{j != i} exp M_ji ) ]

    (for each y_i, the average of q(y_i | x_j) over the other x's). loss = +I + R (minimized), mi = I.
    Statistic (regularized): mean_i of the leave-one-out log-mean-exp."""
    M = f64(log_density)
    n = M.shape[0]
    if positives is not None or negatives not in (None, "off_positive", "off_diagonal") or M.shape[1] != n:
        raise ValueError("l1out: a square log-density matrix, diagonal positives, off-diagonal negatives")
    terms, lmes = [], []
    for i in range(n):
        others = M[torch.arange(n) != i, i]  # q(y_i | x_j) for every j != i
        lmes.append(lme(others))
        terms.append(M[i, i] - lmes[-1])
    I = torch.stack(terms).mean()
    loss = I + (regularizer(torch.stack(lmes).mean(), reg_weight, reg_target, reg_norm) if reg_weight else 0.0)
    return Result(loss, I.detach())


def gaussian_log_density(mu, logvar, y) -> torch.Tensor:
    """M[i, j] = log q(y_j | x_i) = log N(y_j; mu_i, diag exp(logvar_i))
    = -1/2 sum_d [ (y_jd - mu_id)^2 / exp(logvar_id) + logvar_id + log(2 pi) ], dense (n x n x d)."""
    mu, logvar, y = f64(mu), f64(logvar), f64(y)
    diff = y[None, :, :] - mu[:, None, :]
    return -0.5 * (diff ** 2 / torch.exp(logvar[:, None, :]) + logvar[:, None, :] + math.log(2 * math.pi)).sum(-1)


def gaussian_log_likelihood(mu, logvar, y) -> torch.Tensor:
    """mean_i log q(y_i | x_i)."""
    return gaussian_log_density(mu, logvar, y).diagonal().mean()


def gaussian_club(mu, logvar, y) -> Result:
    """CLUB (Cheng et al. 2020, eq. 6): mean_i log q(y_i | x_i) - (1/n^2) sum_i sum_j log q(y_j | x_i),
    an upper bound: loss = +I, mi = I."""
    M = gaussian_log_density(mu, logvar, y)
    I = M.diagonal().mean() - M.mean()
    return Result(I, I.detach())


def gaussian_l1out(mu, logvar, y) -> Result:
    """L1Out (Cheng et al. 2020) of the Gaussian conditional: l1out of its log-density matrix."""
    return l1out(gaussian_log_density(mu, logvar, y))


def js_surrogate(S, P, N) -> torch.Tensor:
    """The f-GAN Jensen-Shannon objective J = mean_P(-softplus(-S)) - mean_N softplus(S)."""
    return (-softplus(-S[P])).mean() - softplus(S[N]).mean()


def js(scores=None, *, joint=None, marginal=None, positives=None, negatives=None, value="nwj", reg_weight=0.0,
       reg_target=0.0, reg_norm="l2") -> Result:
    """JS training, NWJ value: loss = -(J + sg(I - J)) with J the JS objective and

        I = NWJ(S + c) = mean_P (S + c) - mean_N exp(S + c - 1),   c = 1 if value == "nwj_shifted" else 0 (value="nwj")

    c = 0: the value the papers' code reports (NWJ of the critic itself); c = 1: Poole et al.'s
    reading (torch-mist), NWJ of T + 1, exact at the JS-optimal critic. The gradient is J's either
    way. Statistic (ReJS): mean_N softplus(S)."""
    S, P, N = score_pairs(scores, joint, marginal, positives, negatives)
    if nothing_to_pair(P, N):
        return skipped(S)
    c = 1.0 if value == "nwj_shifted" else 0.0
    I = (S[P] + c).mean() - torch.exp(S[N] + c - 1).mean()
    return finish(I, softplus(S[N]).mean(), reg_weight, reg_target, reg_norm, surrogate=js_surrogate(S, P, N))


def smile(scores=None, *, joint=None, marginal=None, clip=5.0, clip_positives=False, positives=None, negatives=None,
          reg_weight=0.0, reg_target=0.0, reg_norm="l2") -> Result:
    """SMILE(tau): value I = mean_P S - LME_N(clip(S)) (mean_P clip(S) with clip_positives=True),
    gradient of the JS objective; clip=None: the DV value with the JS gradient.
    Statistic (ReSMILE): LME_N(S), unclipped."""
    S, P, N = score_pairs(scores, joint, marginal, positives, negatives)
    if nothing_to_pair(P, N):
        return skipped(S)
    C = clip_scores(S, clip)
    I = (C if clip_positives else S)[P].mean() - lme(C[N])
    return finish(I, lme(S[N]), reg_weight, reg_target, reg_norm, surrogate=js_surrogate(S, P, N))


def mine_average(running_lme: float, batch_lme: float, momentum: float) -> float:
    """The moving average of E_N[e^S], in log space: log(momentum e^r + (1 - momentum) e^b).

    r = NaN (empty) starts at b. A batch value b of NaN or +inf (non-finite scores, or a skipped
    batch passed as NaN) leaves r as it is. b = -inf (E_N[e^S] = 0) is averaged in."""
    r, b = float(running_lme), float(batch_lme)
    if math.isnan(b) or b == math.inf:
        return r
    if math.isnan(r) or momentum == 0:
        return b
    lr = r + math.log(momentum)
    lb = b + math.log1p(-momentum)
    return float(torch.logaddexp(torch.tensor(lr, dtype=F64), torch.tensor(lb, dtype=F64)))


def mine(scores=None, running_lme=None, *, joint=None, marginal=None, momentum=0.9, update=True, positives=None,
         negatives=None, reg_weight=0.0, reg_target=0.0, reg_norm="l2") -> Result:
    """MINE (Belghazi et al.): the DV value, trained with the partition function's moving average:

        ema = mine_average(running, LME_N(S), momentum)      (this batch included)
        surrogate = mean_P S - mean_N e^S / sg(e^ema) = mean_P S - exp(LME_N(S) - sg(ema))
        loss = -(surrogate + sg(I_DV - surrogate)) + R,  mi = I_DV,  statistic LME_N(S)

    While the average is still empty after this batch (its value NaN: a non-finite first batch) the
    surrogate divides by the batch's own E_N[e^S]. ``running_lme`` (0-d tensor, log of the average,
    NaN = empty) is set to ema in place when ``update`` is true; a skipped batch (no positive or no
    negative pair) does not move it."""
    S, P, N = score_pairs(scores, joint, marginal, positives, negatives)
    skip = nothing_to_pair(P, N)
    batch_lme = lme(S[N]) if bool(N.any()) else None
    ema = mine_average(running_lme, math.nan if skip else batch_lme.detach(), momentum)
    if update:
        with torch.no_grad():
            running_lme.fill_(ema)
    if skip:
        return skipped(S)
    if math.isnan(ema):
        ema = float(batch_lme.detach())
    pos = S[P].mean()
    surrogate = pos - torch.exp(batch_lme - ema)
    return finish(pos - batch_lme, batch_lme, reg_weight, reg_target, reg_norm, surrogate=surrogate)



# --- the separable critic -------------------------------------------------------------------------


def separable_scores(x, y, *, temperature=1.0, normalize=False) -> torch.Tensor:
    """S_ij = <x_i, y_j> / temperature; with normalize=True the cosine <x_i, y_j> / (|x_i| |y_j| t)."""
    x, y = f64(x), f64(y)
    if normalize:
        x = x / torch.linalg.vector_norm(x, dim=1, keepdim=True)
        y = y / torch.linalg.vector_norm(y, dim=1, keepdim=True)
    t = f64(temperature).reshape(()) if isinstance(temperature, torch.Tensor) else float(temperature)
    return (x @ y.T) / t


def _average(a: Result, b: Result) -> Result:
    return Result((a.loss + b.loss) / 2, (a.mi + b.mi) / 2)


def _separable(bound, x, y, temperature, normalize, symmetric, **kw) -> Result:
    """``bound`` of S = separable_scores(x, y); symmetric=True (CLIP / NT-Xent) averages the x -> y
    bound (rows of S) and the y -> x bound (rows of S^T), losses and estimates alike."""
    S = separable_scores(x, y, temperature=temperature, normalize=normalize)
    forward = bound(S, **kw)
    return _average(forward, bound(S.T, **kw)) if symmetric else forward


def infonce_separable(x, y, *, temperature=1.0, normalize=False, symmetric=False, **kw) -> Result:
    return _separable(infonce, x, y, temperature, normalize, symmetric, **kw)


def dv_separable(x, y, *, temperature=1.0, normalize=False, symmetric=False, **kw) -> Result:
    return _separable(dv, x, y, temperature, normalize, symmetric, **kw)


def nwj_separable(x, y, *, temperature=1.0, normalize=False, symmetric=False, **kw) -> Result:
    return _separable(nwj, x, y, temperature, normalize, symmetric, **kw)


# --- Neural Bayes: softmax statistics (SPEC 1.1, 1.3, 1.4) ----------------------------------------


def avg_pool_floor(h: torch.Tensor, k: int) -> torch.Tensor:
    """Average pool of a B x C x H x W state with kernel = stride = k, floor mode: the trailing rows
    and columns that do not fill a window are dropped."""
    B, C, H, W = h.shape
    Ho, Wo = H // k, W // k
    return h[:, :, : Ho * k, : Wo * k].reshape(B, C, Ho, k, Wo, k).mean(dim=(3, 5))


def nb_scales(state: torch.Tensor, pool: Optional[int]) -> list:
    """The state itself and, for a 4-D state with pool > 0, its pool with k = min(pool, H, W)."""
    if state.dim() == 4 and pool:
        return [state, avg_pool_floor(state, min(pool, state.shape[2], state.shape[3]))]
    return [state]


def nb_scale_terms(z: torch.Tensor, prior: str, eps: float):
    """(ent, R_p) of one scale z (B x C x positions...), S = softmax over C, E = mean_b S:

        ent = -(1/(B pos)) sum_{b,pos,c} S log(sg(S) + eps)
        v2:  R_p = mean_pos sum_c -[ (1/C) log E' + (1 - 1/C) log(1 - E') ]
        v1:  R_p = mean_pos sum_c E log sg(E'),          E' = clamp(E, eps, 1 - eps)
    """
    S = torch.softmax(f64(z), dim=1)
    B, C = S.shape[0], S.shape[1]
    S = S.reshape(B, C, -1)
    positions = S.shape[2]
    ent = -(S * torch.log(S.detach() + eps)).sum() / (B * positions)
    E = S.mean(dim=0)  # C x positions, with gradient
    Ec = E.clamp(eps, 1.0 - eps)
    if prior == "v2":
        per_position = -((1.0 / C) * torch.log(Ec) + (1.0 - 1.0 / C) * torch.log1p(-Ec)).sum(dim=0)
    elif prior == "v1":
        per_position = (E * torch.log(Ec.detach())).sum(dim=0)
    else:
        raise ValueError(f"unknown prior {prior!r}")
    return ent, per_position.mean()


def nb_mim(states, *, alpha=2.0, prior="v2", pool=2, eps=1e-7) -> NBMIMResult:
    """loss = (1/N_scales) sum over every state's scales of [ ent + (1 + alpha) R_p ]."""
    if isinstance(states, torch.Tensor):
        states = [states]
    terms = [nb_scale_terms(z, prior, eps) for h in states for z in nb_scales(h, pool)]
    loss = sum(ent + (1.0 + alpha) * rp for ent, rp in terms) / len(terms)
    return NBMIMResult(loss, torch.stack([t[0] for t in terms]).detach(), torch.stack([t[1] for t in terms]).detach())


def nb_mi(state: torch.Tensor) -> torch.Tensor:
    """I = mean_pos [ H(mean_b S) - mean_b H(S) ], H(p) = -sum_c p log p (0 log 0 = 0); detached."""
    with torch.no_grad():
        logS = torch.log_softmax(f64(state), dim=1)
        B, C = logS.shape[0], logS.shape[1]
        logS = logS.reshape(B, C, -1)
        S = logS.exp()
        conditional = -(S * logS).sum(dim=1).mean(dim=0)  # per position
        E = S.mean(dim=0)
        marginal = -torch.where(E > 0, E * torch.log(E), torch.zeros_like(E)).sum(dim=0)
        return (marginal - conditional).mean()


def nb_dms(logits: torch.Tensor, *, eps=1e-7, scale="code") -> torch.Tensor:
    """L = softmax(logits), E = clamp(mean_b L, eps, 1 - eps) (with gradient),
    f = L / E + eps, g = (1 - L) / (1 - E) + eps,
    code: mean_{b,k} [ f log(1 + g/f) + g log(1 + f/g) ];  paper: half of it."""
    L = torch.softmax(f64(logits), dim=1)
    E = L.mean(dim=0, keepdim=True).clamp(eps, 1.0 - eps)
    f = L / E + eps
    g = (1.0 - L) / (1.0 - E) + eps
    value = (f * torch.log1p(g / f) + g * torch.log1p(f / g)).mean()
    return value if scale == "code" else value / 2


# --- Variational InfoMax / VIB (SPEC 2.2) ---------------------------------------------------------


def imq_scales(K: int, scale=None, scales=None) -> list:
    """The kernel constants C: [scale] (scale defaults to K), or [scale * r for r in scales]."""
    base = float(K) if scale is None else float(scale)
    return [base] if scales is None else [base * float(r) for r in scales]


def imq_gram(a: torch.Tensor, b: torch.Tensor, cs) -> torch.Tensor:
    """k(a_i, b_j) = sum_C C / (C + |a_i - b_j|^2), from the exact differences a_i - b_j (no
    |a|^2 + |b|^2 - 2 a.b expansion, which cancels catastrophically for a large common offset)."""
    diff = a[:, None, :] - b[None, :, :]
    d2 = (diff * diff).sum(dim=2)
    return sum(c / (c + d2) for c in cs)


def mmd_imq(x, y, *, scale=None, scales=None, estimator="unbiased") -> torch.Tensor:
    """MMD^2 of the samples x (n x K) and y (m x K) with the IMQ kernel:

        unbiased: sum_{i!=j} k(x_i,x_j)/(n(n-1)) + sum_{i!=j} k(y_i,y_j)/(m(m-1)) - 2 sum_{i,j} k(x_i,y_j)/(nm)
        biased:   the same with the diagonals included, over n^2 and m^2."""
    x, y = f64(x), f64(y)
    n, m = x.shape[0], y.shape[0]
    cs = imq_scales(x.shape[1], scale, scales)
    kxx, kyy, kxy = imq_gram(x, x, cs), imq_gram(y, y, cs), imq_gram(x, y, cs)
    if estimator == "unbiased":
        off_x = ~torch.eye(n, dtype=torch.bool, device=x.device)
        off_y = ~torch.eye(m, dtype=torch.bool, device=y.device)
        xx = kxx[off_x].sum() / (n * (n - 1))
        yy = kyy[off_y].sum() / (m * (m - 1))
    elif estimator == "biased":
        xx, yy = kxx.sum() / (n * n), kyy.sum() / (m * m)
    else:
        raise ValueError(f"unknown estimator {estimator!r}")
    return xx + yy - 2 * kxy.sum() / (n * m)


def gaussian_kl(mu, std, *, sigma=1.0) -> torch.Tensor:
    """mean over samples of KL(N(mu_b, diag std_b^2) || N(0, sigma^2 I))
    = 1/2 sum_d [ (std^2 + mu^2)/sigma^2 - 1 - log(std^2/sigma^2) ].
    The first dimension indexes the samples; a 1-D input is one sample per entry."""
    mu, std = f64(mu), f64(std)
    s2 = float(sigma) ** 2
    var = std * std
    kl = 0.5 * ((var + mu * mu) / s2 - 1.0 - torch.log(var / s2))
    per_sample = kl if kl.dim() == 1 else kl.reshape(kl.shape[0], -1).sum(dim=1)
    return per_sample.mean()


# --- Neural Bayes: finite-difference Jacobian smoothness R_c (SPEC 1.2) ---------------------------


def fd_smoothness(f_clean, f_perturbed, zeta, *, pool=None) -> torch.Tensor:
    """R_c = (1/B) sum_b |f_clean_b - f_perturbed_b|^2 / zeta_b^2 (zeta one number, or one per
    sample); pool="global" first averages a B x C x ... state over its positions."""
    a, b = f64(f_clean), f64(f_perturbed)
    B = a.shape[0]
    if pool == "global":
        a = a.reshape(B, a.shape[1], -1).mean(dim=2)
        b = b.reshape(B, b.shape[1], -1).mean(dim=2)
    sq = ((a - b) ** 2).reshape(B, -1).sum(dim=1)
    z = f64(zeta).to(sq.device).reshape(-1)  # 1 value (broadcast) or B values
    return (sq / (z * z)).mean()


def span_directions(x: torch.Tensor, coefficients: torch.Tensor, *, center: bool = True,
                    eps: Optional[float] = None) -> torch.Tensor:
    """Unit directions in the span of the batch (perturb_in_span without its random draws), B x n:

        Xc_j = x_j - mean_k x_k  (x_j when center=False),   D_i = sum_j c_ij Xc_j,   delta_i = D_i / |D_i|

    A direction at rounding level, |D_i| <= 8 sqrt(B) eps sum_j |c_ij| |Xc_j| (eps: the machine
    epsilon of x's dtype unless given), or zero or non-finite, is the zero vector: sample i is not
    perturbed. The mean is computed as x_0 + mean_j (x_j - x_0), so that identical samples centre
    to exact zeros."""
    B = x.shape[0]
    X = f64(x.detach()).reshape(B, -1)
    if center:
        from_first = X - X[0]
        Xc = from_first - from_first.mean(dim=0)
    else:
        Xc = X
    c = f64(coefficients.detach()).to(X.device)
    if eps is None:
        eps = torch.finfo(x.dtype).eps
    D = c @ Xc
    row_norms = torch.linalg.vector_norm(Xc, dim=1)
    delta = torch.zeros_like(D)
    for i in range(B):
        norm = float(torch.linalg.vector_norm(D[i]))
        tolerance = 8.0 * math.sqrt(B) * eps * float((c[i].abs() * row_norms).sum())
        if math.isfinite(norm) and norm > 0 and norm > tolerance:
            delta[i] = D[i] / norm
    return delta


def span_perturb(x: torch.Tensor, coefficients: torch.Tensor, zeta, *, center: bool = True,
                 eps: Optional[float] = None) -> torch.Tensor:
    """x_tilde = x + zeta * delta (zeta one number or one per sample), float64, shaped like x, no gradient."""
    B = x.shape[0]
    delta = span_directions(x, coefficients, center=center, eps=eps)
    z = f64(zeta).detach().to(delta.device).reshape(-1, 1)
    return (f64(x.detach()).reshape(B, -1) + z * delta).reshape(x.shape)
