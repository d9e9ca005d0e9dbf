"""Datasets used by fastmi's experiments (read from disk; nothing is downloaded unless asked)."""
from .errors import DatasetNotFoundError
from . import identify
from .idx import load_idx_dataset, read_idx, write_idx
from .onehot import all_onehot_pairs, onehot_mi, onehot_pairs
from .staircase import mi_staircase
from .synthetic import correlated_gaussian, rho_for_mi
from .cifar_stl import read_cifar, read_stl10
from .fake import write_fake_dataset
from .sources import locate
from .vision import NUM_CLASSES, TensorImages, load_images, mnist_or_fashion, prepare_batch

__all__ = ["correlated_gaussian", "rho_for_mi", "onehot_pairs", "all_onehot_pairs", "onehot_mi", "mi_staircase",
           "read_idx", "write_idx", "load_idx_dataset", "load_images", "prepare_batch", "TensorImages",
           "NUM_CLASSES", "DatasetNotFoundError", "read_cifar", "read_stl10", "write_fake_dataset",
           "mnist_or_fashion", "locate", "identify"]
from .manifolds import DATASETS as MANIFOLD_DATASETS, embed, make_manifolds, random_rotation, unembed  # noqa: E402

__all__ += ["MANIFOLD_DATASETS", "make_manifolds", "random_rotation", "embed", "unembed"]
