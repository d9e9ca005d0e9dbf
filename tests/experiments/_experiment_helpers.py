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
    "remine_ood": {"dataset": "fashion-mnist", "image_size": 16, "n_train": 30, "n_test": 12, "epochs": 1,
                   "batch": 10, "eval_batch": 16, "ood": "digits", "n_ood": 25, "n_eval_train": 20},
    "remine_imagenet": {"image_size": 16, "epochs": 1, "batch": 4, "reg_weights": (0.1,), "eval_batch": 8},
    "nb_dms_2d": {"dim": 16, "hidden": (16, 16), "spirals_n": 60, "circles_n": 40, "moons_n": 40, "blobs_n": 40,
                  "spirals_epochs": 3, "circles_epochs": 3, "moons_epochs": 3, "blobs_epochs": 3, "grid": 12},
    "nb_filters": {"dataset": "fashion-mnist", "n_train": 40, "n_test": 20, "batch": 20, "epochs": 2,
                   "hidden": (16, 16), "dim_out": 8, "n_show": 8},
    "nb_filters_v1": {"dataset": "fashion-mnist", "n_train": 40, "n_test": 20, "batch": 20, "epochs": 2,
                      "hidden": (16, 16), "dim_out": 8, "n_show": 8},
    "nb_dms_images": {"dataset": "fashion-mnist", "n_train": 40, "n_test": 20, "batch": 16, "epochs": 1,
                      "channels": (4, 4, 4, 4), "probe_epochs": 2, "eval_batch": 16},
    "nb_mim": {"dataset": "fashion-mnist", "width": 0.05, "n_train": 30, "n_test": 12, "epochs": 2, "mbs": 10,
               "bs": 20, "lrs": (1e-3,), "weight_decays": (0.0,), "probe_lrs": (1e-3,), "probe_epochs": 2,
               "eval_batch": 16},
    "nb_mim_batch": {"dataset": "fashion-mnist", "width": 0.05, "n_train": 30, "n_test": 12, "epochs": 1,
                     "mbs_values": (5, 10), "bs_values": (10,), "probe_epochs": 2, "random_baseline": False},
    "nb_mim_ablation": {"dataset": "fashion-mnist", "width": 0.05, "n_train": 30, "n_test": 12, "epochs": 1, "mbs": 10,
                        "bs": 10, "n_random": 1, "n_alpha0": 1, "n_beta0": 1, "probe_epochs": 2,
                        "random_baseline": False},
    "nb_mim_curves": {"dataset": "fashion-mnist", "width": 0.05, "n_train": 30, "n_test": 12, "epochs": 1, "mbs": 10,
                      "bs": 10, "n_random": 1, "n_alpha0": 1, "n_beta0": 0, "probe_epochs": 3},
    "vim_mnist": {"hidden": (16,), "k": 4, "epochs": 2, "batch_size": 10, "n_train": 40, "n_test": 20,
                  "models": ("baseline", "vib:1e-3", "vim:1e-3"), "sweep_betas": (1e-2,), "sweep_sigmas": (1.0,),
                  "sweep_epochs": 1, "k2_models": ("baseline", "vim:1e-3"), "k2_epochs": 1, "attack_n": 2,
                  "attack_steps": 10, "attack_binary_steps": 2, "kmeans_init": 1, "eval_batch": 16},
    "vim_cifar": {"widths": (4, 4, 4, 4), "k": 3, "epochs": 2, "batch_size": 10, "sigmas": (1.0,), "betas": (1e-3,),
                  "n_train": 40, "n_test": 20, "lr_milestones": (1,), "kmeans_init": 1, "eval_batch": 16},
    "hybrid": {"dataset": "fashion-mnist", "n_train": 40, "n_test": 20, "widths": (4, 4), "cells": 1,
               "alphas": (0.0, 0.5, 1.0), "hybrid_alpha": 0.5, "epochs": 1, "batch_size": 8, "head_hidden": 8,
               "moco_dim": 8, "queue_size": 16, "key_bn_groups": 2, "probe_epochs": 2, "ddim_alphas": (0.5,),
               "ddim_width": 8, "ddim_epochs": 1, "diffusion_steps": 20, "sampling_steps": 5, "n_samples": 12,
               "n_fid": 12, "classifier_epochs": 1, "interp_pairs": 2, "interp_frames": 3, "log_every": 1,
               "ckpt_every": 2},
}

# experiments that read a dataset: the fake one their tiny run gets (fastmi.data.write_fake_dataset)
TINY_DATA = {"vim_mnist": "fashion-mnist", "vim_cifar": "cifar10", "remine_imagenet": "imagenet",
             "hybrid": "fashion-mnist"}


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
    """The data folder of ``name``'s tiny run: generated idx files (configs on fashion-mnist), a fake
    dataset in its real on-disk format (TINY_DATA), or None (synthetic data)."""
    if name in TINY_DATA:
        from fastmi.data import write_fake_dataset

        return write_fake_dataset(TINY_DATA[name], tmp_path / "data", n_train=40, n_test=20)
    if TINY[name].get("dataset") == "fashion-mnist":
        return make_idx_folder(tmp_path / "data")
    return None


def run_tiny(name: str, run_dir: Path, data_dir=None, config=None, **ctx_kw):
    """Run ``name``'s tiny config (with ``config`` overrides) in ``run_dir``; ``ctx_kw`` go to the RunContext."""
    module, cfg = tiny_config(name, **(config or {}))
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
