"""fd_jacobian on CUDA for bench/gpu.py: the perturbation of B x 3 x 32 x 32 inputs and the penalty,
Triton (the GPU path) vs reference vs compiled."""
from __future__ import annotations

import torch

from bench import fd_jacobian_cases as fdj

SIZES = [500, 4096]
CASES = fdj.CASES


def run(ctx) -> None:
    impls = ctx.impls(("triton",))
    for dtype_name in ctx.args.dtypes:
        dtype = getattr(torch, dtype_name)
        for B in ctx.args.sizes or SIZES:
            for name in ctx.args.cases or list(fdj.CASES):
                if name not in fdj.CASES:
                    continue
                data = fdj.inputs(name, B, device="cuda", dtype=dtype)
                times = {}
                for impl, backend in impls:
                    fn = fdj.case_fn(name, impl, backend or "auto")
                    ms, mem = ctx.time_and_memory(lambda: fdj.step(name, fn, data), fdj.output_bytes(name, data))
                    label = impl if backend is None else f"{impl}-{backend}"
                    times[label] = ms
                    n = data[0][0].numel()
                    # perturbation: x read 3x (stats, tiles, finish) + x_tilde written; penalty: 2 reads fwd,
                    # 2 reads + 2 writes bwd. A floor on traffic, for the bandwidth column.
                    moved = (4 if name.startswith("perturb") else 6) * data[0].numel() * data[0].element_size()
                    flops = 2.0 * B * B * n if name.startswith("perturb") else 0.0
                    row = ctx.write(family="fd_jacobian", loss=name, impl=label, n=B, dtype=dtype_name, ms=ms,
                                    peak_extra_bytes=mem, bandwidth_gbs=moved / (ms * 1e-3) / 1e9,
                                    tflops=flops / (ms * 1e-3) / 1e12)
                    print(f"fd_jacobian {name:<18} {dtype_name:<9} B={B:<6} {label:<13} {ms:9.3f} ms  "
                          f"{row['bandwidth_gbs']:7.0f} GB/s  {row['tflops']:6.2f} TFLOP/s  "
                          f"extra {('%.1f MiB' % (mem / 2**20)) if mem is not None else 'OOM'}")
                ctx.print_ratios(times)
                del data
                torch.cuda.empty_cache()
