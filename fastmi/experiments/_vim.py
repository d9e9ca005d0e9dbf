"""Shared training and evaluation of the Variational InfoMax experiments (vim_mnist, vim_cifar; SPEC.md 2).

Objectives (minimised, batch means; z one reparameterised sample per input):

    baseline:  CE(y, W mu + b)                                   (deterministic, no prior term)
    VIB:       CE(y, W z + b) + beta * KL(N(mu, s^2) || N(0, sigma^2 I))     (F.gaussian_kl)
    VIM:       CE(y, W z + b) + beta * MMD^2_IMQ({z_b}, {z'_b}),  z'_b ~ N(0, sigma^2 I)   (F.mmd_imq_prior;
               kernel C / (C + ||a - b||^2) with C = K, the unbiased estimator)

Training: Adam, a per-epoch learning rate (``lr_at``), an exponential moving average of the weights
(torch's AveragedModel) that is what gets evaluated. Evaluation: test error of p(y|x) averaged over
``test_samples`` codes, k-means ARI / purity and normalised Hoyer sparsity of the codes mu, and
optionally the targeted Carlini-Wagner L2 attack on the deterministic path x -> mu -> logits.
"""
from __future__ import annotations

import dataclasses
import math
import sys
from typing import Callable, Optional

import numpy as np
import torch
from torch.nn import functional as TF
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from .. import functional as F
from ..models.vim import MeanLogits, StochasticClassifier
from . import plotting, runner
from . import settings as checks
from ._attack import cw_l2_targeted
from ._representation import cluster_scores, normalized_hoyer

OBJECTIVES = ("baseline", "vib", "vim")


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """One trained model: the objective and its beta, sigma (unused by the baseline)."""
    objective: str
    beta: float = 0.0
    sigma: float = 1.0

    def __post_init__(self):
        if self.objective not in OBJECTIVES:
            raise ValueError(f"objective must be one of {OBJECTIVES}, got {self.objective!r}")
        if self.objective != "baseline" and not (self.beta > 0 and self.sigma > 0):
            raise ValueError(f"{self.objective}: beta and sigma must be > 0, got beta={self.beta}, sigma={self.sigma}")

    @property
    def job(self) -> str:
        return "baseline" if self.objective == "baseline" else f"{self.objective}-beta{self.beta:g}-sigma{self.sigma:g}"

    @property
    def label(self) -> str:
        if self.objective == "baseline":
            return "baseline"
        return f"{self.objective.upper()} (b={self.beta:g}, s={self.sigma:g})"


def parse_spec(text: str, sigma: float) -> ModelSpec:
    """'baseline', 'vib:1e-3' or 'vim:1e-3:2' (objective:beta[:sigma]; sigma defaults to ``sigma``)."""
    parts = str(text).strip().split(":")
    try:
        if parts[0] == "baseline" and len(parts) == 1:
            return ModelSpec("baseline")
        if len(parts) in (2, 3):
            return ModelSpec(parts[0], float(parts[1]), float(parts[2]) if len(parts) == 3 else float(sigma))
    except ValueError as e:
        raise ValueError(f"model {text!r}: {e}") from e
    raise ValueError(f"model {text!r}: expected 'baseline', 'vib:BETA[:SIGMA]' or 'vim:BETA[:SIGMA]'")


def objective_loss(spec: ModelSpec, logits, y, mu, std, z, *, mmd_scale=None, backend="auto", generator=None):
    """(loss, cross-entropy, prior term) of ``spec`` on one batch (the prior term is 0 for the baseline)."""
    ce = TF.cross_entropy(logits, y)
    if spec.objective == "baseline":
        return ce, ce, torch.zeros((), device=ce.device)
    if spec.objective == "vib":
        reg = F.gaussian_kl(mu, std, sigma=spec.sigma)
    else:
        reg = F.mmd_imq_prior(z, sigma=spec.sigma, scale=mmd_scale, generator=generator, backend=backend)
    return ce + spec.beta * reg, ce, reg


def lr_at(cfg, epoch: int) -> float:
    """The learning rate of ``epoch`` (0-based): lr * decay^(epoch // lr_decay_every) when lr_decay_every > 0
    (MNIST: x0.97 every 2 epochs), else lr * decay^(number of lr_milestones <= epoch) (CIFAR: x0.5 at 30)."""
    if cfg.lr_decay_every:
        return cfg.lr * cfg.lr_decay ** (epoch // cfg.lr_decay_every)
    return cfg.lr * cfg.lr_decay ** sum(1 for m in cfg.lr_milestones if epoch >= m)


def make_ema(model: torch.nn.Module, decay: float) -> Optional[AveragedModel]:
    """The EMA copy (theta_ema <- decay * theta_ema + (1 - decay) * theta after every step; the first
    update copies the weights); BatchNorm statistics are averaged the same way. None when decay is 0."""
    if not decay:
        return None
    return AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True)


def validate_common(cfg) -> None:
    """Checks shared by both experiments' configs (errors name the setting)."""
    checks.int_at_least(cfg, 1, "k", "epochs", "test_samples", "eval_batch", "kmeans_init")
    checks.int_at_least(cfg, 2, "batch_size")        # VIM's unbiased MMD needs 2 codes
    checks.int_at_least(cfg, 0, "n_train", "n_test", "lr_decay_every", "ckpt_every")
    checks.positive(cfg, "lr", "scale_shift")
    checks.in_interval(cfg, "lr_decay", 0, 1, low_open=True)
    checks.in_interval(cfg, "ema_decay", 0, 1, high_open=True)   # 0 = no EMA
    checks.non_negative(cfg, "mmd_scale")
    checks.need(len(cfg.adam_betas) == 2 and all(checks.is_number(b) and 0 <= b < 1 for b in cfg.adam_betas),
                "adam_betas", "two numbers in [0, 1)", cfg.adam_betas)
    checks.items(cfg, "lr_milestones", checks.positive_ints, "positive ints (epochs)", nonempty=False)
    if cfg.n_train:
        checks.need(cfg.batch_size <= cfg.n_train, "batch_size", f"at most n_train ({cfg.n_train})", cfg.batch_size)


REQUIRES = {"matplotlib": "its figures", "sklearn": "the k-means cluster scores of the codes"}


@dataclasses.dataclass
class Split:
    """Raw images (any dtype; ``to_input`` turns a batch into the network's input) and int64 labels."""
    images: torch.Tensor
    labels: torch.Tensor

    def first(self, n: int) -> "Split":
        """The first n samples (all when n is 0): keeps 'the first ten zeros of the test set' meaningful."""
        return self if not n or n >= len(self.labels) else Split(self.images[:n], self.labels[:n])


def _batches(split: Split, to_input, size: int, device):
    for i in range(0, len(split.labels), size):
        yield to_input(split.images[i: i + size]).to(device), split.labels[i: i + size].to(device)


@torch.no_grad()
def evaluate(model: StochasticClassifier, test: Split, to_input, cfg, device, seed: int) -> dict:
    """Test error (%) of the ``test_samples``-averaged prediction, and the codes mu of the test set."""
    model.eval()
    gen = torch.Generator(device=device).manual_seed(seed)
    wrong, codes = 0, []
    for x, y in _batches(test, to_input, cfg.eval_batch, device):
        wrong += int((model.predict_proba(x, cfg.test_samples, gen).argmax(1) != y).sum())
        codes.append(model.encode(x)[0].float().cpu())
    return {"test_error": 100.0 * wrong / len(test.labels), "codes": torch.cat(codes)}


def attack(model: StochasticClassifier, test: Split, to_input, cfg, device) -> dict:
    """CW-L2 on the first ``attack_n`` test images of class ``attack_source``, target ``attack_target``,
    against the deterministic path x -> mu -> logits; mean norms over the successful attacks."""
    idx = (test.labels == cfg.attack_source).nonzero().flatten()[: cfg.attack_n]
    if len(idx) == 0:
        return {"successes": 0, "attacked": 0}
    x = to_input(test.images[idx]).to(device)
    target = torch.full((len(idx),), cfg.attack_target, dtype=torch.int64, device=device)
    try:
        res = cw_l2_targeted(MeanLogits(model), x, target, binary_search_steps=cfg.attack_binary_steps,
                             steps=cfg.attack_steps, stepsize=cfg.attack_lr, initial_const=cfg.attack_initial_const)
    except ImportError as e:   # foolbox went missing after the run's checks: no attack rather than a traceback
        print(f"warning: CW-L2 attack skipped: {e}", file=sys.stderr)
        return {"successes": 0, "attacked": 0, "skipped": str(e)}
    with torch.no_grad():
        clean_ok = int((model.mean_logits(x).argmax(1) == test.labels[idx].to(device)).sum())
    return {**res.summary(), "clean_correct": clean_ok}


def train_job(ctx: runner.RunContext, cfg, job: str, spec: ModelSpec, build: Callable[[ModelSpec], StochasticClassifier],
              data: tuple, to_input: Callable, epochs: int, *, with_attack: bool = False,
              keep_codes: bool = False) -> runner.JobResult:
    """Train one model for ``epochs`` epochs (one metrics row per epoch, a checkpoint every
    ``cfg.ckpt_every`` epochs) and evaluate its EMA weights: test error, ARI, purity, Hoyer, and the
    attack distances when ``with_attack``; the test codes are kept in the result when ``keep_codes``."""
    train, test = data
    device = ctx.device
    seed = ctx.job_seed(job)
    torch.manual_seed(seed)
    model = build(spec).to(device)
    ema = make_ema(model, cfg.ema_decay)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, betas=tuple(cfg.adam_betas))
    order_gen = torch.Generator().manual_seed(seed)
    noise_gen = torch.Generator(device=device).manual_seed(seed + 1)
    mmd_scale = cfg.mmd_scale or None
    n = len(train.labels)
    if n < cfg.batch_size:
        raise ValueError(f"{ctx.name}: batch_size {cfg.batch_size} is larger than the training set ({n})")

    def epoch(e):
        lr = lr_at(cfg, e)
        for g in opt.param_groups:
            g["lr"] = lr
        model.train()
        order = torch.randperm(n, generator=order_gen)
        tot = {"loss": 0.0, "ce": 0.0, "prior_term": 0.0, "train_error": 0.0}
        steps = 0
        for i in range(0, n - cfg.batch_size + 1, cfg.batch_size):
            idx = order[i: i + cfg.batch_size]
            x, y = to_input(train.images[idx]).to(device), train.labels[idx].to(device)
            logits, mu, std, z = model(x, generator=noise_gen)
            loss, ce, reg = objective_loss(spec, logits, y, mu, std, z, mmd_scale=mmd_scale, backend=ctx.backend,
                                           generator=noise_gen)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if ema is not None:
                ema.update_parameters(model)
            steps += 1
            for k, v in (("loss", loss), ("ce", ce), ("prior_term", reg)):
                tot[k] += float(v.detach())
            tot["train_error"] += float((logits.argmax(1) != y).float().mean()) * 100.0
        return {"lr": lr, **{k: v / max(steps, 1) for k, v in tot.items()}}

    def finish():
        net = ema.module if ema is not None else model
        out = evaluate(net, test, to_input, cfg, device, seed + 2)
        codes = out.pop("codes")
        out.update(cluster_scores(codes, test.labels, n_clusters=int(test.labels.max()) + 1, seed=ctx.seed,
                                  n_init=cfg.kmeans_init))
        out["hoyer"] = normalized_hoyer(codes)
        if with_attack:
            out.update({f"attack_{k}": v for k, v in attack(net, test, to_input, cfg, device).items()})
        if keep_codes:
            out["codes"] = codes.tolist()
        return out

    state = {"model": model, "opt": opt, "order_gen": order_gen, "noise_gen": noise_gen}
    if ema is not None:
        state["ema"] = ema
    return ctx.loop(job, state, epoch, epochs, ckpt_every=cfg.ckpt_every, finish=finish, unit="epoch")


def results_row(res: runner.JobResult) -> dict:
    """The evaluation numbers of a job (without the kept codes), with its wall time."""
    return {**{k: v for k, v in res.final.items() if k != "codes"}, "seconds": res.seconds,
            "epochs": len(res.rows)}


# --- figures ------------------------------------------------------------------------------------
def plot_vs(ax, curves: dict, xlabel: str, ylabel: str, logx: bool = True) -> None:
    """curves: label -> list of (x, y) points (sorted by x before plotting); a point without a finite y
    is the shared diverged marker at the panel's edge."""
    for label, pts in curves.items():
        bad = [p for p in pts if p[1] is None or not math.isfinite(p[1])]
        pts = sorted(p for p in pts if p[1] is not None and math.isfinite(p[1]))
        if pts:
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", lw=1.2, label=label)
        plotting.mark_diverged(ax, [p[0] for p in bad], [p[1] for p in bad])
    if logx:
        ax.set_xscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7)


def scatter_codes(path, panels: dict, labels: torch.Tensor, title: str) -> None:
    """2-D codes, one panel per model (label -> (N x 2 list, caption)), coloured by class."""
    fig, axes = plotting.grid(len(panels), len(panels), size=(4.2, 4.0))
    y = labels.numpy()
    for ax, (name, (codes, caption)) in zip(axes, panels.items()):
        c = np.asarray(codes, dtype=np.float64)
        sc = ax.scatter(c[:, 0], c[:, 1], c=y[: len(c)], cmap="tab10", s=2, alpha=0.6, vmin=-0.5, vmax=9.5)
        ax.set_title(f"{name}\n{caption}", fontsize=8)
        ax.set_xlabel("mu_1")
        ax.set_ylabel("mu_2")
    fig.colorbar(sc, ax=axes, fraction=0.02, ticks=range(10), label="class")
    fig.suptitle(title, fontsize=9, y=1.04)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plotting.pyplot().close(fig)


def fmt(v, spec=".3f") -> str:
    return "-" if v is None or (isinstance(v, float) and not math.isfinite(v)) else format(v, spec)
