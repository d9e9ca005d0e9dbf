"""Concat critics T(x, y) = MLP([x, y]) of Choi & Lee's synthetic experiments."""
from __future__ import annotations

import torch
from torch import nn


def keras_normal_init_(module: nn.Module, std: float = 0.05) -> nn.Module:
    """Keras' ``random_normal`` initialiser (weights ~ N(0, std^2), biases 0), as the authors' TF code."""
    for m in module.modules():
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0.0, std)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
    return module


class ConcatCritic(nn.Module):
    """T(x, y) = MLP([x, y]) on given pairs (input: B x dim, the concatenation).

    ``hidden``: widths of the hidden ReLU layers. ``last_bias``: whether the output layer has a bias
    (the one-hot critic 32-64-1 has none).
    """

    def __init__(self, dim: int, hidden=(64,), last_bias: bool = False):
        super().__init__()
        layers, d = [], dim
        for h in hidden:
            layers += [nn.Linear(d, h), nn.ReLU()]
            d = h
        layers.append(nn.Linear(d, 1, bias=last_bias))
        self.net = nn.Sequential(*layers)

    def forward(self, pairs: torch.Tensor) -> torch.Tensor:
        return self.net(pairs).squeeze(-1)


class PairwiseConcatCritic(nn.Module):
    """The score matrix S[i, j] = MLP([x_i, y_j]) over all B x B pairs (Poole et al.'s concat critic).

    The first layer is split, W [x; y] = W_x x + W_y y, so it costs O(B) instead of O(B^2); the
    remaining layers run on the B^2 pair activations. Mathematically identical to concatenating.
    """

    def __init__(self, dim_x: int, dim_y: int, hidden=(256, 256)):
        super().__init__()
        if not hidden:
            raise ValueError("PairwiseConcatCritic: needs at least one hidden layer")
        self.first = nn.Linear(dim_x + dim_y, hidden[0])
        self.dim_x = dim_x
        layers, d = [nn.ReLU()], hidden[0]
        for h in hidden[1:]:
            layers += [nn.Linear(d, h), nn.ReLU()]
            d = h
        layers.append(nn.Linear(d, 1))
        self.rest = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        w, b = self.first.weight, self.first.bias
        hx = x @ w[:, : self.dim_x].T + b            # B x h
        hy = y @ w[:, self.dim_x:].T                 # B x h
        h = hx[:, None, :] + hy[None, :, :]          # B x B x h: pair (i, j) = [x_i, y_j]
        return self.rest(h).squeeze(-1)
