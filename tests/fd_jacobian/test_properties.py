"""Property tests (hypothesis) of the fd_jacobian family: for any batch shape, scale, seed and
options, the fused C++ perturbation equals the float64 oracle fed the same coefficients, its steps
have length |zeta| (or 0 for a zero direction), and the fused penalty equals the dense formula."""
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import fastmi
import fastmi.functional as F
import oracle
from fd_jacobian.philox import span_coefficients
from fastmi.fd_jacobian.ops import NOISE

from helpers import needs

pytestmark = needs("fd_jacobian", "cpu")


@settings(max_examples=40, deadline=None)
@given(B=st.integers(2, 140), n=st.integers(1, 40), scale=st.sampled_from([1e-6, 1.0, 1e5]),
       seed=st.integers(-(2**63), 2**63 - 1), noise=st.sampled_from(["bernoulli", "gaussian"]),
       center=st.booleans(), per_sample=st.booleans())
def test_perturb_matches_oracle(B, n, scale, seed, noise, center, per_sample):
    gen = torch.Generator().manual_seed(B * 1000 + n)
    x = scale * torch.randn(B, n, generator=gen, dtype=torch.float64)
    zeta = (0.05 + torch.rand(B if per_sample else 1, generator=gen, dtype=torch.float64))
    out = torch.ops.fastmi.fd_perturb(x, torch.tensor([seed]), zeta, NOISE[noise], center)
    coeff = span_coefficients(seed, B, noise)
    ref = oracle.span_perturb(x, coeff, zeta if per_sample else zeta[0], center=center).to(x.dtype)
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-7 * (scale + 1))
    step = (out - x).norm(dim=1)
    z = zeta.expand(B)
    assert torch.all(((step - z).abs() < 1e-6 * (scale + 1)) | (step == 0))


@settings(max_examples=40, deadline=None)
@given(B=st.integers(1, 9), C=st.integers(1, 12), hw=st.sampled_from([1, 2, 9, 17]),
       pool=st.sampled_from([None, "global"]), seed=st.integers(0, 2**31 - 1))
def test_penalty_matches_dense(B, C, hw, pool, seed):
    gen = torch.Generator().manual_seed(seed)
    a = torch.randn(B, C, hw, generator=gen, dtype=torch.float64)
    b = torch.randn(B, C, hw, generator=gen, dtype=torch.float64)
    zeta = torch.rand(B, generator=gen, dtype=torch.float64) + 0.1
    out = F.fd_smoothness(a, b, zeta, pool=pool)
    d = (a - b).mean(2) if pool else (a - b).flatten(1)
    ref = ((d * d).sum(1) / zeta**2).mean()
    torch.testing.assert_close(out, ref, rtol=1e-12, atol=0)
