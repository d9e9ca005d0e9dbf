"""Neural Bayes App F.2 / Figure 3 next to Figure 4 (bottom): first-layer filters of MIM-v1 vs MIM-v2.

The same 784-500-500-100 BatchNorm MLP and training as ``nb_filters`` (App F.3: Adam 1e-3, batch 500,
50 epochs, the MIM loss on the three pre-BN linear outputs plus beta R_c), trained once per prior at
alpha = beta = 4. The two priors differ only in the uniform-prior term on the batch marginal
E_k = E_x[L_k(x)] of each state (SPEC 1.3):

    v1 (Eq 8):  R_p = sum_k E_k log E_k                       (minus the marginal's entropy)
    v2 (Eq 9):  R_p = -sum_k [ (1/K) log E_k + ((K-1)/K) log(1 - E_k) ]   (cross-entropy form)

Paper (App F.2): with v1 "most filters are dead" (Figure 3); with v2 at alpha = beta = 4 they are not
(Figure 4, bottom): v1's gradient vanishes as a marginal collapses onto one state (E_k -> 1), v2's
grows without bound. "Dead" is nb_filters' definition: a first-layer unit that is never the argmax of
softmax(fc1(x)) over the test set.
"""
from __future__ import annotations

import dataclasses
import sys
import types

from . import claims, nb_filters, plotting, runner
from . import settings as checks

NAME = "nb_filters_v1"
REQUIRES = nb_filters.REQUIRES
SUMMARY = "Neural Bayes Fig 3 vs Fig 4: first-layer filters of MIM-v1 vs MIM-v2 (alpha=beta=4), dead-filter fraction"
PAPER = {"v1": "most filters dead (Fig 3)", "v2": "not dead; parts (Fig 4, bottom)"}
dataset_names = nb_filters.dataset_names


@dataclasses.dataclass
class Config(nb_filters.NetSettings):
    """Paper defaults (App F.2-F.3; the network and optimiser of MIM_MNIST_filter.ipynb): v1 and v2 at
    alpha = beta = 4."""
    priors: tuple = runner.subset_field(("v1", "v2"))
    alpha: float = 4.0
    beta: float = 4.0

    def validate(self):
        super().validate()
        checks.items(self, "priors", lambda p: p in ("v1", "v2"), "priors among v1, v2")
        checks.non_negative(self, "alpha", "beta")


QUICK = {"epochs": 5, "n_train": 20000}


def plot(path, cfg: Config, runs: dict, dataset: str) -> None:
    """Figure 3 beside Figure 4 (bottom): the first ``n_show`` filters of each prior."""
    fig, axes = plotting.grid(len(runs), len(runs), size=(4.6, 5.0))
    for ax, (prior, res) in zip(axes, runs.items()):
        dead = f"dead {100 * res.final['dead']:.0f}%"
        nb_filters.draw_filters(ax, res, cfg.n_show, f"MIM-{prior}: {dead} ({PAPER[prior]})")
    fig.suptitle(f"alpha={cfg.alpha:g}, beta={cfg.beta:g}, {dataset}, {cfg.epochs} epochs")
    plotting.save(fig, path)


def table(cfg: Config, summary: dict, dataset: str, note: str) -> str:
    widths = (*cfg.hidden, cfg.dim_out)
    lines = [f"nb_filters_v1 (Neural Bayes Fig 3 vs Fig 4, App F.2): {dataset}, MLP 784-{'-'.join(map(str, widths))}, "
             f"alpha={cfg.alpha:g}, beta={cfg.beta:g}, {cfg.epochs} epochs",
             f"{'prior':>6}{'dead (never wins)':>19}{'change dead/live':>18}{'MIM loss':>10}{'entropy':>9}"
             f"{'prior term':>11}   paper"]
    for prior, s in summary.items():
        change = f"{s['change_dead']:.2f} / {s['change_live']:.2f}"
        lines.append(f"{prior:>6}{100 * s['dead']:>18.1f}%{change:>18}{s['loss']:>10.3f}{s['entropy']:>9.3f}"
                     f"{s['prior']:>11.3f}   {PAPER[prior]}")
    lines.append("dead = first-layer unit that is never the argmax of softmax(fc1(x)) on the test set; change = "
                 "median ||w - w_init|| / ||w_init|| of the dead / live filters. The MIM losses of v1 and v2 are on "
                 "different scales (different prior terms).")
    return runner.finish_table(lines, note, cfg)


def claim_of(summary: dict, cfg: Config, quick: bool) -> list:
    """v1 leaves most filters dead (> 50%) and v2 fewer than v1 (needs both priors in the run)."""
    if not {"v1", "v2"} <= set(summary):
        return []
    d1, d2 = summary["v1"]["dead"], summary["v2"]["dead"]
    measured = f"dead filters: v1 {100 * d1:.1f}%, v2 {100 * d2:.1f}% after {cfg.epochs} epochs"
    held = d1 > 0.5 and d2 < d1
    return [claims.claim("MIM-v1 leaves most first-layer filters dead, MIM-v2 (alpha=beta=4) does not (App F.2, "
                         "Figs 3-4)", measured, held,
                         shown_by="fastmi run nb_filters_v1 (50 epochs, the whole set)" if quick or not held else None
                         ).as_dict()]


def run(cfg: Config, ctx: runner.RunContext) -> dict:
    dataset, note = nb_filters.resolve_dataset(cfg.dataset, ctx.data_dir)
    x, _ = nb_filters.load_flat(dataset, "train", ctx.data_dir, cfg.n_train)
    x_test, _ = nb_filters.load_flat(dataset, "test", ctx.data_dir, cfg.n_test)
    data = {"x": x, "x_test": x_test}
    runs, summary = {}, {}
    for prior in cfg.priors:
        job_cfg = types.SimpleNamespace(**dataclasses.asdict(cfg), prior=prior)
        res = nb_filters.train(ctx, job_cfg, float(cfg.alpha), float(cfg.beta), data,
                               job=f"{prior}-alpha{cfg.alpha:g}-beta{cfg.beta:g}")
        runs[prior] = res
        last = res.rows[-1]
        summary[prior] = {"dead": res.final["dead"], "change_dead": res.final["change_dead"],
                          "change_live": res.final["change_live"], "loss": last["loss"],
                          "entropy": last["entropy"], "prior": last["prior"], "rc": last["rc"]}
    runner.write_metrics(ctx.run_dir / "metrics.csv", {f"{p}-alpha{cfg.alpha:g}-beta{cfg.beta:g}": r
                                                        for p, r in runs.items()})
    plot(ctx.run_dir / "nb_filters_v1.png", cfg, runs, dataset)
    return {"dataset": dataset, "priors": summary, "table": table(cfg, summary, dataset, note),
            "claims": claim_of(summary, cfg, ctx.quick)}


if __name__ == "__main__":
    raise SystemExit(runner.main(sys.argv[1:], module=sys.modules[__name__]))
