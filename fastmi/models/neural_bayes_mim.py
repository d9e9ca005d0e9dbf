"""The CNN encoder of Neural Bayes-MIM (Arpit et al., section 5.2; SPEC 1.4).

    C(200,3,1,0)-BN-ReLU = h0 -> maxpool 2 -> C(500,3,1,0)-BN-ReLU = h1 -> C(700,3,1,0)-BN-ReLU = h2
    -> maxpool 2 -> C(1000,3,1,0)-BN-ReLU = h3 -> global average pool = the 1000-d feature

Orthogonal init of the conv weights, BN gamma = 1 and beta = 0 (the authors' ``param_init``; the
conv biases keep PyTorch's default init, as there). ``bn=False`` is the random-encoder baseline
(the convs feed the ReLUs directly). ``width`` multiplies every channel count (1.0 = the paper;
smaller for CPU runs). The four post-ReLU states are what ``fastmi.functional.nb_mim`` takes: with
``pool=2`` it adds each state's 2x2 average pool, the paper's 8 states.

State shapes (C x H x W at width 1): 32 x 32 input: h0 200x30x30, h1 500x13x13, h2 700x11x11,
h3 1000x3x3; 28 x 28 input: 26, 11, 9, 2 (the paper's "2 x 2 x 1000" output is the 28 x 28 value).
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as TF

MIM_CHANNELS = (200, 500, 700, 1000)


def mim_channels(width: float) -> tuple:
    """The four channel counts at ``width`` (rounded, at least 2 so a softmax over channels means something)."""
    if not width > 0:
        raise ValueError(f"width must be > 0, got {width!r}")
    return tuple(max(2, int(round(c * width))) for c in MIM_CHANNELS)


class MIMEncoder(nn.Module):
    """The Neural Bayes-MIM CNN. ``forward(x)`` -> the globally pooled last state (B x C3);
    ``forward(x, states=True)`` -> the list [h0, h1, h2, h3] of post-ReLU states."""

    def __init__(self, in_channels: int = 3, width: float = 1.0, bn: bool = True):
        super().__init__()
        if not isinstance(in_channels, int) or in_channels < 1:
            raise ValueError(f"in_channels must be a positive int, got {in_channels!r}")
        self.channels = mim_channels(width)
        self.bn = bn
        c_in = (in_channels,) + self.channels[:-1]
        self.convs = nn.ModuleList(nn.Conv2d(a, b, 3, 1, 0) for a, b in zip(c_in, self.channels))
        self.norms = nn.ModuleList(nn.BatchNorm2d(c) if bn else nn.Identity() for c in self.channels)
        self.reset_parameters()

    @property
    def feature_dim(self) -> int:
        return self.channels[-1]

    def reset_parameters(self) -> None:
        for conv in self.convs:
            conv.reset_parameters()          # the bias keeps PyTorch's default, as in the authors' code
            nn.init.orthogonal_(conv.weight)
        for norm in self.norms:
            if isinstance(norm, nn.BatchNorm2d):
                nn.init.ones_(norm.weight)
                nn.init.zeros_(norm.bias)

    def forward(self, x: torch.Tensor, states: bool = False):
        if x.dim() != 4:
            raise ValueError(f"MIMEncoder: x must be B x C x H x W, got shape {tuple(x.shape)}")
        hs = []
        for i, (conv, norm) in enumerate(zip(self.convs, self.norms)):
            if i in (1, 3):                  # max pools before conv 2 and conv 4
                x = TF.max_pool2d(x, 2, 2)
            x = TF.relu(norm(conv(x)))
            hs.append(x)
        if states:
            return hs
        return global_pool(x)


def global_pool(h: torch.Tensor) -> torch.Tensor:
    """B x C x H x W -> B x C, the mean over all positions (the authors' AvgPool2d(2H) meant as a global
    mean; SPEC 1.2, INFERRED)."""
    return TF.adaptive_avg_pool2d(h, 1).flatten(1)


@torch.no_grad()
def encode(encoder: nn.Module, images, batch_size: int = 500, transform=None, device="cpu") -> torch.Tensor:
    """Frozen features: ``encoder(transform(batch))`` in eval mode over ``images`` (any indexable of
    tensors), concatenated on the CPU as float32. The encoder's train/eval mode is restored."""
    was_training = encoder.training
    encoder.eval()
    out = []
    try:
        for i in range(0, len(images), batch_size):
            x = images[i: i + batch_size]
            x = transform(x) if transform is not None else x
            out.append(encoder(x.to(device)).float().cpu())
    finally:
        encoder.train(was_training)
    return torch.cat(out) if out else torch.empty(0, getattr(encoder, "feature_dim", 0))
