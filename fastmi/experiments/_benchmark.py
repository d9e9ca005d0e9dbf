"""Shared protocol of Choi & Lee's supervised (SLB) and contrastive (CLB) learning benchmarks (D.3).

ResNet-18 from random weights, images resized (224 in the paper) and normalised with mean = std = 0.5,
no augmentation, Adam (1e-3). Every estimator is trained as the original and the regularized
version for each lambda, for each seed. SLB: the critic is the logit T(x, c); the joint values are
the true-class logits, the marginal all B x C logits (``positives`` = labels); accuracy = argmax.
CLB: the fc layer is removed, T = f_i . f_j (raw dot product), joint = same-label pairs i != j,
marginal = all pairs i != j (``positives`` = a mask); accuracy = label of the training image with the
highest dot product. The reported MI is the mean per-batch estimate over the last epoch.
"""
from __future__ import annotations

import dataclasses
import math

import numpy as np
import torch

from .. import functional as F
from ..data import NUM_CLASSES, load_images, prepare_batch
from ..models.resnet import resnet18
from . import _claims_remine, runner
from . import settings as checks
from .paper003 import PAPER_BATCH, PAPER_EPOCHS, PAPER_TABLE2

ESTIMATORS = ("mine", "smile", "infonce", "nwj", "tuba", "js")
REQUIRES = {"matplotlib": "its figures"}
# two-sided 95% Student-t quantiles for 1..10 degrees of freedom (confidence intervals over seeds)
_T975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262, 10: 2.228}


@dataclasses.dataclass
class BenchConfig:
    """Paper defaults (D.3). batch / epochs of 0 take the paper's value for the dataset and benchmark."""
    dataset: str = "cifar10"
    batch: int = 0
    epochs: int = 0
    image_size: int = 224
    lr: float = 1e-3
    estimators: tuple = runner.subset_field(ESTIMATORS)
    reg_weights: tuple = (0.1, 0.01, 0.001)
    seeds: int = 5
    smile_clip: float = 10.0          # the benchmarks clip both terms of SMILE
    renwj_clip: float = 10.0          # ReNWJ / ReTUBA estimate on clip(T, -10, 10)
    js_reg_target: float = 1.0        # ReJS bias 1 in the benchmarks
    n_train: int = 0                  # 0: the whole training set
    n_test: int = 0                   # 0: the whole test set
    eval_batch: int = runner.runner_field(256)

    def paper_value(self, name: str, value) -> str:
        """How the paper's setting reads in the list of differences (0 = the paper's per-dataset value)."""
        if name == "batch" and value == 0:
            return "10 on CIFAR-10, 100 on CIFAR-100"
        if name == "epochs" and value == 0:
            return "SLB 40 / 100, CLB 100 / 150 on CIFAR-10 / 100"
        if name in ("n_train", "n_test") and value == 0:
            return "the whole split"
        return repr(value)

    def validate(self):
        checks.one_of(self, "dataset", sorted(NUM_CLASSES))
        checks.items(self, "estimators", lambda e: e in ESTIMATORS, f"estimators among {', '.join(ESTIMATORS)}")
        checks.int_at_least(self, 1, "seeds", "eval_batch")
        checks.int_at_least(self, 8, "image_size")
        checks.int_at_least(self, 0, "batch", "epochs", "n_train", "n_test")
        checks.need(self.batch != 1, "batch", "0 (the paper's) or >= 2", self.batch)
        if self.n_train:
            checks.need(self.batch <= self.n_train, "batch", f"at most n_train ({self.n_train})", self.batch)
        checks.items(self, "reg_weights", checks.positive_numbers, "numbers > 0")
        checks.positive(self, "lr", "smile_clip", "renwj_clip")
        checks.need(checks.is_number(self.js_reg_target), "js_reg_target", "a number", self.js_reg_target)


def dataset_names(cfg) -> list:
    return [cfg.dataset]


QUICK = {"dataset": "fashion-mnist", "image_size": 32, "n_train": 2000, "n_test": 1000, "epochs": 2, "batch": 25,
         "seeds": 1, "reg_weights": (0.1,)}


def paper_dataset(dataset: str) -> str:
    """Which of the paper's datasets the numbers are compared with (CIFAR-10 for 10-class sets)."""
    return "cifar100" if dataset == "cifar100" else "cifar10"


def resolved(cfg, bench: str) -> tuple[int, int]:
    ref = paper_dataset(cfg.dataset)
    return cfg.batch or PAPER_BATCH[ref], cfg.epochs or PAPER_EPOCHS[bench][ref]


def loss_of(bench: str, est: str, lam: float, cfg):
    """(scores, positives, backend) -> MIResult: the original estimator (lam = 0) or its regularized form."""
    reg = {"reg_weight": lam} if lam else {}
    if est == "mine":
        return lambda s, p, b: F.dv(s, positives=p, backend=b, **reg)
    if est == "smile":
        return lambda s, p, b: F.smile(s, positives=p, clip=cfg.smile_clip, clip_positives=True, backend=b, **reg)
    if est == "infonce":
        return lambda s, p, b: F.infonce(s, positives=p, backend=b, **reg)
    if est in ("nwj", "tuba"):
        fn = F.nwj if est == "nwj" else F.tuba
        clip = {"clip": cfg.renwj_clip} if lam else {}
        return lambda s, p, b: fn(s, positives=p, backend=b, **clip, **reg)
    if est == "js":
        reg = {"reg_weight": lam, "reg_target": cfg.js_reg_target} if lam else {}
        return lambda s, p, b: F.js(s, positives=p, backend=b, **reg)
    raise ValueError(f"unknown estimator {est!r}")


def _features(net, images, cfg, device):
    net.eval()
    out = []
    with torch.no_grad():
        for i in range(0, len(images), cfg.eval_batch):
            out.append(net(prepare_batch(images[i: i + cfg.eval_batch], cfg.image_size).to(device)).float().cpu())
    net.train()
    return torch.cat(out)


def train_one(ctx: runner.RunContext, cfg, bench: str, est: str, lam: float, seed: int, data) -> runner.JobResult:
    """Train one ResNet-18 with one estimator; one metrics row per epoch; test accuracy at the end."""
    train, test = data
    n_classes = NUM_CLASSES[cfg.dataset]
    batch, epochs = resolved(cfg, bench)
    job = f"{est}-lam{lam:g}-seed{seed}"
    torch.manual_seed(ctx.job_seed(job))
    net = resnet18(n_classes if bench == "slb" else None).to(ctx.device)
    opt = torch.optim.Adam(net.parameters(), lr=cfg.lr)
    gen = torch.Generator().manual_seed(ctx.job_seed(job))
    loss_fn = loss_of(bench, est, lam, cfg)

    def epoch(_):
        order = torch.randperm(len(train.labels), generator=gen)
        mis, losses = [], []
        for i in range(0, len(order) - batch + 1, batch):
            idx = order[i: i + batch]
            x = prepare_batch(train.images[idx], cfg.image_size).to(ctx.device)
            y = train.labels[idx].to(ctx.device)
            out = net(x)
            if bench == "slb":
                scores, pos = out, y
            else:
                scores = out @ out.T
                pos = (y[:, None] == y[None, :]) & ~torch.eye(len(y), dtype=torch.bool, device=y.device)
            loss, mi = loss_fn(scores, pos, ctx.backend)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            mis.append(float(mi))
            losses.append(float(loss.detach()))
        m = np.array(mis)
        fin = m[np.isfinite(m)]
        return {"mi": float(fin.mean()) if len(fin) else math.nan, "loss": float(np.mean(losses)) if losses else math.nan,
                "nonfinite_batches": int((~np.isfinite(m)).sum())}

    def finish():
        if bench == "slb":
            pred = _features(net, test.images, cfg, ctx.device).argmax(1)
        else:
            ftr = _features(net, train.images, cfg, ctx.device)
            fte = _features(net, test.images, cfg, ctx.device)
            pred = train.labels[(fte @ ftr.T).nan_to_num(nan=-math.inf).argmax(1)]
        return {"accuracy": float((pred == test.labels).float().mean())}

    return ctx.loop(job, {"net": net, "opt": opt, "gen": gen}, epoch, epochs, ckpt_every=1, finish=finish,
                    unit="epoch")


def _mean_ci(values):
    v = np.array([x for x in values if math.isfinite(x)], dtype=np.float64)
    if len(v) == 0:
        return math.nan, math.nan, 0
    if len(v) == 1:
        return float(v[0]), math.nan, 1
    t = _T975.get(len(v) - 1, 1.96)
    return float(v.mean()), float(t * v.std(ddof=1) / math.sqrt(len(v))), len(v)


def summarize(cfg, bench: str, results: dict) -> dict:
    """Per estimator: original and each lambda (MI and accuracy over seeds), and the chosen lambda
    (highest mean MI estimate, as the paper picks 'the value with the best MI estimate')."""
    out = {}
    for est in cfg.estimators:
        per = {}
        for lam in (0.0,) + tuple(cfg.reg_weights):
            runs = [results[(est, lam, s)] for s in range(cfg.seeds)]
            mi = _mean_ci([r.rows[-1]["mi"] if r.rows else math.nan for r in runs])
            acc = _mean_ci([r.final["accuracy"] for r in runs])
            per[f"{lam:g}"] = {"mi": mi[0], "mi_ci": mi[1], "acc": acc[0], "acc_ci": acc[1], "finite_seeds": mi[2]}
        regs = {k: v for k, v in per.items() if k != "0"}
        best = max(regs, key=lambda k: regs[k]["mi"] if math.isfinite(regs[k]["mi"]) else -math.inf)
        out[est] = {"original": per["0"], "regularized": per[best], "chosen_lambda": float(best), "all": per}
    return out


def _cell(mean, ci, spec=".3f"):
    if not math.isfinite(mean):
        return "diverged"
    if abs(mean) >= 1e4:  # a run that blew up but stayed finite: keep the column readable
        spec = ".3g"
    return format(mean, spec) + (f"±{ci:.3g}" if math.isfinite(ci) else "")


def table(cfg, bench: str, summary: dict) -> str:
    ref = paper_dataset(cfg.dataset)
    paper = PAPER_TABLE2[bench][ref]
    batch, epochs = resolved(cfg, bench)
    ideal = math.log(NUM_CLASSES[cfg.dataset])
    lines = [f"{bench.upper()} on {cfg.dataset} (Choi & Lee Table 2 layout; paper numbers: {ref}); ideal MI "
             f"ln {NUM_CLASSES[cfg.dataset]} = {ideal:.3f}; {cfg.seeds} seed(s), mean"
             f"{' ± 95% CI' if cfg.seeds > 1 else ''}; batch {batch}, {epochs} epochs",
             f"{'estimator':<9}{'MI original':>16}{'MI regularized':>17}{'lambda':>8}{'acc original':>16}"
             f"{'acc regularized':>17}   paper (MI o->r | acc o->r)"]
    for est, s in summary.items():
        o, r = s["original"], s["regularized"]
        p = paper[est]
        lines.append(f"{est:<9}{_cell(o['mi'], o['mi_ci']):>16}{_cell(r['mi'], r['mi_ci']):>17}"
                     f"{s['chosen_lambda']:>8g}{_cell(o['acc'], o['acc_ci']):>16}{_cell(r['acc'], r['acc_ci']):>17}"
                     f"   {p[0]:.3f}->{p[1]:.3f} | {p[2]:.3f}->{p[3]:.3f}")
    extra = [f"dataset {cfg.dataset}: compared with the paper's {ref} numbers"] if cfg.dataset != ref else []
    lines.append("lambda: the regularized weight with the highest mean MI estimate; 'diverged': no finite estimate.")
    lines.append(runner.differences_text(cfg, extra))
    return "\n".join(lines)


def run(bench: str, cfg, ctx: runner.RunContext) -> dict:
    gen = torch.Generator().manual_seed(ctx.seed)
    train = load_images(cfg.dataset, "train", ctx.data_dir, ctx.download).subset(cfg.n_train or None, gen)
    test = load_images(cfg.dataset, "test", ctx.data_dir, ctx.download).subset(cfg.n_test or None, gen)
    results = {}
    for seed in range(cfg.seeds):
        for est in cfg.estimators:
            for lam in (0.0,) + tuple(cfg.reg_weights):
                results[(est, lam, seed)] = train_one(ctx, cfg, bench, est, lam, seed, (train, test))
    runner.write_metrics(ctx.run_dir / "metrics.csv", {f"{e}-lam{l:g}-seed{s}": r for (e, l, s), r in results.items()})
    summary = summarize(cfg, bench, results)
    _plot(ctx.run_dir / f"{bench}_mi_accuracy.png", cfg, bench, summary)
    return {"dataset": cfg.dataset, "batch": resolved(cfg, bench)[0], "epochs": resolved(cfg, bench)[1],
            "summary": summary, "table": table(cfg, bench, summary),
            "claims": _claims_remine.benchmark(bench, cfg, summary, NUM_CLASSES[cfg.dataset],
                                               bool(runner.differences(cfg)))}


def _plot(path, cfg, bench, summary):
    """MI estimate and test accuracy per estimator, original vs regularized, the paper's values as black
    dashes (its MI of 0 = diverged as a black x at the top); a run of ours without a finite estimate (or
    beyond +-1e4) is the shared diverged marker (red x), not a bar; symlog when a value passes 50."""
    from . import plotting

    fig, axes = plotting.grid(2, 2, size=(5.5, 3.4))
    ests = list(summary)
    xs = np.arange(len(ests))
    paper = PAPER_TABLE2[bench][paper_dataset(cfg.dataset)]
    panels = ((axes[0], "mi", 0, "MI estimate, last epoch", "MI estimate (nats)"),
              (axes[1], "acc", 2, "test accuracy", "test accuracy (fraction)"))
    for ax, key, pidx, title, ylabel in panels:
        for k, (part, off) in enumerate((("original", -0.2), ("regularized", 0.2))):
            vals = [summary[e][part][key] for e in ests]
            plotting.bars(ax, xs + off, vals, 0.4, label=f"ours, {part}", color=f"C{k}")
            pv = [paper[e][pidx + k] for e in ests]
            # the paper's MI of 0.0 means "diverged": its own mark (black x at the top), not a value at 0
            gone = [key == "mi" and v == 0.0 for v in pv]
            ax.scatter([x for x, g in zip(xs + off, gone) if not g], [v for v, g in zip(pv, gone) if not g], c="k",
                       marker="_", s=200, label="paper (CIFAR)" if k == 0 else None, zorder=3)
            if any(gone):
                ax.scatter([x for x, g in zip(xs + off, gone) if g], [1.0] * sum(gone), c="k", marker="x", s=30,
                           transform=ax.get_xaxis_transform(), clip_on=False, zorder=5,
                           label="paper: diverged (its 0)" if "paper: diverged (its 0)" not in
                           ax.get_legend_handles_labels()[1] else None)
        real = [abs(summary[e][p][key]) for e in ests for p in ("original", "regularized")
                if not plotting.is_diverged(summary[e][p][key])]
        if real and max(real) > 50:   # one run far off would flatten the rest: symlog keeps every value readable
            ax.set_yscale("symlog", linthresh=1.0)
            ylabel += ", symlog scale"
        ax.set_xticks(xs, ests)
        plotting.labels(ax, "estimator", ylabel, f"{bench.upper()} {cfg.dataset}: {title}")
        ax.legend()
    plotting.save(fig, path)
