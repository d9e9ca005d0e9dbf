"""Critics T(x, y) for estimating MI from samples, as small MLPs.

    separable_critic(x_dim, y_dim):  T(x, y) = <f(x), g(y)>         (f, g: MLPs to R^embed_dim)
    joint_critic(x_dim, y_dim):      T(x, y) = h([x, y])            (h: an MLP to R)

Both give ``scores(x, y)``, the n x m matrix T(x_i, y_j) the critic bounds take. The separable one
also gives ``embed(x, y) = (f(x), g(y))`` so that the bounds marked separable run on the fused
separable kernels without forming the matrix. The joint critic evaluates all n m pairs; its first
layer is split as W [x; y] + c = W_x x + W_y y + c, so that the first matmul is O((n + m) d h)
rather than O(n m d h).
"""
from __future__ import annotations

import torch
from torch import nn


def mlp(in_dim: int, out_dim: int, hidden=(64, 64), activation=nn.ReLU) -> nn.Sequential:
    layers, d = [], int(in_dim)
    for h in hidden:
        layers += [nn.Linear(d, h), activation()]
        d = h
    layers.append(nn.Linear(d, out_dim))
    return nn.Sequential(*layers)


class SeparableCritic(nn.Module):
    """T(x, y) = <f(x), g(y)>: ``embed(x, y) -> (f(x), g(y))``, ``scores(x, y) -> f(x) g(y)^T``,
    ``forward(x, y) -> T(x_i, y_i)`` per pair."""

    separable = True

    def __init__(self, f: nn.Module, g: nn.Module):
        super().__init__()
        self.f, self.g = f, g

    def embed(self, x, y):
        return self.f(x), self.g(y)

    def scores(self, x, y):
        fx, gy = self.embed(x, y)
        return fx @ gy.T

    def forward(self, x, y):
        fx, gy = self.embed(x, y)
        return (fx * gy).sum(-1)


class JointCritic(nn.Module):
    """T(x, y) = h([x, y]) with h an MLP: ``scores(x, y)`` evaluates every pair (x_i, y_j), n x m;
    ``forward(x, y) -> T(x_i, y_i)`` per pair."""

    separable = False

    def __init__(self, x_dim: int, y_dim: int, hidden=(64, 64), activation=nn.ReLU):
        super().__init__()
        if not hidden:
            raise ValueError("joint_critic: hidden must have at least one layer (a linear critic is separable)")
        self.x_dim = int(x_dim)
        self.first = nn.Linear(x_dim + y_dim, hidden[0])
        self.rest = nn.Sequential(activation(), mlp(hidden[0], 1, hidden[1:], activation))

    def _halves(self, x, y):
        w = self.first.weight
        return x @ w[:, :self.x_dim].T + self.first.bias, y @ w[:, self.x_dim:].T

    def scores(self, x, y):
        hx, hy = self._halves(x, y)
        return self.rest(hx[:, None, :] + hy[None, :, :]).squeeze(-1)

    def forward(self, x, y):
        hx, hy = self._halves(x, y)
        return self.rest(hx + hy).squeeze(-1)


def separable_critic(x_dim: int, y_dim: int, hidden=(64, 64), embed_dim: int = 32, activation=nn.ReLU) -> SeparableCritic:
    """<f(x), g(y)> with f: x_dim -> hidden -> embed_dim and g: y_dim -> hidden -> embed_dim."""
    return SeparableCritic(mlp(x_dim, embed_dim, hidden, activation), mlp(y_dim, embed_dim, hidden, activation))


def joint_critic(x_dim: int, y_dim: int, hidden=(64, 64), activation=nn.ReLU) -> JointCritic:
    """h([x, y]) with h: x_dim + y_dim -> hidden -> 1."""
    return JointCritic(x_dim, y_dim, hidden, activation)


__all__ = ["SeparableCritic", "JointCritic", "separable_critic", "joint_critic"]
