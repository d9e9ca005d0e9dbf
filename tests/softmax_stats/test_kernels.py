"""softmax_stats kernels: gradcheck of the fused C++ path in float64, opcheck of every op, the ops
against a direct float64 computation of their outputs, torch.compile(fullgraph=True), Theorem 2
(the detached-log gradients equal the full ones), hypothesis shapes, the no-extension fallback."""
import os
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as TF
from hypothesis import given, settings
from hypothesis import strategies as st

import fastmi
import fastmi.functional as F
import oracle as R
from fastmi.softmax_stats import ops
from helpers import available, needs

GPU = torch.cuda.is_available()
HAS_TRITON = available("softmax_stats", "triton")
needs_cpu = needs("softmax_stats", "cpu")
needs_triton = needs("softmax_stats", "triton")
DEV = "cuda" if GPU else "cpu"


def direct_outputs(x, pool, eps):
    """The op's (ent, marg, marg_pool) computed directly in float64 from their definitions."""
    x = x.double()
    scales = [x] + ([TF.avg_pool2d(x, pool, pool)] if pool else [])
    ents, margs = [], []
    for z in scales:
        S = torch.softmax(z, 1)
        L = torch.log(S + eps) if eps > 0 else torch.log_softmax(z, 1)
        ents.append(torch.where(S == 0, torch.zeros_like(S), S * L).sum())
        margs.append(S.sum(0).reshape(x.shape[1], -1))
    if not pool:
        ents.append(torch.zeros((), dtype=x.dtype))
        margs.append(torch.zeros(x.shape[1], 0, dtype=x.dtype))
    return torch.stack(ents), margs[0], margs[1]


def op_of(backend):
    return torch.ops.fastmi.softmax_stats if backend == "cpu" else torch.ops.fastmi.softmax_stats_triton


BACKENDS = [pytest.param("cpu", marks=needs_cpu), pytest.param("triton", marks=needs_triton)]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("shape,pool,eps", [((3, 4, 5, 5), 2, 1e-7), ((2, 3, 7, 4), 3, 1e-3), ((4, 5, 3, 3), 0, 0.0),
                                            ((70, 3, 2, 2), 2, 1e-7)])
def test_op_outputs(backend, channels_last, shape, pool, eps):
    x = torch.randn(*shape, dtype=torch.float64) * 3
    if channels_last:
        x = x.to(memory_format=torch.channels_last)
    xd = x.to(DEV) if backend == "triton" else x
    ent, marg, margq, stats = op_of(backend)(xd, pool, eps)
    e_ref, m_ref, mq_ref = direct_outputs(x, pool, eps)
    torch.testing.assert_close(ent.cpu(), e_ref)
    torch.testing.assert_close(marg.cpu(), m_ref)
    torch.testing.assert_close(margq.cpu(), mq_ref)
    P = shape[2] * shape[3]
    torch.testing.assert_close(stats[:, :P].cpu(), torch.logsumexp(x, 1).reshape(shape[0], -1))


@needs_cpu
@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("shape,pool", [((2, 3, 5, 5), 2), ((2, 3, 3, 6), 3), ((4, 5, 2, 3), 0), ((5, 3, 1, 1), 1)])
def test_gradcheck_cpu_op(shape, pool, channels_last):
    x = torch.randn(*shape, dtype=torch.float64)
    if channels_last:
        x = x.to(memory_format=torch.channels_last)
    x.requires_grad_()

    def f(z):
        ent, marg, margq, _ = torch.ops.fastmi.softmax_stats(z, pool, 1e-7)
        return ent, marg, margq

    assert torch.autograd.gradcheck(f, (x,))


@needs_cpu
@pytest.mark.parametrize("prior", ["v2", "v1"])
def test_gradcheck_nb_mim_cpu(prior):
    xs = (torch.randn(2, 3, 3, 4, dtype=torch.float64, requires_grad=True),
          torch.randn(3, 4, dtype=torch.float64, requires_grad=True))
    assert torch.autograd.gradcheck(lambda a, b: F.nb_mim([a, b], prior=prior, backend="cpu").loss, xs)


@needs_triton
def test_gradcheck_triton_op():
    x = torch.randn(2, 3, 2, 3, dtype=torch.float64, device=DEV, requires_grad=True)
    assert torch.autograd.gradcheck(lambda z: torch.ops.fastmi.softmax_stats_triton(z, 2, 1e-7)[:3], (x,), fast_mode=True)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("channels_last", [False, True])
def test_opcheck(backend, channels_last):
    x = torch.randn(2, 3, 3, 5, dtype=torch.float64)
    if channels_last:
        x = x.to(memory_format=torch.channels_last)
    x = (x.to(DEV) if backend == "triton" else x).requires_grad_()
    for pool in (2, 0):
        torch.library.opcheck(op_of(backend), (x, pool, 1e-7))
    ent, marg, margq, stats = op_of(backend)(x.detach(), 2, 1e-7)
    bwd = torch.ops.fastmi.softmax_stats_backward if backend == "cpu" else torch.ops.fastmi.softmax_stats_triton_backward
    torch.library.opcheck(bwd, (torch.ones_like(ent), torch.randn_like(marg), torch.randn_like(margq), x.detach(),
                                stats, 2, 1e-7))


@pytest.mark.parametrize("backend", BACKENDS)
def test_compile_fullgraph(backend):
    torch._dynamo.reset()
    xs = [torch.randn(3, 4, 6, 6, dtype=torch.float64), torch.randn(3, 5, dtype=torch.float64)]
    if backend == "triton":
        xs = [x.to(DEV) for x in xs]

    def loss(a, b):
        return F.nb_mim([a, b], backend=backend, alpha=2.0).loss

    compiled = torch.compile(loss, fullgraph=True, backend="aot_eager" if backend == "triton" else "inductor")
    e = [x.clone().requires_grad_() for x in xs]
    c = [x.clone().requires_grad_() for x in xs]
    le, lc = loss(*e), compiled(*c)
    le.backward()
    lc.backward()
    torch.testing.assert_close(lc, le)
    for a, b in zip(e, c):
        torch.testing.assert_close(b.grad, a.grad)


@pytest.mark.parametrize("backend", [pytest.param("cpu", marks=needs_cpu)] + ["reference"])
def test_theorem2_detached_log_is_exact(backend):
    """Theorem 2: with sum_c dS_c = 0, the gradient of -sum S log sg(S) equals that of the full
    entropy -sum S log S (and E log sg(E) that of E log E for v1). Compared at eps -> 0 against
    autograd through the full forms."""
    x = torch.randn(4, 5, 3, 3, dtype=torch.float64) * 2
    a = x.clone().requires_grad_()
    res = F.nb_mim([a], backend=backend, prior="v1", alpha=0.5, pool=0, eps=1e-15)
    res.loss.backward()
    b = x.clone().requires_grad_()
    S = torch.softmax(b, 1)
    ent = -(S * torch.log(S)).sum(1).mean()
    E = S.mean(0).reshape(5, -1)
    rp = (E * torch.log(E)).sum(0).mean()
    (ent + 1.5 * rp).backward()
    torch.testing.assert_close(a.grad, b.grad, rtol=1e-7, atol=1e-12)


@needs_cpu
@settings(max_examples=25, deadline=None)
@given(B=st.integers(1, 6), C=st.integers(2, 19), H=st.integers(1, 9), W=st.integers(1, 9), pool=st.integers(0, 4),
       cl=st.booleans(), scale=st.sampled_from([0.1, 3.0, 30.0]), prior=st.sampled_from(["v1", "v2"]),
       seed=st.integers(0, 2**16))
def test_property_cpu_matches_reference(B, C, H, W, pool, cl, scale, prior, seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(B, C, H, W, generator=g, dtype=torch.float64) * scale
    if cl:
        x = x.to(memory_format=torch.channels_last)
    a, b = x.clone().requires_grad_(), x.clone().requires_grad_()
    res = F.nb_mim([a], backend="cpu", pool=pool, prior=prior)
    ref = R.nb_mim([b], pool=pool, prior=prior)
    res.loss.backward()
    ref.loss.backward()
    torch.testing.assert_close(res.loss, ref.loss, rtol=1e-9, atol=1e-10)
    torch.testing.assert_close(a.grad, b.grad, rtol=1e-8, atol=1e-9)


def test_reference_fallback_without_extension():
    """fastmi keeps working without the compiled extension: nb_mim falls back to the reference."""
    code = ("import warnings, torch, fastmi.functional as F\n"
            "with warnings.catch_warnings(record=True) as w:\n"
            "    warnings.simplefilter('always')\n"
            "    r = F.nb_mim([torch.randn(2, 3, 4, 4)])\n"
            "print(float(r.loss), len(w))\n")
    env = dict(os.environ, FASTMI_NO_EXT="1", TRITON_INTERPRET="0")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    loss, warned = out.stdout.split()
    assert float(loss) > 0 and int(warned) >= 1
