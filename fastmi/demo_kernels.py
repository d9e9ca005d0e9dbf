"""The first table of ``fastmi demo``: each critic-score loss fused vs the plain-PyTorch reference
(``fastmi.reference``, the same formulas written with torch ops) on one n x n float32 score matrix,
forward + backward: the same value (max |difference| of the loss and of the gradient), the time of
both (and of ``torch.compile(reference)`` for InfoNCE), and the peak extra memory of both.

Memory is measured in a child process with glibc's mmap threshold pinned low, so every large buffer
is fresh memory and shows in the resident-set high-water mark (as ``bench/memory.py``), minus the
gradient buffer both paths return:

    python -m fastmi.demo_kernels 2048        -> JSON {loss: {"reference": bytes, "fused": bytes}}
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import torch

from . import functional as F
from .timing import forward_backward, peak_rss_increase, time_call

LOSSES = {
    "InfoNCE": lambda s, **kw: F.infonce(s, **kw),
    "DV (MINE)": lambda s, **kw: F.dv(s, **kw),
    "NWJ": lambda s, **kw: F.nwj(s, **kw),
    "SMILE (tau=5)": lambda s, **kw: F.smile(s, clip=5.0, **kw),
}
COMPILED = ("InfoNCE",)    # torch.compile(reference) costs a compile each (~10-30 s on 2 cores): one loss


def scores(n: int) -> torch.Tensor:
    """A score matrix like a trained critic's: positives (diagonal) above the negatives."""
    gen = torch.Generator().manual_seed(n)
    return torch.randn(n, n, generator=gen) + 3.0 * torch.eye(n)


def _loss_and_grad(fn, s):
    s = s.detach().requires_grad_(True)
    out = fn(s)
    out.loss.backward()
    return out.loss.detach(), s.grad


def agreement(name: str, s: torch.Tensor) -> tuple[float, float]:
    """(|loss difference|, max |gradient difference|) of fused vs reference."""
    lf, gf = _loss_and_grad(LOSSES[name], s)
    lr, gr = _loss_and_grad(lambda t: LOSSES[name](t, backend="reference"), s)
    return abs(float(lf - lr)), float((gf - gr).abs().max())


def timings(name: str, s: torch.Tensor, repeat: int = 5, compile_reference: bool = False) -> dict:
    """Median seconds of forward + backward: reference, fused, and compiled reference if asked."""
    fn = LOSSES[name]
    out = {"reference": time_call(forward_backward(lambda t: fn(t, backend="reference"), s), repeat=repeat),
           "fused": time_call(forward_backward(fn, s), repeat=repeat)}
    if compile_reference:
        compiled = torch.compile(lambda t: fn(t, backend="reference").loss)
        t0 = time.perf_counter()
        forward_backward(compiled, s)()
        out["compile_seconds"] = time.perf_counter() - t0
        out["compiled"] = time_call(forward_backward(compiled, s), repeat=repeat)
    return out


def measure_memory(n: int) -> dict:
    """{loss: {impl: peak extra bytes}} of one forward + backward each, in this process."""
    s = scores(n)
    grad_bytes = s.numel() * s.element_size()
    out = {}
    for name, fn in LOSSES.items():
        out[name] = {}
        for impl, kw in (("reference", {"backend": "reference"}), ("fused", {})):
            step = forward_backward(lambda t: fn(t, **kw), s)
            step()   # warm-up: thread pools, allocator arenas
            _, peak = peak_rss_increase(step)
            out[name][impl] = None if peak is None else max(0, peak - grad_bytes)
    return out


def memory_in_child(n: int) -> dict | None:
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536")
    proc = subprocess.run([sys.executable, "-m", "fastmi.demo_kernels", str(n)], env=env, capture_output=True,
                          text=True)
    if proc.returncode != 0:
        return None
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _mib(b) -> str:
    if b is None:
        return "n/a"
    return f"{b / 2**20:.1f} MiB" if b >= 2**20 else f"{b / 2**10:.0f} KiB"


def run(n: int, repeat: int = 5, compile_reference: bool = True) -> None:
    """Print the table (one row per loss, as it is measured)."""
    print(f"\n1. Same values as plain PyTorch, faster, less memory: forward + backward on an n x n float32 score "
          f"matrix, n = {n}, {torch.get_num_threads()} thread{'s' * (torch.get_num_threads() > 1)}, median of {repeat}", flush=True)
    memory = memory_in_child(n) or {}
    head = (f"   {'loss':<15}{'|fused - plain|':>22}{'plain PyTorch':>15}{'torch.compile':>15}{'fused':>10}"
            f"{'speed-up':>10}   extra memory: plain -> fused")
    print(head + "\n   " + f"{'':<15}{'loss / gradient':>22}", flush=True)
    s = scores(n)
    notes = []
    for name in LOSSES:
        dl, dg = agreement(name, s)
        t = timings(name, s, repeat, compile_reference and name in COMPILED)
        comp = f"{t['compiled'] * 1e3:.1f} ms" if "compiled" in t else "-"
        speed = t["reference"] / t["fused"]
        mem = memory.get(name, {})
        print(f"   {name:<15}{f'{dl:.1e} / {dg:.1e}':>22}{t['reference'] * 1e3:>12.1f} ms{comp:>15}"
              f"{t['fused'] * 1e3:>7.1f} ms{speed:>9.1f}x   {_mib(mem.get('reference'))} -> {_mib(mem.get('fused'))}",
              flush=True)
        if "compiled" in t:
            notes.append(f"torch.compile(reference) of {name}: {t['reference'] / t['compiled']:.1f}x faster than plain, "
                         f"fused {t['compiled'] / t['fused']:.1f}x faster than compiled (compile time "
                         f"{t['compile_seconds']:.0f} s, not counted)")
    print("   The differences are float32 rounding (the fused kernels accumulate in fp32 too); the fused kernels "
          "keep O(n) row statistics where plain PyTorch keeps n x n temporaries for backward.")
    for note in notes:
        print(f"   {note}; every loss vs torch.compile: make bench")


if __name__ == "__main__":
    print(json.dumps(measure_memory(int(sys.argv[1]))))
