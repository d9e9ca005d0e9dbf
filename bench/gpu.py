"""GPU benchmarks: each family's fused backends vs reference vs torch.compile(reference) on CUDA.

Times forward+backward with triton.testing.do_bench, peak extra memory with
torch.cuda.max_memory_allocated, and achieved bandwidth / FLOP rate against the device's measured
copy bandwidth. Appends one JSON row per measurement to bench/results/gpu-<device>.jsonl.
A family's cases live in bench/gpu_<family>.py (a ``run(ctx)`` function).

    python bench/gpu.py                                  # every family, default sizes
    python bench/gpu.py --families separable --dtypes bfloat16
"""
from __future__ import annotations

import argparse
import datetime
import importlib
import json
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import fastmi  # noqa: E402

FAMILIES = ["critic_lse", "separable", "fd_jacobian", "mmd_imq", "softmax_stats"]


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

    def time_and_memory(self, run, input_bytes: int):
        """(ms, peak extra bytes beyond the inputs' gradients) of run(); (nan, None) on OOM."""
        try:
            run()
            ms = self.do_bench(run, warmup=10, rep=50)
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            base = torch.cuda.memory_allocated()
            run()
            torch.cuda.synchronize()
            return ms, torch.cuda.max_memory_allocated() - base - input_bytes
        except torch.cuda.OutOfMemoryError:
            torch.cuda.empty_cache()
            return float("nan"), None

    @staticmethod
    def print_ratios(times: dict) -> None:
        """One line per fused backend: its speed-up over the reference and over torch.compile."""
        for label, ms in times.items():
            if label.startswith("fused"):
                print(f"    {label}: {times['reference'] / ms:.1f}x vs reference, "
                      f"{times['compiled'] / ms:.1f}x vs compiled")

    def write(self, **row) -> dict:
        row = dict(row, device=self.device, torch=torch.__version__, triton=self.triton_version,
                   peak_bandwidth_gbs=self.peak_bw / 1e9, date=self.now)
        self._out.write(json.dumps(row) + "\n")
        self._out.flush()
        return row


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--families", nargs="*", default=FAMILIES)
    p.add_argument("--sizes", type=int, nargs="*", default=None, help="override each family's default sizes")
    p.add_argument("--dtypes", nargs="*", default=["float32", "bfloat16"])
    p.add_argument("--cases", nargs="*", default=None, help="subset of a family's cases")
    p.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "results"))
    args = p.parse_args(argv)
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
            importlib.import_module(f"bench.gpu_{family}").run(ctx)
            torch.cuda.empty_cache()
    print(f"rows appended to {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
