"""Property tests (hypothesis) of the numerics rules, against the float64 oracle of tests/oracle.py:

* an entry whose true gradient is finite gets a finite gradient, whatever its row neighbours do:
  shapes 1..2x the SIMD width in both dimensions (every tail length), rows that overflow (one score
  of 100, 1e4 or +inf) or underflow (a log-sum-exp far below exp's range), -inf and NaN entries;
* float64 inputs give float64 accuracy, fp32 inputs fp32 accuracy;
* fp16/bf16 cosine critics stay within the reference's own half-precision error;
* results are bitwise identical over repeated calls and for 1 and 2 threads.
"""
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import fastmi
import fastmi.functional as F
from numerics import numerics_oracle as O
from helpers import threads

pytestmark = pytest.mark.skipif(not fastmi.info()["cpu"][0], reason="fastmi._C not available")
BACKENDS = ["cpu", "reference"]
CRITICS = ["infonce", "dv", "nwj", "tuba", "js", "smile", "mine"]
TOL = {torch.float32: (5e-5, 2e-6), torch.float64: (1e-10, 1e-12)}




@st.composite
def score_problems(draw):
    n, m = draw(st.integers(1, 19)), draw(st.integers(1, 19))
    dtype = draw(st.sampled_from([torch.float32, torch.float64]))
    gen = torch.Generator().manual_seed(draw(st.integers(0, 2**31 - 1)))
    S = torch.randn(n, m, generator=gen, dtype=torch.float64) * draw(st.sampled_from([1.0, 5.0]))
    # special rows: one overflowing score, an underflowing row, -inf / NaN entries
    for _ in range(draw(st.integers(0, 3))):
        i, j = draw(st.integers(0, n - 1)), draw(st.integers(0, m - 1))
        kind = draw(st.sampled_from(["big", "huge", "inf", "low_row", "ninf", "nan"]))
        if kind == "low_row":
            S[i] = -1e3 + torch.randn(m, generator=gen, dtype=torch.float64)
        else:
            S[i, j] = {"big": 100.0 if dtype == torch.float32 else 800.0, "huge": 1e4, "inf": math.inf,
                       "ninf": -math.inf, "nan": math.nan}[kind]
    kind = draw(st.sampled_from(["diag", "index", "mask"]))
    if kind == "diag":
        S, positives = S[:, :n] if m >= n else torch.randn(n, n, generator=gen, dtype=torch.float64), None
    elif kind == "index":
        positives = torch.randint(0, m, (n,), generator=gen)
    else:
        positives = torch.rand(S.shape, generator=gen) < 0.3
    negatives = draw(st.sampled_from([None, "all", "off_positive", "off_diagonal"]))
    return S.to(dtype).contiguous(), positives, negatives


@settings(max_examples=150, deadline=None)
@given(score_problems(), st.sampled_from(CRITICS), st.sampled_from(BACKENDS), st.booleans())
def test_critic_gradients_follow_the_oracle(problem, name, backend, regularized):
    S, positives, negatives = problem
    dtype = S.dtype
    kw = dict(reg_weight=0.3, reg_target=0.5) if regularized else {}
    if name in ("dv", "nwj", "tuba", "smile"):
        kw["clip"] = 5.0 if name == "smile" else None
    S1 = S.clone().requires_grad_(True)
    try:
        if name == "mine":
            out = F.mine(S1, torch.tensor(0.25, dtype=dtype), positives=positives, negatives=negatives,
                         backend=backend, **kw)
        else:
            out = getattr(F, name)(S1, positives=positives, negatives=negatives, backend=backend, **kw)
    except ValueError:  # a layout without negative pairs: the oracle has nothing to say either
        return
    out.loss.backward()
    S2 = S.double().requires_grad_(True)
    P, N = O.masks(*S.shape, positives, negatives, infonce=name == "infonce")
    loss, mi, sur = O.critic(name, S2, P, N, **kw, **({"running_lme": 0.25} if name == "mine" else {}))
    (want,) = torch.autograd.grad(sur, S2)
    rtol, atol = TOL[dtype]
    finite = S[torch.isfinite(S)]
    big = float(finite.abs().max()) if finite.numel() else 1.0
    rtol += 4 * torch.finfo(dtype).eps * big  # S - (a statistic of S's size) keeps big's absolute rounding
    O.assert_matches(S1.grad, want, dtype, rtol=rtol, atol=atol, what=f"{name} {backend} grad")
    if torch.isfinite(loss):
        O.assert_matches(out.loss, loss, dtype, rtol=rtol, atol=atol + 4 * torch.finfo(dtype).eps * big,
                         what=f"{name} {backend} loss")


@st.composite
def separable_problems(draw):
    n, m = draw(st.integers(1, 19)), draw(st.integers(1, 19))
    d = draw(st.integers(1, 9))
    dtype = draw(st.sampled_from([torch.float32, torch.float64]))
    gen = torch.Generator().manual_seed(draw(st.integers(0, 2**31 - 1)))
    x = torch.randn(n, d, generator=gen, dtype=dtype)
    y = torch.randn(m, d, generator=gen, dtype=dtype)
    if draw(st.booleans()):  # rows far outside exp's range (CLIP's temperature cap, or larger)
        x[draw(st.integers(0, n - 1))] *= draw(st.sampled_from([30.0, 1e3]))
    normalize = draw(st.booleans()) and d > 1
    positives = None if n == m and draw(st.booleans()) else torch.randint(0, m, (n,), generator=gen)
    negatives = draw(st.sampled_from([None, "all", "off_positive"] + (["off_diagonal"] if positives is None else [])))
    t = draw(st.sampled_from([0.01, 0.2, 1.0]))
    return x, y, dict(temperature=torch.tensor(t, dtype=dtype) if draw(st.booleans()) else t, normalize=normalize,
                      positives=positives, negatives=negatives)


@settings(max_examples=100, deadline=None)
@given(separable_problems(), st.sampled_from(["infonce_separable", "dv_separable", "nwj_separable"]),
       st.sampled_from(BACKENDS))
def test_separable_gradients_follow_the_oracle(problem, name, backend):
    x, y, kw = problem
    dtype = x.dtype
    t = kw["temperature"]
    ins = [x.clone().requires_grad_(True), y.clone().requires_grad_(True)]
    if isinstance(t, torch.Tensor):
        ins.append(t.clone().requires_grad_(True))
    try:
        out = getattr(F, name)(ins[0], ins[1], backend=backend, **dict(kw, temperature=ins[2] if len(ins) > 2 else t))
    except ValueError:
        return
    grads = torch.autograd.grad(out.loss, ins)
    ref = [v.detach().double().requires_grad_(True) for v in ins]
    S = O.separable_scores(ref[0], ref[1], ref[2] if len(ref) > 2 else t, kw["normalize"])
    P, N = O.masks(x.shape[0], y.shape[0], kw["positives"], kw["negatives"], infonce=name == "infonce_separable")
    loss, _, sur = O.critic(name.replace("_separable", ""), S, P, N)
    want = torch.autograd.grad(sur, ref)
    # Where dL/dS_ij itself overflows the dtype, dx = sum_j dL/dS_ij b_j y_j / ... may be finite in
    # exact arithmetic only by cancellation of infinite terms; every backend (the reference too) then
    # gives inf - inf = NaN. That is the same entry overflowing, not a neighbour: not checked here.
    S_leaf = S.detach().clone().requires_grad_(True)
    (dS,) = torch.autograd.grad(O.critic(name.replace("_separable", ""), S_leaf, P, N)[2], S_leaf)
    if not torch.isfinite(dS.to(dtype)).all() or \
            O.separable_branch_bound(dS, x, y, t, kw["normalize"]) > torch.finfo(dtype).max / 16:
        return
    rtol, atol = TOL[dtype]
    big = float(S.detach().abs().max())
    rtol += 8 * torch.finfo(dtype).eps * max(big, 1.0)
    for a, b, what in zip(grads, want, ("x", "y", "temperature")):
        O.assert_matches(a, b, dtype, rtol=rtol, atol=atol * max(1.0, big), what=f"{name} {backend} d{what}")


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 2**31 - 1), st.sampled_from([torch.float16, torch.bfloat16]),
       st.sampled_from(["infonce_separable", "nwj_separable"]))
def test_half_cosine_critic_within_the_references_error(seed, dtype, name):
    gen = torch.Generator().manual_seed(seed)
    y = torch.randn(12, 16, generator=gen)
    x = (y + 0.05 * torch.randn(12, 16, generator=gen)).to(dtype)  # near-cancelling gradient branches
    y = y.to(dtype)
    ref64 = [v.double().requires_grad_(True) for v in (x, y)]
    P, N = O.masks(12, 12, infonce=name == "infonce_separable")
    _, _, sur = O.critic(name.replace("_separable", ""), O.separable_scores(*ref64, 0.5, True), P, N)
    truth = torch.autograd.grad(sur, ref64)
    errors = {}
    for backend in ("cpu", "reference"):
        ins = [v.clone().requires_grad_(True) for v in (x, y)]
        out = getattr(F, name)(*ins, temperature=0.5, normalize=True, backend=backend)
        got = torch.autograd.grad(out.loss, ins)
        errors[backend] = max(float((g.double() - t).abs().max() / t.abs().max()) for g, t in zip(got, truth))
    assert errors["cpu"] <= 1.5 * errors["reference"] + torch.finfo(dtype).eps


# --- reproducibility ----------------------------------------------------------------------------
def _family_call(family, gen, dtype):
    """(fn, inputs) of one fused CPU call of ``family`` on random inputs spanning several tiles."""
    if family == "critic_lse":
        S = torch.randn(260, 300, generator=gen).to(dtype)
        pos = torch.randint(0, 300, (260,), generator=gen)
        return (lambda s: F.nwj(s, positives=pos, reg_weight=0.1, backend="cpu").loss), [S]
    if family == "separable":
        x, y = (torch.randn(600, 8, generator=gen).to(dtype) for _ in range(2))
        return (lambda a, b: F.infonce_separable(a, b, normalize=True, symmetric=True, backend="cpu").loss), [x, y]
    if family == "mmd_imq":
        x, y = torch.randn(300, 5, generator=gen).to(dtype), torch.randn(280, 5, generator=gen).to(dtype)
        return (lambda a, b: F.mmd_imq(a, b, backend="cpu")), [x, y]
    if family == "softmax_stats":
        return (lambda h: F.nb_mim([h], backend="cpu").loss), [torch.randn(70, 6, 5, 5, generator=gen).to(dtype)]
    a, b = torch.randn(30, 4, 6, 6, generator=gen).to(dtype), torch.randn(30, 4, 6, 6, generator=gen).to(dtype)
    return (lambda u, v: F.fd_smoothness(u, v, 0.3, pool="global", backend="cpu")), [a, b]


def _value_and_grads(fn, inputs):
    ins = [t.clone().requires_grad_(True) for t in inputs]
    out = fn(*ins)
    return [out.detach()] + list(torch.autograd.grad(out, ins))


@settings(max_examples=20, deadline=None)
@given(st.sampled_from(["critic_lse", "separable", "mmd_imq", "softmax_stats", "fd_jacobian"]),
       st.sampled_from([torch.float32, torch.float64]), st.integers(0, 2**31 - 1),
       st.lists(st.sampled_from([1, 2]), min_size=2, max_size=4))
def test_bitwise_reproducible_over_calls_and_thread_counts(family, dtype, seed, thread_counts):
    fn, inputs = _family_call(family, torch.Generator().manual_seed(seed), dtype)
    with threads(2):
        first = _value_and_grads(fn, inputs)
    for k in thread_counts:
        with threads(k):
            again = _value_and_grads(fn, inputs)
        for a, b in zip(first, again):
            assert torch.equal(a, b), f"{family} with {k} thread(s): max difference {float((a - b).abs().max())}"


# --- float64 accuracy of the other families -----------------------------------------------------
@settings(max_examples=40, deadline=None)
@given(st.integers(2, 19), st.integers(2, 19), st.integers(1, 9), st.sampled_from([0.0, 1e3, -5e4]),
       st.integers(0, 2**31 - 1), st.sampled_from(BACKENDS))
def test_mmd_imq_float64(n, m, K, offset, seed, backend):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, K, generator=gen, dtype=torch.float64) + offset
    y = torch.randn(m, K, generator=gen, dtype=torch.float64) * 1.5 + offset
    ins = [x.clone().requires_grad_(True), y.clone().requires_grad_(True)]
    got = F.mmd_imq(*ins, backend=backend)
    ref = [x.clone().requires_grad_(True), y.clone().requires_grad_(True)]
    want = O.mmd_imq(*ref, [float(K)])
    O.assert_matches(got, want, torch.float64, rtol=1e-10, atol=1e-13, what="value")
    for a, b in zip(torch.autograd.grad(got, ins), torch.autograd.grad(want, ref)):
        O.assert_matches(a, b, torch.float64, rtol=1e-9, atol=1e-13, what="grad")


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 9), st.integers(2, 17), st.integers(1, 7), st.integers(1, 7), st.sampled_from([0, 2, 3]),
       st.sampled_from([1e-7, 1e-3, 0.0]), st.integers(0, 2**31 - 1), st.sampled_from(BACKENDS))
def test_nb_mim_float64(B, C, H, W, pool, eps, seed, backend):
    h = torch.randn(B, C, H, W, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) * 3
    h1, h2 = h.clone().requires_grad_(True), h.clone().requires_grad_(True)
    e = eps if eps > 0 else 1e-9
    got = F.nb_mim([h1], pool=pool, eps=e, backend=backend)
    loss, ent, rp = O.nb_mim([h2], pool=pool, eps=e)
    O.assert_matches(got.entropy, ent, torch.float64, rtol=1e-11, atol=1e-13, what="entropy")
    O.assert_matches(got.prior, rp, torch.float64, rtol=1e-11, atol=1e-13, what="prior")
    (g1,), (g2,) = torch.autograd.grad(got.loss, h1), torch.autograd.grad(loss, h2)
    O.assert_matches(g1, g2, torch.float64, rtol=1e-9, atol=1e-13, what="grad")
