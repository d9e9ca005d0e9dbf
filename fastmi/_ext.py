"""Loads fastmi's compiled kernels: the op schemas ``fastmi._C`` and the CPU kernels of the variant
this CPU runs (``fastmi._cpu_avx2`` or ``fastmi._cpu_portable``; see ``fastmi._build``).

Order: the prebuilt modules of ``pip install`` / ``setup.py build_ext``, when their build record
(``_build_info.json``) names the torch that is running; else a JIT build from the C++ sources with
``torch.utils.cpp_extension.load`` (ninja) into the torch extensions cache, announced by one line on
stderr; else nothing, and the reason is kept for ``fastmi info`` and the one warning of the dispatcher.

Environment: FASTMI_NO_EXT=1 (no compiled kernels), FASTMI_NO_JIT=1 (never build at run time),
FASTMI_ISA=portable|avx2 (force a CPU variant), FASTMI_VERBOSE_BUILD=1 (show the JIT compiler output).
"""
from __future__ import annotations

import importlib
import importlib.util
import json
import os
import sys
import threading
from pathlib import Path

from . import _build

_lock = threading.Lock()
_state: dict = {"tried": False, "module": None, "how": None, "error": None, "cuda": False, "isa": None,
                "notice": None}


def _torch_version() -> str:
    import torch

    return torch.__version__


def _prebuilt_problem(isa: str) -> tuple[str | None, str | None]:
    """(why the prebuilt fastmi._C cannot be used, why its CPU variant ``isa`` cannot): None where it can."""
    spec = importlib.util.find_spec("fastmi._C")
    if spec is None or not spec.origin:
        return "no prebuilt fastmi._C", "no prebuilt fastmi._C"
    record = Path(spec.origin).parent / _build.BUILD_INFO
    if not record.is_file():
        why = f"the prebuilt fastmi._C has no build record ({record.name}): it predates this fastmi"
        return why, why
    info = json.loads(record.read_text())
    if info.get("torch") != _torch_version():
        why = f"the prebuilt kernels were built for torch {info.get('torch')}, this is torch {_torch_version()}"
        return why, why
    if isa not in info.get("isa_variants", []) or importlib.util.find_spec(f"fastmi._cpu_{isa}") is None:
        return None, f"no prebuilt {_build.ISA_NAMES[isa]} CPU kernels (this build made {info.get('isa_variants')})"
    return None, None


def _load_prebuilt_core() -> None:
    importlib.import_module("fastmi._C")


def _load_prebuilt_cpu(isa: str) -> None:
    import torch

    torch.ops.load_library(importlib.util.find_spec(f"fastmi._cpu_{isa}").origin)


def _jit_flags(flags: list[str]) -> list[str]:
    # the JIT cache is keyed on sources and flags, not on torch: name the torch, so another one rebuilds
    tag = "".join(c if c.isalnum() else "_" for c in _torch_version())
    return flags + [f"-DFASTMI_BUILT_FOR_TORCH_{tag}"]


def _jit_build(isa: str, core: bool) -> bool:
    """Build and load (core: the schemas and CUDA kernels, then) the CPU kernels of ``isa``; returns
    whether CUDA kernels were built."""
    from torch.utils import cpp_extension

    verbose = os.environ.get("FASTMI_VERBOSE_BUILD", "0") == "1"
    with_cuda = False
    if core:
        with_cuda, _ = _build.want_cuda()
        cuda_src = _build.cuda_sources() if with_cuda else []
        with_cuda = bool(cuda_src)
        cpp_extension.load(name="fastmi_C", sources=_build.core_sources() + cuda_src,
                           extra_cflags=_jit_flags(_build.cxx_flags("portable")),
                           extra_cuda_cflags=_build.nvcc_flags(), extra_ldflags=_build.link_flags(),
                           with_cuda=with_cuda, is_python_module=False, verbose=verbose)
    cpp_extension.load(name=f"fastmi_cpu_{isa}", sources=_build.cpu_sources(),
                       extra_cflags=_jit_flags(_build.cxx_flags(isa)), extra_ldflags=_build.link_flags(),
                       with_cuda=False, is_python_module=False, verbose=verbose)
    return with_cuda


def _notice(text: str) -> None:
    _state["notice"] = text
    print(f"fastmi: {text}", file=sys.stderr, flush=True)


def load():
    """Return the loaded extension (a module, True after a JIT build, or None); never raises."""
    with _lock:
        if _state["tried"]:
            return _state["module"]
        _state["tried"] = True
        if os.environ.get("FASTMI_NO_EXT", "0") == "1":
            _state["error"] = "FASTMI_NO_EXT=1"
            return None
        try:
            isa, isa_why = _build.isa_for_this_cpu()
        except ValueError as exc:
            _state["error"] = str(exc)
            return None
        _state["isa"] = isa
        kernels = f"CPU kernels {_build.ISA_NAMES[isa]}, {isa_why}"
        core_problem, cpu_problem = _prebuilt_problem(isa)
        core_loaded = False
        if core_problem is None:
            try:
                _load_prebuilt_core()
                core_loaded = True
                if cpu_problem is None:
                    _load_prebuilt_cpu(isa)
                    _state.update(module=sys.modules["fastmi._C"], how=f"prebuilt for this torch; {kernels}",
                                  cuda=_has_cuda_kernels())
                    return _state["module"]
            except (ImportError, OSError, RuntimeError) as exc:
                cpu_problem = f"the prebuilt kernels do not load ({type(exc).__name__}: {str(exc).splitlines()[0]})"
        problem = cpu_problem
        if os.environ.get("FASTMI_NO_JIT", "0") == "1":
            _state["error"] = f"{problem}; JIT build disabled by FASTMI_NO_JIT=1"
            return None
        try:
            sources = _build.csrc_dir()
        except FileNotFoundError as exc:
            _state["error"] = f"{problem}; no JIT build: {exc}"
            return None
        _notice(f"{problem}: building the kernels for this torch from {sources} (once; a few minutes on a few cores; "
                "FASTMI_NO_JIT=1 skips this and uses the reference backend)")
        try:
            cuda = _jit_build(isa, core=not core_loaded)
            built = "prebuilt fastmi._C, JIT-built CPU kernels" if core_loaded else "JIT build"
            _state.update(module=True, how=f"{built} (torch.utils.cpp_extension.load); {kernels}",
                          cuda=cuda or (core_loaded and _has_cuda_kernels()))
            return True
        except Exception as exc:  # a missing compiler or ninja must not break import
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            _state["error"] = f"{problem}; JIT build failed: {first}"
            return None


def _has_cuda_kernels() -> bool:
    import torch

    try:
        return torch._C._dispatch_has_kernel_for_dispatch_key("fastmi::critic_lse", "CUDA")
    except Exception:
        return False


def status() -> dict:
    load()
    return dict(_state)
