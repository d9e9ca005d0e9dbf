"""critic_lse edge cases: empty positive or negative sets, all -inf negatives, skipped steps with
large scores, half-precision baselines, clips beyond the dtype's range, MINE's average under
non-finite batches, and option checks (functional and modules). Every fused backend and the
reference must agree."""
import math

import numpy as np
import pytest
import torch

import fastmi
import fastmi.functional as F
import oracle as R

from helpers import fused

FUSED = [b for b in fused("critic_lse") if b == "cpu" or (b == "triton" and not torch.cuda.is_available())]
BACKENDS = FUSED + ["reference"]
ESTIMATORS = ["infonce", "dv", "nwj", "tuba", "js", "smile", "mine"]


def call(name, s, backend, **kw):
    if name == "mine":
        return F.mine(s, torch.tensor(math.nan, dtype=torch.float64), backend=backend, **kw)
    return getattr(F, name)(s, backend=backend, **kw)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", ["nwj", "tuba", "js"])
def test_all_negatives_minus_inf_give_finite_gradients(name, backend):
    """E_N e^S = 0 exactly: NWJ's value is finite, and so must its gradient be (no exp(-inf + inf))."""
    n = 4
    s = torch.randn(n, n, dtype=torch.float64)
    s[~torch.eye(n, dtype=torch.bool)] = -math.inf
    s.requires_grad_(True)
    out = getattr(F, name)(s, backend=backend)
    (g,) = torch.autograd.grad(out.loss, s)
    assert torch.isfinite(out.loss) and torch.isfinite(g).all()
    off = ~torch.eye(n, dtype=torch.bool)
    assert (g[off] == 0).all()
    if name in ("nwj", "tuba"):  # d(-mean_i S_ii)/dS_ii
        torch.testing.assert_close(g.diagonal(), torch.full((n,), -1.0 / n, dtype=torch.float64))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", ESTIMATORS)
def test_no_negative_pair_skips_the_step(name, backend):
    """Every pair a positive, negatives off the positives: nothing to contrast, the step is skipped
    (loss 0, zero gradient, mi NaN), as with no positive pair."""
    s = torch.randn(3, 3, dtype=torch.float64, requires_grad=True)
    out = call(name, s, backend, positives=torch.ones(3, 3, dtype=torch.bool), negatives="off_positive")
    (g,) = torch.autograd.grad(out.loss, s)
    assert out.loss.item() == 0.0 and math.isnan(out.mi.item()) and (g == 0).all()


@pytest.mark.parametrize("backend", BACKENDS)
def test_infonce_anchor_without_negatives_is_skipped(backend):
    """Row 1 is all positives: it is left out, the other anchors' bound is unchanged."""
    s = torch.randn(4, 4, dtype=torch.float64, requires_grad=True)
    mask = torch.eye(4, dtype=torch.bool)
    mask[1] = True
    out = F.infonce(s, positives=mask, negatives="off_positive", backend=backend, reg_weight=0.5)
    keep = torch.tensor([0, 2, 3])
    ref = R.infonce(s.detach()[keep], positives=mask[keep], negatives="off_positive", reg_weight=0.5)
    torch.testing.assert_close(out.mi, ref.mi)
    torch.testing.assert_close(out.loss.detach(), ref.loss)
    (g,) = torch.autograd.grad(out.loss, s)
    assert torch.isfinite(g).all() and (g[1] == 0).all()


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", ESTIMATORS)
def test_skipped_step_has_zero_gradient_for_large_scores(name, backend):
    """No positive pair, scores around 100 (e^S overflows fp32): still exactly zero gradient."""
    s = (torch.randn(4, 4) + 100.0).requires_grad_(True)
    out = call(name, s, backend, positives=torch.zeros(4, 4, dtype=torch.bool))
    (g,) = torch.autograd.grad(out.loss, s)
    assert out.loss.item() == 0.0 and (g == 0).all()


@pytest.mark.parametrize("backend", BACKENDS)
def test_number_baseline_is_not_rounded_to_bfloat16(backend):
    s = (torch.randn(8, 8, generator=torch.Generator().manual_seed(3)) + 10).bfloat16()
    with_number = F.tuba(s, 10.3, backend=backend).mi
    with_tensor = F.tuba(s, torch.tensor(10.3), backend=backend).mi
    exact = R.tuba(s.double(), 10.3).mi
    torch.testing.assert_close(with_number.double(), with_tensor.double(), rtol=1e-6, atol=1e-6)
    assert abs(with_number.item() - exact.item()) < 1e-4


@pytest.mark.parametrize("backend", BACKENDS)
def test_one_element_parameter_baseline_is_a_scalar(backend):
    a = torch.nn.Parameter(torch.full((1,), 0.3, dtype=torch.float64))
    s = torch.randn(5, 5, dtype=torch.float64)
    out = F.tuba(s, a, backend=backend)
    torch.testing.assert_close(out.mi, R.tuba(s, 0.3).mi)
    (ga,) = torch.autograd.grad(out.loss, a)
    assert ga.shape == (1,) and torch.isfinite(ga).all()


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", ["dv", "nwj", "smile"])
def test_clip_beyond_the_dtype_range_clips_nothing(name, backend):
    s = torch.randn(5, 5)
    clipped = getattr(F, name)(s, clip=1e39, backend=backend)
    plain = getattr(F, name)(s, clip=None, backend=backend)
    torch.testing.assert_close(clipped.mi, plain.mi)


@pytest.mark.parametrize("backend", BACKENDS)
def test_mine_average_ignores_nonfinite_batches(backend):
    mine = fastmi.nn.MINE(backend=backend)
    mine(torch.randn(5, 5))
    before = mine.running_lme.clone()
    for bad in (math.nan, math.inf):
        s = torch.randn(5, 5)
        s[0, 1] = bad
        mine(s)
        assert torch.equal(mine.running_lme, before)
    s = torch.randn(5, 5)
    s[~torch.eye(5, dtype=torch.bool)] = -math.inf  # E_N e^S = 0 is a real value: averaged in
    mine(s)
    assert mine.running_lme.item() < before.item()


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", ["dv", "smile", "mine"])
def test_infinite_value_gives_infinite_loss_not_nan(name, backend):
    s = torch.randn(4, 4)
    s[0, 1] = math.inf
    out = call(name, s, backend, **({"clip": None} if name == "smile" else {}))
    assert out.mi.item() == -math.inf
    assert out.loss.item() == math.inf   # MINE: the first batch divides inf by its own inf: still not NaN


BAD_OPTIONS = [
    (lambda: F.tuba(torch.randn(4, 4), math.inf), ValueError, "log_baseline"),
    (lambda: F.smile(torch.randn(4, 4), clip_positives="no"), TypeError, "clip_positives"),
    (lambda: F.mine(torch.randn(4, 4), torch.tensor(math.nan), update="no"), TypeError, "update"),
    (lambda: fastmi.nn.DV(clip=-1.0), ValueError, "clip"),
    (lambda: fastmi.nn.InfoNCE(clip=1.0), TypeError, "clip"),
    (lambda: fastmi.nn.NWJ(reg_weight=-1.0), ValueError, "reg_weight"),
    (lambda: fastmi.nn.SMILE(negatives="most"), ValueError, "negatives"),
    (lambda: fastmi.nn.JS(backend="gpu"), ValueError, "backend"),
    (lambda: fastmi.nn.MINE(momentum=None), TypeError, "momentum"),
    (lambda: fastmi.nn.MINE(momentum="abc"), TypeError, "momentum"),
]


@pytest.mark.parametrize("make,exc,text", BAD_OPTIONS, ids=[str(i) for i in range(len(BAD_OPTIONS))])
def test_bad_options_name_the_argument(make, exc, text):
    with pytest.raises(exc, match=text):
        make()


def test_numpy_scalars_are_numbers():
    s = torch.randn(5, 5)
    out = F.dv(s, clip=np.float32(2.0), reg_weight=np.float32(0.1), reg_target=np.float64(0.0))
    torch.testing.assert_close(out.mi, F.dv(s, clip=2.0).mi)
    assert fastmi.nn.MINE(momentum=np.float32(0.5)).momentum == 0.5
