"""Training of the hybrid estimator (Sinha, Song & Ermon, section 3): one model per alpha.

    minimise  alpha * L_rec + (1 - alpha) * L_MoCo(y)

L_rec is the squared error of the reconstruction, summed over the C x H x W values of an image
(``recon_scale="sum"``: -log q(x|z) of a unit-variance Gaussian up to a constant, the paper's
E[log q(x|z)]) or averaged over them (``"mean"``), then averaged over the batch; its target is the clean
image (``recon_target="clean"``) or the augmented view the contrastive branch sees ("augmented").
L_MoCo is ``fastmi.models.moco``'s InfoNCE over [positive key, queue], computed by fastmi's fused
``F.infonce`` on the n x (1 + K) score matrix with the positive in column 0 (``moco_loss="fused"``)
or by plain ``cross_entropy`` (``"reference"``); both give the same gradients.
"""
from __future__ import annotations

import math
import time
from typing import Optional

import torch
from torch import nn

from .. import functional as F
from ..models.hybrid_autoencoder import HybridAutoencoder
from ..models.moco import MoCo


class HybridModel(nn.Module):
    """The autoencoder and the MoCo branch, sharing the encoder."""

    def __init__(self, cfg, in_channels: int, image_size: int, generator: Optional[torch.Generator] = None):
        super().__init__()
        self.ae = HybridAutoencoder(in_channels, cfg.latent_channels, tuple(cfg.widths), cfg.cells, cfg.split)
        y_features = cfg.latent_channels * (image_size // 2) ** 2 // 2
        self.moco = MoCo(self.ae.encoder, self.encode_y, y_features, hidden=cfg.head_hidden, dim=cfg.moco_dim,
                         queue_size=cfg.queue_size, momentum=cfg.moco_momentum, temperature=cfg.temperature,
                         key_bn_groups=cfg.key_bn_groups, generator=generator)

    def encode_y(self, encoder: nn.Module, x: torch.Tensor) -> torch.Tensor:
        return self.ae.split(encoder(x))[0]

    def trained_parameters(self) -> list:
        """Encoder, decoder and query head (the momentum copies are not trained)."""
        return list(self.ae.parameters()) + list(self.moco.head.parameters())


def augmentations(channels: int, size: int) -> nn.Module:
    """MoCo-v2's views (kornia, on batches of images in [0, 1]): RandomResizedCrop(scale 0.2-1), flip,
    ColorJitter(0.4, 0.4, 0.4, 0.1) with p 0.8, grayscale p 0.2, Gaussian blur (sigma 0.1-2) p 0.5.
    One-channel images get crop, flip and brightness/contrast jitter only (no colour to change)."""
    import kornia.augmentation as K

    ops = [K.RandomResizedCrop((size, size), scale=(0.2, 1.0)), K.RandomHorizontalFlip()]
    if channels == 3:
        ops += [K.ColorJitter(0.4, 0.4, 0.4, 0.1, p=0.8), K.RandomGrayscale(p=0.2),
                K.RandomGaussianBlur((3, 3), (0.1, 2.0), p=0.5)]
    else:
        ops += [K.ColorJitter(0.4, 0.4, 0.0, 0.0, p=0.8)]
    return nn.Sequential(*ops)


def moco_loss(logits: torch.Tensor, kind: str, backend: str = "auto") -> torch.Tensor:
    """Cross-entropy of the positive (column 0) against [positive, queue], batch mean.

    fused: fastmi's InfoNCE with ``positives`` = column 0 for every row; its loss is
    -(S_i0 - log mean_j exp S_ij) = CE - log(1 + K), so log(1 + K) is added back (a constant)."""
    if kind == "reference":
        return nn.functional.cross_entropy(logits, torch.zeros(logits.shape[0], dtype=torch.long,
                                                               device=logits.device))
    positives = torch.zeros(logits.shape[0], dtype=torch.long, device=logits.device)
    return F.infonce(logits, positives=positives, negatives="all", backend=backend).loss + math.log(logits.shape[1])


def reconstruction_loss(recon: torch.Tensor, target: torch.Tensor, scale: str) -> torch.Tensor:
    """Squared error summed ("sum") or averaged ("mean") over an image's values, then the batch mean."""
    per_image = (recon - target).pow(2).flatten(1)
    return (per_image.sum(1) if scale == "sum" else per_image.mean(1)).mean()


def train_step(model: HybridModel, aug: nn.Module, opt: torch.optim.Optimizer, x: torch.Tensor, alpha: float,
               cfg, generator: Optional[torch.Generator] = None, backend: str = "auto") -> dict:
    """One step of alpha * L_rec + (1 - alpha) * L_MoCo; the terms alpha = 0 or 1 switches off are not computed."""
    model.train()
    row, total = {}, 0.0
    view_q = aug(x) if alpha < 1 or cfg.recon_target == "augmented" else None
    if alpha < 1:
        view_k = aug(x)
        q = model.moco.query(view_q)
        k = model.moco.keys(view_k, generator)
        _sync(x)
        t0 = time.perf_counter()
        contrastive = moco_loss(model.moco.logits(q, k), cfg.moco_loss, backend)
        _sync(x)
        row["moco_loss_ms"] = 1e3 * (time.perf_counter() - t0)  # forward only (logits + loss)
        row["moco"] = float(contrastive.detach())
        total = total + (1 - alpha) * contrastive
    if alpha > 0:
        target = x if cfg.recon_target == "clean" else view_q
        _, recon = model.ae(target)
        rec = reconstruction_loss(recon, target, cfg.recon_scale)
        row["rec"] = float(rec.detach())
        total = total + alpha * rec
    opt.zero_grad(set_to_none=True)
    total.backward()
    opt.step()
    if alpha < 1:
        model.moco.momentum_update()
        model.moco.queue.enqueue(k)
    row["loss"] = float(total.detach())
    return row


def _sync(t: torch.Tensor) -> None:
    """Wait for the GPU, so that a timer around GPU work measures the work, not its launch."""
    if t.is_cuda:
        torch.cuda.synchronize(t.device)


def time_moco_losses(n: int, k: int, dim: int, temperature: float, repeats: int = 20, device="cpu",
                     backend: str = "auto") -> dict:
    """Median ms of forward + backward of the fused and the reference MoCo loss at the run's shapes
    (n queries, K queue keys), interleaved in one run."""
    gen = torch.Generator().manual_seed(0)
    q = nn.functional.normalize(torch.randn(n, dim, generator=gen), dim=1).to(device)
    keys = nn.functional.normalize(torch.randn(1 + k, dim, generator=gen), dim=1).to(device)
    scores = (q @ keys.T / temperature).detach()
    times = {"fused": [], "reference": []}
    for _ in range(repeats + 2):
        for kind in times:
            logits = scores.clone().requires_grad_(True)
            _sync(logits)
            t0 = time.perf_counter()
            moco_loss(logits, kind, backend).backward()
            _sync(logits)
            times[kind].append(time.perf_counter() - t0)
    med = {kind: 1e3 * sorted(ts[2:])[len(ts[2:]) // 2] for kind, ts in times.items()}
    return {"n": n, "queue": k, "dim": dim, "fused_ms": med["fused"], "reference_ms": med["reference"],
            "speedup": med["reference"] / med["fused"], "repeats": repeats,
            "note": "forward + backward of the loss on the n x (1 + K) logits q @ [k, queue].T / tau (the matmul, the same for both, excluded); median of interleaved repeats"}
