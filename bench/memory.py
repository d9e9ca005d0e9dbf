"""Peak extra host memory of one forward+backward on CPU: the resident-set high-water mark
(VmHWM, reset through /proc/self/clear_refs) minus the resident set before the call, minus the
gradients' own buffers. Runs in a child process with glibc's mmap threshold pinned low
(MALLOC_MMAP_THRESHOLD_) so that freed large buffers go back to the OS and every large allocation
shows up in the high-water mark. Linux only.

    python -m bench.memory infonce fused 4096               -> bytes (critic_lse family)
    python -m bench.memory infonce fused 8192 separable     -> bytes (another family's cases)

A family's cases module ``bench.<family>_cases`` provides loss_fn(name, impl), inputs(n) (or
scores(n), or inputs_for(name, n) when the inputs differ by case), step(fn, inputs) and optionally
grad_bytes(inputs).
"""
from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys


def _status(key: str) -> int:
    from fastmi.timing import _proc_status

    return _proc_status(key)


def _measure(name: str, impl: str, n: int, family: str) -> int:
    cases = importlib.import_module(f"bench.{family}_cases")
    fn = cases.loss_fn(name, impl)
    data = (cases.inputs_for(name, n) if hasattr(cases, "inputs_for") else
            cases.inputs(n) if hasattr(cases, "inputs") else cases.scores(n))
    grads = cases.grad_bytes(data) if hasattr(cases, "grad_bytes") else data.numel() * data.element_size()
    cases.step(fn, data)  # warm-up: compilation, thread pools, allocator arenas
    cases.step(fn, data)
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    base = _status("VmRSS:")
    cases.step(fn, data)
    return _status("VmHWM:") - base - grads


def in_child(module: str, *args) -> int | None:
    """``python -m <module> <args>`` in a fresh child process with the low mmap threshold; its last
    stdout line (a JSON number). None where /proc is not available."""
    if not os.path.exists("/proc/self/clear_refs"):
        return None
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    out = subprocess.run([sys.executable, "-m", module, *map(str, args)], env=env, cwd=root,
                         capture_output=True, text=True, check=True)
    return int(json.loads(out.stdout.strip().splitlines()[-1]))


def peak_extra_bytes(name: str, impl: str, n: int, family: str = "critic_lse") -> int | None:
    """Measured in a fresh child process; None where /proc is not available."""
    return in_child("bench.memory", name, impl, n, family)


if __name__ == "__main__":
    print(json.dumps(_measure(sys.argv[1], sys.argv[2], int(sys.argv[3]),
                              sys.argv[4] if len(sys.argv) > 4 else "critic_lse")))
