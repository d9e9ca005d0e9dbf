"""Which dataset a folder of MNIST-format idx files holds, decided from the files, not the folder name.

MNIST and Fashion-MNIST share the file names, shapes (28 x 28 uint8) and label set (0..9), so the
name of the folder says nothing. Two checks, in order:

1. the MD5 of the files as found against the official ``.gz`` files' (the checksums torchvision and
   the datasets' authors publish), and the MD5 of the decompressed test images against known copies
   (Debian's recompressed Fashion-MNIST): an exact identification;
2. otherwise the mean pixel value of the test images, m = sum(x) / (255 N 28 28). MNIST's digits are
   thin strokes on black: m = 0.133 (the 0.1307 / 0.1325 of every MNIST normalisation); Fashion-
   MNIST's garments fill the frame: m = 0.286. Images with m < 0.2 are called MNIST, others
   Fashion-MNIST (random test images, m = 0.5, read as Fashion-MNIST).

``identify(folder)`` returns (name, how) and caches per file (path, size, mtime).
"""
from __future__ import annotations

import gzip
import hashlib
from pathlib import Path

import numpy as np

OFFICIAL_MD5 = {
    "mnist": {"train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
              "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
              "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
              "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c"},
    "fashion-mnist": {"train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
                      "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
                      "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
                      "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310"},
}
# MD5 of the decompressed t10k images (the same bytes however the file was (re)compressed; measured
# on Debian's dataset-fashion-mnist, which recompresses the official files)
RAW_TEST_IMAGES_MD5 = {"8181f5470baa50b63fa0f6fddb340f0a": "fashion-mnist"}
MEAN_PIXEL = {"mnist": 0.133, "fashion-mnist": 0.286}   # of the real test sets (see above)
THRESHOLD = 0.2
_CACHE: dict = {}


def _md5(path: Path) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def by_checksum(files: list, test_images=None) -> str | None:
    """The dataset whose official ``.gz`` file has the MD5 of one of ``files``, or whose decompressed
    test images have the MD5 of ``test_images``' content (None: no match)."""
    known = {md5: name for name, table in OFFICIAL_MD5.items() for md5 in table.values()}
    for path in files:
        if Path(path).suffix == ".gz":
            hit = known.get(_md5(path))
            if hit:
                return hit
    if test_images is not None:
        opener = gzip.open if Path(test_images).suffix == ".gz" else open
        with opener(test_images, "rb") as f:
            return RAW_TEST_IMAGES_MD5.get(hashlib.md5(f.read()).hexdigest())
    return None


def mean_pixel(images_path) -> float:
    """m = mean pixel / 255 of an idx3 uint8 image file (raw or .gz)."""
    from .idx import read_idx

    x = read_idx(images_path)
    return float(np.asarray(x, dtype=np.float64).mean() / 255.0)


def identify(images_path, other_files=()) -> tuple[str, str]:
    """(dataset, how it was decided) for the idx image file ``images_path`` (and its companion
    ``other_files``, checked against the official checksums too)."""
    path = Path(images_path)
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns, tuple(map(str, other_files)))
    if key not in _CACHE:
        hit = by_checksum([path, *other_files], path)
        if hit:
            _CACHE[key] = (hit, f"MD5 of its files (the official {hit})")
        else:
            m = mean_pixel(path)
            name = "mnist" if m < THRESHOLD else "fashion-mnist"
            _CACHE[key] = (name, f"mean pixel {m:.3f} of {path.name} (MNIST {MEAN_PIXEL['mnist']}, "
                                 f"Fashion-MNIST {MEAN_PIXEL['fashion-mnist']}; below {THRESHOLD} reads as MNIST; "
                                 "no known MD5)")
    return _CACHE[key]


__all__ = ["identify", "by_checksum", "mean_pixel", "OFFICIAL_MD5", "MEAN_PIXEL", "THRESHOLD"]
