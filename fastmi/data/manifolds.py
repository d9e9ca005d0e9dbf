"""2-D datasets of disjoint manifolds (Neural Bayes Fig 1, DML.ipynb), embedded in a high dimension.

Each generator returns ``(x, labels)``: float64 numpy N x 2 points and int64 manifold labels. The
recipes follow the authors' notebook (SPEC 1.6):

- spirals: ``n_per_arm`` points on one arm, t = 1 + sqrt(u) * 780 * (angle/180 * pi) / 360 with
  u ~ U[0, 1); arm = (-cos(t) t, sin(t) t) + noise * U[0, 1)^2 (uniform, not centred noise); the
  other arms are that arm rotated by 120 and 240 degrees (x @ R(120)^T, x @ R(240)^T).
- circles / moons: scikit-learn's make_circles / make_moons.
- blobs: make_blobs(centers=3, cluster_std, center_box=(-5, 5)), then x @ [[0.6, -0.6], [-0.4, 1.1]].

``embed`` pads with zeros to ``dim`` columns and rotates by a random orthogonal matrix Q (the left
singular vectors of a dim x dim standard Gaussian matrix): z = [x, 0] Q^T, so x = (z Q)[:, :2].
"""
from __future__ import annotations

from typing import Optional

import numpy as np
import torch

DATASETS = ("spirals", "circles", "moons", "blobs")
BLOBS_MAP = np.array([[0.6, -0.6], [-0.4, 1.1]])


def rotation_2d(degrees: float) -> np.ndarray:
    """R = [[cos a, -sin a], [sin a, cos a]] (counter-clockwise by ``degrees`` on column vectors)."""
    a = np.pi * degrees / 180.0
    return np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])


def spirals(n_per_arm: int, *, arms: int = 3, angle: float = 100.0, noise: float = 0.5,
            rng: Optional[np.random.Generator] = None) -> tuple[np.ndarray, np.ndarray]:
    """``arms`` spiral arms of ``n_per_arm`` points each (the notebook's ``twospirals`` with 3 arms)."""
    if n_per_arm < 1 or arms < 1:
        raise ValueError(f"spirals: n_per_arm and arms must be >= 1, got {n_per_arm}, {arms}")
    rng = rng or np.random.default_rng()
    t = 1.0 + np.sqrt(rng.random((n_per_arm, 1))) * 780.0 * (angle / 180.0 * np.pi) / 360.0
    arm = np.hstack([-np.cos(t) * t + rng.random((n_per_arm, 1)) * noise,
                     np.sin(t) * t + rng.random((n_per_arm, 1)) * noise])
    x = np.vstack([arm @ rotation_2d(360.0 * k / arms).T for k in range(arms)])
    labels = np.repeat(np.arange(arms), n_per_arm)
    return x, labels.astype(np.int64)


def _seed(rng: np.random.Generator) -> int:
    return int(rng.integers(0, 2**31 - 1))


def circles(n: int, *, noise: float = 0.01, factor: float = 0.4,
            rng: Optional[np.random.Generator] = None) -> tuple[np.ndarray, np.ndarray]:
    """Two concentric circles (scikit-learn make_circles, inner radius ``factor``)."""
    from sklearn.datasets import make_circles

    x, y = make_circles(n_samples=n, shuffle=True, noise=noise, factor=factor,
                        random_state=_seed(rng or np.random.default_rng()))
    return x, y.astype(np.int64)


def moons(n: int, *, noise: float = 0.03, rng: Optional[np.random.Generator] = None) -> tuple[np.ndarray, np.ndarray]:
    """Two interleaving half circles (scikit-learn make_moons)."""
    from sklearn.datasets import make_moons

    x, y = make_moons(n_samples=n, shuffle=True, noise=noise, random_state=_seed(rng or np.random.default_rng()))
    return x, y.astype(np.int64)


def blobs(n: int, *, centers: int = 3, std: float = 0.3, box: tuple = (-5.0, 5.0),
          rng: Optional[np.random.Generator] = None) -> tuple[np.ndarray, np.ndarray]:
    """Gaussian blobs with random centres in ``box``, sheared by the notebook's linear map."""
    from sklearn.datasets import make_blobs

    x, y = make_blobs(n_samples=n, n_features=2, centers=centers, cluster_std=std, center_box=box, shuffle=True,
                      random_state=_seed(rng or np.random.default_rng()))
    return x @ BLOBS_MAP, y.astype(np.int64)


def make_manifolds(name: str, n: int, rng: Optional[np.random.Generator] = None, **kw):
    """One of DATASETS by name; ``n`` is the total number of points (spirals: n // arms per arm)."""
    if name == "spirals":
        arms = kw.pop("arms", 3)
        return spirals(n // arms, arms=arms, rng=rng, **kw)
    makers = {"circles": circles, "moons": moons, "blobs": blobs}
    if name not in makers:
        raise ValueError(f"make_manifolds: name must be one of {DATASETS}, got {name!r}")
    return makers[name](n, rng=rng, **kw)


def random_rotation(dim: int, rng: Optional[np.random.Generator] = None) -> np.ndarray:
    """A random dim x dim orthogonal matrix: the U of the SVD of a standard Gaussian matrix (the notebook)."""
    rng = rng or np.random.default_rng()
    # torch's SVD honours torch.set_num_threads (numpy's BLAS threads spin on a busy machine)
    u, _, _ = torch.linalg.svd(torch.from_numpy(rng.standard_normal((dim, dim))))
    return u.numpy()


def embed(x: np.ndarray, rotation: np.ndarray) -> np.ndarray:
    """[x, 0] rotation^T: pad N x d points with zeros to the rotation's size, then rotate."""
    dim = rotation.shape[0]
    if x.ndim != 2 or x.shape[1] > dim or rotation.shape != (dim, dim):
        raise ValueError(f"embed: x must be N x d with d <= {dim} and rotation square, got {x.shape}, {rotation.shape}")
    return (torch.from_numpy(np.ascontiguousarray(x, dtype=np.float64))
            @ torch.from_numpy(rotation[:, :x.shape[1]]).T).numpy()   # = [x, 0] rotation^T


def unembed(z: np.ndarray, rotation: np.ndarray, d: int = 2) -> np.ndarray:
    """The inverse of ``embed`` on the plane: (z rotation)[:, :d]."""
    return (torch.from_numpy(np.ascontiguousarray(z, dtype=np.float64)) @ torch.from_numpy(rotation[:, :d])).numpy()


class Standardizer:
    """Per-dimension standardisation (x - mean) / std with the statistics of the data it was fitted on;
    ``enabled=False`` is the identity (the notebook does not standardise the spirals)."""

    def __init__(self, x: np.ndarray, enabled: bool = True):
        self.enabled = enabled
        self.mean = x.mean(axis=0) if enabled else np.zeros(x.shape[1])
        self.std = x.std(axis=0) if enabled else np.ones(x.shape[1])

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return (x - self.mean) / self.std

    def inverse(self, x: np.ndarray) -> np.ndarray:
        return x * self.std + self.mean
