"""Helpers of the experiment tests: tiny configs and small generated idx datasets."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch

from fastmi.data import write_idx
from fastmi.experiments import get_experiment, runner

TINY = {
    "remine_onehot": {"steps": 20, "batches": (8, 4), "sweep_targets": (-1.0, 1.0), "drift_window": 10,
                      "ckpt_every": 5},
    "remine_gaussian": {"steps_per_level": 4, "levels": (1.0, 2.0), "batch": 8, "hidden": (16, 16), "ema_span": 3,
                        "ckpt_every": 3},
    "remine_slb": {"dataset": "fashion-mnist", "image_size": 16, "n_train": 30, "n_test": 12, "epochs": 2,
                   "batch": 10, "seeds": 1, "reg_weights": (0.1,), "eval_batch": 16},
    "remine_clb": {"dataset": "fashion-mnist", "image_size": 16, "n_train": 30, "n_test": 12, "epochs": 2,
                   "batch": 10, "seeds": 1, "reg_weights": (0.1,), "eval_batch": 16},
    "vim_mnist": {"hidden": (16,), "k": 4, "epochs": 2, "batch_size": 10, "n_train": 40, "n_test": 20,
                  "models": ("baseline", "vib:1e-3", "vim:1e-3"), "sweep_betas": (1e-2,), "sweep_sigmas": (1.0,),
                  "sweep_epochs": 1, "k2_models": ("baseline", "vim:1e-3"), "k2_epochs": 1, "attack_n": 2,
                  "attack_steps": 10, "attack_binary_steps": 2, "kmeans_init": 1, "eval_batch": 16},
    "vim_cifar": {"widths": (4, 4, 4, 4), "k": 3, "epochs": 2, "batch_size": 10, "sigmas": (1.0,), "betas": (1e-3,),
                  "n_train": 40, "n_test": 20, "lr_milestones": (1,), "kmeans_init": 1, "eval_batch": 16},
}

# experiments that read a dataset: the fake one their tiny run gets (fastmi.data.write_fake_dataset)
TINY_DATA = {"vim_mnist": "fashion-mnist", "vim_cifar": "cifar10"}


def tiny_config(name: str, **over):
    module = get_experiment(name)
    return module, dataclasses.replace(module.Config(), **{**TINY[name], **over})


def make_idx_folder(folder: Path, n_train=30, n_test=12, gz=True, seed=0) -> Path:
    """Four Fashion-MNIST-like idx files of random images (labels 0..9)."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    ext = ".gz" if gz else ""
    for split, n in (("train", n_train), ("t10k", n_test)):
        write_idx(folder / f"{split}-images-idx3-ubyte{ext}", rng.integers(0, 256, (n, 28, 28), dtype=np.uint8))
        write_idx(folder / f"{split}-labels-idx1-ubyte{ext}", (np.arange(n) % 10).astype(np.uint8))
    return folder


def tiny_data_dir(name: str, tmp_path: Path):
    """The data folder of ``name``'s tiny run: generated idx files (remine_slb / remine_clb), a fake
    dataset in its real on-disk format (TINY_DATA), or None (synthetic data)."""
    if name in ("remine_slb", "remine_clb"):
        return make_idx_folder(tmp_path / "data")
    if name in TINY_DATA:
        from fastmi.data import write_fake_dataset

        return write_fake_dataset(TINY_DATA[name], tmp_path / "data", n_train=40, n_test=20)
    return None


def run_tiny(name: str, run_dir: Path, data_dir=None, **ctx_kw):
    module, cfg = tiny_config(name)
    ctx = runner.RunContext(name=name, run_dir=run_dir, data_dir=str(data_dir) if data_dir else None,
                            progress=False, **ctx_kw)
    return runner.run_experiment(module, cfg, ctx)


@pytest.fixture(autouse=True)
def one_thread():
    """Experiments run with one torch thread (as ``fastmi run`` does by default); restored afterwards."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
