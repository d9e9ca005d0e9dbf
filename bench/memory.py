"""Peak extra host memory of one forward+backward on CPU: the resident-set high-water mark
(VmHWM, reset through /proc/self/clear_refs) minus the resident set before the call, minus the
gradient's own buffers (the inputs' size). Runs in a child process with glibc's mmap threshold pinned low
(MALLOC_MMAP_THRESHOLD_) so that freed large buffers go back to the OS and every large allocation
shows up in the high-water mark. Linux only.

    python -m bench.memory infonce fused 4096            -> bytes
    python -m bench.memory mmd_imq fused 4096 mmd_imq    -> bytes (family's cases module: bench/<family>_cases.py)
"""
from __future__ import annotations

import json
import os
import subprocess
import sys


def _status(key: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key):
                return int(line.split()[1]) * 1024
    raise RuntimeError(key)


def _measure(name: str, impl: str, n: int, family: str = "critic_lse") -> int:
    if family == "critic_lse":
        from bench.critic_lse_cases import loss_fn, scores, step

        fn, s = loss_fn(name, impl), scores(n)
        inputs_bytes = s.numel() * s.element_size()
    else:
        import importlib

        cases = importlib.import_module(f"bench.{family}_cases")
        fn, s, step = cases.loss_fn(name, impl), cases.inputs(n), cases.step
        inputs_bytes = cases.input_bytes(s)
    step(fn, s)  # warm-up: compilation, thread pools, allocator arenas
    step(fn, s)
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    base = _status("VmRSS:")
    step(fn, s)
    return _status("VmHWM:") - base - inputs_bytes


def peak_extra_bytes(name: str, impl: str, n: int, family: str = "critic_lse") -> int | None:
    """Measured in a fresh child process; None where /proc is not available."""
    if not os.path.exists("/proc/self/clear_refs"):
        return None
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    out = subprocess.run([sys.executable, "-m", "bench.memory", name, impl, str(n), family], env=env, cwd=root,
                         capture_output=True, text=True, check=True)
    return int(json.loads(out.stdout.strip().splitlines()[-1]))


if __name__ == "__main__":
    print(json.dumps(_measure(sys.argv[1], sys.argv[2], int(sys.argv[3]), *sys.argv[4:5])))
