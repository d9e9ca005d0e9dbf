"""Triton kernels of the fd_jacobian family (kernels/fd_jacobian.py) against the float64 oracle fed
the same counter-based coefficients, against the C++ op, and through the public API.

Without CUDA the kernels run through the Triton interpreter on CPU tensors (tests/conftest.py sets
TRITON_INTERPRET=1), so the shapes stay small.
"""
import pytest
import torch

triton = pytest.importorskip("triton")
kern = pytest.importorskip("fastmi.kernels.fd_jacobian")
import triton.language as tl  # noqa: E402

import fastmi  # noqa: E402
import fastmi.functional as F  # noqa: E402
import oracle  # noqa: E402
from fd_jacobian.philox import span_coefficients  # noqa: E402
from fastmi.fd_jacobian.ops import NOISE  # noqa: E402

DEV = "cuda" if torch.cuda.is_available() else "cpu"
from helpers import available, needs  # noqa: E402

CPP = available("fd_jacobian", "cpu")
TRITON = available("fd_jacobian", "triton")
needs_triton = needs("fd_jacobian", "triton")
pytestmark = [needs_triton, pytest.mark.filterwarnings("ignore::RuntimeWarning:triton.runtime.interpreter")]


def stream_oracle(x, seed, zeta, noise, center):
    coeff = span_coefficients(seed, x.shape[0], noise)
    z = torch.as_tensor(zeta, dtype=torch.float64, device=x.device)
    return oracle.span_perturb(x.double(), coeff, z, center=center)


@triton.jit
def _philox_words(seed_ptr, out_ptr, N: tl.constexpr):
    offs = tl.arange(0, N)
    w0, w1, w2, w3 = tl.randint4x(tl.load(seed_ptr), offs.to(tl.int64))
    tl.store(out_ptr + offs * 4 + 0, w0.to(tl.int64) & 0xFFFFFFFF)
    tl.store(out_ptr + offs * 4 + 1, w1.to(tl.int64) & 0xFFFFFFFF)
    tl.store(out_ptr + offs * 4 + 2, w2.to(tl.int64) & 0xFFFFFFFF)
    tl.store(out_ptr + offs * 4 + 3, w3.to(tl.int64) & 0xFFFFFFFF)


def test_reference_stream_is_tritons_philox():
    # span_coefficients (numpy) reproduces tl.randint4x word for word: row i of a B=128 Bernoulli
    # matrix is the 128 bits of offset i.
    seed = -1234567890123
    out = torch.empty(16 * 4, dtype=torch.int64, device=DEV)
    _philox_words[(1,)](torch.tensor([seed], device=DEV), out, N=16)
    c = span_coefficients(seed, 128, "bernoulli")[:16].long()
    bits = torch.stack([(out.cpu().reshape(16, 4)[:, j // 32] >> (j % 32)) & 1 for j in range(128)], dim=1)
    assert torch.equal(bits, c)


@pytest.mark.parametrize("noise", ["bernoulli", "gaussian"])
@pytest.mark.parametrize("center", [True, False])
@pytest.mark.parametrize("shape", [(2, 1), (5, 7), (37, 70)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_triton_perturb_matches_oracle(noise, center, shape, dtype):
    g = torch.Generator().manual_seed(shape[0])
    x = (2 * torch.randn(*shape, generator=g, dtype=torch.float64) - 1).to(dtype).to(DEV)
    seed = 2**40 + 7 * shape[1]
    zeta = torch.tensor([0.3], dtype=dtype, device=DEV)
    out = kern.fd_perturb(x, torch.tensor([seed], device=DEV), zeta, NOISE[noise], center)
    ref = stream_oracle(x, seed, zeta, noise, center)
    tol = 1e-12 if (dtype == torch.float64 and noise == "bernoulli") else (2e-6 if dtype == torch.float32 else 1e-7)
    torch.testing.assert_close(out.double(), ref, rtol=0, atol=tol * (1 + x.abs().max().item()))
    if CPP and DEV == "cpu":
        cpu = torch.ops.fastmi.fd_perturb(x, torch.tensor([seed]), zeta, NOISE[noise], center)
        torch.testing.assert_close(out, cpu, rtol=0, atol=4 * tol * (1 + x.abs().max().item()))


def test_triton_perturb_per_sample_zeta_and_zero_directions():
    x = torch.randn(9, 20, dtype=torch.float64, device=DEV)
    zeta = torch.linspace(0.1, 0.9, 9, dtype=torch.float64, device=DEV)
    out = kern.fd_perturb(x, torch.tensor([11], device=DEV), zeta, 1, True)
    torch.testing.assert_close(out, stream_oracle(x, 11, zeta, "gaussian", True), rtol=0, atol=1e-7)
    same = torch.ones(6, 10, device=DEV) * 0.3
    assert torch.equal(kern.fd_perturb(same, torch.tensor([1], device=DEV), zeta[:1].float(), 0, True), same)


def test_triton_half_input():
    x = torch.randn(6, 10, device=DEV)
    out = kern.fd_perturb(x.half(), torch.tensor([5], device=DEV), torch.tensor([0.2], device=DEV), 0, True)
    assert out.dtype == torch.float16
    ref = kern.fd_perturb(x.half().float(), torch.tensor([5], device=DEV), torch.tensor([0.2], device=DEV), 0, True)
    assert torch.equal(out, ref.half())


@pytest.mark.parametrize("shape,hw", [((5, 7), 1), ((3, 4, 3, 3), 9), ((2, 3, 17), 17), ((4, 3000), 1)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_triton_sqdiff_and_backward(shape, hw, dtype):
    a = torch.randn(*shape, dtype=dtype, device=DEV)
    b = torch.randn(*shape, dtype=dtype, device=DEV)
    B = shape[0]
    ad, bd = a.double().reshape(B, -1, hw), b.double().reshape(B, -1, hw)
    m = (ad - bd).mean(2)
    ref = (m * m).sum(1)
    tol = 1e-5 if dtype == torch.float32 else 1e-12
    s = kern.fd_sqdiff(a.reshape(B, -1), b.reshape(B, -1), hw)
    torch.testing.assert_close(s.double(), ref, rtol=tol, atol=0)
    g = torch.randn(B, dtype=torch.float64, device=DEV)
    ga, gb = kern.fd_sqdiff_backward(g.to(s.dtype), a.reshape(B, -1), b.reshape(B, -1), hw)
    gref = (2 * g[:, None, None] * m[:, :, None] / hw).expand_as(ad).reshape(B, -1)
    torch.testing.assert_close(ga.double(), gref, rtol=tol, atol=tol)
    torch.testing.assert_close(gb.double(), -gref, rtol=tol, atol=tol)


@pytest.mark.parametrize("pool", [None, "global"])
def test_triton_through_the_api(pool):
    a = torch.randn(4, 6, 3, 3, dtype=torch.float64, device=DEV, requires_grad=True)
    b = torch.randn(4, 6, 3, 3, dtype=torch.float64, device=DEV, requires_grad=True)
    zeta = torch.rand(4, dtype=torch.float64, device=DEV) + 0.2
    out = F.fd_smoothness(a, b, zeta, pool=pool, backend="triton")
    ref = oracle.fd_smoothness(a, b, zeta, pool=pool)
    torch.testing.assert_close(out, ref, rtol=1e-12, atol=0)
    ga = torch.autograd.grad(out, (a, b))
    gr = torch.autograd.grad(ref, (a, b))
    torch.testing.assert_close(ga, gr, rtol=1e-10, atol=1e-12)
    x = torch.randn(8, 3, 4, device=DEV)
    x_tilde, z = F.perturb_in_span(x, generator=torch.Generator(device=DEV).manual_seed(0), backend="triton")
    torch.testing.assert_close((x_tilde - x).flatten(1).norm(dim=1), z.abs().expand(8), rtol=1e-5, atol=0)


def test_opcheck_triton():
    x = torch.randn(5, 7, device=DEV)
    torch.library.opcheck(torch.ops.fastmi.fd_perturb_triton.default,
                          (x, torch.tensor([3], device=DEV), torch.tensor([0.1], device=DEV), 0, True))
    a = torch.randn(3, 8, device=DEV, requires_grad=True)
    b = torch.randn(3, 8, device=DEV, requires_grad=True)
    torch.library.opcheck(torch.ops.fastmi.fd_sqdiff_triton.default, (a, b, 4))
