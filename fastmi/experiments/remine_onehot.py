"""Choi & Lee, appendix D.2 / Figures 1-5: drift and explosion of DV and NWJ on one-hot pairs, and
their removal by the regularizer (ReDV / ReNWJ, Figure 5 as identified in docs/papers/003-choi-lee.md);
the target sweep of Figure 4.

x is uniform over N = 16 one-hot vectors and y = x (I = log 16 = 2.773 nats). The critic is
concat -> Linear(32, 64) -> ReLU -> Linear(64, 1, no bias), trained with SGD (lr 0.1) for 3000 steps
on B joint pairs and B independently drawn marginal pairs, with batch 100 (stable) and 32 (unstable).
Reported: the drift of the second term (slope over the last 1000 steps) for DV vs ReDV, the largest
critic magnitude of the batch-32 runs, and the final estimates; figures of the estimate, its two
terms, and the critic's outputs on all N x N pairs; ``batch_sweep.png``: the largest |T| and the final
estimate of each estimator against the batch size (``--set batches=100,64,32,16,8`` for a sweep).
"""
from __future__ import annotations

import dataclasses
import math
import sys

import numpy as np
import torch

from .. import functional as F
from ..data import all_onehot_pairs, onehot_mi, onehot_pairs
from ..models import ConcatCritic
from . import _claims_remine, plotting, runner
from . import settings as checks

NAME = "remine_onehot"
SUMMARY = "Choi & Lee Figs 1-5: DV/NWJ drift and explosion on 16 one-hot pairs vs ReDV/ReNWJ, target sweep"
ESTIMATORS = ("dv", "redv", "nwj", "renwj")
LABELS = {"dv": "DV", "redv": "ReDV", "nwj": "NWJ", "renwj": "ReNWJ"}
REQUIRES = {"matplotlib": "its figures"}


@dataclasses.dataclass
class Config:
    """Paper defaults (appendix D.2, comparing_onehot.ipynb)."""
    n_classes: int = 16
    hidden: int = 64
    lr: float = 0.1
    steps: int = 3000
    batches: tuple = (100, 32)            # stable, then the unstable small batch(es) of Figs 3 and 5
    reg_weight: float = 1.0               # lambda of ReDV / ReNWJ (Figs 1-3)
    reg_target: float = 0.0               # C
    renwj_clip: float = 10.0              # ReNWJ's estimate on clip(T, -10, 10) (authors' code)
    sweep_targets: tuple = (-5.0, -2.0, 0.0, 2.0, 5.0)   # Fig 4: C sweep of ReDV, batch = batches[0]
    sweep_reg_weight: float = 0.1
    drift_window: int = 1000              # slope of the second term over the last ... steps
    ckpt_every: int = runner.runner_field(500)

    def validate(self):
        checks.int_at_least(self, 2, "steps", "n_classes")
        checks.int_at_least(self, 1, "hidden", "drift_window")
        checks.int_at_least(self, 0, "ckpt_every")
        checks.items(self, "batches", checks.positive_ints, "positive ints")
        checks.items(self, "sweep_targets", checks.is_number, "numbers", nonempty=False)
        checks.positive(self, "lr", "renwj_clip")
        checks.non_negative(self, "reg_weight", "sweep_reg_weight")
        checks.need(checks.is_number(self.reg_target), "reg_target", "a number", self.reg_target)


QUICK = {"steps": 600, "drift_window": 200, "ckpt_every": 200}


def loss_of(name: str, cfg: Config, backend: str, reg_target=None, reg_weight=None):
    """The loss function (joint, marginal) -> MIResult of estimator ``name``."""
    lam = cfg.reg_weight if reg_weight is None else reg_weight
    c = cfg.reg_target if reg_target is None else reg_target
    if name == "dv":
        return lambda tj, tm: F.dv(joint=tj, marginal=tm, backend=backend)
    if name == "redv":
        return lambda tj, tm: F.dv(joint=tj, marginal=tm, reg_weight=lam, reg_target=c, backend=backend)
    if name == "nwj":
        return lambda tj, tm: F.nwj(joint=tj, marginal=tm, backend=backend)
    if name == "renwj":
        return lambda tj, tm: F.nwj(joint=tj, marginal=tm, clip=cfg.renwj_clip, reg_weight=lam, reg_target=c,
                                    backend=backend)
    raise ValueError(f"unknown estimator {name!r}")


def _terms(name: str, tj: torch.Tensor, tm: torch.Tensor, cfg: Config):
    """(first, second) term of the estimate: mean T_j and log mean e^T_m (DV) or mean e^(T_m - 1) (NWJ)."""
    if name in ("dv", "redv"):
        return tj.mean(), torch.logsumexp(tm, 0) - math.log(tm.numel())
    if name == "renwj":
        tj, tm = tj.clamp(-cfg.renwj_clip, cfg.renwj_clip), tm.clamp(-cfg.renwj_clip, cfg.renwj_clip)
    return tj.mean(), torch.exp(tm - 1).mean()


def train(ctx: runner.RunContext, cfg: Config, job: str, name: str, batch: int, **loss_kw) -> runner.JobResult:
    """Train one critic with estimator ``name``; one metrics row per step."""
    torch.manual_seed(ctx.job_seed(job))
    critic = ConcatCritic(2 * cfg.n_classes, (cfg.hidden,), last_bias=False).to(ctx.device)
    opt = torch.optim.SGD(critic.parameters(), lr=cfg.lr)
    gen = torch.Generator().manual_seed(ctx.job_seed(job))
    loss_fn = loss_of(name, cfg, ctx.backend, **loss_kw)

    def step(_):
        joint, marginal = onehot_pairs(batch, cfg.n_classes, generator=gen, device=ctx.device)
        tj, tm = critic(joint), critic(marginal)
        loss, mi = loss_fn(tj, tm)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        with torch.no_grad():
            first, second = _terms(name, tj, tm, cfg)
            big = torch.cat([tj, tm]).abs().max()
        return {"mi": mi, "first": first, "second": second, "t_joint": tj.mean().detach(),
                "t_marginal": tm.mean().detach(), "max_abs_t": big}

    def finish():
        with torch.no_grad():
            out = critic(all_onehot_pairs(cfg.n_classes, ctx.device)).reshape(cfg.n_classes, cfg.n_classes)
        return {"critic_outputs": out.cpu()}

    return ctx.loop(job, {"critic": critic, "opt": opt, "gen": gen}, step, cfg.steps, ckpt_every=cfg.ckpt_every,
                    finish=finish)


def slope(values: np.ndarray) -> float:
    """Least-squares slope per step (NaN if the window holds a non-finite value)."""
    if len(values) < 2 or not np.isfinite(values).all():
        return math.nan
    return float(np.polyfit(np.arange(len(values), dtype=np.float64), values, 1)[0])


def summarize(cfg: Config, res: runner.JobResult) -> dict:
    """Drift, magnitude and final values of one run."""
    w = min(cfg.drift_window, cfg.steps)
    tail = min(500, cfg.steps)
    mi, second, big = (plotting.column(res.rows, k) for k in ("mi", "second", "max_abs_t"))
    finite = np.isfinite(mi)
    return {"second_term_slope": slope(second[-w:]),
            "final_mi": float(np.mean(mi[-tail:])), "final_second": float(np.mean(second[-tail:])),
            "max_abs_t": float(np.nanmax(big)) if np.isfinite(big).any() else math.inf,
            "nonfinite_steps": int((~finite).sum()), "first_nonfinite_step": int(np.argmin(finite)) if not finite.all() else None}


def _plot_runs(path, cfg, runs: dict, title: str, log=False):
    fig, axes = plotting.grid(len(runs), 2, size=(5.0, 3.2))
    true = onehot_mi(cfg.n_classes)
    for ax, (label, res) in zip(axes, runs.items()):
        est = label.split(" ")[0]
        second = "log mean e^T (marginal)" if "dv" in est else "mean e^(T-1) (marginal)"
        for key, lab in (("mi", "estimate"), ("first", "mean T (joint)"), ("second", second)):
            y = plotting.column(res.rows, key)
            plotting.curve(ax, np.arange(len(y)), y, label=lab, lw=0.8)
        ax.axhline(true, ls="--", c="k", lw=0.8, label=f"true MI = log {cfg.n_classes}")
        if log:
            ax.set_yscale("symlog")
        plotting.labels(ax, "SGD step", "value (nats)" + (", symlog" if log else ""), label)
        ax.legend()
    fig.suptitle(title)
    plotting.save(fig, path)


def _plot_outputs(path, cfg, runs: dict):
    fig, axes = plotting.grid(len(runs), 4, size=(3.0, 2.8))
    for ax, (label, res) in zip(axes, runs.items()):
        out = np.array(res.final["critic_outputs"], dtype=np.float64)
        im = ax.imshow(np.where(np.isfinite(out), out, np.nan), cmap="viridis")
        bad = ~np.isfinite(out)
        if bad.any():  # non-finite critic outputs: the diverged marker on their cells (imshow leaves them blank)
            r, c = np.nonzero(bad)
            ax.scatter(c, r, label=plotting.DIVERGED_LABEL, **{**plotting.DIVERGED_STYLE, "clip_on": True})
            ax.legend(fontsize=6)
        ax.set_title(f"{label}\njoint {np.mean(np.diag(out)):.2f}, marginal {np.mean(out):.2f}", fontsize=8)
        plotting.labels(ax, "y (one-hot index)", "x (one-hot index)")
        ax.grid(False)
        ax.figure.colorbar(im, ax=ax, fraction=0.046, label="T(x, y)")
    fig.suptitle("critic outputs T(x, y) after training (diagonal = joint pairs)")
    plotting.save(fig, path)


def _plot_sweep(path, cfg, runs: dict):
    fig, axes = plotting.grid(2, 2, size=(5.5, 3.5))
    for c, res in runs.items():
        for ax, key in zip(axes, ("second", "mi")):
            y = plotting.column(res.rows, key)
            plotting.curve(ax, np.arange(len(y)), y, label=f"C = {c:g}", lw=0.8)
    axes[1].axhline(onehot_mi(cfg.n_classes), ls="--", c="k", lw=0.8, label=f"true MI = log {cfg.n_classes}")
    plotting.labels(axes[0], "SGD step", "log mean e^T, marginal (nats)",
                    f"ReDV second term (lambda = {cfg.sweep_reg_weight:g})")
    plotting.labels(axes[1], "SGD step", "MI estimate (nats)", "ReDV estimate")
    for ax in axes:
        ax.legend()
    plotting.save(fig, path)


def _plot_batches(path, cfg, summary: dict):
    """Largest |T| (log scale) and final estimate against the batch size, one line per estimator (Figs 3
    and 5 in one view). An estimate that is not finite or beyond +-1e4 (an exploded DV) is the diverged
    marker with the estimator's name, so the estimates near log N stay readable; an estimator whose
    estimate was non-finite at some steps says so in the legend (its |T| is the largest finite one)."""
    fig, axes = plotting.grid(2, 2, size=(5.0, 3.6))
    batches = sorted(cfg.batches)
    for est in ESTIMATORS:
        runs = [summary[f"{est}-b{b}"] for b in batches]
        nan_at = [b for b, r in zip(batches, runs) if r["nonfinite_steps"]]
        label = LABELS[est] + (f" (non-finite steps at batch {', '.join(map(str, nan_at))})" if nan_at else "")
        for ax, key, limit in ((axes[0], "max_abs_t", math.inf), (axes[1], "final_mi", plotting.DIVERGED_ABS)):
            ys = [r[key] for r in runs]
            real = [(b, y) for b, y in zip(batches, ys) if not plotting.is_diverged(y, limit)]
            ax.plot([b for b, _ in real], [y for _, y in real], marker="o", ms=3, lw=1, label=label)
            plotting.mark_diverged(ax, batches, ys, limit, name=LABELS[est] + " ")
    if any(math.isfinite(r["max_abs_t"]) and r["max_abs_t"] > 0 for r in summary.values()):
        axes[0].set_yscale("log")
    axes[1].axhline(onehot_mi(cfg.n_classes), ls="--", c="k", lw=0.8, label=f"true MI = log {cfg.n_classes}")
    plotting.labels(axes[0], "batch size (pairs)", "largest finite |T| during training (log scale)",
                    "critic magnitude against batch size")
    plotting.labels(axes[1], "batch size (pairs)", "MI estimate, mean of the last 500 steps (nats)",
                    "final estimate against batch size")
    for ax in axes:
        ax.set_xscale("log", base=2)
        ax.set_xticks(batches, [str(b) for b in batches])
        ax.set_xlim(min(batches) / 1.25, max(batches) * 1.25)
        ax.minorticks_off()
        ax.legend(fontsize=6)
    fig.suptitle(f"one-hot, {cfg.steps} SGD steps, lambda = {cfg.reg_weight:g} (ReDV, ReNWJ)")
    plotting.save(fig, path)


def _fmt(v, spec=".3f"):
    """``v`` in ``spec``; NaN as "nan", and |v| >= 1e4 (an exploded run) in 3 significant digits so that
    the table's columns stay apart."""
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "nan"
    if abs(v) >= 1e4:
        spec = "+.3g" if spec.startswith("+") else ".3g"
    return format(v, spec)


def table(cfg: Config, summary: dict, sweep: dict) -> str:
    true = onehot_mi(cfg.n_classes)
    lines = [f"remine_onehot (Choi & Lee, Figs 1-5): N = {cfg.n_classes}, true MI = {true:.3f} nats, "
             f"{cfg.steps} SGD steps, lr {cfg.lr}",
             f"{'run':<14}{'final MI':>10}{'2nd term':>10}{'slope/1k steps':>16}{'max |T|':>11}{'non-finite':>12}"]
    for key, s in summary.items():
        lines.append(f"{key:<14}{_fmt(s['final_mi']):>10}{_fmt(s['final_second']):>10}"
                     f"{_fmt(s['second_term_slope'] * 1000, '+.3f'):>16}{_fmt(s['max_abs_t'], '.3g'):>11}"
                     f"{s['nonfinite_steps']:>12}")
    lines.append("Paper (figures, no numbers): DV's second term drifts at batch 100 while ReDV's stays at C; at "
                 "batch 32 DV/NWJ critic outputs explode (Fig 3), ReDV/ReNWJ stay bounded (Fig 5); Fig 4: ReDV's "
                 "second term settles at C while the estimate stays at log N.")
    b0 = cfg.batches[0]
    if f"dv-b{b0}" in summary and f"redv-b{b0}" in summary:
        d, r = summary[f"dv-b{b0}"], summary[f"redv-b{b0}"]
        w = min(cfg.drift_window, cfg.steps)
        lines.append(f"Ours, batch {b0}: drift of the second term (least-squares slope x {w} steps, over the last "
                     f"{w} steps) DV {_fmt(d['second_term_slope'] * w, '+.3f')} vs ReDV "
                     f"{_fmt(r['second_term_slope'] * w, '+.3f')}.")
    small = [b for b in cfg.batches if b != b0]
    for b in small:
        mags = ", ".join(f"{e} {_fmt(summary[f'{e}-b{b}']['max_abs_t'], '.3g')}" for e in ESTIMATORS
                         if f"{e}-b{b}" in summary)
        lines.append(f"Ours, batch {b}: largest |T| during training: {mags}.")
    if sweep:
        lines.append(f"Target sweep (ReDV, lambda = {cfg.sweep_reg_weight:g}, batch {b0}): "
                     + ", ".join(f"C={c:g}: 2nd term {_fmt(s['final_second'], '.2f')}, MI {_fmt(s['final_mi'], '.2f')}"
                                 for c, s in sweep.items()))
    lines.append(runner.differences_text(cfg))
    return "\n".join(lines)


def run(cfg: Config, ctx: runner.RunContext) -> dict:
    runs = {}
    for batch in cfg.batches:
        for est in ESTIMATORS:
            runs[f"{est}-b{batch}"] = train(ctx, cfg, f"{est}-b{batch}", est, batch)
    sweep_runs = {}
    for c in cfg.sweep_targets:
        sweep_runs[c] = train(ctx, cfg, f"redv-b{cfg.batches[0]}-C{c:g}", "redv", cfg.batches[0], reg_target=c,
                              reg_weight=cfg.sweep_reg_weight)
    jobs = dict(runs)
    jobs.update({f"redv-b{cfg.batches[0]}-C{c:g}": r for c, r in sweep_runs.items()})
    runner.write_metrics(ctx.run_dir / "metrics.csv", jobs)
    for b in cfg.batches:
        sel = {f"{e} (batch {b})": runs[f"{e}-b{b}"] for e in ESTIMATORS}
        _plot_runs(ctx.run_dir / f"terms_batch{b}.png", cfg, sel, f"one-hot, batch {b}: estimate and its two terms",
                   log=b != cfg.batches[0])
    _plot_outputs(ctx.run_dir / "critic_outputs.png", cfg, {k.replace("-b", " b"): v for k, v in runs.items()})
    if sweep_runs:
        _plot_sweep(ctx.run_dir / "target_sweep.png", cfg, sweep_runs)
    summary = {k: summarize(cfg, r) for k, r in runs.items()}
    if len(cfg.batches) > 1:
        _plot_batches(ctx.run_dir / "batch_sweep.png", cfg, summary)
    sweep = {c: summarize(cfg, r) for c, r in sweep_runs.items()}
    return {"true_mi": onehot_mi(cfg.n_classes), "runs": summary,
            "target_sweep": {f"{c:g}": s for c, s in sweep.items()}, "table": table(cfg, summary, sweep),
            "claims": _claims_remine.onehot(cfg, summary, sweep, bool(runner.differences(cfg)))}


if __name__ == "__main__":
    raise SystemExit(runner.main(sys.argv[1:], module=sys.modules[__name__]))
