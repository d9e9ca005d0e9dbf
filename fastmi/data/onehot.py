"""One-hot pairs (Choi & Lee, appendix D.2): x uniform over N one-hot vectors and y = x, so
I(x; y) = log N nats. Marginal pairs are drawn independently (x', y') as the authors' code does,
not by shuffling the joint batch."""
from __future__ import annotations

import math
from typing import Optional

import torch


def onehot_mi(n_classes: int) -> float:
    """The true MI of the one-hot pair with ``n_classes`` classes: log N."""
    return math.log(n_classes)


def onehot_pairs(batch: int, n_classes: int, *, generator: Optional[torch.Generator] = None,
                 device="cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """Draw ``batch`` joint pairs and ``batch`` independent marginal pairs.

    Returns (joint, marginal), each batch x 2N float32: the concatenation [x, y] of two one-hot rows.
    Joint rows have y = x; marginal rows draw x' and y' independently and uniformly.
    """
    if not isinstance(batch, int) or batch < 1:
        raise ValueError(f"onehot_pairs: batch must be a positive int, got {batch!r}")
    if not isinstance(n_classes, int) or n_classes < 2:
        raise ValueError(f"onehot_pairs: n_classes must be an int >= 2, got {n_classes!r}")
    eye = torch.eye(n_classes, device=device)
    idx = torch.randint(n_classes, (3, batch), generator=generator).to(device)
    joint = torch.cat([eye[idx[0]], eye[idx[0]]], dim=1)
    marginal = torch.cat([eye[idx[1]], eye[idx[2]]], dim=1)
    return joint, marginal


def all_onehot_pairs(n_classes: int, device="cpu") -> torch.Tensor:
    """Every (x_i, y_j) concatenation, row i * N + j: an N^2 x 2N tensor (for critic-output plots)."""
    eye = torch.eye(n_classes, device=device)
    return torch.cat([eye.repeat_interleave(n_classes, 0), eye.repeat(n_classes, 1)], dim=1)
