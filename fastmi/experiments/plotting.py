"""The figures' shared style and helpers (matplotlib, Agg backend: no display needed).

One style for every experiment: font sizes and a light grid (``pyplot``), every panel with an x and a
y label with units (``labels``; ``save`` warns about, and ``unlabeled`` lists, a panel without), and
diverged or non-finite values drawn as a red 'x' at the panel's edge with the legend entry
"diverged / non-finite" and the value written beside it (``mark_diverged``), never clipped into the
range of the real values nor drawn as 0:

    bars(ax, xs, values, width)    bars of the real values; NaN, +-inf and |v| > limit as the marker
    curve(ax, x, y)                a line with gaps where y is not finite, the marker at each gap's start
"""
from __future__ import annotations

import math
import sys

import numpy as np

DIVERGED_LABEL = "diverged / non-finite"
DIVERGED_STYLE = {"marker": "x", "color": "red", "s": 40, "linewidths": 1.5, "zorder": 5, "clip_on": False}
DIVERGED_ABS = 1e4     # a finite value beyond this (an MI estimate of -1e30) counts as diverged
STYLE = {"axes.titlesize": 9, "axes.labelsize": 8, "legend.fontsize": 7, "xtick.labelsize": 7,
         "ytick.labelsize": 7, "axes.grid": True, "grid.alpha": 0.3, "figure.titlesize": 10}
PROBLEMS: list = []    # panels saved without labels (the tests read this)


def pyplot():
    """matplotlib.pyplot with the non-interactive Agg backend and the shared style."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update(STYLE)
    return plt


def grid(n: int, ncols: int, size=(4.0, 3.0)):
    """A figure with n axes on ``ncols`` columns; returns (fig, flat list of the n axes)."""
    plt = pyplot()
    nrows = max(1, math.ceil(n / ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(size[0] * ncols, size[1] * nrows), squeeze=False)
    flat = list(axes.ravel())
    for ax in flat[n:]:
        ax.set_visible(False)
    return fig, flat[:n]


def labels(ax, xlabel: str, ylabel: str, title=None) -> None:
    """Axis labels (with units: 'MI estimate (nats)', 'test error (%)') and an optional title."""
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title is not None:
        ax.set_title(title)


def is_diverged(v, limit: float = DIVERGED_ABS) -> bool:
    return v is None or not math.isfinite(v) or abs(v) > limit


def mark_diverged(ax, xs, values, limit: float = DIVERGED_ABS, note: bool = True, name: str = "") -> int:
    """Draw each diverged value (None, NaN, +-inf, |v| > limit) as a red 'x' at the panel's top edge
    (NaN, positive) or bottom edge (negative), with ``name`` and its value written beside it, inside
    the panel (clear of the title and the tick labels; notes at one x and edge stack away from the
    edge); returns how many. The legend gets one "diverged / non-finite" entry per panel."""
    import matplotlib.transforms as mtransforms

    pts = [(x, v) for x, v in zip(xs, values) if is_diverged(v, limit)]
    if not pts:
        return 0
    trans = mtransforms.blended_transform_factory(ax.transData, ax.transAxes)
    have = DIVERGED_LABEL in ax.get_legend_handles_labels()[1]
    if not hasattr(ax, "_fastmi_notes"):   # (x, bottom edge?) -> notes written there on this panel
        ax._fastmi_notes = {}
    taken = ax._fastmi_notes
    for i, (x, v) in enumerate(pts):
        low = v is not None and v < 0
        ax.scatter([x], [0.0 if low else 1.0], transform=trans, label=None if (have or i) else DIVERGED_LABEL,
                   **DIVERGED_STYLE)
        if note:
            text = name + ("nan" if v is None or math.isnan(v) else f"{v:.2g}")
            n = taken.get((x, low), 0)
            taken[(x, low)] = n + 1
            ax.annotate(text, (x, 0.0 if low else 1.0), xycoords=trans,
                        xytext=(4, 3 + 7 * n if low else -9 - 7 * n),
                        textcoords="offset points", fontsize=6, color="red", annotation_clip=False)
    return len(pts)


def bars(ax, xs, values, width: float, label=None, limit: float = DIVERGED_ABS, **kw) -> None:
    """Bars of the real values; each diverged one (``is_diverged``) is ``mark_diverged``'s marker, not a bar."""
    real = [(x, v) for x, v in zip(xs, values) if not is_diverged(v, limit)]
    ax.bar([x for x, _ in real], [v for _, v in real], width=width, label=label, **kw)
    mark_diverged(ax, xs, values, limit)


def curve(ax, x, y, label=None, **kw) -> None:
    """A line of y against x with gaps where y is not finite; the first step of each gap gets the
    diverged marker (at the top edge), so a run that blew up is seen, not silently cut short."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    ax.plot(x, y, label=label, **kw)
    bad = ~np.isfinite(y)
    starts = np.flatnonzero(bad & ~np.concatenate([[False], bad[:-1]])) if len(y) else []
    mark_diverged(ax, x[starts], y[starts], note=False)


def unlabeled(fig) -> list:
    """The visible panels (not colorbars) of ``fig`` without an x or a y label: their titles."""
    out = []
    for ax in fig.axes:
        if not ax.get_visible() or ax.get_label() == "<colorbar>" or not ax.axison:
            continue
        if not ax.get_xlabel().strip() or not ax.get_ylabel().strip():
            out.append(ax.get_title() or "(untitled panel)")
    return out


def save(fig, path) -> None:
    """Save at 110 dpi; a panel without axis labels is named on stderr and in ``PROBLEMS``."""
    missing = unlabeled(fig)
    if missing:
        PROBLEMS.append((str(path), missing))
        print(f"fastmi figures: {path}: panels without axis labels: {'; '.join(missing)}", file=sys.stderr)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    pyplot().close(fig)


def ema(values, span: int) -> np.ndarray:
    """Exponential moving average with alpha = 2 / (span + 1) (pandas' ewm(span, adjust=False));
    non-finite values are skipped (the average carries over)."""
    alpha = 2.0 / (span + 1.0)
    out = np.empty(len(values))
    acc = math.nan
    for i, v in enumerate(values):
        if math.isfinite(v):
            acc = v if not math.isfinite(acc) else acc + alpha * (v - acc)
        out[i] = acc
    return out


def column(rows, key) -> np.ndarray:
    return np.array([float(r.get(key, math.nan)) for r in rows], dtype=np.float64)
