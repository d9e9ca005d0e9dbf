"""An entry whose true gradient is finite gets a finite gradient, whatever its row neighbours do
(issue 19, items 1 and 2), on every backend of the critic_lse and separable families.

The truth is tests/oracle.py (float64, from the formulas). Rows are made to overflow (one score of
100 in fp32: exp(S - 1) overflows although the other entries' gradients are e^-1/|N|; one score of
+inf), or to underflow (a log-sum-exp below -88.7 in fp32, -708 in fp64, so that exp(0 - lse) = inf
in the padding lanes of a SIMD tail).
"""
import math

import pytest
import torch

import fastmi
import fastmi.functional as F
from numerics import numerics_oracle as O

BACKENDS = [b for b in ("cpu", "triton", "reference") if fastmi.info()[b][0]]
CRITICS = ["infonce", "dv", "nwj", "tuba", "js", "smile", "mine"]
TOL = {torch.float32: (2e-5, 1e-6), torch.float64: (1e-10, 1e-12)}


def _critic_case(name, S, backend, **kw):
    """(loss, mi, grad) of F.<name> on S, and the oracle's, for the diagonal layout."""
    n, m = S.shape
    extra = {}
    if name == "mine":
        extra = dict(running_lme=torch.tensor(0.0, dtype=torch.float64))
    S1 = S.clone().requires_grad_(True)
    if name == "mine":
        out = F.mine(S1, torch.tensor(0.0, dtype=S.dtype), backend=backend, **kw)
    else:
        out = getattr(F, name)(S1, backend=backend, **kw)
    out.loss.backward()
    S64 = S.detach().to(torch.float64).clone().requires_grad_(True)
    P, N = O.masks(n, m, infonce=name == "infonce")
    loss, mi, sur = O.critic(name, S64, P, N, **kw, **extra)
    (g,) = torch.autograd.grad(sur, S64)
    return (out.loss, out.mi, S1.grad), (loss, mi, g)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", CRITICS)
@pytest.mark.parametrize("big", [100.0, 1e4, math.inf])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_one_overflowing_score_leaves_the_row_finite(backend, name, big, dtype):
    """Issue 19 item 2: S = 0 except S[0, 1] = big; row 0's other entries keep their (finite) gradients."""
    if dtype == torch.float64 and big == 100.0:
        big = 800.0  # exp(799) overflows float64 as exp(99) overflows float32
    S = torch.zeros(4, 4, dtype=dtype)
    S[0, 1] = big
    kw = dict(clip=None) if name in ("dv", "nwj", "tuba", "smile") else {}
    got, want = _critic_case(name, S, backend, **kw)
    rtol, atol = TOL[dtype]
    if math.isfinite(big):  # S - (a statistic of size big) loses the digits of big's rounding
        rtol += 4 * torch.finfo(dtype).eps * big
    O.assert_matches(got[2], want[2], dtype, rtol=rtol, atol=atol, what=f"{name} {backend} grad")


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", ["dv", "nwj", "tuba", "js", "smile", "mine"])
def test_regularized_overflow_row(backend, name):
    """The regularizer's log-mean-exp adds a second term through the same row statistic."""
    S = torch.zeros(5, 5)
    S[2, 0] = math.inf
    S[3, 4] = 120.0
    got, want = _critic_case(name, S, backend, reg_weight=0.5, reg_target=1.0)
    O.assert_matches(got[2], want[2], torch.float32, rtol=2e-5, atol=1e-6, what=f"{name} {backend} grad")


@pytest.mark.parametrize("backend", BACKENDS)
def test_tuba_baseline_gradient_with_an_overflowing_row(backend):
    """TUBA's learnable per-row baseline gets d/da_i = -mean_N exp(S_ij - a_i), finite for every
    row whose scores are finite."""
    S = torch.zeros(4, 4)
    S[0, 1] = 100.0
    a = torch.full((4,), 0.5, requires_grad=True)
    F.tuba(S, a, backend=backend).loss.backward()
    a64 = torch.full((4,), 0.5, dtype=torch.float64, requires_grad=True)
    P, N = O.masks(4, 4)
    loss, _, sur = O.critic("tuba", S.double(), P, N, log_baseline=a64)
    (want,) = torch.autograd.grad(sur, a64)
    O.assert_matches(a.grad, want, torch.float32, rtol=2e-5, atol=1e-6, what="d/da")


# --- separable ----------------------------------------------------------------------------------
SEPARABLE = ["infonce_separable", "dv_separable", "nwj_separable"]


def _separable_case(name, x, y, backend, **kw):
    x1, y1 = x.detach().clone().requires_grad_(True), y.detach().clone().requires_grad_(True)
    t = kw.pop("temperature", 1.0)
    t1 = t.clone().requires_grad_(True) if isinstance(t, torch.Tensor) else t
    out = getattr(F, name)(x1, y1, temperature=t1, backend=backend, **kw)
    out.loss.backward()
    x64, y64 = x.detach().double().clone().requires_grad_(True), y.detach().double().clone().requires_grad_(True)
    t64 = t.detach().double().clone().requires_grad_(True) if isinstance(t, torch.Tensor) else t
    S = O.separable_scores(x64, y64, t64, kw.get("normalize", False))
    P, N = O.masks(x.shape[0], y.shape[0], kw.get("positives"), kw.get("negatives"), infonce=name == "infonce_separable")
    _, _, sur = O.critic(name.replace("_separable", ""), S, P, N)
    inputs = (x64, y64) + ((t64,) if isinstance(t, torch.Tensor) else ())
    want = torch.autograd.grad(sur, inputs)
    got = (x1.grad, y1.grad) + ((t1.grad,) if isinstance(t, torch.Tensor) else ())
    return got, want


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", SEPARABLE)
def test_separable_issue_reproducer(backend, name):
    """Issue 19 item 1, as reported: the cosine critic at CLIP's temperature cap, n = 2."""
    x = torch.eye(2)
    y = torch.tensor([[1.0, 0.0], [-0.95, 0.31]])
    got, want = _separable_case(name, x, y, backend, temperature=0.01, normalize=True)
    for a, b, what in zip(got, want, "xy"):
        O.assert_matches(a, b, torch.float32, rtol=1e-4, atol=1e-5, what=f"{name} {backend} d{what}")


def _underflowing_rows(n, m, dtype, scale):
    """x_i = u for every row; y_0 = u (the positive of every row), y_j = v (cosine -0.95) for j >= 1:
    row i's negatives are all at -0.95 * scale, so its log-sum-exp is about -0.95 * scale + log(m - 1)."""
    u = torch.tensor([1.0, 0.0], dtype=dtype)
    v = torch.tensor([-0.95, math.sqrt(1 - 0.95 ** 2)], dtype=dtype)
    x = u.repeat(n, 1)
    y = torch.cat([u[None], v.repeat(m - 1, 1)])
    return x, y, torch.zeros(n, dtype=torch.long)


@pytest.mark.parametrize("backend", [b for b in BACKENDS if b != "triton"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("m", range(2, 19))
def test_separable_underflowing_rows_at_every_tail_size(backend, dtype, m):
    """Every column-tail length of the SIMD loop (m = 2..18 covers 1..2x the fp32 width), rows whose
    log-sum-exp underflows exp: no NaN from the padding lanes, in dx, dy or a learnable temperature."""
    scale = 100.0 if dtype == torch.float32 else 1000.0
    x, y, pos = _underflowing_rows(3, m, dtype, scale)
    for name in SEPARABLE:
        for kw in (dict(temperature=1.0 / scale, normalize=True),
                   dict(temperature=torch.tensor(1.0 / scale, dtype=dtype))):
            got, want = _separable_case(name, x, y, backend, positives=pos, negatives="off_positive", **kw)
            rtol, atol = (1e-4, 1e-5) if dtype == torch.float32 else (1e-9, 1e-11)
            for a, b, what in zip(got, want, ("x", "y", "temperature")):
                O.assert_matches(a, b, dtype, rtol=rtol, atol=atol, what=f"{name} {kw} d{what}")


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", SEPARABLE)
def test_separable_overflowing_row(backend, name):
    """One row of S overflows (|x_0| = 1e20): the other rows' entries keep finite gradients, and the
    loss is the same infinity as the oracle's (issue 19 item 2: Triton's NWJ gave NaN)."""
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(5, 3, generator=g), torch.randn(5, 3, generator=g)
    x[0] *= 1e20
    x1, y1 = x.detach().clone().requires_grad_(True), y.detach().clone().requires_grad_(True)
    out = getattr(F, name)(x1, y1, backend=backend)
    out.loss.backward()
    x64, y64 = x.detach().double().clone().requires_grad_(True), y.detach().double().clone().requires_grad_(True)
    P, N = O.masks(5, 5, infonce=name == "infonce_separable")
    loss, _, sur = O.critic(name.replace("_separable", ""), O.separable_scores(x64, y64), P, N)
    wx, wy = torch.autograd.grad(sur, (x64, y64))
    O.assert_matches(out.loss, loss, torch.float32, rtol=1e-5, atol=0, what="loss")
    O.assert_matches(x1.grad[1:], wx[1:], torch.float32, rtol=1e-4, atol=1e-5, what="dx")
    assert not torch.isnan(y1.grad).any() or torch.isnan(wy).any()
