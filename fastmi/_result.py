"""The value every MI loss returns."""
from __future__ import annotations

from typing import NamedTuple

import torch


class MIResult(NamedTuple):
    """``loss``: what to minimize (-bound + regularizer, with the paper's gradient tricks).
    ``mi``: the detached MI estimate the paper reports (never includes the regularizer)."""

    loss: torch.Tensor
    mi: torch.Tensor
