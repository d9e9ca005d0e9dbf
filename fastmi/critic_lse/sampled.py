"""k negatives per anchor: the bound on the positive pair and k chosen negative columns of each row.

    negatives=k             (an int)  row i's negatives are the columns (i + s) mod m, s = 1, ..., k:
                                      the "shifted" negatives torch-mist uses (neg_samples=k)
    negatives=idx           (an n x k integer tensor)  row i's negatives are the columns idx[i, :]
                                      (a column listed twice counts twice)

The bound is evaluated on the compact n x (1 + k) matrix

    C[i, 0] = S[i, p(i)],   C[i, 1 + r] = S[i, idx[i, r]]

with its positive in column 0 and the negatives in the other k columns (InfoNCE: the positive joins
its own denominator, as with all negatives, so it is <= log(1 + k); the other bounds use the k
negatives only). C is fed to the same fused row statistics as any score matrix: O(n k) memory and
work beyond S, and the separable critic builds C from row-wise dot products without forming S
(O(n k + n d)). p(i) is i (diagonal positives) or positives[i] (a column index per row).
"""
from __future__ import annotations

import numbers

import torch

from .layout import Layout

GATHER_ELEMENTS = 1 << 20  # entries of gathered y rows per chunk on the separable path


def is_sampled(negatives) -> bool:
    """Whether ``negatives`` asks for k negatives per anchor (an int, or an integer tensor)."""
    if isinstance(negatives, bool):
        return False
    return isinstance(negatives, numbers.Integral) or isinstance(negatives, torch.Tensor)


def check_spec(negatives, name: str):
    """The check a module runs at construction: None, a name of a negatives set, k >= 1, or an index tensor."""
    from .contract import NEGATIVES

    if negatives is None or (isinstance(negatives, str) and negatives in NEGATIVES):
        return negatives
    if isinstance(negatives, numbers.Integral) and not isinstance(negatives, bool):
        if negatives < 1:
            raise ValueError(f"{name}: negatives=k asks for k >= 1 shifted negatives per anchor, got {negatives}")
        return int(negatives)
    if isinstance(negatives, torch.Tensor):
        return negatives
    raise ValueError(f"{name}: negatives must be one of {NEGATIVES}, None, a number k of shifted negatives per "
                     f"anchor, or an n x k tensor of negative columns; got {negatives!r}")


def shifted_negatives(n: int, k: int, m: int | None = None, device=None) -> torch.Tensor:
    """The n x k index of shifted negatives: row i's r-th negative is column (i + r + 1) mod m (m = n by
    default), the columns of the next k rows' samples in a batch of pairs."""
    m = n if m is None else m
    rows = torch.arange(n, device=device)[:, None]
    return (rows + torch.arange(1, k + 1, device=device)[None, :]) % m


def negative_columns(negatives, n: int, m: int, device, name: str, what: str = "scores") -> torch.Tensor:
    """The n x k index of negative columns that ``negatives`` (k or an index tensor) stands for."""
    if not isinstance(negatives, torch.Tensor):
        k = check_spec(negatives, name)
        if k > m - 1:
            raise ValueError(f"{name}: negatives={k} shifted negatives per anchor, but {what} has only m={m} columns "
                             f"(k <= m - 1 = {m - 1}, so that no row's shifts wrap onto itself)")
        return shifted_negatives(n, k, m, device)
    idx = negatives
    if idx.dtype == torch.bool or idx.dtype.is_floating_point or idx.dtype.is_complex:
        raise TypeError(f"{name}: negatives as column indices must be an integer tensor, got {idx.dtype}")
    if idx.dim() != 2 or idx.shape[0] != n or idx.shape[1] < 1:
        raise ValueError(f"{name}: negatives as column indices must be an n x k tensor with n={n} and k >= 1, "
                         f"got shape {tuple(idx.shape)}")
    if idx.device != device:
        raise ValueError(f"{name}: negatives is on {idx.device} but {what} is on {device}")
    idx = idx.to(torch.long)
    if not torch.compiler.is_compiling() and idx.device.type != "meta":
        lo, hi = (int(v) for v in torch.aminmax(idx))  # one host sync, eager mode only
        if lo < 0 or hi >= m:
            raise ValueError(f"{name}: negatives holds column indices in [{lo}, {hi}], outside [0, {m - 1}]")
    return idx


def positive_columns(positives, n: int, m: int, device, name: str, what: str = "scores") -> torch.Tensor:
    """p(i) per row: i for diagonal positives, else the given column index (a mask is not supported)."""
    if positives is None:
        if n != m:
            raise ValueError(f"{name}: {what} is {n}x{m}; diagonal positives (positives=None) need a square matrix. "
                             "Pass positives= as a column index per row.")
        return torch.arange(n, device=device)
    if not isinstance(positives, torch.Tensor) or positives.dtype == torch.bool or positives.dtype.is_floating_point:
        raise TypeError(f"{name}: with k negatives per anchor, positives must be None (the diagonal) or an integer "
                        "column index per row (one positive per anchor)")
    if positives.dim() != 1 or positives.shape[0] != n:
        raise ValueError(f"{name}: positives as column indices must be a vector of length n={n}, "
                         f"got shape {tuple(positives.shape)}")
    if positives.device != device:
        raise ValueError(f"{name}: positives is on {positives.device} but {what} is on {device}")
    p = positives.to(torch.long)
    if not torch.compiler.is_compiling() and n > 0 and p.device.type != "meta":
        lo, hi = (int(v) for v in torch.aminmax(p))
        if lo < 0 or hi >= m:
            raise ValueError(f"{name}: positives holds column indices in [{lo}, {hi}], outside [0, {m - 1}]")
    return p


def compact_layout(n: int, k: int, device, *, infonce: bool) -> Layout:
    """The layout of C: the positive in column 0; negatives: the k others (InfoNCE: all 1 + k columns)."""
    return Layout("index", "all" if infonce else "off_positive", torch.zeros(n, dtype=torch.long, device=device),
                  None, n, 1 + k)


def compact_scores(scores: torch.Tensor, pos: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """C = [S[i, p(i)], S[i, idx[i, 0]], ..., S[i, idx[i, k - 1]]] (n x (1 + k)), differentiable."""
    return torch.cat([scores.gather(1, pos[:, None]), scores.gather(1, idx)], dim=1)


def compact_separable(x: torch.Tensor, y: torch.Tensor, a: torch.Tensor, b: torch.Tensor, pos: torch.Tensor,
                      idx: torch.Tensor) -> torch.Tensor:
    """C of the separable critic S_ij = a_i b_j <x_i, y_j> from row-wise dot products: the n x m matrix
    is never formed; the gathered rows of y are held ``GATHER_ELEMENTS`` entries at a time."""
    cols = torch.cat([pos[:, None], idx], dim=1)  # n x (1 + k)
    n, d = x.shape
    dt = a.dtype
    xs = x.to(dt)
    per = max(1, GATHER_ELEMENTS // max(n * d, 1))
    parts = []
    for c0 in range(0, cols.shape[1], per):
        c = cols[:, c0:c0 + per]
        parts.append(torch.einsum("nd,nkd->nk", xs, y.to(dt)[c]) * b[c])
    return a[:, None] * torch.cat(parts, dim=1)
