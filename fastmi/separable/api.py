"""The critic bounds of a separable critic, ``<bound>_separable(x, y)`` for every bound of
``fastmi.critic_lse.bounds.BOUNDS`` marked ``separable`` (those that need only the row log-sum-exp
and the positive score):

    S_ij = <x_i, y_j> / temperature          (x: n x d, y: m x d)
    S_ij = <x_i, y_j> / (|x_i| |y_j| temperature)    with normalize=True (the cosine critic)

Each equals the score-matrix function on ``x @ y.T / temperature``; the n x m matrix exists only tile
by tile, forward and backward, so memory is O((n + m) d). ``positives``: None (the diagonal, n = m)
or a column index per row. ``negatives``: as for the score matrix, including k negatives per anchor
(an int k: the shifted columns i + 1..i + k; or an n x k index), evaluated on the n x (1 + k)
matrix of row-wise dot products (O(n k + n d) memory). symmetric=True averages the x->y and y->x bounds (CLIP / SimCLR's NT-Xent
with y the second view; diagonal positives). ``temperature``: a number or a learnable 1-element tensor.
"""
from __future__ import annotations

from .._core import validate
from .._core.dtypes import upcast
from .._core.result import MIResult
from ..critic_lse import sampled
from ..critic_lse.api import check_options, run
from ..critic_lse.bounds import BOUNDS, Bound
from ..critic_lse.contract import LSE, POS
from ..critic_lse.evaluate import evaluate
from . import critic, ops


def _average(a: MIResult, b: MIResult) -> MIResult:
    return MIResult((a.loss + b.loss) / 2, (a.mi + b.mi) / 2)


def call(bound: Bound, name: str, x, y, temperature, normalize, symmetric, positives, negatives, reg_weight, reg_target,
         reg_norm, backend) -> MIResult:
    opts, reg = check_options(bound, name, {o.name: o.default for o in bound.options}, reg_weight, reg_target,
                              reg_norm)
    normalize = validate.flag(normalize, "normalize", name)
    symmetric = validate.flag(symmetric, "symmetric", name)
    if symmetric and positives is not None:
        raise ValueError(f"{name}: symmetric=True needs diagonal positives (positives=None)")
    x, y = critic.check_pair(x, y, name)
    t = critic.check_temperature(temperature, x, name)
    if sampled.is_sampled(negatives):
        if symmetric:
            raise ValueError(f"{name}: symmetric=True takes every negative of both directions; it does not combine "
                             "with k negatives per anchor")
        return _sampled(bound, name, x, y, t, normalize, positives, negatives, opts, reg, backend)
    layout = critic.layout_of(x, y, positives, negatives, infonce=bound.infonce_negatives, name=name)
    _, lse_stats = ops.FAMILY.select(backend, x, name)
    a, b = critic.scales(x, y, t, normalize, name)
    index = layout.pos_index if layout.kind == "index" else None
    row_lse, col_lse, pos = lse_stats(x, y, a, b, index, critic.exclusion(layout), symmetric)

    def direction(lse):
        return evaluate(bound, opts, reg, layout, lambda needed: {LSE: lse, POS: pos})

    out = direction(row_lse)
    return _average(out, direction(col_lse)) if symmetric else out


def _sampled(bound, name, x, y, t, normalize, positives, negatives, opts, reg, backend) -> MIResult:
    """k negatives per anchor: the compact n x (1 + k) matrix from row-wise dot products (S is never
    formed), then the bound on it through critic_lse's fused row statistics."""
    a, b = critic.scales(x, y, t, normalize, name)
    n, m = x.shape[0], y.shape[0]
    pos = sampled.positive_columns(positives, n, m, x.device, name, what="x @ y.T")
    idx = sampled.negative_columns(negatives, n, m, x.device, name, what="x @ y.T")
    C = sampled.compact_separable(upcast(x), upcast(y), a, b, pos, idx)
    layout = sampled.compact_layout(n, idx.shape[1], x.device, infonce=bound.infonce_negatives)
    return run(bound, name, C, layout, opts, reg, backend)


def make_function(bound: Bound):
    name = f"{bound.name}_separable"
    defaults = {o.name: o.default for o in bound.options}
    if not set(bound.stats_needed(defaults, True)) <= {LSE, POS}:
        raise ValueError(f"{bound.name} is marked separable but needs statistics other than LSE and POS")
    source = (f"def {name}(x, y, *, temperature=1.0, normalize=False, symmetric=False, positives=None, negatives=None, "
              "reg_weight=0.0, reg_target=0.0, reg_norm='l2', backend='auto'):\n"
              f"    return _call(_bound, {name!r}, x, y, temperature, normalize, symmetric, positives, negatives, "
              "reg_weight, reg_target, reg_norm, backend)\n")
    namespace = {"_bound": bound, "_call": call}
    exec(compile(source, f"<fastmi.separable: {name}>", "exec"), namespace)  # noqa: S102
    fn = namespace[name]
    fn.__doc__ = (f"``fastmi.functional.{bound.name}`` of the separable critic (module docstring of "
                  f"fastmi.separable.api), without building S:\n\n    " + bound.doc.strip())
    fn.__module__ = "fastmi.functional"
    fn.__qualname__ = name
    return fn


FUNCTIONS = {f"{n}_separable": make_function(b) for n, b in BOUNDS.items() if b.separable}
globals().update(FUNCTIONS)
__all__ = list(FUNCTIONS)
