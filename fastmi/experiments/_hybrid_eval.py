"""Evaluation of the hybrid estimator: reconstruction error, linear probes, Frechet distances, interpolations.

Reconstruction MSE: mean over test images of the squared error of images in [0, 1], reported per value
(``mse_per_value``: averaged over the C x H x W values) and per image (``mse_per_image``: summed
over them, C x H x W times larger). The paper's Table 1 gives no unit; its numbers (NVAE 0.25, Hybrid
2.6 on CIFAR-10) fit the per-image sum (per value they would be 8e-5 and 8e-4), which is INFERRED.

Probes: a linear classifier (``probe.train_probe``, Adam, cross-entropy, validation-selected epoch) on
frozen features standardised with the training set's mean and standard deviation.

Frechet distance (Heusel et al. 2017): || mu_1 - mu_2 ||^2 + tr(S_1 + S_2 - 2 (S_1 S_2)^(1/2)) between
Gaussians fitted to features of two image sets, computed by torchmetrics' FrechetInceptionDistance.
With the Inception weights the features are Inception-v3's pool3 (the FID); without them they are
the penultimate layer of a small classifier trained on the same dataset: "classifier Frechet
distance", never called FID.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from . import probe


@torch.no_grad()
def encode(model, images: torch.Tensor, batch: int = 500) -> torch.Tensor:
    """z of float images in [0, 1] (eval mode: batch norm uses its running statistics)."""
    model.eval()
    return torch.cat([model.ae.encoder(images[i:i + batch]) for i in range(0, len(images), batch)])


@torch.no_grad()
def decode(model, z: torch.Tensor, batch: int = 500) -> torch.Tensor:
    model.eval()
    return torch.cat([model.ae.decoder(z[i:i + batch]) for i in range(0, len(z), batch)])


def reconstruction_mse(images: torch.Tensor, recon: torch.Tensor) -> dict:
    """Per-value and per-image squared error of images in [0, 1] (see the module docstring)."""
    err = (recon.double() - images.double()).pow(2).flatten(1)
    return {"mse_per_value": float(err.mean()), "mse_per_image": float(err.sum(1).mean()),
            "values_per_image": err.shape[1]}


def linear_probe(train_x: torch.Tensor, train_y: torch.Tensor, test_x: torch.Tensor, test_y: torch.Tensor, *,
                 epochs: int, seed: int, num_classes: int, device="cpu") -> float:
    """Test accuracy (in [0, 1]) of a linear probe on standardised flattened features (trained on ``device``)."""
    train_x, test_x = train_x.flatten(1).float().to(device), test_x.flatten(1).float().to(device)
    train_y, test_y = train_y.to(device), test_y.to(device)
    mean, std = train_x.mean(0), train_x.std(0).clamp_min(1e-6)
    result = probe.train_probe((train_x - mean) / std, train_y, (test_x - mean) / std, test_y, epochs=epochs,
                               lr=1e-3, batch_size=256, val_fraction=0.1, patience=5, num_classes=num_classes,
                               generator=torch.Generator().manual_seed(seed))
    return result.test_acc


class FeatureClassifier(nn.Module):
    """A small CNN classifier whose 128-d penultimate layer is the feature space of the classifier
    Frechet distance: conv(32)-conv(64, /2)-conv(128, /2), BN + ReLU, global mean pool, Linear(128, C).
    ``forward`` returns the features (torchmetrics calls it); ``logits`` the class scores."""

    num_features = 128

    def __init__(self, in_channels: int, num_classes: int):
        super().__init__()
        layers, c = [], in_channels
        for width, stride in ((32, 1), (64, 2), (128, 2)):
            layers += [nn.Conv2d(c, width, 3, stride=stride, padding=1), nn.BatchNorm2d(width), nn.ReLU()]
            c = width
        self.body = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head = nn.Linear(128, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body((x - 0.5) / 0.5)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.forward(x))


def frechet_distance(real: torch.Tensor, fake: torch.Tensor, features: Optional[nn.Module] = None,
                     inception_weights: Optional[str] = None, batch: int = 500) -> float:
    """Frechet distance between image sets in [0, 1] (N x C x H x W), in ``features``' space, or the FID
    with Inception-v3 loaded from ``inception_weights`` (torch-fidelity's / pytorch-fid's file)."""
    from torchmetrics.image.fid import FrechetInceptionDistance

    if inception_weights is not None:
        metric = FrechetInceptionDistance(feature=2048, normalize=True, feature_extractor_weights_path=inception_weights)
        rgb = lambda x: x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x  # noqa: E731
    else:
        features.eval()
        metric = FrechetInceptionDistance(feature=features, normalize=True)
        rgb = lambda x: x  # noqa: E731
    with torch.no_grad():
        for images, is_real in ((real, True), (fake, False)):
            for i in range(0, len(images), batch):
                metric.update(rgb(images[i:i + batch].float()).clamp(0, 1), real=is_real)
    return float(metric.compute())


def interpolate(model, z0: torch.Tensor, z1: torch.Tensor, ts: torch.Tensor) -> dict:
    """Decoded interpolations from z0 (t = 0) to z1 (t = 1) of all of z, of y only, of y_hat only:

        z_t = (1 - t) z0 + t z1;  [(1 - t) y0 + t y1, y_hat0];  [y0, (1 - t) y_hat0 + t y_hat1]

    Returns {mode: images (P x T x C x H x W)} for P pairs and T values of t."""
    y0, h0 = model.ae.split(z0)
    y1, h1 = model.ae.split(z1)
    out = {}
    for mode in ("z", "y", "y_hat"):
        frames = []
        for t in ts.tolist():
            if mode == "z":
                z = (1 - t) * z0 + t * z1
            elif mode == "y":
                z = model.ae.merge((1 - t) * y0 + t * y1, h0)
            else:
                z = model.ae.merge(y0, (1 - t) * h0 + t * h1)
            frames.append(decode(model, z))
        out[mode] = torch.stack(frames, dim=1)
    return out


def interpolation_movement(frames: dict) -> dict:
    """For each mode, the per-value MSE between the last decoded frame and the first (the start
    image's decoding), averaged over pairs: how far the interpolation moves the picture."""
    return {mode: float((f[:, -1].double() - f[:, 0].double()).pow(2).mean()) for mode, f in frames.items()}
