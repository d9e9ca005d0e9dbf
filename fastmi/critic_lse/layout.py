"""Where the positives and negatives of a score matrix are (SPEC section 7).

``scores[i, j] = T(x_i, y_j)``. Positives: the diagonal (``positives=None``), one column per row
(an integer vector, e.g. class labels for logits), or a boolean n x m mask (e.g. same-label pairs).
Negatives: "all" entries, the "off_positive" entries, or the "off_diagonal" entries (j != i).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch

from .contract import NEGATIVES, POSITIVE_KINDS

NEG_MODE = {name: k for k, name in enumerate(NEGATIVES)}

# The papers' choice when ``negatives=None``: (positives kind) -> (InfoNCE, every other bound).
DEFAULT_NEGATIVES = {
    "diag": ("all", "off_positive"),  # vbmi / SMILE conventions
    "index": ("all", "all"),  # SLB code: the MINE marginal is all B*C logits
    "mask": ("off_diagonal", "off_diagonal"),  # CLB code: every pair i != j
}


@dataclass(frozen=True)
class Layout:
    kind: str  # "diag" | "index" | "mask"
    negatives: str
    pos_index: Optional[torch.Tensor]
    pos_mask: Optional[torch.Tensor]
    n: int
    m: int

    @property
    def neg_mode(self) -> int:
        return NEG_MODE[self.negatives]

    @property
    def pos_kind(self) -> int:
        return POSITIVE_KINDS.index(self.kind)

    def positive_counts(self, dtype: torch.dtype, device) -> torch.Tensor:
        if self.kind == "mask":
            return self.pos_mask.sum(1).to(dtype)
        return torch.ones(self.n, dtype=dtype, device=device)

    def negative_counts(self, dtype: torch.dtype, device) -> torch.Tensor:
        m = self.m
        if self.negatives == "all":
            return torch.full((self.n,), float(m), dtype=dtype, device=device)
        if self.negatives == "off_positive":
            return m - self.positive_counts(dtype, device)
        has_diag = torch.arange(self.n, device=device) < m
        return m - has_diag.to(dtype)

    def static_negative_count(self) -> Optional[int]:
        """Total negatives when it does not depend on the data (else None)."""
        if self.negatives == "all":
            return self.n * self.m
        if self.negatives == "off_diagonal":
            return self.n * self.m - min(self.n, self.m)
        if self.kind == "mask":
            return None
        return self.n * (self.m - 1)

    def dense_masks(self, device) -> tuple[torch.Tensor, torch.Tensor]:
        """(P, N) as boolean n x m matrices: the reference's view of the layout."""
        n, m = self.n, self.m
        if self.kind == "diag":
            P = torch.eye(n, m, dtype=torch.bool, device=device)
        elif self.kind == "index":
            P = torch.zeros(n, m, dtype=torch.bool, device=device)
            P[torch.arange(n, device=device), self.pos_index] = True
        else:
            P = self.pos_mask
        if self.negatives == "all":
            N = torch.ones(n, m, dtype=torch.bool, device=device)
        elif self.negatives == "off_positive":
            N = ~P
        else:
            N = ~torch.eye(n, m, dtype=torch.bool, device=device)
        return P, N


def resolve(scores: torch.Tensor, positives, negatives: Optional[str], *, infonce: bool, name: str) -> Layout:
    """Check ``positives``/``negatives`` against ``scores`` and return the layout (errors name the argument)."""
    n, m = scores.shape
    return resolve_shape(n, m, scores.device, positives, negatives, infonce=infonce, name=name)


def resolve_shape(n: int, m: int, device, positives, negatives: Optional[str], *, infonce: bool, name: str,
                  what: str = "scores") -> Layout:
    """``resolve`` for an n x m score matrix that is never built (the separable critic)."""
    if positives is None:
        if n != m:
            raise ValueError(
                f"{name}: {what} is {n}x{m}; diagonal positives (positives=None) need a square matrix. "
                "Pass positives= as a column index per row or as a boolean mask."
            )
        kind, pos_index, pos_mask = "diag", None, None
    elif not isinstance(positives, torch.Tensor):
        raise TypeError(f"{name}: positives must be None, an integer tensor or a boolean tensor, got {type(positives).__name__}")
    elif positives.device != device:
        raise ValueError(f"{name}: positives is on {positives.device} but {what} is on {device}")
    elif positives.dtype == torch.bool:
        if tuple(positives.shape) != (n, m):
            raise ValueError(f"{name}: a boolean positives mask must be shaped like {what} {(n, m)}, got {tuple(positives.shape)}")
        kind, pos_index, pos_mask = "mask", None, positives.contiguous()
    elif not positives.dtype.is_floating_point and not positives.dtype.is_complex:
        if positives.dim() != 1 or positives.shape[0] != n:
            raise ValueError(f"{name}: positives as column indices must be a vector of length n={n}, got shape {tuple(positives.shape)}")
        pos_index = positives.to(torch.long).contiguous()
        if not torch.compiler.is_compiling() and n > 0 and pos_index.device.type != "meta":
            lo, hi = (int(v) for v in torch.aminmax(pos_index))  # one host sync, eager mode only
            if lo < 0 or hi >= m:
                raise ValueError(f"{name}: positives holds column indices in [{lo}, {hi}], outside [0, {m - 1}]")
        kind, pos_mask = "index", None
    else:
        raise TypeError(f"{name}: positives must be an integer (column index) or boolean (mask) tensor, got {positives.dtype}")

    if negatives is None:
        negatives = DEFAULT_NEGATIVES[kind][0 if infonce else 1]
    elif negatives not in NEGATIVES:
        raise ValueError(f"{name}: negatives must be one of {NEGATIVES} or None, got {negatives!r}")
    layout = Layout(kind, negatives, pos_index, pos_mask, n, m)
    count = layout.static_negative_count()
    if count == 0:
        raise ValueError(
            f"{name}: {what} of shape {(n, m)} with negatives={negatives!r} leave no negative pairs "
            "(n >= 2 is needed for off-diagonal terms)"
        )
    return layout
