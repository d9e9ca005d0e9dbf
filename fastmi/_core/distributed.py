"""torch.distributed for the batch-coupled losses (``group=``): every rank passes its own rows, a
shard of the global batch, and gets the loss G of the concatenated batch (shards in rank order).

Why the gradients are exact: each rank computes G itself, from global statistics that are gathered
or all-reduced by differentiable collectives whose backward sums the incoming gradients over the
ranks (all_gather <-> reduce_scatter(sum), all_reduce(sum) <-> all_reduce(sum)). Every rank returns
L_r = G, so mean_r L_r = G, and after ``L_r.backward()`` on every rank the gradient reaching a local
input is sum_q dG/d(input) = world_size * dG/d(input), the gradient of sum_r L_r. DDP averages the
parameters' gradients over the ranks, which gives exactly dG/d(parameters): single-process training
on the concatenated batch. A replicated parameter used per row (a learnable temperature) gets
world_size times its rows' share on each rank, so the average is again dG/d(parameter).

Before any collective that moves data, ``agree`` runs the rank's own argument checks and exchanges
one small integer row per rank (status, row counts, feature size, dtype, an options fingerprint):
a bad argument on one rank, a rank with zero rows, or ranks that disagree on the feature size, the
dtype or the options raise on every rank instead of leaving the others waiting in a collective.

``traffic()`` records the payload of every collective issued here (what bench/bench_distributed.py
reports as communication volume).
"""
from __future__ import annotations

import contextlib
import zlib
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import torch
from torch.autograd import Function

try:
    import torch.distributed as dist
except ImportError:  # pragma: no cover - torch built without distributed support
    dist = None

GROUP_DOC = ("group: None (this process's rows only), \"world\", or a torch.distributed ProcessGroup: "
             "each rank passes its own rows and gets the loss of the concatenated batch")

_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
_OK, _TYPE_ERROR, _VALUE_ERROR, _NO_ROWS, _OTHER = 0, 1, 2, 3, 4


def check_group(group, name: str):
    """``group`` if it is None, "world" or a ProcessGroup (a module's constructor: no process group
    needs to exist yet); TypeError/ValueError otherwise."""
    if group is None or (isinstance(group, str) and group == "world"):
        return group
    if isinstance(group, str):
        raise ValueError(f"{name}: group must be None, \"world\" or a torch.distributed ProcessGroup, got {group!r}")
    if dist is None or not isinstance(group, dist.ProcessGroup):
        raise TypeError(f"{name}: group must be None, \"world\" or a torch.distributed ProcessGroup, "
                        f"got {type(group).__name__}")
    return group


def resolve(group, name: str):
    """None (the local loss), or the ProcessGroup that ``group`` names ("world" = the default group)."""
    if check_group(group, name) is None:
        return None
    if not dist.is_available() or not dist.is_initialized():
        raise RuntimeError(f"{name}: group={group!r} needs an initialised process group: call "
                           "torch.distributed.init_process_group(...) first (torchrun sets up its environment)")
    if isinstance(group, str):
        return dist.group.WORLD
    if dist.get_rank(group) < 0:
        raise ValueError(f"{name}: this process (global rank {dist.get_rank()}) is not a member of the group")
    return group


@dataclass(frozen=True)
class Shards:
    """How rows are split over the ranks of ``group``: ``sizes[r]`` rows on rank r, in rank order."""

    group: Any
    rank: int
    sizes: tuple

    @property
    def world_size(self) -> int:
        return len(self.sizes)

    @property
    def total(self) -> int:
        return sum(self.sizes)

    @property
    def offset(self) -> int:
        """The global index of this rank's first row."""
        return sum(self.sizes[: self.rank])

    def local_rows(self, device) -> torch.Tensor:
        """Global indices of this rank's rows."""
        return torch.arange(self.offset, self.offset + self.sizes[self.rank], device=device)


def dtype_code(dtype: torch.dtype) -> int:
    return _DTYPES.index(dtype) if dtype in _DTYPES else len(_DTYPES)


def fingerprint(*options) -> int:
    """A number that differs when the options (plain values, in a fixed order) differ."""
    return zlib.crc32(repr(options).encode()) & 0x7FFFFFFF


def _meta_device(group, rows: Sequence) -> torch.device:
    # NCCL moves only CUDA tensors (the inputs' device, else the current one); gloo, and
    # "cpu:gloo,cuda:nccl", take CPU tensors
    if str(dist.get_backend(group)) != "nccl":
        return torch.device("cpu")
    for t in rows:
        if isinstance(t, torch.Tensor) and t.is_cuda:
            return t.device
    return torch.device("cuda", torch.cuda.current_device())


def _disagreement(name: str, field: str, values: tuple) -> Exception:
    if field == "options":
        odd = [r for r, v in enumerate(values) if v != values[0]]
        return ValueError(f"{name}: the ranks must agree on the options (rank {', '.join(map(str, odd))} differ from "
                          "rank 0): pass the same keyword arguments, and inputs of the same shape past the batch "
                          "dimension, on every rank")
    if field == "dtype":
        names = [str(_DTYPES[v]) if v < len(_DTYPES) else "a non-floating dtype" for v in values]
        return TypeError(f"{name}: the ranks must agree on the dtype ("
                         + ", ".join(f"rank {r}: {n}" for r, n in enumerate(names)) + ")")
    return ValueError(f"{name}: the ranks must agree on the {field} ("
                      + ", ".join(f"rank {r}: {v}" for r, v in enumerate(values)) + ")")


def agree(group, name: str, rows: Sequence, check: Callable[[], Any], facts: Callable[[Any], dict],
          sizes: Sequence[str], same: Sequence[str]) -> tuple[Any, dict, dict]:
    """Run this rank's checks and compare the ranks' facts in one all_gather of a few integers.

    ``check()`` runs the argument checks and returns what the caller needs; ``facts(result)`` maps
    each name of ``sizes`` (per-rank row counts) and of ``same`` (what every rank must share: feature
    size, "dtype" as ``dtype_code``, "options" as a ``fingerprint``) to an int. ``rows``: the
    tensors whose first dimension is this rank's rows; zero rows on any rank is an error (checked
    before ``check``). Returns (result, {size name: Shards}, {same name: the shared value}). Raises
    on every rank when a rank's check failed (that rank raises its own error, the others an error of
    the same type naming it), a rank has zero rows, or the ranks disagree on a ``same`` fact."""
    fields = tuple(sizes) + tuple(same)
    result, error, status, known = None, None, _OK, {}
    if any(isinstance(t, torch.Tensor) and t.dim() > 0 and t.shape[0] == 0 for t in rows):
        status = _NO_ROWS
    else:
        try:
            result = check()
            known = facts(result)
        except Exception as e:  # noqa: BLE001 - sent as a status (no rank may be left waiting), re-raised below
            error = e
            status = _TYPE_ERROR if isinstance(e, TypeError) else _VALUE_ERROR if isinstance(e, ValueError) else _OTHER
    mine = torch.tensor([status] + [int(known.get(f, 0)) for f in fields], dtype=torch.int64,
                        device=_meta_device(group, rows))
    world = dist.get_world_size(group)
    table = mine.new_empty((world * mine.numel(),))
    _all_gather_single(table, mine, group)
    table = table.view(world, -1).tolist()
    if error is not None:
        raise error
    for code, kind, what in ((_NO_ROWS, ValueError, "passed zero rows; every rank needs at least one row (e.g. "
                              "DistributedSampler(..., drop_last=True) keeps every shard non-empty)"),
                             (_VALUE_ERROR, ValueError, "rejected its inputs (ValueError raised there)"),
                             (_TYPE_ERROR, TypeError, "rejected its inputs (TypeError raised there)"),
                             (_OTHER, RuntimeError, "failed in its argument checks (see the error raised there)")):
        bad = [r for r, row in enumerate(table) if row[0] == code]
        if bad:
            raise kind(f"{name}: rank {', '.join(map(str, bad))} (of {world} in the group) {what}")
    values = {f: tuple(row[1 + k] for row in table) for k, f in enumerate(fields)}
    for f in same:
        if len(set(values[f])) > 1:
            raise _disagreement(name, f, values[f])
    rank = dist.get_rank(group)
    return result, {f: Shards(group, rank, values[f]) for f in sizes}, {f: values[f][0] for f in same}


# --- collectives, with autograd ---------------------------------------------------------------------
_meters: list = []


@contextlib.contextmanager
def traffic():
    """Record every collective issued here (forward and backward): yields a list that fills with
    (collective, payload bytes): "all_gather" (the gathered output), "reduce_scatter" (the input
    before the scatter), "all_reduce" (the reduced tensor). Per-rank bytes on the wire: ``wire_bytes``."""
    log: list = []
    _meters.append(log)
    try:
        yield log
    finally:
        _meters.remove(log)


def wire_bytes(collective: str, payload: int, world_size: int) -> float:
    """Bytes one rank sends (= receives) for one collective under the ring algorithms: all_gather and
    reduce_scatter (R - 1)/R of the payload, all_reduce 2 (R - 1)/R (a reduce_scatter + an all_gather)."""
    share = (world_size - 1) / world_size
    return payload * share * (2 if collective == "all_reduce" else 1)


def _record(collective: str, t: torch.Tensor) -> None:
    for log in _meters:
        log.append((collective, t.numel() * t.element_size()))


def _all_gather_single(out: torch.Tensor, t: torch.Tensor, group) -> None:
    _record("all_gather", out)
    gather = getattr(dist, "all_gather_single", None) or dist.all_gather_into_tensor
    gather(out, t, group=group)


def _reduce_scatter_single(out: torch.Tensor, t: torch.Tensor, group) -> None:
    _record("reduce_scatter", t)
    scatter = getattr(dist, "reduce_scatter_single", None) or dist.reduce_scatter_tensor
    scatter(out, t, op=dist.ReduceOp.SUM, group=group)


def _all_reduce(t: torch.Tensor, group, op=None) -> torch.Tensor:
    _record("all_reduce", t)
    dist.all_reduce(t, op=dist.ReduceOp.SUM if op is None else op, group=group)
    return t


def _padded(t: torch.Tensor, rows: int) -> torch.Tensor:
    if t.shape[0] == rows:
        return t.contiguous()
    out = t.new_zeros((rows,) + tuple(t.shape[1:]))
    out[: t.shape[0]] = t
    return out


class _GatherRows(Function):
    """The concatenation over the ranks of their rows (uneven shards: padded to the longest, then
    trimmed). Backward: the incoming gradients summed over the ranks, each rank keeping its rows."""

    @staticmethod
    def forward(ctx, t: torch.Tensor, shards: Shards):
        ctx.shards = shards
        if shards.world_size == 1:  # nothing to move: no copy either
            return t.view_as(t)
        longest = max(shards.sizes)
        out = t.new_empty((shards.world_size * longest,) + tuple(t.shape[1:]))
        _all_gather_single(out, _padded(t, longest), shards.group)
        if all(s == longest for s in shards.sizes):
            return out
        return torch.cat([out[r * longest: r * longest + s] for r, s in enumerate(shards.sizes)])

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        shards = ctx.shards
        if shards.world_size == 1:
            return grad, None
        longest = max(shards.sizes)
        if all(s == longest for s in shards.sizes):
            full = grad.contiguous()
        else:
            full = grad.new_zeros((shards.world_size * longest,) + tuple(grad.shape[1:]))
            for r, (s, o) in enumerate(zip(shards.sizes, _offsets(shards.sizes))):
                full[r * longest: r * longest + s] = grad[o: o + s]
        out = grad.new_empty((longest,) + tuple(grad.shape[1:]))
        _reduce_scatter_single(out, full, shards.group)
        return out[: shards.sizes[shards.rank]], None


def _offsets(sizes: Sequence[int]) -> list:
    return [sum(sizes[:r]) for r in range(len(sizes))]


class _AllReduceSum(Function):
    @staticmethod
    def forward(ctx, t: torch.Tensor, group):
        ctx.group = group
        return _all_reduce(t.clone(memory_format=torch.contiguous_format), group)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return _all_reduce(grad.clone(memory_format=torch.contiguous_format), ctx.group), None


class _LogSumExpAcross(Function):
    """log sum_r exp(t_r) elementwise over the ranks (shifted by the global max). An all -inf
    entry gives -inf, +inf gives +inf; the gradient sum_q g_q exp(t_r - out) is 0 where out is not finite."""

    @staticmethod
    def forward(ctx, t: torch.Tensor, group):
        ctx.group = group
        mx = _all_reduce(t.detach().clone(memory_format=torch.contiguous_format), group, dist.ReduceOp.MAX)
        shift = torch.where(torch.isfinite(mx), mx, torch.zeros_like(mx))
        total = _all_reduce(torch.exp(t - shift), group)
        out = torch.log(total) + shift
        out = torch.where(torch.isposinf(mx), mx, out)
        ctx.save_for_backward(t, out)
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        t, out = ctx.saved_tensors
        g = _all_reduce(grad.clone(memory_format=torch.contiguous_format), ctx.group)
        weight = torch.where(torch.isfinite(out), torch.exp(t - torch.where(torch.isfinite(out), out, 0.0)), 0.0)
        return g * weight, None


def gather_rows(t: torch.Tensor, shards: Shards) -> torch.Tensor:
    """[rank 0's rows; rank 1's rows; ...] of ``t`` (this rank's ``shards.sizes[rank]`` rows),
    differentiable: the backward sums the gradient over the ranks and keeps this rank's rows."""
    return _GatherRows.apply(t, shards)


def all_reduce_sum(t: torch.Tensor, group) -> torch.Tensor:
    """sum over the ranks of ``t`` (same shape everywhere), differentiable (backward: the same sum)."""
    return _AllReduceSum.apply(t, group)


def logsumexp_across(t: torch.Tensor, group) -> torch.Tensor:
    """log sum_r exp(t on rank r), elementwise, differentiable."""
    return _LogSumExpAcross.apply(t, group)

