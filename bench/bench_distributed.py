"""Scaling of the ``group=`` path on CPU (gloo): per-rank time and peak memory of one forward+backward
against the number of processes, at a fixed global batch (strong scaling), and the bytes each rank
communicates per step.

    python -m bench.bench_distributed [--world-sizes 1 2 4] [--cases clip infonce nb_mim mmd_imq] [--out PATH]
    python -m bench.bench_distributed --table PATH   (print a results file's table; docs/distributed.md's is
                                                      written by `make report`, marker report:distributed)

Each world size runs in fresh spawned processes joined by gloo; every rank holds its shard of the
same global batch. "1 (no group)" is the ordinary single-process call (group=None). Per rank:
the median over --repeat steps of one forward+backward, each step started together (a barrier; the
time includes waiting for the other ranks inside the collectives), and the peak extra resident
memory (VmHWM after resetting it, minus the resident set before the steps and the input gradients;
glibc's mmap threshold pinned low as in bench.memory). Communication: every collective fastmi issues
in one step, recorded by ``fastmi._core.distributed.traffic()`` (payloads), and the bytes one rank
sends under the ring algorithms (``wire_bytes``: all_gather and reduce_scatter (R - 1)/R of the
payload, all_reduce twice that). Threads per rank: the machine's cores divided by the world size (at
least 1): with more processes than cores the ranks share cores, so the times show contention, not
speed-up; the memory and byte counts do not depend on it.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS = os.path.join(ROOT, "bench", "results")

# case -> (what it computes, global rows N, feature size)
CASES = {
    "clip": ("infonce_separable(x, y, symmetric=True, normalize=True), x, y: N x d", 4096, 256),
    "infonce": ("infonce_separable(x, y), x, y: N x d", 4096, 256),
    "nb_mim": ("nb_mim([state N x 16 x 16 x 16])", 512, 16),
    "mmd_imq": ("mmd_imq_prior(z), z: N x d", 2048, 64),
}


def _shard(n: int, rank: int, world: int) -> slice:
    base, extra = divmod(n, world)
    start = rank * base + min(rank, extra)
    return slice(start, start + base + (rank < extra))


def _inputs(case: str, n: int, rows: slice) -> list:
    """This rank's leaves of the global batch of n rows (the same global tensors on every rank)."""
    d = CASES[case][2]
    g = torch.Generator().manual_seed(0)
    if case in ("clip", "infonce"):
        x = torch.randn(n, d, generator=g)
        y = 0.5 * x + torch.randn(n, d, generator=g)
        return [x[rows].clone(), y[rows].clone()]
    if case == "nb_mim":
        return [torch.randn(n, d, 16, 16, generator=g)[rows].clone()]
    return [torch.randn(n, d, generator=g)[rows].clone()]


def _step(case: str, leaves: list, group, seed: int) -> None:
    import fastmi.functional as F

    xs = [t.detach().requires_grad_() for t in leaves]
    if case == "clip":
        loss = F.infonce_separable(*xs, symmetric=True, normalize=True, temperature=0.07, group=group).loss
    elif case == "infonce":
        loss = F.infonce_separable(*xs, temperature=10.0, group=group).loss
    elif case == "nb_mim":
        loss = F.nb_mim(xs, group=group).loss
    else:
        loss = F.mmd_imq_prior(xs[0], generator=torch.Generator().manual_seed(seed), group=group)
    loss.backward()


def _proc(key: str) -> int:
    from fastmi.timing import _proc_status

    return _proc_status(key)


def _rank(rank: int, world: int, rendezvous: str, out: str, case: str, n: int, repeat: int, threads: int,
          grouped: bool):
    import torch.distributed as dist

    from fastmi._core import distributed

    torch.set_num_threads(threads)
    dist.init_process_group("gloo", init_method=f"file://{rendezvous}", rank=rank, world_size=world)
    group = "world" if grouped else None
    rows = _shard(n, rank, world)
    leaves = _inputs(case, n, rows)
    _step(case, leaves, group, rank)  # warm-up: thread pools, allocator arenas
    with distributed.traffic() as log:
        _step(case, leaves, group, rank)
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    base = _proc("VmRSS:")
    times = []
    for i in range(repeat):
        dist.barrier()
        t0 = time.perf_counter()
        _step(case, leaves, group, 100 * i + rank)
        times.append(time.perf_counter() - t0)
    grads = sum(t.numel() * t.element_size() for t in leaves)
    result = {"rank": rank, "rows": rows.stop - rows.start, "seconds": statistics.median(times),
              "peak_extra_bytes": _proc("VmHWM:") - base - grads,
              "collectives": [list(c) for c in log],
              "wire_bytes": sum(distributed.wire_bytes(c, b, world) for c, b in log)}
    with open(os.path.join(out, f"rank{rank}.json"), "w") as f:
        json.dump(result, f)
    dist.destroy_process_group()


def measure(case: str, world: int, repeat: int, grouped: bool = True, n: int = 0) -> dict:
    """One world size of one case (n: the global rows, 0 for the case's own)."""
    import torch.multiprocessing as mp

    threads = max(1, (os.cpu_count() or 1) // world)
    os.environ["MALLOC_MMAP_THRESHOLD_"] = "65536"  # freed large buffers return to the OS (bench.memory)
    with tempfile.TemporaryDirectory() as tmp:
        n = n or CASES[case][1]
        mp.start_processes(_rank, args=(world, os.path.join(tmp, "rendezvous"), tmp, case, n, repeat, threads,
                                        grouped), nprocs=world, join=True, start_method="spawn")
        ranks = []
        for r in range(world):
            with open(os.path.join(tmp, f"rank{r}.json")) as f:
                ranks.append(json.load(f))
    return {"case": case, "world_size": world, "group": grouped, "n": n, "d": CASES[case][2], "dtype": "float32",
            "threads_per_rank": threads, "ranks": ranks}


def _mib(b: float) -> str:
    return f"{b / 2**20:.1f} MiB" if b >= 2**20 else f"{b / 2**10:.1f} KiB"


def table(results: dict) -> str:
    """The markdown table of a results file."""
    m = results["meta"]
    lines = [f"CPU, {m['cpu_count']} cores (load average {m['load_average']:.1f} when the run started), torch "
             f"{m['torch']}, gloo, float32, {m['date']}, commit {m['commit']}. Time: median per-rank step "
             "(forward + backward), slowest rank; memory: peak extra resident memory, largest rank; sent: bytes "
             "one rank sends per step (ring algorithms), largest rank.", "",
             "| case | processes | rows per rank | threads per rank | time per rank | peak extra memory per rank "
             "| sent per rank per step | collectives per step |",
             "|---|---|---|---|---|---|---|---|"]
    for row in results["rows"]:
        ranks = row["ranks"]
        procs = f"{row['world_size']}" + ("" if row["group"] else " (no group)")
        sizes = sorted({r["rows"] for r in ranks})
        lines.append(f"| {row['case']} (N={row['n']}, d={row['d']}) | {procs} | "
                     f"{'/'.join(map(str, sizes))} | {row['threads_per_rank']} | "
                     f"{max(r['seconds'] for r in ranks) * 1e3:.0f} ms | "
                     f"{_mib(max(r['peak_extra_bytes'] for r in ranks))} | "
                     f"{_mib(max(r['wire_bytes'] for r in ranks)) if row['group'] and row['world_size'] > 1 else '0'} | "
                     f"{len(ranks[0]['collectives'])} |")
    lines += ["", "Cases: " + "; ".join(f"{k}: `{v[0]}`" for k, v in CASES.items()) + "."]
    return "\n".join(lines)


def _fail(message: str) -> int:
    print(f"bench_distributed: {message}", file=sys.stderr)
    return 2


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--world-sizes", type=int, nargs="+", default=[1, 2, 4])
    p.add_argument("--cases", nargs="+", default=list(CASES))
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--quick", action="store_true", help="a smoke run: 1/8 of each case's rows, one step")
    p.add_argument("--out", help="results JSON (default bench/results/cpu-distributed-<date>.json); never overwritten")
    p.add_argument("--table", help="render this results file as the markdown table instead of measuring")
    args = p.parse_args(argv)
    if args.table:
        if not os.path.exists(args.table):
            return _fail(f"{args.table} does not exist")
        with open(args.table) as f:
            results = json.load(f)
        print(table(results))
        return 0
    bad = [c for c in args.cases if c not in CASES]
    if bad or any(w < 1 for w in args.world_sizes) or args.repeat < 1:
        return _fail(f"cases must be among {list(CASES)}, world sizes >= 1, --repeat >= 1")
    out = args.out or os.path.join(RESULTS, f"cpu-distributed-{datetime.date.today().isoformat()}.json")
    if os.path.exists(out):
        return _fail(f"{out} exists; pass another --out")
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                                text=True).stdout.strip() or "unknown"
    except OSError:
        commit = "unknown"
    meta = dict(date=datetime.date.today().isoformat(), cpu=platform.processor() or platform.machine(),
                cpu_count=os.cpu_count(), load_average=os.getloadavg()[0], torch=torch.__version__, commit=commit,
                repeat=args.repeat)
    rows = []
    for case in args.cases:
        for world, grouped in [(1, False)] + [(w, True) for w in args.world_sizes]:
            n = CASES[case][1] // 8 if args.quick else 0
            row = measure(case, world, 1 if args.quick else args.repeat, grouped, n)
            rows.append(row)
            print(f"{case} world {world}{'' if grouped else ' (no group)'}: "
                  f"{max(r['seconds'] for r in row['ranks']) * 1e3:.0f} ms, "
                  f"{_mib(max(r['peak_extra_bytes'] for r in row['ranks']))}, "
                  f"sent {_mib(max(r['wire_bytes'] for r in row['ranks']))}", flush=True)
    results = {"meta": meta, "rows": rows}
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    with open(out, "w") as f:
        json.dump(results, f, indent=1)
    print(table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
