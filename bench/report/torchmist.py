"""Tables from a fastmi-vs-torch-mist run (``python -m bench.bench_torchmist``: one JSON file in
bench/results with "meta", "steps" and "estimates").

``step_table``: per case and batch size n, the median time of one training step (the loss of a batch
and its backward into the critic) and its peak extra memory in each library, and the ratios
torch-mist / fastmi measured in that run. ``estimate_table``: the held-out estimates after the same
training, next to the true MI.
"""
from __future__ import annotations

import json
from pathlib import Path

from . import markdown as md

LABELS = {"infonce_sep": "InfoNCE, separable critic", "infonce_joint": "InfoNCE, joint critic",
          "nwj_joint": "NWJ, joint critic", "js_joint": "JS (NWJ of S + 1 reported), joint critic"}


def load(results: Path, file: str) -> dict:
    data = json.loads((Path(results) / file).read_text())
    if not {"meta", "steps", "estimates"} <= set(data):
        raise ValueError(f"{file}: not a bench.bench_torchmist result (needs meta, steps, estimates)")
    return data


def caption(results: Path, doc: Path, file: str, meta: dict) -> str:
    text = (f"Run {md.link(file, Path(results) / file, doc)}: `{meta['command']}`, {meta['date'][:16].replace('T', ' ')} "
            f"UTC, commit {meta['commit']}, {meta['cpu']}, {meta['threads']} thread(s), torch {meta['torch']}, "
            f"torch-mist {meta['torch_mist'] or '-'}; load: {meta.get('load', 'not recorded')}.")
    if meta.get("skipped"):
        text += f" torch-mist was skipped: {meta['skipped']}."
    return text


def step_table(results: Path, doc: Path, file: str) -> str:
    data = load(results, file)
    by = {}
    for r in data["steps"]:
        by.setdefault((r["case"], r["n"]), {})[r["impl"]] = r
    rows = []
    for (case, n), impl in by.items():
        f, t = impl.get("fastmi"), impl.get("torch-mist")
        rows.append([LABELS.get(case, case), n, md.ms(f and f["median_s"]), md.ms(t and t["median_s"]),
                     md.ratio(t and t["median_s"], f and f["median_s"]), md.mib(f and f["peak_extra_bytes"]),
                     md.mib(t and t["peak_extra_bytes"]),
                     md.ratio(t and t["peak_extra_bytes"], f and max(f["peak_extra_bytes"], 1)),
                     "-" if f is None or f["max_rel_diff"] is None else f"{f['max_rel_diff']:.0e}"])
    head = ["estimator, critic", "batch n", "fastmi ms", "torch-mist ms", "time torch-mist / fastmi",
            "fastmi extra MiB", "torch-mist extra MiB", "memory torch-mist / fastmi", "max rel. difference"]
    return caption(results, doc, file, data["meta"]) + "\n\n" + md.table(head, rows)


def estimate_table(results: Path, doc: Path, file: str) -> str:
    data = load(results, file)
    rows = []
    for r in data["estimates"]:
        rows.append([LABELS.get(r["case"], r["case"]), r["impl"], f"{r['estimate']:.3f} ± {r['stderr']:.3f}",
                     f"{r['true_mi']:.2f}", r["train_steps"], md.minutes(r["train_seconds"])])
    return md.table(["estimator, critic", "library", "held-out estimate (nats)", "true MI", "training steps",
                     "training time"], rows)
