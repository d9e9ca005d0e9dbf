"""Small wall-clock helpers shared by the demo and the benchmarks (CPU: perf_counter; CUDA: synchronize)."""
from __future__ import annotations

import statistics
import time

import torch


def time_call(fn, *, warmup: int = 2, repeat: int = 5, device: str = "cpu") -> float:
    """Median seconds of fn() over ``repeat`` runs after ``warmup`` runs."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeat):
        if device == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        if device == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def forward_backward(loss_fn, scores: torch.Tensor):
    """A closure running loss_fn(scores).loss forward and backward (fresh leaf each call)."""

    def run():
        s = scores.detach().requires_grad_(True)
        out = loss_fn(s)
        (out.loss if hasattr(out, "loss") else out).backward()
        return s.grad

    return run


def _proc_status(key: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key):
                return int(line.split()[1]) * 1024
    raise KeyError(key)


def peak_rss_increase(fn):
    """(result, bytes): how far the resident set's high-water mark rose above the current resident
    set while fn() ran (Linux: VmHWM reset through /proc/self/clear_refs); bytes is None elsewhere."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        base = _proc_status("VmRSS:")
    except OSError:
        return fn(), None
    out = fn()
    return out, _proc_status("VmHWM:") - base


def total_memory_bytes():
    """Physical memory of this machine (Linux /proc/meminfo), or None."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None
