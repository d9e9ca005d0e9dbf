"""alpha_tuba (Poole et al.'s I_alpha, with its second pass: fastmi/critic_lse/interpolated.py) and l1out
(the leave-one-out upper bound on a log-density matrix): the tiled second pass, the entry that
dominates its row, the limits alpha = 0 and 1, the orientation of L1Out, and the errors. The
oracle comparisons on every layout and option are in test_api.py (derived from the table)."""
import math

import pytest
import torch

import fastmi
import fastmi.functional as F
import oracle as R
from fastmi.critic_lse import interpolated

from helpers import fused

BACKENDS = fused("critic_lse") + ["reference"]


@pytest.mark.parametrize("backend", fused("critic_lse"))
def test_tiled_second_pass_equals_the_oracle_across_blocks(backend, monkeypatch):
    """Blocks of 3 rows (BLOCK_ELEMENTS / n): values and gradients (scores and per-row baseline)."""
    monkeypatch.setattr(interpolated, "BLOCK_ELEMENTS", 3 * 11)
    g = torch.Generator().manual_seed(2)
    S = (1.5 * torch.randn(11, 11, generator=g, dtype=torch.float64)).requires_grad_(True)
    a = torch.randn(11, generator=g, dtype=torch.float64).requires_grad_(True)
    out = F.alpha_tuba(S, a, alpha=0.3, backend=backend)
    ref = R.alpha_tuba(S, a, alpha=0.3)
    torch.testing.assert_close(out.mi, ref.mi, rtol=1e-12, atol=1e-12)
    for got, want in zip(torch.autograd.grad(out.loss, (S, a)), torch.autograd.grad(ref.loss, (S, a))):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)


def naive_leave_one_out(S):
    """The textbook log(e^L - e^S) = S + softplus^-1(L - S): what a dominating entry breaks."""
    L = torch.logsumexp(S, 1, keepdim=True)
    return S + torch.log(torch.expm1(L - S))


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_negative_that_dominates_its_row_keeps_float32_accuracy(backend):
    """Row 0's negative S[0, 3] = 25 dwarfs the rest: its leave-one-out log-sum-exp (the other entries,
    ~log 7) is lost to cancellation by the textbook formula in fp32, and kept by the exact one."""
    g = torch.Generator().manual_seed(4)
    S = 0.3 * torch.randn(8, 8, generator=g)
    S[0, 3] = 25.0
    exact = R.alpha_tuba(S.double(), alpha=1.0).mi
    got = F.alpha_tuba(S, alpha=1.0, backend=backend).mi
    assert abs(got.item() - exact.item()) < 1e-5
    loo = naive_leave_one_out(S)[0, 3].item()
    want = torch.logsumexp(S.double()[0, torch.arange(8) != 3], 0).item()
    assert not abs(loo - want) < 1e-2  # the naive entry is -inf or off by far more than fp32 rounding
    torch.testing.assert_close(interpolated.leave_one_out_lse(S)[0, 3].double(), torch.tensor(want, dtype=torch.float64),
                               rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("backend", BACKENDS)
def test_alpha_zero_is_tuba_and_alpha_one_is_capped_by_log_n_minus_one(backend):
    g = torch.Generator().manual_seed(6)
    S = 3 * torch.randn(9, 9, generator=g, dtype=torch.float64)
    a = torch.randn(9, generator=g, dtype=torch.float64)
    torch.testing.assert_close(F.alpha_tuba(S, a, alpha=0.0, backend=backend).mi, F.tuba(S, a, backend=backend).mi)
    easy = 50 * torch.eye(9, dtype=torch.float64)
    assert F.alpha_tuba(easy, alpha=1.0, backend=backend).mi.item() == pytest.approx(math.log(8), abs=1e-9)
    assert F.alpha_tuba(S, alpha=1.0, backend=backend).mi.item() <= math.log(8)


@pytest.mark.parametrize("backend", BACKENDS)
def test_minus_inf_negatives_give_finite_gradients(backend):
    S = torch.randn(5, 5, dtype=torch.float64)
    S[1, 3] = S[2, 0] = -math.inf
    S.requires_grad_(True)
    out = F.alpha_tuba(S, 0.2, alpha=0.4, backend=backend)
    (g,) = torch.autograd.grad(out.loss, S)
    assert torch.isfinite(out.mi) and torch.isfinite(g).all()
    torch.testing.assert_close(out.mi, R.alpha_tuba(S.detach(), 0.2, alpha=0.4).mi)


def test_reference_supports_double_backward():
    S = torch.randn(5, 5, dtype=torch.float64, requires_grad=True)
    (g,) = torch.autograd.grad(F.alpha_tuba(S, alpha=0.5, backend="reference").loss, S, create_graph=True)
    (h,) = torch.autograd.grad(g.sum(), S)
    assert torch.isfinite(h).all()


def test_module_learns_its_baseline():
    mod = fastmi.nn.AlphaTUBA(alpha=0.2)
    a = torch.zeros(6, requires_grad=True)
    mod(torch.randn(6, 6), a).loss.backward()
    assert a.grad is not None and torch.isfinite(a.grad).all() and mod.options["alpha"] == 0.2


# --- l1out ------------------------------------------------------------------------------------------


def gaussian_log_density(x, y, rho):
    """M[i, j] = log N(y_j; rho x_i, 1 - rho^2): the true conditional of a standard bivariate normal."""
    var = 1 - rho**2
    return -0.5 * ((y[None, :] - rho * x[:, None]) ** 2 / var + math.log(2 * math.pi * var))


@pytest.mark.parametrize("backend", [b for b in BACKENDS if b != "triton"])  # n = 3000: too slow interpreted
def test_l1out_of_the_true_conditional_is_close_to_the_mi_and_is_oriented_by_columns(backend):
    """L1Out averages q(y_i | x_j) over the x's: with the true conditional it estimates MI (0.51 nats at
    rho = 0.8); averaging over the y's instead (the transpose) estimates 0.40, a different quantity."""
    g = torch.Generator().manual_seed(8)
    rho, n = 0.8, 3000
    x = torch.randn(n, generator=g, dtype=torch.float64)
    y = rho * x + math.sqrt(1 - rho**2) * torch.randn(n, generator=g, dtype=torch.float64)
    M = gaussian_log_density(x, y, rho)
    mi = -0.5 * math.log(1 - rho**2)
    assert F.l1out(M, backend=backend).mi.item() == pytest.approx(mi, abs=0.04)
    assert F.l1out(M.T, backend=backend).mi.item() == pytest.approx(0.3998, abs=0.04)


@pytest.mark.parametrize("backend", BACKENDS)
def test_l1out_is_minimized_as_it_is(backend):
    M = torch.randn(6, 6, dtype=torch.float64, requires_grad=True)
    out = F.l1out(M, backend=backend)
    assert out.loss.item() == out.mi.item()
    (g,) = torch.autograd.grad(out.loss, M)
    assert (g.diagonal() == 1 / 6).all()  # d(+mean_i M_ii)/dM_ii: pushing log q(y_i|x_i) up raises the bound
    torch.testing.assert_close(out.mi, F.infonce(M.T, negatives="off_diagonal", backend=backend).mi)


BAD = [
    (lambda: F.l1out(torch.randn(3, 4)), ValueError, "square"),
    (lambda: F.l1out(torch.randn(3, 3), positives=torch.arange(3)), ValueError, "None, the diagonal"),
    (lambda: F.l1out(torch.randn(3, 3), negatives="all"), ValueError, "negatives='all' is not defined"),
    (lambda: F.alpha_tuba(torch.randn(3, 3), alpha=1.5), ValueError, "alpha"),
    (lambda: F.alpha_tuba(torch.randn(3, 3), alpha=None), TypeError, "alpha"),
    (lambda: F.alpha_tuba(torch.randn(3, 3), torch.zeros(2)), ValueError, "log_baseline"),
    (lambda: fastmi.nn.AlphaTUBA(alpha=-0.1), ValueError, "alpha"),
]


@pytest.mark.parametrize("make,exc,text", BAD, ids=[str(i) for i in range(len(BAD))])
def test_bad_input_names_the_argument(make, exc, text):
    with pytest.raises(exc, match=text):
        make()
