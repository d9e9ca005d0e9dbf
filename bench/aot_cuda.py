"""The CUDA sources (csrc/cuda/*.cu) compiled with nvcc for sm_80 and sm_90, with ptxas's resource
report (``-Xptxas -v``) per kernel and architecture.

One nvcc call per source builds both architectures (``-gencode arch=compute_XX,code=sm_XX``) with the
flags of fastmi's extension build (fastmi/_build.py's ``nvcc_flags`` plus what torch's
CUDAExtension adds), against the installed torch's headers. ``--keep`` leaves the PTX behind, whose
``.maxntid`` (the kernels' ``__launch_bounds__``) gives the threads per block for the occupancy.
Results are cached under .aot_cache/cuda, keyed by the sources, the flags, nvcc and torch versions.

    python -m bench.aot_cuda                # compile every source, print the per-kernel table
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

from bench.aot_occupancy import TARGETS, occupancy

ROOT = Path(__file__).resolve().parent.parent
CUDA_DIR = ROOT / "csrc" / "cuda"
CACHE = ROOT / ".aot_cache" / "cuda"
ARCHS = (80, 90)


def find_nvcc() -> str | None:
    for cand in (shutil.which("nvcc"), os.path.join(os.environ.get("CUDA_HOME", "/usr/local/cuda"), "bin", "nvcc")):
        if cand and os.path.isfile(cand) and os.access(cand, os.X_OK):
            return cand
    return None


def sources() -> list[Path]:
    return sorted(CUDA_DIR.glob("*.cu"))


def torch_include_dirs() -> list[str]:
    from torch.utils import cpp_extension

    return list(cpp_extension.include_paths())


def arch_flags(archs=ARCHS) -> list[str]:
    flags = []
    for a in archs:
        flags += ["-gencode", f"arch=compute_{a},code=sm_{a}"]
    return flags


def nvcc_flags(archs=ARCHS, std: str = "c++17") -> list[str]:
    """The flags of fastmi's CUDA build (fastmi/_build.py + torch's CUDAExtension), for ``archs``."""
    import torch

    flags = []
    for d in torch_include_dirs() + [sysconfig.get_paths()["include"]]:
        flags += ["-I", d]
    flags += [
        f"-std={std}",
        "-O3",
        "--use_fast_math",
        "-lineinfo",
        *arch_flags(archs),
        "-D__CUDA_NO_HALF_OPERATORS__",
        "-D__CUDA_NO_HALF_CONVERSIONS__",
        "-D__CUDA_NO_BFLOAT16_CONVERSIONS__",
        "-D__CUDA_NO_HALF2_OPERATORS__",
        "--expt-relaxed-constexpr",
        "-DTORCH_API_INCLUDE_EXTENSION_H",
        "-DTORCH_EXTENSION_NAME=fastmi_C",
        f"-D_GLIBCXX_USE_CXX11_ABI={int(torch._C._GLIBCXX_USE_CXX11_ABI)}",
        "-Xcompiler",
        "-fPIC",
    ]
    # CPU-only torch wheels ship c10/cuda headers but not the generated cuda_cmake_macros.h (it
    # only sets Windows export macros); tell CUDAMacros.h not to include it.
    if not any(Path(d, "c10", "cuda", "impl", "cuda_cmake_macros.h").exists() for d in torch_include_dirs()):
        flags.append("-DC10_CUDA_NO_CMAKE_CONFIGURE_FILE")
    return flags


# ---------------------------------------------------------------------------------------------
# ptxas report

_RE_ENTRY = re.compile(r"Compiling entry function '([^']+)' for 'sm_(\d+)a?'")
_RE_PROPS = re.compile(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads")
_RE_USED = re.compile(r"Used (\d+) registers(.*)")
_RE_SMEM = re.compile(r"(\d+) bytes smem")
_RE_PTX_ENTRY = re.compile(r"\.entry\s+([\w$]+)\s*\((.*?)\)\s*(.*?)\{", re.S)
_RE_MAXNTID = re.compile(r"\.maxntid\s+(\d+),\s*(\d+),\s*(\d+)")


def parse_ptxas_log(log: str) -> list[dict]:
    """[{mangled, arch, registers, stack/spill bytes, static_smem_bytes}] of each entry in the log."""
    out, cur = [], None
    for line in log.splitlines():
        m = _RE_ENTRY.search(line)
        if m:
            cur = {"mangled": m.group(1), "arch": f"sm_{m.group(2)}"}
            out.append(cur)
            continue
        if cur is None:
            continue
        m = _RE_PROPS.search(line)
        if m:
            cur.update(stack_bytes=int(m.group(1)), spill_store_bytes=int(m.group(2)),
                       spill_load_bytes=int(m.group(3)))
            continue
        m = _RE_USED.search(line)
        if m:
            smem = _RE_SMEM.search(m.group(2))
            cur.update(registers=int(m.group(1)), static_smem_bytes=int(smem.group(1)) if smem else 0)
    return out


def max_threads(ptx_text: str) -> dict[str, int]:
    """{mangled entry: threads per block} from the PTX's ``.maxntid`` (``__launch_bounds__``)."""
    out = {}
    for m in _RE_PTX_ENTRY.finditer(ptx_text):
        nt = _RE_MAXNTID.search(m.group(3))
        if nt:
            out[m.group(1)] = int(nt.group(1)) * int(nt.group(2)) * int(nt.group(3))
    return out


def demangle(names: list[str]) -> dict[str, str]:
    """Readable names (``ns::kernel<args>``, without the parameter list) via c++filt when present."""
    tool = shutil.which("c++filt")
    if tool is None or not names:
        return {n: n for n in names}
    proc = subprocess.run([tool], input="\n".join(names), capture_output=True, text=True)
    pretty = proc.stdout.splitlines() if proc.returncode == 0 else names
    out = {}
    for n, p in zip(names, pretty):
        p = p.replace("fastmi::", "").replace("c10::", "")
        depth, cut = 0, len(p)
        for i, ch in enumerate(p):  # drop the function's parameter list: the first '(' outside <>
            depth += ch == "<"
            depth -= ch == ">"
            if ch == "(" and depth == 0:
                cut = i
                break
        out[n] = p[:cut].replace("(void)", "")
    return out


# ---------------------------------------------------------------------------------------------


def _version(nvcc: str) -> str:
    proc = subprocess.run([nvcc, "--version"], capture_output=True, text=True)
    return proc.stdout.strip().splitlines()[-1] if proc.returncode == 0 else "?"


def _cache_key(src: Path, cmd: list[str], nvcc_version: str) -> str:
    import torch

    h = hashlib.sha256()
    for p in sorted(list(CUDA_DIR.glob("*")) + list((ROOT / "csrc").glob("*.h"))):
        if p.is_file():
            h.update(p.name.encode() + p.read_bytes())
    h.update(" ".join(cmd).encode() + nvcc_version.encode() + torch.__version__.encode() + src.name.encode())
    return h.hexdigest()[:32]


def compile_source(src: Path, archs=ARCHS, nvcc: str | None = None, use_cache: bool = True) -> dict:
    """Compile one .cu for ``archs``: {source, ok, seconds, error, kernels: [...]}; kernels carry ptxas's
    numbers per architecture and the occupancy they imply."""
    nvcc = nvcc or find_nvcc()
    if nvcc is None:
        return {"source": src.name, "ok": False, "error": "nvcc not found", "kernels": []}
    version = _version(nvcc)
    with tempfile.TemporaryDirectory(prefix="fastmi_aot_cuda_") as tmp:
        cmd = [nvcc, "-c", str(src), "-o", os.path.join(tmp, src.stem + ".o"), "-Xptxas", "-v", "--keep",
               "--keep-dir", tmp] + nvcc_flags(archs)
        key = _cache_key(src, [c for c in cmd if not c.startswith(tmp)], version)
        cached = CACHE / f"{src.stem}-{key}.json"
        if use_cache and cached.exists():
            return json.loads(cached.read_text())
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp)
        seconds = round(time.perf_counter() - t0, 1)
        result = {"source": src.name, "ok": proc.returncode == 0, "seconds": seconds, "nvcc": version,
                  "command": " ".join(["nvcc", "-c", f"csrc/cuda/{src.name}", "-Xptxas", "-v", *arch_flags(archs)]),
                  "kernels": []}
        if proc.returncode != 0:
            result["error"] = (proc.stderr or proc.stdout)[-6000:]
            return result
        threads = {}
        for ptx in Path(tmp).glob("*.ptx"):
            threads.update(max_threads(ptx.read_text()))
    entries = parse_ptxas_log(proc.stdout + proc.stderr)
    names = demangle(sorted({e["mangled"] for e in entries}))
    for e in entries:
        e["kernel"] = names[e["mangled"]]
        e["threads"] = threads.get(e["mangled"])
        smem = e.get("static_smem_bytes", 0)  # the kernels launch with no dynamic shared memory
        if e["threads"] and "registers" in e:
            e.update(occupancy(TARGETS[e["arch"]], e["registers"], e["threads"], smem))
        result["kernels"].append(e)
    if use_cache:
        CACHE.mkdir(parents=True, exist_ok=True)
        cached.write_text(json.dumps(result))
    return result


def compile_all(archs=ARCHS, use_cache: bool = True) -> list[dict]:
    return [compile_source(s, archs, use_cache=use_cache) for s in sources()]


def main(argv=None) -> int:
    import argparse

    p = argparse.ArgumentParser(description="Compile csrc/cuda/*.cu for sm_80 and sm_90 with ptxas -v.")
    p.add_argument("--no-cache", action="store_true")
    args = p.parse_args(argv)
    if find_nvcc() is None:
        print("bench.aot_cuda: nvcc not found", file=sys.stderr)
        return 2
    bad = 0
    for r in compile_all(use_cache=not args.no_cache):
        print(f"{r['source']}: {'ok' if r['ok'] else 'FAILED'} ({r.get('seconds', '?')} s)")
        if not r["ok"]:
            bad += 1
            print(r.get("error", ""))
        for k in r["kernels"]:
            print(f"  {k['arch']} {k['kernel']}: {k.get('registers')} regs, spills {k.get('spill_store_bytes')}/"
                  f"{k.get('spill_load_bytes')} B, smem {k.get('static_smem_bytes')} B, threads {k.get('threads')}, "
                  f"occupancy {k.get('occupancy', float('nan')):.0%}")
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
