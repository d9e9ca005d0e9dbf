"""Property tests (hypothesis) of mmd_imq on the fused CPU path: equal to the exact float64 oracle
for any shapes, scales and magnitudes; symmetric in (x, y); biased MMD^2 >= 0 (it is a squared
RKHS norm, the IMQ kernel being positive definite); invariant to a common translation."""
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import fastmi
import fastmi.functional as F

from helpers import needs
from mmd_imq.test_api import close, exact_mmd

pytestmark = needs("mmd_imq", "cpu")


@st.composite
def problems(draw):
    n, m = draw(st.integers(2, 40)), draw(st.integers(2, 40))
    K = draw(st.integers(1, 12))
    spread = draw(st.sampled_from([1e-3, 1.0, 50.0]))
    gen = torch.Generator().manual_seed(draw(st.integers(0, 2**31 - 1)))
    x = spread * torch.randn(n, K, generator=gen, dtype=torch.float64)
    y = spread * (torch.randn(m, K, generator=gen, dtype=torch.float64) + draw(st.sampled_from([0.0, 0.5, 3.0])))
    scale = draw(st.sampled_from([None, spread**2, 10 * spread**2]))
    scales = draw(st.sampled_from([None, (0.2, 1.0, 5.0)]))
    return x, y, scale, scales


def _cs(K, scale, scales):
    base = float(K) if scale is None else scale
    return [base] if scales is None else [base * s for s in scales]


@settings(max_examples=40, deadline=None)
@given(problems(), st.sampled_from(["unbiased", "biased"]))
def test_cpu_equals_oracle(problem, estimator):
    x, y, scale, scales = problem
    v = F.mmd_imq(x, y, scale=scale, scales=scales, estimator=estimator, backend="cpu")
    want = exact_mmd(x, y, _cs(x.shape[1], scale, scales), estimator == "unbiased")
    close(v, want, 1e-8, 1e-8 * len(_cs(1, 1.0, scales)) / max(want.abs().item(), 1e-30))


@settings(max_examples=25, deadline=None)
@given(problems())
def test_symmetric_nonnegative_translation_invariant(problem):
    x, y, scale, scales = problem
    kw = dict(scale=scale, scales=scales, backend="cpu")
    v = F.mmd_imq(x, y, **kw)
    # MMD^2 is a difference of kernel means of size <= number of scales: absolute tolerances
    torch.testing.assert_close(F.mmd_imq(y, x, **kw), v, rtol=0, atol=1e-12)
    assert F.mmd_imq(x, y, estimator="biased", **kw).item() >= -1e-12
    shift = 7.0 * x.abs().max().item()
    torch.testing.assert_close(F.mmd_imq(x + shift, y + shift, **kw), v, rtol=1e-6, atol=1e-9)
