"""Step 1 of the ahead-of-time (AOT) check: which Triton ops the public functions call, with what.

Runs every family's public functions with ``backend="triton"`` on CPU tensors (TRITON_INTERPRET=1
lets the Triton backend accept them), forward and backward, at representative shapes and dtypes and
with every option that changes a kernel's compile-time constants. A TorchDispatchMode records each
call of a ``fastmi::*_triton*`` custom op (tensor arguments as shape / strides / storage offset /
dtype, the other arguments as given) and answers it with zeros of the op's output shapes instead of
running it: the kernels' arithmetic is the other tests' business, and skipping it lets the shapes be
GPU-sized (a 4096 x 4096 score matrix, CIFAR-sized Neural Bayes states) at no cost.

Step 2 (``bench.aot_triton``) replays each recorded op call as it would run on a GPU and compiles
the kernels it launches. Run this module in a process of its own (the interpreter must be on before
triton is imported):

    TRITON_INTERPRET=1 python -m bench.aot_capture calls.json
"""
from __future__ import annotations

import contextlib
import json
import os
import sys
from typing import Callable, NamedTuple

if __name__ == "__main__" and os.environ.get("TRITON_INTERPRET") != "1":
    sys.exit("bench.aot_capture: run with TRITON_INTERPRET=1 (the Triton backend must accept CPU tensors)")

import torch
from torch.utils._python_dispatch import TorchDispatchMode

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16, "fp64": torch.float64}
FAMILIES = ("critic_lse", "separable", "softmax_stats", "mmd_imq", "fd_jacobian")


class Case(NamedTuple):
    family: str
    label: str
    run: Callable[[], None]


# ---------------------------------------------------------------------------------------------
# recording


def encode(value):
    """A JSON-able description of an op argument: tensors by layout, not by value."""
    if isinstance(value, torch.Tensor):
        return {"tensor": {"shape": list(value.shape), "stride": list(value.stride()),
                           "offset": value.storage_offset(), "dtype": str(value.dtype).replace("torch.", "")}}
    if isinstance(value, (list, tuple)):
        return [encode(v) for v in value]
    if isinstance(value, float) and value != value:
        return {"float": "nan"}
    if isinstance(value, float) and value in (float("inf"), float("-inf")):
        return {"float": "inf" if value > 0 else "-inf"}
    return value


def _zeros_like_layout(t: torch.Tensor) -> torch.Tensor:
    return torch.zeros_like(torch.empty_strided(t.shape, t.stride(), dtype=t.dtype), memory_format=torch.preserve_format)


class RecordTritonOps(TorchDispatchMode):
    """Records every fastmi Triton op call (op name + encoded arguments) and returns zeros instead."""

    def __init__(self):
        super().__init__()
        self.calls: list[dict] = []
        self.label = ""

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = func.name()
        if not (name.startswith("fastmi::") and "triton" in name):
            return func(*args, **kwargs)
        self.calls.append({"op": name, "args": encode(list(args)), "kwargs": encode(kwargs), "case": self.label})
        # the op's fake (meta) implementation gives the output layout; the values do not matter here
        meta = func(*[a.to("meta") if isinstance(a, torch.Tensor) else a for a in args], **kwargs)
        if isinstance(meta, (tuple, list)):
            return type(meta)(_zeros_like_layout(t) for t in meta)
        return _zeros_like_layout(meta)


# ---------------------------------------------------------------------------------------------
# cases: small grids per family, chosen so that every value of every compile-time constant the
# public options reach appears, each block configuration the launchers pick for realistic sizes
# appears, and integers / pointers appear both divisible by 16 and not (Triton specializes on it).


def _randn(*shape, dtype=torch.float32, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=gen).to(dtype)


def _backward(out) -> None:
    loss = out.loss if hasattr(out, "loss") else out
    loss.backward()


def _critic_cases() -> list[Case]:
    import fastmi.functional as F

    est = {
        "infonce": lambda s, **kw: F.infonce(s, **kw),
        "infonce_reg": lambda s, **kw: F.infonce(s, reg_weight=0.1, **kw),
        "dv": lambda s, **kw: F.dv(s, **kw),
        "dv_clip": lambda s, **kw: F.dv(s, clip=5.0, **kw),
        "dv_reg": lambda s, **kw: F.dv(s, reg_weight=0.1, **kw),
        "mine": lambda s, **kw: F.mine(s, torch.tensor(float("nan")), **kw),
        "nwj": lambda s, **kw: F.nwj(s, **kw),
        "nwj_clip_reg": lambda s, **kw: F.nwj(s, clip=10.0, reg_weight=0.1, **kw),
        "tuba": lambda s, **kw: F.tuba(s, 0.5, **kw),
        "js": lambda s, **kw: F.js(s, **kw),
        "js_reg": lambda s, **kw: F.js(s, reg_weight=0.1, reg_target=1.0, **kw),
        "smile": lambda s, **kw: F.smile(s, **kw),
        "smile_clip_pos": lambda s, **kw: F.smile(s, clip_positives=True, **kw),
        "smile_noclip": lambda s, **kw: F.smile(s, clip=None, **kw),
    }

    def case(name, dt, n, m=None, positives=None, negatives=None, transpose=False):
        m = n if m is None else m

        def run():
            s = _randn(m, n, dtype=DTYPES[dt]).t() if transpose else _randn(n, m, dtype=DTYPES[dt])
            s.requires_grad_(True)
            pos = positives(n, m) if callable(positives) else positives
            _backward(est[name](s, positives=pos, negatives=negatives, backend="triton"))

        lay = "" if positives is None else (" mask" if callable(positives) else " index")
        tag = f"{name} {dt} {n}x{m}{lay} {negatives or ''}{' transposed' if transpose else ''}".strip()
        return Case("critic_lse", tag, run)

    def index(n, m):
        return torch.arange(n) % m

    def mask(n, m):
        return (torch.arange(n)[:, None] % 4) == (torch.arange(m)[None, :] % 4)

    out = []
    # every estimator (the NEED bits, clip) at a training-sized batch (1024: BLOCK_N 1024, 4 rows per program)
    out += [case(e, "fp32", 1024) for e in est]
    # every dtype at the block configurations of n = 4096 (BLOCK_N 4096 / 2048 for fp64, one row per
    # program) and of an odd n = 17 (several rows per program, masked columns)
    out += [case("infonce", dt, 4096) for dt in DTYPES]
    out += [case("smile_clip_pos", dt, 17) for dt in DTYPES]
    # every positives kind x negatives mode (POS_KIND, NEG_MODE), with all six statistics
    for neg in ("all", "off_positive", "off_diagonal"):
        out += [case("smile_clip_pos", "fp32", 256, negatives=neg),
                case("smile_clip_pos", "fp32", 256, positives=index(256, 256), negatives=neg),
                case("smile_clip_pos", "fp32", 256, positives=mask, negatives=neg)]
    # classification logits (SLB: label positives over 10 classes); contrastive-label masks (CLB)
    out += [case("infonce", dt, 512, 10, positives=index(512, 10)) for dt in ("fp32", "bf16")]
    out += [case("dv", "fp32", 100, positives=mask)]
    # a non-contiguous (transposed) score matrix
    out.append(case("infonce", "bf16", 256, transpose=True))

    def vector_form():  # joint= / marginal= critic values: one 1 x (k + l) row with a positive mask
        j, mg = _randn(64, seed=1).requires_grad_(True), _randn(4096, seed=2).requires_grad_(True)
        _backward(F.nwj(joint=j, marginal=mg, backend="triton"))
        _backward(F.dv(joint=j, marginal=mg, backend="triton"))

    out.append(Case("critic_lse", "nwj / dv vector form 64 + 4096", vector_form))
    return out


def _separable_cases() -> list[Case]:
    import fastmi.functional as F

    fns = {"infonce": F.infonce_separable, "dv": F.dv_separable, "nwj": F.nwj_separable}

    def case(name, dt, n, d, precision="highest", **kw):
        def run():
            x = _randn(n, d, dtype=DTYPES[dt], seed=1).requires_grad_(True)
            y = _randn(n, d, dtype=DTYPES[dt], seed=2).requires_grad_(True)
            old = torch.get_float32_matmul_precision()
            torch.set_float32_matmul_precision(precision)
            try:
                _backward(fns[name](x, y, backend="triton", **kw))
            finally:
                torch.set_float32_matmul_precision(old)

        opts = " ".join(f"{k}={'index' if k == 'positives' else v}" for k, v in kw.items())
        tf32 = " tf32" if precision != "highest" and dt == "fp32" else ""
        return Case("separable", f"{name}_separable {dt}{tf32} n={n} d={d} {opts}".strip(), run)

    out = []
    # every dtype at the benchmarks' embedding width d = 256 (BLOCK_D 256, 8 warps); odd n and d
    out += [case("infonce", dt, 1024, 256) for dt in DTYPES]
    out += [case("infonce", dt, 1000, 100) for dt in ("fp32", "bf16")]
    out.append(case("infonce", "fp32", 1024, 256, precision="high"))  # TF32 allowed
    # CLIP / NT-Xent: cosine critic, temperature, both directions (the column pass)
    out += [case("infonce", dt, 1024, 256, temperature=0.07, normalize=True, symmetric=True) for dt in ("fp32", "bf16")]
    # positives by index (each negatives mode); DV / NWJ (off-positive negatives, the positive term)
    idx = torch.randperm(512, generator=torch.Generator().manual_seed(0))
    out += [case("infonce", "bf16", 512, 64, positives=idx, negatives=neg) for neg in ("all", "off_positive",
                                                                                      "off_diagonal")]
    out += [case("dv", "bf16", 1024, 128), case("nwj", "fp32", 512, 64, positives=idx)]
    # narrow embeddings (BLOCK_K / BLOCK_D of 16)
    out.append(case("infonce", "bf16", 512, 16))
    return out


def _softmax_stats_cases() -> list[Case]:
    import fastmi.functional as F

    cifar = [(200, 30, 30), (500, 13, 13), (700, 11, 11), (1000, 3, 3)]  # the paper's CIFAR CNN states

    def case(label, shapes, dt, B=8, pool=2, channels_last=False, fn="nb_mim", **kw):
        def run():
            xs = []
            for i, s in enumerate(shapes):
                x = torch.relu(_randn(B, *s, seed=i)).to(DTYPES[dt])
                if channels_last and x.dim() == 4:
                    x = x.contiguous(memory_format=torch.channels_last)
                xs.append(x.requires_grad_(True))
            if fn == "nb_mi":
                for x in xs:
                    F.nb_mi(x, backend="triton")
            else:
                _backward(F.nb_mim(xs, pool=pool, backend="triton", **kw))

        return Case("softmax_stats", f"{fn} {label} {dt} B={B} pool={pool}", run)

    out = [case("cifar", cifar, "fp32")]  # BLOCK_C 256, 512, 1024, 1024 with 2 x 2 pooling
    out += [case("cifar first state", cifar[:1], dt) for dt in ("bf16", "fp16", "fp64")]
    out += [case("cifar second state, channels-last", cifar[1:2], "fp32", channels_last=True),
            case("h0pool 200x15x15", [(200, 15, 15)], "bf16", pool=0),
            case("mnist 2-D states 64, 10", [(64,), (10,)], "fp32"),
            case("pool 3 on 32x7x7", [(32, 7, 7)], "fp32", pool=3),
            case("eps 1e-5, 10 channels", [(10, 8, 8)], "fp32", eps=1e-5),
            case("cifar last state", cifar[3:], "fp32", fn="nb_mi", pool=0)]
    return out


def _mmd_cases() -> list[Case]:
    import fastmi.functional as F

    def case(dt, n, K, estimator="unbiased", grad=True, scales=None, prior=False, m=None):
        def run():
            z = _randn(n, K, dtype=DTYPES[dt], seed=1)
            if prior:
                out = F.mmd_imq_prior(z.requires_grad_(grad), estimator=estimator, scales=scales, backend="triton")
            else:
                y = _randn(n if m is None else m, K, dtype=DTYPES[dt], seed=2)
                with contextlib.nullcontext() if grad else torch.no_grad():
                    out = F.mmd_imq(z.requires_grad_(grad), y, estimator=estimator, scales=scales, backend="triton")
            if grad:
                out.backward()

        what = "mmd_imq_prior" if prior else "mmd_imq"
        return Case("mmd_imq", f"{what} {dt} n={n}{'' if m is None else f' m={m}'} K={K} {estimator}"
                               f"{'' if grad else ' no grad'}{' WAE scales' if scales else ''}", run)

    # fp16 / bf16 / fp64 inputs reach the kernels as fp32 (mmd_sq and prepare convert them)
    out = [case("fp32", 256, K) for K in (8, 64, 256)]  # BLOCK_K 16, 64, 128
    out += [case("fp32", 256, 64, estimator="biased"), case("fp32", 256, 64, grad=False),
            case("fp32", 512, 8, prior=True, scales=F.WAE_SCALES), case("bf16", 256, 64, m=100)]
    return out


def _fd_cases() -> list[Case]:
    import fastmi.functional as F

    def perturb(dt, B, shape, noise, center):
        def run():
            F.perturb_in_span(_randn(B, *shape, dtype=DTYPES[dt]), noise=noise, center=center, backend="triton")

        return Case("fd_jacobian", f"perturb_in_span {dt} B={B} {shape} {noise} center={center}", run)

    def penalty(dt, B, shape, pool):
        def run():
            a = _randn(B, *shape, dtype=DTYPES[dt], seed=1).requires_grad_(True)
            b = _randn(B, *shape, dtype=DTYPES[dt], seed=2).requires_grad_(True)
            _backward(F.fd_smoothness(a, b, 0.1, pool=pool, backend="triton"))

        return Case("fd_jacobian", f"fd_smoothness {dt} B={B} {shape} pool={pool}", run)

    out = [perturb("fp32", 500, (3, 32, 32), noise, center) for noise in ("bernoulli", "gaussian")
           for center in (True, False)]
    out += [perturb(dt, 100, (1, 28, 28), "bernoulli", True) for dt in ("bf16", "fp64")]
    out += [perturb("fp32", 37, (17,), "gaussian", True)]
    out += [penalty(dt, 500, (512, 4, 4), "global") for dt in DTYPES]
    out += [penalty("fp32", 500, (10,), None), penalty("bf16", 100, (64, 7, 7), "global")]
    return out


def cases(families=FAMILIES) -> list[Case]:
    makers = {"critic_lse": _critic_cases, "separable": _separable_cases, "softmax_stats": _softmax_stats_cases,
              "mmd_imq": _mmd_cases, "fd_jacobian": _fd_cases}
    return [c for f in families for c in makers[f]()]


def capture(families=FAMILIES) -> list[dict]:
    """[{op, args, kwargs, case, family}] for every Triton op call the cases make (duplicates kept)."""
    import warnings

    rec = RecordTritonOps()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # e.g. the reference fallback of a sub-step; not ours to report here
        for c in cases(families):
            start = len(rec.calls)
            rec.label = c.label
            with rec:
                c.run()
            for call in rec.calls[start:]:
                call["family"] = c.family
            if len(rec.calls) == start:
                raise RuntimeError(f"aot capture: case {c.family}: {c.label!r} made no Triton op call")
    return rec.calls


def main(argv=None) -> int:
    import argparse

    p = argparse.ArgumentParser(description="Record the Triton op calls of the public functions (JSON).")
    p.add_argument("out", help="JSON file to write")
    p.add_argument("--families", nargs="*", default=list(FAMILIES), choices=FAMILIES)
    args = p.parse_args(argv)
    torch.manual_seed(0)
    calls = capture(args.families)
    with open(args.out, "w") as f:
        json.dump({"calls": calls}, f)
    print(f"aot capture: {len(calls)} Triton op calls from {len(cases(args.families))} cases")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
