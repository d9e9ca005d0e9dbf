"""Image datasets for the SLB / CLB benchmarks: Fashion-MNIST / MNIST from idx files, CIFAR-10/100
and STL-10 through torchvision from a folder. Nothing is downloaded unless ``download=True``.

Every loader returns a ``TensorImages`` pair (float images N x 3 x H x W in [0, 1], int64 labels),
so the benchmarks see one format. Resizing and normalisation happen per batch (``prepare_batch``).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from .errors import DatasetNotFoundError
from .idx import load_idx_dataset

NUM_CLASSES = {"fashion-mnist": 10, "mnist": 10, "cifar10": 10, "cifar100": 100, "stl10": 10}


@dataclass
class TensorImages:
    """Images (uint8 N x C x H x W) and labels (int64 N)."""
    images: torch.Tensor
    labels: torch.Tensor

    def subset(self, n, generator=None) -> "TensorImages":
        """A random subset of ``n`` samples (all of them when n is None or >= N)."""
        if n is None or n >= len(self.labels):
            return self
        idx = torch.randperm(len(self.labels), generator=generator)[:n]
        return TensorImages(self.images[idx], self.labels[idx])


def _torchvision():
    try:
        import torchvision
    except Exception as e:  # ImportError, or a build that does not match torch ("operator ... does not exist")
        raise ImportError("CIFAR-10/100 and STL-10 are read through torchvision, which is not usable here "
                          f"({type(e).__name__}: {e}). Install the torchvision build that matches your torch "
                          "(pip install 'fastmi[vision]'; torch 2.13 needs torchvision 0.28, the CPU build for "
                          "a CPU torch), or use --set dataset=fashion-mnist") from e
    return torchvision


def _torchvision_dataset(name: str, split: str, data_dir, download: bool) -> TensorImages:
    if data_dir is None:
        raise DatasetNotFoundError(f"{name}: give --data-dir DIR (the folder torchvision uses for {name}), "
                                   "or add --download to fetch it there")
    tv = _torchvision()
    root = Path(data_dir)
    try:
        if name in ("cifar10", "cifar100"):
            cls = tv.datasets.CIFAR10 if name == "cifar10" else tv.datasets.CIFAR100
            ds = cls(str(root), train=split == "train", download=download)
            images = torch.from_numpy(ds.data).permute(0, 3, 1, 2).contiguous()
            labels = torch.as_tensor(ds.targets, dtype=torch.int64)
        else:
            ds = tv.datasets.STL10(str(root), split=split, download=download)
            images = torch.from_numpy(ds.data)
            labels = torch.as_tensor(ds.labels, dtype=torch.int64)
    except RuntimeError as e:  # torchvision: "Dataset not found or corrupted. You can use download=True ..."
        raise DatasetNotFoundError(f"{name}: not found under {root} ({e}). Put torchvision's {name} files there "
                                   "(e.g. cifar-10-batches-py/, cifar-100-python/, stl10_binary/) or add --download") from e
    return TensorImages(images, labels)


def load_images(name: str, split: str, data_dir=None, download: bool = False) -> TensorImages:
    """Load ``split`` ('train' / 'test') of ``name`` (fashion-mnist, mnist, cifar10, cifar100, stl10)."""
    if name not in NUM_CLASSES:
        raise ValueError(f"dataset must be one of {sorted(NUM_CLASSES)}, got {name!r}")
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    if name in ("fashion-mnist", "mnist"):
        if download:
            raise ValueError(f"--download is not supported for {name}: {name} is read from idx files "
                             "(Debian: apt-get install dataset-fashion-mnist)")
        images, labels = load_idx_dataset(name, split, data_dir)
        return TensorImages(images[:, None], labels)
    return _torchvision_dataset(name, split, data_dir, download)


def prepare_batch(images: torch.Tensor, size: int) -> torch.Tensor:
    """uint8 N x C x H x W -> float N x 3 x size x size, in [-1, 1] (normalised with mean = std = 0.5,
    as the paper); grey images are repeated over 3 channels, resizing is bilinear."""
    x = images.float().div_(255.0)
    if x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1)
    if x.shape[-1] != size or x.shape[-2] != size:
        x = torch.nn.functional.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
    return (x - 0.5) / 0.5
