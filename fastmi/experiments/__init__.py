"""fastmi's paper experiments: ``fastmi run <name>`` or ``python -m fastmi.experiments.<name>``.

Each module holds one experiment (a Config dataclass with the paper's defaults, a QUICK preset and
``run``); ``runner`` is the shared command line, run folder and checkpoint logic.
"""
from __future__ import annotations

import importlib

# name -> one-line summary lives in each module (SUMMARY); the order here is the listing order
EXPERIMENTS = ("remine_onehot", "remine_gaussian", "remine_slb", "remine_clb", "remine_ood", "remine_imagenet",
               "nb_dms_2d", "nb_filters", "nb_filters_v1", "nb_dms_images", "nb_mim", "nb_mim_batch",
               "nb_mim_ablation", "nb_mim_curves", "vim_mnist", "vim_cifar", "hybrid")


def get_experiment(name: str):
    """The experiment module called ``name``; ValueError naming the known ones otherwise."""
    if name not in EXPERIMENTS:
        raise ValueError(f"unknown experiment {name!r}; known: {', '.join(EXPERIMENTS)}")
    return importlib.import_module(f"{__name__}.{name}")


__all__ = ["EXPERIMENTS", "get_experiment"]
