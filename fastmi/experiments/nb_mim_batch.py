"""Neural Bayes-MIM: the effect of the minibatch size MBS and the batch size BS (Arpit et al. App F.3,
Table 2; SPEC 1.5-1.6).

Gradients of MBS-sized minibatches are accumulated until BS samples are seen, then Adam steps. One
encoder per (MBS, BS) with BS >= MBS (the paper's N/A cells are BS < MBS), alpha = 2, beta = 4, the
rest as the ablation of Figure 2 (100 epochs, Adam 1e-3, probe lr 1e-3); every model sees the same
number of epochs. The table shows our grid beside the paper's (CIFAR-10, first 128 test images).
"""
from __future__ import annotations

import dataclasses
import sys

import numpy as np

from . import _claims_nb, _nb_mim_train as T
from . import runner
from . import settings as checks

NAME = "nb_mim_batch"
REQUIRES = T.REQUIRES
dataset_names = T.dataset_names
SUMMARY = "Neural Bayes Table 2: MIM encoder accuracy over the minibatch size MBS x accumulated batch size BS"

# Table 2 (CIFAR-10, first 128 test images); None: N/A in the paper (BS < MBS)
PAPER_TABLE2 = {50: {50: 40.62, 250: 42.97, 500: 41.41, 2000: 75.0, 3000: 78.91},
                100: {50: None, 250: 67.97, 500: 66.41, 2000: 78.12, 3000: 78.91},
                250: {50: None, 250: 76.56, 500: 78.91, 2000: 82.03, 3000: 84.38},
                500: {50: None, 250: None, 500: 82.03, 2000: 78.91, 3000: 79.69}}


@dataclasses.dataclass
class Config(T.MIMSettings):
    """Paper defaults (App F.3): MBS {50, 100, 250, 500} x BS {50, 250, 500, 2000, 3000}, alpha 2, beta 4."""
    alpha: float = 2.0
    beta: float = 4.0
    prior: str = "v2"
    pool: int = 2
    lr: float = 1e-3
    weight_decay: float = 0.0
    mbs_values: tuple = (50, 100, 250, 500)
    bs_values: tuple = (50, 250, 500, 2000, 3000)

    def validate(self):
        super().validate()
        checks.items(self, "mbs_values", lambda v: checks.is_int(v) and v >= 2, "ints >= 2")
        checks.items(self, "bs_values", checks.positive_ints, "positive ints")
        if not cells(self):
            raise checks.SettingError(f"bs_values must hold a value >= some of mbs_values, got mbs_values="
                                      f"{list(self.mbs_values)}, bs_values={list(self.bs_values)}")
        for mbs, bs in cells(self):
            T.EncoderRun.of(self, mbs=mbs, bs=bs)


QUICK = {"dataset": "fashion-mnist", "width": 0.1, "n_train": 2000, "n_test": 1000, "epochs": 5,
         "mbs_values": (50, 250), "bs_values": (250, 1000), "probe_epochs": 30}


def cells(cfg) -> list:
    """The (MBS, BS) pairs that run: BS >= MBS."""
    return [(m, b) for m in cfg.mbs_values for b in cfg.bs_values if b >= m]


def run(cfg: Config, ctx: runner.RunContext) -> dict:
    data = T.load_data(cfg, ctx)
    runs = {cell: T.train_encoder(ctx, cfg, data, T.EncoderRun.of(cfg, mbs=cell[0], bs=cell[1])) for cell in cells(cfg)}
    base = T.with_baseline(ctx, cfg, data, {f"mbs{m}-bs{b}": r for (m, b), r in runs.items()})
    grid = {f"{m}x{b}": {"mbs": m, "bs": b, **T.best_probe(r.final), "best_epoch": r.final["best_epoch"],
                         "opt_steps": r.final["opt_steps"]} for (m, b), r in runs.items()}
    random = T.baseline_summary(base, cfg)
    _plot(ctx.run_dir / "nb_mim_batch.png", cfg, grid, random)
    return {"dataset": cfg.dataset, "grid": grid, "random": random, "table": table(cfg, data, grid, random),
            "claims": _claims_nb.mim_batch(cfg, grid, bool(runner.differences(cfg)))}


def table(cfg: Config, data, grid: dict, random) -> str:
    lines = [f"Neural Bayes-MIM on {cfg.dataset}: probe accuracy (%) per MBS (rows) x BS (columns) (Table 2 layout); "
             "each cell: ours first 128 best epoch / ours full test set, last epoch [paper, CIFAR-10, first 128]",
             "MBS \\ BS".ljust(10) + "".join(f"{b:>26}" for b in cfg.bs_values)]
    for m in cfg.mbs_values:
        row = f"{m:<10}"
        for b in cfg.bs_values:
            p = PAPER_TABLE2.get(m, {}).get(b)
            ptxt = "" if b not in PAPER_TABLE2.get(m, {}) else f" [{p:.2f}]" if p is not None else " [N/A]"
            cell = grid.get(f"{m}x{b}")
            ours = "N/A" if cell is None else f"{T.pct(cell['first128_best'])} / {T.pct(cell['full_test'])}"
            row += f"{ours + ptxt:>26}"
        lines.append(row)
    if random:
        lines.append(f"random encoder (best of {len(T.RANDOM_PROBE_GRID)} probes): first 128 "
                     f"{T.pct(random['first128_best']['best'])}, full test {T.pct(random['full_test']['best'])} "
                     "(paper, CIFAR-10: 67.97); with the MIM probe's settings: "
                     f"{T.pct(random['first128_best']['same_probe'])} / {T.pct(random['full_test']['same_probe'])}")
    lines.append("BS not a multiple of MBS: the step comes after ceil(BS/MBS) minibatches (the authors' rule).")
    extra = T.data_note(cfg, data) + [f"encoder channels {T.mim_channels_text(cfg.width)}"] * (cfg.width != 1.0)
    lines.append(runner.differences_text(cfg, extra))
    return "\n".join(lines)


def _plot(path, cfg: Config, grid: dict, random) -> None:
    from . import plotting

    panels = [("ours, first 128 test images, best epoch", "first128_best"), ("ours, full test set, last epoch", "full_test")]
    fig, axes = plotting.grid(3, 3, size=(4.2, 3.4))
    mats = []
    for _, key in panels:
        mats.append(np.array([[100 * grid[f"{m}x{b}"][key] if f"{m}x{b}" in grid else np.nan for b in cfg.bs_values]
                              for m in cfg.mbs_values]))
    paper_bs = sorted({b for r in PAPER_TABLE2.values() for b in r})
    mats.append(np.array([[PAPER_TABLE2[m][b] if PAPER_TABLE2[m][b] is not None else np.nan for b in paper_bs]
                          for m in PAPER_TABLE2]))
    titles = [t for t, _ in panels] + ["paper, CIFAR-10, first 128"]
    cols = [cfg.bs_values, cfg.bs_values, paper_bs]
    rows = [cfg.mbs_values, cfg.mbs_values, list(PAPER_TABLE2)]
    for ax, mat, title, xs, ys in zip(axes, mats, titles, cols, rows):
        im = ax.imshow(mat, cmap="YlGn")
        for i in range(mat.shape[0]):
            for j in range(mat.shape[1]):
                ax.text(j, i, "N/A" if not np.isfinite(mat[i, j]) else f"{mat[i, j]:.1f}", ha="center", va="center",
                        fontsize=7, color="k")
        ax.set_xticks(range(len(xs)), xs, fontsize=7)
        ax.set_yticks(range(len(ys)), ys, fontsize=7)
        plotting.labels(ax, "BS (batch size)", "MBS (mini-batch size)")
        ax.set_title(f"{title}" + (f"\n({cfg.dataset})" if "ours" in title else ""), fontsize=8)
        fig.colorbar(im, ax=ax, fraction=0.046, label="probe test accuracy (%)")
        ax.grid(False)
    if random:
        axes[0].text(0.0, -0.32, f"random encoder: {T.pct(random['first128_best']['best'])}%", transform=axes[0].transAxes,
                     fontsize=7)
    plotting.save(fig, path)


if __name__ == "__main__":
    raise SystemExit(runner.main(sys.argv[1:], module=sys.modules[__name__]))
