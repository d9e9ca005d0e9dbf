"""Peak extra host memory of one fused critic_lse forward+backward on fp16/bf16 scores on CPU (the
method of bench/memory.py: VmHWM in a fresh child process with a low mmap threshold), minus the
scores' own gradient. The kernel converts one row at a time to fp32, so this stays O(n), not the
n x m fp32 copy (and its fp32 gradient) the CPU path used to make.

    python -m bench.critic_lse_half_memory nwj float16 4096     -> bytes
"""
from __future__ import annotations

import json
import sys

from bench.memory import _status, in_child


def _measure(name: str, dtype: str, n: int) -> int:
    import torch

    from bench.critic_lse_cases import CASES

    fused = CASES[name][0]
    g = torch.Generator().manual_seed(0)
    scores = torch.randn(n, n, generator=g).to(getattr(torch, dtype)).requires_grad_(True)

    def step():
        fused(scores, "cpu").loss.backward()
        scores.grad = None

    step()  # warm-up: thread pools, allocator arenas
    step()
    scores.grad = None
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    base = _status("VmRSS:")
    fused(scores, "cpu").loss.backward()  # the gradient stays: it is counted, then subtracted
    return _status("VmHWM:") - base - scores.numel() * scores.element_size()


def peak_extra_bytes(name: str, dtype: str, n: int) -> int | None:
    """Measured in a fresh child process; None where /proc is not available."""
    return in_child("bench.critic_lse_half_memory", name, dtype, n)


if __name__ == "__main__":
    print(json.dumps(_measure(sys.argv[1], sys.argv[2], int(sys.argv[3]))))
