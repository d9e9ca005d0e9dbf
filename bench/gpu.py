"""GPU benchmarks: every fused backend vs reference vs torch.compile(reference) on CUDA.

Times forward+backward with triton.testing.do_bench, peak extra memory with
torch.cuda.max_memory_allocated (beyond the scores and their gradient), and achieved bandwidth
against the device's measured copy bandwidth (a large device-to-device clone). Appends one JSON row
per measurement to bench/results/gpu-<device>.jsonl.

    python bench/gpu.py [--sizes 4096 16384] [--dtypes float32 bfloat16] [--cases infonce dv ...]
    python bench/gpu.py --family softmax_stats [--batches 500 2000]     (Neural Bayes nb_mim)
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import fastmi  # noqa: E402
from bench.critic_lse_cases import CASES, loss_fn, scores, step  # noqa: E402


def copy_bandwidth(do_bench) -> float:
    """Bytes/s of a 1 GiB device-to-device copy (read + write): the measured peak to compare with."""
    x = torch.empty(2**28, dtype=torch.float32, device="cuda")
    y = torch.empty_like(x)
    ms = do_bench(lambda: y.copy_(x), warmup=25, rep=100)
    return 2 * x.numel() * 4 / (ms * 1e-3)


def peak_extra(fn, s) -> int:
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    step(fn, s)
    torch.cuda.synchronize()
    return torch.cuda.max_memory_allocated() - base - s.numel() * s.element_size()


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", type=int, nargs="*", default=[4096, 16384])
    p.add_argument("--dtypes", nargs="*", default=["float32", "bfloat16"])
    p.add_argument("--cases", nargs="*", default=list(CASES))
    p.add_argument("--family", choices=["critic_lse", "softmax_stats"], default="critic_lse")
    p.add_argument("--batches", type=int, nargs="*", default=[500, 2000], help="softmax_stats batch sizes")
    p.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "results"))
    args = p.parse_args(argv)
    if not torch.cuda.is_available():
        print("bench/gpu.py: no CUDA device", file=sys.stderr)
        return 2
    from triton.testing import do_bench
    import triton

    device = torch.cuda.get_device_name()
    now = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    peak_bw = copy_bandwidth(do_bench)
    impls = [("fused", b) for b in ("triton", "cuda") if fastmi.info()[b][0]] + [("reference", None), ("compiled", None)]
    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, f"gpu-{device.replace(' ', '_')}.jsonl")
    now = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    print(f"{device}: measured copy bandwidth {peak_bw / 1e9:.0f} GB/s")
    if args.family == "softmax_stats":
        from bench import softmax_stats_gpu

        os.makedirs(args.out, exist_ok=True)
        path = os.path.join(args.out, f"gpu-{device.replace(' ', '_')}.jsonl")
        with open(path, "a") as out:
            softmax_stats_gpu.run(out, do_bench=do_bench, peak_bw=peak_bw, device=device, now=now,
                                  dtypes=args.dtypes, batches=args.batches)
        print(f"rows appended to {path}")
        return 0
    with open(path, "a") as out:
        for dtype_name in args.dtypes:
            dtype = getattr(torch, dtype_name)
            for n in args.sizes:
                s = scores(n, device="cuda", dtype=dtype)
                times = {}
                for name in args.cases:
                    for impl, backend in impls:
                        fn = loss_fn(name, impl, backend or "auto")
                        try:
                            step(fn, s)
                            ms = do_bench(lambda: step(fn, s), warmup=10, rep=50)
                            mem = peak_extra(fn, s)
                        except torch.cuda.OutOfMemoryError:
                            ms, mem = float("nan"), None
                            torch.cuda.empty_cache()
                        label = impl if backend is None else f"{impl}-{backend}"
                        times[(name, label)] = ms
                        moved = 3 * s.numel() * s.element_size()  # fwd read, bwd read + write
                        row = dict(family="critic_lse", loss=name, impl=label, n=n, dtype=dtype_name, device=device,
                                   torch=torch.__version__, triton=triton.__version__, ms=ms, peak_extra_bytes=mem,
                                   bandwidth_gbs=moved / (ms * 1e-3) / 1e9, peak_bandwidth_gbs=peak_bw / 1e9,
                                   date=now)
                        out.write(json.dumps(row) + "\n")
                        out.flush()
                        print(f"{name:<8} {dtype_name:<9} n={n:<6} {label:<13} {ms:9.3f} ms  "
                              f"{row['bandwidth_gbs']:7.0f} GB/s ({row['bandwidth_gbs'] * 1e9 / peak_bw:5.1%})  "
                              f"extra {('%.1f MiB' % (mem / 2**20)) if mem is not None else 'OOM'}")
                    for impl, backend in impls:
                        if impl == "fused":
                            f = times[(name, f"fused-{backend}")]
                            print(f"    fused-{backend}: {times[(name, 'reference')] / f:.1f}x vs reference, "
                                  f"{times[(name, 'compiled')] / f:.1f}x vs compiled")
                del s
                torch.cuda.empty_cache()
    print(f"rows appended to {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
