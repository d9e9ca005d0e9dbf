"""fastmi against torch-mist (``pip install torch-mist``): the same estimator, the same critic (the
same weights) and the same data (bench/torchmist_cases.py), in one run:

- per training step (the loss of one batch and its backward into the critic): the median wall time
  over ``--repeats`` steps, the two libraries alternating, and the peak extra memory of one step
  (bench.memory, in a fresh child process); before timing, the two losses' estimates and parameter
  gradients are checked to agree;
- the estimates: the same initial critic trained by each library for ``--train-steps`` Adam steps
  on the same batches of correlated Gaussians with a known MI, then each library's bound averaged
  over the held-out test batches (with its standard error).

    python -m bench.bench_torchmist            # writes bench/results/torchmist-cpu-<UTC date-time>.json
    python -m bench.bench_torchmist --quick    # smaller sizes and fewer steps (a smoke run)

Each run writes a new file and never overwrites one. Without torch-mist (or when it fails to
import) the fastmi rows are measured and the file records why torch-mist was skipped.
``python -m bench.report`` makes the docs table from the file (docs/estimators.md).
"""
from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

from bench import torchmist_cases as cases
from bench.memory import peak_extra_bytes

RESULTS = Path(__file__).resolve().parent / "results"
SIZES = {"separable": (512, 2048), "joint": (128, 512)}  # torch-mist: n x n x embed_dim features
QUICK_SIZES = {"separable": (256,), "joint": (64,)}
BATCH, TRUE_MI, SAMPLES = 128, 2.0, 20000


def _agreement(name: str, n: int) -> float:
    """The largest difference of the two estimates and of the parameter gradients of the two losses,
    relative to the largest entry (the gradients of a constant shift differ by design for JS's loss)."""
    net = cases.critic(name)
    a, b = cases.Step(name, "fastmi", net), cases.Step(name, "torch-mist", net)
    x, y = cases.inputs_for(name, n)
    ga = torch.autograd.grad(a.loss(x, y), a.params)
    gb = torch.autograd.grad(b.loss(x, y), b.params)
    top = max(float(g.abs().max()) for g in gb)
    grad = max(float((p - q).abs().max()) for p, q in zip(ga, gb)) / top
    with torch.no_grad():
        mi = abs(float(a.mi(x, y)) - float(b.mi(x, y))) / max(1.0, abs(float(b.mi(x, y))))
    return max(grad, mi)


def time_steps(name: str, n: int, impls, repeats: int) -> dict:
    """impl -> per-step seconds (``repeats`` steps each, the implementations alternating)."""
    net = cases.critic(name)
    steps = {i: cases.Step(name, i, net) for i in impls}
    data = cases.inputs_for(name, n)
    for s in steps.values():
        cases.step(s, data)  # warm-up: allocator, thread pool, first-call dispatch
        cases.step(s, data)
    times = {i: [] for i in impls}
    for _ in range(repeats):
        for i, s in steps.items():
            start = time.perf_counter()
            cases.step(s, data)
            times[i].append(time.perf_counter() - start)
    return times


def train_and_estimate(name: str, impl: str, steps: int, samples: int, seed: int = 0) -> dict:
    """The case's critic (seeded) trained by ``impl`` on the shared batches; the held-out estimate."""
    x, y = cases.correlated_gaussians(samples, TRUE_MI, seed=seed)
    n_train = int(samples * 0.7)
    s = cases.Step(name, impl, cases.critic(name, seed))
    opt = torch.optim.Adam(s.params, lr=5e-4)
    gen = torch.Generator().manual_seed(seed)
    start = time.perf_counter()
    for _ in range(steps):
        idx = torch.randint(n_train, (BATCH,), generator=gen)
        opt.zero_grad(set_to_none=True)
        s.loss(x[idx], y[idx]).backward()
        opt.step()
    seconds = time.perf_counter() - start
    with torch.no_grad():
        vals = [float(s.mi(x[k:k + BATCH], y[k:k + BATCH])) for k in range(n_train, samples - BATCH + 1, BATCH)]
    return dict(case=name, impl=impl, estimate=statistics.fmean(vals),
                stderr=statistics.stdev(vals) / math.sqrt(len(vals)), test_batches=len(vals), true_mi=TRUE_MI,
                train_steps=steps, train_seconds=seconds)


def _commit() -> str:
    root = Path(__file__).resolve().parents[1]
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True,
                              check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, check=True).stdout.strip()
        return head + ("+" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def _cpu() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.bench_torchmist", description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="the smallest sizes, 3 timed steps, 100 training steps")
    p.add_argument("--out", help="the result file (default: bench/results/torchmist-cpu-<UTC date-time>.json); "
                                 "it must not exist")
    p.add_argument("--repeats", type=int, default=10, help="timed steps per implementation and size")
    p.add_argument("--train-steps", type=int, default=1000, help="Adam steps of each estimate's training")
    p.add_argument("--threads", type=int, default=1, help="torch threads (1: less noise on a shared machine)")
    p.add_argument("--load", default="not recorded", help="a note on the machine's load during the run")
    a = p.parse_args(argv)
    now = datetime.datetime.now(datetime.timezone.utc)
    out = Path(a.out) if a.out else RESULTS / f"torchmist-cpu-{now:%Y-%m-%d-%H%M%S}.json"
    problem = (f"{out} exists; not overwriting it" if out.exists() else
               f"{out.parent} is not a directory" if not out.parent.is_dir() else
               "--repeats, --train-steps and --threads must be >= 1" if min(a.repeats, a.train_steps, a.threads) < 1
               else None)
    if problem:
        print(f"python -m bench.bench_torchmist: error: {problem}", file=sys.stderr)
        return 2
    torch.set_num_threads(a.threads)
    skipped = cases.torch_mist_error()
    impls = cases.IMPLS if skipped is None else ("fastmi",)
    if skipped:
        print(f"torch-mist skipped: {skipped}", file=sys.stderr)
    sizes = QUICK_SIZES if a.quick else SIZES
    repeats, train_steps = (3, 100) if a.quick else (a.repeats, a.train_steps)
    version = None
    if skipped is None:
        from importlib.metadata import version as _v
        version = _v("torch_mist")
    steps, estimates = [], []
    for name, (estimator, kind, *_rest) in cases.CASES.items():
        for n in sizes[kind]:
            agree = _agreement(name, n) if skipped is None else None
            times = time_steps(name, n, impls, repeats)
            for impl in impls:
                q = statistics.quantiles(times[impl], n=4) if len(times[impl]) > 1 else [math.nan] * 3
                row = dict(case=name, estimator=estimator, critic=kind, n=n, impl=impl,
                           median_s=statistics.median(times[impl]), iqr_s=q[2] - q[0], rounds=len(times[impl]),
                           peak_extra_bytes=peak_extra_bytes(name, impl, n, family="torchmist"),
                           max_rel_diff=agree)
                steps.append(row)
                print(f"{name:<14} n={n:<5} {impl:<10} {row['median_s'] * 1e3:9.2f} ms  "
                      f"{(row['peak_extra_bytes'] or 0) / 2**20:8.1f} MiB", flush=True)
        for impl in impls:
            estimates.append(train_and_estimate(name, impl, train_steps, 8000 if a.quick else SAMPLES))
            e = estimates[-1]
            print(f"{name:<14} {impl:<10} estimate {e['estimate']:.3f} +- {e['stderr']:.3f} (true {TRUE_MI}), "
                  f"{e['train_steps']} steps in {e['train_seconds']:.1f} s", flush=True)
    meta = dict(date=now.isoformat(timespec="seconds"), command=shlex.join(["python", "-m", "bench.bench_torchmist",
                                                                       *(argv if argv is not None else sys.argv[1:])]),
                commit=_commit(), cpu=_cpu(), cores=os.cpu_count(), threads=a.threads, load=a.load,
                torch=torch.__version__, torch_mist=version, skipped=skipped, batch_size_training=BATCH,
                samples=8000 if a.quick else SAMPLES, true_mi=TRUE_MI, x_dim=cases.X_DIM, hidden=list(cases.HIDDEN),
                embed_dim=cases.EMBED, quick=a.quick)
    out.write_text(json.dumps({"meta": meta, "steps": steps, "estimates": estimates}, indent=1) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
