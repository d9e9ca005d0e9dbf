"""The critic bounds of a separable critic, ``<bound>_separable(x, y)`` for every bound of
``fastmi.critic_lse.bounds.BOUNDS`` marked ``separable`` (those that need only the row log-sum-exp
and the positive score):

    S_ij = <x_i, y_j> / temperature          (x: n x d, y: m x d)
    S_ij = <x_i, y_j> / (|x_i| |y_j| temperature)    with normalize=True (the cosine critic)

Each equals the score-matrix function on ``x @ y.T / temperature``; the n x m matrix exists only tile
by tile, forward and backward, so memory is O((n + m) d). ``positives``: None (the diagonal, n = m)
or a column index per row. symmetric=True averages the x->y and y->x bounds (CLIP / SimCLR's NT-Xent
with y the second view; diagonal positives). ``temperature``: a number or a learnable 1-element tensor.
"""
from __future__ import annotations

from .._core import validate
from .._core.dtypes import acc_dtype
from .._core.result import MIResult
from ..critic_lse.api import check_options
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
    if normalize:
        validate.nonzero_rows(x, "x", name)
        validate.nonzero_rows(y, "y", name)
    t = critic.check_temperature(temperature, x, name)
    layout = critic.layout_of(x, y, positives, negatives, infonce=bound.infonce_negatives, name=name)
    _, separable_stats = ops.FAMILY.select(backend, x, name)
    inv_t = critic.inverse_temperature(t, x)
    index = layout.pos_index if layout.kind == "index" else None
    exclude = critic.exclusion(layout)
    dtype = acc_dtype(x.dtype)

    def direction(rows, cols, given=None):
        """The bound on S (rows = x) or on S^T (rows = y); ``given``: (lse, pos) already computed."""
        def stats_of(needed, exp):
            if given is not None and exp is None:
                return {LSE: given[0], POS: given[1]}
            lse, _, pos, E = separable_stats(rows, cols, inv_t, normalize, index, exclude, False,
                                             None if exp is None else exp[1])
            return {LSE: lse, POS: pos} if exp is None else ({LSE: lse, POS: pos}, E, None)

        return evaluate(bound, opts, reg, layout, stats_of, dtype, x.device)

    if not symmetric:
        return direction(x, y)
    if bound.exp_shift is not None:  # an exponential term per direction: one pass each
        return _average(direction(x, y), direction(y, x))
    row_lse, col_lse, pos, _ = separable_stats(x, y, inv_t, normalize, index, exclude, True, None)
    return _average(direction(x, y, (row_lse, pos)), direction(y, x, (col_lse, pos)))


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
