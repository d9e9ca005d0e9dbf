"""Triton kernels of the critic_lse family (kernels/critic_lse.py) against a dense float64 torch
computation of the statistics and of their gradient, and against the C++ op (torch.ops.fastmi).

Without CUDA the kernels run through the Triton interpreter on CPU tensors (tests/conftest.py sets
TRITON_INTERPRET=1), so the shapes stay small.
"""
import math

import pytest
import torch

triton = pytest.importorskip("triton")
kern = pytest.importorskip("fastmi.kernels.critic_lse")
critic_lse_fwd, critic_lse_bwd = kern.critic_lse_fwd, kern.critic_lse_bwd

try:
    import fastmi._C  # noqa: F401

    CPP = torch.ops.fastmi.critic_lse, torch.ops.fastmi.critic_lse_backward
except Exception:  # the extension is not built: only the dense reference is used
    CPP = None

# The interpreter's numpy warns where lanes outside the sets overflow (exp(x - LSE) of an excluded
# column) or meet inf - inf; those lanes are masked out, and the results are what is checked.
pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning:triton.runtime.interpreter")

DEV = "cuda" if torch.cuda.is_available() else "cpu"
INF = float("inf")
ALL = 63
TOL = {torch.float32: 2e-6, torch.float64: 1e-14}
gpu = pytest.mark.gpu
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


# ----------------------------------------------------------------------------------------------
# dense float64 reference
def sets(n, m, pos_index, pos_mask, neg_mode, device=DEV):
    """(P, N): bool [n, m] masks of the positives and the negatives."""
    if pos_index is not None:
        P = torch.zeros(n, m, dtype=torch.bool, device=device)
        P[torch.arange(n, device=device), pos_index] = True
    elif pos_mask is not None:
        P = pos_mask.clone()
    else:
        P = torch.eye(n, m, dtype=torch.bool, device=device)
    N = {0: torch.ones_like(P), 1: ~P, 2: ~torch.eye(n, m, dtype=torch.bool, device=device)}[neg_mode]
    return P, N


def softplus(x):
    return x.clamp_min(0) + torch.log1p(torch.exp(-x.abs()))


def ref_forward(S, P, N, clip, need):
    S = S.double()
    ninf = torch.tensor(-INF, dtype=S.dtype, device=S.device)
    cS = S.clamp(-clip, clip)
    stats = torch.stack([
        torch.logsumexp(torch.where(N, S, ninf), 1),
        torch.logsumexp(torch.where(N, cS, ninf), 1),
        torch.where(N, softplus(S), 0.0).sum(1),
        torch.where(P, S, 0.0).sum(1),
        torch.where(P, softplus(-S), 0.0).sum(1),
        torch.where(P, cS, 0.0).sum(1),
    ])
    keep = torch.tensor([(need >> k) & 1 for k in range(6)], dtype=torch.bool, device=S.device)
    return torch.where(keep[:, None], stats, 0.0)


def ref_backward(G, S, P, N, clip, need, stats):
    S, G, st = S.double(), G.double(), stats.double()
    inside = (S >= -clip) & (S <= clip)
    g = [G[k][:, None] for k in range(6)]
    neg = torch.zeros_like(S)
    # a row whose (clipped) lse is +-inf adds nothing through it: exp(S - lse) = 0 at finite entries
    live = [(g[k] != 0) & (st[k][:, None].abs() != INF) for k in range(2)]
    if need & 1:
        neg = neg + torch.where(live[0], g[0] * torch.exp(S - st[0][:, None]), 0.0)
    if need & 2:
        neg = neg + torch.where(inside & live[1], g[1] * torch.exp(S.clamp(-clip, clip) - st[1][:, None]), 0.0)
    if need & 4:
        neg = neg + torch.where(g[2] != 0, g[2] * torch.sigmoid(S), 0.0)
    pos = torch.zeros_like(S)
    if need & 8:
        pos = pos + g[3]
    if need & 16:
        pos = pos - g[4] * torch.sigmoid(-S)
    if need & 32:
        pos = pos + torch.where(inside, g[5], 0.0)
    return torch.where(N, neg, 0.0) + torch.where(P, pos, 0.0)


def magnitude(S, P, N):
    """Per statistic and row, a scale for the absolute error of a float computation of it."""
    A = S.double().abs().nan_to_num(0.0, posinf=0.0, neginf=0.0)
    lse = 1 + torch.where(N, A, 0.0).amax(1) + math.log(S.shape[1] + 1)
    sp = 1 + torch.where(N, A, 0.0).sum(1)
    pos = 1 + torch.where(P, A, 0.0).sum(1)
    return torch.stack([lse, lse, sp, pos, pos, pos])


def assert_close(out, ref, scale, tol, what):
    """|out - ref| <= tol * scale where ref is finite; identical inf / NaN elsewhere."""
    out, ref, scale = out.double().cpu(), ref.double().cpu(), scale.double().cpu()
    assert out.shape == ref.shape, what
    assert torch.equal(out.isnan(), ref.isnan()), f"{what}: NaN positions differ\n{out}\n{ref}"
    inf = ref.isinf()
    assert torch.equal(out[inf], ref[inf]), f"{what}: infinities differ\n{out}\n{ref}"
    fin = ref.isfinite()
    err = (out[fin] - ref[fin]).abs() / (tol * scale.expand_as(ref)[fin])
    assert err.numel() == 0 or err.max() <= 1, f"{what}: error {err.max():.3g} x tolerance\n{out}\n{ref}"


# ----------------------------------------------------------------------------------------------
# one full check: forward and backward against the reference and the C++ op
def make_positives(kind, n, m, gen, device=DEV):
    if kind == "index":
        return torch.randint(0, m, (n,), generator=gen).to(device), None
    if kind == "mask":
        mask = torch.rand(n, m, generator=gen) < 0.3
        if n > 1:
            mask[0] = False  # a row without positives
        if n > 2:
            mask[2] = True  # a row that is all positives (no negatives with neg_mode 1)
        return None, mask.to(device)
    return None, None


def check(S, pos_index, pos_mask, neg_mode, clip, need, G=None, tol=None, gen=None):
    n, m = S.shape
    tol = tol or TOL[S.dtype]
    P, N = sets(n, m, pos_index, pos_mask, neg_mode, S.device)
    stats = critic_lse_fwd(S, pos_index, pos_mask, neg_mode, clip, need)
    assert stats.shape == (6, n) and stats.dtype == (torch.float64 if S.dtype == torch.float64 else torch.float32)
    mag = magnitude(S, P, N)
    assert_close(stats, ref_forward(S, P, N, clip, need), mag, tol, "forward vs reference")

    if G is None:
        G = torch.randn(6, n, generator=gen, dtype=torch.float64).to(device=S.device, dtype=stats.dtype)
    grad = critic_lse_bwd(G, S, pos_index, pos_mask, neg_mode, clip, need, stats)
    assert grad.shape == S.shape and grad.dtype == S.dtype and grad.is_contiguous()
    gscale = (1 + G.double().abs().sum(0))[:, None]
    ref = ref_backward(G, S, P, N, clip, need, stats)
    assert_close(grad, ref, gscale, tol, "backward vs reference")
    outside = ~(P | N)
    assert (grad[outside] == 0).all(), "entries in neither set must get exactly 0"

    if CPP is not None and S.dtype in (torch.float32, torch.float64):
        cpu = lambda t: None if t is None else t.cpu()  # noqa: E731
        args = (cpu(pos_index), cpu(pos_mask), neg_mode, clip, need)
        c_stats = CPP[0](S.cpu(), *args)
        assert_close(stats, c_stats, mag, tol, "forward vs C++")
        c_grad = CPP[1](G.cpu(), S.cpu(), *args, stats.cpu())
        assert_close(grad, c_grad, gscale, tol, "backward vs C++")
    return stats, grad


# ----------------------------------------------------------------------------------------------
def _cases():
    shapes = [(1, 1), (2, 2), (3, 3), (17, 17), (129, 70)]
    for kind in ("diag", "index", "mask"):
        for neg_mode in (0, 1, 2):
            for n, m in shapes:
                if kind == "diag" and n != m:
                    continue
                for clip in (INF, 1.5):
                    yield pytest.param(kind, neg_mode, n, m, clip, torch.float32,
                                       id=f"{kind}-neg{neg_mode}-{n}x{m}-clip{clip}-f32")
                if (n, m) in ((17, 17), (129, 70)):
                    yield pytest.param(kind, neg_mode, n, m, 0.5, torch.float64,
                                       id=f"{kind}-neg{neg_mode}-{n}x{m}-clip0.5-f64")


@pytest.mark.parametrize("kind,neg_mode,n,m,clip,dtype", list(_cases()))
def test_matches_reference(kind, neg_mode, n, m, clip, dtype):
    gen = torch.Generator().manual_seed(n * 1000 + m * 10 + neg_mode)
    S = (2 * torch.randn(n, m, generator=gen, dtype=torch.float64)).to(DEV, dtype)
    pos_index, pos_mask = make_positives(kind, n, m, gen)
    check(S, pos_index, pos_mask, neg_mode, clip, ALL, gen=gen)


@pytest.mark.parametrize("need", [0, 1, 2, 4, 8, 16, 32, 3, 5, 6, 7, 56, 9, 42, 21, 48])
@pytest.mark.parametrize("kind", ["index", "mask"])
def test_need_subsets(need, kind):
    gen = torch.Generator().manual_seed(need)
    S = (3 * torch.randn(17, 23, generator=gen)).to(DEV)
    pos_index, pos_mask = make_positives(kind, 17, 23, gen)
    stats, grad = check(S, pos_index, pos_mask, 1, 2.0, need, gen=gen)
    for k in range(6):
        if not (need >> k) & 1:
            assert (stats[k] == 0).all()
    if need == 0:
        assert (grad == 0).all()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_non_contiguous(dtype):
    gen = torch.Generator().manual_seed(7)
    base = torch.randn(40, 34, generator=gen, dtype=torch.float64).to(DEV, dtype)
    views = {
        "transposed": base.t()[:, :17],  # [34, 17], stride (1, 34)
        "strided": base[::2, ::2],  # [20, 17], stride (68, 2)
    }
    for name, S in views.items():
        n, m = S.shape
        assert not S.is_contiguous()
        mask_base = torch.rand(m, n, generator=gen) < 0.3
        pos_mask = mask_base.to(DEV).t()  # a transposed (non-contiguous) mask too
        pos_index = torch.randint(0, m, (2 * n,), generator=gen).to(DEV)[::2]  # a strided index
        G = torch.randn(6, 1, generator=gen, dtype=torch.float64).to(DEV, dtype).expand(6, n)  # stride 0
        for pi, pm, neg_mode in ((pos_index, None, 1), (None, pos_mask, 1), (None, pos_mask, 2)):
            stats, grad = check(S, pi, pm, neg_mode, 1.0, ALL, G=G)
            c = S.contiguous()
            stats_c = critic_lse_fwd(c, pi, pm, neg_mode, 1.0, ALL)
            grad_c = critic_lse_bwd(G.contiguous(), c, pi, pm, neg_mode, 1.0, ALL, stats_c)
            assert torch.equal(stats, stats_c), name
            assert torch.equal(grad, grad_c), name


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("kind,neg_mode", [("diag", 1), ("index", 2), ("mask", 1), ("mask", 0)])
def test_large_values(dtype, kind, neg_mode):
    gen = torch.Generator().manual_seed(3)
    n, m = (33, 33) if kind == "diag" else (33, 70)
    S = ((torch.rand(n, m, generator=gen, dtype=torch.float64) * 2 - 1) * 1e4).to(DEV, dtype)
    S[1] = S[1] / 1e4 - 1e4  # a row of near-equal values far from 0
    pos_index, pos_mask = make_positives(kind, n, m, gen)
    stats, _ = check(S, pos_index, pos_mask, neg_mode, 50.0, ALL, gen=gen)
    has_negatives = sets(n, m, pos_index, pos_mask, neg_mode)[1].any(1)
    assert stats[:, has_negatives].isfinite().all()


def test_streaming_over_column_tiles(monkeypatch):
    # Small tiles force the online max / sum rescaling over several column tiles.
    monkeypatch.setattr(kern, "_MAX_TILE", 32)
    gen = torch.Generator().manual_seed(11)
    n, m = 9, 100
    S = torch.randn(n, m, generator=gen, dtype=torch.float64) * 5
    S[0] = torch.linspace(-50, 50, m)  # max in the last tile
    S[1] = torch.linspace(50, -50, m)  # max in the first tile
    S[2, :40] = -INF  # first tiles all -inf, then finite
    S[3, :40] = -1e4
    S[3, 40:] = 1e4  # the rescale factor underflows to 0
    S[4, 90:] = INF  # +inf in the last tile
    S[5] = -INF  # an all -inf row
    for dtype in (torch.float32, torch.float64):
        Sd = S.to(DEV, dtype)
        pos_index, pos_mask = make_positives("mask", n, m, gen)
        check(Sd, pos_index, pos_mask, 0, 20.0, ALL, gen=gen)
        check(Sd, torch.arange(n, device=DEV) * 7, None, 1, INF, ALL, gen=gen)


@pytest.mark.parametrize("kind,neg_mode", [("diag", 0), ("diag", 1), ("index", 2), ("mask", 1)])
@pytest.mark.parametrize("clip", [INF, 3.0])
def test_special_values(kind, neg_mode, clip):
    gen = torch.Generator().manual_seed(5)
    n = m = 9
    S = torch.randn(n, m, generator=gen, dtype=torch.float64)
    S[0, 3] = S[0, 5] = -INF  # rows with -inf entries
    S[1, ::2] = -INF
    S[2] = -INF  # an all -inf row
    S[3, 4] = INF  # +inf
    S[4, 1] = float("nan")  # NaN propagates
    S[5] = 1e4
    S[6, 0] = -1e4
    S[6, 2], S[6, 5] = INF, float("nan")  # NaN wins over +inf
    S[8] = -INF  # an all -inf row whose grads are 0
    pos_index, pos_mask = make_positives(kind, n, m, gen)
    N = sets(n, m, pos_index, pos_mask, neg_mode)[1]
    G = torch.randn(6, n, generator=gen, dtype=torch.float64)
    G[:, 7:] = 0  # rows whose grads are 0 get no N_i term at all (no NaN from exp(-inf - LSE))
    for dtype in (torch.float32, torch.float64):
        Sd = S.to(DEV, dtype)
        Gd = G.to(DEV, torch.float64 if dtype == torch.float64 else torch.float32)
        stats, grad = check(Sd, pos_index, pos_mask, neg_mode, clip, ALL, G=Gd)
        assert stats[0, 2] == -INF and stats[2, 2] == 0  # LSE, SP of the all -inf row
        assert stats[0, 3] == INF
        if N[4, 1]:
            assert stats[0, 4].isnan()
        assert grad[7:].isfinite().all()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_softplus_tails_relative_accuracy(dtype):
    # SP / PSP of far tails are tiny (exp(-x) ~ 1e-30): log1p must keep their relative precision.
    gen = torch.Generator().manual_seed(9)
    S = -(10 + 60 * torch.rand(5, 5, generator=gen, dtype=torch.float64))
    S.diagonal().copy_(-S.diagonal())  # positives far to the right: softplus(-S_ii) tiny
    S = S.to(DEV, dtype)
    stats = critic_lse_fwd(S, None, None, 1, INF, ALL)
    P, N = sets(5, 5, None, None, 1)
    ref = ref_forward(S, P, N, INF, ALL)
    rtol = 4e-6 if dtype == torch.float32 else 1e-13
    torch.testing.assert_close(stats[[2, 4]].double().cpu(), ref[[2, 4]].cpu(), rtol=rtol, atol=0)


def test_reference_backward_is_the_gradient():
    # The dense reference backward is the autograd gradient of the dense reference forward.
    gen = torch.Generator().manual_seed(2)
    n, m = 6, 8
    S = torch.randn(n, m, generator=gen, dtype=torch.float64) * 2
    for pos_index, pos_mask, neg_mode in ((None, torch.rand(n, m, generator=gen) < 0.4, 1),
                                         (torch.randint(0, m, (n,), generator=gen), None, 2)):
        P, N = sets(n, m, pos_index, pos_mask, neg_mode, "cpu")
        G = torch.randn(6, n, generator=gen, dtype=torch.float64)
        x = S.clone().requires_grad_()
        stats = ref_forward(x, P, N, 1.0, ALL)
        (auto,) = torch.autograd.grad((stats * G).sum(), x)
        torch.testing.assert_close(ref_backward(G, S, P, N, 1.0, ALL, stats.detach()), auto)


def test_empty_and_errors():
    S = torch.randn(0, 5, device=DEV)
    assert critic_lse_fwd(S, None, torch.zeros(0, 5, dtype=torch.bool, device=DEV), 0, INF, ALL).shape == (6, 0)
    S = torch.randn(3, 4, device=DEV)
    with pytest.raises(RuntimeError):
        critic_lse_fwd(S, None, None, 0, INF, ALL)  # the diagonal needs a square matrix
    with pytest.raises(RuntimeError):
        critic_lse_fwd(S, torch.zeros(3, dtype=torch.long, device=DEV),
                       torch.zeros(3, 4, dtype=torch.bool, device=DEV), 0, INF, ALL)
    with pytest.raises(RuntimeError):
        critic_lse_fwd(S[None], None, None, 0, INF, ALL)
    with pytest.raises(RuntimeError):
        critic_lse_fwd(S.t().contiguous(), None, None, 3, INF, ALL)
    # pos_index is not range-checked on the host: an out-of-range index gives NaN positive statistics
    stats = critic_lse_fwd(S, torch.tensor([0, 4, 1], device=DEV), None, 1, INF, ALL)
    assert stats[3:, 1].isnan().all() and stats[:, [0, 2]].isfinite().all()


def test_clip_is_exact_in_float64():
    # clip travels as three fp32 parts: a score exactly at tau = 0.1 (a double) is inside.
    S = torch.full((2, 2), 0.1, dtype=torch.float64, device=DEV)
    S[1, 1] = math.nextafter(0.1, 1.0)
    stats = critic_lse_fwd(S, None, None, 0, 0.1, ALL)
    G = torch.zeros(6, 2, dtype=torch.float64, device=DEV)
    G[5] = 1.0
    grad = critic_lse_bwd(G, S, None, None, 0, 0.1, ALL, stats)
    assert grad[0, 0] == 1.0 and grad[1, 1] == 0.0
    assert stats[5, 0] == 0.1 and stats[5, 1] == 0.1


# ----------------------------------------------------------------------------------------------
# half precision inputs, fp32 accumulation: small shapes everywhere, larger ones on CUDA
def _check_half(dtype, kind, neg_mode, n, m):
    gen = torch.Generator().manual_seed(1)
    S = (4 * torch.randn(n, m, generator=gen)).to(DEV, dtype)
    pos_index, pos_mask = make_positives(kind, n, m, gen)
    P, N = sets(n, m, pos_index, pos_mask, neg_mode)
    stats = critic_lse_fwd(S, pos_index, pos_mask, neg_mode, 2.0, ALL)
    assert stats.dtype == torch.float32
    assert_close(stats, ref_forward(S, P, N, 2.0, ALL), magnitude(S, P, N), 2e-5, "half forward")
    G = torch.randn(6, n, generator=gen).to(DEV)
    grad = critic_lse_bwd(G, S, pos_index, pos_mask, neg_mode, 2.0, ALL, stats)
    assert grad.dtype == dtype
    ref = ref_backward(G, S, P, N, 2.0, ALL, stats)
    assert_close(grad, ref.to(dtype), (1 + G.abs().sum(0))[:, None], 1e-2, "half backward")


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("kind,neg_mode", [("diag", 0), ("mask", 1)])
def test_half_inputs_small(dtype, kind, neg_mode):
    _check_half(dtype, kind, neg_mode, 17, 17)


@gpu
@needs_cuda
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("kind,neg_mode", [("diag", 0), ("index", 1), ("mask", 1), ("mask", 2)])
def test_half_inputs(dtype, kind, neg_mode):
    _check_half(dtype, kind, neg_mode, 257, 257 if kind == "diag" else 5000)


@gpu
@needs_cuda
def test_large_fp32_on_gpu():
    gen = torch.Generator().manual_seed(4)
    n, m = 300, 20000  # several column tiles, m not a multiple of 16
    S = (3 * torch.randn(n, m, generator=gen)).to(DEV)
    check(S, torch.randint(0, m, (n,), generator=gen).to(DEV), None, 1, 2.0, ALL, tol=1e-5, gen=gen)
