"""The autoencoder of Sinha, Song & Ermon's hybrid estimator: NVAE-style cells, fewer layers.

The paper says only "a modified encoder and decoder network as used in NVAE, with fewer layers" and
a 3 x 32 x 32 -> 6 x 16 x 16 latent. The cells follow NVAE (Vahdat & Kautz 2020, Fig. 3):

    residual cell:  x + 0.1 * SE(conv3x3(Swish(BN(conv3x3(Swish(BN(x)))))))
    squeeze-excite: h * sigmoid(W2 relu(W1 mean_hw(h)))

Encoder: conv3x3 stem (C_in -> w0) at 32 x 32, ``cells`` residual cells, a stride-2 cell (w0 -> w1)
to 16 x 16, ``cells`` residual cells, conv1x1 to C_z: a deterministic latent z (C_z x 16 x 16).
Decoder: the mirror (conv1x1 C_z -> w1, cells, nearest 2x upsampling + conv3x3 to w0, cells,
BN-Swish-conv3x3 to C_in, sigmoid: images in [0, 1]).

z = [y, y_hat]: y is the "top half" that the contrastive loss sees. ``split="channels"`` takes the
first C_z / 2 channels (the default), ``split="rows"`` the top 8 of the 16 rows.
"""
from __future__ import annotations

import torch
from torch import nn

SPLITS = ("channels", "rows")


class SqueezeExcite(nn.Module):
    """h * sigmoid(W2 relu(W1 mean_hw(h))) with a bottleneck of max(channels // 16, 4)."""

    def __init__(self, channels: int):
        super().__init__()
        hidden = max(channels // 16, 4)
        self.fc = nn.Sequential(nn.Linear(channels, hidden), nn.ReLU(), nn.Linear(hidden, channels), nn.Sigmoid())

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return h * self.fc(h.mean((2, 3)))[:, :, None, None]


class ResidualCell(nn.Module):
    """x + 0.1 * SE(conv3x3(Swish(BN(conv3x3(Swish(BN(x))))))) (NVAE's cell; 0.1 scales the branch)."""

    def __init__(self, channels: int):
        super().__init__()
        self.branch = nn.Sequential(nn.BatchNorm2d(channels), nn.SiLU(), nn.Conv2d(channels, channels, 3, padding=1),
                                    nn.BatchNorm2d(channels), nn.SiLU(), nn.Conv2d(channels, channels, 3, padding=1),
                                    SqueezeExcite(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + 0.1 * self.branch(x)


class DownCell(nn.Module):
    """Halves the resolution: a stride-2 BN-Swish-conv3x3 branch plus a stride-2 conv1x1 skip."""

    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        self.branch = nn.Sequential(nn.BatchNorm2d(c_in), nn.SiLU(), nn.Conv2d(c_in, c_out, 3, stride=2, padding=1),
                                    nn.BatchNorm2d(c_out), nn.SiLU(), nn.Conv2d(c_out, c_out, 3, padding=1),
                                    SqueezeExcite(c_out))
        self.skip = nn.Conv2d(c_in, c_out, 1, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.skip(x) + 0.1 * self.branch(x)


class UpCell(nn.Module):
    """Doubles the resolution: nearest upsampling, then BN-Swish-conv3x3 (plus a conv1x1 skip)."""

    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        self.up = nn.Upsample(scale_factor=2, mode="nearest")
        self.branch = nn.Sequential(nn.BatchNorm2d(c_in), nn.SiLU(), nn.Conv2d(c_in, c_out, 3, padding=1),
                                    nn.BatchNorm2d(c_out), nn.SiLU(), nn.Conv2d(c_out, c_out, 3, padding=1),
                                    SqueezeExcite(c_out))
        self.skip = nn.Conv2d(c_in, c_out, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.up(x)
        return self.skip(x) + 0.1 * self.branch(x)


class HybridEncoder(nn.Module):
    """C_in x H x W images in [0, 1] -> z (C_z x H/2 x W/2); inputs are centred (x - 0.5) / 0.5 first."""

    def __init__(self, in_channels: int = 3, latent_channels: int = 6, widths: tuple = (64, 128), cells: int = 2):
        super().__init__()
        w0, w1 = widths
        self.net = nn.Sequential(nn.Conv2d(in_channels, w0, 3, padding=1), *[ResidualCell(w0) for _ in range(cells)],
                                 DownCell(w0, w1), *[ResidualCell(w1) for _ in range(cells)],
                                 nn.BatchNorm2d(w1), nn.SiLU(), nn.Conv2d(w1, latent_channels, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net((x - 0.5) / 0.5)


class HybridDecoder(nn.Module):
    """z (C_z x h x w) -> images C_in x 2h x 2w in [0, 1] (sigmoid)."""

    def __init__(self, in_channels: int = 3, latent_channels: int = 6, widths: tuple = (64, 128), cells: int = 2):
        super().__init__()
        w0, w1 = widths
        self.net = nn.Sequential(nn.Conv2d(latent_channels, w1, 1), *[ResidualCell(w1) for _ in range(cells)],
                                 UpCell(w1, w0), *[ResidualCell(w0) for _ in range(cells)],
                                 nn.BatchNorm2d(w0), nn.SiLU(), nn.Conv2d(w0, in_channels, 3, padding=1), nn.Sigmoid())

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z)


class HybridAutoencoder(nn.Module):
    """Encoder + decoder with the y / y_hat split of z (see the module docstring)."""

    def __init__(self, in_channels: int = 3, latent_channels: int = 6, widths: tuple = (64, 128), cells: int = 2,
                 split: str = "channels"):
        super().__init__()
        if split not in SPLITS:
            raise ValueError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
        if split == "channels" and latent_channels % 2:
            raise ValueError(f"split='channels' needs an even number of latent channels, got {latent_channels}")
        self.split_mode = split
        self.encoder = HybridEncoder(in_channels, latent_channels, widths, cells)
        self.decoder = HybridDecoder(in_channels, latent_channels, widths, cells)

    def split(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """z -> (y, y_hat): the first half of the channels, or the top half of the rows."""
        if self.split_mode == "channels":
            half = z.shape[1] // 2
            return z[:, :half], z[:, half:]
        half = z.shape[2] // 2
        return z[:, :, :half], z[:, :, half:]

    def merge(self, y: torch.Tensor, y_hat: torch.Tensor) -> torch.Tensor:
        """The inverse of ``split``."""
        return torch.cat([y, y_hat], dim=1 if self.split_mode == "channels" else 2)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x -> (z, reconstruction)."""
        z = self.encoder(x)
        return z, self.decoder(z)
