"""The critic_lse family through the public API: every estimator, layout and backend against the
float64 reference; gradcheck, opcheck and torch.compile; bad input; extreme values."""
import math

import pytest
import torch

import fastmi
import fastmi.functional as F
import oracle as R

torch.manual_seed(0)

from fastmi.critic_lse.bounds import BOUNDS
from helpers import GPU, bound_cases, fused, needs, on

FUSED = fused("critic_lse")
needs_cpu = needs("critic_lse", "cpu")

# (estimator, options) pairs derived from the table of bounds; every one is compared on every layout.
CASES = bound_cases()


def make_layout(kind, n, m, gen):
    """(positives, negatives) for a layout name."""
    if kind == "diag":
        return None, None
    if kind == "diag_all":
        return None, "all"
    if kind == "index":
        return torch.randint(0, m, (n,), generator=gen), None
    if kind == "index_offpos":
        return torch.randint(0, m, (n,), generator=gen), "off_positive"
    if kind == "diag_shifted":  # k = 3 negatives per anchor: columns i + 1, i + 2, i + 3 (mod n)
        return None, 3
    if kind == "index_sampled":  # an n x 4 index of negative columns, repeats included
        idx = torch.randint(0, m, (n, 4), generator=gen)
        idx[0, 1] = idx[0, 0]
        return torch.randint(0, m, (n,), generator=gen), idx
    mask = torch.rand(n, m, generator=gen) < 0.3
    mask[0, min(1, m - 1)] = True
    if kind == "mask":
        return mask, None
    return mask, "off_positive"


def run(name, scores, backend, opts, positives, negatives, *, ref=False):
    """(loss, mi, grads) of one estimator; grads w.r.t. the scores (and a tensor log-baseline)."""
    opts = dict(opts)
    leaves = [on(backend, scores.detach()).clone().requires_grad_(True)]
    for key in [k for k, v in opts.items() if v == "per_row"]:
        base = torch.linspace(-0.5, 1.5, scores.shape[0], dtype=scores.dtype)
        leaves.append(on(backend, base).requires_grad_(True))
        opts[key] = leaves[-1]
    kw = dict(opts, positives=on(backend, positives), negatives=negatives)
    if ref:
        out = getattr(R, name)(leaves[0], **kw)
    else:
        out = getattr(F, name)(leaves[0], backend=backend, **kw)
    grads = torch.autograd.grad(out.loss, leaves, materialize_grads=True)  # alpha_tuba(alpha=1) ignores its baseline
    return out.loss.detach().cpu(), out.mi.cpu(), [g.cpu() for g in grads]


def compare(name, opts, scores, positives, negatives, backend, rtol, atol):
    loss, mi, grads = run(name, scores, backend, opts, positives, negatives)
    rloss, rmi, rgrads = run(name, scores.double(), None, opts, positives, negatives, ref=True)
    torch.testing.assert_close(mi.double(), rmi, rtol=rtol, atol=atol)
    torch.testing.assert_close(loss.double(), rloss, rtol=rtol, atol=atol)
    for g, rg in zip(grads, rgrads):
        torch.testing.assert_close(g.double(), rg, rtol=rtol, atol=atol)


LAYOUTS = ["diag", "diag_all", "index", "index_offpos", "mask", "mask_offpos", "diag_shifted", "index_sampled"]


def defined(name, layout, positives, negatives) -> bool:
    """Whether the bound is defined on the layout (else the test is skipped: test_edges checks the errors)."""
    bound = BOUNDS[name]
    if layout.split("_")[0] not in bound.positive_kinds:
        return False
    if isinstance(negatives, (int, torch.Tensor)):
        return bound.sampled_negatives
    return negatives is None or negatives in bound.negatives_allowed


@pytest.mark.parametrize("backend", FUSED)
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("name,opts", CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)])
def test_matches_reference_float64(name, opts, layout, backend):
    gen = torch.Generator().manual_seed(1)
    n, m = (17, 17) if layout.startswith("diag") else (17, 11)
    scores = 2 * torch.randn(n, m, generator=gen, dtype=torch.float64)
    positives, negatives = make_layout(layout, n, m, gen)
    if not defined(name, layout, positives, negatives):
        pytest.skip(f"{name} is not defined on the layout {layout}")
    compare(name, opts, scores, positives, negatives, backend, rtol=1e-10, atol=1e-12)


SHAPES = [(2, 2), (3, 3), (17, 17), (129, 129), (129, 70), (70, 129)]


@pytest.mark.parametrize("backend", FUSED)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("name", ["infonce", "dv", "nwj", "js", "smile"])
def test_float32_odd_sizes(name, shape, backend):
    """fp32 kernels vs the float64 reference. Tolerance: fp32 rounding of O(n*m) terms of size O(1)."""
    if backend == "triton" and shape[0] * shape[1] > 129 * 70 and name not in ("infonce", "dv"):
        pytest.skip("interpreter time: the largest shapes run for infonce and dv only")
    gen = torch.Generator().manual_seed(2)
    n, m = shape
    scores = torch.randn(n, m, generator=gen)
    positives = None if n == m else torch.randint(0, m, (n,), generator=gen)
    compare(name, {}, scores, positives, None, backend, rtol=2e-5, atol=2e-6)


@pytest.mark.parametrize("backend", FUSED)
def test_n_equals_one_infonce(backend):
    scores = on(backend, torch.tensor([[3.5]]))
    out = F.infonce(scores, backend=backend)
    assert out.mi.item() == 0.0 and out.loss.item() == 0.0


@pytest.mark.parametrize("backend", FUSED)
@pytest.mark.parametrize("name", ["infonce", "dv", "smile", "js"])
def test_non_contiguous(name, backend):
    gen = torch.Generator().manual_seed(3)
    base = torch.randn(40, 34, generator=gen)
    views = [base.t()[:17, :17], base[::2, ::2][:17, :17], base[:17, 3:20]]
    for scores in views:
        assert not scores.is_contiguous()
        compare(name, {}, scores, None, None, backend, rtol=2e-5, atol=2e-6)


@pytest.mark.parametrize("backend", FUSED)
@pytest.mark.parametrize("name", ["infonce", "dv", "smile"])
def test_large_magnitude_scores_float32(name, backend):
    """Scores of magnitude 1e4 in fp32: finite, and equal to the float64 reference."""
    gen = torch.Generator().manual_seed(4)
    scores = 1e4 * torch.randn(33, 33, generator=gen)
    loss, mi, (g,) = run(name, scores, backend, {}, None, None)
    assert torch.isfinite(loss) and torch.isfinite(mi) and torch.isfinite(g).all()
    compare(name, {}, scores, None, None, backend, rtol=1e-5, atol=1e-3)


@pytest.mark.parametrize("backend", FUSED)
def test_nwj_large_negative_scores_finite(backend):
    scores = torch.full((9, 9), -1e4)
    scores.fill_diagonal_(2.0)
    out = F.nwj(on(backend, scores), backend=backend)
    assert torch.isfinite(out.mi) and abs(out.mi.item() - 2.0) < 1e-6


@pytest.mark.parametrize("backend", FUSED)
def test_nwj_overflow_matches_reference(backend):
    """e^S overflows for S >> 88 in fp32 exactly as on the reference backend: -inf, not NaN (the
    float64 oracle does not overflow there: e^199 is finite in float64)."""
    scores = torch.full((5, 5), 200.0)
    assert F.nwj(on(backend, scores), backend=backend).mi.item() == -math.inf
    assert F.nwj(scores, backend="reference").mi.item() == -math.inf
    assert math.isfinite(R.nwj(scores).mi.item())


@pytest.mark.parametrize("backend", FUSED)
def test_all_equal_rows(backend):
    scores = on(backend, torch.full((8, 8), 3.0))
    assert abs(F.infonce(scores, backend=backend).mi.item()) < 1e-6
    assert abs(F.dv(scores, backend=backend).mi.item()) < 1e-6


@pytest.mark.parametrize("backend", FUSED + ["reference"])
def test_nan_propagates(backend):
    scores = torch.randn(6, 6)
    scores[2, 4] = float("nan")
    scores = on(backend, scores)
    for fn in (F.infonce, F.dv, F.nwj, F.smile):
        assert torch.isnan(fn(scores, backend=backend).mi)


@pytest.mark.parametrize("backend", FUSED)
def test_neg_inf_scores(backend):
    """-inf entries are excluded pairs for the log-sum-exp (as in masked attention)."""
    scores = torch.randn(6, 6, dtype=torch.float64)
    scores[1, 3] = -math.inf
    compare("infonce", {}, scores, None, None, backend, rtol=1e-10, atol=1e-12)


# --- the reference against closed forms ---------------------------------------------------------


def test_reference_closed_forms():
    n, c = 8, 2.0
    eye = c * torch.eye(n, dtype=torch.float64)
    expected_infonce = math.log(n) + c - math.log(math.exp(c) + n - 1)
    assert math.isclose(R.infonce(eye).mi.item(), expected_infonce, rel_tol=1e-12)
    assert math.isclose(R.dv(eye).mi.item(), c, rel_tol=1e-12)  # off-diagonal scores are all 0
    assert math.isclose(R.nwj(eye).mi.item(), c - math.exp(-1), rel_tol=1e-12)
    assert math.isclose(R.tuba(eye, 0.0).mi.item(), c, rel_tol=1e-12)
    assert math.isclose(R.tuba(eye, 1.0).mi.item(), R.nwj(eye).mi.item(), rel_tol=1e-12)
    assert math.isclose(R.smile(10 * eye, clip=5.0).mi.item(), 20.0, rel_tol=1e-12)
    assert math.isclose(R.smile(10 * eye, clip=5.0, clip_positives=True).mi.item(), 5.0, rel_tol=1e-12)


def test_infonce_with_labels_is_log_c_minus_cross_entropy():
    logits = torch.randn(12, 10, dtype=torch.float64)
    labels = torch.randint(0, 10, (12,))
    ce = torch.nn.functional.cross_entropy(logits, labels)
    for backend in FUSED + ["reference"]:
        mi = F.infonce(on(backend, logits), positives=on(backend, labels), backend=backend).mi
        assert math.isclose(mi.item(), math.log(10) - ce.item(), rel_tol=1e-10)


def test_regularizer_not_in_mi_and_gradient_of_js_is_surrogate():
    scores = torch.randn(10, 10, dtype=torch.float64, requires_grad=True)
    plain, reg = F.dv(scores), F.dv(scores, reg_weight=0.5, reg_target=1.0)
    assert plain.mi.item() == pytest.approx(reg.mi.item(), rel=1e-12)
    lme = torch.logsumexp(scores[~torch.eye(10, dtype=torch.bool)], 0) - math.log(90)
    assert reg.loss.item() == pytest.approx(-plain.mi.item() + 0.5 * (lme.item() - 1.0) ** 2, rel=1e-12)
    out = F.js(scores)
    assert out.loss.item() == pytest.approx(-F.nwj(scores).mi.item(), rel=1e-12)
    (g,) = torch.autograd.grad(out.loss, scores)
    off = ~torch.eye(10, dtype=torch.bool)
    j = -torch.nn.functional.softplus(-scores.diagonal()).mean() - torch.nn.functional.softplus(scores[off]).mean()
    (gj,) = torch.autograd.grad(-j, scores)
    torch.testing.assert_close(g, gj)


def test_vector_form():
    tj, tm = torch.randn(20, dtype=torch.float64), torch.randn(30, dtype=torch.float64)
    lme = torch.logsumexp(tm, 0) - math.log(30)
    for backend in FUSED + ["reference"]:
        tj, tm = on(backend, tj), on(backend, tm)
        assert F.dv(joint=tj, marginal=tm, backend=backend).mi.item() == pytest.approx((tj.mean() - lme).item())
        nwj = tj.mean() - (tm - 1).exp().mean()
        assert F.nwj(joint=tj, marginal=tm, backend=backend).mi.item() == pytest.approx(nwj.item())
        tuba = 1 + tj.mean() - tm.exp().mean()
        assert F.tuba(joint=tj, marginal=tm, backend=backend).mi.item() == pytest.approx(tuba.item())
        smile = tj.mean() - (torch.logsumexp(tm.clamp(-0.5, 0.5), 0) - math.log(30))
        assert F.smile(joint=tj[:, None], marginal=tm, clip=0.5, backend=backend).mi.item() == pytest.approx(
            smile.item())


# --- MINE -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("backend", FUSED + ["reference"])
def test_mine_moving_average(backend):
    mine = fastmi.nn.MINE(momentum=0.9, backend=backend).double().to(on(backend, torch.empty(0)).device)
    s1 = on(backend, torch.randn(7, 7, dtype=torch.float64))
    s2 = on(backend, torch.randn(7, 7, dtype=torch.float64)).requires_grad_(True)
    off = on(backend, ~torch.eye(7, dtype=torch.bool))
    lme = lambda s: (torch.logsumexp(s.detach()[off], 0) - math.log(42)).item()  # noqa: E731
    mine(s1)
    assert mine.running_lme.item() == pytest.approx(lme(s1))
    out = mine(s2)
    ema = 0.9 * math.exp(lme(s1)) + 0.1 * math.exp(lme(s2))
    assert mine.running_lme.item() == pytest.approx(math.log(ema))
    assert out.mi.item() == pytest.approx(F.dv(s2.detach()).mi.item())
    (g,) = torch.autograd.grad(out.loss, s2)
    sur = s2.diagonal().mean() - s2[off].exp().mean() / ema
    (gs,) = torch.autograd.grad(-sur, s2)
    torch.testing.assert_close(g, gs)
    mine.reset()
    assert math.isnan(mine.running_lme.item())


# --- custom-op machinery --------------------------------------------------------------------------


@needs_cpu
@pytest.mark.parametrize("kind", ["diag", "index", "mask"])
def test_gradcheck_cpu_kernel(kind):
    """gradcheck of the fused op itself (all six statistics, finite clip) and of the true-gradient losses."""
    gen = torch.Generator().manual_seed(5)
    n, m = (6, 6) if kind == "diag" else (6, 5)
    scores = torch.randn(n, m, generator=gen, dtype=torch.float64, requires_grad=True)
    pos, _ = make_layout(kind, n, m, gen)
    idx = pos if kind == "index" else None
    mask = pos if kind == "mask" else None
    for neg_mode in (0, 1, 2):
        torch.autograd.gradcheck(lambda s: torch.ops.fastmi.critic_lse(s, idx, mask, neg_mode, 0.7, 63), (scores,))
    for fn in (F.infonce, F.dv, F.nwj):
        torch.autograd.gradcheck(lambda s: fn(s, positives=pos, backend="cpu", reg_weight=0.3).loss, (scores,))
    base = torch.randn(n, dtype=torch.float64, generator=gen, requires_grad=True)
    torch.autograd.gradcheck(lambda s, a: F.tuba(s, a, positives=pos, backend="cpu").loss, (scores, base))


def _op_samples(dtype=torch.float64):
    gen = torch.Generator().manual_seed(6)
    s = torch.randn(9, 9, generator=gen, dtype=dtype, requires_grad=True)
    r = torch.randn(9, 7, generator=gen, dtype=dtype, requires_grad=True)
    return [
        (s, None, None, 1, 1.5, 63),
        (s, None, None, 0, math.inf, 9),
        (r, torch.randint(0, 7, (9,), generator=gen), None, 0, 0.5, 63),
        (r, None, torch.rand(9, 7, generator=gen) < 0.4, 2, 2.0, 63),
    ]


@needs_cpu
def test_opcheck_cpu():
    for args in _op_samples():
        torch.library.opcheck(torch.ops.fastmi.critic_lse.default, args)
        stats = torch.ops.fastmi.critic_lse(*[a.detach() if isinstance(a, torch.Tensor) else a for a in args])
        bargs = (torch.randn_like(stats), args[0].detach()) + args[1:] + (stats,)
        torch.library.opcheck(torch.ops.fastmi.critic_lse_backward.default, bargs)


@pytest.mark.skipif("triton" not in FUSED, reason="Triton backend not available")
def test_opcheck_triton():
    for args in _op_samples()[:2]:
        args = tuple(on("triton", a.detach()).requires_grad_(a.requires_grad) if isinstance(a, torch.Tensor) else a
                     for a in args)
        torch.library.opcheck(torch.ops.fastmi.critic_lse_triton.default, args)


@needs_cpu
@pytest.mark.parametrize("name", ["infonce", "dv"])
def test_torch_compile_fullgraph(name):
    fn = getattr(F, name)
    scores = torch.randn(33, 33)
    compiled = torch.compile(lambda s: fn(s, reg_weight=0.1), fullgraph=True)
    s1, s2 = scores.clone().requires_grad_(), scores.clone().requires_grad_()
    out, ref = compiled(s1), fn(s2, reg_weight=0.1)
    torch.testing.assert_close(out.mi, ref.mi)
    out.loss.backward()
    ref.loss.backward()
    torch.testing.assert_close(s1.grad, s2.grad)


# --- bad input --------------------------------------------------------------------------------------


BAD = [
    (lambda: F.infonce(torch.randn(4)), ValueError, "scores must be 2-D"),
    (lambda: F.dv(torch.randint(0, 3, (4, 4))), TypeError, "floating dtype"),
    (lambda: F.dv([[1.0]]), TypeError, "scores must be a torch.Tensor"),
    (lambda: F.dv(torch.randn(4, 5)), ValueError, "square"),
    (lambda: F.dv(torch.randn(1, 1)), ValueError, "n >= 2"),
    (lambda: F.dv(torch.randn(0, 0)), ValueError, "empty"),
    (lambda: F.infonce(torch.randn(4, 5), positives=torch.tensor([0, 1, 5, 2])), ValueError, "positives"),
    (lambda: F.infonce(torch.randn(4, 5), positives=torch.tensor([0, 1])), ValueError, "length n=4"),
    (lambda: F.infonce(torch.randn(4, 5), positives=torch.ones(4, 4, dtype=torch.bool)), ValueError, "mask"),
    (lambda: F.infonce(torch.randn(4, 5), positives=torch.ones(4)), TypeError, "positives"),
    (lambda: F.dv(torch.randn(4, 4), negatives="some"), ValueError, "negatives"),
    (lambda: F.dv(torch.randn(4, 4), clip=0.0), ValueError, "clip"),
    (lambda: F.dv(torch.randn(4, 4), reg_weight=-1.0), ValueError, "reg_weight"),
    (lambda: F.dv(torch.randn(4, 4), reg_norm="l3"), ValueError, "reg_norm"),
    (lambda: F.dv(torch.randn(4, 4), backend="gpu"), ValueError, "backend"),
    (lambda: F.tuba(torch.randn(4, 4), torch.zeros(3)), ValueError, "log_baseline"),
    (lambda: F.dv(joint=torch.randn(3)), TypeError, "marginal"),
    (lambda: F.dv(torch.randn(3, 3), joint=torch.randn(3), marginal=torch.randn(3)), TypeError, "not both"),
    (lambda: F.dv(joint=torch.randn(3), marginal=torch.randn(3).double()), TypeError, "marginal"),
    (lambda: F.mine(torch.randn(4, 4), None), TypeError, "running_lme"),
    (lambda: F.mine(torch.randn(4, 4), torch.tensor(0.0), momentum=1.0), ValueError, "momentum"),
    (lambda: fastmi.nn.MINE(momentum=1.5), ValueError, "momentum"),
]


@pytest.mark.parametrize("call,exc,text", BAD, ids=[b[2] for b in BAD])
def test_bad_input(call, exc, text):
    with pytest.raises(exc, match=text):
        call()


def test_mixed_devices_named():
    if not torch.cuda.is_available():
        scores, labels = torch.randn(4, 5), torch.zeros(4, dtype=torch.long, device="meta")
    else:
        scores, labels = torch.randn(4, 5), torch.zeros(4, dtype=torch.long, device="cuda")
    with pytest.raises(ValueError, match="positives is on"):
        F.infonce(scores, positives=labels)


# --- GPU: half precision through the public API ------------------------------------------------------


@pytest.mark.gpu
@pytest.mark.skipif(not GPU, reason="needs CUDA")
@pytest.mark.parametrize("backend", [b for b in ("triton", "cuda") if b in FUSED])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("name", ["infonce", "dv", "nwj", "js", "smile"])
def test_half_precision_cuda(name, dtype, backend):
    """fp32 accumulation: the fused error on half inputs is no worse than the reference's own
    error computed in that half dtype (plus a small tolerance), against float64 on the same values."""
    gen = torch.Generator().manual_seed(7)
    scores = (2 * torch.randn(257, 257, generator=gen)).to(dtype)
    exact = getattr(R, name)(scores.double())
    own = getattr(R, name)(scores.cuda())
    fused = getattr(F, name)(scores.cuda(), backend=backend)
    own_err = (own.mi.double().cpu() - exact.mi).abs().item()
    fused_err = (fused.mi.double().cpu() - exact.mi).abs().item()
    assert fused_err <= own_err + 1e-4 * max(1.0, abs(exact.mi.item()))
    assert fused.mi.dtype == torch.float32


# --- regressions from review ------------------------------------------------------------------------


@pytest.mark.parametrize("backend", FUSED)
def test_double_backward_raises_on_fused_and_works_on_reference(backend):
    s = on(backend, torch.randn(5, 5, dtype=torch.float64)).requires_grad_(True)
    with pytest.raises(RuntimeError, match="second-order"):
        torch.autograd.grad(F.dv(s, backend=backend).loss, s, create_graph=True)
    r = torch.randn(5, 5, dtype=torch.float64, requires_grad=True)
    (g,) = torch.autograd.grad(F.dv(r, backend="reference").loss, r, create_graph=True)
    assert torch.autograd.grad((g ** 2).sum(), r)[0].abs().sum() > 0


@pytest.mark.parametrize("backend", FUSED + ["reference"])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_inputs_accumulate_in_fp32(backend, dtype):
    scores = (2 * torch.randn(300, 300, generator=torch.Generator().manual_seed(8))).to(dtype)
    for name in ("dv", "nwj", "js", "smile", "infonce"):
        exact = getattr(R, name)(scores.double()).mi
        out = getattr(F, name)(on(backend, scores), backend=backend)
        assert out.mi.dtype == torch.float32
        assert abs(out.mi.item() - exact.item()) < 1e-4 * max(1.0, abs(exact.item()))


@pytest.mark.parametrize("backend", FUSED + ["reference"])
@pytest.mark.parametrize("name", ["dv", "nwj", "tuba", "js", "smile", "infonce"])
def test_nonfinite_outside_the_pairs_does_not_leak(name, backend):
    """An inf/NaN entry that is neither positive nor negative touches neither value nor gradient."""
    s = torch.randn(4, 6, dtype=torch.float64)
    s[0, 0], s[1, 1] = math.nan, math.inf
    s = on(backend, s).requires_grad_(True)
    out = getattr(F, name)(s, positives=on(backend, torch.tensor([1, 2, 3, 4])), negatives="off_diagonal",
                           backend=backend)
    (g,) = torch.autograd.grad(out.loss, s)
    assert torch.isfinite(out.mi) and torch.isfinite(g).all()
    assert g[0, 0].item() == 0.0


@pytest.mark.parametrize("backend", FUSED + ["reference"])
@pytest.mark.parametrize("name", ["dv", "nwj", "js", "smile", "infonce"])
def test_no_positive_pair_skips_the_step(name, backend):
    s = on(backend, torch.randn(6, 6, dtype=torch.float64)).requires_grad_(True)
    out = getattr(F, name)(s, positives=on(backend, torch.zeros(6, 6, dtype=torch.bool)), backend=backend)
    (g,) = torch.autograd.grad(out.loss, s)
    assert math.isnan(out.mi.item()) and out.loss.item() == 0.0 and (g == 0).all()


def test_vector_form_rejects_negatives():
    with pytest.raises(TypeError, match="negatives"):
        F.dv(joint=torch.randn(3), marginal=torch.randn(3), negatives="all")


@pytest.mark.parametrize("backend", FUSED + ["reference"])
def test_mine_does_not_update_in_eval_mode(backend):
    mine = fastmi.nn.MINE(backend=backend).to(on(backend, torch.empty(0)).device)
    s = on(backend, torch.randn(6, 6))
    mine(s)
    before = mine.running_lme.clone()
    mine.eval()
    mine(s + 3.0)
    assert torch.equal(mine.running_lme, before)


@pytest.mark.parametrize("backend", FUSED + ["reference"])
@pytest.mark.parametrize("layout", ["diag", "diag_all", "index", "index_offpos"])
def test_flo_per_row_u_matches_oracle(backend, layout):
    gen = torch.Generator().manual_seed(5)
    n, m = (9, 9) if layout.startswith("diag") else (9, 7)
    scores = 2 * torch.randn(n, m, generator=gen, dtype=torch.float64)
    positives, negatives = make_layout(layout, n, m, gen)
    u = torch.randn(n, generator=gen, dtype=torch.float64)
    leaves = [on(backend, scores).requires_grad_(True), on(backend, u).requires_grad_(True)]
    out = F.flo(leaves[0], leaves[1], positives=on(backend, positives), negatives=negatives, backend=backend)
    got = torch.autograd.grad(out.loss, leaves)
    refs = [scores.clone().requires_grad_(True), u.clone().requires_grad_(True)]
    ref = R.flo(refs[0], refs[1], positives=positives, negatives=negatives)
    want = torch.autograd.grad(ref.loss, refs)
    torch.testing.assert_close(out.mi.cpu(), ref.mi, rtol=1e-10, atol=1e-12)
    for g, w in zip(got, want):
        torch.testing.assert_close(g.cpu(), w, rtol=1e-10, atol=1e-12)


def test_flo_is_tight_at_its_optimal_u_and_refuses_masks():
    S = torch.randn(8, 8, dtype=torch.float64)
    off = ~torch.eye(8, dtype=torch.bool)
    u_star = torch.stack([torch.logsumexp(S[i][off[i]] - S[i, i], 0) - math.log(7) for i in range(8)])
    assert F.flo(S, u_star).mi.item() == pytest.approx((-u_star).mean().item(), rel=1e-12)
    assert F.flo(S, u_star).mi.item() >= F.flo(S, u_star + 0.3).mi.item()   # a lower bound for every u
    with pytest.raises(ValueError, match="positives as a mask"):
        F.flo(S, positives=torch.eye(8, dtype=torch.bool))
