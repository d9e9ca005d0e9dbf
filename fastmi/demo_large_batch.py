"""The large-batch part of ``fastmi demo``: separable InfoNCE at a batch whose n x n score matrix
the dense path cannot hold on this machine, with the peak memory of both paths measured.

The dense path's peak is measured at a small batch (bytes per n^2: the score matrix and its
temporaries) and extrapolated; the fused path is run at the large batch itself. Both run in one
child process with glibc's mmap threshold pinned low, so that every large buffer is fresh memory
and shows in the resident-set high-water mark (``fastmi.timing.peak_rss_increase``); the child
prints one JSON line per measurement as it finishes.

    python -m fastmi.demo_large_batch 32 dense:2048 fused:auto   -> {impl, n, seconds, peak_bytes, mi} lines

``fused:auto`` picks the smallest round batch whose dense path would need more than this machine's
memory (from the dense measurement), between AUTO_MIN and AUTO_MAX.
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
AUTO_MIN, AUTO_MAX = 16384, 50000
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
    return {"impl": impl, "n": n, "seconds": time.perf_counter() - t0, "peak_bytes": peak, "mi": mi}


def auto_batch(dense_bytes_per_n2: float, total) -> int:
    """The smallest multiple of 1000 whose dense path needs more than ``total`` bytes (clamped)."""
    if not total:
        return AUTO_MIN
    n = math.ceil(math.sqrt(total / dense_bytes_per_n2) / 1000.0) * 1000
    return int(min(max(n, AUTO_MIN), AUTO_MAX))


def _child(d: int, specs: list[str]) -> None:
    per_n2 = None
    for spec in specs:
        impl, n = spec.split(":")
        n = auto_batch(per_n2, total_memory_bytes()) if n == "auto" else int(n)
        out = measure(impl, n, d)
        if impl == "dense" and out["peak_bytes"]:
            per_n2 = out["peak_bytes"] / n**2
        print(json.dumps(out), flush=True)


def _measurements(d: int, specs: list[str]):
    """Yield each measurement of a child process as it finishes (None if the child failed)."""
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536")
    proc = subprocess.Popen([sys.executable, "-m", "fastmi.demo_large_batch", str(d), *specs], env=env,
                            stdout=subprocess.PIPE, text=True)   # stderr: shown
    for line in proc.stdout:
        yield json.loads(line)
    if proc.wait() != 0:
        yield None


def run(n, d: int, calibrate_n: int = 2048) -> None:
    """Print the section; ``n`` is an int or "auto"."""
    print(f"\n2. A batch the dense path cannot hold: separable InfoNCE (cosine critic, temperature {TEMPERATURE}), "
          f"x, y in R^{d}, forward + backward", flush=True)
    total = total_memory_bytes()
    per_n2 = None
    for m in _measurements(d, [f"dense:{calibrate_n}", f"fused:{n}"]):
        if m is None or m["peak_bytes"] is None:
            print("   (failed, or peak memory cannot be measured here: Linux /proc is needed)")
            return
        if m["impl"] == "dense":
            per_n2 = m["peak_bytes"] / calibrate_n**2
            print(f"   dense (x @ y.T, then InfoNCE): peak {m['peak_bytes'] / 2**20:.0f} MiB at n = {calibrate_n}, "
                  f"{per_n2:.1f} bytes per n^2; running the fused one at the large batch ...", flush=True)
            continue
        big = m["n"]
        need = per_n2 * big * big
        verdict = (f"more than this machine's {total / GIB:.1f} GiB" if total and need > total else
                   f"{100 * need / total:.0f}% of this machine's {total / GIB:.1f} GiB" if total else "")
        grads = 2 * big * d * 4
        print(f"   at n = {big}: dense would need about {need / GIB:.1f} GiB ({verdict}); one n x n float32 "
              f"matrix alone is {big * big * 4 / GIB:.1f} GiB")
        print(f"   fused infonce_separable at n = {big}: {m['seconds']:.1f} s, peak {m['peak_bytes'] / 2**20:.1f} MiB "
              f"(of which {grads / 2**20:.1f} MiB are the gradients of x and y): the n x n matrix never exists")
        print(f"   InfoNCE estimate at n = {big}: {m['mi']:.3f} nats (at most log n = {math.log(big):.3f})")


if __name__ == "__main__":
    try:
        _child(int(sys.argv[1]), sys.argv[2:])
    except KeyboardInterrupt:   # Ctrl-C of the demo reaches this child too: the demo says it
        raise SystemExit(130)
