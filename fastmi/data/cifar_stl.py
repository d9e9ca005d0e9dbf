"""Readers (and writers, for test data) of the on-disk formats of CIFAR-10, CIFAR-100 and STL-10.

These are the files the datasets' authors distribute (and torchvision downloads), read directly so
that no torchvision build matching the installed torch is needed:

    <root>/cifar-10-batches-py/{data_batch_1..5, test_batch}   pickled dicts: "data" N x 3072 uint8
                                                               (R, G, B planes of 32 x 32, row-major), "labels"
    <root>/cifar-100-python/{train, test}                      the same with "fine_labels" (100 classes)
    <root>/stl10_binary/{train,test,unlabeled}_X.bin           uint8 N x 3 x 96 x 96, each plane column-major
    <root>/stl10_binary/{train,test}_y.bin                     uint8 labels 1..10

The CIFAR files are Python pickles: only read folders you trust (as with torchvision).
Every reader returns (images uint8 N x 3 x H x W, labels int64 N); STL-10's unlabeled split has labels -1.
"""
from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import torch

from .errors import DatasetNotFoundError

CIFAR_FOLDERS = {"cifar10": "cifar-10-batches-py", "cifar100": "cifar-100-python"}
CIFAR_FILES = {
    "cifar10": {"train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"]},
    "cifar100": {"train": ["train"], "test": ["test"]},
}
CIFAR_LABEL_KEY = {"cifar10": "labels", "cifar100": "fine_labels"}
STL10_FOLDER = "stl10_binary"
STL10_SPLITS = ("train", "test", "unlabeled")
STL10_SIZE = 96


def _missing(name: str, folder: Path, what: str) -> DatasetNotFoundError:
    return DatasetNotFoundError(
        f"{name}: {what} not found under {folder}. Put the dataset's python/binary files there "
        f"(the folder {CIFAR_FOLDERS.get(name, STL10_FOLDER)}/ inside --data-dir, as distributed by the "
        f"dataset's authors or downloaded by torchvision), or add --download (needs torchvision)")


def read_cifar(name: str, split: str, root) -> tuple[torch.Tensor, torch.Tensor]:
    """CIFAR-10 / CIFAR-100 ``split`` ('train' / 'test') from ``root/cifar-*-python*``."""
    if name not in CIFAR_FOLDERS:
        raise ValueError(f"read_cifar: name must be one of {sorted(CIFAR_FOLDERS)}, got {name!r}")
    if split not in ("train", "test"):
        raise ValueError(f"read_cifar: split must be 'train' or 'test', got {split!r}")
    folder = Path(root) / CIFAR_FOLDERS[name]
    images, labels = [], []
    for fname in CIFAR_FILES[name][split]:
        path = folder / fname
        if not path.is_file():
            raise _missing(name, folder, f"file {fname}")
        with open(path, "rb") as f:
            batch = pickle.load(f, encoding="latin1")   # the files were written by Python 2
        data = np.asarray(batch["data"], dtype=np.uint8)
        if data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
            raise ValueError(f"read_cifar: {path} holds data of shape {data.shape}, expected N x 3072")
        images.append(data.reshape(-1, 3, 32, 32))
        labels.append(np.asarray(batch[CIFAR_LABEL_KEY[name]], dtype=np.int64))
    images, labels = np.concatenate(images), np.concatenate(labels)
    if len(images) != len(labels):
        raise ValueError(f"read_cifar: {name} {split} has {len(images)} images but {len(labels)} labels")
    return torch.from_numpy(images), torch.from_numpy(labels)


def read_stl10(split: str, root) -> tuple[torch.Tensor, torch.Tensor]:
    """STL-10 ``split`` ('train', 'test', 'unlabeled') from ``root/stl10_binary``; unlabeled labels are -1."""
    if split not in STL10_SPLITS:
        raise ValueError(f"read_stl10: split must be one of {STL10_SPLITS}, got {split!r}")
    folder = Path(root) / STL10_FOLDER
    x_path = folder / f"{split}_X.bin"
    if not x_path.is_file():
        raise _missing("stl10", folder, f"file {x_path.name}")
    raw = np.fromfile(x_path, dtype=np.uint8)
    per_image = 3 * STL10_SIZE * STL10_SIZE
    if raw.size % per_image:
        raise ValueError(f"read_stl10: {x_path} has {raw.size} bytes, not a multiple of {per_image}")
    # each channel plane is stored column-major: swap to row-major H x W
    images = raw.reshape(-1, 3, STL10_SIZE, STL10_SIZE).transpose(0, 1, 3, 2)
    if split == "unlabeled":
        labels = np.full(len(images), -1, dtype=np.int64)
    else:
        y_path = folder / f"{split}_y.bin"
        if not y_path.is_file():
            raise _missing("stl10", folder, f"file {y_path.name}")
        labels = np.fromfile(y_path, dtype=np.uint8).astype(np.int64) - 1
        if len(labels) != len(images):
            raise ValueError(f"read_stl10: {split} has {len(images)} images but {len(labels)} labels")
    return torch.from_numpy(np.ascontiguousarray(images)), torch.from_numpy(labels)


def write_cifar(name: str, root, split: str, images: np.ndarray, labels: np.ndarray) -> None:
    """Write uint8 N x 3 x 32 x 32 images and labels in ``name``'s format (split into the train
    batches of CIFAR-10 as evenly as possible). For tests and smoke runs."""
    folder = Path(root) / CIFAR_FOLDERS[name]
    folder.mkdir(parents=True, exist_ok=True)
    files = CIFAR_FILES[name][split]
    for fname, idx in zip(files, np.array_split(np.arange(len(labels)), len(files))):
        batch = {"data": np.ascontiguousarray(images[idx].reshape(len(idx), -1), dtype=np.uint8),
                 CIFAR_LABEL_KEY[name]: [int(v) for v in labels[idx]]}
        if name == "cifar100":
            batch["coarse_labels"] = [int(v) // 5 for v in labels[idx]]
        with open(folder / fname, "wb") as f:
            pickle.dump(batch, f)


def write_stl10(root, split: str, images: np.ndarray, labels=None) -> None:
    """Write uint8 N x 3 x 96 x 96 images (and 0-based labels, except for 'unlabeled') in STL-10's format."""
    folder = Path(root) / STL10_FOLDER
    folder.mkdir(parents=True, exist_ok=True)
    np.ascontiguousarray(images.transpose(0, 1, 3, 2), dtype=np.uint8).tofile(folder / f"{split}_X.bin")
    if split != "unlabeled":
        (np.asarray(labels) + 1).astype(np.uint8).tofile(folder / f"{split}_y.bin")
