"""Representation scores of the VIM experiments: Hoyer sparsity, purity, k-means ARI."""
import math

import numpy as np
import pytest
import torch

from fastmi.experiments._representation import cluster_scores, hoyer, normalized_hoyer, purity


def test_hoyer_extremes_and_a_worked_value():
    onehot = torch.eye(5)
    torch.testing.assert_close(hoyer(onehot), torch.ones(5, dtype=torch.float64))
    const = torch.full((3, 8), -2.5)
    torch.testing.assert_close(hoyer(const), torch.zeros(3, dtype=torch.float64))
    # z = (3, 4, 0, 0): ||z||_1 / ||z||_2 = 7 / 5, d = 4 -> (2 - 1.4) / (2 - 1) = 0.6
    assert float(hoyer(torch.tensor([[3.0, 4.0, 0.0, 0.0]]))) == pytest.approx(0.6)
    assert float(hoyer(torch.zeros(1, 4))) == 0.0
    with pytest.raises(ValueError, match="d >= 2"):
        hoyer(torch.ones(3, 1))


def test_normalized_hoyer_divides_each_dimension_by_its_std():
    rng = np.random.default_rng(0)
    z = torch.from_numpy(rng.normal(size=(50, 6)))
    scales = torch.tensor([1.0, 10.0, 0.1, 3.0, 100.0, 0.5], dtype=torch.float64)
    # rescaling a dimension does not change the normalised score
    assert normalized_hoyer(z * scales) == pytest.approx(normalized_hoyer(z), rel=1e-12)
    manual = float(hoyer(z / z.std(0)).mean())
    assert normalized_hoyer(z) == pytest.approx(manual, rel=1e-12)
    with pytest.raises(ValueError, match="codes"):
        normalized_hoyer(torch.ones(1, 3))


def test_purity_constructed_case():
    clusters = [0, 0, 0, 1, 1, 2, 2, 2, 2, 2]
    labels = [5, 5, 7, 7, 7, 1, 1, 1, 5, 7]
    # cluster 0: max 2 (label 5), cluster 1: 2 (label 7), cluster 2: 3 (label 1) -> 7 / 10
    assert purity(clusters, labels) == pytest.approx(0.7)
    assert purity([3, 3, 1], [0, 0, 2]) == 1.0
    with pytest.raises(ValueError, match="purity"):
        purity([0, 1], [0])


def test_cluster_scores_on_separated_blobs_and_on_noise():
    rng = np.random.default_rng(0)
    centres = rng.normal(scale=50.0, size=(4, 3))
    labels = np.repeat(np.arange(4), 30)
    codes = torch.from_numpy(centres[labels] + rng.normal(size=(120, 3)))
    s = cluster_scores(codes, torch.from_numpy(labels), n_clusters=4, n_init=3)
    assert s["ari"] == pytest.approx(1.0) and s["purity"] == pytest.approx(1.0)
    noise = cluster_scores(torch.from_numpy(rng.normal(size=(120, 3))), torch.from_numpy(labels), n_clusters=4,
                           n_init=3)
    assert abs(noise["ari"]) < 0.1 and noise["purity"] < 0.6
    assert not math.isnan(noise["purity"])
