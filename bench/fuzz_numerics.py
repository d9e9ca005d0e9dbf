"""Fuzz campaign of the numerics rules: many random cases per kernel family and backend against the
independent float64 oracle of tests/oracle.py.

Each case draws a random shape (small for the Triton interpreter), dtype, layout and options, and
special values (a score of 100 / 1e4 / +inf, a row far below exp's range, -inf and NaN entries,
rows of huge norm, large common offsets), then checks:

* values and gradients against the oracle, entry by entry (``oracle.assert_matches``): an entry
  whose true gradient is finite must be finite and accurate (fp32: ~5e-5 relative plus the rounding
  of the inputs' magnitude; fp64: ~1e-10; fp16/bf16: half-precision), an overflowing one non-finite;
* determinism: a second call on the same inputs is bitwise identical (CPU: once with 1 thread).

    python -m bench.fuzz_numerics --seconds 600 [--families critic_lse,separable] [--backends cpu,triton]

prints a table of cases run and failures per family and backend, and writes the failing cases
(family, backend, seed, message) to --out (JSON). TRITON_INTERPRET=1 is set when there is no GPU.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import random
import sys
import time
import traceback

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests"))

from numerics import numerics_oracle as O  # noqa: E402

import fastmi  # noqa: E402
import fastmi.functional as F  # noqa: E402

D = torch.float64
CRITICS = ["infonce", "dv", "nwj", "tuba", "js", "smile", "mine"]


def _tol(dtype, big=1.0):
    eps = torch.finfo(dtype).eps
    base = {torch.float64: (1e-10, 1e-12), torch.float32: (5e-5, 2e-6)}.get(dtype, (4 * eps, 4 * eps))
    return base[0] + 4 * torch.finfo(dtype if dtype in (torch.float32, torch.float64) else torch.float32).eps * big, \
        base[1]


def _grads(out, ins):
    return torch.autograd.grad(out, ins, allow_unused=True)


def _deterministic(fn, backend):
    """fn() twice (once with 1 thread on the CPU backend): bitwise identical tensors."""
    first = fn()
    old = torch.get_num_threads()
    try:
        if backend == "cpu":
            torch.set_num_threads(1)
        again = fn()
    finally:
        torch.set_num_threads(old)
    for a, b in zip(first, again):
        if a is None:
            continue
        same = torch.equal(a, b) or torch.equal(a.nan_to_num(), b.nan_to_num()) and torch.equal(a.isnan(), b.isnan())
        assert same, f"not deterministic: max difference {float((a - b).abs().nan_to_num().max())}"


# --- families -----------------------------------------------------------------------------------
def case_critic_lse(rng, backend):
    small = backend == "triton"
    n, m = rng.randint(1, 12 if small else 40), rng.randint(1, 12 if small else 40)
    dtype = rng.choice([torch.float32, torch.float64] + ([torch.float16, torch.bfloat16] if backend != "reference" else []))
    gen = torch.Generator().manual_seed(rng.randrange(2**31))
    S = torch.randn(n, m, generator=gen, dtype=D) * rng.choice([0.1, 1.0, 5.0, 30.0])
    for _ in range(rng.randint(0, 3)):
        i, j = rng.randrange(n), rng.randrange(m)
        kind = rng.choice(["big", "huge", "inf", "low_row", "ninf", "nan"])
        if kind == "low_row":
            S[i] = -1e3 + torch.randn(m, generator=gen, dtype=D)
        else:
            S[i, j] = {"big": 100.0 if dtype != D else 800.0, "huge": 1e4, "inf": math.inf, "ninf": -math.inf,
                       "nan": math.nan}[kind]
    kind = rng.choice(["diag", "index", "mask"])
    if kind == "diag":
        S, pos = (S[:, :n] if m >= n else torch.randn(n, n, generator=gen, dtype=D)), None
    elif kind == "index":
        pos = torch.randint(0, m, (n,), generator=gen)
    else:
        pos = torch.rand(S.shape, generator=gen) < rng.choice([0.1, 0.4])
    neg = rng.choice([None, "all", "off_positive", "off_diagonal"])
    name = rng.choice(CRITICS)
    kw = {}
    if rng.random() < 0.5:
        kw.update(reg_weight=rng.choice([0.1, 1.0]), reg_target=rng.choice([0.0, 1.0]), reg_norm=rng.choice(["l2", "l1"]))
    if name in ("dv", "nwj", "tuba", "smile"):
        kw["clip"] = rng.choice([None, 1.0, 10.0]) if name != "smile" else rng.choice([None, 5.0])
    if name == "smile" and rng.random() < 0.3:
        kw["clip_positives"] = True
    if name == "js":
        kw["value"] = rng.choice(["nwj", "nwj_shifted"])
    Sd = S.to(dtype)
    S64 = Sd.to(D)  # the oracle sees the values the backend sees

    def run():
        S1 = Sd.clone().requires_grad_(True)
        if name == "mine":
            running = torch.tensor(0.5, dtype=torch.float64 if dtype == D else torch.float32)  # MINE's buffer dtype
            out = F.mine(S1, running, positives=pos, negatives=neg, backend=backend, **kw)
        else:
            out = getattr(F, name)(S1, positives=pos, negatives=neg, backend=backend, **kw)
        return [out.loss.detach(), out.mi, _grads(out.loss, [S1])[0]]

    try:
        got = run()
    except ValueError:
        return "skip"
    P, N = O.masks(n, S.shape[1], pos, neg, infonce=name == "infonce")
    okw = {k: v for k, v in kw.items() if k != "value"}
    if name == "js":
        okw["js_value"] = kw["value"]
    if name == "mine":
        okw["running_lme"] = 0.5
    S2 = S64.clone().requires_grad_(True)
    loss, mi, sur = O.critic(name, S2, P, N, **okw)
    (want,) = torch.autograd.grad(sur, S2)
    finite = S64[torch.isfinite(S64)]
    big = float(finite.abs().max()) if finite.numel() else 1.0
    rtol, atol = _tol(dtype, big)
    if dtype in (torch.float16, torch.bfloat16):
        O.assert_matches(got[2], want, dtype, rtol=rtol, atol=atol, what="grad")
        rtol, atol = _tol(torch.float32, big)
    else:
        O.assert_matches(got[2], want, dtype, rtol=rtol, atol=atol, what="grad")
    if torch.isfinite(loss):
        O.assert_matches(got[0], loss, torch.float32 if dtype != D else D, rtol=rtol,
                         atol=atol + 4 * torch.finfo(torch.float32 if dtype != D else D).eps * big, what="loss")
    _deterministic(run, backend)
    return "ok"


def case_separable(rng, backend):
    small = backend == "triton"
    n, m, d = rng.randint(1, 10 if small else 40), rng.randint(1, 10 if small else 40), rng.randint(1, 9 if small else 40)
    dtype = rng.choice([torch.float32, torch.float64])
    gen = torch.Generator().manual_seed(rng.randrange(2**31))
    x = torch.randn(n, d, generator=gen, dtype=dtype) * rng.choice([0.1, 1.0, 3.0])
    y = torch.randn(m, d, generator=gen, dtype=dtype)
    if rng.random() < 0.4:
        x[rng.randrange(n)] *= rng.choice([30.0, 1e3])
    normalize = d > 1 and rng.random() < 0.5
    pos = None if (n <= m and rng.random() < 0.5) else torch.randint(0, m, (n,), generator=gen)
    neg = rng.choice([None, "all", "off_positive", "off_diagonal"])
    t = rng.choice([0.01, 0.07, 0.5, 2.0])
    learn = rng.random() < 0.4
    name = rng.choice(["infonce_separable", "dv_separable", "nwj_separable"])
    sym = name == "infonce_separable" and pos is None and n == m and rng.random() < 0.4
    kw = dict(normalize=normalize, positives=pos, negatives=neg)
    if sym:
        kw["symmetric"] = True
    if rng.random() < 0.3:
        kw.update(reg_weight=0.2, reg_target=0.5)

    def run():
        ins = [x.clone().requires_grad_(True), y.clone().requires_grad_(True)]
        tt = torch.tensor(t, dtype=dtype, requires_grad=True) if learn else t
        out = getattr(F, name)(*ins, temperature=tt, backend=backend, **kw)
        return [out.loss.detach(), out.mi] + list(_grads(out.loss, ins + ([tt] if learn else [])))

    try:
        got = run()
    except ValueError:
        return "skip"
    ref = [x.double().requires_grad_(True), y.double().requires_grad_(True)]
    tt = torch.tensor(t, dtype=D, requires_grad=True) if learn else t
    S = O.separable_scores(ref[0], ref[1], tt, normalize)
    P, N = O.masks(n, m, pos, neg, infonce=name == "infonce_separable")
    okw = {k: v for k, v in kw.items() if k.startswith("reg")}
    base = name.replace("_separable", "")
    loss, _, sur = O.critic(base, S, P, N, **okw)
    if sym:
        lt, _, st = O.critic(base, S.T, P.T, N.T, **okw)
        loss, sur = (loss + lt) / 2, (sur + st) / 2
    want = torch.autograd.grad(sur, ref + ([tt] if learn else []))
    S_leaf = S.detach().clone().requires_grad_(True)
    sur_s = O.critic(base, S_leaf, P, N, **okw)[2]
    (dS,) = torch.autograd.grad(sur_s, S_leaf)
    big = float(S.detach().abs().max())
    rtol, atol = _tol(dtype, max(big, 1.0) * 2)
    # else: the same entry overflows, or the branches that cancel to dx (see the property tests)
    if torch.isfinite(dS.to(dtype)).all() and O.separable_branch_bound(dS, x, y, t, normalize) < torch.finfo(dtype).max / 16:
        for a, b, what in zip(got[2:], want, ("x", "y", "temperature")):
            O.assert_matches(a, b, dtype, rtol=rtol, atol=atol * max(1.0, big), what=f"d{what}")
    if torch.isfinite(loss):
        O.assert_matches(got[0], loss, dtype, rtol=rtol, atol=atol + 4 * torch.finfo(dtype).eps * big, what="loss")
    _deterministic(run, backend)
    return "ok"


def case_mmd_imq(rng, backend):
    small = backend == "triton"
    n, m, K = rng.randint(2, 12 if small else 300), rng.randint(2, 12 if small else 300), rng.randint(1, 8 if small else 24)
    dtype = rng.choice([torch.float32, torch.float64])
    gen = torch.Generator().manual_seed(rng.randrange(2**31))
    offset = rng.choice([0.0, 0.0, 30.0, 1e3])
    spread = rng.choice([1e-2, 1.0, 10.0])
    x = (torch.randn(n, K, generator=gen, dtype=D) * spread + offset).to(dtype)
    y = (torch.randn(m, K, generator=gen, dtype=D) * spread * rng.choice([0.5, 1.0, 2.0]) + offset
         + rng.choice([0.0, 0.5 * spread])).to(dtype)
    scales = rng.choice([None, [0.2, 1.0, 5.0]])
    scale = rng.choice([None, spread ** 2 * K])
    est = rng.choice(["unbiased", "biased"])

    def run():
        ins = [x.clone().requires_grad_(True), y.clone().requires_grad_(True)]
        v = F.mmd_imq(*ins, scale=scale, scales=scales, estimator=est, backend=backend)
        return [v.detach()] + list(_grads(v, ins))

    got = run()
    ref = [x.to(D).requires_grad_(True), y.to(D).requires_grad_(True)]
    base = float(K) if scale is None else scale
    cs = [base] if scales is None else [base * s for s in scales]
    want = O.mmd_imq(*ref, cs, est == "unbiased")
    wg = torch.autograd.grad(want, ref)
    # MMD^2 is a difference of kernel means of size <= number of scales: absolute tolerances; the
    # gradient's scale is that of dk/dz = 2 C (z - z') / (C + d2)^2 summed with 1/n weights
    eps = torch.finfo(dtype).eps
    cond = 1.0 + (abs(offset) + spread) / spread  # rounding of the inputs relative to their spread
    O.assert_matches(got[0], want, dtype, rtol=0, atol=(1e3 if dtype == torch.float32 else 1e2) * eps * cond * len(cs),
                     scale=1.0, what="value")
    gscale = max(float(torch.cat([g.abs().reshape(-1) for g in wg]).max()), 1e-300)
    for a, b, what in zip(got[1:], wg, "xy"):
        O.assert_matches(a, b, dtype, rtol=0, atol=1e4 * eps * cond, scale=gscale,
                         what=f"d{what}")
    _deterministic(run, backend)
    return "ok"


def case_softmax_stats(rng, backend):
    small = backend == "triton"
    B, C = rng.randint(1, 6 if small else 70), rng.randint(2, 12 if small else 40)
    H, W = rng.randint(1, 6 if small else 12), rng.randint(1, 6 if small else 12)
    dtype = rng.choice([torch.float32, torch.float64])
    gen = torch.Generator().manual_seed(rng.randrange(2**31))
    h = (torch.randn(B, C, H, W, generator=gen, dtype=D) * rng.choice([0.1, 1.0, 5.0, 30.0])).to(dtype)
    if rng.random() < 0.3:
        h = h.contiguous(memory_format=torch.channels_last)
    pool, eps, prior = rng.choice([0, 2, 3]), rng.choice([1e-7, 1e-4, 1e-3]), rng.choice(["v1", "v2"])
    alpha = rng.choice([0.0, 2.0])

    def run():
        h1 = h.clone().requires_grad_(True)
        out = F.nb_mim([h1], alpha=alpha, prior=prior, pool=pool, eps=eps, backend=backend)
        return [out.entropy, out.prior, _grads(out.loss, [h1])[0]]

    got = run()
    h2 = h.to(D).requires_grad_(True)
    loss, ent, rp = O.nb_mim([h2], alpha=alpha, prior=prior, pool=pool, eps=eps)
    (wg,) = torch.autograd.grad(loss, h2)
    rtol, atol = _tol(dtype, float(h.abs().max()))
    O.assert_matches(got[0], ent, dtype, rtol=rtol, atol=atol, what="entropy")
    O.assert_matches(got[1], rp, dtype, rtol=rtol, atol=atol, what="prior")
    O.assert_matches(got[2], wg, dtype, rtol=rtol * 10, atol=atol * 10, what="grad")
    _deterministic(run, backend)
    return "ok"


def case_fd_jacobian(rng, backend):
    small = backend == "triton"
    B = rng.randint(2, 8 if small else 64)
    shape = rng.choice([(B, rng.randint(1, 40)), (B, rng.randint(1, 6), rng.randint(1, 6), rng.randint(1, 6))])
    dtype = rng.choice([torch.float32, torch.float64])
    gen = torch.Generator().manual_seed(rng.randrange(2**31))
    a = (torch.randn(*shape, generator=gen, dtype=D) * rng.choice([1e-3, 1.0, 1e3])).to(dtype)
    b = (a.to(D) + torch.randn(*shape, generator=gen, dtype=D) * rng.choice([1e-4, 1.0])).to(dtype)
    pool = "global" if len(shape) == 4 and rng.random() < 0.5 else None
    zeta = rng.choice([0.1, 1 / 3, -0.05])
    if rng.random() < 0.3:
        zeta = (torch.rand(B, generator=gen, dtype=D) + 0.1).to(dtype)

    def run():
        ins = [a.clone().requires_grad_(True), b.clone().requires_grad_(True)]
        v = F.fd_smoothness(*ins, zeta, pool=pool, backend=backend)
        return [v.detach()] + list(_grads(v, ins))

    got = run()
    ref = [a.to(D).requires_grad_(True), b.to(D).requires_grad_(True)]
    want = O.fd_smoothness(*ref, zeta.to(D) if isinstance(zeta, torch.Tensor) else zeta, pool)
    wg = torch.autograd.grad(want, ref)
    rtol, atol = _tol(dtype)
    O.assert_matches(got[0], want, dtype, rtol=rtol, atol=0, what="R_c")
    for g1, g2, what in zip(got[1:], wg, ("clean", "perturbed")):
        O.assert_matches(g1, g2, dtype, rtol=rtol, atol=atol, what=f"d{what}")
    _deterministic(run, backend)
    # the perturbation: steps of length |zeta| along unit directions in the span of the centred batch
    x = torch.randn(B, 7, generator=gen, dtype=dtype) * rng.choice([1e-3, 1.0, 1e3]) + rng.choice([0.0, 10.0])
    seed = rng.randrange(2**31)

    def perturb():
        torch.manual_seed(seed)
        return list(F.perturb_in_span(x, noise=rng_noise, backend=backend))

    rng_noise = rng.choice(["bernoulli", "gaussian"])
    xt, z = perturb()
    step = (xt.to(D) - x.to(D)).norm(dim=1)
    moved = step > 0
    zf = float(z.abs()) if z.dim() == 0 else None
    if zf is not None and moved.any():
        err = float(((step[moved] - zf) / zf).abs().max())
        assert err < (1e-4 if dtype == torch.float32 else 1e-10) * (1 + float(x.abs().max()) / zf) ** 1, \
            f"perturbation step off |zeta| by {err:.3g}"
    xc = x.to(D) - x.to(D).mean(0)
    q, _ = torch.linalg.qr(xc.T)
    resid = (xt.to(D) - x.to(D)) - ((xt.to(D) - x.to(D)) @ q) @ q.T
    assert float(resid.abs().max()) <= (1e-3 if dtype == torch.float32 else 1e-9) * max(zf or 1.0, 1.0) * (1 + float(x.abs().max())), \
        "perturbation leaves the span of the centred batch"
    _deterministic(perturb, backend)
    return "ok"


FAMILIES = {"critic_lse": case_critic_lse, "separable": case_separable, "mmd_imq": case_mmd_imq,
            "softmax_stats": case_softmax_stats, "fd_jacobian": case_fd_jacobian}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--seconds", type=float, default=300.0, help="time budget per family and backend")
    p.add_argument("--families", default=",".join(FAMILIES))
    p.add_argument("--backends", default="cpu,triton,reference")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-cases", type=int, default=10**9)
    p.add_argument("--out", default="fuzz_failures.json")
    args = p.parse_args(argv)
    info = fastmi.info()
    backends = [b for b in args.backends.split(",") if info[b][0]]
    rows, failures = [], []
    for fam in args.families.split(","):
        for backend in backends:
            rng = random.Random(f"{args.seed}-{fam}-{backend}")
            ran = skipped = failed = 0
            t0 = time.time()
            while time.time() - t0 < args.seconds and ran + skipped < args.max_cases:
                case_seed = rng.randrange(2**63)
                try:
                    if FAMILIES[fam](random.Random(case_seed), backend) == "skip":
                        skipped += 1
                        continue
                except Exception as e:  # noqa: BLE001 - every failure is recorded
                    failed += 1
                    failures.append(dict(family=fam, backend=backend, seed=case_seed,
                                         error=f"{type(e).__name__}: {str(e)[:500]}",
                                         where=traceback.format_exc().splitlines()[-3][:300]))
                ran += 1
            rows.append((fam, backend, ran, failed, skipped))
            print(f"{fam:14s} {backend:9s} cases {ran:6d}  failures {failed:4d}  (skipped layouts {skipped})", flush=True)
    with open(args.out, "w") as f:
        json.dump(dict(settings=dict(seconds=args.seconds, seed=args.seed, torch=torch.__version__,
                                     date=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())),
                       columns=["family", "backend", "cases", "failures", "skipped"], rows=rows, failures=failures),
                  f, indent=1)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
