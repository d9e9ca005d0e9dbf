"""The value every MI loss returns."""
from __future__ import annotations

from typing import NamedTuple

import torch


class MIResult(NamedTuple):
    """``loss``: what to minimize (-bound + regularizer, with the paper's gradient tricks).
    ``mi``: the detached MI estimate the paper reports (never includes the regularizer)."""

    loss: torch.Tensor
    mi: torch.Tensor


class NBMIMResult(NamedTuple):
    """Neural Bayes MIM (``fastmi.functional.nb_mim``). ``loss``: the scalar to minimize, the mean
    over scales of ent + (1 + alpha) R_p. ``entropy`` and ``prior``: the detached per-scale terms
    ent and R_p, 1-D, in the order state 0, state 0 pooled, state 1, state 1 pooled, ... (a B x C
    state, or pool=0, has no pooled scale)."""

    loss: torch.Tensor
    entropy: torch.Tensor
    prior: torch.Tensor
