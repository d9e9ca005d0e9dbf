"""Choi & Lee Appendix C (Table 3, Figure 9): the SLB and CLB benchmarks on ImageNet, early training.

The protocol of ``_benchmark`` (ResNet-18 from random weights, 224 x 224 images normalised with mean =
std = 0.5, Adam 1e-3) on ILSVRC-2012 read from ``--data-dir`` as class folders
(``fastmi.data.imagefolder``: imagenet/train/<class>/, imagenet/val/<class>/ as the test split;
decoded batch by batch, never held in memory). Rows of Table 3: SLB with the plain cross-entropy
classifier, MINE and NWJ; CLB with MINE and NWJ; each original and regularized (MI estimate of the
last epoch, test accuracy). The paper's batch size and number of epochs were lost in the text's
extraction: both are INFERRED here (batch 100, the CIFAR-100 value; 1 epoch, "the early stages of
training") and settable. Without ImageNet, ``python -m fastmi.data.fake imagenet DIR`` writes a tiny
random set in this layout (the smoke test).
"""
from __future__ import annotations

import dataclasses
import math
import sys

import torch

from ..data import load_images
from ..data.imagefolder import read_image_folder
from . import _benchmark, claims, runner
from . import settings as checks

NAME = "remine_imagenet"
SUMMARY = "Choi & Lee App C, Table 3: SLB (CE, MINE, NWJ) and CLB (MINE, NWJ) on ImageNet from --data-dir, early epochs"
REQUIRES = {"matplotlib": "its figures", "PIL": "decoding the ImageNet image files"}
# Table 3: (mi original, mi regularized, accuracy original, accuracy regularized); None: not reported
PAPER = {("slb", "ce"): (None, None, 0.0795, None), ("slb", "mine"): (6.147, 6.110, 0.1056, 0.1081),
         ("slb", "nwj"): (6.072, 6.075, 0.1020, 0.1005), ("clb", "mine"): (1.095, 1.140, 0.0103, 0.0098),
         ("clb", "nwj"): (0.000, 1.008, 0.0010, 0.0072)}


@dataclasses.dataclass
class Config(_benchmark.BenchConfig):
    """Paper defaults (App C, with D.3's protocol); batch and epochs INFERRED (lost in the extraction)."""
    dataset: str = "imagenet"
    batch: int = 100                   # INFERRED (the paper's number was lost)
    epochs: int = 1                    # INFERRED ("we train for [N] epochs to observe the early stages")
    estimators: tuple = runner.subset_field(("mine", "nwj"))
    benchmarks: tuple = runner.subset_field(("slb", "clb"))
    ce_baseline: bool = True           # Table 3's SLB "CE" row
    reg_weights: tuple = (0.1, 0.01, 0.001)
    seeds: int = 1                     # INFERRED: Table 3 gives no intervals

    def paper_value(self, name: str, value) -> str:
        if name in ("batch", "epochs"):
            return f"{value!r}, INFERRED: the paper's value was lost"
        return super().paper_value(name, value)

    def validate(self):
        super().validate()
        checks.items(self, "benchmarks", lambda b: b in ("slb", "clb"), "'slb' / 'clb'")
        checks.need(self.batch >= 2, "batch", "an int >= 2 (the paper's value was lost; 0 is not allowed)",
                    self.batch)
        checks.need(self.epochs >= 1, "epochs", "an int >= 1 (the paper's value was lost; 0 is not allowed)",
                    self.epochs)


QUICK = {"image_size": 64, "n_train": 200, "n_test": 100, "batch": 20, "reg_weights": (0.1,)}


def dataset_names(cfg) -> list:
    return [cfg.dataset]


def load_split(cfg, ctx, split: str):
    """ImageNet's class folders decoded straight at ``image_size`` (else ``load_images``)."""
    if cfg.dataset == "imagenet":
        return read_image_folder(split, ctx.data_dir, size=cfg.image_size)
    return load_images(cfg.dataset, split, ctx.data_dir, ctx.download)


def _cell(v, spec=".4f") -> str:
    return "-" if v is None or not math.isfinite(v) else format(v, spec)


def table(cfg, rows: dict) -> str:
    lines = [f"remine_imagenet (Choi & Lee App C, Table 3) on {cfg.dataset}: batch {cfg.batch}, {cfg.epochs} epoch(s), "
             f"{cfg.seeds} seed(s); MI = mean per-batch estimate of the last epoch (ideal ln 1000 = 6.908 for SLB)",
             f"{'task':<5}{'loss':<6}{'MI orig':>10}{'MI reg':>10}{'lambda':>8}{'acc orig':>10}{'acc reg':>10}"
             "   paper (MI o / r | acc o / r)"]
    for (bench, est), r in rows.items():
        p = PAPER.get((bench, est), (None,) * 4)
        lines.append(f"{bench.upper():<5}{est:<6}{_cell(r['mi_orig'], '.3f'):>10}{_cell(r.get('mi_reg'), '.3f'):>10}"
                     f"{_cell(r.get('lambda'), 'g'):>8}{_cell(r['acc_orig']):>10}{_cell(r.get('acc_reg')):>10}"
                     f"   {_cell(p[0], '.3f')} / {_cell(p[1], '.3f')} | {_cell(p[2])} / {_cell(p[3])}")
    lines.append("CE: the plain cross-entropy classifier; its MI column is log C - CE (the paper reports none). "
                 "lambda: the regularized weight with the highest mean MI estimate.")
    lines.append(runner.differences_text(cfg))
    return "\n".join(lines)


def claim_of(rows: dict, full_data: bool) -> list:
    """Table 3 / Fig 9: original NWJ fails on the CLB (MI 0.000, 'explodes within a few steps') and its
    regularized version gives a finite, positive estimate. Decided only on the whole ImageNet."""
    r = rows.get(("clb", "nwj"))
    if not r:
        return []
    o, g = r["mi_orig"], r.get("mi_reg", math.nan)
    held = (not math.isfinite(o) or o <= 0.01) and math.isfinite(g) and g > 0.01
    measured = f"CLB NWJ MI: original {_cell(o, '.3f')}, regularized {_cell(g, '.3f')}"
    return [claims.claim("App C: NWJ fails on the ImageNet CLB, regularized NWJ does not", measured,
                         held if full_data else None,
                         shown_by=None if full_data and held else "fastmi run remine_imagenet --data-dir DIR --device "
                         "cuda (ILSVRC-2012; GPU, not run here)").as_dict()]


def run(cfg: Config, ctx: runner.RunContext) -> dict:
    gen = torch.Generator().manual_seed(ctx.seed)
    train, test = (load_split(cfg, ctx, split).subset(n or None, gen)
                   for split, n in (("train", cfg.n_train), ("test", cfg.n_test)))
    data = (train, test)
    results, rows = {}, {}
    for bench in cfg.benchmarks:
        ests = (("ce",) if bench == "slb" and cfg.ce_baseline else ()) + tuple(cfg.estimators)
        for est in ests:
            lams = (0.0,) if est == "ce" else (0.0,) + tuple(cfg.reg_weights)
            for lam in lams:
                for seed in range(cfg.seeds):
                    res = _benchmark.train_one(ctx, cfg, bench, est, lam, seed, data, job_prefix=f"{bench}-")
                    results[f"{bench}-{est}-lam{lam:g}-seed{seed}"] = res
            per = {}
            for lam in lams:
                runs = [results[f"{bench}-{est}-lam{lam:g}-seed{s}"] for s in range(cfg.seeds)]
                mi = [r.rows[-1]["mi"] if r.rows else math.nan for r in runs]
                fin = [v for v in mi if math.isfinite(v)]
                per[lam] = {"mi": sum(fin) / len(fin) if fin else math.nan,
                            "acc": sum(r.final["accuracy"] for r in runs) / len(runs)}
            row = {"mi_orig": per[0.0]["mi"], "acc_orig": per[0.0]["acc"]}
            regs = {lam: v for lam, v in per.items() if lam}
            if regs:
                best = max(regs, key=lambda k: regs[k]["mi"] if math.isfinite(regs[k]["mi"]) else -math.inf)
                row.update(mi_reg=regs[best]["mi"], acc_reg=regs[best]["acc"], **{"lambda": best})
            rows[(bench, est)] = row
    runner.write_metrics(ctx.run_dir / "metrics.csv", results)
    _plot(ctx.run_dir / "remine_imagenet.png", cfg, results)
    full = cfg.dataset == "imagenet" and not (cfg.n_train or cfg.n_test) and cfg.image_size == 224
    return {"dataset": cfg.dataset, "rows": {f"{b}-{e}": r for (b, e), r in rows.items()},
            "table": table(cfg, rows), "claims": claim_of(rows, full)}


def _plot(path, cfg, results: dict) -> None:
    """Figure 9's view: the per-epoch MI estimate of every job (non-finite epochs marked with x at 0)."""
    from . import plotting

    fig, axes = plotting.grid(len(cfg.benchmarks), len(cfg.benchmarks), size=(4.8, 3.4))
    for ax, bench in zip(axes, cfg.benchmarks):
        for job, res in results.items():
            if not job.startswith(bench + "-"):
                continue
            ys = [r["mi"] for r in res.rows]
            xs = list(range(1, len(ys) + 1))
            ok = [(x, y) for x, y in zip(xs, ys) if math.isfinite(y)]
            line = ax.plot([p[0] for p in ok], [p[1] for p in ok], marker="o", ms=3, label=job[len(bench) + 1:])
            bad = [x for x, y in zip(xs, ys) if not math.isfinite(y)]
            if bad:
                ax.scatter(bad, [0.0] * len(bad), marker="x", color=line[0].get_color() if line else "k")
        ax.set_xlabel("epoch")
        ax.set_ylabel("MI estimate (nats, epoch mean)")
        ax.set_title(f"{bench.upper()} {cfg.dataset} (x: no finite estimate)", fontsize=9)
        ax.legend(fontsize=6)
    plotting.save(fig, path)


if __name__ == "__main__":
    raise SystemExit(runner.main(sys.argv[1:], module=sys.modules[__name__]))
