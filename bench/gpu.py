"""GPU benchmarks: each family's fused backends vs reference vs torch.compile(reference) on CUDA.

Times forward+backward with triton.testing.do_bench, peak extra memory with
torch.cuda.max_memory_allocated, and achieved bandwidth / FLOP rate against the device's measured
copy bandwidth. Appends one JSON row per measurement to bench/results/gpu-<device>.jsonl.
A family's cases live in bench/gpu_<family>.py (a ``run(ctx)`` function).

    python bench/gpu.py                                  # every family, default sizes
    python bench/gpu.py --families separable --dtypes bfloat16
    python bench/gpu.py --impls fused reference          # no torch.compile baselines
    python bench/gpu.py --cpu-sizes                      # each family at its CPU benchmark's sizes
    python bench/gpu.py --dry-run                        # print the plan; needs no GPU
"""
from __future__ import annotations

import argparse
import datetime
import importlib
import json
import os
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import fastmi  # noqa: E402

FAMILIES = ["critic_lse", "separable", "fd_jacobian", "mmd_imq", "softmax_stats"]
IMPLS = ["fused", "reference", "compiled"]
SLOW_MS = 1000.0  # a step slower than this is timed over a few calls with CUDA events, not do_bench


def copy_bandwidth(do_bench) -> float:
    """Bytes/s of a 1 GiB device-to-device copy (read + write): the measured peak to compare with."""
    x = torch.empty(2**28, dtype=torch.float32, device="cuda")
    y = torch.empty_like(x)
    ms = do_bench(lambda: y.copy_(x), warmup=25, rep=100)
    del x, y
    torch.cuda.empty_cache()
    return 2 * 2**28 * 4 / (ms * 1e-3)


class Context:
    """What a family's run() gets: do_bench, the measured bandwidth, the options and a row writer."""

    def __init__(self, args, do_bench, peak_bw, out, device, triton_version):
        self.args, self.do_bench, self.peak_bw, self._out = args, do_bench, peak_bw, out
        self.device, self.triton_version = device, triton_version
        self.now = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")

    def fused_backends(self, family_kernels=("triton", "cuda")):
        return [b for b in family_kernels if fastmi.info()[b][0]]

    def impls(self, family_kernels=("triton", "cuda")):
        """[(impl, backend)] to measure: the available fused backends, then the two baselines, as
        filtered by --impls."""
        out = [("fused", b) for b in self.fused_backends(family_kernels)] + [("reference", None), ("compiled", None)]
        return [(impl, b) for impl, b in out if impl in self.args.impls]

    def _event_ms(self, run, calls: int) -> float:
        times = []
        for _ in range(calls):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            run()
            end.record()
            torch.cuda.synchronize()
            times.append(start.elapsed_time(end))
        return statistics.median(times)

    def time_and_memory(self, run, input_bytes: int):
        """(ms, peak extra bytes beyond the inputs' gradients) of run(); (nan, None) on OOM.

        A first call warms up (compiles). Steps under SLOW_MS are then timed by do_bench and measured
        for memory in one more call; slower ones (the large-batch cases: seconds per step) are timed
        with CUDA events over 2 calls (1 when the warm-up took over 5 s), the peak memory taken over
        those same calls."""
        try:
            t0 = time.perf_counter()
            run()
            torch.cuda.synchronize()
            first_ms = (time.perf_counter() - t0) * 1e3
            slow = first_ms > SLOW_MS
            ms = None if slow else self.do_bench(run, warmup=10, rep=50)
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            base = torch.cuda.memory_allocated()
            if slow:
                ms = self._event_ms(run, 1 if first_ms > 5 * SLOW_MS else 2)
            else:
                run()
            torch.cuda.synchronize()
            return ms, torch.cuda.max_memory_allocated() - base - input_bytes
        except torch.cuda.OutOfMemoryError:
            torch.cuda.empty_cache()
            return float("nan"), None

    @staticmethod
    def print_ratios(times: dict) -> None:
        """One line per fused backend: its speed-up over the baselines measured in the same run."""
        for label, ms in times.items():
            if label.startswith("fused"):
                vs = [f"{times[b] / ms:.1f}x vs {b}" for b in ("reference", "compiled") if b in times]
                if vs:
                    print(f"    {label}: " + ", ".join(vs))

    def write(self, **row) -> dict:
        row = dict(row, device=self.device, torch=torch.__version__, triton=self.triton_version,
                   peak_bandwidth_gbs=self.peak_bw / 1e9, date=self.now)
        self._out.write(json.dumps(row) + "\n")
        self._out.flush()
        return row


def cpu_sizes(family: str) -> list[int]:
    """The sizes of the family's CPU benchmark (bench/bench_<family>.py), for GPU runs comparable to it."""
    mod = importlib.import_module(f"bench.gpu_{family}")
    return list(getattr(mod, "CPU_SIZES", None) or importlib.import_module(f"bench.bench_{family}").SIZES)


def sizes_for(args, family: str, mod) -> list[int]:
    if args.sizes:
        return args.sizes
    if args.cpu_sizes:
        return cpu_sizes(family)
    return getattr(mod, "SIZES", None) or getattr(mod, "BATCHES")


def plan(args) -> list[str]:
    """What a run with these arguments measures, one line per family (imports every family's module)."""
    lines = []
    for family in args.families:
        mod = importlib.import_module(f"bench.gpu_{family}")
        sizes = sizes_for(args, family, mod)
        cases = [c for c in (args.cases or list(mod.CASES)) if c in mod.CASES]
        lines.append(f"{family}: sizes {sizes}, dtypes {args.dtypes}, cases {cases}, impls {args.impls}")
        if getattr(mod, "LARGE", None) and not (args.sizes or args.cpu_sizes) and "fused" in args.impls:
            lines.append(f"{family}: large batch n = {mod.LARGE}, bfloat16, infonce, fused only")
    return lines


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, exit 2 (the project's convention for a mistake)
        self.exit(2, f"bench/gpu.py: {message}\n")


def parse_args(argv=None):
    p = _Parser(description=__doc__.split("\n\n")[0])
    p.add_argument("--families", nargs="*", default=FAMILIES, choices=FAMILIES)
    p.add_argument("--sizes", type=int, nargs="*", default=None, help="override each family's default sizes")
    p.add_argument("--cpu-sizes", action="store_true", help="each family at the sizes of its CPU benchmark")
    p.add_argument("--dtypes", nargs="*", default=["float32", "bfloat16"], choices=["float32", "bfloat16", "float16"])
    p.add_argument("--cases", nargs="*", default=None, help="subset of a family's cases")
    p.add_argument("--impls", nargs="*", default=IMPLS, choices=IMPLS, help="what to measure (default: all)")
    p.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "results"))
    p.add_argument("--dry-run", action="store_true", help="print what would be measured and exit (no GPU needed)")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.dry_run:
        print("\n".join(plan(args)))
        return 0
    if not torch.cuda.is_available():
        print("bench/gpu.py: no CUDA device", file=sys.stderr)
        return 2
    import triton
    from triton.testing import do_bench

    device = torch.cuda.get_device_name()
    peak_bw = copy_bandwidth(do_bench)
    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, f"gpu-{device.replace(' ', '_')}.jsonl")
    print(f"{device}: measured copy bandwidth {peak_bw / 1e9:.0f} GB/s")
    with open(path, "a") as out:
        ctx = Context(args, do_bench, peak_bw, out, device, triton.__version__)
        for family in args.families:
            mod = importlib.import_module(f"bench.gpu_{family}")
            if args.cpu_sizes and not args.sizes:
                ctx.args = argparse.Namespace(**{**vars(args), "sizes": cpu_sizes(family)})
            mod.run(ctx)
            ctx.args = args
            torch.cuda.empty_cache()
    print(f"rows appended to {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
