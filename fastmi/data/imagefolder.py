"""ImageNet (ILSVRC-2012) as class folders of image files, read lazily batch by batch.

Layout (torchvision's ImageFolder): ``<data_dir>/imagenet/{train,val}/<class>/<image>`` (or
``<data_dir>/{train,val}/...``); the classes are the sorted folder names, label = their index. The
'test' split is the ``val`` folder (ImageNet's test labels are not public). Each image is decoded
with Pillow when a batch asks for it: converted to RGB, its shorter side resized to ``size``
(bilinear) and centre-cropped to size x size, as uint8 3 x size x size, so the whole set never sits
in memory. ``write_fake_image_folder`` writes a tiny random set in this layout (smoke tests).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from .errors import DatasetNotFoundError

IMAGENET_FOLDER = "imagenet"
SPLIT_FOLDERS = {"train": "train", "test": "val"}
EXTENSIONS = (".jpeg", ".jpg", ".png", ".bmp", ".ppm", ".webp")


def find_image_folder(data_dir) -> Path:
    """The folder holding train/ and val/ (``data_dir/imagenet`` or ``data_dir``)."""
    if data_dir is None:
        raise DatasetNotFoundError("imagenet: give --data-dir DIR, the folder holding imagenet/train/<class>/ and "
                                   "imagenet/val/<class>/ (never downloaded)")
    for root in (Path(data_dir) / IMAGENET_FOLDER, Path(data_dir)):
        if all((root / s).is_dir() for s in SPLIT_FOLDERS.values()):
            return root
    raise DatasetNotFoundError(f"imagenet: no train/ and val/ class folders in {Path(data_dir) / IMAGENET_FOLDER} "
                               f"or {data_dir} (layout: imagenet/train/<class>/<image>, imagenet/val/<class>/<image>)")


def load_square(path, size: int) -> np.ndarray:
    """One image as uint8 3 x size x size: RGB, shorter side resized to ``size``, centre crop."""
    from PIL import Image

    with Image.open(path) as im:
        im = im.convert("RGB")
        w, h = im.size
        s = size / min(w, h)
        im = im.resize((max(size, round(w * s)), max(size, round(h * s))), Image.BILINEAR)
        w, h = im.size
        left, top = (w - size) // 2, (h - size) // 2
        im = im.crop((left, top, left + size, top + size))
        return np.asarray(im, dtype=np.uint8).transpose(2, 0, 1).copy()


class LazyImages:
    """Indexable like a uint8 N x 3 x size x size tensor (ints, slices, index tensors or lists),
    decoding only the images asked for."""

    def __init__(self, paths: list, size: int):
        self.paths, self.size = list(paths), size

    def __len__(self) -> int:
        return len(self.paths)

    @property
    def shape(self) -> tuple:
        return (len(self.paths), 3, self.size, self.size)

    def __getitem__(self, idx):
        if isinstance(idx, slice):
            picked = self.paths[idx]
        elif isinstance(idx, int):
            return torch.from_numpy(load_square(self.paths[idx], self.size))
        else:
            picked = [self.paths[int(i)] for i in (idx.tolist() if isinstance(idx, torch.Tensor) else idx)]
        if not picked:
            return torch.empty((0, 3, self.size, self.size), dtype=torch.uint8)
        return torch.from_numpy(np.stack([load_square(p, self.size) for p in picked]))


class FolderImages:
    """A split of class folders: ``images`` (LazyImages) and int64 ``labels``; ``subset`` like TensorImages."""

    def __init__(self, paths: list, labels: torch.Tensor, size: int, classes: list):
        self.images, self.labels, self.classes = LazyImages(paths, size), labels, classes

    def subset(self, n, generator=None) -> "FolderImages":
        if n is None or n >= len(self.labels):
            return self
        idx = torch.randperm(len(self.labels), generator=generator)[:n]
        return FolderImages([self.images.paths[int(i)] for i in idx], self.labels[idx], self.images.size,
                            self.classes)


def read_image_folder(split: str, data_dir, size: int = 224) -> FolderImages:
    """``split`` ('train' / 'test' = val/) of the class folders under ``data_dir`` (see the module doc)."""
    root = find_image_folder(data_dir) / SPLIT_FOLDERS[split]
    classes = sorted(p.name for p in root.iterdir() if p.is_dir())
    paths, labels = [], []
    for k, c in enumerate(classes):
        files = sorted(f for f in (root / c).iterdir() if f.suffix.lower() in EXTENSIONS)
        paths += [str(f) for f in files]
        labels += [k] * len(files)
    if not paths:
        raise DatasetNotFoundError(f"imagenet: no images ({', '.join(EXTENSIONS)}) in the class folders of {root}")
    return FolderImages(paths, torch.tensor(labels, dtype=torch.int64), size, classes)


def write_fake_image_folder(root, *, n_train: int = 12, n_test: int = 6, classes: int = 3, side: int = 40,
                            seed: int = 0) -> Path:
    """Random RGB JPEG files in ``root/imagenet/{train,val}/n0000000k/`` (labels cycle over ``classes``)."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    for split, n in (("train", n_train), ("test", n_test)):
        for i in range(n):
            folder = Path(root) / IMAGENET_FOLDER / SPLIT_FOLDERS[split] / f"n{i % classes:08d}"
            folder.mkdir(parents=True, exist_ok=True)
            h, w = side, side + 8 * (i % 3)   # non-square, to exercise the resize and crop
            Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(folder / f"img{i:05d}.JPEG")
    return Path(root)
