"""The critic-score losses, one public function per entry of ``bounds.BOUNDS``.

Score convention: ``scores[i, j] = T(x_i, y_j)``, n x m. ``positives`` is None (the diagonal), an
integer vector (one positive column per row, e.g. class labels of logits), or a boolean n x m mask
(e.g. same-label pairs). ``negatives`` is "all", "off_positive" or "off_diagonal"; None takes the
papers' choice (below); an int k or an n x k index tensor takes k negatives per anchor (the "shifted"
negatives i + 1, ..., i + k for an int; see ``fastmi.critic_lse.sampled``):

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
InfoNCE anchor with no positive or no negative is left out. ``group=`` (a torch.distributed
ProcessGroup or "world"): each rank passes its own score rows (or joint/marginal values) and gets
the bound over every rank's rows, each row with the positives and negatives its rank gave it
(fastmi.critic_lse.sharded). fp16/bf16 scores are computed
with fp32 accumulation and give fp32 results on every backend. Second-order gradients need
backend="reference" (the fused backward kernels raise under create_graph=True).
"""
from __future__ import annotations

import math
from typing import NamedTuple

import torch

from .._core import distributed, validate
from .._core.dtypes import acc_dtype
from .._core.result import MIResult
from . import ops, sampled, sharded
from .bounds import BOUNDS, Bound
from .contract import LSE
from .evaluate import evaluate
from .stats import RowStats
from .layout import resolve


def _scores_of(name, scores, joint, marginal, positives, negatives):
    """Check ``scores`` or turn the vector form into a 1 x (k + l) score row with a positive mask."""
    if joint is None and marginal is None:
        if scores is None:
            raise TypeError(f"{name}: give scores (n x m) or joint= and marginal= critic values")
        return validate.tensor(scores, "scores", name, ndim=2), positives, negatives
    if scores is not None:
        raise TypeError(f"{name}: give either scores or joint=/marginal=, not both")
    if joint is None or marginal is None:
        raise TypeError(f"{name}: the vector form needs both joint= and marginal=")
    if positives is not None or negatives is not None:
        raise TypeError(f"{name}: positives= and negatives= do not apply to the vector form "
                        "(joint values are the positives, marginal values the negatives)")
    joint = validate.tensor(joint, "joint", name).reshape(-1)
    marginal = validate.tensor(marginal, "marginal", name).reshape(-1)
    validate.same_device(name, joint=joint, marginal=marginal)
    if joint.dtype != marginal.dtype:
        raise TypeError(f"{name}: joint is {joint.dtype} but marginal is {marginal.dtype}")
    row = torch.cat([joint, marginal])[None, :]
    mask = torch.zeros_like(row, dtype=torch.bool)
    mask[0, : joint.numel()] = True
    return row, mask, "off_positive"


def check_options(bound: Bound, name: str, options: dict, reg_weight, reg_target, reg_norm) -> tuple[dict, tuple]:
    """(the bound's options as its formulas read them, the regularizer (weight, target, norm))."""
    reg = validate.regularization(reg_weight, reg_target, reg_norm, name)
    return {opt.name: opt.check(options[opt.name], name) for opt in bound.options}, reg


def layout_of(bound: Bound, scores, positives, negatives, name: str):
    """(the matrix the row statistics run over, its layout): ``scores`` (transposed for a column bound),
    or the compact n x (1 + k) matrix of k negatives per anchor (sampled.py)."""
    if bound.columns:
        scores = scores.T
    if sampled.is_sampled(negatives):
        if not bound.sampled_negatives:
            raise ValueError(f"{name}: k negatives per anchor (negatives=k or an index tensor) are not defined for this "
                             f"bound; its negatives are {bound.negatives_allowed}")
        n, m = scores.shape
        pos = sampled.positive_columns(positives, n, m, scores.device, name)
        idx = sampled.negative_columns(negatives, n, m, scores.device, name)
        return sampled.compact_scores(scores, pos, idx), sampled.compact_layout(n, idx.shape[1], scores.device,
                                                                                infonce=bound.infonce_negatives)
    layout = resolve(scores, positives, negatives, infonce=bound.infonce_negatives, name=name)
    if layout.kind not in bound.positive_kinds:
        raise ValueError(f"{name}: positives as a {layout.kind} are not supported (positives: "
                         + ("None, the diagonal)" if bound.positive_kinds == ("diag",) else
                            "None for the diagonal, or an integer index per row)"))
    if layout.negatives not in bound.negatives_allowed:
        raise ValueError(f"{name}: negatives={layout.negatives!r} is not defined for this bound; use one of "
                         f"{bound.negatives_allowed} (or None)")
    return scores, layout


class Prepared(NamedTuple):
    """A call's checked arguments: the matrix the statistics run over, its layout, the options with
    the per-call inputs, the regularizer, the chosen backend and its row-statistics function, tau."""

    scores: torch.Tensor
    layout: object
    opts: dict
    reg: tuple
    backend: str
    row_stats: object
    tau: float

    def statistics(self, needed, exp=None):
        """{statistic: its length-n vector} for the statistics ``needed``; with ``exp`` (the bound's
        exponential term, ``evaluate.exp_request``) the triple ({...}, E, a) (``ops``)."""
        out = self.row_stats(self.scores, self.layout, self.tau, sum(1 << k for k in needed), exp)
        st = out if exp is None else out[0]
        picked = {k: st[k] for k in needed}
        return picked if exp is None else (picked, *out[1:])


def prepare(bound: Bound, scores, inputs: dict, joint, marginal, options: dict, positives, negatives, reg_weight,
            reg_target, reg_norm, backend) -> Prepared:
    """Checks, layout and backend: everything before the statistics."""
    name = bound.name
    opts, reg = check_options(bound, name, options, reg_weight, reg_target, reg_norm)
    scores, positives, negatives = _scores_of(name, scores, joint, marginal, positives, negatives)
    scores, layout = layout_of(bound, scores, positives, negatives, name)
    for inp in bound.inputs:
        opts[inp.name] = inp.check(inputs[inp.name], scores, name)
    return prepared(bound, name, scores, layout, opts, reg, backend)


def prepared(bound: Bound, name: str, scores, layout, opts: dict, reg: tuple, backend) -> Prepared:
    """The backend for checked ``scores`` with their layout."""
    chosen, row_stats = ops.FAMILY.select(backend, scores, name)
    tau = math.inf if opts.get("clip") is None else float(opts["clip"])
    return Prepared(scores, layout, opts, reg, chosen, row_stats, tau)


def run(bound: Bound, p: Prepared) -> MIResult:
    """``bound`` on the row statistics (and its second pass, if it has one) of a prepared call."""
    second = bound.second_pass(p.scores, p.opts, p.backend != "reference") if bound.second_pass else None
    return evaluate(bound, p.opts, p.reg, p.layout, p.statistics, acc_dtype(p.scores.dtype), p.scores.device, second)


def call(bound: Bound, scores, inputs: dict, joint, marginal, options: dict, positives, negatives, reg_weight,
         reg_target, reg_norm, backend, group=None) -> MIResult:
    """The body of every generated function: checks, layout, backend, then the bound's formula."""
    group = distributed.resolve(group, bound.name)

    def checked() -> Prepared:
        return prepare(bound, scores, inputs, joint, marginal, options, positives, negatives, reg_weight, reg_target,
                       reg_norm, backend)

    if group is not None:
        if bound.second_pass or bound.columns or sampled.is_sampled(negatives):
            raise ValueError(f"{bound.name}: group= is not supported for this bound or for k negatives per anchor "
                             "(its statistics need more than the rows of one rank)")
        return sharded.call(bound, group, checked, (scores, joint, marginal))
    return run(bound, checked())


def negative_lme(scores, positives=None, negatives=None, *, backend="auto", name="negative_lme") -> torch.Tensor:
    """LME_N(S) = log mean_N exp S over TUBA's negative pairs (any layout, k negatives per anchor too),
    from the row log-sum-exp statistic alone; NaN for a batch without a positive or a negative pair."""
    scores = validate.tensor(scores, "scores", name, ndim=2)
    scores, layout = layout_of(BOUNDS["tuba"], scores, positives, negatives, name)
    _, row_stats = ops.FAMILY.select(backend, scores, name)
    rs = RowStats({LSE: row_stats(scores, layout, math.inf, 1 << LSE)[LSE]}, layout)
    return torch.where(rs.skip, torch.full_like(rs.lme_neg(), math.nan), rs.lme_neg())


def _signature(bound: Bound) -> tuple[str, str]:
    """(parameter list, the call's keyword arguments) of the public function of ``bound``."""
    positional = ["scores=None"] + [f"{i.name}={i.default!r}" for i in bound.inputs]
    keyword = (["joint=None", "marginal=None"] if bound.vector_form else []) + \
        [f"{o.name}={o.default!r}" for o in bound.options] + \
        ["positives=None", "negatives=None", "reg_weight=0.0", "reg_target=0.0", "reg_norm='l2'", "backend='auto'",
         "group=None"]
    inputs = "{" + ", ".join(f"{i.name!r}: {i.name}" for i in bound.inputs) + "}"
    options = "{" + ", ".join(f"{o.name!r}: {o.name}" for o in bound.options) + "}"
    vector = "joint, marginal" if bound.vector_form else "None, None"
    args = (f"_bound, scores, {inputs}, {vector}, {options}, positives, negatives, reg_weight, reg_target, reg_norm, "
            "backend, group")
    return ", ".join(positional) + ", *, " + ", ".join(keyword), args


def make_function(bound: Bound, module: str = "fastmi.functional"):
    """The public function of ``bound``, with a real signature (so that help(), inspect and
    torch.compile see ordinary Python), written from the table like dataclasses writes __init__."""
    params, args = _signature(bound)
    source = f"def {bound.name}({params}):\n    return _call({args})\n"
    namespace = {"_bound": bound, "_call": call}
    exec(compile(source, f"<fastmi.critic_lse: {bound.name}>", "exec"), namespace)  # noqa: S102
    fn = namespace[bound.name]
    fn.__doc__ = bound.doc
    fn.__module__ = module
    fn.__qualname__ = bound.name
    return fn


FUNCTIONS = {name: make_function(b) for name, b in BOUNDS.items()}
globals().update(FUNCTIONS)
__all__ = list(FUNCTIONS)
