"""Ahead-of-time GPU checks that need no GPU (pytest marker ``aot``, part of ``make test``):

* every Triton kernel specialization the public functions launch (bench/aot_capture.py's cases,
  replayed as on a GPU by bench/aot_triton.py) compiles for sm_80 and sm_90, without register spills
  beyond those the committed report lists, and within the shared memory a block may have;
* every Triton kernel of kernels/*.py is reached by the capture;
* every csrc/cuda/*.cu compiles with nvcc for sm_80 and sm_90, without spills beyond the listed ones;
* the committed report (bench/results/gpu-resources.json) still matches what the kernels compile to,
  and docs/gpu_resources.md is its rendering (``python -m bench.aot_report`` regenerates both).

The compiles are cached under .aot_cache/ (Triton's cache, keyed by the kernels' source hash; nvcc
results keyed by the sources, flags and versions), so a second run takes seconds.
"""
from __future__ import annotations

import ast
import importlib.util
import json
import shutil
from pathlib import Path

import pytest

from bench import aot_cuda, aot_report, aot_triton
from bench.aot_occupancy import TARGETS, occupancy

pytestmark = pytest.mark.aot

ROOT = Path(__file__).resolve().parent.parent


def _triton_can_compile() -> tuple[bool, str]:
    if importlib.util.find_spec("triton") is None:
        return False, "triton is not installed"
    import triton

    bin_dir = Path(triton.__file__).parent / "backends" / "nvidia" / "bin"
    if not (bin_dir / "ptxas").exists() and shutil.which("ptxas") is None:
        return False, "Triton's NVIDIA backend has no ptxas"
    return True, ""


_ok, _why = _triton_can_compile()
needs_triton = pytest.mark.skipif(not _ok, reason=_why)


_nvcc = aot_cuda.find_nvcc() is not None


@pytest.fixture(scope="module")
def fresh():
    """This checkout's Triton specializations and CUDA sources, compiled now (nvcc beside Triton)."""
    if not (_ok or _nvcc):
        pytest.skip(f"{_why}; nvcc not found")
    return aot_report.collect(with_cuda=_nvcc, with_triton=_ok)


@pytest.fixture(scope="module")
def committed():
    return json.loads(aot_report.RESULTS.read_text())


def _key(spec: dict) -> str:
    return json.dumps([spec["kernel"], spec["constexprs"], spec["args"], spec["num_warps"], spec["num_stages"]],
                      sort_keys=True)


def _spill_key(spec: dict, arch: str) -> str:
    """Spills are allowed where the committed report has them for the same kernel configuration."""
    return json.dumps([spec["kernel"], spec["constexprs"], spec["num_warps"], aot_report._dtype_text(spec), arch],
                      sort_keys=True)


@needs_triton
def test_every_triton_specialization_compiles(fresh):
    specs = fresh["triton"]["specializations"]
    assert len(specs) > 0
    failures = [f"{s['kernel']} {aot_report._constexpr_text(s)} on {arch}: {t['error']}\n{t['traceback']}"
                for s in specs for arch, t in s["targets"].items() if not t["ok"]]
    assert not failures, f"{len(failures)} compile failures:\n" + "\n\n".join(failures[:5])
    assert all(set(s["targets"]) == {"sm_80", "sm_90"} for s in specs)


def _jit_kernels() -> set[str]:
    """family.name of every @triton.jit function named *_kernel in kernels/*.py (the launched ones)."""
    out = set()
    for path in sorted((ROOT / "kernels").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef) and node.name.endswith("_kernel"):
                if any("jit" in ast.unparse(d) for d in node.decorator_list):
                    out.add(f"{path.stem}.{node.name}")
    return out


@needs_triton
def test_every_triton_kernel_is_captured(fresh):
    captured = {s["kernel"] for s in fresh["triton"]["specializations"]}
    missing = _jit_kernels() - captured
    assert not missing, f"kernels no capture case launches (add cases to bench/aot_capture.py): {sorted(missing)}"


@needs_triton
def test_no_new_spills_and_shared_memory_fits(fresh, committed):
    known = {_spill_key(s, arch) for s in committed["triton"]["specializations"]
             for arch, t in s["targets"].items() if t["ok"] and (t["spill_store_bytes"] or t["spill_load_bytes"])}
    bad = []
    for s in fresh["triton"]["specializations"]:
        for arch, t in s["targets"].items():
            if not t["ok"]:
                continue
            what = f"{s['kernel']} {aot_report._constexpr_text(s)} num_warps={s['num_warps']} on {arch}"
            if (t["spill_store_bytes"] or t["spill_load_bytes"]) and _spill_key(s, arch) not in known:
                bad.append(f"spills {t['spill_store_bytes']}/{t['spill_load_bytes']} B: {what} ({s['cases'][0]})")
            smem = t["static_smem_bytes"] + t["dynamic_smem_bytes"]
            limit = TARGETS[arch].smem_per_block
            if smem > limit or not t["fits"]:
                bad.append(f"does not fit one SM ({smem} B shared memory, limit {limit}; {t['limited_by']}): {what}")
    assert not bad, "\n".join(bad)


@needs_triton
def test_committed_report_is_current(fresh, committed):
    """The committed report covers exactly the specializations this checkout launches (else
    regenerate it: python -m bench.aot_report). Compared under the Triton version that wrote it."""
    if committed["triton_version"] != fresh["triton_version"]:
        pytest.skip(f"report written with Triton {committed['triton_version']}, this is {fresh['triton_version']}")
    old = {_key(s) for s in committed["triton"]["specializations"]}
    new = {_key(s) for s in fresh["triton"]["specializations"]}
    assert new == old, (f"bench/results/gpu-resources.json is stale: {len(new - old)} new and {len(old - new)} "
                        f"vanished specializations; run `python -m bench.aot_report`.\nnew: {sorted(new - old)[:3]}")


def test_docs_page_is_the_rendering_of_the_committed_json(committed):
    assert aot_report.DOC.read_text() == aot_report.render(committed), \
        "docs/gpu_resources.md is out of date: run `python -m bench.aot_report --render`"


def test_committed_report_has_no_failures(committed):
    """The committed numbers themselves: zero compile failures, everything fits an SM."""
    assert [p for p in aot_report.problems(committed) if not p.startswith("spills")] == []


@pytest.mark.skipif(not _nvcc, reason="nvcc not found")
@pytest.mark.parametrize("source", [p.name for p in aot_cuda.sources()])
def test_cuda_source_compiles_for_sm80_and_sm90(source, fresh, committed):
    res = next(r for r in fresh["cuda"] if r["source"] == source)
    assert res["ok"], f"{res.get('command')}\n{res.get('error')}"
    archs = {k["arch"] for k in res["kernels"]}
    assert archs == {"sm_80", "sm_90"}, f"ptxas reported kernels for {archs}"
    known = {(c["source"], k["kernel"], k["arch"]) for c in committed["cuda"] for k in c["kernels"]
             if k.get("spill_store_bytes") or k.get("spill_load_bytes")}
    for k in res["kernels"]:
        assert "registers" in k, k
        if k["spill_store_bytes"] or k["spill_load_bytes"]:
            assert (source, k["kernel"], k["arch"]) in known, f"new spills: {k}"
        assert k["threads"], f"no __launch_bounds__ found for {k['kernel']}"
        assert k["fits"], f"{k['kernel']} on {k['arch']} cannot be resident: limited by {k['limited_by']}"


def test_cuda_ptxas_report_parsing():
    """The parser against a ptxas -v excerpt (two archs, a kernel with static shared memory)."""
    log = """ptxas info    : 11 bytes gmem
ptxas info    : Compiling entry function '_ZN6fastmi1kIfEEvPf' for 'sm_80'
ptxas info    : Function properties for _ZN6fastmi1kIfEEvPf
    8 bytes stack frame, 4 bytes spill stores, 12 bytes spill loads
ptxas info    : Used 64 registers, used 1 barriers, 12800 bytes smem, 480 bytes cmem[0]
ptxas info    : Compiling entry function '_ZN6fastmi1kIfEEvPf' for 'sm_90a'
ptxas info    : Function properties for _ZN6fastmi1kIfEEvPf
    0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads
ptxas info    : Used 80 registers, used 1 barriers
"""
    a, b = aot_cuda.parse_ptxas_log(log)
    assert a == {"mangled": "_ZN6fastmi1kIfEEvPf", "arch": "sm_80", "stack_bytes": 8, "spill_store_bytes": 4,
                 "spill_load_bytes": 12, "registers": 64, "static_smem_bytes": 12800}
    assert b["arch"] == "sm_90" and b["registers"] == 80 and b["static_smem_bytes"] == 0
    ptx = ".visible .entry _Z1kv(\n.param .u64 p\n)\n.maxntid 256, 1, 1\n.minnctapersm 1\n{\n ret;\n}\n"
    assert aot_cuda.max_threads(ptx) == {"_Z1kv": 256}


# ---------------------------------------------------------------------------------------------
# the pieces, on small inputs


def test_occupancy_by_hand():
    """Worked by hand from the per-SM limits (64 K registers in 4 sub-partitions, allocated per warp
    in units of 256; 64 warps; 32 blocks; shared memory in 128-byte units + 1 KB per block)."""
    a100, h100 = TARGETS["sm_80"], TARGETS["sm_90"]
    # 32 registers x 32 lanes = 1024 per warp: 16 warps per sub-partition, 64 per SM; 256 threads -> 8 blocks
    r = occupancy(a100, 32, 256, 0)
    assert (r["blocks_per_sm"], r["occupancy"], r["fits"]) == (8, 1.0, True)
    # 255 registers -> 8160, rounded to 8192 per warp: 2 warps per sub-partition, 8 per SM; 4-warp blocks -> 2
    r = occupancy(a100, 255, 128, 0)
    assert (r["blocks_per_sm"], r["warps_per_sm"], r["limited_by"]) == (2, 8, "registers")
    # 100 KB of shared memory -> 101 KB allocated per block: 2 blocks in 228 KB, 1 in 164 KB
    assert occupancy(h100, 32, 128, 100 * 1024)["blocks_per_sm"] == 2
    r = occupancy(a100, 32, 128, 100 * 1024)
    assert (r["blocks_per_sm"], r["limited_by"]) == (1, "shared memory")
    # more than a block may have: does not fit (163 KB on A100, 227 KB on H100)
    assert occupancy(a100, 32, 128, 164 * 1024)["fits"] is False
    assert occupancy(h100, 32, 128, 164 * 1024)["fits"] is True
    assert occupancy(h100, 32, 128, 228 * 1024)["fits"] is False
    # 1024 threads of 64 registers: 2048 per warp, 8 warps per sub-partition = 32 per SM -> 1 block
    assert occupancy(h100, 64, 1024, 0)["blocks_per_sm"] == 1
    assert occupancy(h100, 128, 1024, 0)["fits"] is False  # 128 x 1024 > 64 K registers per block


def test_pretend_cuda_answers_as_a_cuda_tensor():
    import torch

    t = torch.empty(4, 3, device="meta")
    with aot_triton.PretendCuda():
        assert t.is_cuda and t.device.type == "cuda"
        made = torch.empty(2, device=t.device)
        assert made.is_meta and made.is_cuda
        assert t.to("cuda").is_meta and t.new_zeros(3).device.type == "cuda"
        assert torch.empty(2).device.type == "cpu"  # CPU tensors stay what they are
    assert t.device.type == "meta" and not t.is_cuda


def test_specialization_follows_tritons_rules():
    """Triton's binder on a plain kernel: ints divisible by 16 get the divisibility attribute, an int
    equal to 1 becomes a constant, a pointer off a 16-byte boundary loses its alignment attribute."""
    import torch
    from triton.runtime.jit import JITFunction

    def k(X, Y, n, stride, one, BLOCK: "tl.constexpr"):  # noqa: F821 (never traced: only bound)
        pass

    fn = JITFunction(k)
    base = torch.empty(64, dtype=torch.float16, device="meta")
    x, y = aot_triton._Ptr(base), aot_triton._Ptr(base[3:])  # 6 bytes off: unaligned
    launch = aot_triton.Launch(fn, [x, y, 64, 17, 1], {"BLOCK": 32, "num_warps": 2}, (1,), "case", "fam")
    _, options, signature, constexprs, attrs = aot_triton.specialize(launch, 90)
    d = aot_triton.describe(fn, signature, constexprs, attrs)
    assert d["args"] == {"X": "*fp16 /16", "Y": "*fp16", "n": "i32 /16", "stride": "i32", "one": "=1"}
    assert d["constexprs"] == {"BLOCK": "32"}
    assert options.num_warps == 2
