"""The one-pass cross-entropy path of the separable family's CPU kernel (fastmi::separable_ce):
its forward computes the InfoNCE gradients with the statistics; any other incoming gradient, a
second backward, or a gradient of the scales goes through the general recomputing backward."""
import pytest
import torch

import fastmi
import fastmi.functional as F
from fastmi.ops import separable as op

pytestmark = pytest.mark.skipif(not (fastmi.info()["cpu"][0] and fastmi._backend.ext_has_op("separable_ce")),
                                reason="fastmi._C with separable_ce not available")


def _pair(n, m, d=12, seed=0, dtype=torch.float64, scale=1.0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g, dtype=dtype) * scale, torch.randn(m, d, generator=g, dtype=dtype) * scale


def _general(x, y, a, b, idx, exclude, grad_row, grad_pos):
    """Gradients through the general op (forward + recomputing backward), for comparison."""
    x, y = x.clone().requires_grad_(), y.clone().requires_grad_()
    row, _, pos = torch.ops.fastmi.separable_lse(x, y, a, b, idx, exclude, False)
    torch.autograd.backward([row, pos], [grad_row, grad_pos])
    return row.detach(), pos.detach(), x.grad, y.grad


@pytest.mark.parametrize("n,m,exclude,index", [(37, 37, op.EXCLUDE_NONE, False), (70, 70, op.EXCLUDE_DIAG, False),
                                               (33, 140, op.EXCLUDE_POSITIVE, True), (130, 90, op.EXCLUDE_NONE, True)])
@pytest.mark.parametrize("uniform", [True, False])
def test_matches_the_general_path(n, m, exclude, index, uniform):
    x, y = _pair(n, m, seed=n)
    a = torch.rand(n, dtype=x.dtype) + 0.5
    b = torch.rand(m, dtype=x.dtype) + 0.5
    idx = torch.randint(0, m, (n,), generator=torch.Generator().manual_seed(1)) if index else None
    if uniform:    # InfoNCE's incoming gradients: the one-pass buffers are used
        gr, gp = torch.full((n,), 0.3, dtype=x.dtype), torch.full((n,), -0.3, dtype=x.dtype)
    else:          # anything else: the recomputing backward
        gr, gp = torch.randn(n, dtype=x.dtype), torch.randn(n, dtype=x.dtype)
    xl, yl = x.clone().requires_grad_(), y.clone().requires_grad_()
    row, pos = op._CrossEntropyRows.apply(xl, yl, a, b, idx, exclude)
    torch.autograd.backward([row, pos], [gr, gp])
    ref = _general(x, y, a, b, idx, exclude, gr, gp)
    for got, want in zip((row, pos, xl.grad, yl.grad), ref):
        torch.testing.assert_close(got.detach(), want, rtol=1e-12, atol=1e-12)


def test_forward_gradients_are_those_of_the_summed_cross_entropy():
    x, y = _pair(40, 40, seed=3)
    a, b = torch.full((40,), 2.0, dtype=x.dtype), torch.ones(40, dtype=x.dtype)
    row, pos, gx, gy = torch.ops.fastmi.separable_ce(x, y, a, b, None, op.EXCLUDE_NONE, True)
    xl, yl = x.clone().requires_grad_(), y.clone().requires_grad_()
    s = 2.0 * xl @ yl.T
    ce = (torch.logsumexp(s, 1) - s.diagonal()).sum()
    ce.backward()
    torch.testing.assert_close(row, torch.logsumexp(s, 1).detach())
    torch.testing.assert_close(pos, s.diagonal().detach())
    torch.testing.assert_close(gx, xl.grad)
    torch.testing.assert_close(gy, yl.grad)
    _, _, gx0, gy0 = torch.ops.fastmi.separable_ce(x, y, a, b, None, op.EXCLUDE_NONE, False)
    assert gx0.shape == (0, 12) and gy0.shape == (0, 12)


def test_path_selection():
    x, y = _pair(8, 8)
    a, b = torch.ones(8, dtype=x.dtype), torch.ones(8, dtype=x.dtype)
    xl = x.clone().requires_grad_()
    assert op._one_pass_ce(xl, y, a, b, False, "cpu")
    assert not op._one_pass_ce(x, y, a, b, False, "cpu")                  # no gradient needed
    assert not op._one_pass_ce(xl, y, a, b, True, "cpu")                  # symmetric: column statistics
    assert not op._one_pass_ce(xl, y, a.requires_grad_(), b, False, "cpu")  # learnable temperature / cosine
    with torch.no_grad():
        assert not op._one_pass_ce(xl, y, a, b, False, "cpu")


def test_second_backward_recomputes():
    x, y = _pair(50, 50, seed=5)
    xl, yl = x.clone().requires_grad_(), y.clone().requires_grad_()
    out = F.infonce_separable(xl, yl, temperature=0.2, backend="cpu")
    out.loss.backward(retain_graph=True)
    g1 = xl.grad.clone(), yl.grad.clone()
    out.loss.backward()
    torch.testing.assert_close(xl.grad, 2 * g1[0])
    torch.testing.assert_close(yl.grad, 2 * g1[1])


def test_overflowing_rows_stay_finite_and_exact():
    x, y = _pair(30, 30, seed=6, scale=300.0)   # |S| up to ~1e6: exp overflows without the max shift
    got = [t.clone().requires_grad_() for t in (x, y)]
    want = [t.clone().requires_grad_() for t in (x, y)]
    F.infonce_separable(*got, backend="cpu").loss.backward()
    F.infonce_separable(*want, backend="reference").loss.backward()
    for g, w in zip(got, want):
        assert torch.isfinite(g.grad).all()
        torch.testing.assert_close(g.grad, w.grad)


def test_float32_and_half_inputs():
    x, y = _pair(64, 64, seed=7, dtype=torch.float32)
    for dtype in (torch.float32, torch.bfloat16):
        got = [t.to(dtype).clone().requires_grad_() for t in (x, y)]
        want = [t.double().requires_grad_() for t in (x, y)]
        F.infonce_separable(*got, temperature=0.5, backend="cpu").loss.backward()
        F.infonce_separable(*want, temperature=0.5, backend="reference").loss.backward()
        tol = 1e-5 if dtype == torch.float32 else 2e-2
        for g, w in zip(got, want):
            assert g.grad.dtype == dtype
            torch.testing.assert_close(g.grad.double(), w.grad, rtol=tol, atol=tol)
