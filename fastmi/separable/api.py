"""The critic bounds of a separable critic, ``<bound>_separable(x, y)`` for every bound of
``fastmi.critic_lse.bounds.BOUNDS`` marked ``separable`` (those that need only the row log-sum-exp
and the positive score):

    S_ij = <x_i, y_j> / temperature          (x: n x d, y: m x d)
    S_ij = <x_i, y_j> / (|x_i| |y_j| temperature)    with normalize=True (the cosine critic)

Each equals the score-matrix function on ``x @ y.T / temperature``; the n x m matrix exists only tile
by tile, forward and backward, so memory is O((n + m) d). ``positives``: None (the diagonal, n = m)
or a column index per row. symmetric=True averages the x->y and y->x bounds (CLIP / SimCLR's NT-Xent
with y the second view; diagonal positives). ``temperature``: a number or a learnable 1-element tensor.

``group=`` (a torch.distributed ProcessGroup or "world"): each rank passes its own rows of x and y
and gets the loss of the concatenated batch (fastmi.separable.sharded; docs/distributed.md):
negatives are every rank's columns, row i of rank r pairs with global column offset_r + i (or
``positives``, then global column indices), memory per rank stays O((n_local + N) d).
"""
from __future__ import annotations

from .._core import distributed
from .._core.result import MIResult
from ..critic_lse.bounds import BOUNDS, Bound
from ..critic_lse.contract import LSE, POS
from ..critic_lse.evaluate import evaluate
from . import critic, ops, sharded


def _average(a: MIResult, b: MIResult) -> MIResult:
    return MIResult((a.loss + b.loss) / 2, (a.mi + b.mi) / 2)


def _local_statistics(bound: Bound, name: str, args: critic.Args, positives, negatives, backend):
    x, y = args.x, args.y
    layout = critic.layout_of(x.shape[0], y.shape[0], x.device, positives, negatives,
                              infonce=bound.infonce_negatives, name=name)
    _, lse_stats = ops.FAMILY.select(backend, x, name)
    a, b = critic.scales(x, y, args.temperature, args.normalize, name)
    index = layout.pos_index if layout.kind == "index" else None
    row_lse, col_lse, pos = lse_stats(x, y, a, b, index, critic.exclusion(layout), args.symmetric)
    return layout, row_lse, col_lse, pos


def call(bound: Bound, name: str, x, y, temperature, normalize, symmetric, positives, negatives, reg_weight, reg_target,
         reg_norm, backend, group) -> MIResult:
    group = distributed.resolve(group, name)

    def check():
        return critic.check_args(bound, name, x, y, temperature, normalize, symmetric, positives, reg_weight,
                                 reg_target, reg_norm)

    if group is None:
        args = check()
        layout, row_lse, col_lse, pos = _local_statistics(bound, name, args, positives, negatives, backend)
    else:
        args, layout, row_lse, col_lse, pos = sharded.statistics(bound, name, group, check, x, y, positives,
                                                                 negatives, backend)

    def direction(lse):
        return evaluate(bound, args.opts, args.reg, layout, lambda needed: {LSE: lse, POS: pos})

    out = direction(row_lse)
    return _average(out, direction(col_lse)) if args.symmetric else out


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
