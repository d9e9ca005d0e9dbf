"""What a run ran with, for its config.json and results.json: versions, the source commit, the
backend the losses actually use on the run's device, the kernels' CPU variant, threads and device."""
from __future__ import annotations

import importlib.metadata
import platform
import subprocess
from pathlib import Path
from typing import Optional

import torch

PACKAGE = Path(__file__).resolve().parent.parent


def _version(dist: str) -> Optional[str]:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def git_state(folder: Path = PACKAGE) -> Optional[dict]:
    """{"commit", "dirty"} of the git checkout fastmi runs from (None for an installed fastmi)."""
    def git(*args):
        return subprocess.run(["git", "-C", str(folder), *args], capture_output=True, text=True, timeout=10)

    try:
        top = git("rev-parse", "--show-toplevel")
        if top.returncode != 0 or Path(top.stdout.strip()).resolve() != folder.parent.resolve():
            return None
        commit = git("rev-parse", "HEAD").stdout.strip()
        dirty = bool(git("status", "--porcelain", "--untracked-files=no").stdout.strip())
    except (OSError, subprocess.SubprocessError):
        return None
    return {"commit": commit, "dirty": dirty}


def resolved_backend(requested: str, device: str) -> dict:
    """What ``requested`` ("auto", ...) resolves to for tensors on ``device``, per kernel family."""
    from .._core import registry

    t = torch.empty(0, device=device)
    out = {}
    for name, fam in registry.families().items():
        try:
            out[name] = fam.select(requested, t, "fastmi run")[0]
        except (RuntimeError, ValueError):
            out[name] = "not available"
    return out


def collect(requested_backend: str, device: str) -> dict:
    import fastmi
    from .. import _ext

    ext = _ext.status()
    return {
        "fastmi": fastmi.__version__,
        "torch": torch.__version__,
        "triton": _version("triton"),
        "python": platform.python_version(),
        "git": git_state(),
        "device": device,
        "threads": torch.get_num_threads(),
        "backend": {"requested": requested_backend,
                    "resolved": (families := resolved_backend(requested_backend, device)).get("critic_lse"),
                    "per_family": families},
        "kernels": ext["how"] if ext["module"] is not None else f"none ({ext['error']})",
        "cpu_isa": ext["isa"],
        "machine": platform.machine(),
    }
