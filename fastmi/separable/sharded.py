"""The separable critic under ``group=``: rank r holds x_r (n_r x d) and y_r, and gets the loss of

    S = a b^T * (X Y^T),   X = [x_0; x_1; ...] (N x d),  Y = [y_0; y_1; ...] (M x d)

without any rank holding an n_r x M (or N x M) matrix. Rank r gathers Y and its scales b (O(M d),
differentiable) and runs the fused op on its own rows against every column:

    row_lse_i = log sum_{j in N_i} exp S_ij over all M columns,  pos_i = S_{i p(i)}

with the diagonal as global columns: row i of rank r pairs with column offset_r + i (the op's
per-row positive index, EXCLUDE_POSITIVE for the off-diagonal negatives), or with the global column
index the user passed. Row statistics are gathered (O(N)), so every rank evaluates the bound on the
global rows. The column statistics of the symmetric (CLIP) loss need every rank's rows: rank r's op
returns log sum over its own rows i in N^j of exp S_ij for every column j, and those partial
log-sum-exps are combined by a log-space all-reduce. All collectives are differentiable
(fastmi._core.distributed), so each local input gets world_size x dG/d(input).
"""
from __future__ import annotations

import torch

from .._core import distributed
from .._core.dtypes import acc_dtype
from ..critic_lse.evaluate import exp_request
from . import critic, ops
from .ops import EXCLUDE_DIAG, EXCLUDE_NONE, EXCLUDE_POSITIVE


def _local_index(positives, x: torch.Tensor, name: str):
    """A rank's positives: None, or one global column index per local row (range-checked globally)."""
    if positives is None:
        return None
    if not isinstance(positives, torch.Tensor) or positives.dtype.is_floating_point or positives.dtype.is_complex:
        raise TypeError(f"{name}: positives must be None (the diagonal) or an integer tensor of global column "
                        "indices (into the concatenation of every rank's y)")
    if positives.device != x.device:
        raise ValueError(f"{name}: positives is on {positives.device} but x is on {x.device}")
    if positives.dim() != 1 or positives.shape[0] != x.shape[0]:
        raise ValueError(f"{name}: positives must hold one global column index per row of this rank's x "
                         f"({x.shape[0]}), got shape {tuple(positives.shape)}")
    return positives.to(torch.long).contiguous()


def statistics(bound, name: str, group, check, x, y, positives, negatives, backend):
    """(args, global layout, (row_lse [N], col_lse [M] or empty, pos [N], E [N] or None)), the same on
    every rank. E: the bound's exponential term per row (its exp_shift, with the global |N|), from the
    op with its own gradient path; the columns' (symmetric) is made from col_lse by the caller."""

    def local():
        args = check()
        n, m = args.x.shape[0], args.y.shape[0]
        if positives is None and n != m:
            raise ValueError(f"{name}: with group=, diagonal positives (positives=None) pair row i of x with row i "
                             f"of y on each rank, but this rank has {n} rows of x and {m} of y")
        index = _local_index(positives, args.x, name)
        _, separable_stats = ops.FAMILY.select(backend, args.x, name)
        return args, index, separable_stats

    def facts(checked):
        args = checked[0]
        t = args.temperature if not isinstance(args.temperature, torch.Tensor) else "learned"
        options = distributed.fingerprint(bound.name, sorted(args.opts.items()), args.reg, args.normalize,
                                          args.symmetric, positives is None, negatives, t)
        return {"x rows": args.x.shape[0], "y rows": args.y.shape[0], "feature size": args.x.shape[1],
                "dtype": distributed.dtype_code(args.x.dtype), "options": options}

    (args, index, separable_stats), shards, _ = distributed.agree(
        group, name, (x, y), local, facts, sizes=("x rows", "y rows"), same=("feature size", "dtype", "options"))
    rows, cols = shards["x rows"], shards["y rows"]
    device = args.x.device
    every_index = None if index is None else distributed.gather_rows(index, rows)
    layout = critic.layout_of(rows.total, cols.total, device, every_index, negatives,
                              infonce=bound.infonce_negatives, name=name)
    exclude = critic.exclusion(layout)
    if exclude == EXCLUDE_DIAG and layout.kind == "index":
        raise ValueError(f"{name}: with group=, negatives='off_diagonal' needs diagonal positives (positives=None); "
                         "with a column index per row use negatives='all' or 'off_positive'")
    y_all = distributed.gather_rows(args.y, cols)  # the op makes the cosine critic's norms of every column
    column = rows.local_rows(device) if index is None else index  # each local row's positive, a global column
    op_exclude = EXCLUDE_NONE if exclude == EXCLUDE_NONE else EXCLUDE_POSITIVE  # the diagonal is the positive here
    dtype = acc_dtype(args.x.dtype)
    shift = exp_request(bound, args.opts, args.reg, layout, dtype, device)
    inv_t = critic.inverse_temperature(args.temperature, args.x)
    row_lse, col_part, pos, E = separable_stats(args.x, y_all, inv_t, args.normalize, column, op_exclude,
                                                args.symmetric, None if shift is None else shift[1])
    col_lse = distributed.logsumexp_across(col_part, group) if args.symmetric else col_part
    every = distributed.gather_rows(torch.stack([row_lse, pos] + ([E] if shift is not None else []), 1), rows)
    return args, layout, (every[:, 0], col_lse, every[:, 1], every[:, 2] if shift is not None else None)
