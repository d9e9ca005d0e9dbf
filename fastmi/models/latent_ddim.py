"""A small diffusion model on the hybrid autoencoder's latents, sampled with DDIM (Song, Meng & Ermon 2020).

Training (Ho et al. 2020, epsilon prediction): with a linear beta schedule beta_1..beta_T and
abar_t = prod_{s <= t} (1 - beta_s),

    z_t = sqrt(abar_t) z_0 + sqrt(1 - abar_t) eps,   loss = || eps - eps_theta(z_t, t) ||^2 (mean).

DDIM sampling (eta = 0, deterministic given z_T) over S of the T steps, t_S > ... > t_1:

    z0_hat = clip((z_t - sqrt(1 - abar_t) eps_theta(z_t, t)) / sqrt(abar_t))
    eps_hat = (z_t - sqrt(abar_t) z0_hat) / sqrt(1 - abar_t)
    z_{t'} = sqrt(abar_{t'}) z0_hat + sqrt(1 - abar_{t'}) eps_hat        (abar_{t'} = 1 at the end)

clip bounds z0_hat to [-c, c], as image diffusion models clip x0 to the pixel range: near t = T,
sqrt(abar_T) = 0.006, so an error of 0.01 in eps_theta moves z0_hat by 1.6 and, without the
clip, a deterministic (eta = 0) sampler carries that error to the end (seen here: samples with a
standard deviation of 100 for standardised latents). eps is recomputed from the clipped z0_hat
so that the step stays on the DDIM trajectory of that z0.

The denoiser is a two-level U-Net with GroupNorm residual blocks and a sinusoidal time embedding.
"""
from __future__ import annotations

import math
from typing import Optional

import torch
from torch import nn


def linear_alpha_bars(steps: int = 1000, beta_start: float = 1e-4, beta_end: float = 0.02) -> torch.Tensor:
    """abar_t for t = 1..T (float64), from betas linearly spaced in [beta_start, beta_end]."""
    betas = torch.linspace(beta_start, beta_end, steps, dtype=torch.float64)
    return torch.cumprod(1.0 - betas, dim=0)


def timestep_embedding(t: torch.Tensor, dim: int) -> torch.Tensor:
    """Sinusoidal embedding [sin(t w_k), cos(t w_k)], w_k = 10000^(-k / (dim/2))."""
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    angles = t.float()[:, None] * freqs[None]
    return torch.cat([angles.sin(), angles.cos()], dim=1)


def _groups(channels: int) -> int:
    return next(g for g in (8, 4, 2, 1) if channels % g == 0)


class TimeResBlock(nn.Module):
    """GroupNorm-SiLU-conv3x3, + the time embedding, GroupNorm-SiLU-conv3x3, with a residual connection."""

    def __init__(self, c_in: int, c_out: int, t_dim: int):
        super().__init__()
        self.norm1, self.conv1 = nn.GroupNorm(_groups(c_in), c_in), nn.Conv2d(c_in, c_out, 3, padding=1)
        self.time = nn.Linear(t_dim, c_out)
        self.norm2, self.conv2 = nn.GroupNorm(_groups(c_out), c_out), nn.Conv2d(c_out, c_out, 3, padding=1)
        self.skip = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, x: torch.Tensor, t_emb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(nn.functional.silu(self.norm1(x)))
        h = h + self.time(t_emb)[:, :, None, None]
        h = self.conv2(nn.functional.silu(self.norm2(h)))
        return self.skip(x) + h


class LatentUNet(nn.Module):
    """eps_theta(z_t, t) for C x H x W latents (H, W even): blocks at H and H/2, skip connections."""

    def __init__(self, channels: int = 6, width: int = 64):
        super().__init__()
        self.t_dim = width * 2
        self.time_mlp = nn.Sequential(nn.Linear(width, self.t_dim), nn.SiLU(), nn.Linear(self.t_dim, self.t_dim))
        self.width = width
        self.stem = nn.Conv2d(channels, width, 3, padding=1)
        self.down1 = TimeResBlock(width, width, self.t_dim)
        self.pool = nn.Conv2d(width, width, 3, stride=2, padding=1)
        self.down2 = TimeResBlock(width, 2 * width, self.t_dim)
        self.mid = TimeResBlock(2 * width, 2 * width, self.t_dim)
        self.up2 = TimeResBlock(4 * width, width, self.t_dim)
        self.upsample = nn.Upsample(scale_factor=2, mode="nearest")
        self.up1 = TimeResBlock(2 * width, width, self.t_dim)
        self.out = nn.Sequential(nn.GroupNorm(_groups(width), width), nn.SiLU(), nn.Conv2d(width, channels, 3, padding=1))

    def forward(self, z: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        emb = self.time_mlp(timestep_embedding(t, self.width))
        h1 = self.down1(self.stem(z), emb)
        h2 = self.down2(self.pool(h1), emb)
        m = self.mid(h2, emb)
        u2 = self.up2(torch.cat([m, h2], 1), emb)
        u1 = self.up1(torch.cat([self.upsample(u2), h1], 1), emb)
        return self.out(u1)


class LatentDiffusion(nn.Module):
    """The denoiser plus its schedule; ``loss`` trains it, ``sample`` runs DDIM."""

    def __init__(self, channels: int = 6, width: int = 64, steps: int = 1000, beta_start: float = 1e-4,
                 beta_end: float = 0.02):
        super().__init__()
        self.net = LatentUNet(channels, width)
        self.register_buffer("alpha_bars", linear_alpha_bars(steps, beta_start, beta_end).float())
        self.steps = steps

    def loss(self, z0: torch.Tensor, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """mean || eps - eps_theta(sqrt(abar_t) z0 + sqrt(1 - abar_t) eps, t) ||^2 with t ~ U{1..T}."""
        n = z0.shape[0]
        t = torch.randint(0, self.steps, (n,), generator=generator).to(z0.device)
        eps = torch.randn(z0.shape, generator=generator).to(z0)
        abar = self.alpha_bars[t].view(n, *([1] * (z0.ndim - 1)))
        zt = abar.sqrt() * z0 + (1 - abar).sqrt() * eps
        return nn.functional.mse_loss(self.net(zt, t), eps)

    @torch.no_grad()
    def sample(self, n: int, shape: tuple, sampling_steps: int = 50, generator: Optional[torch.Generator] = None,
               device="cpu", clip: Optional[float] = None) -> torch.Tensor:
        """DDIM with eta = 0 over ``sampling_steps`` evenly spaced timesteps, from z_T ~ N(0, I); z0_hat
        is clamped to [-clip, clip] when ``clip`` is given (the data's range)."""
        ts = torch.linspace(self.steps - 1, 0, sampling_steps).round().long().unique_consecutive().tolist()
        z = torch.randn((n, *shape), generator=generator).to(device)
        for i, t in enumerate(ts):
            abar = self.alpha_bars[t]
            abar_next = self.alpha_bars[ts[i + 1]] if i + 1 < len(ts) else torch.ones((), device=z.device)
            eps = self.net(z, torch.full((n,), t, device=z.device, dtype=torch.long))
            z0 = (z - (1 - abar).sqrt() * eps) / abar.sqrt()
            if clip is not None:
                z0 = z0.clamp(-clip, clip)
                eps = (z - abar.sqrt() * z0) / (1 - abar).sqrt()
            z = abar_next.sqrt() * z0 + (1 - abar_next).sqrt() * eps
        return z
