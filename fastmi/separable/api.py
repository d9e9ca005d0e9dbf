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

``group=`` (a torch.distributed ProcessGroup or "world"): each rank passes its own rows of x and y
and gets the loss of the concatenated batch (fastmi.separable.sharded; docs/distributed.md):
negatives are every rank's columns, row i of rank r pairs with global column offset_r + i (or
``positives``, then global column indices), memory per rank stays O((n_local + N) d).
"""
from __future__ import annotations

import torch

from .._core import distributed
from .._core.dtypes import acc_dtype, upcast
from .._core.result import MIResult
from ..critic_lse import sampled
from ..critic_lse.api import prepared, run
from ..critic_lse.bounds import BOUNDS, Bound
from ..critic_lse.contract import LSE, POS
from ..critic_lse.evaluate import evaluate
from . import critic, ops, sharded


def _average(a: MIResult, b: MIResult) -> MIResult:
    return MIResult((a.loss + b.loss) / 2, (a.mi + b.mi) / 2)


def directions(bound: Bound, args: critic.Args, layout, stats, given=None) -> MIResult:
    """The bound from the op's statistics: on S, and for symmetric=True the mean with the bound on
    S^T. ``stats(rows, cols, want_cols, exp_shift) -> (row_lse, col_lse, pos, E)`` runs the op;
    ``given``: (row_lse, col_lse, pos, E) already computed for both directions (group=)."""
    x, y = args.x, args.y
    dtype = acc_dtype(x.dtype)

    def direction(rows, cols, known=None):
        def stats_of(needed, exp):
            if known is None:
                lse, _, pos, E = stats(rows, cols, False, None if exp is None else exp[1])
            else:
                lse, pos, E = known
                if exp is not None and E is None:  # from the statistic itself: exact values, but a
                    E = torch.exp(lse - exp[1])    # gradient through exp(lse) (group= columns only)
            return {LSE: lse, POS: pos} if exp is None else ({LSE: lse, POS: pos}, E, None)

        return evaluate(bound, args.opts, args.reg, layout, stats_of, dtype, x.device)

    if given is not None:
        row_lse, col_lse, pos, E = given
        out = direction(x, y, (row_lse, pos, E))
        if not args.symmetric:
            return out
        return _average(out, direction(y, x, (col_lse, pos, None)))
    if not args.symmetric:
        return direction(x, y)
    if bound.exp_shift is not None:  # an exponential term per direction: one pass each
        return _average(direction(x, y), direction(y, x))
    row_lse, col_lse, pos, _ = stats(x, y, True, None)
    return _average(direction(x, y, (row_lse, pos, None)), direction(y, x, (col_lse, pos, None)))


def call(bound: Bound, name: str, x, y, temperature, normalize, symmetric, positives, negatives, reg_weight, reg_target,
         reg_norm, backend, group) -> MIResult:
    group = distributed.resolve(group, name)

    def check():
        return critic.check_args(bound, name, x, y, temperature, normalize, symmetric, positives, reg_weight,
                                 reg_target, reg_norm)

    if group is not None:
        if sampled.is_sampled(negatives):
            raise ValueError(f"{name}: group= does not combine with k negatives per anchor")
        args, layout, given = sharded.statistics(bound, name, group, check, x, y, positives, negatives, backend)
        return directions(bound, args, layout, None, given)
    args = check()
    inv_t = critic.inverse_temperature(args.temperature, args.x)
    if sampled.is_sampled(negatives):
        if args.symmetric:
            raise ValueError(f"{name}: symmetric=True takes every negative of both directions; it does not combine "
                             "with k negatives per anchor")
        return _sampled(bound, name, args, inv_t, positives, negatives, backend)
    layout = critic.layout_of(args.x.shape[0], args.y.shape[0], args.x.device, positives, negatives,
                              infonce=bound.infonce_negatives, name=name)
    _, separable_stats = ops.FAMILY.select(backend, args.x, name)
    index = layout.pos_index if layout.kind == "index" else None
    exclude = critic.exclusion(layout)

    def stats(rows, cols, want_cols, exp_shift):
        return separable_stats(rows, cols, inv_t, args.normalize, index, exclude, want_cols, exp_shift)

    return directions(bound, args, layout, stats)


def _sampled(bound, name, args: critic.Args, inv_t, positives, negatives, backend) -> MIResult:
    """k negatives per anchor: the compact n x (1 + k) matrix from row-wise dot products (S is never
    formed), then the bound on it through critic_lse's fused row statistics."""
    x, y = args.x, args.y
    a, b, _, _ = ops.scales(x, y, inv_t, args.normalize)
    n, m = x.shape[0], y.shape[0]
    pos = sampled.positive_columns(positives, n, m, x.device, name, what="x @ y.T")
    idx = sampled.negative_columns(negatives, n, m, x.device, name, what="x @ y.T")
    C = sampled.compact_separable(upcast(x), upcast(y), a, b, pos, idx)
    layout = sampled.compact_layout(n, idx.shape[1], x.device, infonce=bound.infonce_negatives)
    return run(bound, prepared(bound, name, C, layout, dict(args.opts), args.reg, backend))


def make_function(bound: Bound):
    name = f"{bound.name}_separable"
    defaults = {o.name: o.default for o in bound.options}
    if not set(bound.stats_needed(defaults, True)) <= {LSE, POS}:
        raise ValueError(f"{bound.name} is marked separable but needs statistics other than LSE and POS")
    source = (f"def {name}(x, y, *, temperature=1.0, normalize=False, symmetric=False, positives=None, negatives=None, "
              "reg_weight=0.0, reg_target=0.0, reg_norm='l2', backend='auto', group=None):\n"
              f"    return _call(_bound, {name!r}, x, y, temperature, normalize, symmetric, positives, negatives, "
              "reg_weight, reg_target, reg_norm, backend, group)\n")
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
