"""The softmax_stats family (Neural Bayes: nb_mim, nb_mi, nb_dms) through the public API, on every
fused backend, against the float64 reference: values, gradients, layouts, scales, extreme values,
collapsed units, bad input, determinism, modules. Kernel-level checks (gradcheck, opcheck, compile,
Theorem 2) are in test_softmax_stats_kernels.py."""
import math

import pytest
import torch

import fastmi
import fastmi.functional as F
import oracle as R

GPU = torch.cuda.is_available()
from helpers import fused, needs

FUSED = fused("softmax_stats")
needs_cpu = needs("softmax_stats", "cpu")


def on(backend, x):
    return x.to("cuda") if backend == "triton" and GPU else x


def states_of(shapes, gen, dtype=torch.float64, scale=2.0, channels_last=False):
    out = []
    for s in shapes:
        x = torch.randn(*s, generator=gen, dtype=dtype) * scale
        if channels_last and x.dim() == 4:
            x = x.to(memory_format=torch.channels_last)
        out.append(x)
    return out


def run(fn, states, backend, **kw):
    """(result, grads) of fn on fresh leaf copies of states."""
    xs = [on(backend, s).detach().clone().requires_grad_() for s in states]
    if backend == "reference":
        res = R.nb_mim(xs, **kw)
    else:
        res = fn(xs, backend=backend, **kw)
    res.loss.backward()
    return res, [x.grad.cpu() for x in xs]


def assert_matches(states, backend, rtol=1e-9, atol=1e-12, **kw):
    res, grads = run(F.nb_mim, states, backend, **kw)
    ref, rgrads = run(None, states, "reference", **kw)
    torch.testing.assert_close(res.loss.cpu().double(), ref.loss, rtol=rtol, atol=atol)
    torch.testing.assert_close(res.entropy.cpu().double(), ref.entropy, rtol=rtol, atol=atol)
    torch.testing.assert_close(res.prior.cpu().double(), ref.prior, rtol=rtol, atol=atol)
    for g, rg in zip(grads, rgrads):
        torch.testing.assert_close(g.double(), rg, rtol=rtol, atol=atol)


# The CIFAR CNN's maps (30, 13, 11, 3: pools 15, 6, 5, 1) at small B and C, odd and tiny shapes.
CPU_SHAPES = [
    [(3, 4, 30, 30)], [(4, 5, 13, 13)], [(3, 6, 11, 11)], [(5, 9, 3, 3)],
    [(2, 3, 1, 1)], [(5, 7, 2, 3)], [(1, 2, 5, 4)], [(3, 17, 7, 9)], [(6, 5)], [(1, 2)], [(70, 3, 3, 5)],
    [(3, 4, 6, 6), (3, 7, 3, 3), (3, 5)],
]
TRITON_SHAPES = [[(3, 4, 5, 5)], [(2, 3, 3, 3)], [(4, 5, 2, 3)], [(5, 3)], [(2, 6, 4, 4), (2, 3, 3, 3)]]


@needs_cpu
@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("prior", ["v2", "v1"])
@pytest.mark.parametrize("shapes", CPU_SHAPES, ids=str)
def test_cpu_matches_reference_float64(shapes, prior, channels_last):
    states = states_of(shapes, torch.Generator().manual_seed(1), channels_last=channels_last)
    assert_matches(states, "cpu", prior=prior, alpha=1.5)


@needs_cpu
@pytest.mark.parametrize("pool", [0, 1, 3, 5])
def test_cpu_pool_sizes(pool):
    states = states_of([(3, 4, 7, 8), (2, 5, 4, 4)], torch.Generator().manual_seed(2))
    assert_matches(states, "cpu", pool=pool)


@pytest.mark.skipif("triton" not in FUSED, reason="triton backend not available")
@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("shapes", TRITON_SHAPES, ids=str)
def test_triton_matches_reference_float64(shapes, channels_last):
    states = states_of(shapes, torch.Generator().manual_seed(3), channels_last=channels_last)
    assert_matches(states, "triton", prior="v2" if len(shapes) > 1 else "v1")


@pytest.mark.skipif("triton" not in FUSED, reason="triton backend not available")
def test_triton_pool_3_and_none():
    states = states_of([(2, 3, 7, 5)], torch.Generator().manual_seed(4))
    assert_matches(states, "triton", pool=3)
    assert_matches(states, "triton", pool=0)


@pytest.mark.parametrize("backend", FUSED)
def test_float32_against_float64_reference(backend):
    states = states_of([(6, 10, 9, 9), (6, 20, 3, 3)], torch.Generator().manual_seed(5))
    res, grads = run(F.nb_mim, [s.float() for s in states], backend)
    ref, rgrads = run(None, states, "reference")
    torch.testing.assert_close(res.loss.cpu().double(), ref.loss, rtol=1e-5, atol=1e-6)
    for g, rg in zip(grads, rgrads):
        torch.testing.assert_close(g.double(), rg, rtol=1e-4, atol=1e-7)


@pytest.mark.parametrize("backend", FUSED)
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_inputs(backend, dtype):
    """Computed in fp32: error no worse than the reference's own low-precision error (+ tol)."""
    states = states_of([(4, 6, 5, 5)], torch.Generator().manual_seed(6))
    low = [s.to(dtype) for s in states]
    exact = R.nb_mim([s.to(dtype).double() for s in states]).loss  # the same rounded inputs, exact math
    fused = F.nb_mim([on(backend, s) for s in low], backend=backend).loss.cpu().double()
    ref_low = R.nb_mim(low).loss.double()
    assert abs(fused - exact) <= abs(ref_low - exact) + 1e-5


@pytest.mark.parametrize("backend", FUSED + ["reference"])
@pytest.mark.parametrize("big", [1e4, -1e4])
def test_extreme_values_and_collapsed_units(backend, big):
    """Scores +-1e4: the softmax is one-hot, some batch marginals are exactly 0 or 1. The clamp keeps
    the loss and the gradient finite, and the fused value matches the reference."""
    x = torch.zeros(4, 3, 4, 4, dtype=torch.float64)
    x[:, 0] = big  # channel 0 wins (big > 0) or never wins (big < 0) at every position: E = 1 or 0
    x[0, 1, 0, 0] = 3e4  # one sample with a different winner
    res, grads = run(F.nb_mim, [x], backend) if backend != "reference" else run(None, [x], backend)
    assert torch.isfinite(res.loss) and all(torch.isfinite(g).all() for g in grads)
    if backend != "reference":
        ref, rgrads = run(None, [x], "reference")
        torch.testing.assert_close(res.loss.cpu(), ref.loss, rtol=1e-9, atol=1e-9)
        torch.testing.assert_close(grads[0], rgrads[0], rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("backend", FUSED)
def test_all_equal_logits(backend):
    """Uniform softmax: ent = log C, E = 1/C; v2 prior = log C - (C-1) log(1 - 1/C) (closed form)."""
    C = 5
    res = F.nb_mim([on(backend, torch.zeros(3, C, 4, 4, dtype=torch.float64))], backend=backend, alpha=0.0)
    rp = math.log(C) - (C - 1) * math.log(1 - 1 / C)
    torch.testing.assert_close(res.entropy.cpu(), torch.full((2,), math.log(C), dtype=torch.float64),
                               rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(res.prior.cpu(), torch.full((2,), rp, dtype=torch.float64), rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("backend", FUSED)
def test_non_contiguous_state(backend):
    base = torch.randn(4, 6, 9, 10, dtype=torch.float64)
    x = base[:, ::2, :, 1:]  # neither NCHW- nor channels-last-contiguous
    assert_matches([x], backend)


@needs_cpu
def test_deterministic_across_thread_counts():
    x = torch.randn(150, 8, 6, 6)  # three batch chunks
    old = torch.get_num_threads()
    try:
        outs = []
        for t in (1, max(2, old)):
            torch.set_num_threads(t)
            outs.append(torch.ops.fastmi.softmax_stats(x, 2, 1e-7))
    finally:
        torch.set_num_threads(old)
    for a, b in zip(*outs):
        assert torch.equal(a, b)


@pytest.mark.parametrize("backend", FUSED + ["reference"])
def test_nb_mi(backend):
    g = torch.Generator().manual_seed(7)
    x = torch.randn(6, 5, 3, 4, generator=g, dtype=torch.float64) * 3
    mi = F.nb_mi(on(backend, x), backend=backend).cpu()
    torch.testing.assert_close(mi, R.nb_mi(x), rtol=1e-9, atol=1e-12)
    assert 0 <= mi <= math.log(5)
    same = torch.randn(1, 5, 2, 2, generator=g, dtype=torch.float64).expand(4, 5, 2, 2)
    assert abs(F.nb_mi(on(backend, same.contiguous()), backend=backend).item()) < 1e-12  # z independent of x
    onehot = torch.eye(4, dtype=torch.float64) * 60  # 4 samples, 4 distinct deterministic codes
    torch.testing.assert_close(F.nb_mi(on(backend, onehot), backend=backend).cpu(),
                               torch.tensor(math.log(4), dtype=torch.float64), rtol=1e-9, atol=1e-9)


def test_nb_dms_values_and_scale():
    L = torch.zeros(7, 3, dtype=torch.float64)  # uniform softmax: f = g = 1 + eps
    torch.testing.assert_close(F.nb_dms(L), torch.tensor(2 * math.log(2), dtype=torch.float64), rtol=1e-6, atol=0)
    g = torch.Generator().manual_seed(8)
    x = torch.randn(9, 4, generator=g, dtype=torch.float64)
    torch.testing.assert_close(F.nb_dms(x, scale="paper"), F.nb_dms(x) / 2)
    # by hand, K = 2 (the binary partition)
    y = torch.randn(5, 2, generator=g, dtype=torch.float64)
    P = torch.softmax(y, 1)
    E = P.mean(0)
    f, h = P / E + 1e-7, (1 - P) / (1 - E) + 1e-7
    torch.testing.assert_close(F.nb_dms(y), (f * torch.log(1 + h / f) + h * torch.log(1 + f / h)).mean())


def test_nb_dms_gradient_flows_through_the_batch_mean():
    x = torch.randn(6, 3, dtype=torch.float64, requires_grad=True)
    F.nb_dms(x).backward()
    L = torch.softmax(x.detach().clone().requires_grad_(), 1)
    E = L.mean(0, keepdim=True).detach()  # what a detached mean would give
    f, h = L / E + 1e-7, (1 - L) / (1 - E) + 1e-7
    (f * torch.log1p(h / f) + h * torch.log1p(f / h)).mean().backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    assert torch.autograd.gradcheck(lambda z: F.nb_dms(z), (x.detach().requires_grad_(),))


def test_nb_dms_collapsed_unit_is_finite():
    x = torch.zeros(5, 3, dtype=torch.float64)
    x[:, 2] = -1e4  # unit 2 is never on: E_2 = 0
    x.requires_grad_()
    loss = F.nb_dms(x)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(x.grad).all()


def test_modules_match_functional():
    states = states_of([(3, 4, 5, 5), (3, 6)], torch.Generator().manual_seed(9))
    m = fastmi.nn.NeuralBayesMIM(alpha=3.0, prior="v1", pool=2)
    assert torch.equal(m(states).loss, F.nb_mim(states, alpha=3.0, prior="v1").loss)
    assert "prior='v1'" in repr(m)
    d = fastmi.nn.NeuralBayesDMS(scale="paper")
    assert torch.equal(d(states[1]), F.nb_dms(states[1], scale="paper"))


def test_result_layout():
    res = F.nb_mim([torch.randn(2, 3, 4, 4), torch.randn(2, 3)], pool=2)
    assert isinstance(res, fastmi.NBMIMResult)
    assert res.entropy.shape == (3,) and res.prior.shape == (3,)  # state 0, state 0 pooled, state 1
    assert not res.entropy.requires_grad


@pytest.mark.parametrize("backend", FUSED + ["reference"])
@pytest.mark.parametrize("bad", [math.nan, math.inf])
def test_non_finite_state_raises(backend, bad):
    x = torch.randn(3, 4, 5, 5)
    x[1, 2, 3, 4] = bad
    with pytest.raises(ValueError, match=r"states\[1\]"):
        F.nb_mim([torch.randn(3, 4, 5, 5), on(backend, x)], backend=backend)
    with pytest.raises(ValueError, match="state"):
        F.nb_mi(on(backend, x), backend=backend)
    with pytest.raises(ValueError, match="logits"):
        F.nb_dms(x[:, :, 3, 4])


def test_bad_input():
    x = torch.randn(3, 4, 5, 5)
    cases = [
        (lambda: F.nb_mim([]), TypeError, "states"),
        (lambda: F.nb_mim("x"), TypeError, "states"),
        (lambda: F.nb_mim([x, 3]), TypeError, r"states\[1\]"),
        (lambda: F.nb_mim([x[:, :1]]), ValueError, "C >= 2"),
        (lambda: F.nb_mim([x[:0]]), ValueError, "empty"),
        (lambda: F.nb_mim([x[0]]), ValueError, r"states\[0\] must be B x C"),
        (lambda: F.nb_mim([x.long()]), TypeError, "floating"),
        (lambda: F.nb_mim([x, x.to("meta")]), ValueError, r"states\[1\] is on meta"),
        (lambda: F.nb_mim([x], prior="v3"), ValueError, "prior"),
        (lambda: F.nb_mim([x], pool=-1), ValueError, "pool"),
        (lambda: F.nb_mim([x], pool=1.5), ValueError, "pool"),
        (lambda: F.nb_mim([x], eps=0.0), ValueError, "eps"),
        (lambda: F.nb_mim([x], alpha=math.inf), ValueError, "alpha"),
        (lambda: F.nb_mim([x], alpha="2"), TypeError, "alpha"),
        (lambda: F.nb_mim([x], backend="gpu"), ValueError, "backend"),
        (lambda: F.nb_mi(x[:, :1]), ValueError, "C >= 2"),
        (lambda: F.nb_mi(x.int()), TypeError, "state"),
        (lambda: F.nb_dms(x), ValueError, "logits must be 2-D"),
        (lambda: F.nb_dms(x[:, :1, 0, 0]), ValueError, "K >= 2"),
        (lambda: F.nb_dms(x[:, :, 0, 0], scale="half"), ValueError, "scale"),
        (lambda: F.nb_dms(x[:, :, 0, 0], eps=-1.0), ValueError, "eps"),
    ]
    for fn, exc, match in cases:
        with pytest.raises(exc, match=match):
            fn()


@pytest.mark.parametrize("backend", FUSED)
def test_double_backward_raises(backend):
    x = on(backend, torch.randn(2, 3, 4, 4, dtype=torch.float64)).requires_grad_()
    loss = F.nb_mim([x], backend=backend).loss
    (g,) = torch.autograd.grad(loss, x, create_graph=False)
    assert torch.isfinite(g).all()
    loss = F.nb_mim([x], backend=backend).loss
    with pytest.raises(RuntimeError, match="second-order"):
        torch.autograd.grad(loss, x, create_graph=True)
