"""Whether Neural Bayes' (Arpit et al.) qualitative claims showed up in a run, decided from its results:

- nb_dms_2d: every manifold optimally labelled (Fig 1): held when every dataset's mean ARI >= 0.99;
- nb_filters: without the entropy term (alpha = 0) most first-layer units are dead, with it few
  (Figs 3-4): held when dead(alpha=0) > 0.5 > dead(alpha>0) for every such setting;
- nb_dms_images: the DMS-CNN's probe beats a random CNN's (App C): held when the gap (full test
  set) >= 5 points;
- nb_mim: the MIM encoder's probe beats the random encoder's (Table 1): held when the gap between
  the best MIM run and the best of the random encoder's 16 probes (first 128, best epoch, the
  paper's protocol) >= 5 points (the paper's gap: 14.8);
- nb_mim_batch: a larger MBS is better at a given BS (Table 2): held when, at every BS with two or
  more MBS, the largest MBS's full-test accuracy exceeds the smallest's by >= 1 point;
- nb_mim_ablation: 8 states beat 4 on average, and v2 beats v1 (Figs 2, 6): held when each mean
  (full test) is higher by >= 1 point.

``scaled``: the run's settings differ from the paper's (``runner.differences``); a claim such a run
did not show names the preset that would (its time when measured). At the paper's settings a claim
that did not show up names nothing.
"""
from __future__ import annotations

import math

import numpy as np

from .claims import claim

NOT_MEASURED = "not measured"


def _pct(v):
    return "-" if v is None or not math.isfinite(v) else f"{100 * v:.2f}"


def _preset(held: bool, scaled: bool, command: str):
    """``shown_by`` of a claim: None when it held or the run was at the paper's settings, else the
    preset that shows it ("(... ; not measured)": its time was not measured)."""
    return None if held or not scaled else command[:-1] + f"; {NOT_MEASURED})"


def _done(items) -> list:
    return [c.as_dict() for c in items]


def dms_2d(cfg, results: dict, scaled: bool) -> list:
    means = {d: float(np.mean(r["ari"])) for d, r in results.items()}
    held = all(m >= 0.99 for m in means.values())
    shown = None if held or not scaled else f"fastmi run nb_dms_2d (the paper's settings; {NOT_MEASURED})"
    return _done([claim("DMS labels every 2-D manifold optimally (Fig 1)",
                        "mean ARI " + ", ".join(f"{d} {m:.3f}" for d, m in means.items()) + " (held: all >= 0.99)",
                        held, shown)])


def filters(cfg, summary: dict, scaled: bool) -> list:
    no_entropy = {k: s["dead"] for k, s in summary.items() if k[0] == 0}
    with_entropy = {k: s["dead"] for k, s in summary.items() if k[0] > 0}
    if not no_entropy or not with_entropy:
        return []
    held = all(v > 0.5 for v in no_entropy.values()) and all(v < 0.5 for v in with_entropy.values())
    text = ", ".join(f"alpha={a:g} beta={b:g}: {100 * s['dead']:.1f}%" for (a, b), s in summary.items())
    return _done([claim("without the entropy term (alpha = 0) most first-layer units die; with it few do (Figs 3-4)",
                        f"dead units {text} (held: > 50% at alpha = 0, < 50% otherwise)", held,
                        _preset(held, scaled, "fastmi run nb_filters (the paper's settings)"))])


def _beats_random(paper: str, where: str, ours: tuple, random: tuple, preset: str, scaled: bool) -> list:
    """The claim that a probe on the trained encoder beats one on a random encoder: held at a gap of
    >= 5 points. ``ours`` and ``random`` are (name, accuracy in [0, 1])."""
    gap = 100 * (ours[1] - random[1])
    held = gap >= 5
    return _done([claim(paper, f"{where}: {ours[0]} {_pct(ours[1])}%, {random[0]} {_pct(random[1])}%, gap {gap:.1f} "
                               "points (held: >= 5)", held, _preset(held, scaled, preset))])


def dms_images(cfg, probes: dict, scaled: bool) -> list:
    return _beats_random("a linear probe on the DMS-CNN's outputs beats one on a random CNN's (App C; paper, MNIST: "
                         "99.22% vs 42.97%)", "full test set", ("DMS-CNN", probes["dms"]["test_acc"]),
                         ("random CNN", probes["random"]["test_acc"]),
                         "fastmi run nb_dms_images (the paper's settings)", scaled)


def mim(cfg, summary: dict, scaled: bool) -> list:
    rnd = summary.get("random")
    if not rnd:
        return []
    return _beats_random("the MIM encoder's linear probe beats a random encoder's (Table 1; paper, CIFAR-10: 82.81% "
                         "vs 67.97%)", "first 128 test images, best epoch", ("MIM", summary["mim"]["first128_best"]),
                         ("random (best of its probe grid)", rnd["first128_best"]["best"]),
                         "fastmi run nb_mim --data-dir DIR (CIFAR-10, the paper's settings: a GPU)", scaled)


def mim_batch(cfg, grid: dict, scaled: bool) -> list:
    diffs = []
    for b in cfg.bs_values:
        cells = sorted((c["mbs"], c["full_test"]) for c in grid.values() if c["bs"] == b)
        if len(cells) >= 2:
            diffs.append((b, cells[0][0], cells[-1][0], 100 * (cells[-1][1] - cells[0][1])))
    if not diffs:
        return []
    held = all(d >= 1 for *_, d in diffs)
    return _done([claim("a larger MBS gives a better encoder at the same BS (Table 2; paper, CIFAR-10, BS 250: "
                        "MBS 50 42.97% vs MBS 250 76.56%)",
                        "full test set, largest minus smallest MBS: " + ", ".join(
                            f"BS {b}: MBS {lo} -> {hi} {d:+.1f} points" for b, lo, hi, d in diffs)
                        + " (held: each >= +1)", held,
                        _preset(held, scaled, "fastmi run nb_mim_batch --data-dir DIR (CIFAR-10, the paper's "
                                              "settings: a GPU)"))])


def mim_ablation(cfg, summary: dict, scaled: bool) -> list:
    shown = f"fastmi run nb_mim_ablation --data-dir DIR (CIFAR-10, the paper's settings: a GPU; {NOT_MEASURED})"
    mean = {k: s["full_test"]["mean"] for k, s in summary.items()}
    out = []
    pools = sorted({int(k.split("pool")[1]) for k in mean})
    if len(pools) >= 2:
        pairs = [(p, mean[f"{p}-pool{pools[0]}"], mean[f"{p}-pool{pools[-1]}"]) for p in cfg.priors]
        held = all(100 * (hi - lo) >= 1 for _, lo, hi in pairs)
        out.append(claim("8 states (pooling) beat 4 on average (Fig 2)",
                         "mean full-test accuracy 4 -> 8 states: " + ", ".join(
                             f"{p} {_pct(lo)} -> {_pct(hi)}%" for p, lo, hi in pairs) + " (held: each >= +1 point)",
                         held, None if held or not scaled else shown))
    if "v1" in cfg.priors and "v2" in cfg.priors:
        pairs = [(pool, mean[f"v1-pool{pool}"], mean[f"v2-pool{pool}"]) for pool in pools]
        held = all(100 * (v2 - v1) >= 1 for _, v1, v2 in pairs)
        out.append(claim("the v2 prior beats v1 (Fig 6)",
                         "mean full-test accuracy v1 -> v2: " + ", ".join(
                             f"pool {p}: {_pct(v1)} -> {_pct(v2)}%" for p, v1, v2 in pairs)
                         + " (held: each >= +1 point)",
                         held, None if held or not scaled else shown))
    return _done(out)
