"""The critic bounds, as one declarative table: bound -> the row statistics it needs -> its formula.

Every bound is a function of O(n) row statistics of the score matrix S (``stats.RowStats``), so the
n x m matrix is read once forward and once backward by whichever backend computes the statistics.
The public functions (``fastmi.functional.<name>``), the ``fastmi.nn`` modules, the requested
statistics, and the tests' and benchmarks' case lists are all derived from ``BOUNDS``: adding a
bound is one ``Bound(...)`` entry here plus its formula.

A bound's loss is ``-straight_through(surrogate, value) + reg_weight * d(stat, reg_target)``: the
value is what ``mi`` reports, the surrogate carries the gradient the paper trains with (the value
itself when None), and ``stat`` is the statistic the regularized version (Choi & Lee's Re-) pulls
towards ``reg_target`` (d: squared difference, or absolute with reg_norm="l1").
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import torch

from .._core import validate
from . import interpolated
from .contract import CLSE, CPOS, LSE, NEGATIVES, POS, PSP, SP
from .stats import RowStats


@dataclass(frozen=True)
class Option:
    """A keyword option of a bound: its default and the check that turns a user's value into what
    the formula reads (raising TypeError/ValueError that names the option)."""

    name: str
    default: Any
    check: Callable[[Any, str], Any]
    doc: str = ""
    cases: tuple = ()  # further values the derived test cases try (clip and flags are varied anyway)


@dataclass(frozen=True)
class Input:
    """A positional input after ``scores`` (a baseline, a moving-average state), per call."""

    name: str
    default: Any
    check: Callable[[Any, torch.Tensor, str], Any]
    doc: str = ""
    per_row: bool = False  # a scalar or one value per row (a baseline), differentiable


@dataclass(frozen=True)
class Bound:
    name: str
    doc: str  # the formula, as the public function's docstring
    value: Callable[[RowStats, dict], torch.Tensor]
    needs: Callable[[dict], tuple]  # the statistics the formulas read, for these options
    surrogate: Optional[Callable[[RowStats, dict], torch.Tensor]] = None
    reg_stat: Callable[[RowStats, dict], torch.Tensor] = field(default=lambda rs, o: rs.lme_neg())
    reg_needs: tuple = (LSE,)
    options: tuple = ()
    inputs: tuple = ()
    infonce_negatives: bool = False  # the default negatives of InfoNCE (the table in layout.py)
    vector_form: bool = True  # accepts joint= / marginal= critic values
    skip_rule: str = "batch"  # "anchors": InfoNCE leaves out rows without a positive or a negative
    separable: bool = False  # also as fastmi.functional.<name>_separable (needs at most LSE and POS)
    module: str = ""  # the fastmi.nn class name
    module_state: Optional[tuple] = None  # (input the module owns as a buffer, flag set to self.training): MINE
    positive_kinds: tuple = ("diag", "index", "mask")  # the layouts of positives the formula is defined for
    negatives_allowed: tuple = NEGATIVES  # the sets of negatives the formula is defined for
    sampled_negatives: bool = True  # accepts k negatives per anchor (negatives=k or an n x k index, sampled.py)
    upper: bool = False  # an upper bound on MI: loss = +value (minimized to reduce MI) instead of -value
    columns: bool = False  # the statistics run over the columns of the input (it is transposed first)
    # a per-row vector the formula reads as ``rs.second_pass``, computed from the scores by a second pass
    # (scores, options, tiled) -> [n]; tiled=True on the fused backends: O(n) memory beyond the scores
    second_pass: Optional[Callable[[torch.Tensor, dict, bool], torch.Tensor]] = None
    # the shift a of the bound's exponential term mean_N exp(S - a), read by RowStats.exp_mean(): a
    # number, a tensor, or a function of the detached statistics; (opts, layout, needed) -> a
    exp_shift: Optional[Callable[[dict, Any, tuple], Any]] = None

    def exp_slot(self, opts: dict) -> int:
        """The statistic the exponential term is taken on: CLSE when clipped, else LSE."""
        return CLSE if opts.get("clip") is not None else LSE

    def stats_needed(self, opts: dict, regularized: bool) -> tuple:
        """What the formulas read, the regularizer's statistic, and the exponential term's slot."""
        need = set(self.needs(opts)) | (set(self.reg_needs) if regularized else set())
        if self.exp_shift is not None:
            need.add(self.exp_slot(opts))
        return tuple(sorted(need))


# --- option checks --------------------------------------------------------------------------------
def _clip(value, name):
    return validate.clip(value, name)


def _flag(arg):
    return lambda value, name: validate.flag(value, arg, name)


def _momentum(value, name):
    return validate.number(value, "momentum", name, low=0.0, high=1.0, high_strict=True)


def _alpha(value, name):
    return validate.number(value, "alpha", name, low=0.0, high=1.0)


def _per_row(arg: str):
    """The check of an input that is one number per row of the scores (a baseline): a finite number,
    or a tensor of shape [], [1] or [n] (differentiable). A number is kept in fp32 (fp64 for fp64
    scores): half-precision scores are computed in fp32, and rounding it to bf16 would move the bound."""

    def check(value, scores: torch.Tensor, name: str):
        if not isinstance(value, torch.Tensor):
            a = validate.number(value, arg, name)
            if math.isinf(a):
                raise ValueError(f"{name}: {arg} must be finite, got {a}")
            dtype = torch.float64 if scores.dtype == torch.float64 else torch.float32
            return torch.tensor(a, dtype=dtype, device=scores.device)
        a = validate.tensor(value, arg, name)
        validate.same_device(name, **{"scores": scores, arg: a})
        if a.dim() == 1 and a.shape[0] == 1 and scores.shape[0] != 1:
            return a.reshape(())  # a 1-element parameter (nn.Parameter(torch.zeros(1))) is a scalar
        if a.dim() > 1 or (a.dim() == 1 and a.shape[0] != scores.shape[0]):
            raise ValueError(f"{name}: {arg} must be a scalar or a vector of length n={scores.shape[0]} "
                             f"(one per row), got shape {tuple(a.shape)}")
        return a

    return check


def _running_lme(running_lme, scores: torch.Tensor, name: str):
    if not isinstance(running_lme, torch.Tensor) or running_lme.dim() != 0 or not running_lme.is_floating_point():
        raise TypeError(f"{name}: running_lme must be a 0-d floating tensor (log of the moving average; NaN when empty)")
    validate.same_device(name, scores=scores, running_lme=running_lme)
    return running_lme


CLIP = Option("clip", None, _clip, "clamp S to [-clip, clip] in the bound's value (None: no clipping)")


def _clipped(o) -> bool:
    return o.get("clip") is not None


def _pos_neg(o) -> tuple:
    return (CPOS, CLSE) if _clipped(o) else (POS, LSE)


def _pos(o) -> tuple:
    return (CPOS,) if _clipped(o) else (POS,)


# --- formulas ------------------------------------------------------------------------------------
def infonce_value(rs: RowStats, o) -> torch.Tensor:
    pos = torch.where(rs.anchor, rs[POS], torch.zeros_like(rs[POS])).sum() / rs._pos_div
    return pos - rs.anchor_mean(rs.anchor_lme())


def infonce_stat(rs: RowStats, o) -> torch.Tensor:
    return rs.anchor_mean(rs.anchor_lme())


def dv_value(rs: RowStats, o) -> torch.Tensor:
    return rs.pos_mean(_clipped(o)) - rs.lme_neg(_clipped(o))


def nwj_value(rs: RowStats, o) -> torch.Tensor:
    """exp_shift 1."""
    return rs.pos_mean(_clipped(o)) - rs.exp_mean()


def tuba_value(rs: RowStats, o) -> torch.Tensor:
    """exp_shift a = log_baseline."""
    a = o["log_baseline"].to(rs.dtype).expand(rs.pos_count.shape[0])
    return 1 + rs.pos_shifted_mean(a, _clipped(o)) - rs.exp_mean()


def flo_value(rs: RowStats, o) -> torch.Tensor:
    """1 - mean over anchors of [u_i + exp(-u_i) mean_{j in N_i} exp(S_ij - S_ip(i))]."""
    u = o["u"].to(rs.dtype).expand(rs.pos_count.shape[0])
    ratio = torch.where(rs.anchor, rs.anchor_lme() - rs[POS] - u, torch.full_like(u, -math.inf))
    terms = torch.where(rs.anchor, u, torch.zeros_like(u)) + torch.exp(ratio)
    return 1 - terms.sum() / rs._pos_div


def alpha_tuba_value(rs: RowStats, o) -> torch.Tensor:
    """1 + mean_i S_ii - sum_i Q_i / |N| - mean_N exp(S_ij - B_ii): the joint term's baselines B_ij (summed
    per row into Q_i by the second pass) need every entry of the row; the marginal term's B_ii only the
    row's off-diagonal log-sum-exp."""
    alpha = o["alpha"]
    a = o["log_baseline"].to(rs.dtype).expand(rs.pos_count.shape[0])
    loo_mean = rs[LSE] - torch.log(rs.neg_count.clamp_min(1))  # log mean_{j != i} e^{S_ij}
    if alpha == 0:
        b_diag, q = a, a * rs.neg_count
    elif alpha == 1:
        b_diag, q = loo_mean, rs.second_pass
    else:
        b_diag, q = torch.logaddexp(math.log(alpha) + loo_mean, math.log1p(-alpha) + a), rs.second_pass
    return 1 + rs.pos_mean() - q.sum() / rs._neg_div - rs.neg_exp_mean(b_diag)


def alpha_tuba_second_pass(scores: torch.Tensor, o: dict, tiled: bool):
    if o["alpha"] == 0:
        return None  # B_ij = a_i: TUBA, no second pass
    a = o["log_baseline"].to(scores.dtype if scores.dtype == torch.float64 else torch.float32)
    return interpolated.baseline_row_sums(scores, a.expand(scores.shape[0]), o["alpha"], tiled=tiled)
JS_VALUES = ("nwj", "nwj_shifted")


def _js_value_option(value, name):
    if not isinstance(value, str) or value not in JS_VALUES:
        raise ValueError(f"{name}: value must be 'nwj' (NWJ of the scores, the papers' code) or 'nwj_shifted' "
                         f"(NWJ of the scores + 1, Poole et al.), got {value!r}")
    return value


def js_value(rs: RowStats, o) -> torch.Tensor:
    """NWJ of the same scores; value="nwj_shifted": NWJ of S + 1 (Poole et al.'s I_JS). A value only
    (the gradient is the surrogate's), so no exp_shift."""
    if o["value"] == "nwj_shifted":
        return 1 + rs.pos_mean() - rs.neg_exp_mean(0.0)
    return rs.pos_mean() - rs.neg_exp_mean(1.0)


def js_surrogate(rs: RowStats, o) -> torch.Tensor:
    return rs.js_surrogate()


def smile_value(rs: RowStats, o) -> torch.Tensor:
    return rs.pos_mean(_clipped(o) and o["clip_positives"]) - rs.lme_neg(_clipped(o))


def _mine_averages(running_lme: torch.Tensor, momentum: float, batch_lme: torch.Tensor, skip: torch.Tensor):
    """(the updated moving average, the one the surrogate divides by), both log E_N e^S (detached);
    a skipped batch (no positive or negative pair) does not move the average, and an empty average
    divides by the batch's own value."""
    ema = mine_running_update(running_lme, torch.where(skip, math.nan, batch_lme), momentum)
    return ema, torch.where(torch.isnan(ema), batch_lme.detach().to(ema.dtype), ema)


def mine_shift(o, layout, needed):
    """MINE's exp_shift: the surrogate's average, a function of this batch's statistics."""
    def shift(st: torch.Tensor) -> torch.Tensor:
        rs = RowStats({k: st[k] for k in needed}, layout)
        return _mine_averages(o["running_lme"], o["momentum"], rs.lme_neg(), rs.skip)[1]

    return shift


def mine_surrogate(rs: RowStats, o) -> torch.Tensor:
    """mean_P S - E_N[e^S] / sg(ema), ema the moving average of E_N[e^S] (kept as log in running_lme,
    updated in place when o["update"]); E_N[e^S] / ema = rs.exp_mean() (exp_shift mine_shift)."""
    running = o["running_lme"]
    with torch.no_grad():
        ema, _ = _mine_averages(running, o["momentum"], rs.lme_neg(), rs.skip)
        if o["update"]:
            running.copy_(ema)
    return rs.pos_mean() - rs.exp_mean()


def mine_running_update(running_lme: torch.Tensor, batch_lme: torch.Tensor, momentum: float) -> torch.Tensor:
    """Moving average of E_N[e^S] in log space: log(momentum * e^running + (1 - momentum) * e^batch);
    an empty (NaN) running value starts at the batch value. A batch value of NaN or +inf (non-finite
    scores) leaves the average as it was: one bad batch neither resets nor poisons it. (-inf, every
    negative score -inf, is a real E_N[e^S] = 0 and is averaged in.)"""
    batch_lme = batch_lme.detach().to(running_lme.dtype)
    if momentum > 0:
        mixed = torch.logaddexp(running_lme + math.log(momentum), batch_lme + math.log1p(-momentum))
    else:
        mixed = batch_lme
    updated = torch.where(torch.isnan(running_lme), batch_lme, mixed)
    usable = ~(torch.isnan(batch_lme) | torch.isposinf(batch_lme))
    return torch.where(usable, updated, running_lme)


# --- the table -----------------------------------------------------------------------------------
_REG_DOC = "mean_i LME_{j in N_i} S_ij"

BOUNDS = {b.name: b for b in [
    Bound(
        "infonce", module="InfoNCE", infonce_negatives=True, vector_form=False, skip_rule="anchors", separable=True,
        doc="""InfoNCE (CPC) lower bound, mean over positive pairs (i, p):

        I = mean_(i,p) [ S_ip - log mean_{j in N_i} exp S_ij ]

    With the diagonal and all entries: I = log n + mean_i [S_ii - logsumexp_j S_ij] <= log n; with
    labels of C-class logits: I = log C - cross_entropy. ReInfoNCE (reg_weight > 0) adds
    reg_weight * (mean_i LME_{j in N_i} S_ij - reg_target)^2, anchors weighted by their positives.
    """,
        value=infonce_value, needs=lambda o: (LSE, POS), reg_stat=infonce_stat),
    Bound(
        "dv", module="DV", separable=True, options=(CLIP,),
        doc="""Donsker-Varadhan (the MINE value, no moving average):

        I = mean_P S - log mean_N exp S            (on clamp(S, -clip, clip) when clip is given)

    ReMINE / ReDV (reg_weight > 0): + reg_weight * (log mean_N exp S - reg_target)^2, S unclipped.
    """,
        value=dv_value, needs=_pos_neg),
    Bound(
        "mine", module="MINE", module_state=("running_lme", "update"),
        inputs=(Input("running_lme", None, _running_lme, "0-d tensor: log of the moving average of E_N[e^S], NaN "
                      "when empty; updated in place when update=True"),),
        options=(Option("momentum", 0.9, _momentum, "weight of the old average"),
                 Option("update", True, _flag("update"), "update running_lme in place")),
        doc="""MINE (Belghazi et al.): the DV value, with the gradient's partition function replaced by a
    moving average (bias-corrected gradient):

        loss = -( mean_P S - mean_N exp(S) / sg(ema) ),   reported mi = DV value
        ema  <- momentum * ema + (1 - momentum) * mean_N exp(S)

    ``running_lme`` is a 0-d floating tensor holding log(ema) (NaN = empty, the first batch fills it);
    it is updated in place when ``update`` is true, like ``F.batch_norm``'s running statistics
    (``fastmi.nn.MINE`` owns it and updates it in training mode only).
    """,
        value=dv_value, surrogate=mine_surrogate, needs=lambda o: (LSE, POS), exp_shift=mine_shift),
    Bound(
        "nwj", module="NWJ", separable=True, options=(CLIP,),
        doc="""NWJ (f-divergence / MINE-f) bound:

        I = mean_P S - mean_N exp(S - 1)           (on clamp(S, -clip, clip) when clip is given)

    ReNWJ: + reg_weight * (log mean_N exp S - reg_target)^2 with S unclipped. The authors' code uses
    clip=10 and reg_target=0; the paper's log-Euclidean form corresponds to reg_target=1.
    """,
        value=nwj_value, needs=_pos, exp_shift=lambda o, layout, needed: 1.0),
    Bound(
        "tuba", module="TUBA", options=(CLIP,),
        inputs=(Input("log_baseline", 0.0, _per_row("log_baseline"), "a (scalar, or one per row); differentiable if a tensor",
                      per_row=True),),
        doc="""TUBA with log-baseline a (a scalar, or a_i per row; differentiable if a tensor):

        I = 1 + mean_P (S_ip - a_i) - mean_N exp(S_ij - a_i)

    a = 0 is the authors' TUBA (baseline 1); a = 1 gives NWJ. ReTUBA adds
    reg_weight * (log mean_N exp S - reg_target)^2 with S unclipped.
    """,
        value=tuba_value, needs=_pos, exp_shift=lambda o, layout, needed: o["log_baseline"]),
    Bound(
        "js", module="JS",
        options=(Option("value", "nwj", _js_value_option,
                        "'nwj': NWJ of S (the papers' code); 'nwj_shifted': NWJ of S + 1 (Poole et al., torch-mist)",
                        cases=("nwj_shifted",)),),
        doc="""Jensen-Shannon (f-GAN) training with an NWJ value reported (Poole et al.):

        J = mean_P(-softplus(-S)) - mean_N softplus(S),  I_NWJ = mean_P S - mean_N exp(S - 1)
        loss = -(J + sg(I_NWJ - J)):  the value of -I_NWJ, the gradient of -J

    value="nwj_shifted" reports NWJ evaluated on S + 1 instead, 1 + mean_P S - mean_N exp(S) (Poole et al.'s
    reading, torch-mist's value). The JS-optimal critic is S* = log p(x, y) / (p(x) p(y)), where NWJ is
    tight at S* + 1: the shifted value is exact there, the default sits 1/e below the true MI (the
    papers' code reports the default).
    ReJS: + reg_weight * (mean_N softplus(S) - reg_target)^2.
    """,
        value=js_value, surrogate=js_surrogate, needs=lambda o: (LSE, POS, SP, PSP),
        reg_stat=lambda rs, o: rs.neg_softplus_mean(), reg_needs=(SP,)),
    Bound(
        "smile", module="SMILE",
        options=(Option("clip", 5.0, _clip, "tau: clamp S to [-tau, tau] inside the log-mean-exp (None: DV value)"),
                 Option("clip_positives", False, _flag("clip_positives"), "clip the positive term too")),
        doc="""SMILE(tau) (Song & Ermon): the clipped DV value with the JS gradient,

        I = mean_P S - log mean_N exp clamp(S, -tau, tau),   loss = -(J + sg(I - J))

    clip_positives=True clips the positive term too (Choi & Lee's benchmarks); clip=None gives the
    DV value with the JS gradient. ReSMILE: + reg_weight * (log mean_N exp S - reg_target)^2, S unclipped.
    """,
        value=smile_value, surrogate=js_surrogate,
        needs=lambda o: (CLSE if _clipped(o) else LSE, CPOS if (_clipped(o) and o["clip_positives"]) else POS, SP, PSP)),
    Bound(
        "flo", module="FLO", vector_form=False, skip_rule="anchors", positive_kinds=("diag", "index"),
        inputs=(Input("u", 0.0, _per_row("u"), "u_i, the amortized log-partition of each positive pair (scalar or "
                      "one per row; differentiable, trained jointly with the critic)", per_row=True),),
        doc="""FLO (Guo et al. 2022, Fenchel-Legendre optimization), one positive per row:

        I = 1 - mean_i [ u_i + exp(-u_i) mean_{j in N_i} exp(S_ij - S_ip(i)) ]

    A lower bound for every u; maximizing over u (a second network u(x_i, y_p(i)) trained with the
    critic) makes it tight, at u_i = log mean_{j in N_i} exp(S_ij - S_ip(i)). Its gradient in u needs no
    log-sum-exp of the batch. ReFLO: + reg_weight * (log mean_N exp S - reg_target)^2.
    """,
        value=flo_value, needs=lambda o: (LSE, POS)),
    Bound(
        "alpha_tuba", module="AlphaTUBA", vector_form=False, positive_kinds=("diag",),
        negatives_allowed=("off_positive", "off_diagonal"), sampled_negatives=False,
        second_pass=alpha_tuba_second_pass,
        options=(Option("alpha", 0.01, _alpha, "weight of the multi-sample (InfoNCE) baseline, in [0, 1]",
                        cases=(0.0, 0.5, 1.0)),),
        inputs=(Input("log_baseline", 0.0, _per_row("log_baseline"), "a_i, the learned log-baseline of each row "
                      "(scalar or one per row; differentiable)", per_row=True),),
        doc="""The interpolated bound I_alpha of Poole et al. (2019) between TUBA (alpha = 0) and InfoNCE
    (alpha = 1), diagonal positives, negatives off the diagonal, with the baseline of row i

        B_ij = log( alpha * mean_{k != j} exp S_ik + (1 - alpha) * exp a_i )
        I = 1 + mean_{i != j} (S_ii - B_ij) - mean_{i != j} exp(S_ij - B_ii)

    The multi-sample term of B_ij leaves out column j: for the joint term, one of the n - 1 negatives
    of row i makes room for the positive, averaged over which one. Rows are the anchors, as in
    fastmi's infonce and tuba (Poole et al. write the bound with y as the anchor: pass scores.T for
    that orientation). alpha = 0 is TUBA with baseline a; alpha = 1 is InfoNCE over n - 1 samples
    (<= log(n - 1)); a small alpha keeps InfoNCE's low variance without its log-batch cap. The sums over
    j of B_ij run in a second pass over S (tiled: O(n) memory beyond S on the fused backends).
    ReAlphaTUBA: + reg_weight * (log mean_N exp S - reg_target)^2.
    """,
        value=alpha_tuba_value, needs=lambda o: (LSE, POS)),
    Bound(
        "l1out", module="L1Out", vector_form=False, skip_rule="anchors", positive_kinds=("diag",),
        negatives_allowed=("off_positive", "off_diagonal"), sampled_negatives=False, upper=True, columns=True,
        doc="""L1Out (leave-one-out) upper bound of Cheng et al. (2020) on a log-density matrix
    log_density[i, j] = log q(y_j | x_i) of a variational conditional q (rows x_i, columns y_j, as the
    scores of every critic bound):

        I_L1Out = mean_i [ log q(y_i | x_i) - log mean_{j != i} q(y_i | x_j) ]

    The leave-one-out mean runs over the x's for a fixed y_i: a column statistic of log_density
    (the CPU kernel reads it transposed, one copy). An upper bound on MI for a q close to p(y|x):
    ``loss`` is +I_L1Out (minimize it to reduce MI); train q separately by maximizing
    mean_i log q(y_i | x_i). For a Gaussian q, fastmi.functional.gaussian_l1out never builds the matrix.
    """,
        value=infonce_value, needs=lambda o: (LSE, POS), reg_stat=infonce_stat),
]}
