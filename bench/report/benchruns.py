"""Tables from the CPU benchmark runs in bench/results (pytest-benchmark JSON, one file per run).

bench/results/INDEX.json says what the numbers alone do not: per file, the load on the machine
while it ran and which change it measured; which run each family's summary row comes from; and
readable names of the cases.
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from . import markdown as md

IMPLS = ("reference", "compiled", "textbook", "fused")


@dataclasses.dataclass
class Timing:
    median: float              # seconds
    iqr: float
    rounds: int
    peak_extra_bytes: int | None


@dataclasses.dataclass
class BenchRun:
    """One pytest-benchmark JSON file: (family, case, n) -> impl -> Timing, and where it ran."""
    path: Path
    datetime: str
    commit: str
    dirty: bool
    cpu: str
    cores: int | str
    cases: dict

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def families(self) -> list[str]:
        return sorted({fam for fam, _, _ in self.cases})


def load_run(path: Path) -> BenchRun:
    data = json.loads(Path(path).read_text())
    cases: dict = {}
    for b in data["benchmarks"]:
        x = b["extra_info"]
        cases.setdefault((x["family"], x["loss"], int(x["n"])), {})[x["impl"]] = Timing(
            b["stats"]["median"], b["stats"]["iqr"], b["stats"]["rounds"], x.get("peak_extra_bytes"))
    machine, commit = data.get("machine_info", {}), data.get("commit_info", {})
    cpu = machine.get("cpu", {})
    return BenchRun(Path(path), data.get("datetime", ""), commit.get("id", "")[:7], bool(commit.get("dirty")),
                    cpu.get("brand_raw", machine.get("processor", "?")), cpu.get("count", "?"), cases)


def index(results: Path) -> dict:
    """bench/results/INDEX.json (empty if absent: every note then reads "not recorded")."""
    path = Path(results) / "INDEX.json"
    return json.loads(path.read_text()) if path.exists() else {}


def all_runs(results: Path) -> list[BenchRun]:
    """Every pytest-benchmark file in ``results``, oldest first."""
    runs = [load_run(p) for p in sorted(Path(results).glob("*.json"))
            if p.name != "INDEX.json" and "benchmarks" in json.loads(p.read_text())]
    return sorted(runs, key=lambda r: r.datetime)


def case_label(results: Path, family: str, loss: str) -> str:
    return index(results).get("case_labels", {}).get(f"{family}/{loss}", loss)


def run_note(results: Path, file: str) -> dict:
    """INDEX.json's entry for one result file (empty if it has none)."""
    return index(results).get("runs", {}).get(file, {})


def caption(results: Path, run: BenchRun, doc: Path) -> str:
    note = run_note(results, run.name)
    commit = run.commit + (" with uncommitted changes" if run.dirty else "")
    text = (f"Run {md.link(run.name, run.path, doc)}: {run.datetime[:16].replace('T', ' ')} UTC, commit {commit}, "
            f"{run.cpu}, {run.cores} cores; load: {note.get('load', 'not recorded')}.")
    if note.get("measured"):
        text += f" {note['measured']}"
    return text


def run_table(results: Path, doc: Path, file: str, families: str | None = None, caption_line: str = "yes") -> str:
    """Every case of one run: times, ratios measured in that run, peak extra memory."""
    run = load_run(Path(results) / file)
    keep = set(families.split(",")) if families else None
    cases = {k: v for k, v in sorted(run.cases.items()) if keep is None or k[0] in keep}
    if not cases:
        raise ValueError(f"{file}: no cases of the families {families}")
    many = len({k[0] for k in cases}) > 1
    textbook = any("textbook" in v for v in cases.values())
    head = (["family"] if many else []) + ["case", "n", "reference ms", "compiled ms"]
    head += (["textbook ms"] if textbook else []) + ["fused ms", "vs reference", "vs compiled"]
    head += (["vs textbook"] if textbook else []) + ["extra MiB reference"]
    head += (["extra MiB textbook"] if textbook else []) + ["extra MiB fused"]
    rows = []
    for (fam, loss, n), impl in cases.items():
        t = {k: impl[k].median if k in impl else None for k in IMPLS}
        mem = {k: impl[k].peak_extra_bytes if k in impl else None for k in IMPLS}
        row = ([fam] if many else []) + [case_label(results, fam, loss), n, md.ms(t["reference"]), md.ms(t["compiled"])]
        row += ([md.ms(t["textbook"])] if textbook else []) + [md.ms(t["fused"]), md.ratio(t["reference"], t["fused"]),
                                                                md.ratio(t["compiled"], t["fused"])]
        row += ([md.ratio(t["textbook"], t["fused"])] if textbook else []) + [md.mib(mem["reference"])]
        row += ([md.mib(mem["textbook"])] if textbook else []) + [md.mib(mem["fused"])]
        rows.append(row)
    out = md.table(head, rows)
    return (caption(results, run, doc) + "\n\n" + out) if caption_line == "yes" else out


def summary(results: Path, doc: Path, largest: str = "no") -> str:
    """One row per case of each family's summary run (INDEX.json "summary"); with ``largest=yes`` only
    each case's largest n."""
    rows = []
    for family, file in index(results).get("summary", {}).items():
        run = load_run(Path(results) / file)
        top = {}
        for fam, loss, n in run.cases:
            top[(fam, loss)] = max(n, top.get((fam, loss), n))
        for (fam, loss, n), impl in sorted(run.cases.items()):
            if fam != family or "fused" not in impl or (largest == "yes" and n != top[(fam, loss)]):
                continue
            f = impl["fused"].median
            ref, comp = impl.get("reference"), impl.get("compiled")
            rows.append([fam, case_label(results, fam, loss), n, md.ms(f),
                         md.ratio(ref.median if ref else None, f), md.ratio(comp.median if comp else None, f),
                         md.mib(impl["fused"].peak_extra_bytes), md.mib(ref.peak_extra_bytes if ref else None),
                         md.link(run.datetime[:10], run.path, doc)])
    return md.table(["family", "case", "n", "fused ms", "vs reference", "vs compiled", "extra MiB fused",
                     "extra MiB reference", "run"], rows)


def history(results: Path, doc: Path, family: str) -> str:
    """Each case of ``family`` across every run that measured it: fused / torch.compile ms (ratio)."""
    runs = [r for r in all_runs(results) if family in r.families]
    if not runs:
        raise ValueError(f"no run in {results} measured the family {family!r}")
    keys = sorted({k for r in runs for k in r.cases if k[0] == family})
    head = ["case", "n"] + [md.link(f"{r.datetime[:10]} {r.datetime[11:16]}", r.path, doc) for r in runs]
    rows = []
    for key in keys:
        row = [case_label(results, family, key[1]), key[2]]
        for r in runs:
            impl = r.cases.get(key, {})
            f, c = impl.get("fused"), impl.get("compiled")
            row.append("" if f is None else f"{md.ms(f.median)} / {md.ms(c.median if c else None)}"
                       + (f" ({md.ratio(c.median, f.median)})" if c else ""))
        rows.append(row)
    return md.table(head, rows)


def runs_list(results: Path, doc: Path) -> str:
    """Every benchmark run: when, on which commit, what it measured, and the load on the machine."""
    rows = []
    for r in all_runs(results):
        note = run_note(results, r.name)
        fams = ", ".join(f"{f} ({sum(1 for k in r.cases if k[0] == f)})" for f in r.families)
        rows.append([md.link(r.name, r.path, doc), r.datetime[:16].replace("T", " "),
                     r.commit + ("+" if r.dirty else ""), fams, note.get("load", "not recorded"),
                     note.get("measured", "")])
    return md.table(["file", "UTC", "commit", "families (cases)", "load", "what it measured"], rows)


def sweep(results: Path, doc: Path, file: str) -> str:
    """A time/memory sweep file (bench.sweep_separable): one row per n, seconds and MiB per implementation."""
    data = json.loads((Path(results) / file).read_text())
    impls = [i for i in ("fused", "compiled", "reference") if any(r["impl"] == i for r in data["rows"])]
    by = {}
    for r in data["rows"]:
        by.setdefault(r["n"], {})[r["impl"]] = r
    rows = []
    for n in sorted(by):
        cells = by[n]

        def get(i, k):
            c = cells.get(i)
            if c is None:
                return "-"
            if "skipped" in c:
                return f"skipped ({c['skipped']})" if k == "seconds" else "-"
            if "error" in c:
                return "failed" if k == "seconds" else "-"
            return f"{c[k]:.3g}" if k == "seconds" else md.mib(c[k])
        rows.append([n] + [get(i, "seconds") for i in impls] + [get(i, "peak_extra_bytes") for i in impls])
    meta = data.get("meta", {})
    note = run_note(results, file)
    text = (f"{md.link(file, Path(results) / file, doc)}: {meta.get('date', '?')}, {meta.get('threads', '?')} threads, "
            f"d = {meta.get('d', '?')}, torch {meta.get('torch', '?')}; load: {note.get('load', 'not recorded')}.")
    return text + "\n\n" + md.table(["n"] + [f"{i} s" for i in impls] + [f"extra MiB {i}" for i in impls], rows)
