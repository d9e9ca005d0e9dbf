"""Peak extra host memory of one fd_jacobian call on CPU (see bench/memory.py for the method): the
resident-set high-water mark minus the resident set before the call, minus the call's own outputs
(x_tilde, or the two gradients). A fused perturbation must show O(B + n), no B x B matrix.

    python -m bench.fd_jacobian_memory perturb_bernoulli fused 500     -> bytes
"""
from __future__ import annotations

import json
import os
import subprocess
import sys

from bench.memory import _status


def _measure(name: str, impl: str, B: int) -> int:
    from bench.fd_jacobian_cases import case_fn, inputs, output_bytes, step

    fn = case_fn(name, impl)
    args = inputs(name, B)
    step(name, fn, args)  # warm-up: compilation, thread pools, allocator arenas
    step(name, fn, args)
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    base = _status("VmRSS:")
    out = step(name, fn, args)
    peak = _status("VmHWM:")
    del out
    return peak - base - output_bytes(name, args)


def peak_extra_bytes(name: str, impl: str, B: int) -> int | None:
    """Measured in a fresh child process; None where /proc is not available."""
    if not os.path.exists("/proc/self/clear_refs"):
        return None
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    out = subprocess.run([sys.executable, "-m", "bench.fd_jacobian_memory", name, impl, str(B)], env=env, cwd=root,
                         capture_output=True, text=True, check=True)
    return int(json.loads(out.stdout.strip().splitlines()[-1]))


if __name__ == "__main__":
    print(json.dumps(_measure(sys.argv[1], sys.argv[2], int(sys.argv[3]))))
