"""The CUDA kernels of the critic_lse family (csrc/cuda/critic_lse.cu).

Three layers, so that most of it runs on a machine without a GPU:

* the source compiles with nvcc for sm_80 and sm_90 against torch's headers (tests/test_aot.py, for
  every .cu file);
* a host emulation runs the kernels' own per-thread code (``fwd_lane`` / ``merge`` / ``fwd_finish``
  / ``bwd_lane``, the same functions the kernels call) lane by lane, with the warp-shuffle and
  shared-memory reductions replayed in the kernels' order, for every group size the launcher uses;
  compared against the C++ CPU op (needs nvcc, no GPU);
* on a GPU (``@pytest.mark.gpu``): the registered CUDA ops against the CPU ops.

Half types are compared against float64 computed on the half-rounded values.
"""
from __future__ import annotations

import math
import struct
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from bench.aot_cuda import find_nvcc, nvcc_flags

ROOT = Path(__file__).resolve().parents[2]
SOURCE = ROOT / "csrc" / "cuda" / "critic_lse.cu"
NUM_STATS = 6
ALL = (1 << NUM_STATS) - 1
LSE, CLSE, SP, POS, PSP, CPOS = range(6)


# --------------------------------------------------------------------------------------------
# nvcc (the compile of every csrc/cuda/*.cu for sm_80 and sm_90 is tests/test_aot.py's)

NVCC = find_nvcc()
needs_nvcc = pytest.mark.skipif(NVCC is None, reason="nvcc not found")


def common_nvcc_flags(std: str = "c++17") -> list[str]:
    """The flags of fastmi's CUDA build (fastmi/_build.py + torch's CUDAExtension) for sm_90."""
    return nvcc_flags((90,), std)


# --------------------------------------------------------------------------------------------
# Inputs and comparisons shared by the emulation and the GPU tests

DTYPES = [torch.float32, torch.float64, torch.float16, torch.bfloat16]
DTYPE_CODE = {torch.float32: 0, torch.float64: 1, torch.float16: 2, torch.bfloat16: 3}
POS_KINDS = ["diag", "index", "mask"]
SHAPES = [(1, 1), (2, 2), (3, 3), (17, 17), (129, 129), (129, 70)]
VALUES = ["normal", "big", "neginf", "special"]


def acc_dtype(dtype):
    return torch.float64 if dtype == torch.float64 else torch.float32


def make_scores(n, m, kind, dtype, gen):
    """Scores (already rounded to dtype) for a value kind."""
    if kind == "big":
        x = (torch.rand(n, m, generator=gen, dtype=torch.float64) * 2 - 1) * 1e4
    else:
        x = torch.randn(n, m, generator=gen, dtype=torch.float64) * 3
    if kind in ("neginf", "special"):
        u = torch.rand(n, m, generator=gen, dtype=torch.float64)
        x[u < 0.2] = -math.inf
        if n > 1:
            x[0] = -math.inf  # a row whose negatives are all -inf
    if kind == "special":
        x[(u >= 0.2) & (u < 0.25)] = math.inf
        x[(u >= 0.25) & (u < 0.28)] = math.nan
        if n > 2:
            x[1] = torch.where(torch.isnan(x[1]), torch.zeros_like(x[1]), x[1])
            x[1, m // 2] = math.inf  # +inf among finite values and -inf
    return x.to(dtype)


def make_layout(kind, n, m, gen):
    """(pos_index, pos_mask) of a positive kind."""
    if kind == "diag":
        return None, None
    if kind == "index":
        return torch.randint(0, m, (n,), generator=gen), None
    mask = torch.rand(n, m, generator=gen) < 0.3
    mask[0, min(1, m - 1)] = True
    if n > 1:
        mask[n - 1] = False  # a row without positives
    if n > 2:
        mask[1] = True  # a row without negatives when they exclude the positives
    return None, mask


def cases(dtype, pos_kind, shapes=SHAPES, values=VALUES, seed=0):
    """(scores, pos_index, pos_mask, neg_mode, clip, need) over the grid of one dtype and positive kind."""
    gen = torch.Generator().manual_seed(seed)
    out = []
    for n, m in shapes:
        if pos_kind == "diag" and n != m:
            continue
        for values_kind in values:
            scores = make_scores(n, m, values_kind, dtype, gen)
            pos_index, pos_mask = make_layout(pos_kind, n, m, gen)
            for neg_mode in (0, 1, 2):
                for clip in (2.5, math.inf):
                    out.append((scores, pos_index, pos_mask, neg_mode, clip, ALL))
            # subsets of the statistics (the others must be exactly 0)
            for need in ((1 << LSE) | (1 << POS), (1 << CLSE) | (1 << CPOS), (1 << SP) | (1 << PSP), 1 << POS):
                out.append((scores, pos_index, pos_mask, 1, 1.5, need))
    return out


def cpu_forward(scores, pos_index, pos_mask, neg_mode, clip, need):
    """The CPU op's stats; half types in float64 on their rounded values."""
    import fastmi._C  # noqa: F401

    s = scores if scores.dtype in (torch.float32, torch.float64) else scores.double()
    return torch.ops.fastmi.critic_lse(s.cpu(), pos_index, pos_mask, neg_mode, clip, need)


def cpu_backward(grad_stats, scores, pos_index, pos_mask, neg_mode, clip, need, stats):
    import fastmi._C  # noqa: F401

    if scores.dtype in (torch.float32, torch.float64):
        return torch.ops.fastmi.critic_lse_backward(
            grad_stats, scores, pos_index, pos_mask, neg_mode, clip, need, stats)
    return torch.ops.fastmi.critic_lse_backward(
        grad_stats.double(), scores.double(), pos_index, pos_mask, neg_mode, clip, need, stats.double())


def make_grad_stats(n, need, gen, dtype):
    g = torch.randn(NUM_STATS, n, generator=gen, dtype=torch.float64)
    g[:, ::3] = 0.0  # zero gradients skip the negative-set terms (no 0 * inf)
    for k in range(NUM_STATS):
        if not need >> k & 1:
            g[k] = 0.0
    return g.to(acc_dtype(dtype))


def value_scale(scores):
    x = scores.double()
    fin = x[torch.isfinite(x)]
    return max(1.0, float(fin.abs().max())) if fin.numel() else 1.0


def assert_matches(got, ref, *, rtol, atol, what):
    """Same NaN and infinity pattern, finite values within tolerance."""
    got = got.detach().double().cpu()
    ref = ref.detach().double().cpu()
    assert got.shape == ref.shape, what
    assert torch.equal(torch.isnan(got), torch.isnan(ref)), f"{what}: NaN pattern\n{got}\n{ref}"
    inf = torch.isinf(ref)
    assert torch.equal(torch.isinf(got), inf), f"{what}: inf pattern\n{got}\n{ref}"
    assert torch.equal(got[inf], ref[inf]), f"{what}: inf signs"
    fin = torch.isfinite(ref)
    torch.testing.assert_close(got[fin], ref[fin], rtol=rtol, atol=atol, msg=lambda msg: f"{what}: {msg}")


def fwd_tolerance(scores):
    """Accumulation in fp32 (fp64 for double), sums over a row of up to m terms of size scale."""
    eps = 2.2e-16 if scores.dtype == torch.float64 else 1.2e-7
    m = scores.shape[1]
    return dict(rtol=64 * eps, atol=8 * eps * (m + 1) * value_scale(scores))


def bwd_tolerance(scores):
    eps = 2.2e-16 if scores.dtype == torch.float64 else 1.2e-7
    out_eps = {torch.float16: 2.0**-11, torch.bfloat16: 2.0**-8}.get(scores.dtype, 0.0)
    # exp(x - lse) with |x|, |lse| ~ scale: the fp32 difference is off by ~eps * scale.
    rtol = 8 * eps * value_scale(scores) + 2 * out_eps + 64 * eps
    return dict(rtol=rtol, atol=1e-5 if out_eps else 64 * eps)


def check_forward(stats, scores, pos_index, pos_mask, neg_mode, clip, need, what):
    ref = cpu_forward(scores, pos_index, pos_mask, neg_mode, clip, need)
    assert stats.dtype == acc_dtype(scores.dtype), what
    assert tuple(stats.shape) == (NUM_STATS, scores.shape[0]), what
    for k in range(NUM_STATS):
        if not need >> k & 1:
            assert torch.all(stats[k].cpu() == 0), f"{what}: stat {k} not requested but nonzero"
    assert_matches(stats, ref, what=what, **fwd_tolerance(scores))
    return ref


# --------------------------------------------------------------------------------------------
# Host emulation of the kernels (no GPU needed)

HARNESS = r"""
#define FASTMI_CRITIC_LSE_NO_OPS
#include "@SOURCE@"

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

using namespace fastmi;
using namespace fastmi::critic_lse_kernels;

struct Header {
  int64_t dtype, n, m, neg_mode, need, pos_kind, tpr, s_off, mask_off, out_off, mode;
  double tau;
};

static void read_exact(FILE* f, void* p, size_t bytes) {
  if (bytes && fread(p, 1, bytes, f) != bytes) { fprintf(stderr, "short read\n"); exit(2); }
}

// 64-byte aligned buffer with `off` elements in front of the data (to misalign rows on purpose).
template <typename T>
struct Buf {
  std::vector<unsigned char> raw;
  T* p;
  Buf(size_t count, int64_t off) : raw((count + off + 16) * sizeof(T) + 64) {
    uintptr_t a = reinterpret_cast<uintptr_t>(raw.data());
    a = (a + 63) & ~uintptr_t(63);
    p = reinterpret_cast<T*>(a) + off;
  }
};

// Replays warp_reduce: lane l merges in the state of lane l ^ off, for off = 16, 8, 4, 2, 1.
template <typename A>
static void warp_reduce_emu(FwdAcc<A>* w, const Need& f, bool mpos) {
  for (int off = 16; off > 0; off >>= 1) {
    FwdAcc<A> nxt[32];
    for (int l = 0; l < 32; ++l) {
      const FwdAcc<A>& src = w[l ^ off];
      FwdAcc<A> o = fwd_identity<A>();  // only the shuffled fields travel
      if (f.lse) { o.m0 = src.m0; o.s0 = src.s0; }
      if (f.clse) { o.m1 = src.m1; o.s1 = src.s1; }
      if (f.sp) o.sp = src.sp;
      if (mpos) { o.pos = src.pos; o.psp = src.psp; o.cpos = src.cpos; }
      if (f.lse || f.clse) o.flags = src.flags;
      nxt[l] = w[l];
      merge(nxt[l], o, f, mpos);
    }
    for (int l = 0; l < 32; ++l) w[l] = nxt[l];
  }
}

template <typename T, typename A, int TPR>
static void run(const Header& h, FILE* in, FILE* out) {
  const int64_t n = h.n;
  const int m = static_cast<int>(h.m);
  Buf<T> S(n * m, h.s_off);
  read_exact(in, S.p, sizeof(T) * n * m);
  std::vector<int64_t> pidx;
  if (h.pos_kind == 1) { pidx.resize(n); read_exact(in, pidx.data(), sizeof(int64_t) * n); }
  Buf<uint8_t> M(n * m, h.mask_off);
  if (h.pos_kind == 2) read_exact(in, M.p, n * m);
  const int64_t* pos_index = h.pos_kind == 1 ? pidx.data() : nullptr;
  const uint8_t* pos_mask = h.pos_kind == 2 ? M.p : nullptr;
  const A tau = static_cast<A>(h.tau);
  const Need f(static_cast<int>(h.need));
  const bool mpos = pos_mask != nullptr && f.any_pos();
  if (h.mode == 0) {
    std::vector<A> stats(NUM_STATS * n, A(-12345));
    std::vector<FwdAcc<A>> st(TPR);
    for (int64_t i = 0; i < n; ++i) {
      const Row r = make_row(pos_index, pos_mask, i, m, static_cast<int>(h.neg_mode), f.any_pos());
      const T* row = S.p + i * m;
      for (int lane = 0; lane < TPR; ++lane) st[lane] = fwd_lane<TPR>(row, m, r, f, tau, lane);
      for (int w = 0; w < TPR / 32; ++w) warp_reduce_emu(&st[32 * w], f, mpos);
      FwdAcc<A> fin = st[0];
      if (TPR / 32 > 1) {  // replays the shared-memory step: warp 0 reduces the warps' results
        FwdAcc<A> w0[32];
        for (int l = 0; l < 32; ++l) w0[l] = l < TPR / 32 ? st[32 * l] : fwd_identity<A>();
        warp_reduce_emu(w0, f, mpos);
        fin = w0[0];
      }
      fwd_finish(fin, r, row, f, tau, stats.data(), n);
    }
    fwrite(stats.data(), sizeof(A), stats.size(), out);
  } else {
    std::vector<A> G(NUM_STATS * n), ST(NUM_STATS * n);
    read_exact(in, G.data(), sizeof(A) * G.size());
    read_exact(in, ST.data(), sizeof(A) * ST.size());
    Buf<T> O(n * m, h.out_off);
    for (int64_t k = 0; k < n * m; ++k) O.p[k] = static_cast<T>(A(-12345));
    for (int64_t i = 0; i < n; ++i) {
      const Row r = make_row(pos_index, pos_mask, i, m, static_cast<int>(h.neg_mode), f.any_pos());
      const BwdRow<A> b = make_bwd_row(G.data(), ST.data(), i, n, f);
      for (int lane = 0; lane < TPR; ++lane) bwd_lane<TPR>(S.p + i * m, O.p + i * m, m, r, b, tau, lane);
    }
    fwrite(O.p, sizeof(T), n * m, out);
  }
}

template <typename T, typename A>
static void run_tpr(const Header& h, FILE* in, FILE* out) {
  switch (h.tpr) {
    case 32: run<T, A, 32>(h, in, out); break;
    case 256: run<T, A, 256>(h, in, out); break;
    case 1024: run<T, A, 1024>(h, in, out); break;
    default: fprintf(stderr, "bad tpr\n"); exit(2);
  }
}

int main() {
  Header h;
  while (fread(&h, sizeof(h), 1, stdin) == 1) {
    switch (h.dtype) {
      case 0: run_tpr<float, float>(h, stdin, stdout); break;
      case 1: run_tpr<double, double>(h, stdin, stdout); break;
      case 2: run_tpr<c10::Half, float>(h, stdin, stdout); break;
      case 3: run_tpr<c10::BFloat16, float>(h, stdin, stdout); break;
      default: fprintf(stderr, "bad dtype\n"); return 2;
    }
  }
  fflush(stdout);
  return 0;
}
"""


@pytest.fixture(scope="module")
def harness(tmp_path_factory):
    if NVCC is None:
        pytest.skip("nvcc not found")
    d = tmp_path_factory.mktemp("critic_lse_emu")
    src = d / "harness.cu"
    src.write_text(HARNESS.replace("@SOURCE@", str(SOURCE)))
    exe = d / "harness"
    cmd = [NVCC, str(src), "-o", str(exe)] + common_nvcc_flags()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    assert proc.returncode == 0, f"{' '.join(cmd)}\n{proc.stderr[-6000:]}"
    return exe


def raw_bytes(t):
    t = t.contiguous()
    if t.dtype in (torch.float16, torch.bfloat16):
        return t.view(torch.int16).numpy().tobytes()
    return t.numpy().tobytes()


def from_raw(buf, dtype, shape):
    if dtype in (torch.float16, torch.bfloat16):
        return torch.from_numpy(np.frombuffer(buf, dtype=np.int16).copy()).view(dtype).reshape(shape)
    npd = {torch.float32: np.float32, torch.float64: np.float64}[dtype]
    return torch.from_numpy(np.frombuffer(buf, dtype=npd).copy()).reshape(shape)


class Emu:
    """Batches emulated kernel calls into one run of the harness."""

    def __init__(self, exe):
        self.exe = exe
        self.reqs = []

    def add(self, scores, pos_index, pos_mask, neg_mode, clip, need, *, tpr, s_off=0, mask_off=0,
            out_off=0, grad_stats=None, stats=None):
        n, m = scores.shape
        kind = 0 if pos_index is None and pos_mask is None else (1 if pos_index is not None else 2)
        mode = 0 if grad_stats is None else 1
        body = struct.pack("<11qd", DTYPE_CODE[scores.dtype], n, m, neg_mode, need, kind, tpr, s_off,
                           mask_off, out_off, mode, clip)
        body += raw_bytes(scores)
        if kind == 1:
            body += pos_index.to(torch.int64).numpy().tobytes()
        if kind == 2:
            body += pos_mask.to(torch.uint8).numpy().tobytes()
        if mode == 1:
            a = acc_dtype(scores.dtype)
            body += raw_bytes(grad_stats.to(a)) + raw_bytes(stats.to(a))
        out_dtype = acc_dtype(scores.dtype) if mode == 0 else scores.dtype
        out_shape = (NUM_STATS, n) if mode == 0 else (n, m)
        self.reqs.append((body, out_dtype, out_shape))
        return len(self.reqs) - 1

    def run(self):
        data = b"".join(r[0] for r in self.reqs)
        proc = subprocess.run([str(self.exe)], input=data, capture_output=True)
        assert proc.returncode == 0, proc.stderr.decode()[-3000:]
        out, pos = [], 0
        for _, dtype, shape in self.reqs:
            size = math.prod(shape) * torch.empty((), dtype=dtype).element_size()
            out.append(from_raw(proc.stdout[pos:pos + size], dtype, shape))
            pos += size
        assert pos == len(proc.stdout)
        return out


def describe(scores, pos_index, pos_mask, neg_mode, clip, need, **kw):
    kind = "diag" if pos_index is None and pos_mask is None else ("index" if pos_index is not None else "mask")
    return f"{tuple(scores.shape)} {scores.dtype} {kind} neg_mode={neg_mode} clip={clip} need={need:#x} {kw}"


@needs_nvcc
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("pos_kind", POS_KINDS)
def test_emulated_kernels_match_cpu(harness, dtype, pos_kind):
    """The kernels' per-thread code + replayed reductions, every group size, against the CPU op."""
    emu = Emu(harness)
    gen = torch.Generator().manual_seed(1)
    jobs = []
    for idx, (scores, pos_index, pos_mask, neg_mode, clip, need) in enumerate(cases(dtype, pos_kind)):
        tpr = (32, 256, 1024)[idx % 3]
        # misaligned rows (a storage offset) on some cases, and input / output misaligned to each other
        s_off, mask_off, out_off = [(0, 0, 0), (1, 0, 1), (3, 1, 0), (0, 5, 2)][idx % 4]
        kw = dict(tpr=tpr, s_off=s_off, mask_off=mask_off, out_off=out_off)
        args = (scores, pos_index, pos_mask, neg_mode, clip, need)
        ref = cpu_forward(*args)
        fwd = emu.add(*args, **kw)
        g = make_grad_stats(scores.shape[0], need, gen, dtype)
        st = ref.to(acc_dtype(dtype))  # the stats the forward would hand the backward
        bwd = emu.add(*args, **kw, grad_stats=g, stats=st)
        jobs.append((args, kw, fwd, bwd, g, st))
    results = emu.run()
    for args, kw, fwd, bwd, g, st in jobs:
        what = describe(*args, **kw)
        check_forward(results[fwd], *args, what=what)
        ref_grad = cpu_backward(g, *args, st)
        grad = results[bwd]
        assert grad.dtype == dtype
        assert_matches(grad, ref_grad, what="backward " + what, **bwd_tolerance(args[0]))


@needs_nvcc
def test_emulated_long_rows(harness):
    """Rows much longer than a group: the pipelined vector loop, head and tail, all group sizes."""
    emu = Emu(harness)
    gen = torch.Generator().manual_seed(2)
    jobs = []
    for dtype in DTYPES:
        for m in (1000, 1027, 4099):
            scores = make_scores(3, m, "neginf", dtype, gen)
            mask = torch.rand(3, m, generator=gen) < 0.1
            for pos_index, pos_mask in ((torch.tensor([0, m - 1, m // 2]), None), (None, mask)):
                for tpr, s_off in ((32, 0), (256, 1), (1024, 2)):
                    args = (scores, pos_index, pos_mask, 1, 3.0, ALL)
                    g = make_grad_stats(3, ALL, gen, dtype)
                    st = cpu_forward(*args).to(acc_dtype(dtype))
                    kw = dict(tpr=tpr, s_off=s_off, mask_off=s_off, out_off=s_off)
                    jobs.append((args, kw, emu.add(*args, **kw), emu.add(*args, **kw, grad_stats=g, stats=st), g, st))
    results = emu.run()
    for args, kw, fwd, bwd, g, st in jobs:
        what = describe(*args, **kw)
        check_forward(results[fwd], *args, what=what)
        assert_matches(results[bwd], cpu_backward(g, *args, st), what="backward " + what, **bwd_tolerance(args[0]))


@needs_nvcc
def test_emulated_out_of_range_index_gives_nan(harness):
    """An out-of-range pos_index never reads out of bounds: the row's requested stats are NaN (the
    kernels also assert)."""
    emu = Emu(harness)
    scores = torch.randn(3, 5)
    pos_index = torch.tensor([0, 7, -1])
    need = (1 << LSE) | (1 << POS)
    fwd = emu.add(scores, pos_index, None, 1, math.inf, need, tpr=32)
    g = torch.ones(NUM_STATS, 3)
    bwd = emu.add(scores, pos_index, None, 1, math.inf, need, tpr=32, grad_stats=g, stats=torch.zeros(NUM_STATS, 3))
    stats, grad = emu.run()
    assert torch.isfinite(stats[[LSE, POS], 0]).all()
    assert torch.isnan(stats[[LSE, POS], 1:]).all()
    assert (stats[[CLSE, SP, PSP, CPOS]] == 0).all()
    assert torch.isfinite(grad[0]).all() and torch.isnan(grad[1:]).all()


# --------------------------------------------------------------------------------------------
# The CUDA ops on a GPU


def cuda_ops_available() -> tuple[bool, str]:
    if not torch.cuda.is_available():
        return False, "no CUDA device"
    try:
        import fastmi._C  # noqa: F401
    except ImportError as exc:
        return False, f"fastmi._C not built: {exc}"
    if not torch._C._dispatch_has_kernel_for_dispatch_key("fastmi::critic_lse", "CUDA"):
        return False, "fastmi._C has no CUDA kernels"
    return True, ""


_ok, _why = cuda_ops_available()


def _apply_gpu(fn):
    """@pytest.mark.gpu, skipped without a CUDA device and fastmi's CUDA kernels."""
    return pytest.mark.gpu(pytest.mark.skipif(not _ok, reason=_why)(fn))


def cuda_forward(scores, pos_index, pos_mask, neg_mode, clip, need):
    dev = "cuda"
    stats = torch.ops.fastmi.critic_lse(
        scores.to(dev), None if pos_index is None else pos_index.to(dev),
        None if pos_mask is None else pos_mask.to(dev), neg_mode, clip, need)
    assert stats.is_cuda
    return stats


def cuda_backward(g, scores, pos_index, pos_mask, neg_mode, clip, need, stats):
    dev = "cuda"
    grad = torch.ops.fastmi.critic_lse_backward(
        g.to(dev), scores.to(dev), None if pos_index is None else pos_index.to(dev),
        None if pos_mask is None else pos_mask.to(dev), neg_mode, clip, need, stats.to(dev))
    assert grad.is_cuda
    return grad


@_apply_gpu
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("pos_kind", POS_KINDS)
def test_cuda_forward_backward_match_cpu(dtype, pos_kind):
    gen = torch.Generator().manual_seed(3)
    for args in cases(dtype, pos_kind):
        what = describe(*args)
        stats = cuda_forward(*args)
        ref = check_forward(stats, *args, what=what)
        g = make_grad_stats(args[0].shape[0], args[5], gen, dtype)
        st = ref.to(acc_dtype(dtype))
        grad = cuda_backward(g, *args, st)
        assert grad.dtype == dtype and grad.shape == args[0].shape and grad.is_contiguous()
        assert_matches(grad, cpu_backward(g, *args, st), what="backward " + what, **bwd_tolerance(args[0]))



@_apply_gpu
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", [(3, 5000), (300, 3000), (9000, 600), (2, 100003), (40, 513)])
def test_cuda_launch_shapes(dtype, shape):
    """Shapes that pick each launch plan: a block of 1024 / 256 threads per row, a warp per row."""
    gen = torch.Generator().manual_seed(4)
    n, m = shape
    scores = make_scores(n, m, "neginf", dtype, gen)
    for pos_index, pos_mask in ((torch.randint(0, m, (n,), generator=gen), None),
                                (None, torch.rand(n, m, generator=gen) < 0.05)):
        for neg_mode in (0, 1, 2):
            args = (scores, pos_index, pos_mask, neg_mode, 2.0, ALL)
            what = describe(*args)
            ref = check_forward(cuda_forward(*args), *args, what=what)
            g = make_grad_stats(n, ALL, gen, dtype)
            st = ref.to(acc_dtype(dtype))
            assert_matches(cuda_backward(g, *args, st), cpu_backward(g, *args, st), what="backward " + what,
                           **bwd_tolerance(scores))


@_apply_gpu
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_cuda_misaligned_and_noncontiguous(dtype):
    gen = torch.Generator().manual_seed(5)
    n, m = 37, 45
    for off in (1, 2, 3):
        flat = make_scores(1, n * m + off, "normal", dtype, gen)[0]
        base = flat.cuda()[off:].view(n, m)  # rows start off 16-byte boundaries
        mask = torch.rand(n, m, generator=gen) < 0.3
        for neg_mode in (0, 1, 2):
            args = (base.cpu(), None, mask, neg_mode, math.inf, ALL)
            stats = torch.ops.fastmi.critic_lse(base, None, mask.cuda(), neg_mode, math.inf, ALL)
            ref = check_forward(stats, *args, what=f"offset {off}")
            g = make_grad_stats(n, ALL, gen, dtype)
            st = ref.to(acc_dtype(dtype))
            grad = torch.ops.fastmi.critic_lse_backward(g.cuda(), base, None, mask.cuda(), neg_mode, math.inf, ALL,
                                                        st.cuda())
            assert grad.is_contiguous()
            assert_matches(grad, cpu_backward(g, *args, st), what=f"backward offset {off}", **bwd_tolerance(args[0]))
    # a transposed (non-contiguous) view
    x = make_scores(m, n, "normal", dtype, gen).cuda().t()
    idx = torch.randint(0, m, (n,), generator=gen)
    stats = torch.ops.fastmi.critic_lse(x, idx.cuda(), None, 1, 1.0, ALL)
    check_forward(stats, x.cpu().contiguous(), idx, None, 1, 1.0, ALL, what="transposed")


@_apply_gpu
def test_cuda_empty_and_errors():
    x = torch.randn(0, 0, device="cuda")
    assert torch.ops.fastmi.critic_lse(x, None, None, 0, 1.0, ALL).shape == (NUM_STATS, 0)
    x = torch.randn(4, 0, device="cuda")
    stats = torch.ops.fastmi.critic_lse(x, None, torch.zeros(4, 0, dtype=torch.bool, device="cuda"), 0, 1.0, ALL)
    ref = cpu_forward(x.cpu(), None, torch.zeros(4, 0, dtype=torch.bool), 0, 1.0, ALL)
    assert_matches(stats, ref, rtol=0, atol=0, what="m = 0")
    with pytest.raises(RuntimeError):
        torch.ops.fastmi.critic_lse(torch.randn(3, 4, device="cuda"), None, None, 0, 1.0, ALL)  # diag, not square
    with pytest.raises(RuntimeError):
        torch.ops.fastmi.critic_lse(torch.randn(3, 3, device="cuda"), None, None, 3, 1.0, ALL)  # neg_mode
    with pytest.raises(RuntimeError):
        torch.ops.fastmi.critic_lse(torch.randn(3, 3, device="cuda"), torch.zeros(3, dtype=torch.long), None, 0, 1.0,
                                    ALL)  # index on another device
    with pytest.raises(RuntimeError):
        torch.ops.fastmi.critic_lse(torch.randn(3, 3, device="cuda", dtype=torch.float64).to(torch.int32), None, None,
                                    0, 1.0, ALL)


@_apply_gpu
def test_cuda_out_of_range_index_asserts():
    """Out of range pos_index: a device-side assert (in a subprocess: it poisons the CUDA context)."""
    code = textwrap.dedent("""
        import os, sys, torch, fastmi._C
        s = torch.randn(4, 5, device="cuda")
        idx = torch.tensor([0, 1, 9, 2], device="cuda")
        try:
            torch.ops.fastmi.critic_lse(s, idx, None, 0, 1.0, 63)
            torch.cuda.synchronize()
            rc = 1
        except RuntimeError as exc:
            print("raised", exc)
            rc = 0
        sys.stdout.flush()
        os._exit(rc)  # skip the teardown of the broken CUDA context
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
