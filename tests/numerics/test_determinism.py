"""Every CPU kernel gives bitwise-identical results for identical inputs, whatever the thread count
(1 or 2) and however often it is called (issue 19, item 7: mmd_imq's backward differed by an ulp
between calls with 2 threads). Shapes span several tiles / blocks / chunks of each kernel's schedule."""

import pytest
import torch

import fastmi
import fastmi.functional as F
from helpers import threads

pytestmark = pytest.mark.skipif(not fastmi.info()["cpu"][0], reason="fastmi._C not available")
REPEATS = 4




def _run(fn, inputs):
    ins = [t.clone().requires_grad_(t.is_floating_point()) for t in inputs]
    out = fn(*ins)
    outs = out if isinstance(out, tuple) else (out,)
    live = [o for o in outs if o.requires_grad]
    grads = torch.autograd.grad(sum(o.sum() for o in live), [t for t in ins if t.requires_grad]) if live else ()
    return [o.detach() for o in outs] + list(grads)


def assert_reproducible(fn, inputs):
    with threads(2):
        first = _run(fn, inputs)
        runs = [_run(fn, inputs) for _ in range(REPEATS)]
    with threads(1):
        runs.append(_run(fn, inputs))
    for run in runs:
        for a, b in zip(first, run):
            assert torch.equal(a, b) or (a.isnan() == b.isnan()).all() and torch.equal(a.nan_to_num(), b.nan_to_num()), \
                f"not bitwise reproducible: max difference {float((a - b).abs().max())}"


G = torch.Generator().manual_seed(0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
@pytest.mark.parametrize("name", ["infonce", "nwj", "js", "smile"])
def test_critic_lse(name, dtype):
    S = (torch.randn(300, 700, generator=G) * 4).to(dtype)
    mask = torch.rand(300, 700, generator=G) < 0.01
    kw = dict(reg_weight=0.2) if name != "infonce" else {}
    assert_reproducible(lambda s: getattr(F, name)(s, positives=mask, backend="cpu", **kw).loss, [S])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("name,kw", [("infonce_separable", dict(normalize=True, symmetric=True, temperature=0.07)),
                                     ("nwj_separable", dict(temperature=2.0)), ("dv_separable", dict(normalize=True))])
@pytest.mark.parametrize("n,d", [(1100, 24), (10, 60), (7, 42)])  # one block: its GEMMs must not go multi-threaded
def test_separable(name, kw, dtype, n, d):
    x, y = torch.randn(n, d, generator=G, dtype=dtype), torch.randn(n, d, generator=G, dtype=dtype)
    assert_reproducible(lambda a, b: getattr(F, name)(a, b, backend="cpu", **kw).loss, [x, y])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("estimator", ["unbiased", "biased"])
@pytest.mark.parametrize("n,m,K", [(700, 530, 12), (40, 30, 150)])
def test_mmd_imq(estimator, dtype, n, m, K):
    x = torch.randn(n, K, generator=G, dtype=dtype)
    y = torch.randn(m, K, generator=G, dtype=dtype) * 1.3
    assert_reproducible(lambda a, b: F.mmd_imq(a, b, scales=[0.5, 1.0, 2.0], estimator=estimator, backend="cpu"), [x, y])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_softmax_stats(dtype):
    h = torch.randn(150, 12, 7, 7, generator=G, dtype=dtype)
    hc = h.contiguous(memory_format=torch.channels_last)
    assert_reproducible(lambda a, b: F.nb_mim([a, b], pool=2, backend="cpu").loss, [h, hc])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_fd_jacobian(dtype):
    x = torch.randn(96, 3000, generator=G, dtype=dtype)

    for noise in ("bernoulli", "gaussian"):
        def perturb(a):
            torch.manual_seed(7)
            return F.perturb_in_span(a, noise=noise, backend="cpu")[0]

        assert_reproducible(perturb, [x])
    a, b = torch.randn(40, 8, 9, 9, generator=G, dtype=dtype), torch.randn(40, 8, 9, 9, generator=G, dtype=dtype)
    for pool in (None, "global"):
        assert_reproducible(lambda u, v: F.fd_smoothness(u, v, 0.1, pool=pool, backend="cpu"), [a, b])
