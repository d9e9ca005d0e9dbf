"""critic_lse on CUDA for bench/gpu.py: n x n scores, every estimator, fused vs reference vs compiled."""
from __future__ import annotations

import torch

from bench.critic_lse_cases import CASES, loss_fn, scores, step

SIZES = [4096, 16384]


def run(ctx) -> None:
    impls = ctx.impls(("triton", "cuda"))
    for dtype_name in ctx.args.dtypes:
        dtype = getattr(torch, dtype_name)
        for n in ctx.args.sizes or SIZES:
            s = scores(n, device="cuda", dtype=dtype)
            for name in ctx.args.cases or list(CASES):
                if name not in CASES:
                    continue
                times = {}
                for impl, backend in impls:
                    fn = loss_fn(name, impl, backend or "auto")
                    ms, mem = ctx.time_and_memory(lambda: step(fn, s), s.numel() * s.element_size())
                    label = impl if backend is None else f"{impl}-{backend}"
                    times[label] = ms
                    moved = 3 * s.numel() * s.element_size()  # fwd read, bwd read + write
                    row = ctx.write(family="critic_lse", loss=name, impl=label, n=n, dtype=dtype_name, ms=ms,
                                    peak_extra_bytes=mem, bandwidth_gbs=moved / (ms * 1e-3) / 1e9)
                    print(f"critic_lse {name:<8} {dtype_name:<9} n={n:<6} {label:<13} {ms:9.3f} ms  "
                          f"{row['bandwidth_gbs']:7.0f} GB/s ({row['bandwidth_gbs'] * 1e9 / ctx.peak_bw:5.1%})  "
                          f"extra {('%.1f MiB' % (mem / 2**20)) if mem is not None else 'OOM'}")
                ctx.print_ratios(times)
            del s
            torch.cuda.empty_cache()
