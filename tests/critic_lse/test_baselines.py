"""TUBA's baselines as modules (fastmi/critic_lse/baselines.py): a learned scalar reaches the best
baseline (TUBA becomes DV), a learned network gives one value per row, and the moving average follows
MINE's average (values from the oracle) and gives TUBA MINE's gradient."""
import math

import pytest
import torch

import fastmi
import fastmi.functional as F
import oracle as R

from helpers import fused

BACKENDS = fused("critic_lse") + ["reference"]


def test_learned_scalar_baseline_converges_to_the_best_one():
    """max_a TUBA(S, a) is at a = LME_N(S), where TUBA equals DV."""
    g = torch.Generator().manual_seed(0)
    S = 2 * torch.randn(12, 12, generator=g, dtype=torch.float64)
    baseline = fastmi.nn.LearnedBaseline(init=0.0).double()
    opt = torch.optim.Adam(baseline.parameters(), lr=0.05)
    for _ in range(600):
        opt.zero_grad()
        F.tuba(S, baseline()).loss.backward()
        opt.step()
    off = ~torch.eye(12, dtype=torch.bool)
    best = torch.logsumexp(S[off], 0) - math.log(132)
    assert baseline().item() == pytest.approx(best.item(), abs=1e-3)
    assert F.tuba(S, baseline()).mi.item() == pytest.approx(R.dv(S).mi.item(), abs=1e-6)


def test_learned_network_baseline_is_one_value_per_row_and_trains():
    torch.manual_seed(1)
    baseline = fastmi.nn.LearnedBaseline(3, hidden=(8,), init=0.5)
    x = torch.randn(10, 3)
    a = baseline(x)
    assert a.shape == (10,) and torch.allclose(a, torch.full((10,), 0.5))  # the last layer starts at init
    F.tuba(torch.randn(10, 10), a).loss.backward()
    assert all(p.grad is not None for p in baseline.parameters())
    with pytest.raises(TypeError, match="needs the rows' samples"):
        baseline()


@pytest.mark.parametrize("backend", BACKENDS)
def test_moving_average_follows_mines_average(backend):
    g = torch.Generator().manual_seed(2)
    mab = fastmi.nn.MovingAverageBaseline(momentum=0.7, backend=backend).double()
    running = math.nan
    for step in range(3):
        S = torch.randn(8, 8, generator=g, dtype=torch.float64) + step
        a = mab(S)
        off = ~torch.eye(8, dtype=torch.bool)
        running = R.mine_average(running, float(torch.logsumexp(S[off], 0) - math.log(56)), 0.7)
        assert a.item() == pytest.approx(running, abs=1e-12) and not a.requires_grad
    mab.eval()
    before = mab.running_lme.clone()
    mab(torch.randn(8, 8, dtype=torch.float64) + 5)
    assert torch.equal(mab.running_lme, before)  # eval mode reads the average, does not move it


@pytest.mark.parametrize("backend", BACKENDS)
def test_tuba_with_the_moving_average_has_mines_gradient(backend):
    g = torch.Generator().manual_seed(3)
    first = torch.randn(6, 6, generator=g, dtype=torch.float64)
    mab = fastmi.nn.MovingAverageBaseline(momentum=0.9, backend=backend).double()
    running = torch.tensor(math.nan, dtype=torch.float64)
    mab(first)
    F.mine(first, running, backend=backend)
    S = torch.randn(6, 6, generator=g, dtype=torch.float64, requires_grad=True)
    (g_tuba,) = torch.autograd.grad(F.tuba(S, mab(S), backend=backend).loss, S)
    (g_mine,) = torch.autograd.grad(F.mine(S, running, momentum=0.9, backend=backend).loss, S)
    torch.testing.assert_close(g_tuba, g_mine, rtol=1e-12, atol=1e-14)


def test_moving_average_with_k_negatives_and_bad_momentum():
    S = torch.randn(7, 7, dtype=torch.float64)
    mab = fastmi.nn.MovingAverageBaseline(negatives=2).double()
    idx = F.shifted_negatives(7, 2)
    want = torch.logsumexp(S[torch.arange(7)[:, None], idx].reshape(-1), 0) - math.log(14)
    assert mab(S).item() == pytest.approx(want.item(), abs=1e-12)
    with pytest.raises(ValueError, match="momentum"):
        fastmi.nn.MovingAverageBaseline(momentum=1.0)
