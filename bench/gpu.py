"""GPU benchmarks: every fused backend vs reference vs torch.compile(reference) on CUDA.

Families: critic_lse (score matrices n x n) and fd_jacobian (perturbation of B x 3 x 32 x 32 and the
smoothness penalty; its GPU path is the Triton kernel, there is no CUDA C++ kernel for it).

Times forward+backward with triton.testing.do_bench, peak extra memory with
torch.cuda.max_memory_allocated (beyond the scores and their gradient), and achieved bandwidth
against the device's measured copy bandwidth (a large device-to-device clone). Appends one JSON row
per measurement to bench/results/gpu-<device>.jsonl.

    python bench/gpu.py [--sizes 4096 16384] [--dtypes float32 bfloat16] [--cases infonce dv ...]
                        [--families critic_lse fd_jacobian] [--fd-sizes 500 4096]
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
from bench import fd_jacobian_cases as fdj  # noqa: E402
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


def fd_peak_extra(name, fn, args) -> int:
    """Peak CUDA memory of one call beyond its inputs and its outputs (x_tilde or the two gradients)."""
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    fdj.step(name, fn, args)
    torch.cuda.synchronize()
    return torch.cuda.max_memory_allocated() - base - fdj.output_bytes(name, args)


def bench_fd_jacobian(args, do_bench, out, meta: dict, peak_bw: float) -> None:
    """fd_jacobian on CUDA: Triton (the GPU path) vs reference vs compiled; one JSON row each."""
    impls = [("fused", "triton")] if fastmi.info()["triton"][0] else []
    impls += [("reference", None), ("compiled", None)]
    for dtype_name in args.dtypes:
        dtype = getattr(torch, dtype_name)
        for B in args.fd_sizes:
            for name in fdj.CASES:
                data = fdj.inputs(name, B, device="cuda", dtype=dtype)
                times = {}
                for impl, backend in impls:
                    fn = fdj.case_fn(name, impl, backend or "auto")
                    try:
                        fdj.step(name, fn, data)
                        ms = do_bench(lambda: fdj.step(name, fn, data), warmup=10, rep=50)
                        mem = fd_peak_extra(name, fn, data)
                    except torch.cuda.OutOfMemoryError:
                        ms, mem = float("nan"), None
                        torch.cuda.empty_cache()
                    label = impl if backend is None else f"{impl}-{backend}"
                    times[label] = ms
                    n = data[0][0].numel()
                    # perturbation: x read 3x (stats, tiles, finish) + x_tilde written; penalty: 2 reads fwd,
                    # 2 reads + 2 writes bwd. A floor on traffic, for the bandwidth column.
                    moved = (4 if name.startswith("perturb") else 6) * data[0].numel() * data[0].element_size()
                    flops = 2.0 * B * B * n if name.startswith("perturb") else 0.0
                    row = dict(family="fd_jacobian", loss=name, impl=label, n=B, dtype=dtype_name, ms=ms,
                               peak_extra_bytes=mem, bandwidth_gbs=moved / (ms * 1e-3) / 1e9,
                               peak_bandwidth_gbs=peak_bw / 1e9, tflops=flops / (ms * 1e-3) / 1e12, **meta)
                    out.write(json.dumps(row) + "\n")
                    out.flush()
                    print(f"{name:<18} {dtype_name:<9} B={B:<6} {label:<13} {ms:9.3f} ms  "
                          f"{row['bandwidth_gbs']:7.0f} GB/s  {row['tflops']:6.2f} TFLOP/s  "
                          f"extra {('%.1f MiB' % (mem / 2**20)) if mem is not None else 'OOM'}")
                if "fused-triton" in times:
                    f = times["fused-triton"]
                    print(f"    fused-triton: {times['reference'] / f:.1f}x vs reference, "
                          f"{times['compiled'] / f:.1f}x vs compiled")
                del data
                torch.cuda.empty_cache()


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", type=int, nargs="*", default=[4096, 16384])
    p.add_argument("--dtypes", nargs="*", default=["float32", "bfloat16"])
    p.add_argument("--cases", nargs="*", default=list(CASES))
    p.add_argument("--families", nargs="*", default=["critic_lse", "fd_jacobian"])
    p.add_argument("--fd-sizes", type=int, nargs="*", default=[500, 4096], help="fd_jacobian batch sizes B")
    p.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "results"))
    args = p.parse_args(argv)
    if not torch.cuda.is_available():
        print("bench/gpu.py: no CUDA device", file=sys.stderr)
        return 2
    from triton.testing import do_bench
    import triton

    device = torch.cuda.get_device_name()
    peak_bw = copy_bandwidth(do_bench)
    impls = [("fused", b) for b in ("triton", "cuda") if fastmi.info()[b][0]] + [("reference", None), ("compiled", None)]
    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, f"gpu-{device.replace(' ', '_')}.jsonl")
    now = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    print(f"{device}: measured copy bandwidth {peak_bw / 1e9:.0f} GB/s")
    with open(path, "a") as out:
        if "fd_jacobian" in args.families:
            bench_fd_jacobian(args, do_bench, out, dict(device=device, torch=torch.__version__,
                                                       triton=triton.__version__, date=now), peak_bw)
        for dtype_name in (args.dtypes if "critic_lse" in args.families else []):
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
