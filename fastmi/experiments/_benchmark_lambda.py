"""Choi & Lee Figure 6: benchmark performance against the regularization strength lambda.

For every estimator of a benchmark run (``_benchmark``), the MI estimate (mean per-batch estimate of
the last epoch) and the test accuracy of the original loss (lambda = 0, drawn as a dashed level) and
of each regularized loss, lambda in ``reg_weights`` (the paper: {0.1, 0.01, 0.001}, on CLB), as mean
and 95% interval over seeds. The paper reads it as: on CIFAR-10 lambda trades test accuracy against
MI estimation quality, on CIFAR-100 the two align.
"""
from __future__ import annotations

import math

import numpy as np

from . import claims, plotting


def _lams(summary: dict) -> list:
    return sorted({float(k) for s in summary.values() for k in s["all"] if k != "0"})


def _fmt(v) -> str:
    """A cell value: "diverged" when not finite, 3 significant digits beyond 1e4 (a blown-up estimate)."""
    if not math.isfinite(v):
        return "diverged"
    return f"{v:.3g}" if abs(v) >= 1e4 else f"{v:.3f}"


def plot(path, cfg, bench: str, summary: dict) -> None:
    """Two panels (MI estimate, test accuracy) against lambda on a log axis, one line per estimator, the
    original (lambda = 0) as a dashed level in the estimator's colour. A value that diverged (not finite,
    or beyond +-1e4) is the shared diverged marker named after its estimator, never a point that would
    flatten the rest; a diverged original is named in the legend. Symlog when a real value passes 50."""
    lams = _lams(summary)
    fig, axes = plotting.grid(2, 2, size=(5.0, 3.6))
    colors = plotting.pyplot().rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, key, label in ((axes[0], "mi", "MI estimate (nats, last epoch)"), (axes[1], "acc", "test accuracy")):
        real = []
        for i, (est, s) in enumerate(summary.items()):
            c = colors[i % len(colors)]
            vals = np.array([s["all"][f"{lam:g}"][key] for lam in lams], dtype=np.float64)
            ci = np.array([s["all"][f"{lam:g}"][f"{key}_ci"] for lam in lams], dtype=np.float64)
            ok = np.array([not plotting.is_diverged(v) for v in vals], dtype=bool)
            orig = s["all"]["0"][key]
            name = est if not plotting.is_diverged(orig) else f"{est} (original: {_fmt(orig)})"
            ax.errorbar(np.array(lams)[ok], vals[ok], yerr=np.where(np.isfinite(ci), ci, 0.0)[ok], color=c,
                        marker="o", ms=4, capsize=2, lw=1.2, label=name)
            real += [abs(v) for v in vals[ok]]
            if not plotting.is_diverged(orig):
                ax.axhline(orig, color=c, ls="--", lw=0.8, alpha=0.7)
                real.append(abs(orig))
            plotting.mark_diverged(ax, lams, vals, name=f"{est} ")
        ylabel = label
        if real and max(real) > 50:    # one estimator far off would flatten the others
            ax.set_yscale("symlog", linthresh=1.0)
            ax.margins(y=0.08)
            ylabel += ", symlog scale"
        ax.set_xscale("log")
        if lams:   # from the lambdas, not the real points: a lambda where everything diverged stays inside
            ax.set_xlim(min(lams) / 1.6, max(lams) * 1.6)
        plotting.labels(ax, "regularization strength lambda", ylabel)
        ax.set_title(f"{bench.upper()} {cfg.dataset}: {label.split(' (')[0]} vs lambda (dashed: original)",
                     fontsize=8)
        ax.legend(fontsize=7)
    plotting.save(fig, path)


def lines(summary: dict) -> list:
    """Figure 6 as text: per estimator, MI | accuracy at lambda = 0 and each lambda."""
    lams = _lams(summary)
    out = ["Figure 6 (MI | accuracy against lambda; 0 = original): "
           + "  ".join(f"lambda={lam:g}" for lam in [0.0] + lams)]
    for est, s in summary.items():
        cells = [f"{_fmt(s['all'][f'{lam:g}']['mi'])} | {_fmt(s['all'][f'{lam:g}']['acc'])}" for lam in [0.0] + lams]
        out.append(f"  {est:<8} " + "   ".join(cells))
    return out


def tradeoff(summary: dict) -> dict:
    """Per estimator, the Pearson correlation over the regularized lambdas of the mean MI estimate and the
    mean test accuracy (NaN with fewer than 3 finite lambdas or a constant column)."""
    out = {}
    for est, s in summary.items():
        pts = [(v["mi"], v["acc"]) for k, v in s["all"].items() if k != "0"
               and math.isfinite(v["mi"]) and math.isfinite(v["acc"])]
        if len(pts) < 3:
            out[est] = math.nan
            continue
        a = np.array(pts)
        sd = a.std(0)
        out[est] = float(np.corrcoef(a.T)[0, 1]) if (sd > 0).all() else math.nan
    return out


def claim(cfg, bench: str, summary: dict, paper_scale: bool) -> list:
    """The paper's reading of Figure 6 on CIFAR-10 CLB: lambda trades accuracy against MI estimation
    (a negative correlation over lambda for most estimators). Decided only on CIFAR-10 at the paper's
    epochs and batch with >= 3 lambdas; otherwise the correlations are reported and held is None."""
    if bench != "clb" or len(_lams(summary)) < 1:
        return []
    corr = tradeoff(summary)
    finite = {e: c for e, c in corr.items() if math.isfinite(c)}
    measured = ("corr(MI, accuracy) over lambda: " + ", ".join(f"{e} {c:+.2f}" for e, c in finite.items())
                if finite else "fewer than 3 lambdas with finite results per estimator: no correlation")
    decidable = paper_scale and cfg.dataset == "cifar10" and len(finite) >= 3
    held = (sum(c < 0 for c in finite.values()) > len(finite) / 2) if decidable else None
    return [claims.claim("Fig 6: on CIFAR-10 CLB, lambda trades test accuracy against MI estimation quality", measured,
                         held, shown_by=None if held else "fastmi run remine_clb --data-dir DIR --device cuda "
                         "(CIFAR-10, the paper's 100 epochs, 5 seeds; GPU days, not run here)").as_dict()]
