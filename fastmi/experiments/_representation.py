"""Representation-quality scores of the Variational InfoMax paper (Table 3, Figures 2-3; SPEC.md 2.3).

- Hoyer sparsity (Hurley & Rickard) of one d-dimensional vector z:

      H(z) = (sqrt(d) - ||z||_1 / ||z||_2) / (sqrt(d) - 1)   in [0, 1]   (1: one non-zero entry, 0: all equal magnitude)

  The paper scores H(z / sigma) with each dimension divided by its standard deviation over the
  data set (Mathieu et al.'s normalisation), averaged over the samples: ``normalized_hoyer``.
- Clustering: k-means (scikit-learn) with as many clusters as classes on the codes, then the adjusted
  Rand index against the labels (sklearn) and the purity sum_c max_l |C_c ∩ L_l| / N.
"""
from __future__ import annotations

import math

import numpy as np
import torch


def hoyer(z: torch.Tensor) -> torch.Tensor:
    """H of each row of z (N x d, d >= 2); an all-zero row scores 0 (no direction is preferred)."""
    if z.dim() != 2 or z.shape[1] < 2:
        raise ValueError(f"hoyer: z must be N x d with d >= 2, got shape {tuple(z.shape)}")
    z = z.double()
    d = z.shape[1]
    l1, l2 = z.abs().sum(1), z.norm(dim=1)
    ratio = torch.where(l2 > 0, l1 / l2.clamp_min(1e-300), torch.full_like(l1, math.sqrt(d)))
    return (math.sqrt(d) - ratio) / (math.sqrt(d) - 1)


def normalized_hoyer(codes: torch.Tensor) -> float:
    """Mean over the rows of H(z / std), std the per-dimension standard deviation of ``codes`` (N x d);
    dimensions that never vary (std 0) are left as they are."""
    if codes.dim() != 2 or codes.shape[0] < 2:
        raise ValueError(f"normalized_hoyer: codes must be N x d with N >= 2, got shape {tuple(codes.shape)}")
    std = codes.double().std(0)
    scaled = codes.double() / torch.where(std > 0, std, torch.ones_like(std))
    return float(hoyer(scaled).mean())


def purity(clusters, labels) -> float:
    """sum over clusters of the size of its largest label group, divided by N."""
    clusters, labels = np.asarray(clusters), np.asarray(labels)
    if clusters.shape != labels.shape or clusters.ndim != 1 or len(labels) == 0:
        raise ValueError(f"purity: clusters {clusters.shape} and labels {labels.shape} must be equal, non-empty 1-D")
    label_ids = np.unique(labels, return_inverse=True)[1]
    return sum(np.bincount(label_ids[clusters == c]).max() for c in np.unique(clusters)) / len(labels)


def cluster_scores(codes: torch.Tensor, labels: torch.Tensor, n_clusters: int = 10, seed: int = 0,
                   n_init: int = 10) -> dict:
    """k-means on the codes; {"ari": adjusted Rand index, "purity": purity} against ``labels``."""
    from sklearn.cluster import KMeans
    from sklearn.metrics import adjusted_rand_score

    x = codes.detach().double().cpu().numpy()
    y = labels.cpu().numpy()
    pred = KMeans(n_clusters=n_clusters, n_init=n_init, random_state=seed).fit_predict(x)
    return {"ari": float(adjusted_rand_score(y, pred)), "purity": float(purity(pred, y))}
