"""MoCo-v2 (He et al. 2020; Chen et al. 2020) on the y half of the hybrid autoencoder's latent.

    q = normalize(head(y(aug1(x))))                        query: the trained encoder and head
    k = normalize(head_k(y_k(aug2(x))))                    key: their momentum copies, no gradient
    logits_i = [q_i . k_i, q_i . queue_1, ..., q_i . queue_K] / tau
    loss = mean_i [ log sum_j exp logits_ij - logits_i0 ] (cross-entropy with the positive at column 0)

After each step the key networks move toward the query networks, theta_k <- m theta_k + (1 - m) theta_q,
and the batch's keys replace the oldest K entries of the queue (a ring buffer).

Batch norm in the key encoder: MoCo shuffles the keys across GPUs so that a query and its key never
share batch statistics (shuffle BN). On one device, ``key_bn_groups`` > 1 does the same: the keys are
permuted and encoded in that many sub-batches, each with its own statistics.
"""
from __future__ import annotations

import copy
from typing import Callable, Optional

import torch
from torch import nn


class ProjectionHead(nn.Module):
    """MoCo-v2's MLP head on the flattened y: Linear(d, hidden) - ReLU - Linear(hidden, dim)."""

    def __init__(self, in_features: int, hidden: int = 2048, dim: int = 128):
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(in_features, hidden), nn.ReLU(), nn.Linear(hidden, dim))

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        return self.net(y)


class KeyQueue(nn.Module):
    """A ring buffer of K L2-normalised keys (K x dim), filled with random unit vectors at the start."""

    def __init__(self, size: int, dim: int, generator: Optional[torch.Generator] = None):
        super().__init__()
        keys = torch.randn(size, dim, generator=generator)
        self.register_buffer("keys", nn.functional.normalize(keys, dim=1))
        self.register_buffer("pointer", torch.zeros((), dtype=torch.long))

    @torch.no_grad()
    def enqueue(self, keys: torch.Tensor) -> None:
        """Replace the oldest ``len(keys)`` entries by ``keys`` (wrapping around the end)."""
        n, size = keys.shape[0], self.keys.shape[0]
        if n > size:
            raise ValueError(f"cannot enqueue {n} keys into a queue of {size}")
        idx = (int(self.pointer) + torch.arange(n, device=keys.device)) % size
        self.keys[idx] = keys.detach().to(self.keys.dtype)
        self.pointer.fill_((int(self.pointer) + n) % size)


class MoCo(nn.Module):
    """Query networks (``encode_y``'s encoder + head), their momentum copies and the key queue.

    ``encode_y(encoder, x)`` maps images to y with a given encoder (so the key path can use the
    momentum copy of the same encoder)."""

    def __init__(self, encoder: nn.Module, encode_y: Callable[[nn.Module, torch.Tensor], torch.Tensor],
                 y_features: int, *, hidden: int = 2048, dim: int = 128, queue_size: int = 65536,
                 momentum: float = 0.999, temperature: float = 0.2, key_bn_groups: int = 1,
                 generator: Optional[torch.Generator] = None):
        super().__init__()
        if not 0.0 <= momentum <= 1.0:
            raise ValueError(f"momentum must be in [0, 1], got {momentum}")
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        self.encoder = encoder                       # shared with the autoencoder: trained by both losses
        self.encode_y = encode_y
        self.head = ProjectionHead(y_features, hidden, dim)
        self.key_encoder = copy.deepcopy(encoder)
        self.key_head = copy.deepcopy(self.head)
        for p in list(self.key_encoder.parameters()) + list(self.key_head.parameters()):
            p.requires_grad_(False)
        self.queue = KeyQueue(queue_size, dim, generator)
        self.momentum, self.temperature, self.key_bn_groups = momentum, temperature, key_bn_groups

    def query(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.normalize(self.head(self.encode_y(self.encoder, x)), dim=1)

    @torch.no_grad()
    def keys(self, x: torch.Tensor, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """Keys of ``x`` from the momentum networks, batch norm over ``key_bn_groups`` shuffled sub-batches."""
        groups = max(1, min(self.key_bn_groups, x.shape[0] // 2))
        if groups == 1:
            return nn.functional.normalize(self.key_head(self.encode_y(self.key_encoder, x)), dim=1)
        perm = torch.randperm(x.shape[0], generator=generator).to(x.device)
        parts = [self.key_head(self.encode_y(self.key_encoder, chunk)) for chunk in x[perm].chunk(groups)]
        k = torch.empty_like(torch.cat(parts))
        k[perm] = torch.cat(parts)
        return nn.functional.normalize(k, dim=1)

    def logits(self, q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        """n x (1 + K) scores / tau: the positive key in column 0, then the queue."""
        positive = (q * k).sum(1, keepdim=True)
        negative = q @ self.queue.keys.to(q.dtype).T
        return torch.cat([positive, negative], dim=1) / self.temperature

    @torch.no_grad()
    def momentum_update(self) -> None:
        """theta_k <- m theta_k + (1 - m) theta_q for the encoder and the head (buffers: the key
        networks keep their own batch-norm statistics)."""
        for q_net, k_net in ((self.encoder, self.key_encoder), (self.head, self.key_head)):
            for pq, pk in zip(q_net.parameters(), k_net.parameters()):
                pk.mul_(self.momentum).add_(pq.detach(), alpha=1.0 - self.momentum)
