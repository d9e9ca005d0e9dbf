"""Step 2 of the ahead-of-time (AOT) check: replay the recorded op calls as on a GPU, record each
kernel launch's specialization, and compile every unique one for sm_80 and sm_90.

Replay: each Triton op recorded by ``bench.aot_capture`` has a Python body (the launcher in
kernels/<family>.py, called by the custom op in fastmi/<family>/ops.py). It is called on meta
tensors of the recorded layouts under ``PretendCuda``, a TorchFunctionMode under which those tensors
report ``device == cuda`` and new tensors asked for on "cuda" are made on "meta" -- so the launcher
takes its GPU decisions (tile sizes, TF32 / tf32x3, no interpreter up-casts) exactly as on a device.
``JITFunction.run`` is replaced meanwhile by a recorder: nothing is launched.

Specialization: per launch, Triton's own binder (the code ``JITFunction.run`` uses) turns the
arguments into the signature (pointer dtypes, i32/i64), the integer and pointer specialization
(== 1 becomes a constant; divisibility by 16 an attribute; a pointer's 16-byte alignment follows the
tensor's storage offset, the base of a CUDA allocation being 256-byte aligned) and the constexprs;
the backend's ``parse_options`` adds num_warps / num_stages. Launches with the same key are one
specialization.

Compile: ``triton.compile(ASTSource(fn, signature, constexprs, attrs), target=GPUTarget("cuda", cap,
32))`` per specialization and target, in worker processes. Registers, spills, stack and static shared
memory come from ptxas's own report (``-v``, printed by Triton's ptxas step; re-run on the kernel's PTX
when Triton's cache spared the compile); dynamic
shared memory from the compiled kernel's metadata. Compiled kernels are cached by Triton
(TRITON_CACHE_DIR), keyed by the kernels' source hash.

    python -m bench.aot_triton calls.json triton.json [--jobs N]     (TRITON_INTERPRET unset)
"""
from __future__ import annotations

import concurrent.futures
import contextlib
import io
import json
import multiprocessing
import os
import re
import sys
import time
import traceback

if __name__ == "__main__" and os.environ.get("TRITON_INTERPRET") == "1":
    sys.exit("bench.aot_triton: run without TRITON_INTERPRET (the kernels must be compiled, not interpreted)")

import torch
from torch.overrides import TorchFunctionMode

from bench.aot_occupancy import TARGETS, occupancy

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16,
          "float64": torch.float64, "int64": torch.int64, "int32": torch.int32, "bool": torch.bool,
          "uint8": torch.uint8}


# ---------------------------------------------------------------------------------------------
# replay


_DEVICE, _IS_CUDA = torch.Tensor.device, torch.Tensor.is_cuda  # property descriptors: their getters
# arrive in __torch_function__ as ``func`` (bound to the descriptor)


class PretendCuda(TorchFunctionMode):
    """Meta tensors answer ``device`` / ``is_cuda`` as CUDA tensors; "cuda" allocations become meta."""

    @staticmethod
    def _is_cuda(dev) -> bool:
        return isinstance(dev, (str, torch.device)) and torch.device(dev).type == "cuda"

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = dict(kwargs or {})
        owner = getattr(func, "__self__", None)
        if owner is _DEVICE:
            return torch.device("cuda", 0) if args[0].is_meta else func(*args)
        if owner is _IS_CUDA:
            return True if args[0].is_meta else func(*args)
        if self._is_cuda(kwargs.get("device")):
            kwargs["device"] = "meta"
        if getattr(func, "__name__", "") in ("to", "cuda") and args:
            args = tuple("meta" if self._is_cuda(a) else a for a in args)
            if getattr(func, "__name__", "") == "cuda":
                return args[0].to("meta")
        return func(*args, **kwargs)


def decode(value):
    """The inverse of ``bench.aot_capture.encode``: tensors come back as meta tensors of that layout."""
    if isinstance(value, dict) and "tensor" in value:
        t = value["tensor"]
        dt = DTYPES[t["dtype"]]
        size = t["offset"] + 1 + sum((s - 1) * st for s, st in zip(t["shape"], t["stride"]) if s > 0)
        base = torch.empty(size if all(t["shape"]) else t["offset"], dtype=dt, device="meta")
        return base.as_strided(t["shape"], t["stride"], t["offset"])
    if isinstance(value, dict) and "float" in value:
        return float(value["float"])
    if isinstance(value, list):
        return [decode(v) for v in value]
    return value


def op_body(qualname: str):
    """The Python implementation of a Triton op (what runs when it is called on real tensors)."""
    import fastmi  # noqa: F401  (importing the families registers their ops)
    from fastmi._core.fused_op import TRITON_BODIES

    return TRITON_BODIES[qualname]


class _Ptr:
    """What the binder sees of a tensor: its dtype and an address with the tensor's alignment."""

    def __init__(self, t: torch.Tensor):
        self.dtype = t.dtype
        self._ptr = 256 + t.storage_offset() * t.element_size()  # CUDA allocations are 256-byte aligned

    def data_ptr(self):
        return self._ptr


class Launch:
    __slots__ = ("fn", "args", "kwargs", "grid", "case", "family")

    def __init__(self, fn, args, kwargs, grid, case, family):
        self.fn, self.args, self.kwargs, self.grid, self.case, self.family = fn, args, kwargs, grid, case, family


@contextlib.contextmanager
def recording_launches(sink: list, case: str, family: str):
    """Replace JITFunction.run with a recorder for the duration (nothing is compiled or launched)."""
    from triton.runtime.jit import JITFunction

    original = JITFunction.run

    def record(self, *args, grid, warmup, **kwargs):
        args = [_Ptr(a) if isinstance(a, torch.Tensor) else a for a in args]
        kwargs = {k: (_Ptr(v) if isinstance(v, torch.Tensor) else v) for k, v in kwargs.items()}
        sink.append(Launch(self, args, kwargs, tuple(grid) if not callable(grid) else grid, case, family))

    JITFunction.run = record
    try:
        yield
    finally:
        JITFunction.run = original


def replay(calls: list[dict]) -> list[Launch]:
    """Every kernel launch of the recorded op calls, as a GPU would see them."""
    launches: list[Launch] = []
    seen = set()
    for call in calls:
        key = json.dumps([call["op"], call["args"], call["kwargs"]], sort_keys=True)
        if key in seen:
            continue
        seen.add(key)
        body = op_body(call["op"])
        args, kwargs = decode(call["args"]), decode(call["kwargs"])
        with recording_launches(launches, call["case"], call["family"]), PretendCuda():
            body(*args, **kwargs)
    return launches


# ---------------------------------------------------------------------------------------------
# specialization


def _launch_options(fn, kwargs: dict, backend) -> dict:
    """The keyword arguments ``JITFunction.run`` hands the binder (it adds the debug / instrumentation
    knobs of the installed Triton version)."""
    from triton import knobs

    kw = dict(kwargs)
    kw["debug"] = kw.get("debug", fn.debug) or knobs.runtime.debug
    known = backend.parse_options({}).__dict__
    for name in ("instrumentation_mode", "fpsan_homomorphic_casts"):
        if name in known and hasattr(knobs.compilation, name):
            kw[name] = getattr(knobs.compilation, name)
    return kw


def specialize(launch: Launch, cap: int):
    """(key, options, signature, constexprs, attrs) of a launch for a target, from Triton's binder."""
    from triton.backends.compiler import GPUTarget
    from triton.compiler import make_backend
    from triton.runtime.jit import create_function_from_signature

    fn = launch.fn
    backend = make_backend(GPUTarget("cuda", cap, 32))
    binder = create_function_from_signature(fn.signature, fn.params, backend)
    kw = _launch_options(fn, launch.kwargs, backend)
    bound, spec, opts = binder(*launch.args, **kw)
    options, signature, constexprs, attrs = fn._pack_args(backend, kw, bound, spec, opts)
    key = f"{fn.__module__}.{fn.__name__}|{spec}|{sorted((k, str(v)) for k, v in launch.kwargs.items())}"
    return key, options, signature, constexprs, attrs


def _value(v) -> str:
    return str(v) if not isinstance(v, str) else repr(v)


def describe(fn, signature: dict, constexprs: dict, attrs: dict) -> dict:
    """Readable parameters: declared constexprs by value; the others by type plus Triton's
    specialization ("/16": divisible by 16, "=1": the constant 1)."""
    names = fn.arg_names
    const = {names[k[0]]: v for k, v in constexprs.items()}
    declared = {p.name for p in fn.params if p.is_constexpr}
    out_const, out_args = {}, {}
    for name, ty in signature.items():
        if name in declared:
            out_const[name] = _value(const.get(name))
            continue
        if ty == "constexpr":  # specialized by value at launch (an integer 1, or None)
            out_args[name] = f"={const.get(name)}"
            continue
        a = attrs.get((names.index(name),), [])
        div = any(k == "tt.divisibility" for k, _ in a)
        out_args[name] = ty + (" /16" if div else "")
    return {"args": out_args, "constexprs": out_const}


def unique_specializations(launches: list[Launch]) -> list[dict]:
    """One entry per specialization (first launch kept), with the cases that reached it."""
    specs: dict[str, dict] = {}
    for ln in launches:
        key, options, signature, constexprs, attrs = specialize(ln, 90)
        s = specs.get(key)
        if s is None:
            d = describe(ln.fn, signature, constexprs, attrs)
            s = specs[key] = {
                "kernel": f"{ln.fn.__module__.rsplit('.', 1)[-1]}.{ln.fn.__name__}",
                "family": ln.family, **d,
                "num_warps": options.num_warps, "num_stages": options.num_stages,
                "grid": list(ln.grid) if isinstance(ln.grid, tuple) else None,
                "cases": [], "launches": 0, "_launch": ln,
            }
        s["launches"] += 1
        if ln.case not in s["cases"]:
            s["cases"].append(ln.case)
    return list(specs.values())


# ---------------------------------------------------------------------------------------------
# compile + resources

_RE_REGS = re.compile(r"Used (\d+) registers")
_RE_STACK = re.compile(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads")
_RE_SMEM = re.compile(r"(\d+) bytes smem")


def parse_ptxas(log: str) -> dict:
    """Registers, stack, spills and static shared memory of the (one) entry in a ``ptxas -v`` log."""
    regs, stack, smem = _RE_REGS.search(log), _RE_STACK.search(log), _RE_SMEM.search(log)
    if regs is None or stack is None:
        raise ValueError(f"no resource line in the ptxas log:\n{log[-2000:]}")
    return {"registers": int(regs.group(1)), "stack_bytes": int(stack.group(1)),
            "spill_store_bytes": int(stack.group(2)), "spill_load_bytes": int(stack.group(3)),
            "static_smem_bytes": int(smem.group(1)) if smem else 0}


@contextlib.contextmanager
def _ptxas_log():
    """Collects the ``ptxas -v`` report of the compiles inside (Triton prints it when asked to)."""
    from triton import knobs

    out = io.StringIO()
    old = knobs.nvidia.dump_ptxas_log
    knobs.nvidia.dump_ptxas_log = True
    try:
        with contextlib.redirect_stdout(out):
            yield out
    finally:
        knobs.nvidia.dump_ptxas_log = old


def compile_one(launch: Launch, cap: int) -> dict:
    """Compile a launch's specialization for sm_<cap>; its resources and occupancy, or the error."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource, make_backend

    t0 = time.perf_counter()
    try:
        _, options, signature, constexprs, attrs = specialize(launch, cap)
        target = GPUTarget("cuda", cap, 32)
        with _ptxas_log() as log:
            kernel = triton.compile(ASTSource(launch.fn, signature, constexprs, attrs), target=target,
                                    options=options.__dict__)
        if "Used" not in log.getvalue():  # Triton's cache had the kernel: ptxas did not run
            with _ptxas_log() as log:
                make_backend(target).make_cubin(kernel.asm["ptx"], {}, options, cap)
        res = parse_ptxas(log.getvalue())
        res["dynamic_smem_bytes"] = int(kernel.metadata.shared)
        res["ok"] = True
        res.update(occupancy(TARGETS[f"sm_{cap}"], res["registers"], 32 * options.num_warps,
                             res["static_smem_bytes"] + res["dynamic_smem_bytes"]))
    except Exception as exc:  # a compile error is a result here, reported per specialization
        res = {"ok": False, "error": f"{type(exc).__name__}: {exc}"[-4000:],
               "traceback": traceback.format_exc()[-4000:]}
    res["seconds"] = round(time.perf_counter() - t0, 2)
    return res


_WORK: list = []  # (spec index, cap) -> launch, inherited by forked workers


def _work(i: int, cap: int) -> dict:
    return compile_one(_WORK[i], cap)


def compile_all(specs: list[dict], caps=(80, 90), jobs: int | None = None) -> None:
    """Fill spec["targets"]["sm_<cap>"] for every spec, compiling in ``jobs`` forked processes."""
    global _WORK
    _WORK = [s["_launch"] for s in specs]
    tasks = [(i, cap) for i in range(len(specs)) for cap in caps]
    for s in specs:
        s["targets"] = {}
    jobs = jobs or min(8, os.cpu_count() or 1)
    if jobs <= 1:
        results = [_work(i, cap) for i, cap in tasks]
    else:
        ctx = multiprocessing.get_context("fork")
        with concurrent.futures.ProcessPoolExecutor(jobs, mp_context=ctx) as pool:
            results = list(pool.map(_work, *zip(*tasks)))
    for (i, cap), res in zip(tasks, results):
        specs[i]["targets"][f"sm_{cap}"] = res


def run(calls: list[dict], caps=(80, 90), jobs: int | None = None) -> dict:
    import triton

    t0 = time.perf_counter()
    launches = replay(calls)
    specs = unique_specializations(launches)
    t1 = time.perf_counter()
    compile_all(specs, caps, jobs)
    for s in specs:
        del s["_launch"]
    return {"triton": triton.__version__, "torch": torch.__version__, "launches": len(launches),
            "replay_seconds": round(t1 - t0, 1), "compile_seconds": round(time.perf_counter() - t1, 1),
            "specializations": specs}


def main(argv=None) -> int:
    import argparse

    p = argparse.ArgumentParser(description="Compile every recorded Triton specialization for sm_80 / sm_90.")
    p.add_argument("calls", help="JSON written by bench.aot_capture")
    p.add_argument("out", help="JSON file to write")
    p.add_argument("--jobs", type=int, default=None, help="compile processes (default: min(8, cores))")
    p.add_argument("--caps", type=int, nargs="*", default=[80, 90])
    args = p.parse_args(argv)
    with open(args.calls) as f:
        calls = json.load(f)["calls"]
    result = run(calls, tuple(args.caps), args.jobs)
    with open(args.out, "w") as f:
        json.dump(result, f, indent=1)
    n_fail = sum(not t["ok"] for s in result["specializations"] for t in s["targets"].values())
    print(f"aot triton: {len(result['specializations'])} specializations from {result['launches']} launches, "
          f"{n_fail} compile failures, compile {result['compile_seconds']} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
