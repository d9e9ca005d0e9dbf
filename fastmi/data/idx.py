"""Reader for the idx files of MNIST and Fashion-MNIST (gzipped or raw), from a folder on disk.

Nothing is downloaded: a missing file raises ``DatasetNotFoundError`` saying where to put it.
"""
from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np
import torch

from .errors import DatasetNotFoundError

# idx type codes -> numpy dtypes (big-endian)
_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}

IDX_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}

# torchvision's download folders (<root>/<name>/raw)
TORCHVISION_FOLDERS = {"mnist": "MNIST", "fashion-mnist": "FashionMNIST"}

# where known packages put the files; searched after the given folder
DEFAULT_DIRS = {
    "fashion-mnist": ["/usr/share/datasets/fashion-mnist"],
    "mnist": ["/usr/share/datasets/mnist"],
}

HOW_TO_GET = {
    "fashion-mnist": "run `fastmi data fashion-mnist` (Debian's package dataset-fashion-mnist, files under "
                     "/usr/share/datasets/fashion-mnist) or copy the four *-idx?-ubyte[.gz] files from "
                     "https://github.com/zalandoresearch/fashion-mnist into --data-dir",
    "mnist": "run `fastmi data mnist --data-dir DIR` (torchvision's download) or copy the four "
             "*-idx?-ubyte[.gz] files of MNIST into --data-dir (or --data-dir/mnist)",
}


def read_idx(path) -> np.ndarray:
    """Read one idx file (``.gz`` or raw) into a numpy array of its stored shape and dtype."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        data = f.read()
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise ValueError(f"read_idx: {path} is not an idx file (bad magic number)")
    code, ndim = data[2], data[3]
    if code not in _DTYPES:
        raise ValueError(f"read_idx: {path} has unknown idx type code 0x{code:02x}")
    header = 4 + 4 * ndim
    shape = tuple(int.from_bytes(data[4 + 4 * k: 8 + 4 * k], "big") for k in range(ndim))
    dtype = np.dtype(_DTYPES[code])
    count = int(np.prod(shape)) if shape else 1
    if len(data) - header < count * dtype.itemsize:
        raise ValueError(f"read_idx: {path} is truncated: shape {shape} needs {count * dtype.itemsize} bytes "
                         f"of data, found {len(data) - header}")
    return np.frombuffer(data, dtype=dtype, count=count, offset=header).reshape(shape)


def _find(folder: Path, stem: str):
    for name in (stem, stem + ".gz", stem.replace("-idx", ".idx"), stem.replace("-idx", ".idx") + ".gz"):
        if (folder / name).is_file():
            return folder / name
    return None


def folder_identity(folder) -> tuple[str, str]:
    """(dataset, how decided) of the idx files in ``folder``, from their contents (``identify``)."""
    from .identify import identify

    folder = Path(folder)
    others = [_find(folder, s) for pair in IDX_FILES.values() for s in pair]
    return identify(_find(folder, IDX_FILES["test"][0]), [p for p in others if p is not None])


def _candidates(dataset: str, data_dir) -> list:
    out = []
    if data_dir is not None:
        d = Path(data_dir)
        out += [d, d / dataset, d / dataset.replace("-", "_"), d / TORCHVISION_FOLDERS[dataset] / "raw"]
    return out + [Path(p) for p in DEFAULT_DIRS[dataset]]


def find_idx_folder(dataset: str, data_dir=None) -> Path:
    """The first folder holding all four idx files of ``dataset``: ``data_dir``, ``data_dir/<dataset>``,
    torchvision's ``data_dir/MNIST/raw`` (or FashionMNIST), then the folders of known packages.
    A folder whose files hold the other dataset (``identify``: checksums, else pixel statistics) is
    passed over, whatever its name. Raises ``DatasetNotFoundError`` naming what to install."""
    if dataset not in HOW_TO_GET:
        raise ValueError(f"dataset must be one of {sorted(HOW_TO_GET)}, got {dataset!r}")
    candidates = _candidates(dataset, data_dir)
    stems = [s for pair in IDX_FILES.values() for s in pair]
    other = []
    for folder in candidates:
        if all(_find(folder, s) for s in stems):
            name, how = folder_identity(folder)
            if name == dataset:
                return folder
            other.append(f"{folder} holds {name} ({how})")
    looked = ", ".join(dict.fromkeys(str(c) for c in candidates))
    held = f" ({'; '.join(other)})" if other else ""
    raise DatasetNotFoundError(f"{dataset}: idx files ({', '.join(stems)}, raw or .gz) not found in {looked}{held}. "
                               f"To get them: {HOW_TO_GET[dataset]}.")


def load_idx_dataset(dataset: str, split: str, data_dir=None) -> tuple[torch.Tensor, torch.Tensor]:
    """(images, labels) of MNIST / Fashion-MNIST: uint8 N x 28 x 28 and int64 N."""
    if split not in IDX_FILES:
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    folder = find_idx_folder(dataset, data_dir)
    from .sources import record_read

    record_read(dataset, split, folder)
    img_stem, lab_stem = IDX_FILES[split]
    images = read_idx(_find(folder, img_stem))
    labels = read_idx(_find(folder, lab_stem))
    if images.ndim != 3 or labels.ndim != 1 or images.shape[0] != labels.shape[0]:
        raise ValueError(f"{dataset} {split}: images {images.shape} and labels {labels.shape} do not match")
    return torch.from_numpy(images.copy()), torch.from_numpy(labels.astype(np.int64))


def write_idx(path, array: np.ndarray) -> None:
    """Write ``array`` (uint8 / int8 / big-endian int16, int32, float32, float64) as an idx file
    (gzipped if ``path`` ends with .gz). Used to make small test files."""
    array = np.ascontiguousarray(array)
    code = next((c for c, dt in _DTYPES.items() if np.dtype(dt).kind == array.dtype.kind
                 and np.dtype(dt).itemsize == array.dtype.itemsize), None)
    if code is None:
        raise ValueError(f"write_idx: unsupported dtype {array.dtype}")
    payload = bytes([0, 0, code, array.ndim]) + b"".join(int(s).to_bytes(4, "big") for s in array.shape)
    payload += array.astype(np.dtype(_DTYPES[code])).tobytes()
    opener = gzip.open if os.fspath(path).endswith(".gz") else open
    with opener(path, "wb") as f:
        f.write(payload)
