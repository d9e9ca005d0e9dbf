"""The GPU kernels of the mmd_imq family: Triton (kernels/mmd_imq.py; through the interpreter on CPU
when there is no GPU) and CUDA (csrc/cuda/mmd_imq.cu: compiled with nvcc here, run only on a GPU).
All compared against the exact-difference float64 oracle of tests/test_mmd_imq.py."""
import subprocess

import pytest
import torch

import fastmi
import fastmi.functional as F

from helpers import needs
from mmd_imq.test_api import close, exact_grads, sample

GPU = torch.cuda.is_available()
needs_triton = needs("mmd_imq", "triton")
gpu = pytest.mark.gpu
needs_gpu = pytest.mark.skipif(not GPU, reason="no CUDA device")


def dev(t):
    return t.cuda() if GPU else t


def run(x, y, backend, **kw):
    xr, yr = dev(x).clone().requires_grad_(), dev(y).clone().requires_grad_()
    v = F.mmd_imq(xr, yr, backend=backend, **kw)
    v.backward()
    return v.detach().cpu(), xr.grad.cpu(), yr.grad.cpu()


# (n, m, K): below, at and above the 32/64-row blocks and the 16..128 feature chunks
TRITON_SHAPES = [(2, 3, 1), (33, 20, 5), (45, 70, 17), (20, 9, 130)]


@needs_triton
@pytest.mark.parametrize("estimator", ["unbiased", "biased"])
@pytest.mark.parametrize("n,m,K", TRITON_SHAPES)
def test_triton_matches_oracle(n, m, K, estimator):
    x, y = sample(n, m, K, shift=0.4, seed=n * m + K)
    scales = (0.5, 3.0) if K % 2 else None
    cs = [float(K)] if scales is None else [K * s for s in scales]
    want, wgx, wgy = exact_grads(x, y, cs, estimator == "unbiased")
    v, gx, gy = run(x.float(), y.float(), "triton", scales=scales, estimator=estimator)
    # fp32 kernel: MMD^2 is a difference of O(1) means, so compare at the size of those means
    close(v, want, 1e-4, 1e-5 * len(cs) / max(want.abs().item(), 1e-12))
    close(gx, wgx, 1e-3, 1e-4)
    close(gy, wgy, 1e-3, 1e-4)


@needs_triton
def test_triton_no_grad_extreme_and_identical():
    x, y = sample(40, 30, 6, seed=3, dtype=torch.float32)
    with torch.no_grad():
        v = F.mmd_imq(dev(x), dev(y), backend="triton")
    want = exact_grads(x.double(), y.double(), [6.0], True)[0]
    close(v.cpu(), want, 1e-4, 1e-4)
    big = 1e25
    v, gx, gy = run(x * big, (y + 1) * big, "triton", scale=6.0 * big**2)
    assert torch.isfinite(v) and torch.isfinite(gx).all() and torch.isfinite(gy).all()
    v, gx, _ = run(x, x.clone(), "triton", estimator="biased")
    assert abs(v.item()) < 1e-6 and gx.abs().max() < 1e-6


@needs_triton
def test_triton_opcheck_and_backward_recompute():
    x, y = sample(20, 17, 4, seed=4, dtype=torch.float32)
    args = (dev(x).requires_grad_(), dev(y).requires_grad_(), [1.0, 4.0], True, False)
    torch.library.opcheck(torch.ops.fastmi.mmd_imq_triton.default, args)


# --- CUDA --------------------------------------------------------------------------------------

@pytest.mark.skipif(not __import__("critic_lse.test_cuda_source", fromlist=["NVCC"]).NVCC, reason="nvcc not found")
def test_cuda_source_compiles(tmp_path):
    from critic_lse.test_cuda_source import NVCC, ROOT, common_nvcc_flags

    out = tmp_path / "mmd_imq.o"
    cmd = [NVCC, "-c", str(ROOT / "csrc" / "cuda" / "mmd_imq.cu"), "-o", str(out)] + common_nvcc_flags()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    assert proc.returncode == 0, f"{' '.join(cmd)}\n{proc.stdout}\n{proc.stderr[-6000:]}"
    assert out.stat().st_size > 0


@gpu
@needs_gpu
@pytest.mark.parametrize("backend", ["cuda", "triton"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("n,m,K", [(2, 2, 1), (33, 70, 17), (300, 257, 64), (129, 64, 300)])
def test_gpu_matches_oracle(backend, dtype, n, m, K):
    if not fastmi.info()[backend][0]:
        pytest.skip(fastmi.info()[backend][1])
    x, y = sample(n, m, K, shift=0.4, seed=n + m)
    for est in ("unbiased", "biased"):
        want, wgx, wgy = exact_grads(x, y, [K * 0.5, K * 2.0], est == "unbiased")
        v, gx, gy = run(x.to(dtype), y.to(dtype), backend, scales=(0.5, 2.0), estimator=est)
        tol = 1e-9 if (dtype == torch.float64 and backend == "cuda") else 1e-4
        close(v, want, tol, tol * 2 / max(want.abs().item(), 1e-12))
        close(gx, wgx, 10 * tol, tol)
        close(gy, wgy, 10 * tol, tol)


@gpu
@needs_gpu
def test_gpu_auto_backend_half_and_large():
    x, y = sample(500, 400, 32, shift=0.3, seed=1)
    want = exact_grads(x, y, [32.0], True)[0]
    v = F.mmd_imq(x.cuda().half(), y.cuda().half())
    assert v.dtype == torch.float32
    close(v.cpu(), exact_grads(x.half().double(), y.half().double(), [32.0], True)[0], 1e-3, 1e-3)
    assert abs(v.item() - want.item()) < 1e-2
    big = 1e25
    v = F.mmd_imq((x * big).float().cuda(), (y * big).float().cuda(), scale=32 * big**2, backend="cuda")
    assert torch.isfinite(v)


@needs_triton
def test_triton_near_coincident_points():
    """Pairs 1e-3 apart at magnitude 100 (see the CPU test): exact differences where d2 cancelled."""
    g = torch.Generator().manual_seed(0)
    x = 100 + torch.randn(40, 8, generator=g, dtype=torch.float64)
    y = x + 1e-3 * torch.randn(40, 8, generator=g, dtype=torch.float64)
    want, wgx, _ = exact_grads(x.float(), y.float(), [1e-4], True)
    v, gx, _ = run(x.float(), y.float(), "triton", scale=1e-4)
    close(v, want, 1e-3, 1e-3)
    close(gx, wgx, 1e-2, 1e-3)


@needs_triton
def test_triton_tiles_that_do_not_fit_are_retried_smaller(monkeypatch):
    """A tile the GPU cannot hold (Triton's OutOfResources: BK = 128 asked 192 KB of shared memory of an
    A100 under one Triton version) is retried with smaller tiles, the same result; the tile that fitted
    is remembered; when none fits, the error is raised."""
    from triton.runtime.errors import OutOfResources

    from fastmi.kernels import mmd_imq as k

    real = k._mmd_imq_rows_kernel
    tried = []

    class Limited:   # the kernel on a GPU with room for BK <= limit only
        limit = 32

        def __getitem__(self, grid):
            def launch(*args, **kw):
                tried.append((kw["BM"], kw["BN"], kw["BK"]))
                if kw["BK"] > self.limit:
                    raise OutOfResources(kw["BK"] * 1536, self.limit * 1536, "shared memory")
                return real[grid](*args, **kw)
            return launch

    x, y = sample(20, 9, 130, shift=0.4, seed=7)
    want, wgx, wgy = exact_grads(x, y, [130.0], True)
    monkeypatch.setattr(k, "_FITTED", {})
    monkeypatch.setattr(k, "_mmd_imq_rows_kernel", Limited())
    v, gx, gy = run(x.float(), y.float(), "triton")
    close(v, want, 1e-4, 1e-5 / max(want.abs().item(), 1e-12))
    close(gx, wgx, 1e-3, 1e-4)
    close(gy, wgy, 1e-3, 1e-4)
    first = tried[0]
    assert first[2] > 32 and all(t[2] <= 32 for t in tried[2:])   # x: first tile refused, then 32 fits
    assert list(k._FITTED.values()) and all(t[2] == 32 for t in k._FITTED.values())
    tried.clear()
    run(x.float(), y.float(), "triton")
    assert tried and all(t[2] == 32 for t in tried)               # remembered: no refused tile again
    Limited.limit = 8                                              # nothing fits
    monkeypatch.setattr(k, "_FITTED", {})
    with pytest.raises(OutOfResources):
        run(x.float(), y.float(), "triton")
