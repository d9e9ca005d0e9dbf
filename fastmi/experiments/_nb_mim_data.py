"""Data of the Neural Bayes-MIM experiments (SPEC 1.6, "CIFAR preprocessing and probe").

Three image sets per run, kept as uint8 tensors (on the run's device) and turned into float inputs
per batch by ``MIMData.inputs``:

- ``encoder``: what the encoder trains on. CIFAR-10: its train split; CIFAR-100: the CIFAR-10 train
  split (the paper probes CIFAR-100 on "the encoder that produces the best performance on
  CIFAR-10"); STL-10: train + unlabeled (105k images); Fashion-MNIST: its train split.
- ``encoder_test``: the test split of the encoder's dataset; its first MBS images select the epoch.
- ``probe_train`` / ``probe_test``: the labelled splits of the dataset the probe is scored on.

Inputs: per-channel normalisation with the CIFAR-10 constants (also for CIFAR-100 and STL-10, as the
authors' data.py); no augmentation on CIFAR. STL-10 (96 x 96): training draws use
RandomResizedCrop(32, scale (0.3, 1), ratio (0.7, 1.4), bicubic), test images a bicubic Resize(32),
both antialiased like PIL. Fashion-MNIST (the CPU stand-in; not in the paper): 28 x 28 grey images
zero-padded to 32 x 32 and fed as 1 channel (the authors' MNIST CNN is 1-channel too), normalised
with Fashion-MNIST's own mean / std.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as TF

from ..data import DatasetNotFoundError, load_images

DATASETS = ("cifar10", "cifar100", "stl10", "fashion-mnist")
NUM_CLASSES = {"cifar10": 10, "cifar100": 100, "stl10": 10, "fashion-mnist": 10}
CIFAR10_MEAN, CIFAR10_STD = (0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)
FASHION_MEAN, FASHION_STD = (0.2860,), (0.3530,)
STL_CROP_SCALE, STL_CROP_RATIO = (0.3, 1.0), (0.7, 1.4)
IMAGE_SIZE = 32


def encoder_dataset(dataset: str) -> str:
    """The dataset the paper trains the encoder on for a probe on ``dataset``."""
    return "cifar10" if dataset == "cifar100" else dataset


@dataclass
class Split:
    images: torch.Tensor   # uint8 N x C x H x W
    labels: torch.Tensor   # int64 N (-1 for unlabeled images)

    def __len__(self) -> int:
        return len(self.labels)

    def take(self, n: int, generator=None) -> "Split":
        """A random subset of n samples (all of them for n = 0 or n >= N); order kept as drawn."""
        if not n or n >= len(self):
            return self
        idx = torch.randperm(len(self), generator=generator)[:n]
        return Split(self.images[idx], self.labels[idx])

    def first(self, n: int) -> "Split":
        return Split(self.images[:n], self.labels[:n])


@dataclass
class MIMData:
    dataset: str
    encoder_name: str
    encoder: Split
    encoder_test: Split
    probe_train: Split
    probe_test: Split
    in_channels: int
    num_classes: int

    def inputs(self, images: torch.Tensor, train: bool, generator=None) -> torch.Tensor:
        """uint8 images of this run's datasets -> normalised float 32 x 32 inputs (on images' device).
        ``train``: a training draw (STL-10's random resized crop, drawn from ``generator``)."""
        return to_inputs(images, self.dataset, train, generator)


def to_inputs(images: torch.Tensor, dataset: str, train: bool = False, generator=None) -> torch.Tensor:
    """See the module docstring; ``dataset`` picks the geometry and the normalisation constants."""
    x = images.float().div_(255.0)
    if dataset == "fashion-mnist":
        pad_h, pad_w = IMAGE_SIZE - x.shape[-2], IMAGE_SIZE - x.shape[-1]
        if pad_h < 0 or pad_w < 0:
            raise ValueError(f"fashion-mnist images must be at most {IMAGE_SIZE} px, got {tuple(x.shape[-2:])}")
        x = TF.pad(x, (pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2))
        mean, std = FASHION_MEAN, FASHION_STD
    else:
        if x.shape[-1] != IMAGE_SIZE or x.shape[-2] != IMAGE_SIZE:
            x = random_resized_crop(x, IMAGE_SIZE, generator=generator) if train else resize(x, IMAGE_SIZE)
        mean, std = CIFAR10_MEAN, CIFAR10_STD
    m = torch.tensor(mean, device=x.device).view(1, -1, 1, 1)
    s = torch.tensor(std, device=x.device).view(1, -1, 1, 1)
    return (x - m) / s


def resize(x: torch.Tensor, size: int) -> torch.Tensor:
    """Bicubic, antialiased resize of float images in [0, 1] (PIL's Resize), clamped to [0, 1]."""
    return TF.interpolate(x, size=(size, size), mode="bicubic", align_corners=False, antialias=True).clamp_(0, 1)


def crop_boxes(n: int, height: int, width: int, scale=STL_CROP_SCALE, ratio=STL_CROP_RATIO, generator=None):
    """torchvision's RandomResizedCrop box rule, for n images: 10 tries of area fraction ~ U(scale) and
    log aspect ~ U(log ratio); the first box that fits; else the central crop with the ratio clamped.
    Returns int64 tensors (top, left, h, w), each of length n."""
    area = height * width
    frac = torch.empty(n, 10).uniform_(scale[0], scale[1], generator=generator)
    logr = torch.empty(n, 10).uniform_(math.log(ratio[0]), math.log(ratio[1]), generator=generator)
    aspect = logr.exp()
    w = (area * frac * aspect).sqrt().round().long()
    h = (area * frac / aspect).sqrt().round().long()
    ok = (w > 0) & (w <= width) & (h > 0) & (h <= height)
    first = torch.where(ok.any(1), ok.long().argmax(1), torch.full((n,), -1))
    in_ratio = width / height
    if in_ratio < ratio[0]:
        fw, fh = width, int(round(width / ratio[0]))
    elif in_ratio > ratio[1]:
        fh, fw = height, int(round(height * ratio[1]))
    else:
        fw, fh = width, height
    rows = torch.arange(n)
    pick = first.clamp(min=0)
    h = torch.where(first >= 0, h[rows, pick], torch.full((n,), fh))
    w = torch.where(first >= 0, w[rows, pick], torch.full((n,), fw))
    top = (torch.rand(n, generator=generator) * (height - h + 1)).long()
    left = (torch.rand(n, generator=generator) * (width - w + 1)).long()
    central = first < 0
    top = torch.where(central, (height - h) // 2, top)
    left = torch.where(central, (width - w) // 2, left)
    return top, left, h, w


def random_resized_crop(x: torch.Tensor, size: int, scale=STL_CROP_SCALE, ratio=STL_CROP_RATIO,
                        generator=None) -> torch.Tensor:
    """One random crop per image (``crop_boxes``), each resized to size x size, bicubic, antialiased."""
    top, left, h, w = crop_boxes(x.shape[0], x.shape[-2], x.shape[-1], scale, ratio, generator)
    out = [resize(x[i: i + 1, :, t: t + hh, l: l + ww], size)
           for i, (t, l, hh, ww) in enumerate(zip(top.tolist(), left.tolist(), h.tolist(), w.tolist()))]
    return torch.cat(out)


def _split(name: str, split: str, data_dir) -> Split:
    t = load_images(name, split, data_dir)
    return Split(t.images, t.labels)


def load(dataset: str, data_dir=None, *, n_train: int = 0, n_test: int = 0, generator=None,
         device="cpu") -> MIMData:
    """The encoder and probe splits of ``dataset`` (see the module docstring). ``n_train`` / ``n_test``
    (0: all) take random subsets of the training sets and the first ``n_test`` test images (model
    selection scores the first MBS test images, the authors' probe protocol the first 128)."""
    if dataset not in DATASETS:
        raise ValueError(f"dataset must be one of {DATASETS}, got {dataset!r}")
    enc_name = encoder_dataset(dataset)
    try:
        probe_train = _split(dataset, "train", data_dir)
        probe_test = _split(dataset, "test", data_dir)
        if enc_name == dataset:
            encoder_test = probe_test
            encoder = probe_train
            if dataset == "stl10":
                unl = _split("stl10", "unlabeled", data_dir)
                encoder = Split(torch.cat([probe_train.images, unl.images]),
                                torch.cat([probe_train.labels, torch.full_like(unl.labels, -1)]))
        else:
            encoder = _split(enc_name, "train", data_dir)
            encoder_test = _split(enc_name, "test", data_dir)
    except DatasetNotFoundError as e:
        hint = ("" if dataset == "fashion-mnist" else
                f" (the CPU preset runs on Fashion-MNIST: add --quick, or --set dataset=fashion-mnist)")
        raise DatasetNotFoundError(f"{e}{hint}") from e
    encoder = encoder.take(n_train, generator)
    if enc_name == dataset and dataset != "stl10":
        probe_train = encoder
    else:
        probe_train = probe_train.take(n_train, generator)
    # test subsets are the FIRST n_test images, so the authors' first-128 protocol stays meaningful
    probe_test = probe_test.first(n_test) if n_test else probe_test
    encoder_test = encoder_test.first(n_test) if n_test else encoder_test
    mv = lambda s: Split(s.images.to(device), s.labels)  # noqa: E731
    return MIMData(dataset, enc_name, mv(encoder), mv(encoder_test), mv(probe_train), mv(probe_test),
                   in_channels=int(probe_train.images.shape[1]), num_classes=NUM_CLASSES[dataset])
