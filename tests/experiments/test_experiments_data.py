"""Dataset loaders and models of the experiments, on small generated files."""
import gzip

import numpy as np
import pytest
import torch

from fastmi.data import (DatasetNotFoundError, all_onehot_pairs, load_idx_dataset, load_images, mi_staircase,
                         onehot_pairs, prepare_batch, read_idx, write_idx)
from fastmi.data import idx as idx_module
from fastmi.models import PairwiseConcatCritic
from fastmi.models.resnet import resnet18

from experiments._experiment_helpers import make_idx_folder, one_thread  # noqa: F401 (autouse fixture)


@pytest.mark.parametrize("gz", [True, False])
@pytest.mark.parametrize("dtype", [np.uint8, np.int8, np.int32, np.float32])
def test_idx_roundtrip(tmp_path, gz, dtype):
    a = (np.arange(2 * 3 * 4) - 5).reshape(2, 3, 4).astype(dtype)
    path = tmp_path / ("a.idx" + (".gz" if gz else ""))
    write_idx(path, a)
    b = read_idx(path)
    assert b.shape == a.shape and np.array_equal(b.astype(dtype), a)


def test_idx_bad_files(tmp_path):
    (tmp_path / "bad").write_bytes(b"\x01\x02\x08\x01\x00\x00\x00\x01\x00")
    with pytest.raises(ValueError, match="magic"):
        read_idx(tmp_path / "bad")
    with gzip.open(tmp_path / "short.gz", "wb") as f:
        f.write(bytes([0, 0, 8, 1, 0, 0, 0, 10, 1, 2]))
    with pytest.raises(ValueError, match="truncated"):
        read_idx(tmp_path / "short.gz")


@pytest.mark.parametrize("gz", [True, False])
def test_load_idx_dataset(tmp_path, gz):
    make_idx_folder(tmp_path / "fashion-mnist", n_train=7, n_test=5, gz=gz)
    x, y = load_idx_dataset("fashion-mnist", "train", tmp_path)      # found in data_dir/fashion-mnist
    assert x.shape == (7, 28, 28) and x.dtype == torch.uint8 and y.tolist() == list(range(7))
    imgs = load_images("fashion-mnist", "test", tmp_path / "fashion-mnist")
    assert imgs.images.shape == (5, 1, 28, 28) and imgs.subset(3).labels.shape == (3,)


def test_missing_dataset_error_names_the_package(tmp_path, monkeypatch):
    monkeypatch.setitem(idx_module.DEFAULT_DIRS, "fashion-mnist", [])
    with pytest.raises(DatasetNotFoundError, match="dataset-fashion-mnist") as e:
        load_images("fashion-mnist", "train", tmp_path)
    assert str(tmp_path) in str(e.value)
    with pytest.raises(DatasetNotFoundError, match="--data-dir"):
        load_images("cifar10", "train", None)
    with pytest.raises(ValueError, match="dataset must be one of"):
        load_images("svhn", "train", tmp_path)
    with pytest.raises(ValueError, match="--download"):
        load_images("fashion-mnist", "train", tmp_path, download=True)


def test_cifar_without_files_names_the_folder(tmp_path):
    with pytest.raises(DatasetNotFoundError, match="cifar-10-batches-py") as e:
        load_images("cifar10", "train", tmp_path)
    assert str(tmp_path) in str(e.value)


def test_prepare_batch():
    x = torch.randint(0, 256, (4, 1, 28, 28), dtype=torch.uint8)
    out = prepare_batch(x, 32)
    assert out.shape == (4, 3, 32, 32) and out.min() >= -1 and out.max() <= 1


def test_onehot_pairs():
    g = torch.Generator().manual_seed(0)
    joint, marginal = onehot_pairs(500, 16, generator=g)
    assert joint.shape == marginal.shape == (500, 32)
    assert torch.equal(joint[:, :16], joint[:, 16:]) and (joint.sum(1) == 2).all()
    assert (marginal[:, :16].argmax(1) != marginal[:, 16:].argmax(1)).float().mean() > 0.8
    pairs = all_onehot_pairs(4)
    assert pairs.shape == (16, 8) and pairs[1, :4].argmax() == 0 and pairs[1, 4:].argmax() == 1
    with pytest.raises(ValueError, match="n_classes"):
        onehot_pairs(4, 1)


def test_staircase_matches_the_authors_schedule():
    ours = mi_staircase()
    theirs = np.round(np.linspace(0.5, 5.5 - 1e-9, 20000)) * 2
    assert len(ours) == 20000 and np.array_equal(ours[1:], theirs[1:]) and theirs[0] == 0
    with pytest.raises(ValueError, match="steps_per_level"):
        mi_staircase(steps_per_level=0)


def test_pairwise_critic_equals_explicit_concat():
    torch.manual_seed(0)
    critic = PairwiseConcatCritic(3, 2, (8, 5))
    x, y = torch.randn(4, 3), torch.randn(6, 2)
    pairs = torch.cat([x[:, None].expand(4, 6, 3), y[None].expand(4, 6, 2)], -1)
    explicit = critic.rest(critic.first(pairs)).squeeze(-1)
    torch.testing.assert_close(critic(x, y), explicit)


def test_resnet18_shapes():
    net = resnet18(10)
    assert net(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    assert resnet18(None)(torch.randn(2, 3, 32, 32)).shape == (2, 512)
    assert sum(p.numel() for p in net.parameters()) == 11_181_642   # torchvision's resnet18(num_classes=10)
