"""What the distributed tests run in their spawned processes (gloo on CPU), and the harness.

``spawn(fn, world_size, ...)`` starts world_size processes that join one gloo group (file://
rendezvous in a temporary folder), each running ``fn(rank, world_size, out, *args)``; every rank
saves what it computed to ``out/rank<r>.pt`` and the parent loads the list. A deadline turns a hang
into a test failure. One spawn per world size runs every case (process start-up dominates here).

A case is a fastmi function, global float64 inputs built from a seed, and how each input is split
over the ranks: "rows" (the batch), "cols" (the second sample set: y of an index-positive critic,
the marginal values, y of an MMD), or None (the same on every rank). The parent computes the oracle
on the concatenated inputs (tests/oracle.py) and compares.
"""
from __future__ import annotations

import datetime
import math
import os
import sys
import tempfile
import time
from dataclasses import dataclass, field
from typing import Callable, Optional

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

# Shard sizes: one rank with a single row at world size 3.
ROWS = {1: (8,), 2: (3, 5), 3: (1, 4, 3)}
COLS = {1: (6,), 2: (4, 2), 3: (2, 1, 3)}
N, M, D = 8, 6, 5
assert all(sum(ROWS[w]) == N and sum(COLS[w]) == M for w in ROWS)


# --- the harness -----------------------------------------------------------------------------------
def _entry(rank, world_size, rendezvous, out, fastmi_path, fn, args):
    import fastmi

    if fastmi.__file__ != fastmi_path:
        raise RuntimeError(f"rank {rank} imported {fastmi.__file__}, the test process {fastmi_path}")
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{rendezvous}", rank=rank, world_size=world_size,
                            timeout=datetime.timedelta(seconds=120))
    try:
        result = fn(rank, world_size, *args)
        torch.save(result, os.path.join(out, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


# Start-up dominates these tests (importing torch, its compiler stack for DDP, and fastmi takes
# seconds per process): a fork server imports them once and forks every rank from there. It has
# run no thread pool, so forking it is safe; without fork servers (not Linux) each rank starts fresh.
PRELOAD = ["torch", "torch._dynamo", "torch.distributed", "torch.nn.parallel", "fastmi.functional", "fastmi.nn",
           "oracle", "dist_worker"]


def _start_method() -> str:
    if "forkserver" not in mp.get_all_start_methods():
        return "spawn"
    from multiprocessing import forkserver

    mp.get_context("forkserver").set_forkserver_preload(PRELOAD)
    # the server must import from this process's path (Python 3.11's fork server ignores it)
    saved = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join(p or os.getcwd() for p in sys.path)
    try:
        forkserver.ensure_running()
    finally:
        if saved is None:
            del os.environ["PYTHONPATH"]
        else:
            os.environ["PYTHONPATH"] = saved
    return "forkserver"


def spawn(fn, world_size: int, *args, deadline: float = 600.0) -> list:
    """[what fn returned on rank 0, rank 1, ...]; raises if a rank fails or the deadline passes."""
    with tempfile.TemporaryDirectory() as tmp:
        import fastmi

        ctx = mp.start_processes(_entry, args=(world_size, os.path.join(tmp, "rendezvous"), tmp, fastmi.__file__, fn,
                                               args),
                                 nprocs=world_size, join=False, start_method=_start_method())
        end = time.monotonic() + deadline
        while not ctx.join(timeout=5):
            if time.monotonic() > end:
                for p in ctx.processes:
                    if p.is_alive():
                        p.terminate()
                raise TimeoutError(f"the {world_size} spawned ranks did not finish within {deadline:.0f} s (a hang?)")
        return [torch.load(os.path.join(tmp, f"rank{r}.pt"), weights_only=False) for r in range(world_size)]


def shard(value, sizes, rank: int):
    """This rank's rows of ``value`` (a tensor or a list of tensors), a fresh leaf."""
    if isinstance(value, (list, tuple)):
        return [shard(v, sizes, rank) for v in value]
    start = sum(sizes[:rank])
    return value[start: start + sizes[rank]].detach().clone()


# --- the cases -------------------------------------------------------------------------------------
def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _randn(g, *shape):
    return torch.randn(*shape, generator=g, dtype=torch.float64)


def pair(seed, m=N):
    g = _gen(seed)
    x = _randn(g, N, D)
    return {"x": x, "y": 0.6 * x[:m] + _randn(g, m, D) if m == N else _randn(g, m, D)}


def indexed(seed):
    data = pair(seed, M)
    data["positives"] = torch.randint(0, M, (N,), generator=_gen(seed + 1))
    return data


def scores(seed, running=None):
    g = _gen(seed)
    data = {"scores": _randn(g, N, M) * 1.5, "positives": torch.randint(0, M, (N,), generator=g)}
    if running is not None:
        data["running_lme"] = torch.tensor(running, dtype=torch.float64)
    return data


@dataclass(frozen=True)
class Case:
    id: str
    fn: str  # the name in fastmi.functional and in tests/oracle.py
    data: Callable[[int], dict]
    split: dict  # input -> "rows" | "cols" (absent: the same on every rank)
    grad: tuple = ()
    kw: dict = field(default_factory=dict)
    backend: Optional[str] = None
    seed: int = 0

    def inputs(self) -> dict:
        return self.data(self.seed)


SEP = {"x": "rows", "y": "rows"}
IDX = {"x": "rows", "y": "cols", "positives": "rows"}
XY = ("x", "y")
SCORES = {"scores": "rows", "positives": "rows"}
VECTOR = {"joint": "rows", "marginal": "cols"}

CASES = [
    Case("infonce_sep", "infonce_separable", pair, SEP, XY, seed=1),
    Case("infonce_sep_clip", "infonce_separable", pair, SEP, XY,
         dict(symmetric=True, normalize=True, temperature=0.5), seed=2),
    Case("infonce_sep_clip_learned_t_reg", "infonce_separable",
         lambda s: dict(pair(s), temperature=torch.tensor(0.7, dtype=torch.float64)), SEP, XY + ("temperature",),
         dict(symmetric=True, reg_weight=0.3, reg_target=0.5), seed=3),
    Case("infonce_sep_off_diagonal", "infonce_separable", pair, SEP, XY, dict(negatives="off_diagonal"), seed=4),
    Case("infonce_sep_index", "infonce_separable", indexed, IDX, XY, seed=5),
    Case("dv_sep", "dv_separable", pair, SEP, XY, seed=6),
    Case("dv_sep_all_normalize_reg", "dv_separable", pair, SEP, XY,
         dict(negatives="all", normalize=True, temperature=0.3, reg_weight=0.2), seed=7),
    Case("nwj_sep", "nwj_separable", pair, SEP, XY, seed=8),
    Case("nwj_sep_index_off_positive", "nwj_separable", indexed, IDX, XY, dict(negatives="off_positive"), seed=9),
    Case("nwj_sep_symmetric_normalize", "nwj_separable", pair, SEP, XY, dict(symmetric=True, normalize=True), seed=26),
    Case("infonce_sep_clip_reference", "infonce_separable", pair, SEP, XY, dict(symmetric=True, normalize=True),
         backend="reference", seed=10),
    Case("infonce_sep_clip_triton", "infonce_separable", pair, SEP, XY, dict(symmetric=True, normalize=True),
         backend="triton", seed=11),
    Case("infonce_sep_index_triton", "infonce_separable", indexed, IDX, XY, backend="triton", seed=12),
    Case("mine_scores_empty_average", "mine", lambda s: scores(s, math.nan),
         SCORES, ("scores",), dict(negatives="all"), seed=13),
    Case("mine_scores_running_average", "mine", lambda s: scores(s, 0.4),
         SCORES, ("scores",), dict(negatives="off_positive", momentum=0.8), seed=14),
    Case("mine_vector_form", "mine",
         lambda s: {"joint": _randn(_gen(s), N) + 1, "marginal": _randn(_gen(s + 1), M),
                    "running_lme": torch.tensor(0.1, dtype=torch.float64)},
         VECTOR, ("joint", "marginal"), seed=15),
    Case("infonce_scores_index", "infonce", scores, SCORES, ("scores",), seed=16),
    Case("tuba_per_row_baseline_clip", "tuba", lambda s: dict(scores(s), log_baseline=_randn(_gen(s + 2), N) * 0.3),
         dict(SCORES, log_baseline="rows"), ("scores", "log_baseline"), dict(clip=1.0, negatives="all"), seed=17),
    Case("flo_per_row_u", "flo", lambda s: dict(scores(s), u=_randn(_gen(s + 2), N) * 0.2),
         dict(SCORES, u="rows"), ("scores", "u"), dict(negatives="off_positive"), seed=18),
    Case("smile_reg", "smile", scores, SCORES, ("scores",), dict(negatives="all", reg_weight=0.1), seed=19),
    Case("nwj_scores_clip_reg", "nwj", scores, SCORES, ("scores",), dict(clip=2.0, reg_weight=0.1), seed=27),
    Case("nb_mim", "nb_mim", lambda s: {"states": [_randn(_gen(s), N, 3, 4, 4), _randn(_gen(s + 1), N, 4)]},
         {"states": "rows"}, ("states",), dict(alpha=1.5), seed=20),
    Case("nb_mim_v1_no_pool", "nb_mim", lambda s: {"states": [_randn(_gen(s), N, 3, 3, 2)]},
         {"states": "rows"}, ("states",), dict(prior="v1", pool=0), seed=21),
    Case("nb_dms", "nb_dms", lambda s: {"logits": _randn(_gen(s), N, 3) * 2}, {"logits": "rows"}, ("logits",),
         seed=22),
    Case("nb_dms_paper", "nb_dms", lambda s: {"logits": _randn(_gen(s), N, 2)}, {"logits": "rows"}, ("logits",),
         dict(scale="paper"), seed=23),
    Case("nb_mi", "nb_mi", lambda s: {"state": _randn(_gen(s), N, 4, 2, 2)}, {"state": "rows"}, seed=24),
    Case("mmd_imq", "mmd_imq", lambda s: pair(s, M), {"x": "rows", "y": "cols"}, XY,
         dict(scales=(0.5, 2.0)), seed=25),
    Case("mmd_imq_biased", "mmd_imq", lambda s: pair(s, M), {"x": "rows", "y": "cols"}, XY,
         dict(estimator="biased", scale=3.0), seed=26),
]


def _call_case(case: Case, local: dict, group):
    import fastmi.functional as F

    kw = dict(case.kw)
    if case.backend:
        kw["backend"] = case.backend
    return getattr(F, case.fn)(**local, **kw, group=group)


def outputs(result, grads_of: dict) -> dict:
    """The loss, the estimates and the gradients of ``grads_of`` (name -> leaf or list of leaves)."""
    if isinstance(result, torch.Tensor):
        out = {"loss": result.detach()}
        loss = result
    else:
        out = {k: v.detach() for k, v in result._asdict().items()}
        loss = result.loss
    if grads_of:
        loss.backward()
    out["grads"] = {k: [t.grad for t in v] if isinstance(v, list) else v.grad for k, v in grads_of.items()}
    return out


def _leaves(local: dict, names) -> dict:
    for k in names:
        for t in local[k] if isinstance(local[k], list) else [local[k]]:
            t.requires_grad_()
    return {k: local[k] for k in names}


def run_cases(rank: int, world_size: int, skip: tuple = ()) -> dict:
    """Every case on this rank's shards: {case id: outputs (+ "state": running_lme after the call)}."""
    out = {}
    sizes = {"rows": ROWS[world_size], "cols": COLS[world_size]}
    for case in CASES:
        if case.id in skip:
            continue
        local = {k: (shard(v, sizes[case.split[k]], rank) if k in case.split else
                     (v.clone() if isinstance(v, torch.Tensor) else v)) for k, v in case.inputs().items()}
        leaves = _leaves(local, case.grad)
        res = outputs(_call_case(case, local, "world"), leaves)
        if "running_lme" in local:
            res["state"] = local["running_lme"].clone()
        out[case.id] = res
    out.update(extras(rank, world_size))
    return out


# --- modules --------------------------------------------------------------------------------------
def clip_module_data():
    return pair(30)


PRIOR_SIGMA, PRIOR_SEED = 1.5, 50


def prior_draws(world_size: int) -> torch.Tensor:
    """The prior samples the ranks of ``extras`` draw, concatenated (each rank's generator: seed + rank)."""
    return torch.cat([PRIOR_SIGMA * torch.randn(n, D, generator=_gen(PRIOR_SEED + r), dtype=torch.float64)
                      for r, n in enumerate(ROWS[world_size])])


def extras(rank: int, world_size: int) -> dict:
    """nn.InfoNCESeparable (CLIP, learned temperature), two training-mode steps of nn.MINE, and
    F.mmd_imq_prior with a generator per rank."""
    import fastmi.functional as F
    import fastmi.nn as nn

    out = {}
    sizes = ROWS[world_size]
    clip = nn.InfoNCESeparable(symmetric=True, normalize=True, learn_temperature=True, temperature=0.2,
                               group="world").double()
    local = {k: shard(v, sizes, rank).requires_grad_() for k, v in clip_module_data().items()}
    res = outputs(clip(local["x"], local["y"]), local)
    res["grads"]["log_temperature"] = clip.log_temperature.grad
    out["module_clip"] = res
    mine = nn.MINE(momentum=0.7, negatives="all", group="world").double()
    steps = []
    for seed in (31, 32):
        data = scores(seed)
        s = shard(data["scores"], sizes, rank).requires_grad_()
        res = outputs(mine(s, positives=shard(data["positives"], sizes, rank)), {"scores": s})
        res["state"] = mine.running_lme.clone()
        steps.append(res)
    out["module_mine"] = steps
    z = shard(pair(33)["x"], sizes, rank).requires_grad_()
    out["mmd_imq_prior"] = outputs(F.mmd_imq_prior(z, sigma=PRIOR_SIGMA, generator=_gen(PRIOR_SEED + rank),
                                                   group="world"), {"z": z})
    return out


DDP_STEPS, DDP_BATCH = 4, 31  # an odd global batch: the two shards differ in size


def everything(rank: int, world_size: int, skip: tuple) -> dict:
    """All that the tests check, from one spawn: the cases, bad use and (2 ranks) the DDP example."""
    out = {"cases": run_cases(rank, world_size, skip), "errors": errors(rank, world_size) if world_size > 1 else {}}
    if world_size == 2:
        out["ddp"] = ddp_example(rank, world_size, DDP_STEPS, DDP_BATCH)
    return out


# --- bad use ---------------------------------------------------------------------------------------
def _error_of(fn) -> tuple:
    try:
        fn()
    except (TypeError, ValueError, RuntimeError) as e:
        return type(e).__name__, str(e)
    return None, ""


def errors(rank: int, world_size: int) -> dict:
    """(exception type, message) of each kind of bad use on this rank, then a good call showing the
    ranks are still in step after every error."""
    import fastmi.functional as F

    g = _gen(40 + rank)
    x, y = _randn(g, 4, 6), _randn(g, 4, 6)
    last = world_size - 1
    out = {
        "feature_size": _error_of(lambda: F.infonce_separable(x[:, : 6 - (rank == last)], y[:, : 6 - (rank == last)],
                                                              group="world")),
        "dtype": _error_of(lambda: F.dv_separable(x.float() if rank == last else x, y.float() if rank == last else y,
                                                  group="world")),
        "zero_rows": _error_of(lambda: F.infonce_separable(x[: 0 if rank == last else 4], y[: 0 if rank == last else 4],
                                                           symmetric=True, group="world")),
        "local_bad_argument": _error_of(lambda: F.nwj_separable(x, y, normalize="yes" if rank == last else False,
                                                                group="world")),
        "options": _error_of(lambda: F.infonce_separable(x, y, symmetric=rank == last, group="world")),
        "positives_range": _error_of(lambda: F.infonce_separable(x, y, positives=torch.full((4,), 4 * world_size),
                                                                 group="world")),
        "nb_mim_shapes": _error_of(lambda: F.nb_mim([_randn(g, 3, 4 + (rank == last), 2, 2)], group="world")),
        "nb_dms_zero_rows": _error_of(lambda: F.nb_dms(_randn(g, 0 if rank == last else 3, 2), group="world")),
        "mmd_features": _error_of(lambda: F.mmd_imq(x[:, : 5 + (rank == last)], y[:, :5], group="world")),
        "mine_dtype": _error_of(lambda: F.mine(x[:, :4].float() if rank == last else x[:, :4], torch.tensor(math.nan),
                                               group="world")),
    }
    out["after"] = float(F.infonce_separable(x, y, group="world").mi)
    return out


# --- the DDP example ---------------------------------------------------------------------------------
EXAMPLE = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "examples",
                       "ddp_contrastive.py")


def load_example():
    import importlib.util

    spec = importlib.util.spec_from_file_location("ddp_contrastive", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def ddp_example(rank: int, world_size: int, steps: int, batch: int):
    """examples/ddp_contrastive.py's training under DDP in this spawned group: (parameters, history)."""
    return load_example().train(steps, batch)
