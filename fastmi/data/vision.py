"""Image datasets of the experiments: Fashion-MNIST / MNIST from idx files, CIFAR-10/100 and STL-10
from their distributed files in a folder. Nothing is downloaded unless ``download=True`` (torchvision).

Every loader returns a ``TensorImages`` pair (float images N x 3 x H x W in [0, 1], int64 labels),
so the benchmarks see one format. Resizing and normalisation happen per batch (``prepare_batch``).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from .errors import DatasetNotFoundError
from .cifar_stl import CIFAR_FOLDERS, STL10_FOLDER, STL10_SPLITS, read_cifar, read_stl10
from .idx import find_idx_folder, load_idx_dataset
from .sources import record_read

NUM_CLASSES = {"fashion-mnist": 10, "mnist": 10, "cifar10": 10, "cifar100": 100, "stl10": 10, "imagenet": 1000}


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
        raise ImportError("--download fetches CIFAR-10/100 and STL-10 through torchvision, which is not usable here "
                          f"({type(e).__name__}: {e}). Install the torchvision build that matches your torch "
                          "(pip install 'fastmi[vision]'; torch 2.13 needs torchvision 0.28), or put the "
                          "dataset's files in --data-dir yourself (fastmi reads them without torchvision)") from e
    return torchvision


def _download(name: str, root: Path) -> None:
    """Let torchvision fetch ``name`` into ``root`` (only with --download); fastmi then reads the files."""
    tv = _torchvision()
    if name == "stl10":
        for split in STL10_SPLITS:
            tv.datasets.STL10(str(root), split=split, download=True)
    else:
        cls = tv.datasets.CIFAR10 if name == "cifar10" else tv.datasets.CIFAR100
        for train in (True, False):
            cls(str(root), train=train, download=True)


def load_images(name: str, split: str, data_dir=None, download: bool = False) -> TensorImages:
    """Load ``split`` of ``name`` (fashion-mnist, mnist, cifar10, cifar100, stl10, imagenet): 'train' / 'test',
    and for stl10 also 'unlabeled' (labels -1). MNIST / Fashion-MNIST come from idx files, CIFAR and
    STL-10 from their distributed files under ``data_dir`` (``fastmi.data.cifar_stl``; no torchvision
    needed); ``download=True`` lets torchvision fetch CIFAR / STL-10 first."""
    if name not in NUM_CLASSES:
        raise ValueError(f"dataset must be one of {sorted(NUM_CLASSES)}, got {name!r}")
    splits = STL10_SPLITS if name == "stl10" else ("train", "test")
    if split not in splits:
        raise ValueError(f"split of {name} must be one of {splits}, got {split!r}")
    if name == "imagenet":   # class folders, decoded lazily per batch at 224 x 224 (fastmi.data.imagefolder)
        from .imagefolder import read_image_folder

        if download:
            raise ValueError("--download is not supported for imagenet: put its class folders in --data-dir")
        return read_image_folder(split, data_dir)
    if name in ("fashion-mnist", "mnist"):
        if download:
            raise ValueError(f"--download is not supported for {name}: {name} is read from idx files "
                             "(Debian: apt-get install dataset-fashion-mnist)")
        images, labels = load_idx_dataset(name, split, data_dir)
        return TensorImages(images[:, None], labels)
    if data_dir is None:
        raise DatasetNotFoundError(f"{name}: give --data-dir DIR (the folder holding "
                                   f"{CIFAR_FOLDERS.get(name, STL10_FOLDER)}/), or add --download to fetch it there")
    root = Path(data_dir)
    if download:
        _download(name, root)
    images, labels = read_stl10(split, root) if name == "stl10" else read_cifar(name, split, root)
    record_read(name, split, root / (STL10_FOLDER if name == "stl10" else CIFAR_FOLDERS[name]))
    return TensorImages(images, labels)


def mnist_or_fashion(data_dir=None) -> tuple[str, str]:
    """("mnist", "") when MNIST's idx files are found (``data_dir``, ``data_dir/mnist``, known package
    folders), else ("fashion-mnist", a note saying MNIST was absent) — for the experiments whose paper
    dataset is MNIST. Raises DatasetNotFoundError (how to get either) when neither is found."""
    try:
        find_idx_folder("mnist", data_dir)
        return "mnist", ""
    except DatasetNotFoundError as no_mnist:
        try:
            find_idx_folder("fashion-mnist", data_dir)
        except DatasetNotFoundError as no_fashion:
            raise DatasetNotFoundError(f"neither MNIST nor Fashion-MNIST was found. {no_mnist} {no_fashion}") from None
        return "fashion-mnist", "MNIST idx files not found: Fashion-MNIST used instead (the paper uses MNIST)"


def prepare_batch(images: torch.Tensor, size: int) -> torch.Tensor:
    """uint8 N x C x H x W -> float N x 3 x size x size, in [-1, 1] (normalised with mean = std = 0.5,
    as the paper); grey images are repeated over 3 channels, resizing is bilinear."""
    x = images.float().div_(255.0)
    if x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1)
    if x.shape[-1] != size or x.shape[-2] != size:
        x = torch.nn.functional.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
    return (x - 0.5) / 0.5
