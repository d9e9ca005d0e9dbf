"""Choi & Lee Appendix B / Figure 8: statistics-network outputs on seen, unseen and out-of-distribution data.

A ResNet-18 is trained on the supervised learning benchmark (SLB, ``_benchmark``) with one
regularized estimator (ReMINE, lambda = 0.1 by default). Its critic is the logit, T(x, c) = logit_c.
The regularizer pins the log-mean-exp of T over the marginal pairs (all B x C logits) at 0, so T
estimates the log density ratio

    T(x, c) ~ log p(x, c) / (p(x) p(c)) = log p(c | x) / p(c):  log C at the correct class of a
    confidently classified x (ln 10 = 2.303), -> -infinity at the other C - 1 classes.

Figure 8 plots T on (a) training pairs, (b) test pairs, (c) images of another dataset (the paper:
CIFAR-10 network, MNIST training images), where "nearly all samples" come out less likely under the
joint than under the product of marginals. We report, per set: the log-mean-exp of T over all its
(x, c) pairs (the regularized quantity), the mean T at the labelled class against log C, the share of
images with max_c T(x, c) < 0 (no class more likely than under independence), and the AUROC of
max_c T(x, c) separating the in-distribution test images from the out-of-distribution ones.

Data: the in-distribution set from ``--data-dir`` (the paper: cifar10) and an out-of-distribution set:
mnist / fashion-mnist idx files, a CIFAR set, or scikit-learn's bundled 8x8 ``digits`` (1797 images,
scaled 0..16 -> 0..255 and resized like every image). The quick preset is Fashion-MNIST vs digits.
"""
from __future__ import annotations

import dataclasses
import math
import sys

import numpy as np
import torch

from ..data import NUM_CLASSES, load_images
from . import _benchmark, claims, plotting, runner
from . import settings as checks

NAME = "remine_ood"
SUMMARY = "Choi & Lee App B, Fig 8: SLB statistics-network outputs on train / test / out-of-distribution images"
REQUIRES = {"matplotlib": "its figures", "sklearn": "the AUROC (and the digits set)"}
OOD_SETS = ("mnist", "fashion-mnist", "cifar10", "cifar100", "digits")


@dataclasses.dataclass
class Config(_benchmark.BenchConfig):
    """Paper defaults (App B with D.3's SLB protocol): CIFAR-10 network, MNIST training images as OOD."""
    estimators: tuple = ("mine",)      # INFERRED: App B names no estimator; ReMINE is the paper's main one
    reg_weights: tuple = (0.1,)        # INFERRED: the largest lambda of D.3 (the regularizer is what pins lme = 0)
    seeds: int = 1                     # one trained network (a figure, not a table)
    ood: str = "mnist"
    ood_split: str = "train"           # the paper feeds "MNIST training samples"
    n_ood: int = 0                     # 0: the whole split
    n_eval_train: int = 10000          # training images whose outputs are drawn (INFERRED; 0: all)
    bins: int = runner.runner_field(60)

    def paper_value(self, name: str, value) -> str:
        if name in ("n_ood", "n_eval_train") and value == 0:
            return "the whole split"
        return super().paper_value(name, value)

    def validate(self):
        super().validate()
        checks.need(len(self.estimators) == 1, "estimators", "one estimator (one network is trained)",
                    self.estimators)
        checks.need(len(self.reg_weights) == 1, "reg_weights", "one lambda (one network is trained)", self.reg_weights)
        checks.one_of(self, "ood", OOD_SETS)
        checks.one_of(self, "ood_split", ("train", "test"))
        checks.int_at_least(self, 0, "n_ood", "n_eval_train")
        checks.int_at_least(self, 5, "bins")
        checks.need(self.ood != self.dataset, "ood", f"a dataset other than the training one ({self.dataset})",
                    self.ood)


QUICK = {**_benchmark.QUICK, "ood": "digits", "n_ood": 0, "n_eval_train": 2000}


def dataset_names(cfg) -> list:
    return [cfg.dataset] + ([cfg.ood] if cfg.ood != "digits" else [])


def load_digits_images() -> tuple[torch.Tensor, torch.Tensor]:
    """scikit-learn's bundled 8x8 digits as uint8 N x 1 x 8 x 8 (0..16 scaled to 0..255) and labels."""
    from sklearn.datasets import load_digits

    d = load_digits()
    images = torch.from_numpy(np.round(d.images * (255.0 / 16.0)).astype(np.uint8))[:, None]
    return images, torch.from_numpy(d.target.astype(np.int64))


def load_ood(cfg, ctx, gen):
    if cfg.ood == "digits":
        images, _ = load_digits_images()
    else:
        images = load_images(cfg.ood, cfg.ood_split, ctx.data_dir, ctx.download).images
    if cfg.n_ood and cfg.n_ood < len(images):
        images = images[torch.randperm(len(images), generator=gen)[: cfg.n_ood]]
    return images


def logits_of(net, images, cfg, device) -> torch.Tensor:
    """T(x, c) = logit_c for every image (eval mode), N x C, float64 on the CPU."""
    return _benchmark._features(net, images, cfg, device).double()


def lme(t: torch.Tensor) -> float:
    """log mean exp over every entry (the regularized quantity of ReMINE, over all (x, c) pairs)."""
    return float(torch.logsumexp(t.flatten(), 0) - math.log(t.numel()))


def set_stats(t: torch.Tensor, labels=None) -> dict:
    """Statistics of one set's outputs (N x C): lme over all pairs, share of images whose max_c T < 0,
    and with labels the mean / median T at the labelled class and at the other classes."""
    out = {"n": int(t.shape[0]), "lme_all": lme(t), "max_below0": float((t.max(1).values < 0).double().mean()),
           "max_mean": float(t.max(1).values.mean())}
    if labels is not None:
        joint = t.gather(1, labels[:, None]).flatten()
        other = t[torch.ones_like(t, dtype=torch.bool).scatter_(1, labels[:, None], False)]
        out.update(joint_mean=float(joint.mean()), joint_median=float(joint.median()),
                   other_median=float(other.median()), joint_above0=float((joint > 0).double().mean()))
    return out


def auroc(in_scores: torch.Tensor, out_scores: torch.Tensor) -> float:
    """AUROC of a score that should be higher on in-distribution images (sklearn.metrics.roc_auc_score)."""
    from sklearn.metrics import roc_auc_score

    y = np.r_[np.ones(len(in_scores)), np.zeros(len(out_scores))]
    return float(roc_auc_score(y, np.r_[in_scores.numpy(), out_scores.numpy()]))


def plot(path, cfg, outs: dict, labels: dict, n_classes: int) -> None:
    """Figure 8: per set, the histogram of T(x, c) at the labelled class and at the other classes
    (train, test) or of max_c T(x, c) (OOD), with the ideal value log C marked; non-finite outputs
    are counted in the title, never dropped silently."""
    fig, axes = plotting.grid(3, 3, size=(4.2, 3.2))
    ideal = math.log(n_classes)
    for ax, name in zip(axes, ("train", "test", "ood")):
        t = outs[name]
        fin = torch.isfinite(t)
        bad = int((~fin).sum())
        if name in labels:
            y = labels[name]
            joint = t.gather(1, y[:, None]).flatten()
            mask = torch.ones_like(t, dtype=torch.bool).scatter_(1, y[:, None], False)
            parts = {"labelled class T(x, y)": joint, "other classes": t[mask]}
        else:   # the unseen images' best class, beside the test images' for comparison
            parts = {f"max over classes, {cfg.ood}": t.max(1).values,
                     f"max over classes, {cfg.dataset} test": outs["test"].max(1).values}
        vals = torch.cat([v[torch.isfinite(v)] for v in parts.values()])
        edges = np.linspace(float(vals.min()), float(vals.max()) + 1e-9, cfg.bins + 1) if len(vals) else 10
        for label, v in parts.items():
            v = v[torch.isfinite(v)].numpy()
            ax.hist(v, bins=edges, alpha=0.55, density=True, label=label)
        ax.axvline(ideal, color="k", ls="--", lw=1, label=f"log C = {ideal:.2f}")
        ax.axvline(0.0, color="grey", ls=":", lw=1)
        title = {"train": f"(a) {cfg.dataset} train", "test": f"(b) {cfg.dataset} test",
                 "ood": f"(c) {cfg.ood} {cfg.ood_split if cfg.ood != 'digits' else ''} (unseen)"}[name]
        ax.set_title(title + (f"; {bad} non-finite outputs not drawn" if bad else ""), fontsize=9)
        ax.set_xlabel("statistics-network output T(x, c) (nats)")
        ax.set_ylabel("density (per nat)")
        ax.legend(fontsize=7)
    plotting.save(fig, path)


def table(cfg, stats: dict, auc: float, acc: float, n_classes: int) -> str:
    f = lambda v, s=".3f": "-" if v is None or not math.isfinite(v) else format(v, s)  # noqa: E731
    lam = cfg.reg_weights[0]
    lines = [f"remine_ood (Choi & Lee App B, Fig 8): SLB ResNet-18 on {cfg.dataset} with Re{cfg.estimators[0].upper()} "
             f"(lambda {lam:g}), test accuracy {acc:.3f}; out-of-distribution: {cfg.ood}; ideal T at the labelled "
             f"class log {n_classes} = {math.log(n_classes):.3f}",
             f"{'set':<7}{'images':>8}{'lme all (x,c)':>15}{'T(x,y) mean':>13}{'median':>8}{'T other med.':>14}"
             f"{'T(x,y) > 0':>12}{'max_c T < 0':>13}{'mean max_c T':>14}"]
    for name, s in stats.items():
        lines.append(f"{name:<7}{s['n']:>8}{f(s['lme_all']):>15}{f(s.get('joint_mean')):>13}"
                     f"{f(s.get('joint_median')):>8}{f(s.get('other_median')):>14}"
                     f"{f(s.get('joint_above0'), '.1%'):>12}{f(s['max_below0'], '.1%'):>13}{f(s['max_mean']):>14}")
    lines.append(f"AUROC of max_c T(x, c), {cfg.dataset} test (in) vs {cfg.ood} (out): {auc:.3f}. An exact density "
                 "ratio has sum_c p(c) exp T(x, c) = 1 for every x, so max_c T >= 0; only the learned T can go below.")
    lines.append("Paper (CIFAR-10 vs MNIST, Fig 8, no numbers): train and test outputs centred at the ideal value, "
                 "nearly all MNIST images less likely under the joint (max_c T < 0 here).")
    lines.append(runner.differences_text(cfg))
    return "\n".join(lines)


def claim_of(stats: dict, auc: float, paper_scale: bool) -> list:
    """Fig 8 (c): nearly all (here: >= 90%) OOD images have max_c T(x, c) < 0, a larger share than of
    the in-distribution test images; decided at any scale (it is what this network shows)."""
    o, t = stats["ood"]["max_below0"], stats["test"]["max_below0"]
    held = o >= 0.9 and o > t
    return [claims.claim("App B / Fig 8: the statistics network scores nearly all unseen-dataset images as less "
                         "likely under the joint (max_c T(x, c) < 0), unlike the test images", f"max_c T < 0 on "
                         f"{100 * o:.1f}% of the OOD images vs {100 * t:.1f}% of the test images; AUROC {auc:.3f}",
                         held, shown_by=None if held or paper_scale else
                         "fastmi run remine_ood --data-dir DIR --device cuda (CIFAR-10 vs MNIST, 40 epochs; GPU, "
                         "not run here)").as_dict()]


def run(cfg: Config, ctx: runner.RunContext) -> dict:
    gen = torch.Generator().manual_seed(ctx.seed)
    train = load_images(cfg.dataset, "train", ctx.data_dir, ctx.download).subset(cfg.n_train or None, gen)
    test = load_images(cfg.dataset, "test", ctx.data_dir, ctx.download).subset(cfg.n_test or None, gen)
    ood = load_ood(cfg, ctx, gen)
    seen = train.subset(cfg.n_eval_train or None, gen)

    def after(net):
        return {name: logits_of(net, images, cfg, ctx.device).tolist()
                for name, images in (("train", seen.images), ("test", test.images), ("ood", ood))}

    est, lam = cfg.estimators[0], float(cfg.reg_weights[0])
    res = _benchmark.train_one(ctx, cfg, "slb", est, lam, 0, (train, test), after=after)
    runner.write_metrics(ctx.run_dir / "metrics.csv", {f"{est}-lam{lam:g}-seed0": res})
    outs = {k: torch.tensor(res.final[k], dtype=torch.float64) for k in ("train", "test", "ood")}
    labels = {"train": seen.labels, "test": test.labels}
    stats = {k: set_stats(outs[k], labels.get(k)) for k in outs}
    scores = {k: outs[k].max(1).values for k in ("test", "ood")}
    ok = {k: v[torch.isfinite(v)] for k, v in scores.items()}
    auc = auroc(ok["test"], ok["ood"]) if len(ok["test"]) and len(ok["ood"]) else math.nan
    n_classes = NUM_CLASSES[cfg.dataset]
    plot(ctx.run_dir / "remine_ood.png", cfg, outs, labels, n_classes)
    paper_scale = not (cfg.batch or cfg.epochs or cfg.n_train or cfg.n_test) and cfg.image_size == 224
    return {"dataset": cfg.dataset, "ood": cfg.ood, "accuracy": res.final["accuracy"], "sets": stats, "auroc": auc,
            "table": table(cfg, stats, auc, res.final["accuracy"], n_classes),
            "claims": claim_of(stats, auc, paper_scale)}


if __name__ == "__main__":
    raise SystemExit(runner.main(sys.argv[1:], module=sys.modules[__name__]))
