"""Choi & Lee, appendix D.4: the 20-D Gaussian MI staircase (Poole et al.'s benchmark) with every
estimator and its regularized version.

x, eps ~ N(0, I_20), y = rho x + sqrt(1 - rho^2) eps with rho set for MI 2, 4, 6, 8, 10 nats, 4000
steps each, batch 64. The concat critic MLP 40-256-256-1 (Keras normal init, sigma 0.05) scores all
64 x 64 pairs (diagonal = joint), Adam 5e-4. Estimators: InfoNCE, DV, NWJ, TUBA, JS, SMILE(tau = 10)
and ReInfoNCE, ReDV, ReNWJ, ReTUBA, ReJS, ReSMILE (lambda = 1), all through fastmi's fused losses.
Outputs: the staircase plot (EMA span 200, true MI dashed) and bias, variance and MSE per stage.
"""
from __future__ import annotations

import dataclasses
import math
import sys

import numpy as np
import torch

from .. import functional as F
from ..data import correlated_gaussian, mi_staircase
from ..models import PairwiseConcatCritic, keras_normal_init_
from . import _claims_remine, plotting, runner
from . import settings as checks

NAME = "remine_gaussian"
SUMMARY = "Choi & Lee D.4: 20-D Gaussian staircase 2..10 nats, 6 estimators vs their regularized versions"
BASE = ("infonce", "dv", "nwj", "tuba", "js", "smile")
REQUIRES = {"matplotlib": "its figures"}
LABELS = {"infonce": "InfoNCE", "dv": "DV (MINE)", "nwj": "NWJ", "tuba": "TUBA", "js": "JS", "smile": "SMILE"}


@dataclasses.dataclass
class Config:
    """Paper defaults (appendix D.4, experiments.py)."""
    dim: int = 20
    levels: tuple = (2.0, 4.0, 6.0, 8.0, 10.0)
    steps_per_level: int = 4000
    first_step_zero: bool = True          # the authors' schedule rounds the first step's MI to 0
    batch: int = 64
    hidden: tuple = (256, 256)
    init_std: float = 0.05
    lr: float = 5e-4
    cubic: bool = False
    estimators: tuple = runner.subset_field(BASE + tuple("re" + b for b in BASE))
    reg_weight: float = 1.0
    smile_clip: float = 10.0
    renwj_clip: float = 10.0              # ReNWJ / ReTUBA estimate on clip(T, -10, 10)
    ema_span: int = runner.runner_field(200)
    ckpt_every: int = runner.runner_field(1000)

    def validate(self):
        known = BASE + tuple("re" + b for b in BASE)
        checks.items(self, "estimators", lambda e: e in known, f"estimators among {', '.join(known)}")
        checks.int_at_least(self, 1, "steps_per_level", "dim", "ema_span")
        checks.int_at_least(self, 2, "batch")
        checks.int_at_least(self, 0, "ckpt_every")
        checks.items(self, "levels", lambda v: checks.is_number(v) and v >= 0, "MI values >= 0 (nats)")
        checks.items(self, "hidden", checks.positive_ints, "positive ints")
        checks.positive(self, "init_std", "lr", "smile_clip", "renwj_clip")
        checks.non_negative(self, "reg_weight")


QUICK = {"steps_per_level": 150, "ema_span": 30, "ckpt_every": 250}


def loss_of(name: str, cfg: Config, backend: str):
    """scores (B x B, diagonal = joint) -> MIResult for estimator ``name``."""
    lam, kw = cfg.reg_weight, {"backend": backend}
    table = {
        "infonce": lambda s: F.infonce(s, **kw),
        "dv": lambda s: F.dv(s, **kw),
        "nwj": lambda s: F.nwj(s, **kw),
        "tuba": lambda s: F.tuba(s, **kw),
        "js": lambda s: F.js(s, **kw),
        "smile": lambda s: F.smile(s, clip=cfg.smile_clip, **kw),
        "reinfonce": lambda s: F.infonce(s, reg_weight=lam, **kw),
        "redv": lambda s: F.dv(s, reg_weight=lam, **kw),
        "renwj": lambda s: F.nwj(s, clip=cfg.renwj_clip, reg_weight=lam, **kw),
        "retuba": lambda s: F.tuba(s, clip=cfg.renwj_clip, reg_weight=lam, **kw),
        "rejs": lambda s: F.js(s, reg_weight=lam, reg_target=0.0, **kw),   # Gaussian code: bias 0
        "resmile": lambda s: F.smile(s, clip=cfg.smile_clip, reg_weight=lam, **kw),
    }
    return table[name]


def schedule(cfg: Config) -> np.ndarray:
    mi = mi_staircase(cfg.levels, cfg.steps_per_level)
    if cfg.first_step_zero:
        mi[0] = 0.0
    return mi


def train(ctx: runner.RunContext, cfg: Config, name: str) -> runner.JobResult:
    torch.manual_seed(ctx.job_seed(name))
    critic = keras_normal_init_(PairwiseConcatCritic(cfg.dim, cfg.dim, cfg.hidden), cfg.init_std).to(ctx.device)
    opt = torch.optim.Adam(critic.parameters(), lr=cfg.lr)
    gen = torch.Generator().manual_seed(ctx.job_seed(name))
    loss_fn, mis = loss_of(name, cfg, ctx.backend), schedule(cfg)

    def step(i):
        x, y = correlated_gaussian(cfg.batch, cfg.dim, float(mis[i]), cubic=cfg.cubic, generator=gen)
        loss, mi = loss_fn(critic(x.to(ctx.device), y.to(ctx.device)))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return {"mi": mi, "true_mi": float(mis[i])}

    return ctx.loop(name, {"critic": critic, "opt": opt, "gen": gen}, step, len(mis), ckpt_every=cfg.ckpt_every)


def stage_stats(cfg: Config, res: runner.JobResult) -> list:
    """Bias, variance and MSE of the per-step estimates in each stage (non-finite steps counted)."""
    est, true = plotting.column(res.rows, "mi"), plotting.column(res.rows, "true_mi")
    out = []
    for k, level in enumerate(cfg.levels):
        sl = slice(k * cfg.steps_per_level, (k + 1) * cfg.steps_per_level)
        e, t = est[sl], true[sl]
        ok = np.isfinite(e) & (t == level)
        if not ok.any():
            out.append({"mi": level, "bias": math.nan, "variance": math.nan, "mse": math.nan,
                        "nonfinite": int((~np.isfinite(e)).sum())})
            continue
        e = e[ok]
        out.append({"mi": level, "bias": float(e.mean() - level), "variance": float(e.var()),
                    "mse": float(np.mean((e - level) ** 2)), "nonfinite": int((~np.isfinite(est[sl])).sum())})
    return out


def _plot(path, cfg: Config, runs: dict):
    fig, axes = plotting.grid(len(runs), max(1, min(6, len(runs) // 2 or 1)), size=(3.2, 2.8))
    for ax, (name, res) in zip(axes, runs.items()):
        est, true = plotting.column(res.rows, "mi"), plotting.column(res.rows, "true_mi")
        steps = np.arange(len(est))
        plotting.curve(ax, steps, est, lw=0.3, alpha=0.35, c="tab:blue")   # non-finite steps: the diverged marker
        ax.plot(plotting.ema(est, cfg.ema_span), lw=1.0, c="tab:blue")
        ax.plot(true, "k--", lw=0.8)
        ax.set_ylim(-1, max(cfg.levels) + 2)   # a window on the staircase: estimates beyond it leave the frame
        base = name[2:] if name.startswith("re") and name[2:] in BASE else name
        off = int(np.sum(np.isfinite(est) & ((est < -1) | (est > max(cfg.levels) + 2))))
        plotting.labels(ax, "step", "MI estimate (nats)", ("Re" if base != name else "") + LABELS[base]
                        + (f" ({off} steps off the axis)" if off else ""))
        if ax.get_legend_handles_labels()[0]:
            ax.legend()
    fig.suptitle(f"20-D Gaussian staircase{' (cubic)' if cfg.cubic else ''}: estimates, EMA span {cfg.ema_span}, "
                 "true MI dashed", fontsize=10)
    plotting.save(fig, path)


def _f(v, spec=".2f"):
    return "nan" if not math.isfinite(v) else format(v, spec)


def table(cfg: Config, stats: dict) -> str:
    lv = cfg.levels
    cells = {name: [f"{_f(s['bias'], '+.2f')} / {_f(s['variance'])} / {_f(s['mse'])}" for s in st]
             for name, st in stats.items()}
    heads = [f"I={v:g}" for v in lv]
    # Each column as wide as its widest cell, so a diverging estimator's large numbers never run together.
    widths = [max([len(h)] + [len(c[i]) for c in cells.values() if i < len(c)]) + 3 for i, h in enumerate(heads)]
    lines = [f"remine_gaussian (Choi & Lee D.4): bias / variance / MSE per stage, {cfg.steps_per_level} steps each, "
             f"batch {cfg.batch}{', cubic' if cfg.cubic else ''}",
             f"{'estimator':<12}" + "".join(h.rjust(w) for h, w in zip(heads, widths))]
    for name, row in cells.items():
        lines.append(f"{name:<12}" + "".join(c.rjust(w) for c, w in zip(row, widths)))
    lines.append("Paper: a figure only, no numbers; claim: the regularized estimators track the staircase with "
                 "lower variance (ReDV, ReNWJ vs DV, NWJ in particular).")
    pairs = [(b, "re" + b) for b in BASE if b in stats and "re" + b in stats]
    if pairs:
        lines.append("Ours, mean variance over the stages (original -> regularized): " + ", ".join(
            f"{b} {_f(np.nanmean([s['variance'] for s in stats[b]]), '.3f')} -> "
            f"{_f(np.nanmean([s['variance'] for s in stats[r]]), '.3f')}" for b, r in pairs))
    lines.append(runner.differences_text(cfg))
    return "\n".join(lines)


def run(cfg: Config, ctx: runner.RunContext) -> dict:
    runs = {name: train(ctx, cfg, name) for name in cfg.estimators}
    runner.write_metrics(ctx.run_dir / "metrics.csv", runs)
    order = [n for n in cfg.estimators if not n.startswith("re")] + [n for n in cfg.estimators if n.startswith("re")]
    _plot(ctx.run_dir / "staircase.png", cfg, {n: runs[n] for n in order})
    stats = {n: stage_stats(cfg, runs[n]) for n in order}
    steps = len(schedule(cfg))
    return {"stages": stats,
            "seconds_per_step": {n: runs[n].seconds / steps for n in order},
            "table": table(cfg, stats), "claims": _claims_remine.gaussian(cfg, stats, bool(runner.differences(cfg)))}


if __name__ == "__main__":
    raise SystemExit(runner.main(sys.argv[1:], module=sys.modules[__name__]))
