"""fastmi.data.cifar_stl / fake: the on-disk formats of CIFAR-10/100 and STL-10, read without torchvision."""
import pickle

import numpy as np
import pytest
import torch

import fastmi.data.idx as idx_module
from fastmi.data import (DatasetNotFoundError, load_images, mnist_or_fashion, read_cifar, read_stl10,
                         write_fake_dataset)
from fastmi.data.fake import main as fake_main


def test_cifar10_layout_from_hand_written_pickles(tmp_path):
    # built by hand (not by fastmi's writer): row = R plane, G plane, B plane, each 32 x 32 row-major
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (12, 3, 32, 32), dtype=np.uint8)
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    chunks = np.array_split(np.arange(10), 5) + [np.arange(10, 12)]
    for name, idx in zip(names, chunks):
        rows = np.stack([np.concatenate([images[i, c].ravel() for c in range(3)]) for i in idx])
        with open(folder / name, "wb") as f:
            pickle.dump({b"batch_label": b"x", "data": rows, "labels": [int(i) % 10 for i in idx]}, f, protocol=2)
    x, y = read_cifar("cifar10", "train", tmp_path)
    assert x.shape == (10, 3, 32, 32) and x.dtype == torch.uint8
    assert torch.equal(x, torch.from_numpy(images[:10])) and y.tolist() == list(range(10))
    x, y = read_cifar("cifar10", "test", tmp_path)
    assert torch.equal(x, torch.from_numpy(images[10:])) and y.tolist() == [0, 1]


def test_stl10_planes_are_column_major(tmp_path):
    folder = tmp_path / "stl10_binary"
    folder.mkdir()
    img = np.zeros((1, 3, 96, 96), dtype=np.uint8)
    img[0, 1, 2, 5] = 200                      # channel 1, row 2, column 5
    raw = np.zeros(3 * 96 * 96, dtype=np.uint8)
    raw[1 * 96 * 96 + 5 * 96 + 2] = 200        # stored column by column
    raw.tofile(folder / "test_X.bin")
    np.array([10], dtype=np.uint8).tofile(folder / "test_y.bin")
    x, y = read_stl10("test", tmp_path)
    assert torch.equal(x, torch.from_numpy(img)) and y.tolist() == [9]


@pytest.mark.parametrize("name,classes", [("cifar10", 10), ("cifar100", 100), ("stl10", 10),
                                          ("fashion-mnist", 10), ("mnist", 10)])
def test_fake_datasets_load(tmp_path, name, classes):
    write_fake_dataset(name, tmp_path, n_train=13, n_test=7, n_unlabeled=5, seed=3)
    train, test = load_images(name, "train", tmp_path), load_images(name, "test", tmp_path)
    side = {"stl10": 96, "cifar10": 32, "cifar100": 32}.get(name, 28)
    assert train.images.shape[1:] == (3 if side != 28 else 1, side, side) and len(train.labels) == 13
    assert len(test.labels) == 7 and train.labels.tolist() == [i % classes for i in range(13)]
    if name == "stl10":
        unl = load_images(name, "unlabeled", tmp_path)
        assert unl.images.shape == (5, 3, 96, 96) and (unl.labels == -1).all()


def test_fake_round_trip_keeps_pixels(tmp_path):
    write_fake_dataset("stl10", tmp_path, n_train=2, n_test=1, n_unlabeled=1, seed=5)
    rng = np.random.default_rng(5)   # the writer's draw order: train images first
    expected = rng.integers(0, 256, (2, 3, 96, 96), dtype=np.uint8)
    assert torch.equal(load_images("stl10", "train", tmp_path).images, torch.from_numpy(expected))


def test_fake_cli(tmp_path, capsys):
    assert fake_main(["cifar100", str(tmp_path), "--n-train", "4", "--n-test", "2"]) == 0
    assert len(read_cifar("cifar100", "train", tmp_path)[1]) == 4 and "cifar100" in capsys.readouterr().out


def test_errors_name_the_argument(tmp_path):
    with pytest.raises(ValueError, match="split of stl10"):
        load_images("stl10", "val", tmp_path)
    with pytest.raises(ValueError, match="split of cifar10"):
        load_images("cifar10", "unlabeled", tmp_path)
    with pytest.raises(DatasetNotFoundError, match="stl10_binary"):
        load_images("stl10", "train", tmp_path)
    with pytest.raises(ValueError, match="n_train"):
        write_fake_dataset("cifar10", tmp_path, n_train=0)
    with pytest.raises(ValueError, match="name must be one of"):
        write_fake_dataset("svhn", tmp_path)
    (tmp_path / "stl10_binary").mkdir()
    np.zeros(100, dtype=np.uint8).tofile(tmp_path / "stl10_binary" / "train_X.bin")
    with pytest.raises(ValueError, match="not a multiple"):
        read_stl10("train", tmp_path)


def test_mnist_or_fashion(tmp_path, monkeypatch):
    monkeypatch.setitem(idx_module.DEFAULT_DIRS, "mnist", [])
    monkeypatch.setitem(idx_module.DEFAULT_DIRS, "fashion-mnist", [])
    with pytest.raises(DatasetNotFoundError, match="neither MNIST nor Fashion-MNIST"):
        mnist_or_fashion(tmp_path)
    write_fake_dataset("fashion-mnist", tmp_path, n_train=2, n_test=2)
    name, note = mnist_or_fashion(tmp_path)
    assert name == "fashion-mnist" and "MNIST" in note
    write_fake_dataset("mnist", tmp_path, n_train=2, n_test=2)
    assert mnist_or_fashion(tmp_path) == ("mnist", "")
