"""Peak extra host memory of one nb_mim forward+backward on CPU (see bench/memory.py for the method:
VmHWM in a fresh child process with a low mmap threshold), minus the inputs' gradients.

    python -m bench.softmax_stats_memory cifar fused     -> bytes
"""
from __future__ import annotations

import json
import os
import subprocess
import sys

from bench.memory import _status


def _measure(case: str, impl: str) -> int:
    from bench.softmax_stats_cases import loss_fn, states, step

    fn = loss_fn(case, impl)
    xs = states(case)
    step(fn, xs)  # warm-up
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    base = _status("VmRSS:")
    step(fn, xs)
    return _status("VmHWM:") - base - sum(x.numel() * x.element_size() for x in xs)


def peak_extra_bytes(case: str, impl: str) -> int | None:
    """Measured in a fresh child process; None where /proc is not available."""
    if not os.path.exists("/proc/self/clear_refs"):
        return None
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    out = subprocess.run([sys.executable, "-m", "bench.softmax_stats_memory", case, impl], env=env, cwd=root,
                         capture_output=True, text=True, check=True)
    return int(json.loads(out.stdout.strip().splitlines()[-1]))


if __name__ == "__main__":
    print(json.dumps(_measure(sys.argv[1], sys.argv[2])))
