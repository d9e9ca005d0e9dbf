"""Tables from the committed experiment runs in results/<experiment>/<run>/.

A run folder holds what ``fastmi run`` wrote (config.json, results.json, metrics.csv, table.txt,
figures; never jobs/) and a ``meta.json`` written by whoever committed it:

    {"command": "fastmi run remine_onehot", "date": "2026-12-03", "load": "...", "raw_data": true}

``raw_data: false`` marks a run whose folder keeps only its printed table.txt (and figures): the
per-step data was not kept, and ``rerun_time`` says what a rerun costs. results/CLAIMS.json lists the
papers' claims next to the numbers of ours that test them, for the README's summary.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

from . import markdown as md

FIELD = re.compile(r"\{([^{}:]+)(?::([^{}]*))?\}")


def run_dir(results: Path, run: str) -> Path:
    path = Path(results) / run
    if not (path / "meta.json").exists():
        raise ValueError(f"results/{run}: no such run folder with a meta.json")
    return path


def meta(results: Path, run: str) -> dict:
    return json.loads((run_dir(results, run) / "meta.json").read_text())


def result_data(results: Path, run: str) -> dict:
    path = run_dir(results, run) / "results.json"
    if not path.exists():
        raise ValueError(f"results/{run}: no results.json (a raw_data=false run has only its table.txt)")
    return json.loads(path.read_text())


def wall_seconds(results: Path, run: str) -> float | None:
    """The run's wall time as its results.json records it (None for a run without one). A run resumed
    after its jobs finished spent most of its time in earlier sessions: its jobs' recorded seconds
    (kept across sessions) are counted when they are more than this session's total."""
    path = run_dir(results, run) / "results.json"
    if not path.exists():
        return None
    seconds = json.loads(path.read_text()).get("seconds", {})
    total = seconds.get("total_this_session")
    jobs = sum(v for v in seconds.get("jobs", {}).values() if isinstance(v, (int, float)))
    return max(total, jobs) if total is not None else None


def lookup(data, path: str):
    """``data`` at a slash-separated path (``runs/dv-b100/mi``); list items by index."""
    for key in path.strip().split("/"):
        if isinstance(data, list):
            data = data[int(key)]
        elif key in data:
            data = data[key]
        else:
            raise KeyError(f"{path}: no key {key!r} (have: {', '.join(map(str, data))})")
    return data


def fill(template: str, data: dict) -> str:
    """``template`` with each ``{path:format}`` replaced by the value at ``path`` in ``data``.

    Non-finite values are stored as strings ("nan") by the runner: they print as they are."""
    def one(m):
        value = lookup(data, m[1])
        if isinstance(value, str) or not m[2]:
            return str(value)
        return format(value, m[2])
    return FIELD.sub(one, template)


def run_table(results: Path, doc: Path, run: str) -> str:
    """The run's own printed table (table.txt) with where it came from and how to rerun it."""
    folder, info = run_dir(results, run), meta(results, run)
    table = (folder / "table.txt").read_text().rstrip("\n")
    raw = info.get("raw_data", True)
    head = f"Run {md.link(f'results/{run}', folder, doc)}: " + (f"`{info['command']}`, " if raw else "")
    head += info.get("date", "date not recorded")
    wall = wall_seconds(results, run)
    if wall is not None:
        head += f", wall time {md.minutes(wall)}"
    if info.get("load"):
        head += f" ({info['load']})"
    head += "."
    if raw:
        files = [md.link(f, folder / f, doc) for f in ("metrics.csv", "metrics.csv.gz", "results.json", "config.json")
                 if (folder / f).exists()]
        head += " Data: " + ", ".join(files) + "."
    else:
        head += (f"\n\n> Raw per-step data not kept; rerun: `{info['command']}`, about "
                 f"{info.get('rerun_time', 'unknown time')}.")
    return f"{head}\n\n```text\n{table}\n```"


def all_runs(results: Path) -> list[str]:
    """Every run folder under ``results`` (``<experiment>/<run>``), sorted."""
    return sorted(str(p.parent.relative_to(results)) for p in Path(results).glob("*/*/meta.json"))


def runs_list(results: Path, doc: Path) -> str:
    """One row per committed run: its command, date, wall time, and whether its raw data is kept."""
    rows = []
    for run in all_runs(results):
        info = meta(results, run)
        raw = info.get("raw_data", True)
        wall = wall_seconds(results, run)
        rows.append([md.link(run, Path(results) / run, doc), f"`{info['command']}`", info.get("date", "?"),
                     md.minutes(wall) if wall is not None else f"(rerun: about {info.get('rerun_time', '?')})",
                     "yes" if raw else "no"])
    return md.table(["run", "command", "date", "wall time", "per-step data"], rows)


def claim_data(results: Path, claim: dict) -> dict:
    """What a claim's ``ours`` template reads: the run's results.json, or, with ``pattern``, the groups of
    that regular expression's first match in the run's table.txt (for runs that kept only the table)."""
    if "pattern" not in claim:
        return result_data(results, claim["run"])
    text = (run_dir(results, claim["run"]) / "table.txt").read_text()
    m = re.search(claim["pattern"], text)
    if m is None:
        raise ValueError(f"results/{claim['run']}/table.txt: no match for {claim['pattern']!r}")
    return {**{str(i + 1): g for i, g in enumerate(m.groups())}, **m.groupdict()}


def claims_summary(results: Path, doc: Path, paper: str | None = None) -> str:
    """results/CLAIMS.json as a table: paper, experiment, claim, ours (from the run's results.json), the
    paper's, status. ``paper`` keeps only that paper's rows (and drops the paper column)."""
    claims = json.loads((Path(results) / "CLAIMS.json").read_text())["claims"]
    rows = []
    for c in claims:
        if paper and c["paper"] != paper:
            continue
        data = claim_data(results, c)
        ours, status = fill(c["ours"], data), fill(c["status"], data)
        where = md.link(c["experiment"], Path(results) / c["run"], doc)
        page = Path(results).parent / c["page"] if c.get("page") else None
        label = md.link(c["paper_name"], page, doc) if page else c["paper_name"]
        rows.append(([] if paper else [label]) + [where, c["claim"], ours, c["paper_value"], status])
    return md.table(([] if paper else ["paper"]) + ["experiment", "claim", "ours", "paper", "status"], rows)


def _spirals_ari(results: Path, run: str) -> tuple[list[float], float]:
    """The spirals' ARI per draw of an nb_dms_2d run and their mean: from results.json, or from the
    printed ``mean M (a, b, ...)`` of a run that kept only its table (two decimals there)."""
    if meta(results, run).get("raw_data", True):
        ari = [float(a) for a in result_data(results, run)["datasets"]["spirals"]["ari"]]
        return ari, sum(ari) / len(ari)
    m = re.search(r"\nspirals .*? mean (\S+) \(([^)]*)\)", (run_dir(results, run) / "table.txt").read_text())
    if m is None:
        raise ValueError(f"results/{run}/table.txt: no per-draw spirals ARIs")
    return [float(a) for a in m[2].split(",")], float(m[1])


def dms_draws(results: Path, doc: Path, runs: str) -> str:
    """nb_dms_2d spirals runs side by side: each run's label (meta.json), ARI per draw, mean, and how
    many draws were labelled perfectly (ARI 1 to three decimals)."""
    rows = []
    for run in runs.split(","):
        ari, mean = _spirals_ari(results, run)
        label = meta(results, run).get("label", run)
        rows.append([md.link(label, run_dir(results, run), doc), ", ".join(f"{a:.2f}" for a in ari),
                     f"{mean:.3f}", f"{sum(a > 0.9995 for a in ari)} / {len(ari)}"])
    return md.table(["setting", "ARI per draw", "mean", "perfect"], rows)
