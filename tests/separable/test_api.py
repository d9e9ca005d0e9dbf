"""The separable family: infonce/dv/nwj_separable on embeddings against the dense float64 reference
(x @ y.T / temperature, then the critic_lse reference), every backend; gradcheck, opcheck, compile,
determinism, bad input, extreme temperatures."""
import math

import pytest
import torch

import fastmi
import fastmi.functional as F
from fastmi import nn as fnn
import oracle as R

from helpers import GPU, fused, needs, on

FUSED = fused("separable")
needs_cpu = needs("separable", "cpu")
needs_triton = needs("separable", "triton")


def data(n, m, d, *, seed=0, dtype=torch.float64, scale=1.0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(n, d, generator=g, dtype=dtype) * scale, torch.randn(m, d, generator=g, dtype=dtype) * scale,
            torch.randint(0, m, (n,), generator=g))


def run(fn_name, x, y, backend, *, learn_t=False, **kw):
    """(loss, mi, grads of x, y[, temperature]) for one call; backend=None runs the dense reference."""
    leaves = [on(backend, x).clone().requires_grad_(True), on(backend, y).clone().requires_grad_(True)]
    kw = {k: on(backend, v) for k, v in kw.items()}
    if learn_t:
        leaves.append(on(backend, torch.tensor(kw.pop("temperature", 1.0), dtype=x.dtype)).requires_grad_(True))
        kw["temperature"] = leaves[2]
    if backend is None:
        out = getattr(R, fn_name)(leaves[0], leaves[1], **kw)
    else:
        out = getattr(F, fn_name)(leaves[0], leaves[1], backend=backend, **kw)
    grads = torch.autograd.grad(out.loss, leaves)
    return out.loss.detach().cpu(), out.mi.cpu(), [g.cpu() for g in grads]


def assert_matches(fn_name, x, y, backend, rtol=1e-9, atol=1e-10, **kw):
    got = run(fn_name, x, y, backend, **kw)
    ref = run(fn_name, x, y, None, **kw)
    torch.testing.assert_close(got[0], ref[0], rtol=rtol, atol=atol)
    torch.testing.assert_close(got[1], ref[1], rtol=rtol, atol=atol, equal_nan=True)
    for a, b in zip(got[2], ref[2]):
        torch.testing.assert_close(a, b, rtol=rtol, atol=atol)


# (function, options, n, m) — sizes not divisible by any tile (256 on CPU, 32/64 in Triton), n != m.
CASES = [
    ("infonce_separable", {}, 1, 1),
    ("infonce_separable", {}, 37, 37),
    ("infonce_separable", {"temperature": 0.07, "normalize": True}, 67, 67),
    ("infonce_separable", {"symmetric": True, "temperature": 0.5}, 67, 67),
    ("infonce_separable", {"symmetric": True, "normalize": True, "reg_weight": 0.2, "reg_target": 1.0}, 45, 45),
    ("infonce_separable", {"positives": "index"}, 45, 71),
    ("infonce_separable", {"positives": "index", "negatives": "off_positive"}, 45, 71),
    ("infonce_separable", {"negatives": "off_diagonal"}, 40, 40),
    ("dv_separable", {}, 37, 37),
    ("dv_separable", {"temperature": 2.0, "reg_weight": 0.3}, 50, 50),
    ("dv_separable", {"positives": "index"}, 45, 71),
    ("nwj_separable", {}, 37, 37),
    ("nwj_separable", {"normalize": True, "temperature": 0.25, "reg_weight": 0.1}, 50, 50),
    ("nwj_separable", {"positives": "index", "negatives": "off_positive"}, 45, 71),
    # k negatives per anchor: shifted (an int) or an n x k index, on the compact n x (1 + k) matrix
    ("infonce_separable", {"negatives": 5, "temperature": 0.3}, 37, 37),
    ("nwj_separable", {"negatives": 1, "normalize": True}, 37, 37),
    ("dv_separable", {"positives": "index", "negatives": "sampled"}, 45, 71),
    ("infonce_separable", {"positives": "index", "negatives": "sampled", "reg_weight": 0.2}, 45, 71),
]


def _resolve(opts, idx):
    sampled = torch.remainder(idx[:, None] * 7 + torch.arange(6)[None, :] * 5, 71)  # n x 6, some repeats
    return {k: (idx if v == "index" else sampled if v == "sampled" else v) for k, v in opts.items()}


@pytest.mark.parametrize("backend", FUSED)
@pytest.mark.parametrize("fn_name,opts,n,m", CASES)
def test_matches_dense_reference_float64(backend, fn_name, opts, n, m):
    x, y, idx = data(n, m, 19)
    assert_matches(fn_name, x, y, backend, **_resolve(opts, idx))


@needs_cpu
def test_large_sizes_cross_tiles_cpu():
    # several 256-tiles and super-blocks (512) in both directions, with exclusion and column stats
    x, y, idx = data(1300, 1300, 24, seed=1)
    assert_matches("infonce_separable", x, y, "cpu", symmetric=True, temperature=0.3)
    x, y, idx = data(1100, 2100, 8, seed=2)
    assert_matches("dv_separable", x, y, "cpu", positives=idx)


@pytest.mark.parametrize("backend", FUSED)
@pytest.mark.parametrize("fn_name", ["infonce_separable", "dv_separable", "nwj_separable"])
def test_learnable_temperature_gradient(backend, fn_name):
    x, y, _ = data(33, 33, 7, seed=3)
    kw = {"symmetric": True} if fn_name == "infonce_separable" else {}
    assert_matches(fn_name, x, y, backend, learn_t=True, temperature=0.3, normalize=True, **kw)


@pytest.mark.parametrize("backend", FUSED)
def test_extreme_temperature_is_finite_and_exact(backend):
    # temperature 0.01 on the cosine critic: scores up to +-100, exp overflows without max-shifting
    x, y, _ = data(40, 40, 9, seed=4)
    assert_matches("infonce_separable", x, y, backend, temperature=0.01, normalize=True, symmetric=True)
    x32, y32 = x.float(), y.float()
    loss, mi, grads = run("infonce_separable", x32 * 1e3, y32 * 1e3, backend, temperature=0.01)
    assert torch.isfinite(loss) and all(torch.isfinite(g).all() for g in grads)


@pytest.mark.parametrize("backend", FUSED)
def test_float32_matches_float64_reference(backend):
    x, y, idx = data(70, 70, 33, seed=5)
    prev = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("highest")
    try:
        got = run("infonce_separable", x.float(), y.float(), backend, temperature=0.1, normalize=True, symmetric=True)
    finally:
        torch.set_float32_matmul_precision(prev)
    ref = run("infonce_separable", x, y, None, temperature=0.1, normalize=True, symmetric=True)
    torch.testing.assert_close(got[0].double(), ref[0], rtol=1e-5, atol=1e-5)
    for a, b in zip(got[2], ref[2]):
        torch.testing.assert_close(a.double(), b, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("backend", FUSED)
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_inputs_error_no_worse_than_reference(backend, dtype):
    x, y, _ = data(48, 48, 32, seed=6, dtype=torch.float32)
    xh, yh = x.to(dtype), y.to(dtype)
    exact = run("infonce_separable", xh.double(), yh.double(), None, temperature=0.2, symmetric=True)
    ref = run("infonce_separable", xh, yh, None, temperature=0.2, symmetric=True)
    got = run("infonce_separable", xh, yh, backend, temperature=0.2, symmetric=True)
    assert got[0].dtype == torch.float32 and got[2][0].dtype == dtype
    ref_err = (ref[0].double() - exact[0]).abs().item()
    assert (got[0].double() - exact[0]).abs().item() <= ref_err + 1e-3
    for g, r, e in zip(got[2], ref[2], exact[2]):
        assert (g.double() - e).abs().max() <= (r.double() - e).abs().max() + 2e-3


@needs_cpu
def test_gradcheck_cpu_kernel():
    x, y, idx = data(11, 13, 5, seed=7)
    x.requires_grad_(True)
    y.requires_grad_(True)
    g = torch.randn(11, dtype=torch.float64)
    h = torch.randn(13, dtype=torch.float64)
    sa = (torch.rand(11, dtype=torch.float64) + 0.5).requires_grad_(True)
    sb = (torch.rand(13, dtype=torch.float64) + 0.5).requires_grad_(True)
    q = torch.randn(11, dtype=torch.float64)
    for exclude, pos, cols in [(0, None, True), (2, idx, True), (2, idx, False), (1, idx, False), (0, idx, True)]:
        def f(a, b, sa, sb):
            r, c, p = torch.ops.fastmi.separable_lse(a, b, sa, sb, pos, exclude, cols)
            return (r * g).sum() + ((c * h).sum() if cols else 0) + (p * q).sum()
        assert torch.autograd.gradcheck(f, (x, y, sa, sb))
    xs, ys, _ = data(9, 9, 4, seed=8)
    xs.requires_grad_(True)
    assert torch.autograd.gradcheck(
        lambda a, b: F.infonce_separable(a, b, temperature=0.5, normalize=True, symmetric=True, backend="cpu").loss,
        (xs, ys.requires_grad_(True)))


@needs_cpu
def test_cpu_results_do_not_depend_on_thread_count():
    x, y, _ = data(2100, 2100, 16, seed=9, dtype=torch.float32)
    threads = torch.get_num_threads()
    outs = []
    for t in (1, max(2, threads)):
        torch.set_num_threads(t)
        sa, sb = torch.full((2100,), 0.5), torch.ones(2100)
        r, c, p = torch.ops.fastmi.separable_lse(x, y, sa, sb, None, 1, True)
        grads = torch.ops.fastmi.separable_lse_backward(torch.ones_like(r), torch.ones_like(c), -torch.ones_like(p),
                                                        x, y, sa, sb, None, 1, True, r, c)
        outs.append((r, c, p) + tuple(grads))
    torch.set_num_threads(threads)
    for a, b in zip(*outs):
        assert torch.equal(a, b)


def _op_samples(dtype=torch.float64):
    x, y, idx = data(10, 12, 6, seed=10, dtype=dtype)
    sdt = torch.float64 if dtype == torch.float64 else torch.float32
    sa, sb = torch.rand(10, dtype=sdt) + 0.5, torch.rand(12, dtype=sdt) + 0.5
    return [(x.requires_grad_(), y.requires_grad_(), sa.requires_grad_(), sb.requires_grad_(), None, 0, True),
            (x, y, sa, sb, idx, 2, False),
            (x[:, :5].clone(), y[:10, :5].clone(), sa, sb[:10].clone(), None, 1, True)]


@needs_cpu
def test_opcheck_cpu():
    for args in _op_samples():
        torch.library.opcheck(torch.ops.fastmi.separable_lse.default, args)
        r, c, p = torch.ops.fastmi.separable_lse(*[a.detach() if isinstance(a, torch.Tensor) else a for a in args])
        bargs = ((torch.randn_like(r), torch.randn_like(c), torch.randn_like(p))
                 + tuple(a.detach() for a in args[:4]) + args[4:] + (r, c))
        torch.library.opcheck(torch.ops.fastmi.separable_lse_backward.default, bargs)


@needs_triton
def test_opcheck_triton():
    for args in _op_samples(torch.float32)[:2]:
        args = tuple(on("triton", a.detach()).requires_grad_(a.requires_grad) if isinstance(a, torch.Tensor) else a
                     for a in args)
        torch.library.opcheck(torch.ops.fastmi.separable_lse_triton.default, args)


@needs_cpu
@pytest.mark.parametrize("fn_name,kw", [("infonce_separable", {"symmetric": True, "normalize": True}),
                                        ("dv_separable", {"reg_weight": 0.1}),
                                        ("nwj_separable", {})])
def test_torch_compile_fullgraph(fn_name, kw):
    fn = getattr(F, fn_name)
    x, y, _ = data(33, 33, 8, seed=11, dtype=torch.float32)
    t = torch.tensor(0.5, requires_grad=True)
    compiled = torch.compile(lambda a, b, tt: fn(a, b, temperature=tt, **kw), fullgraph=True)
    a1, b1 = x.clone().requires_grad_(), y.clone().requires_grad_()
    a2, b2 = x.clone().requires_grad_(), y.clone().requires_grad_()
    t2 = t.detach().clone().requires_grad_()
    out, ref = compiled(a1, b1, t), fn(a2, b2, temperature=t2, **kw)
    torch.testing.assert_close(out.mi, ref.mi)
    out.loss.backward()
    ref.loss.backward()
    for p, q in [(a1.grad, a2.grad), (b1.grad, b2.grad), (t.grad, t2.grad)]:
        torch.testing.assert_close(p, q, rtol=1e-4, atol=1e-6)


@needs_cpu
def test_memory_is_linear_no_n_by_n_tensor_is_built():
    # no single allocation through torch's CPU allocator comes near an n x n matrix (36 MB here):
    # the largest are the O(n d) inputs' copies and the 256 x 256 tiles.
    n, d = 3000, 16
    x, y, _ = data(n, n, d, seed=12, dtype=torch.float32)
    x.requires_grad_(True)
    y.requires_grad_(True)
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        F.infonce_separable(x, y, symmetric=True, backend="cpu").loss.backward()
    biggest = max(e.cpu_memory_usage for e in prof.events())
    assert biggest < n * n * 4 / 20, biggest


def test_double_backward_needs_reference():
    if not FUSED:
        pytest.skip("no fused backend")
    x, y, _ = data(8, 8, 3, seed=13)
    b = FUSED[0]
    x = on(b, x).requires_grad_(True)
    out = F.infonce_separable(x, on(b, y), backend=b)
    (gx,) = torch.autograd.grad(out.loss, x, retain_graph=True)
    assert torch.isfinite(gx).all()
    with pytest.raises(RuntimeError, match="second-order"):
        torch.autograd.grad(out.loss, x, create_graph=True)


# --- modules -------------------------------------------------------------------------------------


def test_modules_match_functional_and_learn_temperature():
    x, y, _ = data(20, 20, 6, seed=14, dtype=torch.float32)
    mod = fnn.InfoNCESeparable(temperature=0.2, learn_temperature=True, normalize=True, symmetric=True)
    out = mod(x, y)
    ref = F.infonce_separable(x, y, temperature=0.2, normalize=True, symmetric=True)
    torch.testing.assert_close(out.loss, ref.loss)
    out.loss.backward()
    assert mod.log_temperature.grad is not None and torch.isfinite(mod.log_temperature.grad)
    torch.testing.assert_close(fnn.DVSeparable(temperature=2.0)(x, y).mi, F.dv_separable(x, y, temperature=2.0).mi)
    torch.testing.assert_close(fnn.NWJSeparable()(x, y).mi, F.nwj_separable(x, y).mi)
    with pytest.raises(ValueError, match="temperature"):
        fnn.InfoNCESeparable(temperature=0.0)


def test_bound_is_capped_by_log_batch_and_detects_dependence():
    # InfoNCE <= log n; on strongly dependent pairs it approaches log n, on independent ones ~0.
    g = torch.Generator().manual_seed(15)
    n = 256
    x = torch.randn(n, 8, generator=g)
    dep = F.infonce_separable(x, x + 0.01 * torch.randn(n, 8, generator=g), temperature=0.05, normalize=True).mi
    ind = F.infonce_separable(x, torch.randn(n, 8, generator=g), temperature=0.05, normalize=True).mi
    assert dep <= math.log(n) + 1e-5 and dep > math.log(n) - 0.5
    assert ind < 0.5


# --- bad input -----------------------------------------------------------------------------------

X, Y = torch.randn(6, 4), torch.randn(6, 4)
BAD = [
    (lambda: F.infonce_separable(X, torch.randn(6, 5)), ValueError, "features"),
    (lambda: F.infonce_separable(X[0], Y), ValueError, "x must be 2-D"),
    (lambda: F.infonce_separable(X, Y, temperature=0.0), ValueError, "temperature"),
    (lambda: F.infonce_separable(X, Y, temperature=-1.0), ValueError, "temperature"),
    (lambda: F.infonce_separable(X, Y, temperature=float("inf")), ValueError, "temperature"),
    (lambda: F.infonce_separable(X, Y, temperature=torch.tensor(-0.5)), ValueError, "temperature"),
    (lambda: F.infonce_separable(X, Y, temperature=torch.ones(2)), TypeError, "temperature"),
    (lambda: F.dv_separable(X, Y, temperature="hot"), TypeError, "temperature"),
    (lambda: F.infonce_separable(torch.cat([X[:5], torch.zeros(1, 4)]), Y, normalize=True), ValueError, "zero-norm"),
    (lambda: F.nwj_separable(X, torch.zeros(6, 4), normalize=True), ValueError, "y has 6 zero-norm"),
    (lambda: F.infonce_separable(X, Y.double()), TypeError, "same dtype"),
    (lambda: F.infonce_separable(X.long(), Y.long()), TypeError, "floating"),
    (lambda: F.infonce_separable(X, torch.randn(7, 4)), ValueError, "square"),
    (lambda: F.infonce_separable(X, Y, positives=torch.zeros(6, 6, dtype=torch.bool)), TypeError, "mask"),
    (lambda: F.infonce_separable(X, Y, positives=torch.tensor([0, 1, 2, 3, 4, 9])), ValueError, "outside"),
    (lambda: F.infonce_separable(X, Y, positives=torch.arange(6), symmetric=True), ValueError, "symmetric"),
    (lambda: F.dv_separable(X[:1], Y[:1]), ValueError, "no negative"),
    (lambda: F.infonce_separable(X, Y, backend="cuda"), ValueError, "no 'cuda' kernel"),
    (lambda: F.infonce_separable(X, Y, backend="gpu"), ValueError, "backend must be one of"),
    (lambda: F.infonce_separable(torch.empty(0, 4), torch.empty(0, 4)), ValueError, "empty"),
]


@pytest.mark.parametrize("call,exc,msg", BAD)
def test_bad_input_names_the_argument(call, exc, msg):
    with pytest.raises(exc, match=msg):
        call()


@pytest.mark.skipif(not GPU, reason="needs CUDA")
def test_mixed_devices_error():
    with pytest.raises(ValueError, match="y is on"):
        F.infonce_separable(X.cuda(), Y)
