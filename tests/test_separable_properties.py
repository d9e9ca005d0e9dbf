"""Property tests (hypothesis): the fused separable CPU path equals the dense float64 reference for
any shape, scale, temperature and layout, and InfoNCE stays below log m."""
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import fastmi
import fastmi.functional as F
from fastmi import reference as R

pytestmark = pytest.mark.skipif(not fastmi.info()["cpu"][0], reason="fastmi._C not available")


@st.composite
def problems(draw):
    n = draw(st.integers(2, 40))
    diag = draw(st.booleans())
    m = n if diag else draw(st.integers(2, 40))
    d = draw(st.integers(1, 24))
    scale = draw(st.sampled_from([1e-3, 1.0, 10.0]))
    gen = torch.Generator().manual_seed(draw(st.integers(0, 2**31 - 1)))
    x = scale * torch.randn(n, d, generator=gen, dtype=torch.float64)
    y = scale * torch.randn(m, d, generator=gen, dtype=torch.float64)
    positives = None if diag else torch.randint(0, m, (n,), generator=gen)
    opts = dict(temperature=draw(st.sampled_from([0.01, 0.1, 1.0, 5.0])), normalize=draw(st.booleans()),
                positives=positives, negatives=draw(st.sampled_from([None, "all", "off_positive", "off_diagonal"])))
    return x, y, opts


def _loss_and_grads(fn, x, y, **kw):
    x, y = x.clone().requires_grad_(True), y.clone().requires_grad_(True)
    out = fn(x, y, **kw)
    return (out.loss.detach(), out.mi, *torch.autograd.grad(out.loss, (x, y)))


@settings(max_examples=40, deadline=None)
@given(problems(), st.sampled_from(["infonce_separable", "dv_separable", "nwj_separable"]))
def test_fused_equals_dense_reference(problem, name):
    x, y, opts = problem
    if opts["normalize"] and (x.norm(dim=1).min() == 0 or y.norm(dim=1).min() == 0):
        return
    if name == "nwj_separable" and opts["temperature"] < 0.1 and not opts["normalize"]:
        opts["temperature"] = 1.0  # exp(S - 1) overflows in both paths alike; nothing to compare
    got = _loss_and_grads(getattr(F, name), x, y, backend="cpu", **opts)
    ref = _loss_and_grads(getattr(R, name), x, y, **opts)
    for a, b in zip(got, ref):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-9, equal_nan=True)


@settings(max_examples=25, deadline=None)
@given(problems())
def test_infonce_at_most_log_m(problem):
    x, y, opts = problem
    opts.update(negatives="all")  # the bound log m holds when the positive is among the negatives
    if opts["normalize"] and (x.norm(dim=1).min() == 0 or y.norm(dim=1).min() == 0):
        return
    mi = F.infonce_separable(x, y, backend="cpu", **opts).mi
    assert mi <= math.log(y.shape[0]) + 1e-9
