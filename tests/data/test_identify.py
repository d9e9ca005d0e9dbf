"""fastmi.data.identify: MNIST vs Fashion-MNIST decided from the files' contents, never the folder's name."""
import gzip
import hashlib

import numpy as np
import pytest

import fastmi.data.idx as idx_module
from fastmi.data import DatasetNotFoundError, identify, locate, mnist_or_fashion, write_fake_dataset, write_idx
from fastmi.data.idx import IDX_FILES, find_idx_folder


def _write(folder, images_test, n_train=4):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(1)
    write_idx(folder / "train-images-idx3-ubyte.gz", rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8))
    write_idx(folder / "train-labels-idx1-ubyte.gz", (np.arange(n_train) % 10).astype(np.uint8))
    write_idx(folder / "t10k-images-idx3-ubyte.gz", images_test)
    write_idx(folder / "t10k-labels-idx1-ubyte.gz", (np.arange(len(images_test)) % 10).astype(np.uint8))
    return folder


def _strokes(n, seed=0):
    """MNIST-like: a few bright strokes on black (mean pixel ~0.1)."""
    rng = np.random.default_rng(seed)
    x = np.zeros((n, 28, 28), dtype=np.uint8)
    for i in range(n):
        r = rng.integers(6, 20)
        x[i, r:r + 3, 6:22] = 255            # one bar of 3 x 16 pixels: 48 / 784 = 0.061
    return x


def _garments(n, seed=0):
    """Fashion-MNIST-like: a filled grey shape over most of the frame (mean pixel ~0.4)."""
    x = np.zeros((n, 28, 28), dtype=np.uint8)
    x[:, 2:26, 3:25] = 160
    return x


def test_pixel_statistics_tell_the_two_apart_whatever_the_folder_is_called(tmp_path):
    # folders named after the other dataset: the name must not decide
    mnist_like = _write(tmp_path / "fashion-mnist", _strokes(20))
    fashion_like = _write(tmp_path / "mnist", _garments(20))
    name, how = identify.identify(mnist_like / "t10k-images-idx3-ubyte.gz")
    assert name == "mnist" and "mean pixel 0.06" in how
    name, how = identify.identify(fashion_like / "t10k-images-idx3-ubyte.gz")
    assert name == "fashion-mnist" and "mean pixel" in how


def test_official_checksums_win_over_statistics(tmp_path, monkeypatch):
    folder = _write(tmp_path / "x", _strokes(5))        # reads as MNIST by its pixels
    label_md5 = hashlib.md5((folder / "t10k-labels-idx1-ubyte.gz").read_bytes()).hexdigest()
    monkeypatch.setitem(identify.OFFICIAL_MD5, "fashion-mnist",
                        {**identify.OFFICIAL_MD5["fashion-mnist"], "t10k-labels-idx1-ubyte.gz": label_md5})
    assert identify.by_checksum([folder / "t10k-labels-idx1-ubyte.gz"]) == "fashion-mnist"
    identify._CACHE.clear()
    name, how = idx_module.folder_identity(folder)
    assert name == "fashion-mnist" and "MD5" in how


def test_the_content_checksum_survives_recompression(tmp_path, monkeypatch):
    images = _strokes(5)
    folder = _write(tmp_path / "x", images)
    raw = gzip.decompress((folder / "t10k-images-idx3-ubyte.gz").read_bytes())
    monkeypatch.setitem(identify.RAW_TEST_IMAGES_MD5, hashlib.md5(raw).hexdigest(), "fashion-mnist")
    (folder / "t10k-images-idx3-ubyte.gz").write_bytes(gzip.compress(raw, compresslevel=1))   # other bytes, same data
    assert identify.by_checksum([], folder / "t10k-images-idx3-ubyte.gz") == "fashion-mnist"


def test_fashion_files_in_data_dir_are_not_taken_for_mnist(tmp_path, monkeypatch):
    """The issue: --data-dir pointing at the Fashion-MNIST folder itself made dataset=auto say MNIST."""
    monkeypatch.setitem(idx_module.DEFAULT_DIRS, "mnist", [])
    monkeypatch.setitem(idx_module.DEFAULT_DIRS, "fashion-mnist", [])
    folder = _write(tmp_path / "fmnist", _garments(10))
    name, note = mnist_or_fashion(folder)
    assert name == "fashion-mnist" and "Fashion-MNIST used instead" in note
    with pytest.raises(DatasetNotFoundError, match="holds fashion-mnist"):
        find_idx_folder("mnist", folder)
    found = locate("auto", folder)
    assert found["dataset"] == "fashion-mnist" and "identified as fashion-mnist" in found["how"]
    # and MNIST-looking files called nothing in particular are MNIST
    other = _write(tmp_path / "whatever", _strokes(10))
    assert mnist_or_fashion(other) == ("mnist", "")


def test_fake_datasets_are_identified_as_their_name(tmp_path):
    for name in ("mnist", "fashion-mnist"):
        write_fake_dataset(name, tmp_path, n_train=3, n_test=50)
        assert identify.identify(tmp_path / name / f"{IDX_FILES['test'][0]}.gz")[0] == name


def test_torchvision_layout_is_found(tmp_path, monkeypatch):
    monkeypatch.setitem(idx_module.DEFAULT_DIRS, "mnist", [])
    _write(tmp_path / "MNIST" / "raw", _strokes(6))
    assert find_idx_folder("mnist", tmp_path) == tmp_path / "MNIST" / "raw"
