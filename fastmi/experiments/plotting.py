"""Small matplotlib helpers shared by the experiments (Agg backend: no display needed)."""
from __future__ import annotations

import math

import numpy as np


def pyplot():
    """matplotlib.pyplot with the non-interactive Agg backend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

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


def save(fig, path) -> None:
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
