"""Training and evaluation shared by nb_mim, nb_mim_batch and nb_mim_ablation (SPEC 1.2-1.6).

Encoder training (the authors' MIM/main.py), one minibatch of MBS fresh random images per draw,
ceil(N / MBS) draws per epoch:

    (a) backward of  L_MIM = (1/N_s) sum_s [ent_s + (1 + alpha) R_p,s]      over the N_s scales of h0..h3
    (b) backward of  beta R_c,   R_c = mean_b ||GAP(h3(x~_b)) - GAP(h3(x_b))||^2 / zeta^2      (beta > 0)

with x~ = x + zeta delta, delta a unit subset-sum of the centred batch, one zeta ~ 0.1 N(0, 1) per
minibatch; the perturbed and the clean pass both get gradients, BatchNorm in train mode for both.
Gradients accumulate until BS samples are seen (``GradAccumulator``), then Adam steps. After each
epoch the MIM loss (without R_c, BN in eval mode) of the first MBS test images selects the epoch
whose weights the probes use.

Probes (SPEC 1.6): GAP(h3) of the frozen encoder (eval mode) -> Linear(200)-BN1d-ReLU-Linear(C),
orthogonal init, Adam, batch 128, 100 epochs; both protocols are reported: the authors' (accuracy
on the first 128 test images, max over epochs) and the full test set at the last probe epoch (no
epoch is picked on the test set; the best run of a grid is, per protocol, as in the paper).
"""
from __future__ import annotations

import dataclasses
import math
import time
from typing import Optional

import torch

from .. import functional as F
from ..models.neural_bayes_mim import MIMEncoder, encode
from . import _nb_mim_data, runner
from . import settings as checks
from .probe import train_probe

# The random-encoder probe grid of section 5.2.1 (16 configurations)
RANDOM_PROBE_GRID = tuple((wd, bs, lr) for wd in (0.0, 1e-5, 5e-5, 1e-4) for bs in (128, 256) for lr in (1e-4, 1e-3))


@dataclasses.dataclass
class MIMSettings:
    """Settings shared by the three experiments (defaults: the paper's CIFAR-10 setting)."""
    dataset: str = "cifar10"
    width: float = 1.0                 # channel multiplier of the CNN (1.0: 200-500-700-1000)
    epochs: int = 100
    probe_hidden: int = 200
    probe_epochs: int = 100
    probe_batch: int = 128
    probe_lrs: tuple = (1e-3,)
    first_n: int = 128                 # the authors' test protocol: the first 128 test images
    random_baseline: bool = True       # the random encoder (CNN without BN) with the 16-configuration probe grid
    n_train: int = 0                   # 0: the whole training set
    n_test: int = 0                    # 0: the whole test set (else its first n_test images)
    eval_batch: int = runner.runner_field(500)

    def paper_value(self, name: str, value) -> str:
        return runner.whole_split_paper_value(name, value)

    def validate(self):
        checks.one_of(self, "dataset", _nb_mim_data.DATASETS)
        checks.int_at_least(self, 1, "epochs", "probe_hidden", "probe_epochs", "probe_batch", "first_n", "eval_batch")
        checks.positive(self, "width")
        checks.int_at_least(self, 0, "n_train", "n_test")
        checks.items(self, "probe_lrs", checks.positive_numbers, "learning rates > 0")


@dataclasses.dataclass
class DrawnSettings(MIMSettings):
    """MIMSettings plus section 5.2.1's random (alpha, beta) draws (MBS 500, BS 2000): n_random with
    alpha ~ U[0, alpha_max] and beta ~ U[0, beta_max], n_alpha0 with alpha = 0, n_beta0 with beta = 0."""
    mbs: int = 500
    bs: int = 2000
    lr: float = 1e-3
    weight_decay: float = 0.0
    n_random: int = 32                 # alpha ~ U[0, alpha_max], beta ~ U[0, beta_max]
    n_alpha0: int = 5                  # alpha = 0, beta ~ U[0, beta_max]
    n_beta0: int = 5                   # beta = 0, alpha ~ U[0, alpha_max]
    alpha_max: float = 10.0
    beta_max: float = 5.0

    def validate(self):
        super().validate()
        checks.int_at_least(self, 0, "n_random", "n_alpha0", "n_beta0")
        checks.need(self.n_random + self.n_alpha0 + self.n_beta0 >= 1, "n_random + n_alpha0 + n_beta0",
                    "at least 1 (one run)", self.n_random + self.n_alpha0 + self.n_beta0)
        checks.non_negative(self, "alpha_max", "beta_max")


@dataclasses.dataclass(frozen=True)
class EncoderRun:
    """The settings of one encoder training job (what the grids and sweeps vary)."""
    alpha: float
    beta: float
    prior: str = "v2"
    pool: int = 2
    mbs: int = 500
    bs: int = 4000
    lr: float = 1e-3
    weight_decay: float = 0.0

    @classmethod
    def of(cls, cfg, **over) -> "EncoderRun":
        """The run with ``over``, and every other setting from ``cfg`` where it has that field."""
        base = {f.name: getattr(cfg, f.name) for f in dataclasses.fields(cls) if hasattr(cfg, f.name)}
        run = cls(**{**base, **over})
        run.validate()
        if getattr(cfg, "n_train", 0):
            checks.need(run.mbs <= cfg.n_train, "mbs", f"at most n_train ({cfg.n_train}), the encoder's training "
                        "images", run.mbs)
        return run

    def validate(self) -> None:
        checks.one_of(self, "prior", ("v1", "v2"))
        checks.int_at_least(self, 2, "mbs")   # the batch marginal and R_c need two samples
        checks.need(checks.is_int(self.bs) and self.bs >= self.mbs, "bs", f"an int >= mbs ({self.mbs}): gradients of "
                    "MBS-sized minibatches are accumulated until BS samples are seen", self.bs)
        checks.int_at_least(self, 0, "pool")  # 2: each state and its 2x2 average pool; 0: the states only
        checks.non_negative(self, "alpha", "beta", "weight_decay")
        checks.positive(self, "lr")

    def name(self) -> str:
        return (f"mim-{self.prior}-pool{self.pool}-a{self.alpha:.4g}-b{self.beta:.4g}-mbs{self.mbs}-bs{self.bs}"
                f"-lr{self.lr:g}-wd{self.weight_decay:g}")


class GradAccumulator:
    """MBS/BS gradient accumulation exactly as MIM/main.py (SPEC 1.5).

    After each minibatch's backward passes call ``minibatch_done()``: while ``seen + MBS < BS`` it only
    counts (``seen += MBS``); otherwise it multiplies every gradient by 1 / (1 + seen / MBS) (= MBS / BS
    when MBS divides BS: the mean over the accumulated minibatches), takes the optimizer step, zeroes
    the gradients and resets ``seen``. ``seen`` persists across epochs (it is saved with checkpoints).
    When MBS does not divide BS, a step happens after ceil(BS / MBS) minibatches.
    """

    def __init__(self, params, optimizer: torch.optim.Optimizer, mbs: int, bs: int):
        self.params, self.optimizer, self.mbs, self.bs = list(params), optimizer, mbs, bs
        self.seen, self.steps = 0, 0

    def minibatch_done(self) -> bool:
        if self.seen + self.mbs >= self.bs:
            scale = 1.0 / (1.0 + self.seen / float(self.mbs))
            for p in self.params:
                if p.grad is not None:
                    p.grad.mul_(scale)
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=False)
            self.seen, self.steps = 0, self.steps + 1
            return True
        self.seen += self.mbs
        return False

    def state_dict(self) -> dict:
        return {"seen": self.seen, "steps": self.steps}

    def load_state_dict(self, state: dict) -> None:
        self.seen, self.steps = int(state["seen"]), int(state["steps"])


class BestWeights:
    """The encoder weights of the epoch with the lowest selection loss (saved with checkpoints)."""

    def __init__(self):
        self.loss, self.epoch, self.weights = math.inf, -1, None

    def offer(self, loss: float, epoch: int, module: torch.nn.Module) -> bool:
        if loss < self.loss:
            self.loss, self.epoch = loss, epoch
            self.weights = {k: v.detach().clone() for k, v in module.state_dict().items()}
            return True
        return False

    def state_dict(self) -> dict:
        return {"loss": self.loss, "epoch": self.epoch, "weights": self.weights or {}}

    def load_state_dict(self, state: dict) -> None:
        self.loss, self.epoch = float(state["loss"]), int(state["epoch"])
        self.weights = dict(state["weights"]) or None


def mim_terms(encoder, x, run: EncoderRun, backend: str):
    """F.nb_mim over the encoder's four states (and their pooled scales when pool > 0)."""
    return F.nb_mim(encoder(x, states=True), alpha=run.alpha, prior=run.prior, pool=run.pool, backend=backend)


def smoothness(encoder, x, generator, backend: str) -> torch.Tensor:
    """R_c on the globally pooled last state; perturbed pass first, then the clean one (main.py's order)."""
    x_tilde, zeta = F.perturb_in_span(x, generator=generator, backend=backend)
    f_pert = encoder(x_tilde, states=True)[-1]
    f_clean = encoder(x, states=True)[-1]
    return F.fd_smoothness(f_clean, f_pert, zeta, pool="global", backend=backend)


@torch.no_grad()
def selection_loss(encoder, data, run: EncoderRun, backend: str, device) -> float:
    """The MIM loss (no R_c; BN in eval mode) of the first MBS test images of the encoder's dataset."""
    was = encoder.training
    encoder.eval()
    try:
        x = data.inputs(data.encoder_test.images[: run.mbs], train=False).to(device)
        return float(mim_terms(encoder, x, run, backend).loss)
    finally:
        encoder.train(was)


def new_encoder(cfg: MIMSettings, data, bn: bool, device) -> MIMEncoder:
    return MIMEncoder(in_channels=data.in_channels, width=cfg.width, bn=bn).to(device)


def features(encoder, data, cfg: MIMSettings, device):
    """(train features, test features) of the probe's splits: GAP(h3), frozen encoder, eval mode."""
    tf = lambda imgs: data.inputs(imgs, train=False)  # noqa: E731
    return (encode(encoder, data.probe_train.images, cfg.eval_batch, tf, device),
            encode(encoder, data.probe_test.images, cfg.eval_batch, tf, device))


def probe(cfg: MIMSettings, feats, data, *, lr: float, batch_size: int, weight_decay: float, seed: int,
          device="cpu", curves: bool = False) -> dict:
    """One 200-unit probe on frozen features (trained on ``device``); both protocols, and with ``curves``
    the per-epoch accuracies (full test set, first ``first_n`` test images) as lists."""
    gen = torch.Generator().manual_seed(seed)
    tr, te = feats[0].to(device), feats[1].to(device)
    ytr, yte = data.probe_train.labels.to(device), data.probe_test.labels.to(device)
    res = train_probe(tr, ytr, te, yte, hidden=cfg.probe_hidden,
                      epochs=cfg.probe_epochs, lr=lr, batch_size=batch_size, weight_decay=weight_decay,
                      first_n=cfg.first_n, num_classes=data.num_classes, generator=gen)
    out = {"first128_best": float(res.first_n_best_acc), "full_test": float(res.test_acc),
           "best_epoch": int(res.best_epoch)}
    if curves:
        out.update(curve_full=[float(r["test_acc"]) for r in res.history],
                   curve_first=[float(r["first_n_acc"]) for r in res.history])
    return out


def train_encoder(ctx: runner.RunContext, cfg: MIMSettings, data, run: EncoderRun,
                  curves: bool = False) -> runner.JobResult:
    """Train one encoder (a ctx.loop job, one step per epoch, checkpointed), then probe the selected
    epoch's weights with each probe learning rate. final: best_epoch, select_loss, probes {lr: {...}}
    (with the per-epoch probe accuracies when ``curves``)."""
    job = run.name()
    n = len(data.encoder)
    if run.mbs > n:
        raise ValueError(f"mbs ({run.mbs}) is larger than the encoder's training set ({n} images; n_train={cfg.n_train})")
    torch.manual_seed(ctx.job_seed(job))
    encoder = new_encoder(cfg, data, True, ctx.device)
    opt = torch.optim.Adam(encoder.parameters(), lr=run.lr, weight_decay=run.weight_decay)
    acc = GradAccumulator(encoder.parameters(), opt, run.mbs, run.bs)
    best = BestWeights()
    gen = torch.Generator().manual_seed(ctx.job_seed(job))
    draws = math.ceil(n / run.mbs)

    def epoch(e: int) -> dict:
        encoder.train()
        t0 = time.perf_counter()
        sums = {"loss": 0.0, "entropy": 0.0, "prior": 0.0, "rc": 0.0}
        for _ in range(draws):
            idx = torch.randperm(n, generator=gen)[: run.mbs].to(data.encoder.images.device)
            x = data.inputs(data.encoder.images[idx], train=True, generator=gen).to(ctx.device)
            terms = mim_terms(encoder, x, run, ctx.backend)
            terms.loss.backward()
            if run.beta > 0:
                rc = smoothness(encoder, x, gen, ctx.backend)
                (run.beta * rc).backward()
                sums["rc"] += float(rc.detach())
            acc.minibatch_done()
            sums["loss"] += float(terms.loss.detach())
            sums["entropy"] += float(terms.entropy.mean())
            sums["prior"] += float(terms.prior.mean())
        sel = selection_loss(encoder, data, run, ctx.backend, ctx.device)
        best.offer(sel, e, encoder)
        return {**{k: v / draws for k, v in sums.items()}, "select_loss": sel, "opt_steps": acc.steps,
                "seconds": time.perf_counter() - t0}

    def finish() -> dict:
        if best.weights is not None:
            encoder.load_state_dict(best.weights)
        feats = features(encoder, data, cfg, ctx.device)
        probes = {f"{lr:g}": probe(cfg, feats, data, lr=lr, batch_size=cfg.probe_batch, weight_decay=0.0,
                                   seed=ctx.job_seed(f"{job}-probe{lr:g}"), device=ctx.device, curves=curves)
                  for lr in cfg.probe_lrs}
        return {"best_epoch": best.epoch, "select_loss": best.loss, "opt_steps": acc.steps, "probes": probes}

    state = {"encoder": encoder, "opt": opt, "acc": acc, "best": best, "gen": gen}
    return ctx.loop(job, state, epoch, cfg.epochs, ckpt_every=1, finish=finish, unit="epoch")


def random_baseline(ctx: runner.RunContext, cfg: MIMSettings, data, grid=RANDOM_PROBE_GRID,
                    curves: bool = False) -> runner.JobResult:
    """The randomly initialised CNN (no BN, orthogonal init) with the probe grid of section 5.2.1:
    weight decay x batch size x learning rate, one logged row per configuration (resumable); with
    ``curves`` each row also holds the per-epoch accuracies as columns full_e<k> and first_e<k>."""
    job = "random-encoder" + ("-curves" if curves else "")
    cache: dict = {}

    def feats():
        if "f" not in cache:
            torch.manual_seed(ctx.job_seed(job))
            cache["f"] = features(new_encoder(cfg, data, False, ctx.device), data, cfg, ctx.device)
        return cache["f"]

    def step(i: int) -> dict:
        wd, bs, lr = grid[i]
        r = probe(cfg, feats(), data, lr=lr, batch_size=bs, weight_decay=wd, seed=ctx.job_seed(f"{job}-{i}"),
                  device=ctx.device, curves=curves)
        flat = {f"{name}_e{k}": v for name in ("full", "first") for k, v in enumerate(r.pop(f"curve_{name}", []))}
        return {"weight_decay": wd, "batch_size": bs, "lr": lr, **r, **flat}

    return ctx.loop(job, {}, step, len(grid), ckpt_every=1, unit="config")


def with_baseline(ctx: runner.RunContext, cfg: MIMSettings, data, jobs: dict) -> Optional[runner.JobResult]:
    """Runs the random encoder (when ``cfg.random_baseline``) and writes the run's metrics.csv with
    the encoder jobs {name: result} and it; returns the random encoder's result (or None)."""
    base = random_baseline(ctx, cfg, data) if cfg.random_baseline else None
    runner.write_metrics(ctx.run_dir / "metrics.csv", {**jobs, **({"random-encoder": base} if base else {})})
    return base


def best_probe(final: dict) -> dict:
    """The best probe of one encoder job, per protocol (each protocol maximised separately)."""
    ps = list(final["probes"].values())
    return {"first128_best": max(p["first128_best"] for p in ps), "full_test": max(p["full_test"] for p in ps)}


def baseline_summary(res: Optional[runner.JobResult], cfg: MIMSettings) -> Optional[dict]:
    """Per protocol: best and lowest accuracy over the random encoder's probe configurations, and the
    best over the configurations that match the MIM encoders' probe (weight decay 0, batch
    ``probe_batch``, a learning rate in ``probe_lrs``): the like-for-like comparison."""
    if res is None or not res.rows:
        return None
    same = [r for r in res.rows if r["weight_decay"] == 0 and r["batch_size"] == cfg.probe_batch
            and any(math.isclose(r["lr"], lr) for lr in cfg.probe_lrs)]
    out = {}
    for key in ("first128_best", "full_test"):
        vals = [r[key] for r in res.rows]
        out[key] = {"best": max(vals), "min": min(vals), "same_probe": max((r[key] for r in same), default=None)}
    return out


def pct(v: Optional[float]) -> str:
    return "-" if v is None or not math.isfinite(v) else f"{100 * v:.2f}"


REQUIRES = {"matplotlib": "its figures"}


def dataset_names(cfg) -> list:
    """The probe's dataset and the encoder's (STL-10's encoder also reads its unlabeled split)."""
    enc = _nb_mim_data.encoder_dataset(cfg.dataset)
    if cfg.dataset == "stl10":
        return [("stl10", ("train", "test", "unlabeled"))]
    return [cfg.dataset] + ([enc] if enc != cfg.dataset else [])


def load_data(cfg: MIMSettings, ctx: runner.RunContext):
    """The run's datasets (``_nb_mim_data.load``); the subsets are drawn from the run's seed."""
    gen = torch.Generator().manual_seed(ctx.seed)
    return _nb_mim_data.load(cfg.dataset, ctx.data_dir, n_train=cfg.n_train, n_test=cfg.n_test, generator=gen,
                             device=ctx.device)


def data_note(cfg: MIMSettings, data) -> list:
    """Differences from the paper implied by the dataset (for the table's list of differences)."""
    notes = []
    if cfg.dataset == "fashion-mnist":
        notes.append("dataset fashion-mnist (28x28 grey, zero-padded to 32x32, 1 input channel): a CPU stand-in "
                     "for CIFAR-10; the paper's numbers are CIFAR-10's")
    if cfg.dataset == "stl10":
        notes.append("stl10 probe: features of the resized (not randomly cropped) train images")
    if cfg.dataset == "cifar100":
        notes.append("cifar100: encoders trained on CIFAR-10; the best CIFAR-100 probe over them is reported "
                     "(paper: the encoder best on CIFAR-10)")
    return notes


def mim_channels_text(width: float) -> str:
    from ..models.neural_bayes_mim import MIM_CHANNELS, mim_channels

    return f"{'-'.join(map(str, mim_channels(width)))} (width {width:g}; paper: {'-'.join(map(str, MIM_CHANNELS))})"
