"""``fastmi demo`` (``make demo``): estimate the MI of correlated Gaussians with several bounds
through the fused kernels, print the estimates beside the true value, then time fused vs
reference on score matrices, then run separable InfoNCE at a batch the dense path cannot hold, then
two short paper experiments (``fastmi run remine_onehot --quick``: Choi & Lee's one-hot drift, ~15 s;
``fastmi run nb_dms_2d`` on circles, moons and blobs: Neural Bayes' manifold separation, ~20 s).

Data: x, y in R^20 with I(x; y) known (``fastmi.data.correlated_gaussian``). Critic: separable,
T(x, y) = <f(x), g(y)> with two MLPs (20-256-256-32). Each estimator trains its own critic with
Adam (lr 5e-4) on fresh batches; the estimate is the mean over the last steps.
"""
from __future__ import annotations

import argparse
import math
import platform
import time

import torch
from torch import nn

from . import demo_large_batch
from .critic_lse.ops import FAMILY as _CRITIC_LSE
from . import functional as F
from .data import correlated_gaussian
from .timing import forward_backward, time_call

ESTIMATORS = {
    "InfoNCE": lambda s: F.infonce(s),
    "DV": lambda s: F.dv(s),
    "NWJ": lambda s: F.nwj(s),
    "JS (NWJ value)": lambda s: F.js(s),
    "SMILE (tau=5)": lambda s: F.smile(s, clip=5.0),
    "ReDV (lambda=0.1)": lambda s: F.dv(s, reg_weight=0.1),
}


def _mlp(dim_in: int, hidden: int, dim_out: int) -> nn.Module:
    return nn.Sequential(nn.Linear(dim_in, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
                         nn.Linear(hidden, dim_out))


def train_estimate(loss_fn, *, mi: float, dim: int, batch: int, steps: int, seed: int) -> float:
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    f, g = _mlp(dim, 256, 32), _mlp(dim, 256, 32)
    opt = torch.optim.Adam(list(f.parameters()) + list(g.parameters()), lr=5e-4)
    tail = []
    for step in range(steps):
        x, y = correlated_gaussian(batch, dim, mi, generator=gen)
        scores = f(x) @ g(y).T
        loss, est = loss_fn(scores)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step >= steps - max(1, steps // 5):
            tail.append(float(est))
    return sum(tail) / len(tail) if tail else math.nan


def timing_table(sizes, repeat: int):
    rows = []
    for n in sizes:
        scores = torch.randn(n, n, generator=torch.Generator().manual_seed(n))
        for name, fn in (("infonce", F.infonce), ("dv", F.dv), ("nwj", F.nwj), ("smile", F.smile)):
            fused = time_call(forward_backward(lambda s: fn(s), scores), repeat=repeat)
            ref = time_call(forward_backward(lambda s: fn(s, backend="reference"), scores), repeat=repeat)
            rows.append((name, n, ref * 1e3, fused * 1e3, ref / fused))
    return rows


# the paper experiments of the demo and their arguments (each well under a minute on one core)
DEMO_RUNS = {
    "remine_onehot": ["--quick"],                                   # Choi & Lee: DV/NWJ drift vs ReDV/ReNWJ
    "nb_dms_2d": ["--set", "datasets=circles,moons,blobs"],          # Neural Bayes Fig 1 without the 6-min spirals
}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="fastmi demo", description=__doc__.split("\n\n")[0])
    p.add_argument("--mi", type=float, default=4.0, help="true MI in nats (default 4)")
    p.add_argument("--steps", type=int, default=2000)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--sizes", type=int, nargs="*", default=[1024, 2048])
    p.add_argument("--large-n", type=int, default=50000, help="batch of the large-batch section (0 skips it)")
    p.add_argument("--large-d", type=int, default=32)
    p.add_argument("--experiments", default="remine_onehot,nb_dms_2d",
                   help=f"paper experiments run at the end, comma-separated, among {', '.join(DEMO_RUNS)} ('' skips)")
    p.add_argument("--runs", default="runs", help="parent folder of the experiment's run folder")
    args = p.parse_args(argv)
    names = [e for e in args.experiments.split(",") if e]
    unknown = [e for e in names if e not in DEMO_RUNS]
    if unknown:
        p.error(f"--experiments: unknown {unknown}; choose among {', '.join(DEMO_RUNS)}")

    backend, _ = _CRITIC_LSE.select("auto", torch.empty(0), "demo")
    print(f"fastmi demo: torch {torch.__version__}, {torch.get_num_threads()} threads, backend for CPU tensors: {backend}")
    print(f"\nMI estimation: x, y in R^20, true I(x;y) = {args.mi:.3f} nats, batch {args.batch} "
          f"(InfoNCE is capped at log {args.batch} = {math.log(args.batch):.3f}), {args.steps} Adam steps each")
    print(f"{'estimator':<20}{'estimate':>10}{'true':>8}{'error':>9}{'time':>8}")
    for i, (name, fn) in enumerate(ESTIMATORS.items()):
        t0 = time.perf_counter()
        est = train_estimate(fn, mi=args.mi, dim=20, batch=args.batch, steps=args.steps, seed=args.seed + i)
        print(f"{name:<20}{est:>10.3f}{args.mi:>8.3f}{est - args.mi:>+9.3f}{time.perf_counter() - t0:>7.1f}s")

    print(f"\nForward+backward on an n x n float32 score matrix ({platform.processor() or platform.machine()}, "
          f"median of 5; torch.compile comparisons: make bench)")
    print(f"{'loss':<10}{'n':>6}{'reference ms':>14}{'fused ms':>10}{'speed-up':>10}")
    for name, n, ref, fused, ratio in timing_table(args.sizes, repeat=5):
        print(f"{name:<10}{n:>6}{ref:>14.2f}{fused:>10.2f}{ratio:>9.1f}x")
    if args.large_n:
        demo_large_batch.run(args.large_n, args.large_d)
    from .experiments import runner

    for name in names:
        cmd = [name, *DEMO_RUNS[name], "--out", args.runs, "--no-progress"]
        print(f"\nPaper experiment: fastmi run {' '.join(cmd)}")
        threads = torch.get_num_threads()
        runner.main(cmd)
        torch.set_num_threads(threads)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
