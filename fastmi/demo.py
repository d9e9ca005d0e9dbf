"""``fastmi demo`` (``make demo``): fastmi's case in a few minutes on a laptop-class CPU.

1. the same loss values and gradients as plain PyTorch, the fused speed-up and the memory saved
   (``fastmi.demo_kernels``);
2. separable InfoNCE at a batch whose n x n matrix this machine could not hold
   (``fastmi.demo_large_batch``);
3. MI estimates of six bounds on correlated Gaussians beside the known truth, each with the reason
   its value sits where it does (``fastmi.demo_mi``);
4. two short paper experiments, each ending in a verdict line against the paper (their full tables
   and figures are in the run folders).

Threads: training uses ``--threads`` (default 1): its matrices are small, and on a shared CPU the
OpenMP threads wait for each other (measured on a 2-core machine at load average 9-11: 300 steps of
section 3 took 5-13 s with 1 thread, 112-155 s with 2). The kernel sections use all cores, unless the
load average already fills them (then 1 thread: n = 16384 separable InfoNCE took 5.6-6.1 s with 1
thread, 7.3-7.8 s with 2 at load 11); ``--kernel-threads`` sets it.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import os
import time
from pathlib import Path

import torch

from . import _ext, demo_kernels, demo_large_batch, demo_mi
from .experiments.command import OneLineParser


def _onehot_verdict(r: dict) -> str:
    sweep = {float(c): s for c, s in r["target_sweep"].items()}
    follows = all(abs(s["final_second"] - c) < 0.3 for c, s in sweep.items())
    mis = [s["final_mi"] for s in sweep.values()]
    steady = max(mis) - min(mis) < 0.5
    terms = ", ".join(f"C={c:g}: {s['final_second']:+.2f}" for c, s in sorted(sweep.items()))
    ok = "reproduced" if follows and steady else "NOT reproduced"
    return (f"Fig 4: ReDV's second term settles at its target ({terms}) while the estimate stays put "
            f"({min(mis):.2f}-{max(mis):.2f} nats): {ok}. (DV's slow drift of Fig 1 needs the paper's 3000 steps: "
            "fastmi run remine_onehot)")


def _dms_verdict(r: dict) -> str:
    aris = {d: v["ari"][0] for d, v in r["datasets"].items()}
    ok = "reproduced" if all(a >= 0.99 for a in aris.values()) else "NOT reproduced"
    return (f"Fig 1: adjusted Rand index {', '.join(f'{d} {a:.3f}' for d, a in aris.items())} "
            f"(paper: every manifold separated, ARI 1): {ok}")


# the paper experiments of the demo: settings (--set), and the verdict line of their results
DEMO_RUNS = {
    "remine_onehot": ({"steps": 600, "drift_window": 200, "ckpt_every": 200, "batches": (100,),
                       "sweep_targets": (-2.0, 0.0, 2.0)}, _onehot_verdict),
    "nb_dms_2d": ({"datasets": ("circles", "moons", "blobs")}, _dms_verdict),
}


def run_paper_experiment(name: str, runs: Path, threads: int) -> None:
    """Run ``name`` with the demo's settings into ``runs/<name>-seed0`` (replacing the demo's own
    earlier run there), print its verdict line."""
    import dataclasses

    from .experiments import get_experiment, runner

    module = get_experiment(name)
    over, verdict = DEMO_RUNS[name]
    cfg = dataclasses.replace(module.Config(), **over)
    cfg.validate()
    sets = " ".join(f"--set {k}={','.join(str(x) for x in v) if isinstance(v, tuple) else v}" for k, v in over.items())
    print(f"   {name} ({module.SUMMARY.split(':')[0]}): fastmi run {name} {sets}", flush=True)
    ctx = runner.RunContext(name=name, run_dir=runs / f"{name}-seed0", overwrite=True, progress=True)
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    t0 = time.perf_counter()
    try:
        with contextlib.redirect_stdout(io.StringIO()):   # the table: in the run folder
            results = runner.run_experiment(module, cfg, ctx)
    finally:
        torch.set_num_threads(before)
    print(f"     {verdict(results)}  [{time.perf_counter() - t0:.0f} s; table and figures: {ctx.run_dir}]", flush=True)


def parser() -> OneLineParser:
    p = OneLineParser(prog="fastmi demo", description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", type=int, nargs="*", default=[2048], help="n of the score-matrix table (default 2048)")
    p.add_argument("--no-compile", action="store_true", help="skip torch.compile(reference) in the table")
    p.add_argument("--large-n", default="auto",
                   help="batch of the large-batch section: auto (the smallest this machine's memory could not hold "
                        f"densely, {demo_large_batch.AUTO_MIN}-{demo_large_batch.AUTO_MAX}), a number, or 0 to skip")
    p.add_argument("--large-d", type=int, default=32)
    p.add_argument("--mi", type=float, default=2.0, help="true MI of the estimation section, nats (default 2)")
    p.add_argument("--dim", type=int, default=10)
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--mi-steps", type=int, default=600, help="training steps per bound (0 skips the section)")
    p.add_argument("--eval-n", type=int, default=4096)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1, help="torch threads of the training sections (default 1)")
    p.add_argument("--kernel-threads", type=int, default=0,
                   help="torch threads of sections 1-2 (default 0: all cores, or 1 when the load average fills them)")
    p.add_argument("--experiments", default=",".join(DEMO_RUNS),
                   help=f"paper experiments to run, comma-separated, among {', '.join(DEMO_RUNS)} ('' skips)")
    p.add_argument("--runs", default="runs/demo", help="folder of the demo's run folders (replaced on each demo)")
    return p


def main(argv=None) -> int:
    p = parser()
    args = p.parse_args(argv)
    names = [e for e in args.experiments.split(",") if e]
    unknown = [e for e in names if e not in DEMO_RUNS]
    if unknown:
        p.error(f"--experiments: unknown {', '.join(unknown)}; choose among {', '.join(DEMO_RUNS)}")
    if args.large_n != "auto" and not args.large_n.isdigit():
        p.error(f"--large-n must be auto or a number, got {args.large_n!r}")
    if args.threads < 1 or args.kernel_threads < 0 or args.mi_steps < 0 or args.batch < 2 or args.eval_n < 2 or args.mi <= 0:
        p.error("--threads >= 1, --kernel-threads >= 0, --mi-steps >= 0, --batch >= 2, --eval-n >= 2 and --mi > 0 needed")
    runs = Path(args.runs)
    if runs.exists() and not runs.is_dir():
        p.error(f"--runs: {runs} is a file, not a folder")

    t_start = time.perf_counter()
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    ext = _ext.status()
    kernels = ext["how"] if ext["module"] is not None else f"none, reference only ({ext['error']})"
    cpus = os.cpu_count() or 1
    kernel_threads = args.kernel_threads or (1 if load >= cpus else torch.get_num_threads())
    why = ("--kernel-threads" if args.kernel_threads else
           "the load average fills the cores" if load >= cpus else "all cores")
    print(f"fastmi demo: torch {torch.__version__}, {cpus} CPUs, load average {load:.1f}; kernels: {kernels}\n"
          f"threads: {kernel_threads} in sections 1-2 ({why}), {args.threads} in training (small matrices)",
          flush=True)
    before, omp = torch.get_num_threads(), os.environ.get("OMP_NUM_THREADS")
    torch.set_num_threads(kernel_threads)
    os.environ["OMP_NUM_THREADS"] = str(kernel_threads)   # the measuring child processes
    try:
        for n in args.sizes:
            demo_kernels.run(n, compile_reference=not args.no_compile)
        if args.large_n != "0":
            demo_large_batch.run(args.large_n if args.large_n == "auto" else int(args.large_n), args.large_d)
    finally:
        torch.set_num_threads(before)
        if omp is None:
            os.environ.pop("OMP_NUM_THREADS")
        else:
            os.environ["OMP_NUM_THREADS"] = omp
    if args.mi_steps:
        demo_mi.run(mi=args.mi, dim=args.dim, batch=args.batch, steps=args.mi_steps, eval_n=args.eval_n,
                    eval_batches=4, seed=args.seed, threads=args.threads)
    if names:
        print(f"\n4. Paper experiments with fastmi's losses ({args.threads} thread{'s' * (args.threads > 1)}):",
              flush=True)
        for name in names:
            run_paper_experiment(name, runs, args.threads)
    print(f"\nfastmi demo: done in {time.perf_counter() - t_start:.0f} s. Next: fastmi run --list; make bench; "
          "README.md", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
