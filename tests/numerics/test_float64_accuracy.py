"""float64 inputs give float64 results on every backend (issue 19, item 4): each family against the
float64 oracle of tests/oracle.py, to ~1e-12 relative. Cases from the issue: a Python-number zeta
(was rounded to float32), nb_mim with eps = 1e-3 (an fp32-grade shortcut in the CPU kernel), mmd_imq
with a large common offset (Triton centred in fp32)."""
import math

import pytest
import torch

import fastmi
import fastmi.functional as F
from numerics import numerics_oracle as O

BACKENDS = [b for b in ("cpu", "triton", "reference") if fastmi.info()[b][0]]
D = torch.float64
RTOL, ATOL = 1e-12, 1e-13


def _grads(out, *inputs):
    return torch.autograd.grad(out, inputs)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", ["infonce", "dv", "nwj", "tuba", "js", "smile", "mine"])
@pytest.mark.parametrize("layout", ["diag", "index", "mask"])
def test_critic_bounds(backend, name, layout):
    g = torch.Generator().manual_seed(1)
    n, m = (7, 7) if layout == "diag" else (6, 9)
    S = torch.randn(n, m, generator=g, dtype=D) * 3
    pos = {"diag": None, "index": torch.randint(0, m, (n,), generator=g),
           "mask": torch.rand(n, m, generator=g) < 0.3}[layout]
    kw = dict(reg_weight=0.3, reg_target=0.5)
    if name in ("dv", "nwj", "tuba", "smile"):
        kw["clip"] = 2.5
    S1 = S.clone().requires_grad_(True)
    if name == "mine":
        out = F.mine(S1, torch.tensor(0.7, dtype=D), positives=pos, backend=backend, **kw)
        extra = dict(running_lme=0.7)
    else:
        out = getattr(F, name)(S1, positives=pos, backend=backend, **kw)
        extra = {}
    S2 = S.clone().requires_grad_(True)
    P, N = O.masks(n, m, pos, infonce=name == "infonce")
    loss, mi, sur = O.critic(name, S2, P, N, **kw, **extra)
    O.assert_matches(out.loss, loss, D, rtol=RTOL, atol=ATOL, what="loss")
    O.assert_matches(out.mi, mi, D, rtol=RTOL, atol=ATOL, what="mi")
    O.assert_matches(_grads(out.loss, S1)[0], _grads(sur, S2)[0], D, rtol=1e-11, atol=ATOL, what="grad")


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", ["infonce_separable", "dv_separable", "nwj_separable"])
@pytest.mark.parametrize("normalize", [False, True])
def test_separable(backend, name, normalize):
    g = torch.Generator().manual_seed(2)
    x, y = torch.randn(9, 5, generator=g, dtype=D), torch.randn(9, 5, generator=g, dtype=D)
    t = torch.tensor(0.3, dtype=D)
    ins = [v.clone().requires_grad_(True) for v in (x, y, t)]
    out = getattr(F, name)(ins[0], ins[1], temperature=ins[2], normalize=normalize, backend=backend)
    ref = [v.clone().requires_grad_(True) for v in (x, y, t)]
    P, N = O.masks(9, 9, infonce=name == "infonce_separable")
    loss, mi, sur = O.critic(name.replace("_separable", ""), O.separable_scores(*ref, normalize), P, N)
    O.assert_matches(out.loss, loss, D, rtol=RTOL, atol=ATOL, what="loss")
    for a, b, what in zip(_grads(out.loss, *ins), _grads(sur, *ref), ("x", "y", "temperature")):
        O.assert_matches(a, b, D, rtol=1e-11, atol=1e-12, what=f"d{what}")


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("offset", [0.0, 1e3])
@pytest.mark.parametrize("estimator", ["unbiased", "biased"])
def test_mmd_imq(backend, offset, estimator):
    g = torch.Generator().manual_seed(3)
    x = torch.randn(13, 4, generator=g, dtype=D) + offset
    y = 0.7 * torch.randn(11, 4, generator=g, dtype=D) + 0.3 + offset
    xs, ys = x.clone().requires_grad_(True), y.clone().requires_grad_(True)
    got = F.mmd_imq(xs, ys, scales=[0.5, 2.0], estimator=estimator, backend=backend)
    xr, yr = x.clone().requires_grad_(True), y.clone().requires_grad_(True)
    want = O.mmd_imq(xr, yr, [2.0, 8.0], estimator == "unbiased")
    O.assert_matches(got, want, D, rtol=1e-11, atol=1e-14, what="value")
    for a, b, what in zip(_grads(got, xs, ys), _grads(want, xr, yr), "xy"):
        O.assert_matches(a, b, D, rtol=1e-10, atol=1e-13, what=f"d{what}")


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("pool", [None, "global"])
@pytest.mark.parametrize("zeta", [0.1, 1 / 3])
def test_fd_smoothness_with_a_number_zeta(backend, pool, zeta):
    g = torch.Generator().manual_seed(4)
    a = torch.randn(5, 3, 4, 4, generator=g, dtype=D)
    b = a + 0.01 * torch.randn(5, 3, 4, 4, generator=g, dtype=D)
    got = F.fd_smoothness(a, b, zeta, pool=pool, backend=backend)
    O.assert_matches(got, O.fd_smoothness(a, b, zeta, pool), D, rtol=1e-14, atol=0, what="R_c")


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("eps", [1e-7, 1e-3])
@pytest.mark.parametrize("prior", ["v1", "v2"])
def test_nb_mim(backend, eps, prior):
    g = torch.Generator().manual_seed(5)
    h = torch.randn(2, 10, 8, 8, generator=g, dtype=D) * 2  # the case (eps = 1e-3, pool = 3)
    h1, h2 = h.clone().requires_grad_(True), h.clone().requires_grad_(True)
    got = F.nb_mim([h1], pool=3, eps=eps, prior=prior, backend=backend)
    loss, ent, rp = O.nb_mim([h2], pool=3, eps=eps, prior=prior)
    O.assert_matches(got.entropy, ent, D, rtol=RTOL, atol=ATOL, what="entropy")
    O.assert_matches(got.prior, rp, D, rtol=RTOL, atol=ATOL, what="prior")
    O.assert_matches(_grads(got.loss, h1)[0], _grads(loss, h2)[0], D, rtol=1e-11, atol=1e-13, what="grad")


@pytest.mark.parametrize("backend", BACKENDS)
def test_gaussian_kl(backend):
    g = torch.Generator().manual_seed(6)
    mu, std = torch.randn(4, 6, generator=g, dtype=D), torch.rand(4, 6, generator=g, dtype=D) + 0.1
    O.assert_matches(F.gaussian_kl(mu, std, sigma=1 / 3), O.gaussian_kl(mu, std, 1 / 3), D, rtol=1e-14, atol=0)
