"""The critic bounds under ``group=``: each rank passes its own score rows (or joint/marginal
values) and every rank gets the bound over all ranks' rows, each row keeping the positives and
negatives its rank gave it. Every bound is a function of O(n) row statistics and the per-row
positive/negative counts (stats.RowStats), so rank r computes its rows' statistics with the fused
op, the ranks gather them (with the per-row inputs: baselines, FLO's u) in one differentiable
all_gather, and every rank evaluates the bound on the N global rows: the same loss and mi everywhere,
and MINE's moving average moves by the global E_N[e^S] on every rank.

Single-process equivalent: the bound on the row-wise concatenation of the ranks' score rows with
their positives and negatives (for the vector form, on the concatenated joint and marginal values).
"""
from __future__ import annotations

import torch

from .._core import distributed
from .._core.result import MIResult
from .._core.dtypes import acc_dtype
from .contract import NUM_STATS
from .evaluate import evaluate, exp_request


class RowCounts:
    """The positive and negative counts of the global rows, read by RowStats as a layout's."""

    def __init__(self, positives: torch.Tensor, negatives: torch.Tensor):
        self._pos, self._neg = positives, negatives

    def positive_counts(self, dtype, device) -> torch.Tensor:
        return self._pos.to(dtype)

    def negative_counts(self, dtype, device) -> torch.Tensor:
        return self._neg.to(dtype)


def call(bound, group, prepare, rows) -> MIResult:
    name = bound.name

    def facts(p):
        plain = sorted((k, v) for k, v in p.opts.items() if not isinstance(v, torch.Tensor))
        return {"rows": p.scores.shape[0], "dtype": distributed.dtype_code(p.scores.dtype),
                "options": distributed.fingerprint(name, plain, p.reg)}

    p, shards, _ = distributed.agree(group, name, [r for r in rows if r is not None], prepare, facts,
                                     sizes=("rows",), same=("dtype", "options"))
    needed = bound.stats_needed(p.opts, bool(p.reg[0]))
    first_dt = acc_dtype(p.scores.dtype)
    dev = p.scores.device
    exp = exp_request(bound, p.opts, p.reg, p.layout, first_dt, dev)  # with this rank's |N|
    local_exp = exp is not None and not callable(exp[1])
    if local_exp:
        stats, E, _ = p.statistics(needed, exp)
    else:
        stats, E = p.statistics(needed), None
    first = stats[needed[0]]
    n, dt = first.shape[0], first.dtype
    per_row = [i.name for i in bound.inputs if i.per_row]
    neg = p.layout.negative_counts(dt, dev)
    columns = [stats[k] for k in needed] + [p.layout.positive_counts(dt, dev), neg]
    columns += [p.opts[k].to(dt).expand(n) for k in per_row]
    if local_exp:  # E_i = exp(LSE_i - a_i - log |N_rank|), with the rank's |N| to rescale it globally
        columns += [E, neg.sum().clamp_min(1).expand(n)]
    every = distributed.gather_rows(torch.stack(columns, 1), shards["rows"]).unbind(1)
    k = len(needed)
    opts = dict(p.opts, **dict(zip(per_row, every[k + 2:k + 2 + len(per_row)])))
    counts = RowCounts(every[k], every[k + 1])
    gathered = dict(zip(needed, every[:k]))
    if local_exp:  # exp(LSE_i - a_i - log |N|) with the global |N|
        E = every[-2] * (every[-1] / every[k + 1].sum().clamp_min(1))

    def stats_of(_needed, want):
        if want is None:
            return gathered
        if E is not None:
            return gathered, E, None
        # a shift that depends on the whole batch (MINE's moving average): from the gathered LSE,
        # exact values, with the gradient through exp(LSE) (no finiteness guarantee for its row)
        st = torch.zeros(NUM_STATS, every[0].shape[0], dtype=dt, device=dev)
        for key, v in gathered.items():
            st[key] = v.detach()
        slot, shift = want
        return gathered, torch.exp(gathered[slot] - shift(st)), None

    return evaluate(bound, opts, p.reg, counts, stats_of, dt, dev)
