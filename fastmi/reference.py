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

from . import _scores, _validate
from ._result import MIResult, NBMIMResult


class _GradientOnly(torch.autograd.Function):
    """0 in value, the identity in gradient: ``sg(v) + _GradientOnly.apply(g)`` has v's value exactly
    and g's gradient, also where v or g is infinite (g + sg(v - g) is inf - inf = NaN there)."""

    @staticmethod
    def forward(ctx, g):
        return torch.zeros_like(g)

    @staticmethod
    def backward(ctx, grad):
        return grad


def straight_through(grad_value: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
    """A tensor with the value of ``value`` and the gradient of ``grad_value`` (g + sg(v - g) in the
    papers' code), exactly: an overflowed value (inf) keeps the surrogate's gradient, as it would
    have in exact arithmetic, instead of switching to the value's own gradient."""
    return value.detach() + _GradientOnly.apply(grad_value)


def regularizer(stat: torch.Tensor, weight: float, target: float, norm: str = "l2") -> torch.Tensor:
    """R = weight * (stat - target)^2 ("l2", the papers' default) or weight * |stat - target| ("l1")."""
    d = stat - target
    return weight * (d * d if norm == "l2" else d.abs())


def _finish(surrogate, value, stat, reg_weight, reg_target, reg_norm, skip=None) -> MIResult:
    """loss = -straight_through(surrogate, value) + R. ``skip`` (a bool tensor) marks a batch with no
    positive or no negative pair: the step is skipped, loss 0 with zero gradient, mi NaN (the bound is
    undefined). When the surrogate is the value itself no straight-through is needed (an infinite
    value stays infinite instead of becoming inf - inf = NaN)."""
    loss = -(value if surrogate is value else straight_through(surrogate, value))
    if reg_weight:
        loss = loss + regularizer(stat, reg_weight, reg_target, reg_norm)
    mi = value.detach()
    if skip is not None:
        loss = torch.where(skip, torch.zeros_like(loss), loss)
        mi = torch.where(skip, torch.full_like(mi, math.nan), mi)
    return MIResult(loss, mi)


def _skip_guard(scores: torch.Tensor, P: torch.Tensor, N: torch.Tensor):
    """(scores, skip): skip is true when there is no positive or no negative pair. The scores of a
    skipped batch are replaced by zeros, so that nothing computed from them (e^S of large scores,
    an empty log-sum-exp) can send inf or NaN into the gradient that torch.where discards."""
    skip = (P.sum() == 0) | (N.sum() == 0)
    return torch.where(skip, torch.zeros_like(scores), scores), skip


def _count(mask: torch.Tensor, dtype) -> torch.Tensor:
    return mask.sum().to(dtype)


def _mean(S: torch.Tensor, mask: torch.Tensor, fn=None) -> torch.Tensor:
    """Mean of fn(S) over the pairs in mask (0 for an empty mask). Masked-out entries are replaced
    before fn, so an inf/NaN outside the mask touches neither the value nor the gradient."""
    S = torch.where(mask, S, torch.zeros_like(S))
    values = S if fn is None else torch.where(mask, fn(S), torch.zeros_like(S))
    return values.sum() / _count(mask, S.dtype).clamp_min(1)


def _lme(S: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """LME over the pairs in mask: log mean exp. An empty mask (a skipped batch) gives a finite
    placeholder, so that the discarded gradient stays finite too."""
    filled = torch.where(mask.any(), S.masked_fill(~mask, -math.inf), torch.zeros_like(S))
    return torch.logsumexp(filled.reshape(-1), 0) - torch.log(_count(mask, S.dtype).clamp_min(1))


def _clip(S: torch.Tensor, tau: Optional[float]) -> torch.Tensor:
    if tau is None or tau > torch.finfo(S.dtype).max:  # a threshold beyond the dtype's range clips nothing
        return S
    return S.clamp(-tau, tau)


def _masks(scores, positives, negatives, *, infonce, name):
    layout = _scores.resolve(scores, positives, negatives, infonce=infonce, name=name)
    return layout.dense_masks(scores.device)


def _upcast(scores: torch.Tensor) -> torch.Tensor:
    """fp16/bf16 scores are computed in fp32 (counts and sums overflow or lose digits otherwise)."""
    return scores.float() if scores.dtype in (torch.float16, torch.bfloat16) else scores


def _exp_mean(S: torch.Tensor, mask: torch.Tensor, shift=0.0) -> torch.Tensor:
    """mean over the pairs in mask of exp(S - shift), as sum exp(S - shift - log|mask|): no term is
    larger than the mean, so neither the value nor an entry's gradient overflows before the mean does."""
    log_n = torch.log(_count(mask, S.dtype).clamp_min(1))
    S = torch.where(mask, S, torch.zeros_like(S))  # an inf/NaN outside the mask touches nothing
    return torch.where(mask, torch.exp(S - shift - log_n), torch.zeros_like(S)).sum()


def softplus(x: torch.Tensor) -> torch.Tensor:
    """log(1 + e^x) = logaddexp(x, 0): accurate for every x, with the exact gradient sigmoid(x)
    (torch.nn.functional.softplus returns x above its threshold 20, whose gradient 1 is off by e^-20)."""
    return torch.logaddexp(x, torch.zeros_like(x))


def infonce(scores, *, positives=None, negatives=None, reg_weight=0.0, reg_target=0.0, reg_norm="l2") -> MIResult:
    """I = mean over positive pairs (i, p) of [S_ip - LME_{j in N_i} S_ij]; with the diagonal and
    all entries, I = log m + mean_i [S_ii - logsumexp_j S_ij]. Regularized statistic: the mean over
    anchors (weighted by their number of positives) of LME_{j in N_i} S_ij."""
    scores = _upcast(scores)
    P, N = _masks(scores, positives, negatives, infonce=True, name="infonce")
    has_neg = N.any(1, keepdim=True)
    P = P & has_neg  # an anchor with no negatives is skipped, like one with no positives
    scores, skip = _skip_guard(scores, P, N)
    # rows that are not anchors are left out of the log-sum-exp altogether: a +inf there would send
    # 0 * exp(inf - inf) = NaN into the row's gradient through logsumexp's backward
    anchor = P.any(1, keepdim=True)
    filled = torch.where(anchor, scores.masked_fill(~N, -math.inf), torch.zeros_like(scores))
    row_lme = torch.logsumexp(filled, 1) - N.sum(1).clamp_min(1).to(scores.dtype).log()
    I = _mean(scores - row_lme[:, None], P)
    counts = P.sum(1).to(scores.dtype)
    stat = (counts * torch.where(counts > 0, row_lme, torch.zeros_like(row_lme))).sum() / counts.sum().clamp_min(1)
    return _finish(I, I, stat, reg_weight, reg_target, reg_norm, skip)


def dv(scores, *, positives=None, negatives=None, clip=None, reg_weight=0.0, reg_target=0.0, reg_norm="l2") -> MIResult:
    """Donsker-Varadhan / MINE value: I = mean_P S - LME_N(S) (on clip(S) when clip is given).
    Regularized statistic: LME_N(S), unclipped (ReMINE / ReDV)."""
    scores = _upcast(scores)
    P, N = _masks(scores, positives, negatives, infonce=False, name="dv")
    scores, skip = _skip_guard(scores, P, N)
    Sv = _clip(scores, clip)
    I = _mean(Sv, P) - _lme(Sv, N)
    return _finish(I, I, _lme(scores, N), reg_weight, reg_target, reg_norm, skip)


def nwj(scores, *, positives=None, negatives=None, clip=None, reg_weight=0.0, reg_target=0.0, reg_norm="l2") -> MIResult:
    """NWJ: I = mean_P S - mean_N exp(S - 1) (on clip(S) when clip is given). Statistic: LME_N(S)."""
    scores = _upcast(scores)
    P, N = _masks(scores, positives, negatives, infonce=False, name="nwj")
    scores, skip = _skip_guard(scores, P, N)
    Sv = _clip(scores, clip)
    I = _mean(Sv, P) - _exp_mean(Sv, N, 1.0)
    return _finish(I, I, _lme(scores, N), reg_weight, reg_target, reg_norm, skip)


def tuba(scores, log_baseline=0.0, *, positives=None, negatives=None, clip=None, reg_weight=0.0, reg_target=0.0,
         reg_norm="l2") -> MIResult:
    """TUBA with per-row log-baseline a_i: I = 1 + mean_P (S_ip - a_i) - mean_N exp(S_ij - a_i).
    a = 1 gives NWJ. Statistic: LME_N(S)."""
    scores = _upcast(scores)
    P, N = _masks(scores, positives, negatives, infonce=False, name="tuba")
    scores, skip = _skip_guard(scores, P, N)
    a = torch.as_tensor(log_baseline, device=scores.device).to(scores.dtype)
    shifted = _clip(scores, clip) - (a[:, None] if a.dim() == 1 else a)
    I = 1 + _mean(shifted, P) - _exp_mean(shifted, N)
    return _finish(I, I, _lme(scores, N), reg_weight, reg_target, reg_norm, skip)


def _js_surrogate(scores, P, N):
    return -_mean(-scores, P, softplus) - _mean(scores, N, softplus)


JS_VALUES = ("nwj", "nwj_shifted")


def js(scores, *, positives=None, negatives=None, value="nwj", reg_weight=0.0, reg_target=0.0,
       reg_norm="l2") -> MIResult:
    """f-GAN Jensen-Shannon: trained on J = mean_P(-softplus(-S)) - mean_N softplus(S); reports the
    NWJ value of the same scores, I = mean_P S - mean_N e^(S - 1) (value="nwj", the papers' code), or
    of S + 1, I = mean_P S + 1 - mean_N e^S (value="nwj_shifted", Poole et al.; exact at the
    JS-optimal critic, where the first is lower by 1/e). Statistic: mean_N softplus(S) (ReJS)."""
    scores = _upcast(scores)
    P, N = _masks(scores, positives, negatives, infonce=False, name="js")
    scores, skip = _skip_guard(scores, P, N)
    if value == "nwj":
        I = _mean(scores, P) - _exp_mean(scores, N, 1.0)
    else:
        I = _mean(scores, P) + 1 - _exp_mean(scores, N)
    J = _js_surrogate(scores, P, N)
    return _finish(J, I, _mean(scores, N, softplus), reg_weight, reg_target, reg_norm, skip)


def smile(scores, *, positives=None, negatives=None, clip=5.0, clip_positives=False, reg_weight=0.0, reg_target=0.0,
          reg_norm="l2") -> MIResult:
    """SMILE(tau): value mean_P S - LME_N(clip(S)) (positives clipped too with clip_positives=True);
    gradient from JS. clip=None gives the DV value with the JS gradient. Statistic: LME_N(S), unclipped."""
    clip_positives = _validate.flag(clip_positives, "clip_positives", "smile")
    scores = _upcast(scores)
    P, N = _masks(scores, positives, negatives, infonce=False, name="smile")
    scores, skip = _skip_guard(scores, P, N)
    Sc = _clip(scores, clip)
    I = _mean(Sc if clip_positives else scores, P) - _lme(Sc, N)
    J = _js_surrogate(scores, P, N)
    return _finish(J, I, _lme(scores, N), reg_weight, reg_target, reg_norm, skip)


def mine_running_update(running_lme: torch.Tensor, batch_lme: torch.Tensor, momentum: float) -> torch.Tensor:
    """Moving average of E_N[e^S] in log space: log(momentum * e^running + (1 - momentum) * e^batch);
    an empty (NaN) running value starts at the batch value. A batch value of NaN or +inf (non-finite
    scores) leaves the average as it was: one bad batch neither resets nor poisons it. (-inf, every
    negative score -inf, is a real E_N[e^S] = 0 and is averaged in.)"""
    batch_lme = batch_lme.detach().to(running_lme.dtype)
    mixed = torch.logaddexp(running_lme + math.log(momentum), batch_lme + math.log1p(-momentum)) if momentum > 0 else batch_lme
    updated = torch.where(torch.isnan(running_lme), batch_lme, mixed)
    usable = ~(torch.isnan(batch_lme) | torch.isposinf(batch_lme))
    return torch.where(usable, updated, running_lme)


def mine_surrogate_ema(ema: torch.Tensor, batch_lme: torch.Tensor) -> torch.Tensor:
    """The average the MINE surrogate divides by: the batch's own value while the average is still
    empty (a skipped or non-finite first batch)."""
    return torch.where(torch.isnan(ema), batch_lme.detach().to(ema.dtype), ema)


def mine(scores, running_lme, *, momentum=0.9, update=True, positives=None, negatives=None, reg_weight=0.0,
         reg_target=0.0, reg_norm="l2") -> MIResult:
    """MINE: the DV value; the gradient replaces the batch partition function E_N[e^S] by its moving
    average (Belghazi et al.): surrogate = mean_P S - E_N[e^S] / sg(ema). ``running_lme`` (log of the
    moving average, a 0-d tensor, NaN when empty) is updated in place, like F.batch_norm's running stats."""
    update = _validate.flag(update, "update", "mine")
    scores = _upcast(scores)
    P, N = _masks(scores, positives, negatives, infonce=False, name="mine")
    scores, skip = _skip_guard(scores, P, N)
    batch_lme = _lme(scores, N)
    with torch.no_grad():
        # a skipped batch (no positive or negative pair) does not move the average
        ema = mine_running_update(running_lme, torch.where(skip, math.nan, batch_lme), momentum)
        if update:
            running_lme.copy_(ema)
        ema = mine_surrogate_ema(ema, batch_lme)
    pos = _mean(scores, P)
    I = pos - batch_lme
    # mean_N exp(S - ema) = exp(batch_lme - ema), entry by entry: each entry's gradient
    # exp(S_ij - ema) / |N| stays finite when another score is +inf (exp(inf) * 0 would be NaN)
    e = ema.to(scores.dtype)
    surrogate = pos - _exp_mean(scores, N, e)
    return _finish(surrogate, I, batch_lme, reg_weight, reg_target, reg_norm, skip)


# --- separable critic (the dense definition of the separable family) --------------------------
def separable_scores(x, y, *, temperature=1.0, normalize=False) -> torch.Tensor:
    """S = x y^T / temperature, or the cosine critic S_ij = <x_i, y_j> / (|x_i| |y_j| temperature)
    with normalize=True. Built densely (n x m): this is the oracle the fused family avoids."""
    x, y = _upcast(x), _upcast(y)
    if _validate.flag(normalize, "normalize", "separable_scores"):
        _validate.nonzero_rows(x, "x", "separable_scores")
        _validate.nonzero_rows(y, "y", "separable_scores")
        x = x / torch.linalg.vector_norm(x, dim=1, keepdim=True)
        y = y / torch.linalg.vector_norm(y, dim=1, keepdim=True)
    return (x @ y.T) / temperature


def infonce_separable(x, y, *, temperature=1.0, normalize=False, symmetric=False, positives=None, negatives=None,
                      reg_weight=0.0, reg_target=0.0, reg_norm="l2") -> MIResult:
    """InfoNCE of S = separable_scores(x, y); symmetric=True averages the x->y bound (rows of S) and
    the y->x bound (rows of S^T) — the CLIP / SimCLR form — for losses and estimates alike."""
    if _validate.flag(symmetric, "symmetric", "infonce_separable") and positives is not None:
        raise ValueError("infonce_separable: symmetric=True needs diagonal positives (positives=None)")
    S = separable_scores(x, y, temperature=temperature, normalize=normalize)
    kw = dict(positives=positives, negatives=negatives, reg_weight=reg_weight, reg_target=reg_target,
              reg_norm=reg_norm)
    forward = infonce(S, **kw)
    if not symmetric:
        return forward
    backward = infonce(S.T, **kw)
    return MIResult((forward.loss + backward.loss) / 2, (forward.mi + backward.mi) / 2)


def dv_separable(x, y, *, temperature=1.0, normalize=False, positives=None, negatives=None, reg_weight=0.0,
                 reg_target=0.0, reg_norm="l2") -> MIResult:
    """The DV bound of S = separable_scores(x, y)."""
    S = separable_scores(x, y, temperature=temperature, normalize=normalize)
    return dv(S, positives=positives, negatives=negatives, reg_weight=reg_weight, reg_target=reg_target,
              reg_norm=reg_norm)


def nwj_separable(x, y, *, temperature=1.0, normalize=False, positives=None, negatives=None, reg_weight=0.0,
                  reg_target=0.0, reg_norm="l2") -> MIResult:
    """The NWJ bound of S = separable_scores(x, y)."""
    S = separable_scores(x, y, temperature=temperature, normalize=normalize)
    return nwj(S, positives=positives, negatives=negatives, reg_weight=reg_weight, reg_target=reg_target,
               reg_norm=reg_norm)
# ---------------------------------------------------------------------------------------------
# fd_jacobian: Neural Bayes' finite-difference Jacobian smoothness regularizer R_c (SPEC 1.2)
NOISES = {"bernoulli": 0, "gaussian": 1}


def draw_zeta(zeta_std: float, count: int, generator: Optional[torch.Generator], device) -> torch.Tensor:
    """zeta = zeta_std * N(0, 1): ``count`` values (1 = one per batch, as the authors' code; B = per sample).
    Drawn on the generator's device (x's device without a generator); float32."""
    dev = generator.device if generator is not None else device
    return zeta_std * torch.randn(count, generator=generator, device=dev, dtype=torch.float32)


def span_coefficients(seed: int, B: int, noise: str) -> torch.Tensor:
    """The B x B coefficients c_ij that the fused kernels generate from ``seed`` (csrc/fd_jacobian.h),
    as a dense float64 matrix: an independent (numpy) implementation of the stream, for tests.

    Philox4x32-10 (Triton's tl.randint4x): counter (lo32(offset), hi32(offset), 0, 0), key (lo32(seed),
    hi32(seed)). Bernoulli: bit j%32 of word (j%128)//32 at offset i*ceil(B/128) + j//128. Gaussian:
    output j%4 of Box-Muller (float32) at offset i*ceil(B/4) + j//4, as tl.randn4x.
    """
    import numpy as np

    M32 = np.uint64(0xFFFFFFFF)
    s = int(seed) & 0xFFFFFFFFFFFFFFFF
    i = np.arange(B, dtype=np.uint64)[:, None]
    j = np.arange(B, dtype=np.uint64)[None, :]
    per = (B + 127) // 128 if noise == "bernoulli" else (B + 3) // 4
    offset = i * np.uint64(per) + (j // np.uint64(128 if noise == "bernoulli" else 4))
    c0, c1 = offset & M32, offset >> np.uint64(32)
    c2 = np.zeros_like(c0)
    c3 = np.zeros_like(c0)
    k0, k1 = np.uint64(s & 0xFFFFFFFF), np.uint64(s >> 32)
    with np.errstate(over="ignore"):
        for _ in range(10):
            p0 = np.uint64(0xD2511F53) * c0
            p2 = np.uint64(0xCD9E8D57) * c2
            c0, c1, c2, c3 = ((p2 >> np.uint64(32)) ^ c1 ^ k0, p2 & M32, (p0 >> np.uint64(32)) ^ c3 ^ k1, p0 & M32)
            k0 = (k0 + np.uint64(0x9E3779B9)) & M32
            k1 = (k1 + np.uint64(0xBB67AE85)) & M32
    words = [c0, c1, c2, c3]
    if noise == "bernoulli":
        sel = (j % np.uint64(128)) // np.uint64(32)
        word = np.choose(sel.astype(np.int64) + np.zeros((B, 1), dtype=np.int64), words)
        out = (word >> (j % np.uint64(32))) & np.uint64(1)
        return torch.from_numpy(out.astype(np.float64))

    def uniform(w):
        v = w.astype(np.uint32).view(np.int32)
        v = np.where(v < 0, ~v, v)
        return v.astype(np.float32) * np.float32(4.6566127342e-10)

    u = [uniform(w) for w in words]
    normals = []
    for a, b in ((u[0], u[1]), (u[2], u[3])):
        a = np.maximum(np.float32(1e-7), a)
        th = np.float32(6.283185307179586) * b
        r = np.sqrt(np.float32(-2.0) * np.log(a))
        normals += [r * np.cos(th), r * np.sin(th)]
    sel = (j % np.uint64(4)).astype(np.int64) + np.zeros((B, 1), dtype=np.int64)
    return torch.from_numpy(np.choose(sel, normals).astype(np.float64))


def span_directions(x: torch.Tensor, coefficients: torch.Tensor, center: bool = True) -> torch.Tensor:
    """delta_i = D_i / ||D_i|| with D = C @ Xc, Xc_j = x_j - mean_k x_k (x_j when not centring), x [B, n].

    The mean is taken as x_0 + mean_j (x_j - x_0) (identical samples centre to exact zeros). A
    direction at rounding level, ||D_i|| <= 8 sqrt(B) eps sum_j |c_ij| ||Xc_j||, is zero (sample i is
    left unperturbed). Computed in fp32 (fp64 for float64 x)."""
    acc = torch.float64 if x.dtype == torch.float64 else torch.float32
    xf = x.to(acc)
    if _validate.flag(center, "center", "span_directions"):
        y = xf - xf[:1]
        xc = y - y.to(torch.float64).mean(0).to(acc)
    else:
        xc = xf
    c = coefficients.to(device=x.device, dtype=acc)
    d = c @ xc
    norm = torch.linalg.vector_norm(d, dim=1, dtype=torch.float64)
    rownorm = torch.linalg.vector_norm(xc, dim=1, dtype=torch.float64)
    tol = 8.0 * math.sqrt(x.shape[0]) * torch.finfo(acc).eps * (c.abs().double() @ rownorm)
    keep = (norm > tol) & (norm > 0) & torch.isfinite(norm)  # overflowed directions: unperturbed too
    scale = torch.where(keep, 1.0 / torch.where(keep, norm, 1.0), 0.0).to(acc)
    return torch.where(keep[:, None], d * scale[:, None], 0.0)


def perturb_in_span(x: torch.Tensor, *, zeta=None, zeta_std: float = 0.1, noise: str = "bernoulli",
                    center: bool = True, per_sample_zeta: bool = False, generator: Optional[torch.Generator] = None,
                    coefficients: Optional[torch.Tensor] = None):
    """x_tilde = x + zeta * delta, delta_i = D_i/||D_i||, D = C @ Xc (see span_directions); no gradient.

    C ~ Bernoulli(1/2) in {0,1} (the authors' code) or N(0, 1) (the paper), drawn with torch's
    generator after zeta (``coefficients`` replaces the draw: tests feed the fused stream's matrix).
    zeta = zeta_std * N(0,1), one per batch (per sample with per_sample_zeta) unless given.
    Returns (x_tilde, zeta) with zeta of shape [] or [B] (float32)."""
    B = x.shape[0]
    center = _validate.flag(center, "center", "perturb_in_span")
    per_sample_zeta = _validate.flag(per_sample_zeta, "per_sample_zeta", "perturb_in_span")
    with torch.no_grad():
        if zeta is None:
            acc = torch.float64 if x.dtype == torch.float64 else torch.float32
            zeta = draw_zeta(zeta_std, B if per_sample_zeta else 1, generator, x.device).to(x.device, acc)
            zeta = zeta if per_sample_zeta else zeta.reshape(())
        if coefficients is None:
            dev = generator.device if generator is not None else x.device
            if noise == "bernoulli":
                coefficients = torch.randint(0, 2, (B, B), generator=generator, device=dev).float()
            else:
                coefficients = torch.randn(B, B, generator=generator, device=dev)
        x2 = x.reshape(B, -1)
        delta = span_directions(x2, coefficients, center)
        z = _zeta_tensor(zeta, delta).reshape(-1, 1)
        x_tilde = (x2.to(delta.dtype) + z * delta).to(x.dtype).reshape(x.shape)
    return x_tilde, zeta


def fd_smoothness(f_clean: torch.Tensor, f_perturbed: torch.Tensor, zeta, *, pool: Optional[str] = None) -> torch.Tensor:
    """R_c = (1/B) sum_b ||f_clean_b - f_perturbed_b||^2 / zeta_b^2 (zeta a scalar or one per sample);
    pool="global" first averages a [B, C, ...] state over its positions (dims >= 2)."""
    a, b = _upcast(f_clean), _upcast(f_perturbed)
    d = a - b  # the difference first: pooling a and b apart would round away digits that cancel
    if pool == "global":
        d = d.flatten(2).mean(2)
    d = d.reshape(a.shape[0], -1)
    s = (d * d).sum(1)
    z = _zeta_tensor(zeta, s)
    return (s / (z * z)).mean()


def _zeta_tensor(zeta, like: torch.Tensor) -> torch.Tensor:
    """zeta (a number or a tensor) in ``like``'s dtype and device; a number goes there directly
    (torch.as_tensor would first make it float32)."""
    if isinstance(zeta, torch.Tensor):
        return zeta.to(device=like.device, dtype=like.dtype)
    return torch.tensor(float(zeta), dtype=like.dtype, device=like.device)
# --- mmd_imq family (SPEC section 2: Variational InfoMax, WAE, VIB) -----------------------------

def imq_kernel(d2: torch.Tensor, scales) -> torch.Tensor:
    """Sum over scales C of the inverse-multiquadric kernel C / (C + d2), d2 = ||a - b||^2."""
    return sum(c / (c + d2) for c in scales)


def _sq_dists(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Dense ||a_i - b_j||^2 via the expansion ||a||^2 + ||b||^2 - 2 a.b (clamped at 0), as eager
    user code writes it (torch.cdist's default also expands for large inputs)."""
    d2 = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2 * a @ b.T
    return d2.clamp_min(0)


def mmd_imq(x: torch.Tensor, y: torch.Tensor, *, scales, estimator: str = "unbiased") -> torch.Tensor:
    """MMD^2 between the samples x (n x K) and y (m x K) with k(a, b) = sum_C C / (C + ||a - b||^2):

        unbiased (U-statistic):  sum_{i!=j} k(x_i, x_j) / (n(n-1)) + sum_{i!=j} k(y_i, y_j) / (m(m-1))
                                 - 2 sum_{i,j} k(x_i, y_j) / (n m)
        biased (V-statistic):    the same with the diagonals included and n^2, m^2 as denominators.

    ``scales`` is the list of C values (already resolved). Dense: three n x m kernel matrices.
    fp16/bf16 inputs are computed in fp32.
    """
    x, y = _upcast(x), _upcast(y)
    # distances do not change under a common translation; centring on the (detached) midpoint of the
    # two means keeps the expansion |a|^2 + |b|^2 - 2 a.b from cancelling away the digits of a large
    # common offset (as the fused kernels do)
    center = (0.5 * (x.mean(0) + y.mean(0))).detach()
    x, y = x - center, y - center
    n, m = x.shape[0], y.shape[0]
    kxx = imq_kernel(_sq_dists(x, x), scales)
    kyy = imq_kernel(_sq_dists(y, y), scales)
    kxy = imq_kernel(_sq_dists(x, y), scales)
    if estimator == "unbiased":
        # k(a, a) = len(scales) exactly; remove the diagonal by value (d2 of a point with itself is 0)
        diag = float(len(scales))
        sxx = (kxx.sum() - n * diag) / (n * (n - 1))
        syy = (kyy.sum() - m * diag) / (m * (m - 1))
    else:
        sxx, syy = kxx.sum() / (n * n), kyy.sum() / (m * m)
    return sxx + syy - 2 * kxy.sum() / (n * m)


def gaussian_kl(mu: torch.Tensor, std: torch.Tensor, *, sigma: float = 1.0) -> torch.Tensor:
    """VIB's KL term, mean over the batch (the first dimension) of KL(N(mu_b, diag std_b^2) || N(0, sigma^2 I)):

        KL_b = 1/2 sum_d [ (std_b^2 + mu_b^2) / sigma^2 - 1 - log(std_b^2 / sigma^2) ]

    summed over every other dimension; a 1-D input is a batch of 1-dimensional codes (a mean, not a sum).
    """
    mu, std = _upcast(mu), _upcast(std)
    s2 = sigma * sigma
    var = std * std
    kl = 0.5 * ((var + mu * mu) / s2 - 1.0 - torch.log(var / s2))
    return kl.reshape(kl.shape[0], -1).sum(1).mean()
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
