"""Networks of Neural Bayes' DMS and filter experiments (paper 000, SPEC 1.4 / 1.6).

- ``DMSMLP``: the 2-D DMS network of DML.ipynb: ``len(hidden)`` x [Linear(no bias) -> BatchNorm1d -> ReLU]
  -> Linear(K, no bias); returns the pre-softmax logits (L = softmax(logits)).
- ``DMSCNN``: Appendix C's MNIST network C(100,3)-P2-C(100,3)-C(200,3)-P2-C(500,3)-GAP-FC(K). Appendix C
  names the layers only; the BatchNorm -> ReLU after each convolution, the biases and the orthogonal
  initialisation (BN gamma = 1, beta = 0) follow the authors' MIM CNN (MIM/models.py) (INFERRED).
- ``FilterMLP``: the MNIST-filter network of MIM_MNIST_filter.ipynb, 784-500-500-100 with biases and
  BatchNorm1d; its states are the pre-BN linear outputs fc1, fc2, fc3, its output ReLU(BN(fc3)).
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


BN_INITS = ("ones", "uniform")


class DMSMLP(nn.Module):
    """x (B x dim_in) -> logits (B x K) through [Linear(no bias) -> BN -> ReLU] per hidden width.

    ``bn_init``: the BatchNorm scales gamma start at 1 ("ones", PyTorch >= 1.2's default) or are drawn
    from U(0, 1) ("uniform", the default of PyTorch <= 1.1, pytorch/pytorch#12259). The biases start at 0.
    """

    def __init__(self, dim_in: int, k: int, hidden=(400, 400, 400, 400), bn: bool = True, bn_init: str = "ones"):
        super().__init__()
        if dim_in < 1 or k < 2 or not hidden or min(hidden) < 1:
            raise ValueError(f"DMSMLP: need dim_in >= 1, k >= 2 and non-empty positive hidden widths, "
                             f"got dim_in={dim_in}, k={k}, hidden={hidden}")
        if bn_init not in BN_INITS:
            raise ValueError(f"DMSMLP: bn_init must be one of {BN_INITS}, got {bn_init!r}")
        layers, width = [], dim_in
        for h in hidden:
            layers += [nn.Linear(width, h, bias=False), nn.BatchNorm1d(h) if bn else nn.Identity(), nn.ReLU()]
            width = h
        layers.append(nn.Linear(width, k, bias=False))
        self.net = nn.Sequential(*layers)
        self.dim_in, self.k = dim_in, k
        if bn_init == "uniform":
            for m in self.net:
                if isinstance(m, nn.BatchNorm1d):
                    nn.init.uniform_(m.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x.reshape(x.shape[0], self.dim_in))


def orthogonal_init_(module: nn.Module) -> nn.Module:
    """The authors' ``param_init(init='ortho')``: orthogonal conv / linear weights, BN gamma = 1, beta = 0."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.orthogonal_(m.weight)
        elif isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
    return module


class DMSCNN(nn.Module):
    """Appendix C: C(c0,3)-P2-C(c1,3)-C(c2,3)-P2-C(c3,3)-GAP-FC(K); each conv is followed by BN and ReLU.

    28 x 28 input: 26 -> 13 -> 11 -> 9 -> 4 -> 2 x 2 before the global average pool. Returns logits.
    """

    def __init__(self, in_channels: int = 1, k: int = 10, channels=(100, 100, 200, 500), bn: bool = True):
        super().__init__()
        if len(channels) != 4 or min(channels) < 1 or k < 2 or in_channels < 1:
            raise ValueError(f"DMSCNN: channels must be 4 positive widths and k >= 2, got {channels}, k={k}")
        convs, bns, width = [], [], in_channels
        for c in channels:
            convs.append(nn.Conv2d(width, c, 3, 1))
            bns.append(nn.BatchNorm2d(c) if bn else nn.Identity())
            width = c
        self.convs, self.bns = nn.ModuleList(convs), nn.ModuleList(bns)
        self.fc = nn.Linear(width, k)
        self.in_channels, self.k = in_channels, k
        orthogonal_init_(self)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The globally average-pooled last conv state (B x channels[-1])."""
        for i, (conv, bn) in enumerate(zip(self.convs, self.bns)):
            x = F.relu(bn(conv(x)))
            if i in (0, 2):
                x = F.max_pool2d(x, 2, 2)
        return x.mean(dim=(2, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x))


class FilterMLP(nn.Module):
    """784-500-500-100 with BatchNorm1d: ``forward(x)`` -> (states [fc1, fc2, fc3 pre-BN], ReLU(BN(fc3)))."""

    def __init__(self, dim_in: int = 784, hidden=(500, 500), dim_out: int = 100, bn: bool = True):
        super().__init__()
        widths = (dim_in, *hidden, dim_out)
        if min(widths) < 1 or dim_out < 2:
            raise ValueError(f"FilterMLP: widths must be positive and dim_out >= 2, got {widths}")
        self.fcs = nn.ModuleList(nn.Linear(a, b) for a, b in zip(widths[:-1], widths[1:]))
        self.bns = nn.ModuleList(nn.BatchNorm1d(b) if bn else nn.Identity() for b in widths[1:])
        self.dim_in = dim_in

    @property
    def filters(self) -> torch.Tensor:
        """The first layer's weights, one row (a 28 x 28 filter for MNIST) per hidden unit."""
        return self.fcs[0].weight

    def forward(self, x: torch.Tensor):
        x = x.reshape(x.shape[0], self.dim_in)
        states = []
        for fc, bn in zip(self.fcs, self.bns):
            x = fc(x)
            states.append(x)
            x = F.relu(bn(x))
        return states, x
