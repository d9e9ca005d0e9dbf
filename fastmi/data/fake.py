"""Tiny random datasets in the real on-disk formats, to smoke-test the experiments' full-setting
commands without the real data:

    python -m fastmi.data.fake cifar10 /tmp/fake      # then: fastmi run ... --data-dir /tmp/fake

The images are noise and the labels cycle through the classes: nothing can be learned. MNIST's
noise is sparse on a black border, so that ``fastmi.data.identify`` tells it from Fashion-MNIST's.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from .cifar_stl import STL10_SIZE, write_cifar, write_stl10
from .idx import IDX_FILES, write_idx

FAKE_DATASETS = {"mnist": 10, "fashion-mnist": 10, "cifar10": 10, "cifar100": 100, "stl10": 10}


def write_fake_dataset(name: str, root, *, n_train: int = 60, n_test: int = 20, n_unlabeled: int = 40,
                       seed: int = 0) -> Path:
    """Write a random ``name`` dataset under ``root`` where ``fastmi.data.load_images(name, ...,
    data_dir=root)`` finds it; returns ``root``. MNIST / Fashion-MNIST go to ``root/<name>/`` as
    gzipped idx files; STL-10 also gets ``n_unlabeled`` unlabeled images."""
    if name not in FAKE_DATASETS:
        raise ValueError(f"write_fake_dataset: name must be one of {sorted(FAKE_DATASETS)}, got {name!r}")
    for arg, n in (("n_train", n_train), ("n_test", n_test), ("n_unlabeled", n_unlabeled)):
        if not isinstance(n, int) or n < 1:
            raise ValueError(f"write_fake_dataset: {arg} must be a positive int, got {n!r}")
    rng = np.random.default_rng(seed)
    root = Path(root)
    classes = FAKE_DATASETS[name]
    for split, n in (("train", n_train), ("test", n_test)):
        labels = np.arange(n) % classes
        if name in ("mnist", "fashion-mnist"):
            folder = root / name
            folder.mkdir(parents=True, exist_ok=True)
            img_stem, lab_stem = IDX_FILES[split]
            write_idx(folder / f"{img_stem}.gz", _idx_images(name, n, rng))
            write_idx(folder / f"{lab_stem}.gz", labels.astype(np.uint8))
        elif name == "stl10":
            write_stl10(root, split, rng.integers(0, 256, (n, 3, STL10_SIZE, STL10_SIZE), dtype=np.uint8), labels)
        else:
            write_cifar(name, root, split, rng.integers(0, 256, (n, 3, 32, 32), dtype=np.uint8), labels)
    if name == "stl10":
        write_stl10(root, "unlabeled", rng.integers(0, 256, (n_unlabeled, 3, STL10_SIZE, STL10_SIZE), dtype=np.uint8))
    return root


def _idx_images(name: str, n: int, rng) -> np.ndarray:
    """Noise that ``fastmi.data.identify`` reads as ``name``: Fashion-MNIST uniform over the frame
    (mean pixel 0.5), MNIST a sparse 20 x 20 centre on black (mean pixel ~0.06, like MNIST's strokes)."""
    images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
    if name == "mnist":
        keep = np.zeros((n, 28, 28), dtype=bool)
        keep[:, 4:24, 4:24] = rng.random((n, 20, 20)) < 0.25
        images = np.where(keep, images, 0).astype(np.uint8)
    return images


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m fastmi.data.fake", description=__doc__.split("\n\n")[0])
    p.add_argument("name", choices=sorted(FAKE_DATASETS))
    p.add_argument("root")
    p.add_argument("--n-train", type=int, default=60)
    p.add_argument("--n-test", type=int, default=20)
    p.add_argument("--n-unlabeled", type=int, default=40)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    root = write_fake_dataset(a.name, a.root, n_train=a.n_train, n_test=a.n_test, n_unlabeled=a.n_unlabeled,
                              seed=a.seed)
    print(f"wrote a random {a.name} under {root}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
