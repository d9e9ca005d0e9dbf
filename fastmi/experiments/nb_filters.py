"""Neural Bayes App F.3 / Figures 3-4: first-layer filters of an MLP trained with Neural Bayes-MIM.

The network is MIM_MNIST_filter.ipynb's 784-500-500-100 MLP with BatchNorm (``FilterMLP``); images in
[-1, 1] (mean = std = 0.5). The MIM loss is applied to its three pre-BN linear outputs (SPEC 1.4):

    loss = (1/3) sum_{s in fc1, fc2, fc3} [ ent(s) + (1 + alpha) R_p(s) ] + beta R_c

with the v2 prior R_p (SPEC 1.3), no pooled scales (the states are B x C), and R_c on the output
ReLU(BN(fc3)) (both passes in training mode, the clean pass shared with the MIM term). Adam 1e-3,
batch 500 (a fresh random batch per step, ceil(N / 500) steps per epoch), 50 epochs, for
(alpha, beta) in {(0, 4), (4, 0), (4, 4)}. The paper: alpha > 0 prevents dead filters, beta > 0
prevents filters that memorise input samples.

Dead filter (our definition, stated since the paper gives none): first-layer unit k is dead when it
never wins its state, i.e. argmax_c softmax(fc1(x))_c != k for every test image x: the discrete
latent z never takes the value k, which is what the uniform prior (alpha) is there to prevent
(Eq 8-9: all states of z should activate). The table also gives the median relative change of the
dead and of the live filters, ||w_k - w_k(init)|| / ||w_k(init)||, to show whether dead filters are
the untrained noise of Figures 3-4.

Sanity value (SPEC 1.3): at a minimum with one-hot states (ent = 0) and uniform marginals E = 1/C,
R_p(C) = log C + (C - 1) log(C / (C - 1)), so for C = 500, 500, 100 and alpha = 4 the loss is
5 (2 R_p(500) + R_p(100)) / 3 = 33.38 (``uniform_minimum``); the notebook's 35.36 is its loss after
50 epochs, above that minimum by the conditional entropy left in the states.
"""
from __future__ import annotations

import dataclasses
import math
import sys

import numpy as np
import torch

from .. import functional as F
from ..data import load_idx_dataset
from ..models import FilterMLP
from . import _claims_nb, plotting, runner
from . import settings as checks

NAME = "nb_filters"
REQUIRES = {"matplotlib": "its figures"}
SUMMARY = "Neural Bayes Figs 3-4: first-layer filters of the MIM-trained 784-500-500-100 MLP, dead-filter fraction"
PAPER_NOTEBOOK_LOSS = 35.356   # MIM_MNIST_filter.ipynb, alpha = beta = 4, epoch 50 (training loss without R_c)
PAPER_DEAD = {(0.0, 4.0): "majority dead", (4.0, 0.0): "not dead; memorise inputs", (4.0, 4.0): "not dead; parts"}


@dataclasses.dataclass
class NetSettings:
    """The filter MLP and its training (App F.3, MIM_MNIST_filter.ipynb), shared with nb_filters_v1."""
    dataset: str = "auto"              # mnist when its idx files are found, else fashion-mnist
    hidden: tuple = (500, 500)
    dim_out: int = 100
    lr: float = 1e-3
    batch: int = 500
    epochs: int = 50
    n_train: int = 0                   # 0: the whole training set
    n_test: int = 0                    # 0: the whole test set
    n_show: int = runner.runner_field(100)        # filters drawn per trained network

    def paper_value(self, name, value):
        return runner.whole_split_paper_value(name, value, "MNIST")

    def validate(self):
        checks.one_of(self, "dataset", ("auto", "mnist", "fashion-mnist"))
        checks.items(self, "hidden", checks.positive_ints, "positive ints")
        checks.int_at_least(self, 2, "batch", "dim_out")
        checks.int_at_least(self, 1, "epochs", "n_show")
        checks.int_at_least(self, 0, "n_train", "n_test")
        checks.positive(self, "lr")


@dataclasses.dataclass
class Config(NetSettings):
    """Paper defaults (App F.3, MIM_MNIST_filter.ipynb): MIM-v2 at three (alpha, beta)."""
    settings: tuple = runner.subset_field(((0.0, 4.0), (4.0, 0.0), (4.0, 4.0)))   # (alpha, beta)
    prior: str = "v2"

    def validate(self):
        super().validate()
        checks.items(self, "settings", lambda s: len(s) == 2 and all(checks.is_number(v) and v >= 0 for v in s),
                     "(alpha, beta) pairs of numbers >= 0, e.g. [[0,4],[4,4]]")
        checks.one_of(self, "prior", ("v1", "v2"))


QUICK = {"epochs": 5, "n_train": 20000}


def prior_value(c: int) -> float:
    """R_p^v2 at a uniform marginal E = 1/C: log C + (C - 1) log(C / (C - 1))."""
    return math.log(c) + (c - 1) * math.log(c / (c - 1))


def uniform_minimum(widths, alpha: float) -> float:
    """The MIM loss (mean over states of ent + (1 + alpha) R_p) at one-hot states with uniform marginals."""
    return (1.0 + alpha) * sum(prior_value(c) for c in widths) / len(widths)


def dataset_names(cfg) -> list:
    return [cfg.dataset]


def resolve_dataset(name: str, data_dir) -> tuple[str, str]:
    """('mnist' or 'fashion-mnist', a note) for dataset='auto' (MNIST when found), else the name itself."""
    if name != "auto":
        return name, ""
    from ..data import mnist_or_fashion

    return mnist_or_fashion(data_dir)


def load_flat(dataset: str, split: str, data_dir, n: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Images as N x 784 floats in [-1, 1] (ToTensor + Normalize(0.5, 0.5)) and labels; first n if n > 0."""
    images, labels = load_idx_dataset(dataset, split, data_dir)
    if n:
        images, labels = images[:n], labels[:n]
    return (images.reshape(images.shape[0], -1).float() / 255.0 - 0.5) / 0.5, labels


def dead_filters(model: FilterMLP, x: torch.Tensor, init: torch.Tensor = None, batch: int = 2000) -> dict:
    """Dead first-layer units: never the argmax of softmax(fc1(x)) over ``x``. Returns the fraction, the
    mask and, given the initial weights ``init``, the median relative change of the dead and live filters."""
    with torch.no_grad():
        fc1 = model.fcs[0]
        wins = torch.zeros(fc1.out_features, dtype=torch.bool)
        for i in range(0, x.shape[0], batch):
            wins[fc1(x[i:i + batch]).argmax(1).cpu()] = True
        out = {"dead": float((~wins).float().mean()), "dead_mask": ~wins}
        if init is not None:
            w = fc1.weight.detach().cpu()
            change = (w - init).norm(dim=1) / init.norm(dim=1)
            med = lambda m: float(change[m].median()) if bool(m.any()) else math.nan  # noqa: E731
            out.update(change_dead=med(~wins), change_live=med(wins))
    return out


def train(ctx: runner.RunContext, cfg: Config, alpha: float, beta: float, data, job: str = None) -> runner.JobResult:
    """One MLP trained with MIM-``cfg.prior`` at (alpha, beta); ``job`` names it (default alpha..-beta..)."""
    job = job or f"alpha{alpha:g}-beta{beta:g}"
    seed = ctx.job_seed(job)
    torch.manual_seed(seed)
    model = FilterMLP(data["x"].shape[1], tuple(cfg.hidden), cfg.dim_out).to(ctx.device)
    init = model.filters.detach().cpu().clone()   # the same on --resume (same seed) as in the first session
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    gen = torch.Generator().manual_seed(seed)
    x_all = data["x"]
    n = x_all.shape[0]
    batch = min(cfg.batch, n)
    steps = math.ceil(n / batch)

    def epoch(_):
        sums = {"loss": 0.0, "entropy": 0.0, "prior": 0.0, "rc": 0.0}
        model.train()
        for _ in range(steps):
            x = x_all[torch.randperm(n, generator=gen)[:batch]].to(ctx.device)   # next(iter(shuffled loader))
            states, out = model(x)
            mim = F.nb_mim(states, alpha=alpha, prior=cfg.prior, backend=ctx.backend)
            loss = mim.loss
            if beta > 0:
                x_tilde, zeta = F.perturb_in_span(x, generator=gen, backend=ctx.backend)
                rc = F.fd_smoothness(out, model(x_tilde)[1], zeta, backend=ctx.backend)
                loss = loss + beta * rc
                sums["rc"] += rc.item()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sums["loss"] += mim.loss.item()
            sums["entropy"] += mim.entropy.mean().item()
            sums["prior"] += mim.prior.mean().item()
        return {k: v / steps for k, v in sums.items()}

    def finish():
        model.eval()
        d = dead_filters(model, data["x_test"].to(ctx.device), init)
        return {**d, "filters": model.filters.detach().cpu()}

    return ctx.loop(job, {"model": model, "opt": opt, "gen": gen}, epoch, cfg.epochs, ckpt_every=1, finish=finish,
                    unit="epoch")


def mosaic(filters: np.ndarray, n: int, side: int = 28, cols: int = 10) -> np.ndarray:
    """The first n filters as a grid of side x side tiles (1-pixel NaN borders)."""
    n = min(n, filters.shape[0])
    rows = math.ceil(n / cols)
    out = np.full((rows * (side + 1) + 1, cols * (side + 1) + 1), np.nan)
    for i in range(n):
        r, c = divmod(i, cols)
        out[1 + r * (side + 1): 1 + r * (side + 1) + side, 1 + c * (side + 1): 1 + c * (side + 1) + side] = \
            filters[i].reshape(side, side)
    return out


def draw_filters(ax, res: runner.JobResult, n_show: int, title: str) -> None:
    """The first ``n_show`` first-layer filters of one trained MLP on the notebook's grey scale
    (0.5 x the weights' min..max), untrained gaps white."""
    w = np.asarray(res.final["filters"], dtype=np.float64)
    cmap = plotting.pyplot().cm.gray.with_extremes(bad="white")
    ax.imshow(mosaic(w, n_show), cmap=cmap, vmin=0.5 * w.min(), vmax=0.5 * w.max(), interpolation="nearest")
    ax.set_title(title, fontsize=9)
    ax.set_xticks([])
    ax.set_yticks([])
    plotting.labels(ax, "filters, 28 x 28 pixels each (grey: weight, scale 0.5 x min..max)", "filters")
    ax.grid(False)


def plot(path, cfg: Config, runs: dict, dataset: str) -> None:
    """Figures 3-4: the first ``n_show`` filters per setting."""
    fig, axes = plotting.grid(len(runs), len(runs), size=(4.6, 5.0))
    for ax, ((alpha, beta), res) in zip(axes, runs.items()):
        draw_filters(ax, res, cfg.n_show, f"alpha={alpha:g}, beta={beta:g}: dead {100 * res.final['dead']:.0f}%")
    fig.suptitle(f"First-layer filters, Neural Bayes-MIM ({cfg.prior}), {dataset}")
    plotting.save(fig, path)


def table(cfg: Config, summary: dict, dataset: str, note: str) -> str:
    widths = (*cfg.hidden, cfg.dim_out)
    lines = [f"nb_filters (Neural Bayes Figs 3-4, App F.3): {dataset}, MLP 784-{'-'.join(map(str, widths))}, "
             f"MIM-{cfg.prior} on the pre-BN states, {cfg.epochs} epochs",
             f"{'alpha':>6}{'beta':>6}{'dead (never wins)':>19}{'change dead/live':>18}{'MIM loss':>10}"
             f"{'entropy':>9}{'prior':>8}{'R_c':>9}   paper"]
    for (a, b), s in summary.items():
        change = f"{s['change_dead']:.2f} / {s['change_live']:.2f}"
        lines.append(f"{a:>6g}{b:>6g}{100 * s['dead']:>18.1f}%{change:>18}{s['loss']:>10.3f}"
                     f"{s['entropy']:>9.3f}{s['prior']:>8.3f}{s['rc']:>9.4f}   {PAPER_DEAD.get((a, b), '-')}")
    lines.append(f"Loss at a one-hot, uniform-marginal minimum (alpha=4): {uniform_minimum(widths, 4.0):.3f}; "
                 f"the notebook's final training loss (alpha=beta=4, MNIST, 50 epochs): {PAPER_NOTEBOOK_LOSS}.")
    lines.append("dead = first-layer unit that is never the argmax of softmax(fc1(x)) on the test set; change = "
                 "median ||w - w_init|| / ||w_init|| of the dead / live filters.")
    return runner.finish_table(lines, note, cfg)


def run(cfg: Config, ctx: runner.RunContext) -> dict:
    dataset, note = resolve_dataset(cfg.dataset, ctx.data_dir)
    x, _ = load_flat(dataset, "train", ctx.data_dir, cfg.n_train)
    x_test, _ = load_flat(dataset, "test", ctx.data_dir, cfg.n_test)
    data = {"x": x, "x_test": x_test}
    runs, summary = {}, {}
    for alpha, beta in cfg.settings:
        key = (float(alpha), float(beta))
        res = train(ctx, cfg, *key, data)
        runs[key] = res
        last = res.rows[-1]
        summary[key] = {"dead": res.final["dead"], "change_dead": res.final["change_dead"],
                        "change_live": res.final["change_live"], "loss": last["loss"],
                        "entropy": last["entropy"], "prior": last["prior"], "rc": last["rc"]}
    runner.write_metrics(ctx.run_dir / "metrics.csv", {f"alpha{a:g}-beta{b:g}": r for (a, b), r in runs.items()})
    plot(ctx.run_dir / "nb_filters.png", cfg, runs, dataset)
    widths = (*cfg.hidden, cfg.dim_out)
    return {"dataset": dataset, "uniform_minimum_alpha4": uniform_minimum(widths, 4.0),
            "settings": {f"alpha={a:g},beta={b:g}": s for (a, b), s in summary.items()},
            "table": table(cfg, summary, dataset, note), "claims": _claims_nb.filters(cfg, summary, bool(runner.differences(cfg)))}


if __name__ == "__main__":
    raise SystemExit(runner.main(sys.argv[1:], module=sys.modules[__name__]))
