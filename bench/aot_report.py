"""GPU readiness without a GPU: compile every recorded Triton specialization and every CUDA source
for sm_80 and sm_90, and turn the result into docs/gpu_resources.md.

    python -m bench.aot_report                 # capture + compile + CUDA; writes the JSON and the page
    python -m bench.aot_report --render        # only re-render the page from the committed JSON
    python -m bench.aot_report --out X.json    # write the JSON elsewhere (and no page)

Steps (each in its own process, so that the interpreter and the compiler do not meet):
``bench.aot_capture`` (TRITON_INTERPRET=1) records the Triton op calls of the public functions;
``bench.aot_triton`` replays them as on a GPU and compiles each kernel specialization;
``bench.aot_cuda`` compiles csrc/cuda/*.cu with nvcc. The nvcc compiles run beside the Triton ones.
"""
from __future__ import annotations

import argparse
import concurrent.futures
import datetime
import json
import os
import subprocess
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results" / "gpu-resources.json"
DOC = ROOT / "docs" / "gpu_resources.md"
TRITON_CACHE = ROOT / ".aot_cache" / "triton"
FAMILIES = ("critic_lse", "separable", "softmax_stats", "mmd_imq", "fd_jacobian")


class StepFailed(RuntimeError):
    pass


def _run_step(args: list[str], env: dict, what: str) -> None:
    proc = subprocess.run([sys.executable, "-m", *args], cwd=ROOT, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise StepFailed(f"{what} failed (exit {proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}")


def _env(interpret: bool) -> dict:
    env = dict(os.environ)
    env.pop("TRITON_INTERPRET", None)
    if interpret:
        env["TRITON_INTERPRET"] = "1"
        env["CUDA_VISIBLE_DEVICES"] = ""  # the capture runs on CPU tensors, GPU or not
    env.setdefault("TRITON_CACHE_DIR", str(TRITON_CACHE))
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT)] + [p for p in [env.get("PYTHONPATH")] if p])
    return env


def triton_results(jobs: int | None = None, families=FAMILIES) -> dict:
    """Capture (interpreter process) then replay + compile (compiler process)."""
    with tempfile.TemporaryDirectory(prefix="fastmi_aot_") as tmp:
        calls, out = os.path.join(tmp, "calls.json"), os.path.join(tmp, "triton.json")
        _run_step(["bench.aot_capture", calls, "--families", *families], _env(True), "aot capture")
        extra = ["--jobs", str(jobs)] if jobs else []
        _run_step(["bench.aot_triton", calls, out, *extra], _env(False), "aot triton compile")
        with open(out) as f:
            return json.load(f)


def _git_commit() -> str:
    proc = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    dirty = subprocess.run(["git", "status", "--porcelain", "--", "kernels", "csrc", "fastmi"], cwd=ROOT,
                           capture_output=True, text=True).stdout.strip()
    return (proc.stdout.strip() or "?") + (" (kernels modified)" if dirty else "")


def collect(jobs: int | None = None, with_cuda: bool = True, with_triton: bool = True) -> dict:
    """Everything the report needs: Triton specializations and CUDA kernels, with provenance. The nvcc
    compiles run in threads beside the Triton step."""
    from bench import aot_cuda

    srcs = aot_cuda.sources() if with_cuda else []
    with concurrent.futures.ThreadPoolExecutor(max(1, len(srcs))) as pool:
        cuda_futs = [pool.submit(aot_cuda.compile_source, s) for s in srcs]
        tri = triton_results(jobs) if with_triton else {"triton": None, "torch": None, "specializations": [],
                                                         "launches": 0}
        cuda = [f.result() for f in cuda_futs]
    return {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "commit": _git_commit(), "triton_version": tri.pop("triton"), "torch_version": tri.pop("torch"),
            "nvcc": next((c.get("nvcc") for c in cuda if c.get("nvcc")), None), "triton": tri, "cuda": cuda}


# ---------------------------------------------------------------------------------------------
# checks shared by the test and the report


def problems(result: dict) -> list[str]:
    """Compile failures, spills, and shared memory beyond what one block may have, as lines."""
    out = []
    for s in result["triton"]["specializations"]:
        for arch, t in s["targets"].items():
            what = f"{s['kernel']} {_constexpr_text(s)} num_warps={s['num_warps']} on {arch}"
            if not t["ok"]:
                out.append(f"compile failure: {what}: {t['error'][:500]}")
                continue
            if t["spill_store_bytes"] or t["spill_load_bytes"]:
                out.append(f"spills: {what}: {t['spill_store_bytes']} B stored, {t['spill_load_bytes']} B loaded "
                           f"({t['registers']} registers)")
            if not t["fits"]:
                out.append(f"does not fit an SM: {what}: limited by {t['limited_by']}")
    for c in result["cuda"]:
        if not c["ok"]:
            out.append(f"compile failure: csrc/cuda/{c['source']}: {c.get('error', '')[-800:]}")
        for k in c["kernels"]:
            what = f"csrc/cuda/{c['source']} {k['kernel']} on {k['arch']}"
            if k.get("spill_store_bytes") or k.get("spill_load_bytes"):
                out.append(f"spills: {what}: {k['spill_store_bytes']} B stored, {k['spill_load_bytes']} B loaded")
            if k.get("fits") is False:
                out.append(f"does not fit an SM: {what}: limited by {k['limited_by']}")
    return out


# ---------------------------------------------------------------------------------------------
# rendering

ARCHS = ("sm_80", "sm_90")


def _constexpr_text(s: dict) -> str:
    return " ".join(f"{k}={v}" for k, v in s["constexprs"].items())


def _dtype_text(s: dict) -> str:
    """The element types of the kernel's first pointer argument (the data it reads)."""
    for ty in s["args"].values():
        if ty.startswith("*"):
            return ty.split()[0][1:]
    return "-"


def _spec_text(s: dict) -> str:
    """Triton's integer / pointer specialization: ints divisible by 16 or equal to 1, unaligned pointers."""
    div = [n for n, t in s["args"].items() if t.startswith("i") and t.endswith("/16")]
    one = [n for n, t in s["args"].items() if t == "=1"]
    unaligned = [n for n, t in s["args"].items() if t.startswith("*") and not t.endswith("/16")]
    parts = []
    if div:
        parts.append("/16: " + ", ".join(div))
    if one:
        parts.append("=1: " + ", ".join(one))
    if unaligned:
        parts.append("unaligned: " + ", ".join(unaligned))
    return "; ".join(parts) or "-"


def _res_text(t: dict) -> str:
    if not t.get("ok", True):
        return "**FAILED**"
    spill = t["spill_store_bytes"] + t["spill_load_bytes"]
    smem = t.get("static_smem_bytes", 0) + t.get("dynamic_smem_bytes", 0)
    occ = f"{t['occupancy']:.0%}" if "occupancy" in t else "?"
    return (f"{t['registers']} | {'**' + str(t['spill_store_bytes']) + '/' + str(t['spill_load_bytes']) + '**' if spill else 0}"
            f" | {smem / 1024:.1f} | {occ}")


def headline(result: dict) -> dict:
    """Per architecture: the maxima / minima over every Triton specialization and CUDA kernel."""
    out = {}
    for arch in ARCHS:
        rows = [(f"{s['kernel']} ({_constexpr_text(s)}, {_dtype_text(s)})", t)
                for s in result["triton"]["specializations"] for a, t in s["targets"].items() if a == arch and t["ok"]]
        rows += [(f"csrc/cuda/{c['source']} {k['kernel']}", k) for c in result["cuda"] for k in c["kernels"]
                 if k["arch"] == arch and "registers" in k]
        if not rows:
            continue
        regs = max(rows, key=lambda r: r[1]["registers"])
        smem = max(rows, key=lambda r: r[1].get("static_smem_bytes", 0) + r[1].get("dynamic_smem_bytes", 0))
        occ = [r for r in rows if "occupancy" in r[1]]
        low = min(occ, key=lambda r: r[1]["occupancy"]) if occ else None
        out[arch] = {
            "max_registers": (regs[1]["registers"], regs[0]),
            "spilling": sum(1 for _, t in rows if t.get("spill_store_bytes") or t.get("spill_load_bytes")),
            "max_smem_bytes": (smem[1].get("static_smem_bytes", 0) + smem[1].get("dynamic_smem_bytes", 0), smem[0]),
            "lowest_occupancy": (low[1]["occupancy"], low[1]["limited_by"], low[0]) if low else None,
            "count": len(rows),
        }
    return out


LIMITS_TEXT = """\
| | A100 (sm_80) | H100 / H200 (sm_90) |
|---|---|---|
| registers per SM / per thread (max) | 65536 / 255 | 65536 / 255 |
| resident threads / warps / blocks per SM | 2048 / 64 / 32 | 2048 / 64 / 32 |
| shared memory per SM (largest carve-out) | 164 KB | 228 KB |
| shared memory per block (opt-in maximum) | 163 KB | 227 KB |
| SMs | 108 (A100 SXM) | 132 (H100 SXM, H200) |

Sources: the CUDA C++ Programming Guide, "Technical Specifications per Compute Capability"; NVIDIA's
Ampere and Hopper tuning guides (docs.nvidia.com/cuda/ampere-tuning-guide, .../hopper-tuning-guide,
sections on occupancy and shared memory); the allocation rules (registers per warp in units of 256,
split over 4 sub-partitions; shared memory in units of 128 bytes plus 1 KB reserved per block) from
the toolkit's occupancy calculator, include/cuda_occupancy.h. Occupancy = resident warps / 64, the
SM set to its largest shared-memory carve-out; "limited by" names the resource that bounds it."""


def _spill(t: dict) -> int:
    return (t.get("spill_store_bytes") or 0) + (t.get("spill_load_bytes") or 0) if t.get("ok", True) else 0


def _notes(result: dict) -> list[str]:
    """Where a block configuration should change, derived from the numbers (kernels unchanged here)."""
    by_kernel = defaultdict(list)
    for s in result["triton"]["specializations"]:
        by_kernel[s["kernel"]].append(s)
    notes = []
    for kernel, rows in sorted(by_kernel.items()):
        spilling = [s for s in rows if any(_spill(t) for t in s["targets"].values())]
        if spilling:
            worst = defaultdict(lambda: (0, ""))  # dtype -> (bytes, arch)
            for s in spilling:
                for arch, t in s["targets"].items():
                    worst[_dtype_text(s)] = max(worst[_dtype_text(s)], (_spill(t), arch))
            per_dtype = ", ".join(f"{dt} {b} B ({arch})" for dt, (b, arch) in sorted(worst.items(), key=lambda x: -x[1][0]))
            cfgs = sorted({(_constexpr_text(s), s["num_warps"]) for s in spilling})
            shown = "; ".join(f"`{c}` num_warps={w}" for c, w in cfgs[:3]) + (f"; and {len(cfgs) - 3} more" if len(cfgs) > 3 else "")
            notes.append(f"**{kernel}** spills in {len(spilling)} of {len(rows)} specializations; worst spill traffic "
                         f"per thread (bytes stored + loaded) by input dtype: {per_dtype}. Configurations: {shown}. "
                         + _ADVICE.get(kernel, "Give the tile more threads (num_warps) or make it smaller, then re-run "
                                               "`python -m bench.aot_report`."))
        low = [s for s in rows if s not in spilling and any(
            t["ok"] and t["occupancy"] <= 0.125 and t["limited_by"] == "registers" for t in s["targets"].values())]
        if low:
            notes.append(f"**{kernel}**: {len(low)} more specialization{'s' if len(low) > 1 else ''} (no spills) held to 12.5% occupancy or less "
                         f"by registers, e.g. `{_constexpr_text(low[0])}` num_warps={low[0]['num_warps']}. Normal for "
                         "tiles that keep a large accumulator in registers; for a bandwidth-bound kernel, time more warps "
                         "per SM (smaller tiles) on a GPU before changing it.")
    cuda_spills = defaultdict(list)
    for c in result["cuda"]:
        for k in c["kernels"]:
            if _spill(k):
                cuda_spills[c["source"]].append(k)
    for src, ks in sorted(cuda_spills.items()):
        worst = max(ks, key=_spill)
        names = sorted({k["kernel"].replace("void ", "") for k in ks})
        notes.append(f"**csrc/cuda/{src}** spills in {len(ks)} kernel instances (worst {_spill(worst)} B per thread, "
                     f"{worst['arch']}, {worst['registers']} registers at {worst['threads']} threads): "
                     f"{', '.join('`' + n + '`' for n in names)}. " + _ADVICE.get(src, ""))
    return notes


# Per-kernel advice for the notes: what to change in the launcher's block choice. The numbers that
# motivate it are in the generated text before it; re-run the report after a change.
_ADVICE = {
    "critic_lse._critic_lse_fwd_kernel": (
        "Only the float64 path with small rows spills: `_blocks` halves the float64 tile (_MAX_TILE / 2) and "
        "derives num_warps from the element count, so a 32 x 32 float64 tile gets 2 warps, 16 doubles (32 "
        "registers) per thread for every tile-sized temporary. Derive num_warps from the tile's bytes instead "
        "(e.g. `block_m * block_n * (8 if float64 else 4) // 2048`, at least 4)."),
    "critic_lse._critic_lse_bwd_kernel": "Same cause and cure as the forward kernel's float64 spills (`_blocks`).",
    "separable._row_lse_kernel": (
        "The spills are float32 with input_precision 'ieee' (IS_FP32, torch's default matmul precision "
        "'highest'): that tl.dot runs on FMA units, with both 64 x 64 operand tiles and the accumulator in "
        "registers, 4 warps. For IS_FP32 with 'ieee', use BLOCK_M = BLOCK_N = 32 or 8 warps in `_meta`; the "
        "half-type and TF32 configurations spill at most a few hundred bytes and can stay."),
    "separable._grad_kernel": (
        "Float32 'ieee' again (every spilling configuration has IS_FP32=True): the 64 x BLOCK_D fp32 "
        "accumulator plus the recomputed 64 x 64 score tile on FMA units. In `_grad`, cap BLOCK_D at 64 for "
        "IS_FP32 with 'ieee' (more programs along d), or use BLOCK_M = 32; half types keep BLOCK_D = 256."),
    "mmd_imq._mmd_imq_rows_kernel": (
        "Every GPU configuration spills, worst at BK = 128 (K >= 128), where sm_80 needs an 11 KB stack frame per "
        "thread: 'tf32x3' splits each fp32 operand into two TF32 halves for three products, and the BM x BK "
        "gradient accumulator and the re-read B tile grow with BK. In `_blocks`, use BM = BN = 32 on GPUs and cap "
        "BK at 32 (more programs along K for the gradient)."),
    "fd_jacobian._combine_kernel": (
        "Only the centred configurations spill (a few hundred bytes at most; CENTER=False stays under the limit), "
        "at 255 registers with 4 warps for a 32 x 64 tile and its 32 x 32 Philox coefficients: 8 warps, or "
        "BLOCK_K = 16, in `fd_perturb` should take it off the limit."),
    "critic_lse.cu": (
        "The double kernels at BLOCK = 1024 are held to 64 registers by their launch bounds (65536 / 1024): "
        "launch double rows with 512 threads (the float types fit in 64)."),
}


def _table(specs: list[dict]) -> list[str]:
    head = ("| kernel | constexprs | dtype | warps | int / pointer spec | sm_80 regs | spill st/ld B | smem KB | occ "
            "| sm_90 regs | spill st/ld B | smem KB | occ | captured from |")
    lines = [head, "|" + "---|" * 14]
    for s in specs:
        cases = s["cases"][0] + (f" (+{len(s['cases']) - 1})" if len(s["cases"]) > 1 else "")
        res = [(_res_text(s["targets"][a]) if a in s["targets"] else "- | - | - | -") for a in ARCHS]
        lines.append(f"| {s['kernel'].split('.', 1)[1]} | {_constexpr_text(s)} | {_dtype_text(s)} | {s['num_warps']} "
                     f"| {_spec_text(s)} | {res[0]} | {res[1]} | {cases} |")
    return lines


def render(result: dict) -> str:
    tri = result["triton"]
    specs = tri["specializations"]
    per_family = defaultdict(list)
    for s in specs:
        per_family[s["family"]].append(s)
    fails = sum(not t["ok"] for s in specs for t in s["targets"].values())
    lines = [
        "# GPU resources of fastmi's kernels (sm_80, sm_90)",
        "",
        "<!-- generated by `python -m bench.aot_report` from bench/results/gpu-resources.json: do not edit -->",
        "",
        f"Compiled ahead of time, without a GPU, on {result['date'][:10]} at commit {result['commit']} with Triton "
        f"{result['triton_version']} (torch {result['torch_version']}) and {result.get('nvcc') or 'no nvcc'}. "
        "Every Triton kernel specialization that fastmi's public functions launch at the representative shapes, "
        "dtypes and options of `bench/aot_capture.py` (forward and backward), replayed as a GPU would launch it, "
        "compiled for both targets; every `csrc/cuda/*.cu` compiled with nvcc for both. `make test` repeats this "
        "(pytest marker `aot`, tests/test_aot.py) and fails on a compile error, on spills beyond those listed "
        "below, and on shared memory beyond what a block may have. How it works, and the script for a lent GPU: "
        "[gpu.md](gpu.md).",
        "",
        "## Headline",
        "",
        f"{len(specs)} Triton specializations ({tri['launches']} launches recorded), "
        f"{2 * len(specs)} compiles, **{fails} compile failures**; "
        f"{sum(len(c['kernels']) for c in result['cuda'])} CUDA kernel instances from "
        f"{len(result['cuda'])} sources, {sum(not c['ok'] for c in result['cuda'])} failures.",
        "",
        "| | max registers / thread | specializations with spills | max shared memory / block | lowest occupancy |",
        "|---|---|---|---|---|",
    ]
    for arch, h in headline(result).items():
        low = h["lowest_occupancy"]
        low_text = f"{low[0]:.1%}, by {low[1]} ({low[2]})" if low else "-"
        lines.append(f"| {arch} | {h['max_registers'][0]} ({h['max_registers'][1]}) | {h['spilling']} of {h['count']} "
                     f"| {h['max_smem_bytes'][0] / 1024:.1f} KB ({h['max_smem_bytes'][1]}) | {low_text} |")
    lines += ["", "## Device limits used", "", LIMITS_TEXT, "", "## Where a block configuration should change", ""]
    notes = _notes(result)
    lines += [f"- {n}" for n in notes] or ["- Nothing: no spills, no register-bound configuration below 12.5%."]
    lines += ["", "The kernels are not changed by this report; the notes are recommendations for their owners.", ""]
    for fam in FAMILIES:
        if fam not in per_family:
            continue
        lines += [f"## Triton: {fam}", "", *(_table(per_family[fam])), ""]
    lines += ["## CUDA sources (nvcc, `-Xptxas -v`)", "",
              "| source | kernel | arch | threads | regs | spill st/ld B | smem KB | occ | limited by |",
              "|---|---|---|---|---|---|---|---|---|"]
    for c in result["cuda"]:
        if not c["ok"]:
            lines.append(f"| {c['source']} | **compile failed** | | | | | | | |")
        for k in c["kernels"]:
            occ = f"{k['occupancy']:.0%}" if "occupancy" in k else "?"
            spill = f"{k.get('spill_store_bytes', '?')}/{k.get('spill_load_bytes', '?')}"
            lines.append(f"| {c['source']} | `{k['kernel']}` | {k['arch']} | {k.get('threads') or '?'} "
                         f"| {k.get('registers', '?')} | {spill} | {k.get('static_smem_bytes', 0) / 1024:.1f} | {occ} "
                         f"| {k.get('limited_by', '?')} |")
    lines += ["", "Columns: registers per thread; bytes of spill stores / loads per thread (ptxas); shared memory "
              "per block (static + Triton's dynamic); theoretical occupancy. Constexprs and the int / pointer "
              "specialization are what Triton compiled for (\"/16\": the value was divisible by 16; \"=1\": the "
              "constant 1; \"unaligned\": a pointer not 16-byte aligned).", ""]
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description="Compile every Triton specialization and CUDA source for sm_80/sm_90 "
                                            "and write the resource report.")
    p.add_argument("--render", action="store_true", help="only re-render docs/gpu_resources.md from the JSON")
    p.add_argument("--out", default=None, help=f"JSON to write (default {RESULTS.relative_to(ROOT)}, plus the page)")
    p.add_argument("--jobs", type=int, default=None, help="Triton compile processes (default: min(8, cores))")
    p.add_argument("--no-cuda", action="store_true", help="skip the nvcc compiles")
    args = p.parse_args(argv)
    if args.render:
        if not RESULTS.exists():
            print(f"bench.aot_report: {RESULTS.relative_to(ROOT)} does not exist; run without --render", file=sys.stderr)
            return 2
        DOC.write_text(render(json.loads(RESULTS.read_text())))
        print(f"wrote {DOC.relative_to(ROOT)}")
        return 0
    out = Path(args.out) if args.out else RESULTS
    if args.out and out.exists():
        print(f"bench.aot_report: {out} exists; not overwriting it", file=sys.stderr)
        return 2
    try:
        result = collect(args.jobs, with_cuda=not args.no_cuda)
    except StepFailed as exc:
        print(f"bench.aot_report: {exc}", file=sys.stderr)
        return 1
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {out}")
    if not args.out:
        DOC.write_text(render(result))
        print(f"wrote {DOC.relative_to(ROOT)}")
    for line in problems(result):
        print(line)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
