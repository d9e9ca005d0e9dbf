"""fd_jacobian (Neural Bayes' smoothness regularizer R_c, SPEC 1.2): the C++ CPU path and the public
API against float64 oracles; the random stream; span / unit-norm properties; zero directions;
extreme values; gradcheck, opcheck and torch.compile; bad input.

Agreement guarantees tested here: the fused backends (C++ and Triton) share one counter-based
stream, so for a given seed their x_tilde is the same up to float rounding (Bernoulli: identical
coefficients; Gaussian: coefficients equal to ~1 float32 ulp, the Box-Muller transcendental
functions differ between libm and Triton). The reference backend draws its coefficients with
torch's generator: against it the agreement is distributional (same zeta, same law of c_ij), and the
exact comparison feeds the reference the fused stream's coefficients (reference.span_coefficients).
"""
import math

import pytest
import torch

import fastmi
import fastmi.functional as F
import oracle
from fd_jacobian.philox import span_coefficients
from fastmi.fd_jacobian.ops import NOISE

from helpers import available, needs

CPP = available("fd_jacobian", "cpu")
needs_cpp = needs("fd_jacobian", "cpu")
NOISES = ["bernoulli", "gaussian"]


def op_perturb(x, seed, zeta, noise, center):
    return torch.ops.fastmi.fd_perturb(x, torch.tensor([seed]), torch.as_tensor(zeta, dtype=x.dtype).reshape(-1),
                                       NOISE[noise], center)


def stream_oracle(x, seed, zeta, noise, center):
    """float64 x_tilde fed the fused stream's coefficients."""
    coeff = span_coefficients(seed, x.shape[0], noise)
    z = torch.as_tensor(zeta, dtype=torch.float64)
    return oracle.span_perturb(x.double(), coeff, z, center=center)


# ----------------------------------------------------------------------------------------------
# the random stream
def test_stream_is_philox4x32_10():
    # Random123's known-answer vector for Philox4x32-10, counter 0 and key 0.
    c = span_coefficients(0, 128, "bernoulli")[0].long()
    words = [sum(int(c[32 * w + k]) << k for k in range(32)) for w in range(4)]
    assert words == [0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8]


@pytest.mark.parametrize("noise", NOISES)
def test_stream_moments(noise):
    # The fused coefficients follow the law the reference draws from: Bernoulli(1/2) or N(0, 1),
    # independent across rows and columns (no correlation between neighbours).
    B = 400
    c = span_coefficients(987654321, B, noise)
    se = 4 / math.sqrt(B * B)
    mean, var = (0.5, 0.25) if noise == "bernoulli" else (0.0, 1.0)
    assert abs(c.mean().item() - mean) < 4 * se
    assert abs(c.var().item() - var) < 0.02
    cc = (c - mean) / math.sqrt(var)
    assert abs((cc[:, 1:] * cc[:, :-1]).mean().item()) < 4 * se * 2
    assert abs((cc[1:] * cc[:-1]).mean().item()) < 4 * se * 2
    assert not torch.equal(c, span_coefficients(987654322, B, noise))


# ----------------------------------------------------------------------------------------------
# C++ perturbation against the float64 oracle
SHAPES = [(2, 1), (3, 5), (17, 33), (129, 70), (300, 37)]


@needs_cpp
@pytest.mark.parametrize("noise", NOISES)
@pytest.mark.parametrize("center", [True, False])
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_cpu_perturb_matches_oracle(noise, center, shape, dtype):
    g = torch.Generator().manual_seed(sum(shape))
    x = (3 * torch.randn(*shape, generator=g, dtype=torch.float64) + 1).to(dtype)
    seed = -(2**62) + 12345 * shape[0]
    out = op_perturb(x, seed, 0.37, noise, center)
    ref = stream_oracle(x, seed, 0.37, noise, center)
    assert out.dtype == dtype
    # gaussian: the coefficients agree to ~1 float32 ulp only (libm vs numpy transcendental functions)
    tol = 1e-12 if (dtype == torch.float64 and noise == "bernoulli") else (2e-6 if dtype == torch.float32 else 1e-7)
    torch.testing.assert_close(out.double(), ref, rtol=0, atol=tol * (1 + x.abs().max().item()))


@needs_cpp
@pytest.mark.parametrize("noise", NOISES)
def test_cpu_perturb_per_sample_zeta(noise):
    x = torch.randn(40, 19, dtype=torch.float64)
    zeta = torch.linspace(-0.5, 0.5, 40, dtype=torch.float64) + 0.01
    out = op_perturb(x, 77, zeta, noise, True)
    torch.testing.assert_close(out, stream_oracle(x, 77, zeta, noise, True), rtol=0, atol=1e-7)


@pytest.mark.parametrize("backend", ["auto", "reference"])
@pytest.mark.parametrize("noise", NOISES)
@pytest.mark.parametrize("center", [True, False])
def test_directions_in_span_with_unit_norm(backend, noise, center):
    B, shape = 6, (3, 4, 5)
    x = torch.randn(B, *shape, dtype=torch.float64)
    g = torch.Generator().manual_seed(5)
    x_tilde, zeta = F.perturb_in_span(x, noise=noise, center=center, per_sample_zeta=True, generator=g,
                                      backend=backend)
    assert x_tilde.shape == x.shape and zeta.shape == (B,)
    delta = (x_tilde - x).reshape(B, -1) / zeta[:, None]
    basis = x.reshape(B, -1)
    if center:
        basis = basis - basis.mean(0)
    # projection residual of each direction on the span of the (centred) batch
    coef = torch.linalg.lstsq(basis.T, delta.T).solution
    residual = (basis.T @ coef - delta.T).norm(dim=0)
    assert residual.max() < 1e-9
    norms = delta.norm(dim=1)
    assert torch.all((norms - 1).abs() < 1e-9)


@needs_cpp
def test_functional_reproducible_and_shares_zeta_with_reference():
    x = torch.randn(50, 3, 8, 8)
    run = lambda seed, backend="auto", **kw: F.perturb_in_span(  # noqa: E731
        x, generator=torch.Generator().manual_seed(seed), backend=backend, **kw)
    a, za = run(1)
    b, zb = run(1)
    c, _ = run(2)
    assert torch.equal(a, b) and torch.equal(za, zb)
    assert not torch.equal(a, c)
    _, zr = run(1, backend="reference")
    assert torch.equal(za, zr)  # zeta is drawn first, the same way on every backend
    _, zp = run(1, per_sample_zeta=True, zeta_std=0.5)
    assert zp.shape == (50,) and zp.std() > 0.2
    d, zd = F.perturb_in_span(x, zeta=0.25)
    assert zd.item() == 0.25
    torch.testing.assert_close((d - x).flatten(1).norm(dim=1), torch.full((50,), 0.25), rtol=1e-4, atol=0)


@needs_cpp
def test_functional_matches_oracle_for_its_seed():
    # The functional draws zeta, then one int64 seed, from the generator; rebuild both here.
    x = torch.randn(33, 21, dtype=torch.float64)
    out, zeta = F.perturb_in_span(x, noise="bernoulli", generator=torch.Generator().manual_seed(9))
    g = torch.Generator().manual_seed(9)
    z = 0.1 * torch.randn(1, generator=g)
    seed = torch.randint(-(2**63), 2**63 - 1, (1,), generator=g).item()
    assert zeta.item() == pytest.approx(z.item())
    torch.testing.assert_close(out, stream_oracle(x, seed, z.double(), "bernoulli", True), rtol=0, atol=1e-12)


# ----------------------------------------------------------------------------------------------
# zero directions, extreme values, precision
@pytest.mark.parametrize("backend", ["auto", "reference"])
@pytest.mark.parametrize("noise", NOISES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16])
def test_identical_samples_are_left_unperturbed(backend, noise, dtype):
    x = (torch.full((7, 2, 3), 0.1) + torch.arange(6.0).reshape(2, 3)).to(dtype)
    x_tilde, _ = F.perturb_in_span(x, noise=noise, zeta=0.5, backend=backend)
    assert torch.equal(x_tilde, x)


@needs_cpp
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_cancelling_subset_sum_is_zero_direction(dtype):
    # Centred Bernoulli rows that pick every sample sum to zero (up to rounding): no perturbation there.
    B = 3
    seed = next(s for s in range(1000) if span_coefficients(s, B, "bernoulli").sum(1).eq(B).any())
    c = span_coefficients(seed, B, "bernoulli")
    x = (torch.randn(B, 50, dtype=torch.float64) * 10 + 3).to(dtype)
    out = op_perturb(x, seed, 0.3, "bernoulli", True)
    full = c.sum(1) == B
    empty = c.sum(1) == 0
    assert torch.equal(out[full | empty], x[full | empty])
    moved = ~(full | empty)
    if moved.any():
        torch.testing.assert_close((out - x)[moved].double().norm(dim=1), torch.full((int(moved.sum()),), 0.3,
                                   dtype=torch.float64), rtol=1e-5, atol=0)


@pytest.mark.parametrize("backend", ["auto", "reference"])
@pytest.mark.parametrize("scale,offset", [(1e30, 0.0), (1e-30, 0.0), (1.0, 1e4)])
def test_extreme_magnitudes_stay_finite_with_unit_steps(backend, scale, offset):
    x = torch.randn(64, 100) * scale + offset
    x_tilde, zeta = F.perturb_in_span(x, zeta=0.1 * max(scale, 1.0) if scale > 1 else 0.1,
                                      generator=torch.Generator().manual_seed(3), backend=backend)
    assert torch.isfinite(x_tilde).all()
    step = (x_tilde.double() - x.double()).norm(dim=1) / abs(zeta.item())
    moved = step > 0
    assert moved.float().mean() > 0.9
    # with an offset of 1e4 the step is resolved to fp32 rounding of x (ulp(1e4) ~ 1e-3) only
    tol = 1e-4 if offset == 0 else 0.2
    assert (step[moved] - 1).abs().max() < tol


@needs_cpp
def test_half_inputs_compute_in_fp32():
    x = torch.randn(20, 30)
    out16, _ = F.perturb_in_span(x.half(), zeta=0.2, generator=torch.Generator().manual_seed(0))
    out32, _ = F.perturb_in_span(x.half().float(), zeta=0.2, generator=torch.Generator().manual_seed(0))
    assert out16.dtype == torch.float16
    assert torch.equal(out16, out32.half())


# ----------------------------------------------------------------------------------------------
# penalty
def dense_penalty(a, b, zeta, pool):
    a, b = a.double(), b.double()
    if pool == "global":
        a, b = a.flatten(2).mean(2), b.flatten(2).mean(2)
    z = torch.as_tensor(zeta, dtype=torch.float64).reshape(-1)
    return (((a - b) ** 2).flatten(1).sum(1) / z**2).mean()


@pytest.mark.parametrize("backend", ["auto", "reference"])
@pytest.mark.parametrize("pool,shape", [(None, (5, 7)), (None, (4, 3, 5, 5)), ("global", (4, 3, 5, 5)),
                                        ("global", (3, 1000, 3, 3)), ("global", (2, 6, 17)), (None, (1, 1))])
@pytest.mark.parametrize("per_sample", [False, True])
def test_penalty_value_and_gradients(backend, pool, shape, per_sample):
    a = torch.randn(*shape, dtype=torch.float64, requires_grad=True)
    b = torch.randn(*shape, dtype=torch.float64, requires_grad=True)
    zeta = (torch.rand(shape[0], dtype=torch.float64) + 0.1) if per_sample else torch.tensor(0.3, dtype=torch.float64)
    zeta.requires_grad_(True)
    out = F.fd_smoothness(a, b, zeta, pool=pool, backend=backend)
    ref = dense_penalty(a, b, zeta, pool)
    torch.testing.assert_close(out, ref, rtol=1e-12, atol=0)
    g = torch.autograd.grad(out, (a, b, zeta))
    gr = torch.autograd.grad(ref, (a, b, zeta))
    for x, y in zip(g, gr):
        torch.testing.assert_close(x, y, rtol=1e-10, atol=1e-12)


@needs_cpp
@pytest.mark.parametrize("pool", [None, "global"])
def test_penalty_float32_and_half(pool):
    a, b = torch.randn(8, 16, 4, 4), torch.randn(8, 16, 4, 4)
    ref = dense_penalty(a, b, 0.1, pool)
    out = F.fd_smoothness(a, b, 0.1, pool=pool)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out.double(), ref, rtol=1e-5, atol=0)
    ah, bh = a.half(), b.half()
    out_h = F.fd_smoothness(ah, bh, 0.1, pool=pool)
    assert out_h.dtype == torch.float32
    torch.testing.assert_close(out_h.double(), dense_penalty(ah, bh, 0.1, pool), rtol=1e-5, atol=0)


@needs_cpp
@pytest.mark.parametrize("hw", [1, 9])
def test_gradcheck_cpp(hw):
    a = torch.randn(3, 4 * hw, dtype=torch.float64, requires_grad=True)
    b = torch.randn(3, 4 * hw, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b: torch.ops.fastmi.fd_sqdiff(a, b, hw), (a, b))
    z = torch.rand(3, dtype=torch.float64, requires_grad=True)
    pool = "global" if hw > 1 else None
    f = lambda a, b, z: F.fd_smoothness(a.reshape(3, 4, hw), b.reshape(3, 4, hw), z + 0.5, pool=pool)  # noqa: E731
    assert torch.autograd.gradcheck(f, (a, b, z))


@needs_cpp
def test_double_backward_raises_on_fused_path():
    a = torch.randn(3, 4, dtype=torch.float64, requires_grad=True)
    out = F.fd_smoothness(a, torch.zeros(3, 4, dtype=torch.float64), 0.5)
    with pytest.raises(RuntimeError, match="second-order"):
        torch.autograd.grad(out, a, create_graph=True)


def test_penalty_extreme_values():
    a = torch.full((4, 10), 1e4)
    out = F.fd_smoothness(a, a + 1e-3 * torch.randn(4, 10), 1e-3)
    assert torch.isfinite(out) and out > 0
    big = torch.randn(4, 10) * 1e18
    assert torch.isfinite(F.fd_smoothness(big, -big, 1e5))


# ----------------------------------------------------------------------------------------------
# the one-line form and the module
@pytest.mark.parametrize("backend", ["auto", "reference"])
def test_jacobian_smoothness_gradients_reach_the_model(backend):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.BatchNorm2d(8), torch.nn.ReLU())
    x = torch.randn(16, 3, 8, 8)
    pen = F.jacobian_smoothness(model, x, pool="global", generator=torch.Generator().manual_seed(1), backend=backend)
    pen.backward()
    assert torch.isfinite(pen) and pen > 0
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
    # the same penalty by hand
    x_tilde, zeta = F.perturb_in_span(x, generator=torch.Generator().manual_seed(1), backend=backend)
    by_hand = oracle.fd_smoothness(model(x), model(x_tilde), zeta, pool="global")
    # The penalty is |f(x) - f(x~)|^2 / zeta^2 of two fp32 conv+BN forwards, computed here in separate
    # calls: cancellation amplifies their rounding (1.9e-5 relative seen on one machine),
    # so the tolerance is 1e-4, not the kernels' 1e-5.
    torch.testing.assert_close(pen.detach().double(), by_hand.detach(), rtol=1e-4, atol=0)


def test_module():
    mod = fastmi.nn.JacobianSmoothness(zeta_std=0.2, noise="gaussian", per_sample_zeta=True)
    assert "gaussian" in repr(mod) and not list(mod.parameters())
    lin = torch.nn.Linear(12, 4)
    x = torch.randn(10, 12)
    a = mod(lin, x, generator=torch.Generator().manual_seed(4))
    b = F.jacobian_smoothness(lin, x, zeta_std=0.2, noise="gaussian", per_sample_zeta=True,
                              generator=torch.Generator().manual_seed(4))
    torch.testing.assert_close(a, b)
    # a linear map: ||W delta||^2 averaged over unit directions delta, so bounded by ||W||_2^2
    assert a.item() <= torch.linalg.matrix_norm(lin.weight, 2).item() ** 2 + 1e-5


# ----------------------------------------------------------------------------------------------
# opcheck and torch.compile
@needs_cpp
def test_opcheck_cpu():
    x = torch.randn(9, 13)
    for args in [(x, torch.tensor([3]), torch.tensor([0.1]), 0, True), (x.double(), torch.tensor([3]),
                 torch.rand(9, dtype=torch.float64), 1, False)]:
        torch.library.opcheck(torch.ops.fastmi.fd_perturb.default, args)
    a = torch.randn(4, 18, requires_grad=True)
    b = torch.randn(4, 18, requires_grad=True)
    for hw in (1, 9):
        torch.library.opcheck(torch.ops.fastmi.fd_sqdiff.default, (a, b, hw))
        torch.library.opcheck(torch.ops.fastmi.fd_sqdiff_backward.default, (torch.randn(4), a.detach(), b.detach(), hw))


@needs_cpp
def test_torch_compile_fullgraph():
    def penalty(a, b, x):
        x_tilde, zeta = F.perturb_in_span(x, zeta=0.1)
        return F.fd_smoothness(a, b, 0.2, pool="global") + (x_tilde - x).square().sum()

    a = torch.randn(6, 5, 3, 3, requires_grad=True)
    b = torch.randn(6, 5, 3, 3)
    x = torch.randn(6, 20)
    compiled = torch.compile(penalty, fullgraph=True)
    out = compiled(a, b, x)
    out.backward()
    a2 = a.detach().clone().requires_grad_(True)
    ref = oracle.fd_smoothness(a2, b, 0.2, pool="global") + 0.1**2 * 6
    ref.backward()
    torch.testing.assert_close(out.double(), ref, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(a.grad, a2.grad, rtol=1e-5, atol=1e-6)


# ----------------------------------------------------------------------------------------------
# bad input
@pytest.mark.parametrize("kwargs,err,match", [
    (dict(x=torch.randn(1, 5)), ValueError, "B >= 2"),
    (dict(x=torch.randn(5)), ValueError, "at least 2-D"),
    (dict(x=torch.ones(3, 4, dtype=torch.long)), TypeError, "x must have a floating dtype"),
    (dict(x=[[1.0, 2.0]]), TypeError, "x must be a torch.Tensor"),
    (dict(zeta_std=0.0), ValueError, "zeta_std must be > 0"),
    (dict(zeta_std=-1.0), ValueError, "zeta_std"),
    (dict(zeta_std=float("inf")), ValueError, "zeta_std must be finite"),
    (dict(zeta=0.0), ValueError, "zeta must be finite and nonzero"),
    (dict(zeta=torch.tensor([0.1, 0.0, 0.2, 0.3])), ValueError, "zeta must be finite and nonzero"),
    (dict(zeta=torch.ones(3)), ValueError, "one value per sample"),
    (dict(noise="uniform"), ValueError, "noise must be"),
    (dict(center=1), TypeError, "center"),
    (dict(generator=3), TypeError, "generator"),
    (dict(backend="gpu"), ValueError, "backend"),
])
def test_perturb_bad_input(kwargs, err, match):
    args = dict(x=torch.randn(4, 5))
    args.update(kwargs)
    x = args.pop("x")
    with pytest.raises(err, match=match):
        F.perturb_in_span(x, **args)


@pytest.mark.parametrize("a,b,zeta,kw,err,match", [
    (torch.randn(4, 5), torch.randn(4, 6), 0.1, {}, ValueError, "f_perturbed has shape"),
    (torch.randn(4, 5), torch.randn(4, 5).double(), 0.1, {}, TypeError, "f_perturbed is"),
    (torch.randn(4, 5), torch.randn(4, 5), 0.0, {}, ValueError, "zeta must be finite and nonzero"),
    (torch.randn(4, 5), torch.randn(4, 5), float("nan"), {}, ValueError, "zeta is NaN"),
    (torch.randn(4, 5), torch.randn(4, 5), torch.ones(3), {}, ValueError, "one value per sample"),
    (torch.randn(4, 5), torch.randn(4, 5), 0.1, dict(pool="global"), ValueError, "pool='global' needs"),
    (torch.randn(4, 5, 2), torch.randn(4, 5, 2), 0.1, dict(pool="max"), ValueError, "pool must be"),
    (torch.randn(4, 5), None, 0.1, {}, TypeError, "f_perturbed must be a torch.Tensor"),
    (torch.randn(0, 5), torch.randn(0, 5), 0.1, {}, ValueError, "f_clean is empty"),
])
def test_penalty_bad_input(a, b, zeta, kw, err, match):
    with pytest.raises(err, match=match):
        F.fd_smoothness(a, b, zeta, **kw)


def test_jacobian_smoothness_bad_fn():
    with pytest.raises(TypeError, match="fn must be callable"):
        F.jacobian_smoothness("model", torch.randn(3, 4))


@needs_cpp
def test_non_contiguous_input():
    x = torch.randn(12, 10, 7).transpose(1, 2)
    out, _ = F.perturb_in_span(x, zeta=0.3, generator=torch.Generator().manual_seed(2))
    ref, _ = F.perturb_in_span(x.contiguous(), zeta=0.3, generator=torch.Generator().manual_seed(2))
    assert torch.equal(out, ref) and out.shape == x.shape


_MEMORY_PROBE = """
import sys, torch, fastmi
torch.set_num_threads(1)
B, noise = int(sys.argv[1]), int(sys.argv[2])
x = torch.randn(B, 8)
args = (x, torch.tensor([1]), torch.tensor([0.1]), noise, True)
torch.ops.fastmi.fd_perturb(*args)
open("/proc/self/clear_refs", "w").write("5")
def kb(key):
    return int(next(l for l in open("/proc/self/status") if l.startswith(key)).split()[1])
base = kb("VmRSS:")
torch.ops.fastmi.fd_perturb(*args)
print(kb("VmHWM:") - base)
"""


@needs_cpp
@pytest.mark.skipif(not __import__("os").path.exists("/proc/self/clear_refs"), reason="needs Linux /proc")
@pytest.mark.parametrize("noise", [0, 1])
def test_no_batch_by_batch_matrix(noise):
    # B = 4096: a B x B float32 coefficient matrix would be 64 MiB; the fused kernel stays far below.
    import os
    import subprocess
    import sys

    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536")
    out = subprocess.run([sys.executable, "-c", _MEMORY_PROBE, "4096", str(noise)], env=env, capture_output=True,
                         text=True, check=True)
    extra_kib = int(out.stdout.strip().splitlines()[-1])
    assert extra_kib < 8 * 1024, f"{extra_kib} KiB extra"
