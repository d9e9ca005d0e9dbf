"""Time and peak memory of separable InfoNCE against the batch size n, on CPU: fused vs the dense
reference (x @ y.T then InfoNCE) eager and compiled, each point in a fresh child process
(``bench.memory``). Dense points are skipped where their extrapolated peak would not fit in this
machine's memory; the fused path goes on to larger n. Writes JSON and a PNG plot.

    python -m bench.sweep_separable [--sizes 1024 2048 ...] [--d 128] [--impls fused compiled] [--merge]

--merge keeps the rows of an earlier run (replacing those measured again) and redraws the plot.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys

import torch

from fastmi.timing import total_memory_bytes

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS = os.path.join(ROOT, "bench", "results")


def _child(impl: str, n: int, d: int, repeat: int) -> dict:
    """Median seconds of `repeat` steps and the peak extra bytes of one, in a child process."""
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536")
    out = subprocess.run([sys.executable, "-m", "bench.sweep_separable", "--child", impl, str(n), str(d), str(repeat)],
                         env=env, cwd=ROOT, capture_output=True, text=True)
    if out.returncode != 0:
        return {"error": out.stderr.strip().splitlines()[-1] if out.stderr.strip() else f"exit {out.returncode}"}
    return json.loads(out.stdout.strip().splitlines()[-1])


def _measure(impl: str, n: int, d: int, repeat: int) -> dict:
    import statistics
    import time

    from bench.memory import _status
    from bench.separable_cases import grad_bytes, inputs, loss_fn, step

    fn = loss_fn("infonce", impl)
    xy = inputs(n, d)
    step(fn, tuple(t[: min(n, 512)] for t in xy))  # warm-up / compilation at a small size
    times = []
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    base = _status("VmRSS:")
    for _ in range(repeat):
        t0 = time.perf_counter()
        step(fn, xy)
        times.append(time.perf_counter() - t0)
    peak = _status("VmHWM:") - base - grad_bytes(xy)
    return {"seconds": statistics.median(times), "peak_extra_bytes": peak}


def plot(rows, path: str, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_t, ax_m) = plt.subplots(1, 2, figsize=(11, 4))
    for impl, style in (("fused", "o-"), ("reference", "s--"), ("compiled", "^:")):
        pts = [r for r in rows if r["impl"] == impl and "seconds" in r]
        if not pts:
            continue
        ns = [r["n"] for r in pts]
        ax_t.plot(ns, [r["seconds"] for r in pts], style, label=impl)
        ax_m.plot(ns, [max(r["peak_extra_bytes"], 1) / 2**20 for r in pts], style, label=impl)
    for ax, label in ((ax_t, "forward+backward seconds"), (ax_m, "peak extra memory (MiB)")):
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("batch size n")
        ax.set_ylabel(label)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
    total = total_memory_bytes()
    if total:
        ax_m.axhline(total / 2**20, color="gray", lw=0.8)
        ax_m.set_ylim(top=total / 2**20 * 3)
        ax_m.text(min(r["n"] for r in rows), total / 2**20 * 1.2, "this machine's memory", color="gray", fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", type=int, nargs="*", default=[1024, 2048, 4096, 8192, 16384, 24576, 32768, 65536])
    p.add_argument("--d", type=int, default=128)
    p.add_argument("--impls", nargs="*", default=["fused", "reference", "compiled"])
    p.add_argument("--merge", action="store_true", help="update the rows of the last run instead of replacing it")
    p.add_argument("--plot-only", action="store_true", help="redraw the PNG from the last run's JSON")
    p.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.plot_only:
        with open(os.path.join(RESULTS, "separable-sweep-cpu.json")) as f:
            data = json.load(f)
        m = data["meta"]
        plot(data["rows"], os.path.join(RESULTS, "separable-sweep-cpu.png"),
             f"separable InfoNCE, CPU ({m['threads']} threads), d={m['d']}, float32, {m['date']}")
        return 0
    if args.child:
        impl, n, d, repeat = args.child
        print(json.dumps(_measure(impl, int(n), int(d), int(repeat))))
        return 0
    total = total_memory_bytes() or float("inf")
    # dense bytes per n^2 at the largest n measured so far (small n overstate it: fixed overheads),
    # to decide whether a larger dense point fits in memory
    per_n2 = {}
    rows = []
    for n in args.sizes:
        for impl in args.impls:
            if impl != "fused" and impl in per_n2 and per_n2[impl] * n * n > 0.8 * total:
                rows.append({"impl": impl, "n": n, "skipped": f"needs about {per_n2[impl] * n * n / 2**30:.0f} GiB"})
                print(f"n={n:<6} {impl:<10} skipped: {rows[-1]['skipped']}", flush=True)
                continue
            r = _child(impl, n, args.d, repeat=3 if n <= 8192 else 1)
            r.update(impl=impl, n=n, d=args.d)
            rows.append(r)
            if "seconds" in r:
                if impl != "fused":
                    per_n2[impl] = r["peak_extra_bytes"] / n**2
                print(f"n={n:<6} {impl:<10} {r['seconds']:8.3f} s  peak extra {r['peak_extra_bytes'] / 2**20:9.1f} MiB",
                      flush=True)
            else:
                print(f"n={n:<6} {impl:<10} {r['error']}", flush=True)
    cpu = platform.processor() or platform.machine()
    when = datetime.date.today().isoformat()
    meta = dict(date=when, cpu=cpu, threads=torch.get_num_threads(), torch=torch.__version__, d=args.d,
                memory_bytes=None if total == float("inf") else total)
    os.makedirs(RESULTS, exist_ok=True)
    path = os.path.join(RESULTS, "separable-sweep-cpu.json")
    if args.merge and os.path.exists(path):
        with open(path) as f:
            old = json.load(f)
        fresh = {(r["impl"], r["n"]) for r in rows}
        rows = sorted([r for r in old["rows"] if (r["impl"], r["n"]) not in fresh] + rows,
                      key=lambda r: (r["n"], r["impl"]))
        meta["merged_with"] = old["meta"]
    with open(path, "w") as f:
        json.dump({"meta": meta, "rows": rows}, f, indent=1)
    plot(rows, os.path.join(RESULTS, "separable-sweep-cpu.png"),
         f"separable InfoNCE, CPU ({meta['threads']} threads), d={args.d}, float32, {when}")
    print(f"wrote {RESULTS}/separable-sweep-cpu.json and .png")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
