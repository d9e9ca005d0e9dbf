"""The mmd_imq family through the public API: F.mmd_imq (both estimators, one or several scales)
against a float64 oracle built from exact differences, on the C++ CPU kernel (and the reference);
gradcheck, opcheck and torch.compile on the fused op; bad input; extreme and near-coincident values;
a statistical check; F.mmd_imq_prior, nn.MMDPrior and F.gaussian_kl.

The Triton and CUDA kernels are tested in tests/test_mmd_imq_kernels.py."""
import math

import pytest
import torch

import fastmi
import fastmi.functional as F
import oracle as R

from helpers import fused, needs

needs_cpu = needs("mmd_imq", "cpu")


def exact_mmd(x, y, cs, unbiased):
    """Oracle, independent of the reference's expansion: exact pairwise differences in float64."""
    x, y = x.double(), y.double()

    def ksum(a, b, drop_diag):
        d2 = ((a[:, None, :] - b[None, :, :]) ** 2).sum(-1)
        k = sum(c / (c + d2) for c in cs)
        if drop_diag:
            k = k - torch.diag(torch.diag(k))
        return k.sum()

    n, m = x.shape[0], y.shape[0]
    if unbiased:
        return ksum(x, x, True) / (n * (n - 1)) + ksum(y, y, True) / (m * (m - 1)) - 2 * ksum(x, y, False) / (n * m)
    return ksum(x, x, False) / n**2 + ksum(y, y, False) / m**2 - 2 * ksum(x, y, False) / (n * m)


def exact_grads(x, y, cs, unbiased):
    xr, yr = x.double().clone().requires_grad_(), y.double().clone().requires_grad_()
    v = exact_mmd(xr, yr, cs, unbiased)
    gx, gy = torch.autograd.grad(v, (xr, yr))
    return v.detach(), gx, gy


def sample(n, m, K, shift=0.0, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, K, generator=g, dtype=dtype), torch.randn(m, K, generator=g, dtype=dtype) + shift


def run(x, y, backend, **kw):
    xr, yr = x.clone().requires_grad_(), y.clone().requires_grad_()
    v = F.mmd_imq(xr, yr, backend=backend, **kw)
    v.backward()
    return v.detach(), xr.grad, yr.grad


def close(got, want, rtol, atol_rel):
    """Compare with an absolute tolerance relative to the size of the expected tensor."""
    scale = want.abs().max().item() if want.numel() else 1.0
    torch.testing.assert_close(got.double(), want.double(), rtol=rtol, atol=atol_rel * max(scale, 1e-30))


BACKENDS = ["reference"] + [b for b in fused("mmd_imq") if b == "cpu"]
SHAPES = [(2, 2, 1), (3, 5, 2), (17, 9, 7), (257, 300, 13), (513, 129, 64)]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("estimator", ["unbiased", "biased"])
@pytest.mark.parametrize("n,m,K", SHAPES)
def test_matches_exact_oracle_float64(backend, estimator, n, m, K):
    x, y = sample(n, m, K, shift=0.4, seed=n + m)
    scales = None if K % 2 else (0.5, 2.0)
    cs = [float(K)] if scales is None else [K * s for s in scales]
    want, wgx, wgy = exact_grads(x, y, cs, estimator == "unbiased")
    v, gx, gy = run(x, y, backend, scales=scales, estimator=estimator)
    close(v, want, 1e-9, 1e-9)
    close(gx, wgx, 1e-8, 1e-9)
    close(gy, wgy, 1e-8, 1e-9)


@needs_cpu
@pytest.mark.parametrize("scale,scales", [(None, None), (3.0, None), (2.5, F.WAE_SCALES), (None, [0.01, 100.0])])
def test_cpu_float32_matches_float64(scale, scales):
    x, y = sample(300, 260, 24, shift=0.3, seed=7)
    K = 24
    base = K if scale is None else scale
    cs = [base] if scales is None else [base * s for s in scales]
    want, wgx, wgy = exact_grads(x, y, cs, True)
    v, gx, gy = run(x.float(), y.float(), "cpu", scale=scale, scales=scales)
    assert v.dtype == torch.float32 and gx.dtype == torch.float32
    # MMD^2 is a small difference of O(1) sums: compare against the size of those sums
    close(v, want, 1e-4, 1e-5 * len(cs) / max(want.abs().item(), 1e-12))
    close(gx, wgx, 1e-3, 1e-4)
    close(gy, wgy, 1e-3, 1e-4)


@needs_cpu
def test_identical_samples():
    """MMD^2 of a sample against itself: biased estimator exactly 0, unbiased slightly negative."""
    x, _ = sample(100, 1, 5, seed=3)
    for est in ("unbiased", "biased"):
        want = exact_mmd(x, x, [5.0], est == "unbiased")
        v, gx, gy = run(x, x.clone(), "cpu", estimator=est)
        close(v, want, 1e-9, 1e-12)
        if est == "biased":
            assert abs(v.item()) < 1e-12
            assert gx.abs().max() < 1e-12 and gy.abs().max() < 1e-12
        else:
            assert v.item() < 0


@needs_cpu
def test_near_coincident_points_float32():
    """Pairs 1e-3 apart at magnitude 100: the expansion alone would lose every digit of d2."""
    g = torch.Generator().manual_seed(0)
    x = 100 + torch.randn(64, 8, generator=g, dtype=torch.float64)
    y = x + 1e-3 * torch.randn(64, 8, generator=g, dtype=torch.float64)
    cs = [1e-4]  # a kernel this narrow resolves the 1e-3 distances
    want, wgx, _ = exact_grads(x, y, cs, True)
    v, gx, _ = run(x.float(), y.float(), "cpu", scale=1e-4)
    # tolerance from the fp32 rounding of the inputs themselves (1e-3 distances, 100 magnitude)
    want32, wgx32, _ = exact_grads(x.float(), y.float(), cs, True)
    close(v, want32, 1e-3, 1e-3)
    close(gx, wgx32, 1e-2, 1e-3)
    assert torch.isfinite(want).all()


@needs_cpu
@pytest.mark.parametrize("magnitude", [1e4, 1e25])
def test_large_magnitude_is_finite(magnitude):
    x, y = sample(40, 33, 6, seed=1, dtype=torch.float32)
    x, y = x * magnitude, (y + 0.5) * magnitude
    v, gx, gy = run(x, y, "cpu", scale=6.0 * magnitude**2)
    assert torch.isfinite(v) and torch.isfinite(gx).all() and torch.isfinite(gy).all()
    want, wgx, _ = exact_grads(x / magnitude, y / magnitude, [6.0], True)  # scale invariance
    close(v, want, 1e-4, 1e-4)
    close(gx * magnitude, wgx, 1e-3, 1e-3)


@needs_cpu
def test_offset_samples_same_result():
    """Translation invariance: a common offset of 1e3 changes nothing (centring inside the kernel)."""
    x, y = sample(90, 70, 16, shift=0.5, seed=2, dtype=torch.float32)
    v0, gx0, _ = run(x, y, "cpu")
    v1, gx1, _ = run(x + 1e3, y + 1e3, "cpu")
    close(v1, v0, 1e-4, 1e-4)
    close(gx1, gx0, 1e-3, 1e-4)


@needs_cpu
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_inputs_computed_in_fp32(dtype):
    x, y = sample(70, 50, 8, shift=0.5, seed=4)
    xh, yh = x.to(dtype), y.to(dtype)
    v, gx, gy = run(xh, yh, "cpu")
    assert v.dtype == torch.float32 and gx.dtype == dtype
    want, wgx, _ = exact_grads(xh.double(), yh.double(), [8.0], True)
    close(v, want, 1e-4, 1e-4)
    ref = F.mmd_imq(xh, yh, scale=8.0, backend="reference")  # the reference backend also computes in fp32
    assert ref.dtype == torch.float32
    close(ref, want, 1e-4, 1e-4)


@needs_cpu
def test_gradcheck_cpu_kernel():
    x, y = sample(7, 5, 3, shift=0.2, seed=5)
    x.requires_grad_()
    y.requires_grad_()
    for est in ("unbiased", "biased"):
        torch.autograd.gradcheck(lambda a, b: F.mmd_imq(a, b, scales=(0.3, 1.0, 4.0), estimator=est, backend="cpu"),
                                 (x, y))
    torch.autograd.gradcheck(lambda a, b: torch.ops.fastmi.mmd_imq(a, b, [2.0], True, True)[0], (x, y))


@needs_cpu
def test_opcheck_cpu():
    x, y = sample(9, 6, 4, seed=6)
    for want_grad in (True, False):
        args = (x.clone().requires_grad_(), y.clone().requires_grad_(), [1.0, 3.0], True, want_grad)
        torch.library.opcheck(torch.ops.fastmi.mmd_imq.default, args)
    torch.library.opcheck(torch.ops.fastmi.mmd_imq.default, (x.float(), y.float(), [2.0], False, True))


@needs_cpu
def test_torch_compile_fullgraph():
    x, y = sample(40, 30, 5, seed=8, dtype=torch.float32)
    fn = torch.compile(lambda a, b: F.mmd_imq(a, b, scales=(0.5, 2.0)) * 3.0, fullgraph=True)
    xa, ya = x.clone().requires_grad_(), y.clone().requires_grad_()
    xb, yb = x.clone().requires_grad_(), y.clone().requires_grad_()
    out, ref = fn(xa, ya), F.mmd_imq(xb, yb, scales=(0.5, 2.0)) * 3.0
    (out + 0).backward()
    ref.backward()
    close(out.detach(), ref.detach(), 1e-6, 1e-6)
    close(xa.grad, xb.grad, 1e-5, 1e-6)
    close(ya.grad, yb.grad, 1e-5, 1e-6)


@needs_cpu
def test_no_grad_and_eval_paths():
    x, y = sample(30, 20, 4, seed=9)
    with torch.no_grad():
        v = F.mmd_imq(x.requires_grad_(), y)
    assert not v.requires_grad
    close(v, exact_mmd(x.detach(), y, [4.0], True), 1e-9, 1e-12)
    # one input requiring grad
    yr = y.clone().requires_grad_()
    F.mmd_imq(x.detach(), yr).backward()
    _, _, wgy = exact_grads(x.detach(), y, [4.0], True)
    close(yr.grad, wgy, 1e-8, 1e-9)


@needs_cpu
def test_double_backward_raises():
    x, y = sample(6, 6, 2, seed=10)
    x.requires_grad_()
    v = F.mmd_imq(x, y, backend="cpu")
    (g,) = torch.autograd.grad(v, x, create_graph=False)
    assert torch.isfinite(g).all()
    v = F.mmd_imq(x, y, backend="cpu")
    with pytest.raises(RuntimeError, match="second-order"):
        torch.autograd.grad(v, x, create_graph=True)


@pytest.mark.parametrize("backend", BACKENDS)
def test_statistical_behaviour(backend):
    """Same distribution: MMD^2 near 0 (unbiased: mean 0); N(0, I) vs N(1, I): clearly positive."""
    g = torch.Generator().manual_seed(11)
    n, K = 400, 8
    same = [F.mmd_imq(torch.randn(n, K, generator=g), torch.randn(n, K, generator=g), backend=backend).item()
            for _ in range(5)]
    diff = F.mmd_imq(torch.randn(n, K, generator=g), torch.randn(n, K, generator=g) + 1.0, backend=backend).item()
    assert max(abs(s) for s in same) < 0.1 * diff
    assert diff > 0.02


# --- bad input ---------------------------------------------------------------------------------

@pytest.mark.parametrize(
    "kwargs,exc,match",
    [
        (dict(x=torch.randn(4, 3), y=torch.randn(5, 2)), ValueError, "feature dimension"),
        (dict(x=torch.randn(1, 3), y=torch.randn(5, 3)), ValueError, "at least 2 rows in x"),
        (dict(x=torch.randn(4, 3), y=torch.randn(1, 3)), ValueError, "at least 2 rows in y"),
        (dict(x=torch.randn(4, 3), y=torch.randn(5, 3), scale=0.0), ValueError, "scale must be > 0"),
        (dict(x=torch.randn(4, 3), y=torch.randn(5, 3), scale=-1.0), ValueError, "scale must be > 0"),
        (dict(x=torch.randn(4, 3), y=torch.randn(5, 3), scale=math.inf), ValueError, "scale must be finite"),
        (dict(x=torch.randn(4, 3), y=torch.randn(5, 3), scales=[1.0, 0.0]), ValueError, "scales must be > 0"),
        (dict(x=torch.randn(4, 3), y=torch.randn(5, 3), scales=[]), ValueError, "scales must be a non-empty"),
        (dict(x=torch.randn(4, 3), y=torch.randn(5, 3), scales=["a"]), TypeError, "scales"),
        (dict(x=torch.randn(4, 3), y=torch.randn(5, 3), estimator="u"), ValueError, "estimator"),
        (dict(x=torch.randn(4), y=torch.randn(5, 3)), ValueError, "x must be 2-D"),
        (dict(x=torch.randn(4, 3), y=torch.ones(5, 3, dtype=torch.long)), TypeError, "y must have a floating"),
        (dict(x=torch.randn(4, 3), y=torch.randn(5, 3, dtype=torch.float64)), TypeError, "x is torch.float32"),
        (dict(x=torch.tensor([[0.0, math.nan], [1.0, 2.0]]), y=torch.randn(5, 2)), ValueError, "x contains NaN"),
        (dict(x=torch.randn(4, 2), y=torch.tensor([[0.0, math.inf], [1.0, 2.0]])), ValueError, "y contains NaN or Inf"),
        (dict(x=torch.randn(4, 3), y=torch.randn(5, 3), backend="gpu"), ValueError, "backend must be one of"),
        (dict(x=[[1.0]], y=torch.randn(5, 3)), TypeError, "x must be a torch.Tensor"),
    ],
)
def test_bad_input(kwargs, exc, match):
    x, y = kwargs.pop("x"), kwargs.pop("y")
    with pytest.raises(exc, match=match):
        F.mmd_imq(x, y, **kwargs)


def test_biased_estimator_allows_one_row():
    x, y = torch.randn(1, 3, dtype=torch.float64), torch.randn(4, 3, dtype=torch.float64)
    close(F.mmd_imq(x, y, estimator="biased"), exact_mmd(x, y, [3.0], False), 1e-9, 1e-12)


# --- prior, module, KL -------------------------------------------------------------------------

def test_mmd_imq_prior_uses_the_prior_sample():
    z = torch.randn(50, 4, dtype=torch.float64)
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    v = F.mmd_imq_prior(z, sigma=2.0, n_prior=30, generator=g1)
    p = torch.randn(30, 4, generator=g2, dtype=torch.float64) * 2.0
    close(v, exact_mmd(z, p, [4.0], True), 1e-9, 1e-12)
    m = fastmi.nn.MMDPrior(sigma=2.0, n_prior=30, scale=1.5)
    v2 = m(z, generator=torch.Generator().manual_seed(3))
    close(v2, exact_mmd(z, p, [1.5], True), 1e-9, 1e-12)
    assert "sigma=2.0" in repr(m)


def test_mmd_imq_prior_gradient_pushes_codes_to_the_prior():
    z = (torch.randn(200, 4) * 0.1 + 3.0).requires_grad_()
    F.mmd_imq_prior(z, generator=torch.Generator().manual_seed(0)).backward()
    # moving z against the gradient moves its mean towards 0
    assert (z.grad.mean(0) > 0).all()


@pytest.mark.parametrize("kwargs,exc,match", [
    (dict(sigma=0.0), ValueError, "sigma must be > 0"),
    (dict(n_prior=0), ValueError, "n_prior must be a positive int"),
    (dict(n_prior=2.5), ValueError, "n_prior"),
])
def test_mmd_imq_prior_bad_input(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        F.mmd_imq_prior(torch.randn(5, 2), **kwargs)
    with pytest.raises(ValueError, match="MMDPrior: sigma"):
        fastmi.nn.MMDPrior(sigma=-1.0)


def test_gaussian_kl_matches_closed_form_and_torch_distributions():
    g = torch.Generator().manual_seed(0)
    mu = torch.randn(6, 5, generator=g, dtype=torch.float64)
    std = torch.rand(6, 5, generator=g, dtype=torch.float64) + 0.1
    for sigma in (1.0, 2.5):
        q = torch.distributions.Normal(mu, std)
        p = torch.distributions.Normal(torch.zeros_like(mu), torch.full_like(std, sigma))
        want = torch.distributions.kl_divergence(q, p).sum(1).mean()
        close(F.gaussian_kl(mu, std, sigma=sigma), want, 1e-12, 1e-12)
    assert F.gaussian_kl(torch.zeros(3, 4), torch.ones(3, 4)).item() == 0.0
    kl16 = F.gaussian_kl(mu.half(), std.half())
    assert kl16.dtype == torch.float32 and torch.isfinite(kl16)


@pytest.mark.parametrize("shape", [(5,), (6, 5), (3, 2, 4, 4)])
def test_gaussian_kl_is_a_mean_over_the_first_dimension(shape):
    """Issue 19 item 9: the docs say "mean over the batch (the first dimension)"; a 1-D input is a
    batch of one-dimensional codes (it used to be summed: ones(5), ones(5) gave 2.5)."""
    assert F.gaussian_kl(torch.ones(5), torch.ones(5)).item() == pytest.approx(0.5)
    g = torch.Generator().manual_seed(1)
    mu = torch.randn(shape, generator=g, dtype=torch.float64)
    std = torch.rand(shape, generator=g, dtype=torch.float64) + 0.2
    close(F.gaussian_kl(mu, std, sigma=1.5), R.gaussian_kl(mu, std, sigma=1.5), 1e-13, 1e-13)
    # one code per sample: the batch mean does not grow with the batch
    assert F.gaussian_kl(mu.repeat(2, *[1] * (len(shape) - 1)), std.repeat(2, *[1] * (len(shape) - 1)),
                         sigma=1.5).item() == pytest.approx(F.gaussian_kl(mu, std, sigma=1.5).item(), rel=1e-12)


@pytest.mark.parametrize("mu,std,exc,match", [
    (torch.zeros(3, 2), torch.ones(3, 3), ValueError, "mu has shape .3, 2. but std has shape .3, 3."),
    (torch.zeros(3, 2), torch.zeros(3, 2), ValueError, "std must be > 0"),
    (torch.full((3, 2), math.nan), torch.ones(3, 2), ValueError, "mu contains NaN"),
    (torch.zeros(3, 2, dtype=torch.long), torch.ones(3, 2), TypeError, "mu must have a floating"),
])
def test_gaussian_kl_bad_input(mu, std, exc, match):
    with pytest.raises(exc, match=match):
        F.gaussian_kl(mu, std)
    with pytest.raises(ValueError, match="sigma"):
        F.gaussian_kl(torch.zeros(2, 2), torch.ones(2, 2), sigma=-1.0)
