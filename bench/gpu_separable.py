"""separable on CUDA for bench/gpu.py: InfoNCE / CLIP on embeddings (d = 256), fused (Triton: the
n x n matrix never exists) vs the dense reference (x @ y.T then InfoNCE) eager and compiled.
Includes n = 65536, where the dense path needs tens of GB: the fused one runs in O(n d); and, in a
default run (no --sizes), the large-batch case: InfoNCE at n = 2^20 in bfloat16, fused only (the dense
matrix would take 4 TiB), e.g. ``python bench/gpu.py --families separable --sizes 1048576 --cases infonce
--dtypes bfloat16 --impls fused``."""
from __future__ import annotations

import torch

from bench.separable_cases import CASES, grad_bytes, inputs, loss_fn, step

SIZES = [16384, 65536]
LARGE = 1 << 20  # the large-batch case (bfloat16, fused only)
D = 256


def _measure(ctx, impls, dtype_names, sizes, cases) -> None:
    for dtype_name in dtype_names:
        dtype = getattr(torch, dtype_name)
        for n in sizes:
            xy = inputs(n, D, device="cuda", dtype=dtype)
            for name in cases:
                if name not in CASES:
                    continue
                times = {}
                for impl, backend in impls:
                    if impl != "fused" and n * n * 4 * 3 > torch.cuda.get_device_properties(0).total_memory:
                        ms, mem = float("nan"), None  # the dense path cannot fit: not attempted
                    else:
                        fn = loss_fn(name, impl, backend or "auto")
                        ms, mem = ctx.time_and_memory(lambda: step(fn, xy), grad_bytes(xy))
                    label = impl if backend is None else f"{impl}-{backend}"
                    times[label] = ms
                    # fused: 4 GEMM-equivalents (fwd S; bwd S, dS y, dS^T x), 6 with the column pass (clip)
                    gemms = 6 if name == "clip" else 4
                    tflops = gemms * 2 * n * n * D / (ms * 1e-3) / 1e12
                    ctx.write(family="separable", loss=name, impl=label, n=n, d=D, dtype=dtype_name, ms=ms,
                              peak_extra_bytes=mem, tflops=tflops)
                    print(f"separable {name:<8} {dtype_name:<9} n={n:<6} d={D} {label:<13} {ms:10.3f} ms  "
                          f"{tflops:6.1f} TFLOP/s  extra {('%.1f MiB' % (mem / 2**20)) if mem is not None else 'OOM/skipped'}")
                ctx.print_ratios(times)
            del xy
            torch.cuda.empty_cache()


def run(ctx) -> None:
    impls = ctx.impls(("triton",))
    _measure(ctx, impls, ctx.args.dtypes, ctx.args.sizes or SIZES, ctx.args.cases or list(CASES))
    fused = [i for i in impls if i[0] == "fused"]
    if ctx.args.sizes is None and fused and "infonce" in (ctx.args.cases or CASES):
        _measure(ctx, fused, ["bfloat16"], [LARGE], ["infonce"])
