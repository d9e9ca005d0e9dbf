"""The second pass of Poole et al.'s interpolated bound I_alpha: per row i of a square score matrix,

    Q_i  = sum_{j != i} B_ij
    B_ij = log( alpha / (n - 1) * exp(LOO_ij) + (1 - alpha) * exp(a_i) ),   LOO_ij = log sum_{k != j} exp S_ik

B_ij depends on the entry S_ij itself (through the leave-one-out log-sum-exp), so Q cannot be
assembled from the one-pass row statistics; it is a function of the row and of the O(1) row
quantities L_i = logsumexp_k S_ik, the row's argmax j*_i and L2_i = log sum_{k != j*_i} exp S_ik:

    LOO_ij = L_i + log(1 - exp(S_ij - L_i))     for j != j*_i   (there S_ij - L_i <= -log 2: no cancellation)
    LOO_ij = L2_i                                for j  = j*_i

(the textbook L_i + softplus^-1(L_i - S_ij) loses every digit at the entry that dominates its row).

``tiled=True`` (the fused backends) runs the rows in blocks under activation checkpointing, so that
forward and backward hold one block of temporaries at a time: O(block * n) memory beyond S. A kernel
would do the same in two sweeps per row block (L, j*, L2 online; then the sum of B_ij) and recompute
in the backward with dQ_i/dS_ik = e^(S_ik) * sum_{j != i, k} w_ij e^(-LOO_ij), w_ij = dB_ij / dLOO_ij.
"""
from __future__ import annotations

import math

import torch
from torch.utils.checkpoint import checkpoint

from .ops import masked_logsumexp

LN2 = math.log(2.0)
BLOCK_ELEMENTS = 1 << 18  # entries of S per block of rows on the tiled path (1 MiB of fp32)


def log1mexp(d: torch.Tensor) -> torch.Tensor:
    """log(1 - e^-d) for d >= 0, accurate on both sides of log 2 (Maechler's split); each branch sees
    only the inputs it is accurate for, so neither sends inf or NaN into the other's gradient."""
    big = d > LN2
    far = torch.where(big, d, torch.full_like(d, 2 * LN2))
    near = torch.where(big, torch.full_like(d, LN2 / 2), d)
    return torch.where(big, torch.log1p(-torch.exp(-far)), torch.log(-torch.expm1(-near)))


def leave_one_out_lse(S: torch.Tensor) -> torch.Tensor:
    """LOO_ij = log sum_{k != j} exp S_ik for every entry of S (r x m), without cancellation."""
    full = torch.ones_like(S, dtype=torch.bool)
    L = masked_logsumexp(S, full)[:, None]
    top = torch.zeros_like(full).scatter_(1, S.detach().argmax(1, keepdim=True), True)
    L2 = masked_logsumexp(S, ~top)[:, None]
    d = torch.where(top, torch.ones_like(S), L - S)  # >= log 2 off the argmax
    return torch.where(top, L2.expand_as(S), L + log1mexp(d))


def _block(S: torch.Tensor, a: torch.Tensor, alpha: float, row0: int) -> torch.Tensor:
    """Q_i for the rows row0, row0 + 1, ... held in S (r x n); a: their log-baselines [r]."""
    r, n = S.shape
    loo = leave_one_out_lse(S) - math.log(n - 1)  # log of the mean over n - 1 entries
    if alpha == 1:
        B = loo
    else:
        B = torch.logaddexp(math.log(alpha) + loo, math.log1p(-alpha) + a[:, None])
    rows = torch.arange(row0, row0 + r, device=S.device)
    off = torch.arange(n, device=S.device)[None, :] != rows[:, None]
    return torch.where(off, B, torch.zeros_like(B)).sum(1)


def baseline_row_sums(scores: torch.Tensor, a: torch.Tensor, alpha: float, *, tiled: bool) -> torch.Tensor:
    """Q (length n) of the square ``scores`` (upcast to fp32 for half types), a: the per-row log-baselines."""
    S = scores if scores.dtype in (torch.float32, torch.float64) else scores.float()
    a = a.to(S.dtype)
    n = S.shape[0]
    if not tiled:
        return _block(S, a, alpha, 0)
    rows = max(1, BLOCK_ELEMENTS // max(n, 1))
    parts = []
    for r0 in range(0, n, rows):
        r1 = min(n, r0 + rows)
        parts.append(checkpoint(_block, S[r0:r1], a[r0:r1], alpha, r0, use_reentrant=False))
    return torch.cat(parts)
