"""Table 1 of Sinha, Song & Ermon beside a committed ``fastmi run hybrid`` run (results.json "table1")."""
from __future__ import annotations

from pathlib import Path

from . import experiments
from . import markdown as md


def _cell(values, formats) -> list[str]:
    return ["-" if v is None or isinstance(v, str) else format(v, f) for v, f in zip(values, formats)]


def table1(results: Path, doc: Path, run: str) -> str:
    """Rows Hybrid / MoCo-v2 / NVAE / DDIM / BigGAN: ours (MSE per image, generation distance, probe %)
    and the paper's CIFAR-10 and CIFAR-100 (MSE, FID, Acc %)."""
    data = experiments.result_data(results, run)
    paper = data["paper"]
    dataset, metric = data["dataset"], data["generation"]["metric"]
    rows = []
    for name, ours in data["table1"].items():
        key = name.split(" ")[0]
        cells = _cell(ours, (".3g", ".2f", ".1f"))
        for d in ("cifar10", "cifar100"):
            cells += _cell(paper[d].get(key, (None, None, None)), ("g", "g", "g"))
        rows.append([name] + cells)
    headers = ["row", f"ours MSE ({dataset})", f"ours {metric}", "ours Acc %", "CIFAR-10 MSE", "FID", "Acc %",
               "CIFAR-100 MSE", "FID", "Acc %"]
    link = md.link(f"results/{run}", Path(results) / run, doc)
    return (f"Ours from {link}; paper: Table 1. MSE: squared error of images in [0, 1] summed over an image's "
            "values (the unit the paper's numbers fit; inferred).\n\n" + md.table(headers, rows))
