"""Loads the compiled extension ``fastmi._C`` (the C++/CUDA kernels).

Order: the prebuilt module from ``pip install`` / ``setup.py build_ext``; else a JIT build with
``torch.utils.cpp_extension.load`` (ninja) into the torch extensions cache; else nothing, and the
reason is kept for ``fastmi info`` and the one warning of the dispatcher.
"""
from __future__ import annotations

import importlib
import os
import threading

_lock = threading.Lock()
_state: dict = {"tried": False, "module": None, "how": None, "error": None, "cuda": False}


def _jit_build():
    from torch.utils import cpp_extension

    from . import _build

    sources = _build.cpu_sources()
    with_cuda, _ = _build.want_cuda()
    cuda_src = [s for s in _build.cuda_sources() if os.path.exists(s)] if with_cuda else []
    return cpp_extension.load(
        name="fastmi_C",
        sources=sources + cuda_src,
        extra_cflags=_build.cxx_flags(),
        extra_cuda_cflags=_build.nvcc_flags(),
        extra_ldflags=_build.link_flags(),
        with_cuda=bool(cuda_src),
        is_python_module=False,
        verbose=os.environ.get("FASTMI_VERBOSE_BUILD", "0") == "1",
    ), bool(cuda_src)


def load():
    """Return the loaded extension (or None); never raises."""
    with _lock:
        if _state["tried"]:
            return _state["module"]
        _state["tried"] = True
        if os.environ.get("FASTMI_NO_EXT", "0") == "1":
            _state["error"] = "FASTMI_NO_EXT=1"
            return None
        try:
            mod = importlib.import_module("fastmi._C")
            _state.update(module=mod, how="prebuilt fastmi._C")
            _state["cuda"] = _has_cuda_kernels()
            return mod
        except ImportError as exc:
            prebuilt_error = f"{exc}"
        if os.environ.get("FASTMI_NO_JIT", "0") == "1":
            _state["error"] = f"no prebuilt fastmi._C ({prebuilt_error}); JIT build disabled by FASTMI_NO_JIT=1"
            return None
        try:
            _, with_cuda = _jit_build()
            _state.update(module=True, how="JIT build (torch.utils.cpp_extension.load)", cuda=with_cuda)
            return True
        except Exception as exc:  # a missing compiler or ninja must not break import
            _state["error"] = f"no prebuilt fastmi._C ({prebuilt_error}); JIT build failed: {exc}"
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
