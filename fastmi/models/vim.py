"""Stochastic classifiers of the Variational InfoMax paper (Crescimanna & Graham; SPEC.md 2.1, 2.3).

An encoder maps x to 2K numbers, split into the mean mu and a raw scale; the code is

    z = mu + s * eps,   s = softplus(raw - 5),   eps ~ N(0, I)        (VIB / VIM)
    z = mu                                                           (the deterministic baseline)

and a logistic decoder gives the class logits W z + b (softmax over the classes). The shift of 5
makes the initial scales small (softplus(-5) ~ 0.0067), as the VIB reimplementation this follows.

- ``MLPEncoder``: 784-1024-1024-2K with ReLU (MNIST, K = 256; Alemi et al.'s network).
- ``ConvEncoder``: Table 4 (CIFAR-10, K = 64): four Conv 4x4 (128, 256, 512, 1024 channels, stride 2,
  padding 1 -- the stride and padding are INFERRED), each followed by BatchNorm + ReLU, then a
  fully connected layer to 2K.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as TF


class MLPEncoder(nn.Module):
    """x (B x ...) -> B x 2K through Linear-ReLU layers of widths ``hidden`` (input flattened);
    ``dropout`` > 0 drops each hidden unit with that probability in training (Srivastava et al. 2014:
    after every hidden ReLU, the kept units scaled by 1 / (1 - p))."""

    def __init__(self, in_features: int = 784, hidden=(1024, 1024), k: int = 256, dropout: float = 0.0):
        super().__init__()
        layers, d = [nn.Flatten()], in_features
        for h in hidden:
            layers += [nn.Linear(d, h), nn.ReLU()] + ([nn.Dropout(dropout)] if dropout else [])
            d = h
        layers.append(nn.Linear(d, 2 * k))
        self.net = nn.Sequential(*layers)
        self.k = k

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class ConvEncoder(nn.Module):
    """The CNN of the paper's Table 4: (Conv 4x4 stride 2 pad 1 -> BN -> ReLU) x 4 -> FC 2K."""

    def __init__(self, k: int = 64, in_channels: int = 3, image_size: int = 32, widths=(128, 256, 512, 1024)):
        super().__init__()
        layers, c, s = [], in_channels, image_size
        for w in widths:
            layers += [nn.Conv2d(c, w, 4, stride=2, padding=1, bias=False), nn.BatchNorm2d(w), nn.ReLU()]
            c, s = w, s // 2
        if s < 1:
            raise ValueError(f"ConvEncoder: image_size {image_size} is too small for {len(widths)} stride-2 layers")
        self.features = nn.Sequential(*layers)
        self.fc = nn.Linear(c * s * s, 2 * k)
        self.k = k

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x).flatten(1))


class StochasticClassifier(nn.Module):
    """An encoder giving (mu, raw scale) and a logistic decoder on the code z.

    ``stochastic=False`` is the deterministic baseline: z = mu and the scale half is ignored (same
    parameters as the stochastic models, so the networks differ only in the objective).
    """

    def __init__(self, encoder: nn.Module, k: int, n_classes: int = 10, stochastic: bool = True,
                 scale_shift: float = 5.0):
        super().__init__()
        self.encoder = encoder
        self.decoder = nn.Linear(k, n_classes)
        self.k = k
        self.stochastic = stochastic
        self.scale_shift = scale_shift

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(mu, s): the mean and standard deviation of q(z | x), each B x K."""
        out = self.encoder(x)
        mu, raw = out[:, : self.k], out[:, self.k:]
        return mu, TF.softplus(raw - self.scale_shift)

    def sample(self, mu: torch.Tensor, std: torch.Tensor, n_samples: int = 1, generator=None) -> torch.Tensor:
        """z = mu + std * eps with ``n_samples`` draws (n_samples x B x K); z = mu for the baseline."""
        if not self.stochastic:
            return mu.expand(n_samples, *mu.shape)
        eps = torch.randn((n_samples, *mu.shape), generator=generator, device=mu.device, dtype=mu.dtype)
        return mu + std * eps

    def forward(self, x: torch.Tensor, generator=None):
        """One training pass: (logits of one sampled z, mu, std, z)."""
        mu, std = self.encode(x)
        z = self.sample(mu, std, 1, generator)[0]
        return self.decoder(z), mu, std, z

    def mean_logits(self, x: torch.Tensor) -> torch.Tensor:
        """The deterministic forward: logits of z = mu (what the attack differentiates)."""
        return self.decoder(self.encode(x)[0])

    @torch.no_grad()
    def predict_proba(self, x: torch.Tensor, n_samples: int = 12, generator=None) -> torch.Tensor:
        """p(y | x) averaged over ``n_samples`` codes (softmax of each, then the mean); the baseline's
        is the softmax of its single deterministic code."""
        mu, std = self.encode(x)
        n = n_samples if self.stochastic else 1
        return TF.softmax(self.decoder(self.sample(mu, std, n, generator)), dim=-1).mean(0)


class MeanLogits(nn.Module):
    """A view of a ``StochasticClassifier`` as a plain classifier x -> logits(mu) (for attack libraries)."""

    def __init__(self, model: StochasticClassifier):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.mean_logits(x)
