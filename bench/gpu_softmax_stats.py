"""The softmax_stats (Neural Bayes MIM) part of bench/gpu.py: nb_mim forward+backward on CUDA,
fused (Triton) vs reference vs torch.compile(reference), with triton.testing.do_bench, peak extra
memory (torch.cuda.max_memory_allocated beyond the states and their gradients) and achieved
bandwidth (the fused kernels move 3 x the states' bytes: forward read, backward read + write)."""
from __future__ import annotations

import json

import torch

from bench.softmax_stats_cases import CASES, loss_fn, states, step


def _peak_extra(fn, xs) -> int:
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    step(fn, xs)
    torch.cuda.synchronize()
    return torch.cuda.max_memory_allocated() - base - sum(x.numel() * x.element_size() for x in xs)


def _run(out, *, do_bench, peak_bw: float, device: str, now: str, dtypes, batches, impls) -> None:
    import triton

    for dtype_name in dtypes:
        dtype = getattr(torch, dtype_name)
        for case in CASES:
            for batch in batches:
                xs = states(case, device="cuda", dtype=dtype, batch=batch)
                nbytes = sum(x.numel() * x.element_size() for x in xs)
                times = {}
                for impl, backend in impls:
                    fn = loss_fn(case, impl, backend or "auto")
                    try:
                        step(fn, xs)
                        ms = do_bench(lambda: step(fn, xs), warmup=10, rep=50)
                        mem = _peak_extra(fn, xs)
                    except torch.cuda.OutOfMemoryError:
                        ms, mem = float("nan"), None
                        torch.cuda.empty_cache()
                    label = impl if backend is None else f"{impl}-{backend}"
                    times[label] = ms
                    row = dict(family="softmax_stats", loss=f"nb_mim {case}", impl=label, n=batch, dtype=dtype_name,
                               device=device, torch=torch.__version__, triton=triton.__version__, ms=ms,
                               peak_extra_bytes=mem, bandwidth_gbs=3 * nbytes / (ms * 1e-3) / 1e9,
                               peak_bandwidth_gbs=peak_bw / 1e9, date=now)
                    out.write(json.dumps(row) + "\n")
                    out.flush()
                    print(f"nb_mim {case:<9} {dtype_name:<9} B={batch:<5} {label:<14} {ms:9.3f} ms  "
                          f"{row['bandwidth_gbs']:7.0f} GB/s ({row['bandwidth_gbs'] * 1e9 / peak_bw:5.1%})  "
                          f"extra {('%.1f MiB' % (mem / 2**20)) if mem is not None else 'OOM'}")
                if "fused-triton" in times:
                    f = times["fused-triton"]
                    vs = [f"{times[b] / f:.1f}x vs {b}" for b in ("reference", "compiled") if b in times]
                    if vs:
                        print("    fused-triton: " + ", ".join(vs))
                del xs
                torch.cuda.empty_cache()


BATCHES = [500, 2000]
CPU_SIZES = [CASES["cifar"][0][0][0]]  # bench_softmax_stats.py runs the cases at their own batch (500)


def run(ctx) -> None:
    """bench/gpu.py's entry point; ``--sizes`` overrides the batch sizes."""
    _run(ctx._out, do_bench=ctx.do_bench, peak_bw=ctx.peak_bw, device=ctx.device, now=ctx.now, dtypes=ctx.args.dtypes,
         batches=ctx.args.sizes or BATCHES, impls=ctx.impls(("triton",)))
