"""Synthetic data with known mutual information."""
from __future__ import annotations

import math
from typing import Optional

import torch


def rho_for_mi(mi: float, dim: int) -> float:
    """Per-coordinate correlation rho with I(x; y) = -(dim / 2) * log(1 - rho^2) = mi (nats)."""
    if mi < 0 or dim < 1:
        raise ValueError(f"rho_for_mi: need mi >= 0 and dim >= 1, got mi={mi}, dim={dim}")
    return math.sqrt(1.0 - math.exp(-2.0 * mi / dim))


def correlated_gaussian(n: int, dim: int, mi: float, *, cubic: bool = False, generator: Optional[torch.Generator] = None,
                        dtype=torch.float32, device="cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """x, eps ~ N(0, I_dim); y = rho x + sqrt(1 - rho^2) eps, so I(x; y) = mi nats.

    cubic=True returns y**3 (an invertible map: the MI is unchanged, the critic's job is harder).
    """
    rho = rho_for_mi(mi, dim)
    x = torch.randn(n, dim, generator=generator, dtype=dtype, device=device)
    eps = torch.randn(n, dim, generator=generator, dtype=dtype, device=device)
    y = rho * x + math.sqrt(1.0 - rho * rho) * eps
    return x, (y ** 3 if cubic else y)
