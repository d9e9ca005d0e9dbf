"""The large-batch part of ``fastmi demo``: separable InfoNCE at a batch whose n x n score matrix
the dense path cannot hold on this machine, with the peak memory of both paths measured.

The dense path's peak is measured at a small batch (bytes per n^2: the score matrix and its
temporaries) and extrapolated; the fused path is run at the large batch itself. Each measurement
runs in a child process with glibc's mmap threshold pinned low, so that every large buffer is
fresh memory and shows in the resident-set high-water mark (``fastmi.timing.peak_rss_increase``).

    python -m fastmi.demo_large_batch fused 50000 32     -> JSON {seconds, peak_bytes, mi}
"""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time

import torch

from . import functional as F
from . import reference as R
from .timing import peak_rss_increase, total_memory_bytes

GIB = 2**30
TEMPERATURE = 0.1
LOSSES = {
    "fused": lambda x, y: F.infonce_separable(x, y, temperature=TEMPERATURE, normalize=True),
    "dense": lambda x, y: R.infonce(R.separable_scores(x, y, temperature=TEMPERATURE, normalize=True)),
}


def _embeddings(n: int, d: int):
    gen = torch.Generator().manual_seed(n)
    x = torch.randn(n, d, generator=gen)
    return x, x + 0.5 * torch.randn(n, d, generator=gen)


def _step(loss_fn, x, y):
    x, y = x.detach().requires_grad_(True), y.detach().requires_grad_(True)
    out = loss_fn(x, y)
    out.loss.backward()
    return float(out.mi)


def measure(impl: str, n: int, d: int) -> dict:
    """Seconds and peak resident-memory increase of one forward+backward (in this process)."""
    x, y = _embeddings(n, d)
    _step(LOSSES[impl], x[:256], y[:256])  # warm-up: thread pools, allocator arenas
    t0 = time.perf_counter()
    mi, peak = peak_rss_increase(lambda: _step(LOSSES[impl], x, y))
    return {"seconds": time.perf_counter() - t0, "peak_bytes": peak, "mi": mi}


def _measure_in_child(impl: str, n: int, d: int):
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536")
    out = subprocess.run([sys.executable, "-m", "fastmi.demo_large_batch", impl, str(n), str(d)], env=env,
                         capture_output=True, text=True)
    if out.returncode != 0:
        return None
    return json.loads(out.stdout.strip().splitlines()[-1])


def run(n: int, d: int, calibrate_n: int = 2048) -> None:
    print(f"\nLarge batch: separable InfoNCE (cosine critic, temperature {TEMPERATURE}), d = {d}, forward + backward")
    dense = _measure_in_child("dense", calibrate_n, d)
    if dense is None or dense["peak_bytes"] is None:
        print("  (peak memory is measured through Linux /proc, unavailable here: skipped)")
        return
    total = total_memory_bytes()
    per_n2 = dense["peak_bytes"] / calibrate_n**2
    need = per_n2 * n * n
    print(f"  dense reference (x @ y.T, then InfoNCE): peak {dense['peak_bytes'] / 2**20:.0f} MiB at n = {calibrate_n} "
          f"= {per_n2:.1f} bytes per n^2 -> about {need / GIB:.1f} GiB at n = {n}"
          + (f": more than this machine's {total / GIB:.1f} GiB" if total and need > total else ""))
    fused = _measure_in_child("fused", n, d)
    if fused is None:
        print(f"  fused infonce_separable at n = {n}: failed")
        return
    grads = 2 * n * d * 4
    print(f"  fused infonce_separable at n = {n}: {fused['seconds']:.1f} s, peak {fused['peak_bytes'] / 2**20:.1f} MiB "
          f"(of which {grads / 2**20:.1f} MiB are the gradients of x and y); one n x n float32 matrix alone "
          f"would be {n * n * 4 / GIB:.1f} GiB")
    print(f"  InfoNCE estimate at n = {n}: {fused['mi']:.3f} nats (capped at log n = {math.log(n):.3f})")


if __name__ == "__main__":
    print(json.dumps(measure(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]))))
