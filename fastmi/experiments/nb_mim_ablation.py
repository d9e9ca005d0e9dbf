"""Neural Bayes-MIM ablation: alpha, beta, state scaling (Figure 2) and the v1 vs v2 prior (Figure 6)
(Arpit et al. section 5.2.1 and App F.2; SPEC 1.3, 1.6).

For each prior (v1, v2) and each scaling configuration (pool 0: the 4 post-ReLU states; pool 2: each
state and its 2x2 average pool, 8 states), 42 encoders: 32 with alpha ~ U[0, 10], beta ~ U[0, 5];
5 with alpha = 0, beta ~ U[0, 5]; 5 with beta = 0, alpha ~ U[0, 10]. MBS 500, BS 2000, 100 epochs,
Adam 1e-3, weight decay 0; a 200-unit probe (Adam 1e-3, batch 128, 100 epochs) on the frozen
features. The (alpha, beta) draws come from the run's seed and are shared by the configurations
(a paired comparison). Figures: accuracy against alpha and beta per scaling (Figure 2, v2) and per
prior (Figure 6), with the random-encoder baseline.
"""
from __future__ import annotations

import dataclasses
import sys

import numpy as np
import torch

from . import _claims_nb, _nb_mim_train as T
from . import runner
from . import settings as checks

NAME = "nb_mim_ablation"
REQUIRES = T.REQUIRES
dataset_names = T.dataset_names
SUMMARY = "Neural Bayes Figures 2 and 6: MIM accuracy over random alpha / beta draws, 4 vs 8 states, prior v1 vs v2"

PAPER = {"best": 83.59, "random": 67.97, "random_min": 58.59}   # CIFAR-10, first 128 test images (section 5.2.1)


@dataclasses.dataclass
class Config(T.DrawnSettings):
    """Paper defaults (section 5.2.1): 42 runs per configuration, MBS 500, BS 2000."""
    priors: tuple = ("v1", "v2")
    pools: tuple = (0, 2)

    def validate(self):
        super().validate()
        checks.items(self, "priors", lambda p: p in ("v1", "v2"), "'v1' / 'v2'")
        checks.items(self, "pools", lambda p: checks.is_int(p) and p >= 0, "ints >= 0 (0: 4 states, 2: 8 states)")
        T.EncoderRun.of(self, alpha=0.0, beta=0.0, prior=self.priors[0], pool=self.pools[0])


QUICK = {"dataset": "fashion-mnist", "width": 0.1, "n_train": 2000, "n_test": 1000, "epochs": 3, "mbs": 250,
         "bs": 500, "n_random": 2, "n_alpha0": 1, "n_beta0": 1, "probe_epochs": 30}


def draws(cfg: Config, seed: int) -> list:
    """The (alpha, beta) pairs: n_random free draws, then n_alpha0 with alpha = 0, then n_beta0 with beta = 0."""
    g = torch.Generator().manual_seed(seed)
    u = lambda hi: float(torch.rand((), generator=g)) * hi  # noqa: E731
    out = [(u(cfg.alpha_max), u(cfg.beta_max)) for _ in range(cfg.n_random)]
    out += [(0.0, u(cfg.beta_max)) for _ in range(cfg.n_alpha0)]
    out += [(u(cfg.alpha_max), 0.0) for _ in range(cfg.n_beta0)]
    return [(round(a, 4), round(b, 4)) for a, b in out]


def run(cfg: Config, ctx: runner.RunContext) -> dict:
    data = T.load_data(cfg, ctx)
    pairs = draws(cfg, ctx.seed)
    runs = {}
    for prior in cfg.priors:
        for pool in cfg.pools:
            for alpha, beta in pairs:
                enc = T.EncoderRun.of(cfg, alpha=alpha, beta=beta, prior=prior, pool=pool)
                runs[enc] = T.train_encoder(ctx, cfg, data, enc)
    base = T.with_baseline(ctx, cfg, data, {enc.name(): r for enc, r in runs.items()})
    points = [{"prior": e.prior, "pool": e.pool, "alpha": e.alpha, "beta": e.beta, **T.best_probe(r.final),
               "best_epoch": r.final["best_epoch"]} for e, r in runs.items()]
    summary = summarize(cfg, points)
    random = T.baseline_summary(base, cfg)
    _plot(ctx.run_dir, cfg, points, random)
    return {"dataset": cfg.dataset, "draws": pairs, "points": points, "summary": summary, "random": random,
            "table": table(cfg, data, summary, random, len(pairs)),
            "claims": _claims_nb.mim_ablation(cfg, summary, bool(runner.differences(cfg)))}


def summarize(cfg: Config, points: list) -> dict:
    """Mean and best accuracy (both protocols) per (prior, pool), and over the alpha = 0 / beta = 0 runs."""
    out = {}
    for prior in cfg.priors:
        for pool in cfg.pools:
            pts = [p for p in points if p["prior"] == prior and p["pool"] == pool]
            s = {}
            for key in ("first128_best", "full_test"):
                v = np.array([p[key] for p in pts])
                a0 = [p[key] for p in pts if p["alpha"] == 0]
                b0 = [p[key] for p in pts if p["beta"] == 0]
                s[key] = {"mean": float(v.mean()), "best": float(v.max()),
                          "mean_alpha0": float(np.mean(a0)) if a0 else None,
                          "mean_beta0": float(np.mean(b0)) if b0 else None}
            out[f"{prior}-pool{pool}"] = s
    return out


def _states(pool: int) -> str:
    return f"{8 if pool else 4} states" + (f" (pool {pool})" if pool else " (no pooling)")


def table(cfg: Config, data, summary: dict, random, n_runs: int) -> str:
    lines = [f"Neural Bayes-MIM ablation on {cfg.dataset}: {n_runs} (alpha, beta) draws per configuration; probe "
             "accuracy (%), first 128 test images best epoch / full test set last epoch",
             f"{'prior, states':<28}{'mean':>18}{'best':>18}{'mean alpha=0':>18}{'mean beta=0':>18}"]
    for prior in cfg.priors:
        for pool in cfg.pools:
            s = summary[f"{prior}-pool{pool}"]
            cell = lambda k: f"{T.pct(s['first128_best'][k])} / {T.pct(s['full_test'][k])}"  # noqa: E731
            lines.append(f"{prior + ', ' + _states(pool):<28}{cell('mean'):>18}{cell('best'):>18}"
                         f"{cell('mean_alpha0'):>18}{cell('mean_beta0'):>18}")
    if random:
        lines.append(f"{'random encoder (16 probes)':<28}{'':>18}"
                     f"{T.pct(random['first128_best']['best']) + ' / ' + T.pct(random['full_test']['best']):>18}")
        same = T.pct(random['first128_best']['same_probe']) + " / " + T.pct(random['full_test']['same_probe'])
        lines.append(f"{'random, the MIM probe':<28}{'':>18}{same:>18}")
    lines.append(f"paper (CIFAR-10, v2, first 128): best {PAPER['best']:.2f}; random encoder {PAPER['random']:.2f} "
                 f"(range {PAPER['random_min']:.2f}-{PAPER['random']:.2f}); 8 states beat 4 on average and at best; "
                 "alpha = beta = 0 is worst; v2 beats v1 (Figure 6)")
    extra = T.data_note(cfg, data) + [f"encoder channels {T.mim_channels_text(cfg.width)}"] * (cfg.width != 1.0)
    lines.append(runner.differences_text(cfg, extra))
    return "\n".join(lines)


def _scatter(axes, groups, random, key, title):
    """Accuracy against alpha (axes[0]) and beta (axes[1]), one colour per group, dotted group means."""
    colors = ["tab:green", "tab:blue", "tab:orange", "tab:red", "tab:purple", "tab:brown"]
    for ax, param in zip(axes, ("alpha", "beta")):
        for (label, pts), c in zip(groups.items(), colors):
            if not pts:
                continue
            acc = 100 * np.array([p[key] for p in pts])
            ax.scatter([p[param] for p in pts], acc, c=c, s=14, label=label)
            ax.axhline(acc.mean(), color=c, ls=":", lw=1)
        if random:
            ax.axhline(100 * random[key]["best"], color="k", ls=":", lw=1, label="random encoder")
        ax.set_xlabel(param)
        ax.set_ylabel("probe test accuracy (%)")
        ax.set_title(title, fontsize=8)
    axes[0].legend(fontsize=6)


def _plot(run_dir, cfg: Config, points: list, random) -> None:
    from . import plotting

    protocols = (("first128_best", "first 128 test images, best epoch"), ("full_test", "full test set, last epoch"))
    prior = "v2" if "v2" in cfg.priors else cfg.priors[0]
    fig, axes = plotting.grid(4, 2, size=(4.2, 3.2))
    groups = {_states(pool): [p for p in points if p["prior"] == prior and p["pool"] == pool] for pool in cfg.pools}
    for i, (key, name) in enumerate(protocols):
        _scatter(axes[2 * i: 2 * i + 2], groups, random, key, f"Figure 2 ({prior}, {cfg.dataset}): {name}")
    plotting.save(fig, run_dir / "nb_mim_ablation_fig2.png")
    if len(cfg.priors) > 1:
        fig, axes = plotting.grid(4, 2, size=(4.2, 3.2))
        groups = {f"MIM-{pr}": [p for p in points if p["prior"] == pr] for pr in cfg.priors}
        for i, (key, name) in enumerate(protocols):
            _scatter(axes[2 * i: 2 * i + 2], groups, random, key, f"Figure 6 ({cfg.dataset}): {name}")
        plotting.save(fig, run_dir / "nb_mim_ablation_fig6.png")


if __name__ == "__main__":
    raise SystemExit(runner.main(sys.argv[1:], module=sys.modules[__name__]))
