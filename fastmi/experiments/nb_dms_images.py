"""Neural Bayes Appendix C: disjoint manifold separation of MNIST digits by a CNN, read by a linear probe.

The training set is split 90% / 10% (train / validation) at random. ``DMSCNN`` (C(100,3)-P2-C(100,3)-
C(200,3)-P2-C(500,3)-GAP-FC(10), BN + ReLU after each convolution, INFERRED from the authors' MIM CNN)
is trained on the 90% with the multi-partition DMS loss on its 10 outputs plus R_c (beta = 1: the
regularizer on; see ``_nb_dms``), Adam 1e-3, batch 5000, 100 epochs (one shuffled pass per epoch).
A linear classifier is then trained on the network's 10-d output L(x) = softmax(logits) (Adam 1e-3,
batch 128, up to 100 epochs, early stopping on the validation split with patience 10), beside the same
probe on a randomly initialised CNN of the same architecture, whose BatchNorm running statistics are
computed on the training images (``random_bn_calibrate``; INFERRED: with BN's initial statistics its
outputs are nearly constant). Images are scaled to [-1, 1] (INFERRED; App C says nothing).

Accuracies: the full test set at the epoch chosen on validation, and the authors' protocol (the first
128 test images, best epoch; SPEC 1.6), which is how 99.22% = 127/128 and 42.97% = 55/128 read.
MNIST from idx files when present, else Fashion-MNIST (``dataset="auto"``).
"""
from __future__ import annotations

import dataclasses
import math
import sys

import torch

from ..data import load_idx_dataset
from ..models import DMSCNN
from . import _claims_nb, plotting, runner
from . import settings as checks
from ._nb_dms import RC_BN_MODES, dms_step, predict
from .nb_filters import dataset_names, resolve_dataset  # noqa: F401 (dataset_names: the runner's hook)

NAME = "nb_dms_images"
REQUIRES = {"matplotlib": "its figures", "sklearn": "the ARI score"}
SUMMARY = "Neural Bayes App C: DMS-trained CNN on MNIST (Fashion-MNIST fallback), linear probe vs a random CNN"
PAPER = {"dms": 99.22, "random": 42.97}     # MNIST, % (first 128 test images, best epoch)


@dataclasses.dataclass
class Config:
    """Paper defaults (Appendix C)."""
    dataset: str = "auto"
    channels: tuple = (100, 100, 200, 500)
    k: int = 10
    batch: int = 5000
    epochs: int = 100
    lr: float = 1e-3
    beta: float = 1.0
    beta_multiplies: bool = False       # beta only switches R_c on (as DML.ipynb)
    rc_bn: str = "train"
    val_fraction: float = 0.1
    n_train: int = 0                    # 0: the whole training set (before the 90/10 split)
    n_test: int = 0                     # 0: the whole test set
    probe_features: str = "softmax"     # the 10-d output L(x) (INFERRED), or "logits"
    random_bn_calibrate: bool = True    # random CNN: BN running statistics from the training images (INFERRED)
    probe_epochs: int = 100
    probe_lr: float = 1e-3
    probe_batch: int = 128
    probe_patience: int = 10            # early stopping: epochs without a better validation accuracy
    eval_batch: int = runner.runner_field(1000)

    def paper_value(self, name, value):
        return runner.whole_split_paper_value(name, value, "MNIST")

    def validate(self):
        checks.one_of(self, "dataset", ("auto", "mnist", "fashion-mnist"))
        checks.items(self, "channels", checks.positive_ints, "positive ints")
        checks.int_at_least(self, 2, "batch", "k")
        checks.int_at_least(self, 0, "epochs", "n_train", "n_test")
        checks.int_at_least(self, 1, "probe_epochs", "probe_batch", "probe_patience", "eval_batch")
        checks.positive(self, "lr", "probe_lr")
        checks.non_negative(self, "beta")
        checks.in_interval(self, "val_fraction", 0, 1, low_open=True, high_open=True)
        if self.n_train:
            checks.need(round(self.val_fraction * self.n_train) < self.n_train, "val_fraction",
                        f"small enough to leave training images out of n_train = {self.n_train}", self.val_fraction)
        checks.one_of(self, "rc_bn", RC_BN_MODES)
        checks.one_of(self, "probe_features", ("softmax", "logits"))


QUICK = {"n_train": 3000, "n_test": 2000, "batch": 300, "epochs": 4, "probe_epochs": 50}


def load_images01(dataset: str, split: str, data_dir, n: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """N x 1 x 28 x 28 floats in [-1, 1] and int64 labels (the first n if n > 0)."""
    images, labels = load_idx_dataset(dataset, split, data_dir)
    if n:
        images, labels = images[:n], labels[:n]
    return (images[:, None].float() / 255.0 - 0.5) / 0.5, labels


def split_train_val(n: int, val_fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A random (train, validation) split of range(n): the validation indices are the first
    max(1, round(val_fraction * n)) of randperm(n) drawn from a generator seeded with ``seed``. That is
    the split ``train_probe(val_fraction=..., generator=Generator().manual_seed(seed))`` draws first,
    so the probe validates on the same images that DMS training did not see."""
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    n_val = max(1, int(round(val_fraction * n)))
    if n_val >= n:
        raise ValueError(f"val_fraction={val_fraction} leaves no training images out of {n}")
    return perm[n_val:], perm[:n_val]


def features(model: DMSCNN, x: torch.Tensor, kind: str, batch: int, device) -> torch.Tensor:
    """The network's 10-d output (softmax or logits) with BatchNorm in evaluation mode."""
    out = torch.cat([predict(model, x[i:i + batch].to(device)).cpu() for i in range(0, x.shape[0], batch)])
    return out.softmax(1) if kind == "softmax" else out


@torch.no_grad()
def calibrate_bn(model: torch.nn.Module, x: torch.Tensor, batch: int, device) -> None:
    """Set every BatchNorm's running mean / variance to its average over ``x`` (training-mode passes with
    momentum=None, no parameter changes). An untrained network keeps BN's initial statistics (0, 1)
    otherwise, which do not match its activations: its eval-mode softmax outputs are then nearly
    constant (per-dimension std ~0.003 on Fashion-MNIST), and a linear probe stays at chance."""
    bns = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    saved = [m.momentum for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None                 # cumulative average over the batches
    was = model.training
    model.train()
    for i in range(0, x.shape[0], batch):
        model(x[i:i + batch].to(device))
    model.train(was)
    for m, mom in zip(bns, saved):
        m.momentum = mom


def train_dms(ctx: runner.RunContext, cfg: Config, x: torch.Tensor) -> tuple[DMSCNN, runner.JobResult]:
    """The DMS-trained CNN; one ctx.loop step per minibatch, a checkpoint per epoch."""
    job = "dms-cnn"
    seed = ctx.job_seed(job)
    torch.manual_seed(seed)
    model = DMSCNN(x.shape[1], cfg.k, tuple(cfg.channels)).to(ctx.device)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    gen = torch.Generator().manual_seed(seed)
    n = x.shape[0]
    batch = min(cfg.batch, n)
    per_epoch = math.ceil(n / batch)
    order = {}

    def step(i):
        epoch, j = divmod(i, per_epoch)
        if epoch not in order:
            order.clear()
            order[epoch] = torch.randperm(n, generator=torch.Generator().manual_seed(seed + epoch))
        idx = order[epoch][j * batch:(j + 1) * batch]
        if idx.numel() < 2:   # R_c's perturbation needs two samples
            return None
        row = dms_step(model, opt, x[idx].to(ctx.device), beta=cfg.beta, beta_multiplies=cfg.beta_multiplies,
                       rc_bn=cfg.rc_bn, generator=gen, backend=ctx.backend)
        return {"epoch_f": i / per_epoch, **row}

    def finish():   # the trained weights live with the finished job, so --resume gets them back
        return {"state": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}}

    res = ctx.loop(job, {"model": model, "opt": opt, "gen": gen}, step, cfg.epochs * per_epoch,
                   ckpt_every=per_epoch, finish=finish)
    model.load_state_dict(res.final["state"])
    return model, res


def probe(cfg: Config, ctx: runner.RunContext, job: str, feats: torch.Tensor, y: torch.Tensor,
          test_feats: torch.Tensor, y_test: torch.Tensor, split_seed: int) -> runner.JobResult:
    """The linear probe (``train_probe``) on the features of the whole training set, as one job; its
    validation split (seeded with ``split_seed``) is the one held out from DMS training."""
    from .probe import train_probe

    def fit(_):
        return None

    def finish():
        r = train_probe(feats, y, test_feats, y_test, hidden=None, epochs=cfg.probe_epochs, lr=cfg.probe_lr,
                        batch_size=cfg.probe_batch, val_fraction=cfg.val_fraction, patience=cfg.probe_patience,
                        first_n=128, generator=torch.Generator().manual_seed(split_seed))
        return {"test_acc": r.test_acc, "first_n_best_acc": r.first_n_best_acc, "best_epoch": r.best_epoch,
                "val_acc": r.val_acc}

    return ctx.loop(job, {}, fit, 0, finish=finish)


def plot(path, dms: runner.JobResult, dataset: str = "") -> None:
    fig, axes = plotting.grid(2, 2, size=(4.5, 3.2))
    steps = [r["step"] for r in dms.rows]
    for ax, key, title in ((axes[0], "dms", "DMS loss (code scale)"), (axes[1], "rc", "R_c")):
        plotting.curve(ax, steps, plotting.column(dms.rows, key), lw=0.8)
        plotting.labels(ax, "training step", f"{title} (nats)", f"{title}, DMS-CNN on {dataset}" if dataset else title)
    plotting.save(fig, path)


def table(cfg: Config, dataset: str, note: str, probes: dict, n: dict) -> str:
    """``probes``: per encoder, the probe's accuracies and the argmax ARI."""
    lines = [f"nb_dms_images (Neural Bayes App C): {dataset}, DMS-CNN trained on {n['train']} images "
             f"({n['val']} for validation), linear probe on its {cfg.k}-d output ({cfg.probe_features})",
             f"{'encoder':<12}{'test acc (full)':>16}{'first-128 best':>16}{'val acc':>9}{'best epoch':>11}"
             f"{'argmax ARI':>11}{'paper (MNIST, first 128)':>26}"]
    for key, label in (("dms", "DMS-CNN"), ("random", "random CNN")):
        f = probes[key]
        lines.append(f"{label:<12}{100 * f['test_acc']:>15.2f}%{100 * f['first_n_best_acc']:>15.2f}%"
                     f"{100 * f['val_acc']:>8.2f}%{f['best_epoch']:>11}{f['argmax_ari']:>11.3f}{PAPER[key]:>25.2f}%")
    lines.append("argmax ARI: adjusted Rand index of the argmax of the 10 outputs (the DMS partition) vs the test labels.")
    return runner.finish_table(lines, note, cfg)


def run(cfg: Config, ctx: runner.RunContext) -> dict:
    dataset, note = resolve_dataset(cfg.dataset, ctx.data_dir)
    x, y = load_images01(dataset, "train", ctx.data_dir, cfg.n_train)
    x_test, y_test = load_images01(dataset, "test", ctx.data_dir, cfg.n_test)
    split_seed = ctx.job_seed("split")
    tr, va = split_train_val(x.shape[0], cfg.val_fraction, split_seed)
    model, dms = train_dms(ctx, cfg, x[tr])
    torch.manual_seed(ctx.job_seed("random-cnn"))
    random_cnn = DMSCNN(x.shape[1], cfg.k, tuple(cfg.channels)).to(ctx.device)
    if cfg.random_bn_calibrate:
        calibrate_bn(random_cnn, x[tr], cfg.eval_batch, ctx.device)
    from sklearn.metrics import adjusted_rand_score

    probes, aris = {}, {}
    for key, net in (("dms", model), ("random", random_cnn)):
        f_train = features(net, x, cfg.probe_features, cfg.eval_batch, ctx.device)
        f_test = features(net, x_test, cfg.probe_features, cfg.eval_batch, ctx.device)
        probes[key] = probe(cfg, ctx, f"probe-{key}", f_train, y, f_test, y_test, split_seed)
        aris[key] = adjusted_rand_score(y_test.numpy(), f_test.argmax(1).numpy())   # argmax = the DMS partition
    runner.write_metrics(ctx.run_dir / "metrics.csv", {"dms-cnn": dms})
    if dms.rows:
        plot(ctx.run_dir / "nb_dms_images_loss.png", dms, dataset)
    results = {k: {**p.final, "argmax_ari": aris[k]} for k, p in probes.items()}
    return {"dataset": dataset, "n_train": int(tr.numel()), "n_val": int(va.numel()), "probes": results,
            "final_dms": dms.rows[-1]["dms"] if dms.rows else None,
            "table": table(cfg, dataset, note, results, {"train": int(tr.numel()), "val": int(va.numel())}),
            "claims": _claims_nb.dms_images(cfg, results, bool(runner.differences(cfg)))}


if __name__ == "__main__":
    raise SystemExit(runner.main(sys.argv[1:], module=sys.modules[__name__]))
