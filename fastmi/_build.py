"""How fastmi's C++/CUDA extension ``fastmi._C`` is built: sources and flags.

Shared by ``setup.py`` (ahead-of-time build) and ``fastmi._ext`` (JIT build with ninja), so the two
builds are the same. Kept free of fastmi imports: setup.py loads this file on its own.
"""
from __future__ import annotations

import os
import platform
import shutil
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CSRC = ROOT / "csrc"
FAMILIES = ("critic_lse", "separable", "fd_jacobian", "mmd_imq", "softmax_stats")


def cpu_sources() -> list[str]:
    return [str(CSRC / "fastmi.cpp")] + [str(CSRC / "cpu" / f"{f}.cpp") for f in FAMILIES]


def cuda_sources() -> list[str]:
    """The CUDA kernels of the families that have one (the others run on GPUs through Triton)."""
    return [str(p) for p in (CSRC / "cuda" / f"{f}.cu" for f in FAMILIES) if p.exists()]


def _cpu_flags() -> set[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    for line in text.splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    return set()


def cxx_flags() -> list[str]:
    """-O3, plus AVX2/FMA vector code (ATen's Vectorized with Sleef exp/log1p) when this CPU has it.

    ``FASTMI_PORTABLE=1`` builds the scalar-vector fallback that runs on any CPU.
    """
    # -fopenmp: at::parallel_for is inline OpenMP code; without the flag it silently runs serially.
    flags = ["-O3", "-std=c++17", "-fopenmp"]
    if os.environ.get("FASTMI_PORTABLE", "0") != "1" and platform.machine() in ("x86_64", "AMD64"):
        if {"avx2", "fma"} <= _cpu_flags():
            flags += ["-mavx2", "-mfma", "-DCPU_CAPABILITY_AVX2", "-DCPU_CAPABILITY=AVX2"]
    return flags


def link_flags() -> list[str]:
    return ["-fopenmp"]


def nvcc_flags() -> list[str]:
    return ["-O3", "-std=c++17", "--use_fast_math", "-lineinfo"]


def want_cuda() -> tuple[bool, str]:
    """CUDA kernels are built when torch has CUDA and nvcc is found (FASTMI_NO_CUDA=1 disables)."""
    import torch
    from torch.utils.cpp_extension import CUDA_HOME

    if os.environ.get("FASTMI_NO_CUDA", "0") == "1":
        return False, "FASTMI_NO_CUDA=1"
    if torch.version.cuda is None:
        return False, "this torch build has no CUDA"
    if CUDA_HOME is None and shutil.which("nvcc") is None:
        return False, "nvcc not found"
    return True, "torch has CUDA and nvcc is present"
