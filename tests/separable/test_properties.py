"""Property tests (hypothesis): the fused separable CPU path equals the dense float64 reference for
any shape, scale, temperature and layout, and InfoNCE stays below log m."""
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import fastmi
import fastmi.functional as F
import oracle as R

from helpers import needs

pytestmark = needs("separable", "cpu")


@st.composite
def problems(draw):
    n = draw(st.integers(2, 40))
    diag = draw(st.booleans())
    m = n if diag else draw(st.integers(2, 40))
    normalize = draw(st.booleans())
    # d = 1 with the cosine critic: S_ij = +-1/temperature, the exact gradient is 0 and only rounding
    # noise (amplified by 1/|x_i|) is left to compare
    d = draw(st.integers(2 if normalize else 1, 24))
    scale = draw(st.sampled_from([1e-3, 1.0, 10.0]))
    gen = torch.Generator().manual_seed(draw(st.integers(0, 2**31 - 1)))
    x = scale * torch.randn(n, d, generator=gen, dtype=torch.float64)
    y = scale * torch.randn(m, d, generator=gen, dtype=torch.float64)
    positives = None if diag else torch.randint(0, m, (n,), generator=gen)
    opts = dict(temperature=draw(st.sampled_from([0.01, 0.1, 1.0, 5.0])), normalize=normalize,
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
    got = _loss_and_grads(getattr(F, name), x, y, backend="cpu", **opts)
    ref = _loss_and_grads(getattr(R, name), x, y, **opts)
    if not torch.isfinite(ref[0]):  # NWJ's e^(S - 1) overflowed float64: both paths must say so
        assert not torch.isfinite(got[0])
        return
    # float64 rounding is relative to the largest terms of the computation (the loss itself for NWJ's
    # e^(S-1)): with the cosine critic in d = 1 the exact gradient is 0, but both paths may return
    # rounding noise of that size
    finite = torch.cat([t.reshape(-1) for t in ref])
    finite = finite[torch.isfinite(finite)]
    scale = max(1.0, float(finite.abs().max())) if finite.numel() else 1.0
    for a, b in zip(got, ref):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12 * scale, equal_nan=True)


@settings(max_examples=25, deadline=None)
@given(problems())
def test_infonce_at_most_log_m(problem):
    x, y, opts = problem
    opts.update(negatives="all")  # the bound log m holds when the positive is among the negatives
    if opts["normalize"] and (x.norm(dim=1).min() == 0 or y.norm(dim=1).min() == 0):
        return
    mi = F.infonce_separable(x, y, backend="cpu", **opts).mi
    assert mi <= math.log(y.shape[0]) + 1e-9
