"""fastmi.estimate_mi on correlated Gaussians, where the true MI is known.

    x ~ N(0, I_d),  y = rho x + sqrt(1 - rho^2) e,  e ~ N(0, I_d):   I(X; Y) = -d/2 log(1 - rho^2)

For each estimator it prints the held-out estimate and its standard error, the true MI, the bound's
value at the true critic (T* = log p(y|x) / p(y), plus 1 for NWJ, the best baseline / u, the true q(y|x)) on fresh
batches of the same size: the bias that no training can remove (InfoNCE's log-batch cap, CLUB's
looseness), and the wall time.

    python examples/estimate_mi_gaussian.py                 # every estimator (a few minutes)
    python examples/estimate_mi_gaussian.py --quick         # infonce, nwj and l1out on fewer samples
    python examples/estimate_mi_gaussian.py --estimators infonce,flo --json out.json

Runs single-threaded by default (--threads): the batches are small, and threads only add overhead.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time

import torch

import fastmi
import fastmi.functional as F

ALL = ["infonce", "dv", "nwj", "js", "smile", "mine", "tuba", "alpha_tuba", "flo", "club", "l1out"]
QUICK = ["infonce", "nwj", "l1out"]
JOINT = {"nwj", "js", "smile", "mine", "tuba", "alpha_tuba", "flo"}  # torch-mist's default critic type for these


def correlated_gaussians(n: int, d: int, mi: float, seed: int):
    """(x, y, rho) with I(X; Y) = mi nats spread evenly over d independent coordinate pairs."""
    rho = math.sqrt(1 - math.exp(-2 * mi / d))
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g)
    return x, rho * x + math.sqrt(1 - rho**2) * torch.randn(n, d, generator=g), rho


def true_scores(x, y, rho):
    """T*(x_i, y_j) = log p(y_j | x_i) - log p(y_j), n x n."""
    v = 1 - rho**2
    diff = y[None, :, :] - rho * x[:, None, :]
    return (-0.5 * math.log(v) - diff**2 / (2 * v) + y[None, :, :] ** 2 / 2).sum(-1)


def value_at_truth(estimator: str, x, y, rho, options: dict) -> float:
    """The bound of the true critic on one batch (the best any training can reach, in expectation)."""
    if estimator in ("club", "l1out"):
        mu, logvar = rho * x, torch.full_like(x, math.log(1 - rho**2))
        return float(getattr(F, f"gaussian_{estimator}")(mu, logvar, y).mi)
    S = true_scores(x, y, rho)
    opts = {k: v for k, v in options.items() if k in ("alpha", "clip", "negatives")}
    if estimator in ("dv", "mine"):
        return float(F.dv(S).mi)
    if estimator == "nwj":
        return float(F.nwj(S + 1).mi)  # NWJ's optimal critic is 1 + log p(y|x) / p(y)
    if estimator == "js":
        return float(F.js(S, value="nwj_shifted").mi)
    if estimator in ("tuba", "alpha_tuba"):
        return float(getattr(F, estimator)(S, 0.0, **opts).mi)  # log E_y e^T*(x, y) = 0
    if estimator == "flo":
        return float(F.flo(S, -S.diagonal()).mi)  # u* = log E_y' e^(T*(x, y') - T*(x, y)) = -T*(x, y)
    return float(getattr(F, estimator)(S, **opts).mi)


def expected_value(estimator, d, mi, batch_size, options, batches=200, seed=123):
    x, y, rho = correlated_gaussians(batches * batch_size, d, mi, seed)
    vals = [value_at_truth(estimator, x[k:k + batch_size], y[k:k + batch_size], rho, options)
            for k in range(0, batches * batch_size, batch_size)]
    return sum(vals) / len(vals)


def run(estimators, *, n, d, mi, batch_size, max_steps, seed, critic, progress):
    x, y, _ = correlated_gaussians(n, d, mi, seed)
    rows = []
    for name in estimators:
        kind = critic or ("joint" if name in JOINT else "separable")
        start = time.perf_counter()
        res = fastmi.estimate_mi(x, y, name, kind, batch_size=batch_size, max_steps=max_steps, seed=seed,
                                 progress=progress)
        wall = time.perf_counter() - start
        rows.append(dict(estimator=name, critic=kind if name not in ("club", "l1out") else "gaussian q(y|x)",
                         estimate=res.estimate, stderr=res.stderr, true_mi=mi,
                         at_true_critic=expected_value(name, d, mi, batch_size, {}), steps=res.steps,
                         best_step=res.best_step, seconds=wall))
        print(format_row(rows[-1]), flush=True)
    return rows


def format_row(r) -> str:
    return (f"{r['estimator']:<11} {r['critic']:<16} {r['estimate']:8.3f} +- {r['stderr']:.3f}   true {r['true_mi']:.3f}"
            f"   at true critic {r['at_true_critic']:7.3f}   {r['steps']:5d} steps  {r['seconds']:6.1f} s")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help=f"only {QUICK}, 8000 samples, at most 1500 steps")
    p.add_argument("--estimators", help="comma-separated subset of " + ",".join(ALL))
    p.add_argument("--samples", type=int, default=20000)
    p.add_argument("--dims", type=int, default=5)
    p.add_argument("--mi", type=float, default=2.0, help="the true MI in nats")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--max-steps", type=int, default=3000)
    p.add_argument("--critic", choices=["separable", "joint"], help="one critic for all (default: per estimator)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--json", help="write the rows to this file (it must not exist)")
    p.add_argument("--no-progress", action="store_true")
    a = p.parse_args(argv)
    names = QUICK if a.quick and not a.estimators else (a.estimators.split(",") if a.estimators else ALL)
    bad = [e for e in names if e not in ALL]
    problems = [f"unknown estimator(s) {bad}; choose from {ALL}"] if bad else []
    if a.mi <= 0 or a.dims < 1 or a.samples < 10 * a.batch_size or a.threads < 1:
        problems.append("need --mi > 0, --dims >= 1, --samples >= 10 * --batch-size, --threads >= 1")
    if a.json:
        import os
        if os.path.exists(a.json):
            problems.append(f"--json {a.json} exists; not overwriting it")
    if problems:
        print("estimate_mi_gaussian: " + "; ".join(problems), file=sys.stderr)
        return 2
    torch.set_num_threads(a.threads)
    n, steps = (8000, min(a.max_steps, 1500)) if a.quick else (a.samples, a.max_steps)
    print(f"x, y: {a.dims}-D correlated Gaussians, I(X;Y) = {a.mi} nats, {n} samples, batch {a.batch_size}, "
          f"{torch.get_num_threads()} thread(s)")
    start = time.perf_counter()
    rows = run(names, n=n, d=a.dims, mi=a.mi, batch_size=a.batch_size, max_steps=steps, seed=a.seed, critic=a.critic,
               progress=not a.no_progress)
    print(f"total {time.perf_counter() - start:.1f} s")
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"config": vars(a) | {"samples_used": n, "max_steps_used": steps}, "rows": rows,
                       "torch": torch.__version__, "fastmi": fastmi.__version__}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
