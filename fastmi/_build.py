"""How fastmi's compiled kernels are built: sources, flags and the CPU instruction-set variants.

Shared by ``setup.py`` (ahead-of-time build) and ``fastmi._ext`` (JIT build with ninja), so the two
builds are the same. Kept free of fastmi imports: setup.py loads this file on its own.

Three shared libraries, so that one wheel runs on any x86-64 CPU:

    fastmi._C             csrc/fastmi.cpp (the op schemas) and, with CUDA, csrc/cuda/*.cu
    fastmi._cpu_avx2      csrc/cpu/*.cpp with AVX2 + FMA (ATen's Vectorized, Sleef, fast_exp.h)
    fastmi._cpu_portable  csrc/cpu/*.cpp for the baseline ISA (x86-64: SSE2), any CPU

``fastmi._ext`` loads ``_C`` and then the one CPU variant this CPU can run (``isa_for_this_cpu``),
the way ATen picks its own kernels. Non-x86 machines build the portable variant only.
"""
from __future__ import annotations

import os
import platform
import shutil
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent
FAMILIES = ("critic_lse", "separable", "fd_jacobian", "mmd_imq", "softmax_stats")
ISA_FLAGS = {
    # CPU_CAPABILITY names ATen's inline namespace of Vectorized; CPU_CAPABILITY_AVX2 selects its AVX2 code
    "avx2": ["-mavx2", "-mfma", "-DCPU_CAPABILITY_AVX2", "-DCPU_CAPABILITY=AVX2"],
    "portable": [],
}
ISA_NAMES = {"avx2": "AVX2 + FMA", "portable": "portable (no AVX2)"}
BUILD_INFO = "_build_info.json"   # written next to the compiled modules: what they were built against


def csrc_dir() -> Path:
    """The C++/CUDA sources: ``fastmi/csrc`` in an installed package (shipped as package data), else
    ``csrc/`` of the source checkout this file lives in."""
    for d in (PACKAGE / "csrc", PACKAGE.parent / "csrc"):
        if (d / "fastmi.cpp").is_file():
            return d
    raise FileNotFoundError(f"fastmi's C++ sources are neither in {PACKAGE / 'csrc'} (an installed fastmi) nor in "
                            f"{PACKAGE.parent / 'csrc'} (a source checkout)")


def core_sources() -> list[str]:
    return [str(csrc_dir() / "fastmi.cpp")]


def cpu_sources() -> list[str]:
    """The CPU kernels, compiled once per ISA variant."""
    return [str(csrc_dir() / "cpu" / f"{f}.cpp") for f in FAMILIES]


def cuda_sources() -> list[str]:
    """The CUDA kernels of the families that have one (the others run on GPUs through Triton)."""
    return [str(p) for p in (csrc_dir() / "cuda" / f"{f}.cu" for f in FAMILIES) if p.exists()]


def shipped_sources() -> list[Path]:
    """Every file under csrc/ a JIT build may need (sources and headers), for the wheel."""
    root = csrc_dir()
    return sorted(p for p in root.rglob("*") if p.suffix in (".cpp", ".h", ".cu", ".cuh") and p.is_file())


def is_x86() -> bool:
    return platform.machine().lower() in ("x86_64", "amd64")


def isa_variants() -> list[str]:
    """The CPU variants a build makes: both on x86-64 (a wheel runs on any CPU), the portable one
    elsewhere; ``FASTMI_CPU_VARIANTS=this`` builds only the one this CPU runs (``make setup``: half
    the compile time; another variant is JIT-built if ever asked for, e.g. by FASTMI_ISA)."""
    which = os.environ.get("FASTMI_CPU_VARIANTS", "all").strip().lower()
    if which not in ("all", "this"):
        raise ValueError(f"FASTMI_CPU_VARIANTS must be all or this, got {which!r}")
    if which == "this":
        return [isa_for_this_cpu()[0]]
    return ["avx2", "portable"] if is_x86() else ["portable"]


def _cpuinfo_flags() -> set[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    for line in text.splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    return set()


def isa_for_this_cpu() -> tuple[str, str]:
    """(variant, why): ``FASTMI_ISA=portable|avx2`` if set; else AVX2 when the CPU has AVX2 and FMA
    (as ATen decides, so ``ATEN_CPU_CAPABILITY=default`` also selects the portable kernels)."""
    forced = os.environ.get("FASTMI_ISA", "").strip().lower()
    if forced:
        if forced not in ISA_FLAGS:
            raise ValueError(f"FASTMI_ISA must be one of {', '.join(ISA_FLAGS)}, got {forced!r}")
        return forced, f"FASTMI_ISA={forced}"
    if not is_x86():
        return "portable", f"{platform.machine()} CPU"
    try:
        import torch

        capability = torch.backends.cpu.get_cpu_capability()
    except Exception:  # an old torch: ask the kernel instead
        capability = "AVX2" if {"avx2", "fma"} <= _cpuinfo_flags() else "DEFAULT"
    if capability.upper().startswith(("AVX2", "AVX512")):
        return "avx2", f"this CPU has AVX2 and FMA (ATen's capability: {capability})"
    return "portable", f"ATen's CPU capability is {capability} (no AVX2 + FMA)"


def cxx_flags(isa: str | None = None) -> list[str]:
    """Flags of the CPU sources of variant ``isa`` (default: the variant this CPU runs).

    No ``-std``: torch's build adds the standard its headers need (C++17, or C++20 since torch 2.10).
    ``-g0``: the default CFLAGS of Python builds carry ``-g`` (debug info would be ~85% of the file)."""
    isa = isa or isa_for_this_cpu()[0]
    # -fopenmp: at::parallel_for is inline OpenMP code; without the flag it silently runs serially.
    return ["-O3", "-g0", "-fopenmp"] + ISA_FLAGS[isa]


def link_flags() -> list[str]:
    """``-s`` strips the symbol table (only the dynamic symbols a loader needs are kept)."""
    return ["-fopenmp", "-s"]


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


def build_info(with_cuda: bool) -> dict:
    """What a build was made against; ``fastmi._ext`` compares it with the torch it runs with."""
    import torch

    return {"torch": torch.__version__, "torch_cuda": torch.version.cuda, "with_cuda": with_cuda,
            "cxx11_abi": bool(torch._C._GLIBCXX_USE_CXX11_ABI), "isa_variants": isa_variants(),
            "machine": platform.machine()}


def local_version_label() -> str:
    """The wheel's local version label naming the torch it was built for, e.g. ``torch2.13.0.cpu``."""
    import torch

    return "torch" + "".join(c if c.isalnum() or c == "." else "." for c in torch.__version__)
