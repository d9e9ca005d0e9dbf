"""Property tests (hypothesis): the fused CPU path equals the float64 reference for any shape and
values, and the bounds keep their known inequalities."""
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import fastmi
import fastmi.functional as F
import oracle as R

from helpers import needs

pytestmark = needs("critic_lse", "cpu")


@st.composite
def problems(draw):
    n = draw(st.integers(2, 24))
    m = draw(st.integers(2, 24))
    scale = draw(st.sampled_from([1e-3, 1.0, 30.0, 1e3]))
    seed = draw(st.integers(0, 2**31 - 1))
    gen = torch.Generator().manual_seed(seed)
    scores = scale * torch.randn(n, m, generator=gen, dtype=torch.float64)
    kind = draw(st.sampled_from(["diag", "index", "mask"]))
    if kind == "diag":
        scores, positives = scores[:, :n] if m >= n else torch.randn(n, n, generator=gen, dtype=torch.float64), None
    elif kind == "index":
        positives = torch.randint(0, m, (n,), generator=gen)
    else:
        positives = torch.rand(n, m, generator=gen) < 0.4
        positives[0, 0] = True
    negatives = draw(st.sampled_from([None, "all", "off_positive", "off_diagonal"]))
    return scores.contiguous(), positives, negatives


@settings(max_examples=60, deadline=None)
@given(problems(), st.sampled_from(["infonce", "dv", "nwj", "js", "smile", "tuba"]))
def test_fused_equals_reference(problem, name):
    scores, positives, negatives = problem
    fn, ref = getattr(F, name), getattr(R, name)
    try:
        expected = ref(scores, positives=positives, negatives=negatives)
    except ValueError:
        with pytest.raises(ValueError):
            fn(scores, positives=positives, negatives=negatives, backend="cpu")
        return
    got = fn(scores, positives=positives, negatives=negatives, backend="cpu")
    torch.testing.assert_close(got.mi, expected.mi, rtol=1e-9, atol=1e-9, equal_nan=True)


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 40), st.floats(-50, 50), st.integers(0, 2**31 - 1))
def test_infonce_at_most_log_n(n, shift, seed):
    scores = torch.randn(n, n, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) * 10 + shift
    assert F.infonce(scores).mi.item() <= math.log(n) + 1e-9


@settings(max_examples=40, deadline=None)
@given(st.integers(2, 30), st.integers(0, 2**31 - 1))
def test_bound_ordering(n, seed):
    """NWJ <= DV (the DV bound is tighter for the same critic); SMILE with clip=inf is DV."""
    scores = torch.randn(n, n, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) * 3
    assert F.nwj(scores).mi.item() <= F.dv(scores).mi.item() + 1e-9
    assert F.smile(scores, clip=None).mi.item() == pytest.approx(F.dv(scores).mi.item(), rel=1e-12, abs=1e-12)
