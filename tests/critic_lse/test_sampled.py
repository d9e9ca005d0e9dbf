"""k negatives per anchor (fastmi/critic_lse/sampled.py): the shifted index, every bound on every
backend against the oracle (also in test_api's layouts), modules, the separable critic without
the n x n matrix, and the errors."""
import math

import pytest
import torch

import fastmi
import fastmi.functional as F
import oracle as R
from fastmi.critic_lse.bounds import BOUNDS
from fastmi.critic_lse.sampled import shifted_negatives

from helpers import fused

BACKENDS = fused("critic_lse") + ["reference"]
SAMPLED = [name for name, b in BOUNDS.items() if b.sampled_negatives and not b.module_state]


def test_shifted_negatives_are_the_next_rows():
    idx = shifted_negatives(5, 2)
    assert idx.tolist() == [[1, 2], [2, 3], [3, 4], [4, 0], [0, 1]]
    assert shifted_negatives(3, 2, m=7).tolist() == [[1, 2], [2, 3], [3, 4]]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", SAMPLED)
def test_every_bound_with_k_shifted_negatives_matches_the_oracle(name, backend):
    g = torch.Generator().manual_seed(5)
    S = (2 * torch.randn(9, 9, generator=g, dtype=torch.float64)).requires_grad_(True)
    out = getattr(F, name)(S, negatives=2, backend=backend)
    ref = getattr(R, name)(S, negatives=2)
    torch.testing.assert_close(out.mi, ref.mi, rtol=1e-10, atol=1e-12)
    (g1,) = torch.autograd.grad(out.loss, S)
    (g2,) = torch.autograd.grad(ref.loss, S)
    torch.testing.assert_close(g1, g2, rtol=1e-10, atol=1e-12)
    touched = torch.zeros(9, 9, dtype=torch.bool)
    touched[torch.arange(9)[:, None], shifted_negatives(9, 2)] = True
    touched |= torch.eye(9, dtype=torch.bool)
    assert (g1[~touched] == 0).all()  # only the positive and the k negatives of each row are read


@pytest.mark.parametrize("backend", BACKENDS)
def test_all_but_one_shifted_negatives_is_the_full_batch(backend):
    """n - 1 shifts visit every other column once: the bounds on all negatives, exactly."""
    S = torch.randn(7, 7, dtype=torch.float64)
    for name in ("infonce", "nwj", "dv", "js", "smile"):
        torch.testing.assert_close(getattr(F, name)(S, negatives=6, backend=backend).mi,
                                   getattr(F, name)(S, backend=backend).mi, rtol=1e-12, atol=1e-12)


def test_infonce_with_k_negatives_is_at_most_log_of_k_plus_one():
    S = torch.zeros(50, 50, dtype=torch.float64)
    S.fill_diagonal_(100.0)
    assert F.infonce(S, negatives=3).mi.item() == pytest.approx(math.log(4), abs=1e-12)


def test_a_repeated_negative_column_counts_twice():
    S = torch.randn(3, 3, dtype=torch.float64)
    idx = torch.tensor([[1, 1], [0, 2], [0, 0]])
    by_hand = S.diagonal().mean() - torch.exp(S[torch.arange(3)[:, None], idx] - 1).mean()
    torch.testing.assert_close(F.nwj(S, negatives=idx).mi, by_hand)


def test_modules_take_k_at_construction():
    S = torch.randn(6, 6)
    torch.testing.assert_close(fastmi.nn.NWJ(negatives=2)(S).mi, F.nwj(S, negatives=2).mi)
    torch.testing.assert_close(fastmi.nn.InfoNCESeparable(negatives=3)(S, S).mi, F.infonce_separable(S, S, negatives=3).mi)


def test_separable_sampled_builds_no_n_by_n_matrix():
    n, d, k = 3000, 16, 4
    g = torch.Generator().manual_seed(3)
    x = torch.randn(n, d, generator=g).requires_grad_(True)
    y = torch.randn(n, d, generator=g).requires_grad_(True)
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        F.nwj_separable(x, y, negatives=k).loss.backward()
    biggest = max(e.cpu_memory_usage for e in prof.events())
    assert biggest < n * n * 4 / 20, biggest  # the largest are the n x k x d gathers of y


BAD = [
    (lambda: F.nwj(torch.randn(4, 4), negatives=0), ValueError, "k >= 1"),
    (lambda: F.nwj(torch.randn(4, 4), negatives=4), ValueError, "k <= m - 1"),
    (lambda: F.nwj(torch.randn(4, 4), negatives=torch.zeros(3, 2, dtype=torch.long)), ValueError, "n x k"),
    (lambda: F.nwj(torch.randn(4, 4), negatives=torch.full((4, 2), 4)), ValueError, "outside"),
    (lambda: F.nwj(torch.randn(4, 4), negatives=torch.zeros(4, 2)), TypeError, "integer tensor"),
    (lambda: F.nwj(torch.randn(4, 4), positives=torch.eye(4, dtype=torch.bool), negatives=2), TypeError,
     "one positive per anchor"),
    (lambda: F.alpha_tuba(torch.randn(4, 4), negatives=2), ValueError, "not defined for this bound"),
    (lambda: F.l1out(torch.randn(4, 4), negatives=2), ValueError, "not defined for this bound"),
    (lambda: F.infonce_separable(torch.randn(4, 2), torch.randn(4, 2), negatives=1, symmetric=True), ValueError,
     "symmetric"),
    (lambda: fastmi.nn.NWJ(negatives=-2), ValueError, "k >= 1"),
    (lambda: fastmi.nn.NWJ(negatives="some"), ValueError, "negatives"),
]


@pytest.mark.parametrize("make,exc,text", BAD, ids=[str(i) for i in range(len(BAD))])
def test_bad_negatives_name_the_argument(make, exc, text):
    with pytest.raises(exc, match=text):
        make()
