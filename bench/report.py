"""Turns pytest-benchmark JSON (CPU) into the README's ratio table.

    python -m bench.report BENCH.json
"""
from __future__ import annotations

import json
import sys
from collections import defaultdict


def rows(path: str):
    data = json.load(open(path))
    by = defaultdict(dict)
    for b in data["benchmarks"]:
        x = b["extra_info"]
        by[(x["family"], x["loss"], x["n"])][x["impl"]] = (b["stats"]["median"], x.get("peak_extra_bytes"))
    machine = data.get("machine_info", {})
    return by, machine, data.get("datetime", "")


def table(path: str) -> str:
    by, machine, when = rows(path)
    cpu = machine.get("cpu", {}).get("brand_raw", machine.get("processor", "?"))
    out = [f"Measured {when[:10]} on {cpu}, {machine.get('cpu', {}).get('count', '?')} cores "
           f"(`make bench`); forward+backward, float32, median.",
           "",
           "| family | loss | n | reference ms | compiled ms | textbook ms | fused ms | vs reference | vs compiled "
           "| vs textbook | extra MiB reference | extra MiB textbook | extra MiB fused |",
           "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for (fam, loss, n), impl in sorted(by.items()):
        f, r, c, t = impl.get("fused"), impl.get("reference"), impl.get("compiled"), impl.get("textbook")
        if not (f and r):
            continue
        mib = lambda v: "?" if v is None else f"{v / 2**20:.1f}"  # noqa: E731
        cms = f"{c[0] * 1e3:.1f}" if c else "-"
        vc = f"{c[0] / f[0]:.1f}x" if c else "-"
        tms, vt, tmem = (f"{t[0] * 1e3:.1f}", f"{t[0] / f[0]:.1f}x", mib(t[1])) if t else ("-", "-", "-")
        out.append(f"| {fam} | {loss} | {n} | {r[0] * 1e3:.1f} | {cms} | {tms} | {f[0] * 1e3:.1f} | {r[0] / f[0]:.1f}x "
                   f"| {vc} | {vt} | {mib(r[1])} | {tmem} | {mib(f[1])} |")
    return "\n".join(out)


if __name__ == "__main__":
    print(table(sys.argv[1]))
