"""Time remine_gaussian's training step at the paper's settings (batch 64, critic 40-256-256-1 on all
64 x 64 pairs) with the fused losses and with the reference backend, then extrapolate to the full
run (12 estimators x 20000 steps).

    python -m bench.time_remine_gaussian [--steps 50] [--threads 1]

Each estimator runs --steps steps per backend after 5 warm-up steps, backends interleaved per
estimator so that both see the same machine load. Prints ms/step and the extrapolated hours.
"""
from __future__ import annotations

import argparse
import time

import torch

from fastmi.data import correlated_gaussian
from fastmi.experiments import remine_gaussian as g
from fastmi.models import PairwiseConcatCritic, keras_normal_init_


def time_steps(name: str, backend: str, steps: int, cfg: g.Config) -> float:
    torch.manual_seed(0)
    critic = keras_normal_init_(PairwiseConcatCritic(cfg.dim, cfg.dim, cfg.hidden), cfg.init_std)
    opt = torch.optim.Adam(critic.parameters(), lr=cfg.lr)
    loss_fn, gen = g.loss_of(name, cfg, backend), torch.Generator().manual_seed(0)
    t0 = 0.0
    for i in range(steps + 5):
        if i == 5:
            t0 = time.perf_counter()
        x, y = correlated_gaussian(cfg.batch, cfg.dim, 6.0, generator=gen)
        loss, _ = loss_fn(critic(x, y))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return (time.perf_counter() - t0) / steps


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    cfg = g.Config()
    total = {"auto": 0.0, "reference": 0.0}
    print(f"{'estimator':<11}{'fused ms/step':>14}{'reference ms/step':>19}")
    for name in cfg.estimators:
        t = {b: time_steps(name, b, args.steps, cfg) for b in ("auto", "reference")}
        for b in t:
            total[b] += t[b]
        print(f"{name:<11}{t['auto'] * 1e3:>14.1f}{t['reference'] * 1e3:>19.1f}")
    n = len(cfg.levels) * cfg.steps_per_level
    for b, s in total.items():
        print(f"full run ({len(cfg.estimators)} estimators x {n} steps), {b}: {s * n / 3600:.2f} h "
              f"(extrapolated from {args.steps} steps each, {args.threads} thread(s))")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
