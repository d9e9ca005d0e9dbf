"""mmd_imq on CUDA for bench/gpu.py: forward+backward at K = 64, n = m, fused (triton, cuda) vs
reference vs compiled. Rows report the achieved FLOP rate of the pairwise work (3 x 2K FLOPs per
ordered pair: distances and the two gradient products) against the measured fp32 (IEEE, no TF32)
matmul rate of the device."""
from __future__ import annotations

import torch

from bench import mmd_imq_cases

SIZES = [4096, 16384]
CASES = mmd_imq_cases.CASES


def fp32_matmul_rate(do_bench) -> float:
    """FLOP/s of a large fp32 matmul without TF32: the measured peak for the mmd_imq kernels."""
    a = torch.randn(8192, 8192, device="cuda")
    old = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    try:
        ms = do_bench(lambda: a @ a, warmup=10, rep=50)
    finally:
        torch.backends.cuda.matmul.allow_tf32 = old
    return 2 * 8192**3 / (ms * 1e-3)


def run(ctx) -> None:
    peak = fp32_matmul_rate(ctx.do_bench)
    print(f"{ctx.device}: measured fp32 (IEEE) matmul rate {peak / 1e12:.1f} TFLOP/s")
    impls = ctx.impls(("triton", "cuda"))
    for dtype_name in ctx.args.dtypes:
        dtype = getattr(torch, dtype_name)
        for n in ctx.args.sizes or SIZES:
            xy = mmd_imq_cases.inputs(n, device="cuda", dtype=dtype)
            for name in ctx.args.cases or list(mmd_imq_cases.CASES):
                if name not in mmd_imq_cases.CASES:
                    continue
                times = {}
                for impl, backend in impls:
                    fn = mmd_imq_cases.loss_fn(name, impl, backend or "auto")
                    ms, mem = ctx.time_and_memory(lambda: mmd_imq_cases.step(fn, xy), mmd_imq_cases.input_bytes(xy))
                    label = impl if backend is None else f"{impl}-{backend}"
                    times[label] = ms
                    K = xy[0].shape[1]
                    flops = 3 * 2 * K * (2 * n) ** 2
                    row = ctx.write(family="mmd_imq", loss=name, impl=label, n=n, K=K, dtype=dtype_name, ms=ms,
                                    peak_extra_bytes=mem, tflops=flops / (ms * 1e-3) / 1e12, peak_tflops=peak / 1e12)
                    print(f"mmd_imq {name:<12} {dtype_name:<9} n={n:<6} {label:<13} {ms:9.3f} ms  "
                          f"{row['tflops']:6.2f} TFLOP/s ({row['tflops'] * 1e12 / peak:5.1%})  "
                          f"extra {('%.1f MiB' % (mem / 2**20)) if mem is not None else 'OOM'}")
                ctx.print_ratios(times)
            del xy
            torch.cuda.empty_cache()
