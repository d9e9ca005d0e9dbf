"""JS's reported value (issue 19, item 10): NWJ on the scores (the papers' code, default) or NWJ on
the scores + 1 (value="nwj_shifted", Poole et al. / torch-mist), checked at the JS-optimal critic
on correlated Gaussians, where the second is the true MI and the first is lower by 1/e."""
import math

import pytest
import torch

import fastmi
import fastmi.functional as F
import fastmi.nn as fnn

BACKENDS = [b for b in ("cpu", "triton", "reference") if fastmi.info()[b][0]]


def optimal_scores(n, d, rho, seed=0):
    """S_ij = log p(x_i, y_j) / (p(x_i) p(y_j)) for y = rho x + sqrt(1 - rho^2) eps, per dimension
    standard bivariate normals: the f-GAN JS discriminator's optimal logit. True MI: -d/2 log(1 - rho^2)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g, dtype=torch.float64)
    y = rho * x + math.sqrt(1 - rho ** 2) * torch.randn(n, d, generator=g, dtype=torch.float64)
    c = 1 - rho ** 2
    xx, yy = (x * x).sum(1), (y * y).sum(1)
    S = -0.5 * d * math.log(c) - (rho ** 2 * (xx[:, None] + yy[None, :]) - 2 * rho * x @ y.T) / (2 * c)
    return S, -0.5 * d * math.log(c)


@pytest.mark.parametrize("backend", [b for b in BACKENDS if b != "triton"])  # n = 1500: interpreter time
def test_nwj_shifted_is_exact_at_the_js_optimal_critic(backend):
    S, true_mi = optimal_scores(1500, 4, 0.5)
    S = S.float()
    shifted = F.js(S, value="nwj_shifted", backend=backend).mi.item()
    papers = F.js(S, backend=backend).mi.item()
    assert shifted == pytest.approx(true_mi, abs=0.06)
    assert papers == pytest.approx(true_mi - 1 / math.e, abs=0.06)


@pytest.mark.parametrize("backend", BACKENDS)
def test_the_two_values_differ_by_the_1_over_e_term(backend):
    """NWJ(S + 1) - NWJ(S) = 1 - (1 - 1/e) mean_N exp(S), whatever the scores (1/e where mean_N e^S = 1)."""
    S, _ = optimal_scores(64, 2, 0.5, seed=3)
    S = S.float()
    shifted = F.js(S, value="nwj_shifted", backend=backend).mi.item()
    papers = F.js(S, backend=backend).mi.item()
    off = ~torch.eye(S.shape[0], dtype=torch.bool)
    gap = 1 - (1 - 1 / math.e) * S.double()[off].exp().mean().item()
    assert shifted - papers == pytest.approx(gap, abs=2e-5)


@pytest.mark.parametrize("backend", BACKENDS)
def test_value_option_changes_the_value_not_the_gradient(backend):
    S = torch.randn(7, 7, dtype=torch.float64)
    grads = []
    for value in ("nwj", "nwj_shifted"):
        S1 = S.clone().requires_grad_(True)
        out = F.js(S1, value=value, reg_weight=0.3, backend=backend)
        out.loss.backward()
        grads.append(S1.grad)
    torch.testing.assert_close(grads[0], grads[1], rtol=0, atol=0)


def test_value_option_is_checked():
    with pytest.raises(ValueError, match="value must be"):
        F.js(torch.randn(3, 3), value="shifted")
    with pytest.raises(ValueError, match="value must be"):
        fnn.JS(value="T+1")
    assert fnn.JS(value="nwj_shifted")(torch.randn(4, 4)).mi.isfinite()
