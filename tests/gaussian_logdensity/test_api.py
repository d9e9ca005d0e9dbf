"""The Gaussian upper bounds (fastmi/gaussian_logdensity): CLUB's closed form and L1Out's fused
leave-one-out log-sum-exp against the dense float64 oracle (values and gradients in mu, logvar and
y) on every backend; float32 accuracy with a large common offset; no n x n allocation; the bounds
of the true conditional of correlated Gaussians; modules and bad input."""
import math

import pytest
import torch

import fastmi
import fastmi.functional as F
import oracle as R

from helpers import fused

BACKENDS = fused("separable") + ["reference"]
D = torch.float64


def data(n, d, seed, dtype=D, offset=0.0, spread=1.0):
    g = torch.Generator().manual_seed(seed)
    mu = (spread * torch.randn(n, d, generator=g, dtype=D) + offset).to(dtype)
    logvar = (0.5 * torch.randn(n, d, generator=g, dtype=D)).to(dtype)
    y = (spread * torch.randn(n, d, generator=g, dtype=D) + offset).to(dtype)
    return mu, logvar, y


def run(fn, tensors):
    leaves = [t.clone().requires_grad_(True) for t in tensors]
    out = fn(*leaves)
    return [out.loss.detach(), out.mi] + list(torch.autograd.grad(out.loss, leaves))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", ["gaussian_club", "gaussian_l1out"])
@pytest.mark.parametrize("n,d", [(2, 1), (3, 4), (17, 5), (70, 3), (130, 2)])
def test_matches_the_oracle_float64(name, backend, n, d):
    if backend == "triton" and n > 70:
        pytest.skip("interpreter time")
    tensors = data(n, d, seed=n + d)
    got = run(lambda *t: getattr(F, name)(*t, backend=backend), tensors)
    want = run(getattr(R, name), tensors)
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, rtol=1e-9, atol=1e-10)


def test_log_likelihood_matches_the_oracle():
    mu, logvar, y = data(9, 3, seed=1)
    torch.testing.assert_close(F.gaussian_log_likelihood(mu, logvar, y), R.gaussian_log_likelihood(mu, logvar, y))


@pytest.mark.parametrize("backend", BACKENDS)
def test_float32_with_a_large_common_offset(backend):
    """The features are centred on the batch mean of y: an offset of 1000 costs no accuracy."""
    mu, logvar, y = data(60, 4, seed=3, dtype=torch.float32, offset=1000.0)
    for name in ("gaussian_club", "gaussian_l1out"):
        got = getattr(F, name)(mu, logvar, y, backend=backend).mi.double()
        want = getattr(R, name)(mu, logvar, y).mi
        assert abs(got.item() - want.item()) < 2e-4 * max(1.0, abs(want.item())), (name, got, want)


def test_l1out_builds_no_n_by_n_matrix():
    n = 2000
    mu, logvar, y = data(n, 8, seed=4, dtype=torch.float32)
    mu.requires_grad_(True)
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        F.gaussian_l1out(mu, logvar, y, backend="cpu").loss.backward()
        F.gaussian_club(mu, logvar, y).loss.backward()
    biggest = max(e.cpu_memory_usage for e in prof.events())
    assert biggest < n * n * 4 / 20, biggest


@pytest.mark.parametrize("backend", [b for b in BACKENDS if b != "triton"])
def test_bounds_of_the_true_conditional(backend):
    """y = rho x + sqrt(1 - rho^2) e per dimension (3 dims, rho = 0.8): with q = p(y|x), L1Out is close to
    MI = -3/2 log(1 - rho^2) = 1.53 and CLUB to its own limit 3 rho^2 / (1 - rho^2) = 5.33 (CLUB is loose
    for strongly dependent variables)."""
    g = torch.Generator().manual_seed(5)
    rho, n, d = 0.8, 2000, 3
    x = torch.randn(n, d, generator=g, dtype=D)
    y = rho * x + math.sqrt(1 - rho**2) * torch.randn(n, d, generator=g, dtype=D)
    mu, logvar = rho * x, torch.full_like(x, math.log(1 - rho**2))
    assert F.gaussian_l1out(mu, logvar, y, backend=backend).mi.item() == pytest.approx(-1.5 * math.log(1 - rho**2),
                                                                                         abs=0.06)
    assert F.gaussian_club(mu, logvar, y, backend=backend).mi.item() == pytest.approx(3 * rho**2 / (1 - rho**2),
                                                                                        abs=0.25)


def test_modules():
    torch.manual_seed(0)
    q = fastmi.nn.GaussianConditional(4, 3, hidden=(8,))
    x, y = torch.randn(10, 4), torch.randn(10, 3)
    mu, logvar = q(x)
    assert mu.shape == logvar.shape == (10, 3)
    torch.testing.assert_close(q.log_likelihood(x, y), F.gaussian_log_likelihood(mu, logvar, y))
    torch.testing.assert_close(fastmi.nn.GaussianCLUB()(mu, logvar, y).mi, F.gaussian_club(mu, logvar, y).mi)
    torch.testing.assert_close(fastmi.nn.GaussianL1Out()(mu, logvar, y).mi, F.gaussian_l1out(mu, logvar, y).mi)


BAD = [
    (lambda: F.gaussian_l1out(torch.randn(1, 2), torch.randn(1, 2), torch.randn(1, 2)), ValueError, "n >= 2"),
    (lambda: F.gaussian_club(torch.randn(4, 2), torch.randn(4, 3), torch.randn(4, 2)), ValueError, "logvar"),
    (lambda: F.gaussian_club(torch.randn(4, 2), torch.randn(4, 2), torch.randn(5, 2)), ValueError, "y"),
    (lambda: F.gaussian_l1out(torch.randn(4, 2), torch.randn(4, 2), torch.ones(4, 2, dtype=torch.long)), TypeError,
     "y must have a floating dtype"),
    (lambda: F.gaussian_club(torch.randn(4), torch.randn(4), torch.randn(4)), ValueError, "mu must be 2-D"),
    (lambda: F.gaussian_l1out(torch.randn(4, 2), torch.randn(4, 2), torch.randn(4, 2), backend="gpu"), ValueError,
     "backend"),
]


@pytest.mark.parametrize("make,exc,text", BAD, ids=[str(i) for i in range(len(BAD))])
def test_bad_input_names_the_argument(make, exc, text):
    with pytest.raises(exc, match=text):
        make()
