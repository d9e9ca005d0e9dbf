"""fastmi's losses, one function each. Docstrings give the formula; ``fastmi.reference`` holds the
same definitions in plain PyTorch.

Score convention (SPEC section 7): ``scores[i, j] = T(x_i, y_j)``, n x m. ``positives`` is None
(the diagonal), an integer vector (one positive column per row, e.g. class labels of logits), or a
boolean n x m mask (e.g. same-label pairs). ``negatives`` is "all", "off_positive" or
"off_diagonal"; None takes the papers' choice:

    positives    infonce         dv / nwj / tuba / js / smile / mine
    None         "all"           "off_positive"  (= off the diagonal)
    index        "all"           "all"           (SLB: every logit is a marginal sample)
    mask         "off_diagonal"  "off_diagonal"  (CLB: every pair i != j)

Every loss returns ``MIResult(loss, mi)``: ``mi`` is the detached estimate (never including the
regularizer), ``loss = -bound + reg_weight * (stat - reg_target)^2`` with the paper's gradient tricks.
The "vector form" ``f(joint=t_joint, marginal=t_marginal)`` takes critic values on separately drawn
joint and marginal pairs, as the authors' code does.

Non-finite scores propagate the way ``torch.logsumexp`` propagates them (NaN in, NaN out); they are
not an error, so that the check costs no device synchronization. A batch with no positive pair
(an all-False mask), or with no negative pair, is skipped: loss 0 with zero gradient, mi NaN; an
InfoNCE anchor with no positive or no negative is left out. fp16/bf16 scores are computed
with fp32 accumulation and give fp32 results on every backend. Second-order gradients need
backend="reference" (the fused backward kernels raise under create_graph=True).
"""
from __future__ import annotations

import math
from typing import Optional

import torch

from . import _backend, _critic_bounds, _scores, _separable, _validate, reference
from ._result import MIResult, NBMIMResult
from .ops import fd_jacobian as _fd_ops
from .ops import mmd_imq as _mmd_imq_ops
from .ops import softmax_stats as _softmax_stats

__all__ = ["infonce", "dv", "mine", "nwj", "tuba", "js", "smile", "infonce_separable", "dv_separable", "nwj_separable",
           "perturb_in_span", "fd_smoothness", "jacobian_smoothness", "nb_mim", "nb_mi", "nb_dms"]


def _scores_of(name, scores, joint, marginal, positives, negatives):
    """Check ``scores`` or turn the vector form into a 1 x (k + l) score row with a positive mask."""
    if joint is None and marginal is None:
        if scores is None:
            raise TypeError(f"{name}: give scores (n x m) or joint= and marginal= critic values")
        return _validate.tensor(scores, "scores", name, ndim=2), positives, negatives
    if scores is not None:
        raise TypeError(f"{name}: give either scores or joint=/marginal=, not both")
    if joint is None or marginal is None:
        raise TypeError(f"{name}: the vector form needs both joint= and marginal=")
    if positives is not None or negatives is not None:
        raise TypeError(f"{name}: positives= and negatives= do not apply to the vector form "
                        "(joint values are the positives, marginal values the negatives)")
    joint = _validate.tensor(joint, "joint", name).reshape(-1)
    marginal = _validate.tensor(marginal, "marginal", name).reshape(-1)
    _validate.same_device(name, joint=joint, marginal=marginal)
    if joint.dtype != marginal.dtype:
        raise TypeError(f"{name}: joint is {joint.dtype} but marginal is {marginal.dtype}")
    row = torch.cat([joint, marginal])[None, :]
    mask = torch.zeros_like(row, dtype=torch.bool)
    mask[0, : joint.numel()] = True
    return row, mask, "off_positive"


def _prepare(name, scores, joint, marginal, positives, negatives, backend, *, infonce=False):
    scores, positives, negatives = _scores_of(name, scores, joint, marginal, positives, negatives)
    layout = _scores.resolve(scores, positives, negatives, infonce=infonce, name=name)
    return scores, positives, negatives, layout, _backend.select(backend, scores, name)


def infonce(scores=None, *, positives=None, negatives=None, reg_weight=0.0, reg_target=0.0, reg_norm="l2",
            backend="auto") -> MIResult:
    """InfoNCE (CPC) lower bound, mean over positive pairs (i, p):

        I = mean_(i,p) [ S_ip - log mean_{j in N_i} exp S_ij ]

    With the diagonal and all entries: I = log n + mean_i [S_ii - logsumexp_j S_ij] <= log n; with
    labels of C-class logits: I = log C - cross_entropy. ReInfoNCE (reg_weight > 0) adds
    reg_weight * (mean_i LME_{j in N_i} S_ij - reg_target)^2, anchors weighted by their positives.
    """
    reg = _validate.regularization(reg_weight, reg_target, reg_norm, "infonce")
    scores, positives, negatives, layout, b = _prepare("infonce", scores, None, None, positives, negatives, backend,
                                                       infonce=True)
    if b == "reference":
        return reference.infonce(scores, positives=positives, negatives=negatives, reg_weight=reg[0],
                                 reg_target=reg[1], reg_norm=reg[2])
    rs = _critic_bounds.RowStats(scores, layout, None, _critic_bounds.need_for("infonce", clip=None), b)
    return _critic_bounds.infonce(rs, reg)


def dv(scores=None, *, joint=None, marginal=None, positives=None, negatives=None, clip=None, reg_weight=0.0,
       reg_target=0.0, reg_norm="l2", backend="auto") -> MIResult:
    """Donsker-Varadhan (the MINE value, no moving average):

        I = mean_P S - log mean_N exp S            (on clamp(S, -clip, clip) when clip is given)

    ReMINE / ReDV (reg_weight > 0): + reg_weight * (log mean_N exp S - reg_target)^2, S unclipped.
    """
    reg = _validate.regularization(reg_weight, reg_target, reg_norm, "dv")
    tau = _validate.clip(clip, "dv")
    scores, positives, negatives, layout, b = _prepare("dv", scores, joint, marginal, positives, negatives, backend)
    if b == "reference":
        return reference.dv(scores, positives=positives, negatives=negatives, clip=tau, reg_weight=reg[0],
                            reg_target=reg[1], reg_norm=reg[2])
    need = _critic_bounds.need_for("dv", clip=tau, reg=bool(reg[0]))
    return _critic_bounds.dv(_critic_bounds.RowStats(scores, layout, tau, need, b), tau is not None, reg)


def mine(scores=None, running_lme=None, *, joint=None, marginal=None, momentum=0.9, update=True, positives=None,
         negatives=None, reg_weight=0.0, reg_target=0.0, reg_norm="l2", backend="auto") -> MIResult:
    """MINE (Belghazi et al.): the DV value, with the gradient's partition function replaced by a
    moving average (bias-corrected gradient):

        loss = -( mean_P S - mean_N exp(S) / sg(ema) ),   reported mi = DV value
        ema  <- momentum * ema + (1 - momentum) * mean_N exp(S)

    ``running_lme`` is a 0-d floating tensor holding log(ema) (NaN = empty, the first batch fills it);
    it is updated in place when ``update`` is true, like ``F.batch_norm``'s running statistics
    (``fastmi.nn.MINE`` owns it and updates it in training mode only).
    """
    reg = _validate.regularization(reg_weight, reg_target, reg_norm, "mine")
    m = _validate.number(momentum, "momentum", "mine", low=0.0, high=1.0, high_strict=True)
    update = _validate.flag(update, "update", "mine")
    if not isinstance(running_lme, torch.Tensor) or running_lme.dim() != 0 or not running_lme.is_floating_point():
        raise TypeError("mine: running_lme must be a 0-d floating tensor (log of the moving average; NaN when empty)")
    scores, positives, negatives, layout, b = _prepare("mine", scores, joint, marginal, positives, negatives, backend)
    _validate.same_device("mine", scores=scores, running_lme=running_lme)
    if b == "reference":
        return reference.mine(scores, running_lme, momentum=m, update=bool(update), positives=positives,
                              negatives=negatives, reg_weight=reg[0], reg_target=reg[1], reg_norm=reg[2])
    rs = _critic_bounds.RowStats(scores, layout, None, _critic_bounds.need_for("mine", clip=None), b,
                                 exp_shift=_critic_bounds.mine_shift(layout, running_lme, m))
    return _critic_bounds.mine(rs, running_lme, m, bool(update), reg)


def nwj(scores=None, *, joint=None, marginal=None, positives=None, negatives=None, clip=None, reg_weight=0.0,
        reg_target=0.0, reg_norm="l2", backend="auto") -> MIResult:
    """NWJ (f-divergence / MINE-f) bound:

        I = mean_P S - mean_N exp(S - 1)           (on clamp(S, -clip, clip) when clip is given)

    ReNWJ: + reg_weight * (log mean_N exp S - reg_target)^2 with S unclipped. The authors' code uses
    clip=10 and reg_target=0; the paper's log-Euclidean form corresponds to reg_target=1.
    """
    reg = _validate.regularization(reg_weight, reg_target, reg_norm, "nwj")
    tau = _validate.clip(clip, "nwj")
    scores, positives, negatives, layout, b = _prepare("nwj", scores, joint, marginal, positives, negatives, backend)
    if b == "reference":
        return reference.nwj(scores, positives=positives, negatives=negatives, clip=tau, reg_weight=reg[0],
                             reg_target=reg[1], reg_norm=reg[2])
    need = _critic_bounds.need_for("nwj", clip=tau, reg=bool(reg[0]))
    rs = _critic_bounds.RowStats(scores, layout, tau, need, b, exp_shift=1.0)
    return _critic_bounds.nwj(rs, tau is not None, reg)


def _log_baseline(log_baseline, scores, name):
    """The log-baseline as a 0-d or length-n tensor. A number is kept in fp32 (fp64 for fp64 scores):
    half-precision scores are computed in fp32, and rounding a to bf16 would move the bound."""
    if not isinstance(log_baseline, torch.Tensor):
        a = _validate.number(log_baseline, "log_baseline", name)
        if math.isinf(a):
            raise ValueError(f"{name}: log_baseline must be finite, got {a}")
        dtype = torch.float64 if scores.dtype == torch.float64 else torch.float32
        return torch.tensor(a, dtype=dtype, device=scores.device)
    a = _validate.tensor(log_baseline, "log_baseline", name)
    _validate.same_device(name, scores=scores, log_baseline=a)
    if a.dim() == 1 and a.shape[0] == 1 and scores.shape[0] != 1:
        return a.reshape(())  # a 1-element parameter (nn.Parameter(torch.zeros(1))) is a scalar baseline
    if a.dim() > 1 or (a.dim() == 1 and a.shape[0] != scores.shape[0]):
        raise ValueError(f"{name}: log_baseline must be a scalar or a vector of length n={scores.shape[0]} "
                         f"(one per row), got shape {tuple(a.shape)}")
    return a


def tuba(scores=None, log_baseline=0.0, *, joint=None, marginal=None, positives=None, negatives=None, clip=None,
         reg_weight=0.0, reg_target=0.0, reg_norm="l2", backend="auto") -> MIResult:
    """TUBA with log-baseline a (a scalar, or a_i per row; differentiable if a tensor):

        I = 1 + mean_P (S_ip - a_i) - mean_N exp(S_ij - a_i)

    a = 0 is the authors' TUBA (baseline 1); a = 1 gives NWJ. ReTUBA adds
    reg_weight * (log mean_N exp S - reg_target)^2 with S unclipped.
    """
    reg = _validate.regularization(reg_weight, reg_target, reg_norm, "tuba")
    tau = _validate.clip(clip, "tuba")
    scores, positives, negatives, layout, b = _prepare("tuba", scores, joint, marginal, positives, negatives, backend)
    a = _log_baseline(log_baseline, scores, "tuba")
    if b == "reference":
        return reference.tuba(scores, a, positives=positives, negatives=negatives, clip=tau, reg_weight=reg[0],
                              reg_target=reg[1], reg_norm=reg[2])
    need = _critic_bounds.need_for("tuba", clip=tau, reg=bool(reg[0]))
    rs = _critic_bounds.RowStats(scores, layout, tau, need, b, exp_shift=a)
    return _critic_bounds.tuba(rs, a, tau is not None, reg)


def js(scores=None, *, joint=None, marginal=None, positives=None, negatives=None, value="nwj", reg_weight=0.0,
       reg_target=0.0, reg_norm="l2", backend="auto") -> MIResult:
    """Jensen-Shannon (f-GAN) training with an NWJ value reported:

        J = mean_P(-softplus(-S)) - mean_N softplus(S)
        loss = -(J + sg(I - J)):  the value of -I, the gradient of -J

        value="nwj" (default; the papers' code, Choi & Lee):   I = NWJ(S)     = mean_P S - mean_N exp(S - 1)
        value="nwj_shifted" (Poole et al., torch-mist):        I = NWJ(S + 1) = mean_P S + 1 - mean_N exp(S)

    The JS-optimal critic is S* = log p(x, y) / (p(x) p(y)), where mean_N exp(S*) = 1: NWJ(S* + 1) is
    then the true MI and NWJ(S*) is lower by exactly 1/e (NWJ's own optimal critic is 1 + S*).
    ReJS: + reg_weight * (mean_N softplus(S) - reg_target)^2 (the benchmarks use reg_target=1).
    """
    reg = _validate.regularization(reg_weight, reg_target, reg_norm, "js")
    if value not in reference.JS_VALUES:
        raise ValueError(f"js: value must be 'nwj' (NWJ of the scores, the papers' code) or 'nwj_shifted' "
                         f"(NWJ of the scores + 1, Poole et al.), got {value!r}")
    scores, positives, negatives, layout, b = _prepare("js", scores, joint, marginal, positives, negatives, backend)
    if b == "reference":
        return reference.js(scores, positives=positives, negatives=negatives, value=value, reg_weight=reg[0],
                            reg_target=reg[1], reg_norm=reg[2])
    need = _critic_bounds.need_for("js", clip=None)
    return _critic_bounds.js(_critic_bounds.RowStats(scores, layout, None, need, b), reg, value)


def smile(scores=None, *, joint=None, marginal=None, clip=5.0, clip_positives=False, positives=None, negatives=None,
          reg_weight=0.0, reg_target=0.0, reg_norm="l2", backend="auto") -> MIResult:
    """SMILE(tau) (Song & Ermon): the clipped DV value with the JS gradient,

        I = mean_P S - log mean_N exp clamp(S, -tau, tau),   loss = -(J + sg(I - J))

    clip_positives=True clips the positive term too (Choi & Lee's benchmarks); clip=None gives the
    DV value with the JS gradient. ReSMILE: + reg_weight * (log mean_N exp S - reg_target)^2, S unclipped.
    """
    reg = _validate.regularization(reg_weight, reg_target, reg_norm, "smile")
    tau = _validate.clip(clip, "smile")
    clip_positives = _validate.flag(clip_positives, "clip_positives", "smile")
    scores, positives, negatives, layout, b = _prepare("smile", scores, joint, marginal, positives, negatives, backend)
    if b == "reference":
        return reference.smile(scores, positives=positives, negatives=negatives, clip=tau,
                               clip_positives=clip_positives, reg_weight=reg[0], reg_target=reg[1], reg_norm=reg[2])
    need = _critic_bounds.need_for("smile", clip=tau, clip_positives=clip_positives, reg=bool(reg[0]))
    rs = _critic_bounds.RowStats(scores, layout, tau, need, b)
    return _critic_bounds.smile(rs, tau is not None, bool(clip_positives), reg)


# --- separable critic: S = x y^T / temperature, never built -------------------------------------
_SEPARABLE_KERNELS = ("triton", "cpu")  # Triton is the GPU path of this family (no CUDA C++ kernel)


def _prepare_separable(name, x, y, temperature, normalize, positives, negatives, reg, backend, *, infonce=False):
    x, y = _separable.check_pair(x, y, name)
    t = _separable.check_temperature(temperature, x, name)
    layout = _separable.layout_of(x, y, positives, negatives, infonce=infonce, name=name)
    if normalize:
        _validate.nonzero_rows(x, "x", name)
        _validate.nonzero_rows(y, "y", name)
    b = _backend.select(backend, x, name, kernels=_SEPARABLE_KERNELS, ext_op="separable_lse")
    return x, y, t, layout, b


def infonce_separable(x, y, *, temperature=1.0, normalize=False, symmetric=False, positives=None, negatives=None,
                      reg_weight=0.0, reg_target=0.0, reg_norm="l2", backend="auto") -> MIResult:
    """InfoNCE with the separable critic S_ij = <x_i, y_j> / temperature (x: n x d, y: m x d), or the
    cosine critic <x_i, y_j> / (|x_i| |y_j| temperature) with normalize=True, computed without S:

        I = mean_i [ S_ip(i) - log mean_{j in N_i} exp S_ij ]

    Equal to ``infonce(x @ y.T / temperature, ...)``; the n x m matrix exists only tile by tile, forward
    and backward, so memory is O((n + m) d). ``positives``: None (the diagonal, n = m) or a column index
    per row. symmetric=True averages the x->y and y->x bounds (CLIP / SimCLR's NT-Xent with y the second
    view; diagonal positives). ``temperature``: a number or a learnable 1-element tensor.
    """
    reg = _validate.regularization(reg_weight, reg_target, reg_norm, "infonce_separable")
    normalize = _validate.flag(normalize, "normalize", "infonce_separable")
    symmetric = _validate.flag(symmetric, "symmetric", "infonce_separable")
    if symmetric and positives is not None:
        raise ValueError("infonce_separable: symmetric=True needs diagonal positives (positives=None)")
    x, y, t, layout, b = _prepare_separable("infonce_separable", x, y, temperature, normalize, positives, negatives,
                                            reg, backend, infonce=True)
    if b == "reference":
        return reference.infonce_separable(x, y, temperature=t, normalize=normalize, symmetric=symmetric,
                                           positives=positives, negatives=negatives, reg_weight=reg[0],
                                           reg_target=reg[1], reg_norm=reg[2])
    rows, cols = _separable.row_stats(x, y, t, normalize, layout, b, symmetric=symmetric)
    out = _critic_bounds.infonce(rows, reg)
    return out if cols is None else _separable.average(out, _critic_bounds.infonce(cols, reg))


def dv_separable(x, y, *, temperature=1.0, normalize=False, positives=None, negatives=None, reg_weight=0.0,
                 reg_target=0.0, reg_norm="l2", backend="auto") -> MIResult:
    """The Donsker-Varadhan bound of the separable critic (see ``infonce_separable``), without S:

        I = mean_P S - log mean_N exp S,    S_ij = <x_i, y_j> / temperature

    Equal to ``dv(x @ y.T / temperature, ...)``; ReDV with reg_weight > 0.
    """
    return _dv_or_nwj_separable("dv_separable", _critic_bounds.dv, x, y, temperature, normalize, positives,
                                negatives, reg_weight, reg_target, reg_norm, backend)


def nwj_separable(x, y, *, temperature=1.0, normalize=False, positives=None, negatives=None, reg_weight=0.0,
                  reg_target=0.0, reg_norm="l2", backend="auto") -> MIResult:
    """The NWJ bound of the separable critic (see ``infonce_separable``), without S:

        I = mean_P S - mean_N exp(S - 1),    S_ij = <x_i, y_j> / temperature

    Equal to ``nwj(x @ y.T / temperature, ...)``; ReNWJ with reg_weight > 0.
    """
    return _dv_or_nwj_separable("nwj_separable", _critic_bounds.nwj, x, y, temperature, normalize, positives,
                                negatives, reg_weight, reg_target, reg_norm, backend)


def _dv_or_nwj_separable(name, bound, x, y, temperature, normalize, positives, negatives, reg_weight, reg_target,
                         reg_norm, backend) -> MIResult:
    """The shared body of dv_separable / nwj_separable: both are functions of the row statistics."""
    reg = _validate.regularization(reg_weight, reg_target, reg_norm, name)
    normalize = _validate.flag(normalize, "normalize", name)
    x, y, t, layout, b = _prepare_separable(name, x, y, temperature, normalize, positives, negatives, reg, backend)
    if b == "reference":
        return getattr(reference, name)(x, y, temperature=t, normalize=normalize, positives=positives,
                                        negatives=negatives, reg_weight=reg[0], reg_target=reg[1], reg_norm=reg[2])
    rows, _ = _separable.row_stats(x, y, t, normalize, layout, b, exp_shift=1.0 if bound is _critic_bounds.nwj else None)
    return bound(rows, False, reg)


# ---------------------------------------------------------------------------------------------
# fd_jacobian: Neural Bayes' smoothness regularizer R_c (SPEC section 1.2)
_FD_KERNELS = ("triton", "cpu")  # Triton is the GPU path of this family (no CUDA C++ kernel)


def _zeta_arg(zeta, B: int, device, name: str, dtype: torch.dtype):
    """zeta as given by the user: a nonzero finite number (kept in ``dtype``, the accumulation type of
    the features: float64 features get a float64 zeta, not one rounded to float32), or a tensor of
    shape [], [1] or [B]."""
    if isinstance(zeta, (int, float)) and not isinstance(zeta, bool):
        z = _validate.number(zeta, "zeta", name)
        if z == 0 or math.isinf(z):
            raise ValueError(f"{name}: zeta must be finite and nonzero (the penalty divides by zeta^2), got {z}")
        return torch.tensor(z, dtype=dtype, device=device)
    z = _validate.tensor(zeta, "zeta", name)
    _validate.same_device(name, x=torch.empty(0, device=device), zeta=z)
    if z.dim() > 1 or (z.dim() == 1 and z.shape[0] not in (1, B)):
        raise ValueError(f"{name}: zeta must be a scalar or have one value per sample (B={B}), got shape {tuple(z.shape)}")
    if z.device.type == "cpu" and not torch.compiler.is_compiling():  # no device sync for this check
        if not bool(torch.isfinite(z).all()) or bool((z == 0).any()):
            raise ValueError(f"{name}: zeta must be finite and nonzero (the penalty divides by zeta^2)")
    return z


_GENERATOR_UNDER_COMPILE = (
    "{name}: generator= cannot be traced by torch.compile (a torch.Generator is not a graph input). "
    "Inside a compiled function leave generator=None: the draws then come from torch's default "
    "generator, so torch.manual_seed(s) before the call makes them reproducible (compiled code draws "
    "other values than eager code for the same seed). Or draw outside the compiled function: {alt}")
_GENERATOR_ALTERNATIVE = {
    "perturb_in_span": "zeta=sigma * torch.randn((), generator=g) keeps zeta reproducible",
    "mmd_imq_prior": "p = sigma * torch.randn(n, K, generator=g), then F.mmd_imq(z, p) inside",
}


def _check_generator(generator, name: str) -> None:
    if generator is None:
        return
    if not isinstance(generator, torch.Generator):
        raise TypeError(f"{name}: generator must be a torch.Generator or None, got {type(generator).__name__}")
    if torch.compiler.is_compiling():
        raise RuntimeError(_GENERATOR_UNDER_COMPILE.format(name=name, alt=_GENERATOR_ALTERNATIVE[name]))


def perturb_in_span(x, *, zeta=None, zeta_std=0.1, noise="bernoulli", center=True, per_sample_zeta=False,
                    generator=None, backend="auto"):
    """Perturb each sample along a random unit direction in the span of the (centred) batch, no gradient:

        Xc_j = x_j - mean_k x_k  (center=True; x_j otherwise),    D_i = sum_j c_ij Xc_j
        delta_i = D_i / ||D_i||,    x_tilde_i = x_i + zeta_i delta_i,    zeta ~ zeta_std * N(0, 1)

    noise="bernoulli": c_ij ~ Bernoulli(1/2) in {0,1}, random subset sums of the centred batch (the
    authors' code); noise="gaussian": c_ij ~ N(0, 1) (the paper, Eq 35-36). One zeta per batch (the
    code), or per sample with per_sample_zeta=True, unless ``zeta`` is given (a number or a tensor of
    shape [], [1] or [B]). x is B x (any shape), B >= 2. Returns (x_tilde, zeta): x_tilde like x
    (detached), zeta a tensor ([] or [B]) to pass to ``fd_smoothness``.

    A direction at rounding level (all samples identical, or a subset sum that cancels, e.g. all
    c_ij = 1 when centring), ||D_i|| <= 8 sqrt(B) eps sum_j |c_ij| ||Xc_j||, is zero: that sample is
    left unperturbed and adds 0 to the penalty.

    Randomness: zeta, then a 64-bit seed, are drawn from ``generator`` (or the default one); the fused
    backends make the c_ij from that seed with a counter-based Philox stream (no B x B matrix), the
    same stream on the C++ and Triton backends. The reference backend draws the B x B matrix with
    torch's generator: its x_tilde has the same distribution (and the same zeta), not the same values.
    Under torch.compile(fullgraph=True) ``generator`` must be None (a torch.Generator cannot be traced;
    a RuntimeError says so): seed torch's default generator with torch.manual_seed instead, which
    makes the compiled draws reproducible (though not equal to eager ones), or pass ``zeta``.
    """
    name = "perturb_in_span"
    x = _validate.tensor(x, "x", name)
    if x.dim() < 2:
        raise ValueError(f"{name}: x must be B x (features...), at least 2-D, got shape {tuple(x.shape)}")
    B = x.shape[0]
    if B < 2:
        raise ValueError(f"{name}: x needs B >= 2 samples (the perturbation lies in the span of the batch), got B={B}")
    if noise not in _fd_ops.NOISE:
        raise ValueError(f"{name}: noise must be 'bernoulli' (the authors' code) or 'gaussian' (the paper), got {noise!r}")
    center = _validate.flag(center, "center", name)
    per_sample_zeta = _validate.flag(per_sample_zeta, "per_sample_zeta", name)
    _check_generator(generator, name)
    if zeta is None:
        std = _validate.number(zeta_std, "zeta_std", name, low=0.0, strict=True)
        if math.isinf(std):
            raise ValueError(f"{name}: zeta_std must be finite")
    else:
        zeta = _zeta_arg(zeta, B, x.device, name, _fd_ops.acc_dtype(x.dtype))
    b = _backend.select(backend, x, name, kernels=_FD_KERNELS, ext_op="fd_perturb")
    if b == "reference":
        return reference.perturb_in_span(x, zeta=zeta, zeta_std=zeta_std, noise=noise, center=center,
                                         per_sample_zeta=per_sample_zeta, generator=generator)
    acc = _fd_ops.acc_dtype(x.dtype)
    if zeta is None:
        zeta = reference.draw_zeta(std, B if per_sample_zeta else 1, generator, x.device).to(x.device, acc)
        zeta = zeta if per_sample_zeta else zeta.reshape(())
    dev = generator.device if generator is not None else x.device
    seed = torch.randint(-(2**63), 2**63 - 1, (1,), generator=generator, device=dev, dtype=torch.int64)
    seed = seed.to(x.device if b == "triton" else "cpu")
    x_tilde = _fd_ops.perturb(x.reshape(B, -1), seed, zeta.detach().reshape(-1), noise, center, b)
    return x_tilde.reshape(x.shape), zeta


def fd_smoothness(f_clean, f_perturbed, zeta, *, pool=None, backend="auto"):
    """Finite-difference Jacobian smoothness penalty R_c (Neural Bayes, Eq 4):

        R_c = (1/B) sum_b || f_clean_b - f_perturbed_b ||^2 / zeta_b^2

    (||x_tilde_b - x_b|| = |zeta_b| since the directions have unit norm). zeta: a nonzero number or
    a tensor of shape [], [1] or [B] (differentiable). pool="global" first averages a B x C x H x W
    (or B x C x ...) state over its positions, as the authors do with the last CNN state. Gradients
    flow into both f_clean and f_perturbed. Result: fp32 (fp64 for float64 inputs).
    A zero zeta on a CUDA device is not checked (that would synchronize): it gives inf.
    """
    name = "fd_smoothness"
    a = _validate.tensor(f_clean, "f_clean", name)
    p = _validate.tensor(f_perturbed, "f_perturbed", name)
    _validate.same_device(name, f_clean=a, f_perturbed=p)
    if a.shape != p.shape:
        raise ValueError(f"{name}: f_clean has shape {tuple(a.shape)} but f_perturbed has shape {tuple(p.shape)}")
    if a.dtype != p.dtype:
        raise TypeError(f"{name}: f_clean is {a.dtype} but f_perturbed is {p.dtype}")
    if a.dim() < 1:
        raise ValueError(f"{name}: f_clean must have a batch dimension")
    if pool not in (None, "global"):
        raise ValueError(f"{name}: pool must be None or 'global', got {pool!r}")
    if pool == "global" and a.dim() < 3:
        raise ValueError(f"{name}: pool='global' needs a B x C x H x W (or B x C x ...) state, got shape {tuple(a.shape)}")
    z = _zeta_arg(zeta, a.shape[0], a.device, name, _fd_ops.acc_dtype(a.dtype))
    b = _backend.select(backend, a, name, kernels=_FD_KERNELS, ext_op="fd_sqdiff")
    if b == "reference":
        return reference.fd_smoothness(a, p, z, pool=pool)
    hw = math.prod(a.shape[2:]) if pool == "global" else 1
    B = a.shape[0]
    s = _fd_ops.sqdiff(a.reshape(B, -1), p.reshape(B, -1), hw, b)
    z = z.to(s.dtype)
    return (s / (z * z)).mean()


def jacobian_smoothness(fn, x, *, pool=None, backend="auto", **perturb_args):
    """R_c in one call: x_tilde, zeta = perturb_in_span(x, **perturb_args); then
    fd_smoothness(fn(x), fn(x_tilde), zeta, pool=pool). fn runs twice (BatchNorm in training mode
    uses each batch's own statistics, as in the authors' code); both passes receive gradients."""
    if not callable(fn):
        raise TypeError(f"jacobian_smoothness: fn must be callable (a model or function), got {type(fn).__name__}")
    x_tilde, zeta = perturb_in_span(x, backend=backend, **perturb_args)
    return fd_smoothness(fn(x), fn(x_tilde), zeta, pool=pool, backend=backend)
# --- mmd_imq family (SPEC section 2: Variational InfoMax's MMD prior term, VIB's KL) --------------

__all__ += ["mmd_imq", "mmd_imq_prior", "gaussian_kl", "WAE_SCALES"]

WAE_SCALES = (0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0)
"""The multi-scale set of WAE (tolstikhin/wae): pass ``scales=WAE_SCALES, scale=2 * K * sigma**2``."""


def _imq_scales(scale, scales, K: int, name: str) -> list:
    base = float(K) if scale is None else _validate.number(scale, "scale", name, low=0.0, strict=True)
    if base == float("inf"):
        raise ValueError(f"{name}: scale must be finite, got inf")
    if scales is None:
        return [base]
    if isinstance(scales, torch.Tensor):
        scales = scales.tolist()
    try:
        rel = [_validate.number(r, "scales", name, low=0.0, strict=True) for r in scales]
    except TypeError:
        raise TypeError(f"{name}: scales must be a sequence of positive numbers, got {scales!r}") from None
    if not rel or any(r == float("inf") for r in rel):
        raise ValueError(f"{name}: scales must be a non-empty sequence of positive finite numbers, got {scales!r}")
    return [base * r for r in rel]


def mmd_imq(x, y, *, scale=None, scales=None, estimator="unbiased", backend="auto") -> torch.Tensor:
    """MMD^2 between the samples x (n x K) and y (m x K) with the inverse-multiquadric kernel

        k(a, b) = sum_{C in Cs} C / (C + ||a - b||^2),   Cs = [scale * r for r in scales] (or [scale])

        unbiased (U-statistic, the WAE estimator):
            MMD^2 = sum_{i!=j} k(x_i, x_j) / (n(n-1)) + sum_{i!=j} k(y_i, y_j) / (m(m-1))
                    - 2 sum_{i,j} k(x_i, y_j) / (n m)
        biased (V-statistic): diagonals included, divided by n^2 and m^2.

    ``scale`` is C (default K, the VIM paper's choice; WAE uses 2 K sigma^2); ``scales`` are
    multipliers of it whose kernels are summed (e.g. ``WAE_SCALES``). Returns a 0-d tensor
    (fp32 for fp16/bf16 inputs). The fused kernels never form an n x m matrix.
    """
    name = "mmd_imq"
    x = _validate.tensor(x, "x", name, ndim=2)
    y = _validate.tensor(y, "y", name, ndim=2)
    _validate.same_device(name, x=x, y=y)
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"{name}: x and y must have the same feature dimension K, got x {tuple(x.shape)} "
                         f"and y {tuple(y.shape)}")
    if x.dtype != y.dtype:
        raise TypeError(f"{name}: x is {x.dtype} but y is {y.dtype}")
    if estimator not in ("unbiased", "biased"):
        raise ValueError(f"{name}: estimator must be 'unbiased' or 'biased', got {estimator!r}")
    unbiased = estimator == "unbiased"
    if unbiased:
        for arg, t in (("x", x), ("y", y)):
            if t.shape[0] < 2:
                raise ValueError(f"{name}: the unbiased estimator needs at least 2 rows in {arg}, got {t.shape[0]} "
                                 "(use estimator='biased')")
    cs = _imq_scales(scale, scales, x.shape[1], name)
    _validate.finite(x, "x", name)
    _validate.finite(y, "y", name)
    b = _backend.select(backend, x, name)
    if b in ("cpu", "cuda") and not _mmd_imq_ops.EXT_OP:
        why = "the loaded fastmi._C has no mmd_imq kernels (rebuild: pip install --no-build-isolation -e .)"
        if backend != "auto":
            raise RuntimeError(f"{name}: backend={backend!r} is not available: {why}")
        b = _backend._fallback(why)
    if b == "reference":
        return reference.mmd_imq(x, y, scales=cs, estimator=estimator)
    return _mmd_imq_ops.mmd_sq(x, y, cs, unbiased, b)


def mmd_imq_prior(z, *, sigma=1.0, n_prior=None, scale=None, scales=None, estimator="unbiased", generator=None,
                  backend="auto") -> torch.Tensor:
    """Variational InfoMax's prior term: MMD^2 (``mmd_imq``) between the codes z (n x K) and a fresh
    sample p of the prior N(0, sigma^2 I), p = sigma * randn(n_prior, K) (n_prior defaults to n):

        MMD^2(z, p) with k(a, b) = C / (C + ||a - b||^2), C = scale (default K, independent of sigma)

    ``generator`` (a torch.Generator on z's device) makes the draw reproducible in eager mode. It
    cannot be traced by torch.compile(fullgraph=True): there, leave it None and seed torch's default
    generator (torch.manual_seed), or draw p outside the compiled function with the generator and call
    ``mmd_imq(z, p)`` inside (a RuntimeError says so).
    """
    name = "mmd_imq_prior"
    z = _validate.tensor(z, "z", name, ndim=2)
    s = _validate.number(sigma, "sigma", name, low=0.0, strict=True)
    if s == float("inf"):
        raise ValueError(f"{name}: sigma must be finite")
    if n_prior is None:
        n_prior = z.shape[0]
    if isinstance(n_prior, bool) or not isinstance(n_prior, int) or n_prior < 1:
        raise ValueError(f"{name}: n_prior must be a positive int, got {n_prior!r}")
    _check_generator(generator, name)
    dtype = z.dtype if z.dtype in (torch.float32, torch.float64) else torch.float32
    p = torch.randn(n_prior, z.shape[1], generator=generator, device=z.device, dtype=dtype) * s
    return mmd_imq(z if z.dtype == dtype else z.float(), p, scale=scale, scales=scales, estimator=estimator,
                   backend=backend)


def gaussian_kl(mu, std, *, sigma=1.0) -> torch.Tensor:
    """VIB's KL term (Alemi et al.), mean over the batch (the first dimension):

        KL(N(mu, diag std^2) || N(0, sigma^2 I)) = 1/2 sum_d [ (std^2 + mu^2) / sigma^2 - 1 - log(std^2 / sigma^2) ]

    mu and std have the same shape (B x K, or B x ...: summed over all but the first dimension; a 1-D
    input is B one-dimensional codes); std must be > 0. Elementwise, so plain
    PyTorch (``reference.gaussian_kl``) on every backend; fp16/bf16 are computed in fp32.
    """
    name = "gaussian_kl"
    mu = _validate.tensor(mu, "mu", name)
    std = _validate.tensor(std, "std", name)
    _validate.same_device(name, mu=mu, std=std)
    if mu.shape != std.shape:
        raise ValueError(f"{name}: mu and std must have the same shape, got {tuple(mu.shape)} and {tuple(std.shape)}")
    s = _validate.number(sigma, "sigma", name, low=0.0, strict=True)
    if s == float("inf"):
        raise ValueError(f"{name}: sigma must be finite")
    _validate.finite(mu, "mu", name)
    _validate.finite(std, "std", name)
    if not torch.compiler.is_compiling() and not bool((std > 0).all()):
        raise ValueError(f"{name}: std must be > 0 everywhere (it is a standard deviation)")
    return reference.gaussian_kl(mu, std, sigma=s)
# --- Neural Bayes (paper 000; SPEC 1.1, 1.3, 1.4) ----------------------------------------------


def _nb_state(x, arg: str, name: str) -> torch.Tensor:
    x = _validate.tensor(x, arg, name)
    if x.dim() not in (2, 4):
        raise ValueError(f"{name}: {arg} must be B x C or B x C x H x W (pre-softmax), got shape {tuple(x.shape)}")
    if x.shape[1] < 2:
        raise ValueError(f"{name}: {arg} needs C >= 2 channels for a softmax, got C={x.shape[1]}")
    return x


def _nb_backend(backend: str, x: torch.Tensor, name: str) -> str:
    b = _backend.select(backend, x, name)
    if b == "cuda":  # this family's GPU path is Triton only
        if backend == "cuda":
            raise RuntimeError(f"{name}: backend='cuda' is not available for this loss (its GPU kernel is Triton; "
                               "use backend='triton' or 'auto')")
        b = _backend._fallback("softmax_stats has no CUDA C++ kernel and Triton is not available")
    if b == "cpu" and not _softmax_stats.CPU_KERNEL:
        b = _backend._fallback("the loaded fastmi._C has no softmax_stats kernel (rebuild: pip install -e .)")
    return b


def _check_finite(values: torch.Tensor, what: str, name: str) -> None:
    """NaN/+inf in a state makes its entropy sum non-finite; checked once per call (one sync), not
    under torch.compile (a data-dependent branch)."""
    if torch.compiler.is_compiling():
        return
    if not bool(torch.isfinite(values).all()):
        raise ValueError(f"{name}: {what} has non-finite values (NaN or +inf)")


def _nb_state_terms(h: torch.Tensor, k: int, prior: str, eps: float, b: str):
    """(ent, R_p) per scale of one state with a fused backend: one kernel call for both scales."""
    x = h if h.dim() == 4 else h[:, :, None, None]
    B, C, H, W = x.shape
    ent_sum, marg, marg_pool, _ = _softmax_stats.softmax_stats(x, k, eps, b)
    ents = [-ent_sum[0] / (B * H * W)]
    priors = [reference.nb_prior(marg / B, prior, eps)]
    if k:
        Q = marg_pool.shape[1]
        ents.append(-ent_sum[1] / (B * Q))
        priors.append(reference.nb_prior(marg_pool / B, prior, eps))
    return ents, priors


def nb_mim(states, *, alpha=2.0, prior="v2", pool=2, eps=1e-7, backend="auto") -> NBMIMResult:
    """Neural Bayes MIM loss (Arpit et al., SPEC 1.3-1.4) over hidden states and their pooled scales.

    ``states``: a list of pre-softmax states, B x C x H x W or B x C. Scales of a 4-D state: the state
    and its average pool with kernel = stride = min(pool, H, W), floor mode (pool=0: no pooled scale).
    Per scale z, with S = softmax_c(z), E = mean_b S (per channel and position, with gradient):

        ent = -(1/(B*pos)) sum_{b,pos} sum_c S log(sg(S) + eps)
        v2:  R_p = mean_pos sum_c -[ (1/C) log E + (1 - 1/C) log(1 - E) ]
        v1:  R_p = mean_pos sum_c E log sg(E)
        loss = (1/N_scales) sum_scales [ ent + (1 + alpha) R_p ]

    E is clamped to [eps, 1 - eps] inside the logs (a collapsed unit: finite loss, no NaN). Returns
    NBMIMResult(loss, entropy, prior) with the detached per-scale terms. NaN/+inf in a state raise
    ValueError (checked from the kernel's entropy sums; skipped under torch.compile).
    """
    name = "nb_mim"
    if isinstance(states, torch.Tensor):
        states = [states]
    if not isinstance(states, (list, tuple)) or not states:
        raise TypeError(f"{name}: states must be a non-empty list of tensors")
    states = [_nb_state(h, f"states[{i}]", name) for i, h in enumerate(states)]
    _validate.same_device(name, **{f"states[{i}]": h for i, h in enumerate(states)})
    a = _validate.number(alpha, "alpha", name)
    if math.isinf(a):
        raise ValueError(f"{name}: alpha must be finite")
    if prior not in ("v1", "v2"):
        raise ValueError(f"{name}: prior must be 'v2' (cross-entropy to the uniform prior) or 'v1', got {prior!r}")
    if pool is None:
        pool = 0
    if isinstance(pool, bool) or not isinstance(pool, int) or pool < 0:
        raise ValueError(f"{name}: pool must be an int >= 0 (0: no pooled scale), got {pool!r}")
    e = _validate.number(eps, "eps", name, low=0.0, strict=True, high=0.5, high_strict=True)
    b = _nb_backend(backend, states[0], name)
    ents, priors, owner = [], [], []
    for i, h in enumerate(states):
        k = min(pool, h.shape[2], h.shape[3]) if (h.dim() == 4 and pool) else 0
        if b == "reference":
            terms = [reference.nb_scale_terms(z, prior, e) for z in reference.nb_scales(h, pool)]
            es, rs = [t[0] for t in terms], [t[1] for t in terms]
        else:
            es, rs = _nb_state_terms(h, k, prior, e, b)
        ents += es
        priors += rs
        owner += [i] * len(es)
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
    h = _nb_state(state, "state", name)
    b = _nb_backend(backend, h, name)
    with torch.no_grad():
        if b == "reference":
            mi = reference.nb_mi(h)
        else:
            x = h if h.dim() == 4 else h[:, :, None, None]
            B = x.shape[0]
            ent_sum, marg, _, _ = _softmax_stats.softmax_stats(x, 0, 0.0, b)
            E = marg / B
            marg_h = -torch.special.xlogy(E, E).sum(0).mean()
            mi = marg_h + ent_sum[0] / (B * marg.shape[1])
    _check_finite(mi[None], "state", name)
    return mi


def nb_dms(logits, *, eps=1e-7, scale="code", backend="auto") -> torch.Tensor:
    """Neural Bayes disjoint-manifold-separation loss (SPEC 1.1; paper Eq 5, K-partition Appendix B Eq 23),
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
    x = _validate.tensor(logits, "logits", name, ndim=2)
    if x.shape[1] < 2:
        raise ValueError(f"{name}: logits need K >= 2 outputs (use two softmax units for a binary partition), "
                         f"got K={x.shape[1]}")
    e = _validate.number(eps, "eps", name, low=0.0, strict=True, high=0.5, high_strict=True)
    if scale not in ("code", "paper"):
        raise ValueError(f"{name}: scale must be 'code' (the authors' code) or 'paper' (Eq 5, half of it), "
                         f"got {scale!r}")
    _backend.validate(backend, x, name)   # composed of torch ops on every backend: no fused kernel to pick
    loss = reference.nb_dms(x, eps=e, scale=scale)
    _check_finite(loss.detach()[None], "logits", name)
    return loss
