"""The per-paper claim decisions (_claims_remine / _claims_nb / _claims_vim): held follows the measured
statistic, and a scaled-down run that did not show a claim names the preset that does."""
import math

from fastmi.experiments import _claims_nb, _claims_remine, _claims_vim, _vim, remine_onehot
from fastmi.experiments._benchmark import BenchConfig


def _onehot_summary(dv_slope, redv_slope, big_orig, big_reg):
    s = lambda slope, big: {"second_term_slope": slope, "max_abs_t": big, "final_mi": 2.8,  # noqa: E731
                            "final_second": 0.0}
    return {"dv-b100": s(dv_slope, 12.0), "redv-b100": s(redv_slope, 9.0), "nwj-b100": s(0.0, 9.0),
            "renwj-b100": s(0.0, 9.0), "dv-b32": s(0.0, big_orig), "redv-b32": s(0.0, big_reg),
            "nwj-b32": s(math.nan, big_orig), "renwj-b32": s(0.0, big_reg)}


def test_onehot_drift_and_explosion_follow_the_ratios():
    cfg = remine_onehot.Config()
    sweep = {0.0: {"final_second": 0.02, "final_mi": 2.8}, 5.0: {"final_second": 4.9, "final_mi": 2.7}}
    shown = _claims_remine.onehot(cfg, _onehot_summary(-0.7e-3, -0.02e-3, 165.0, 8.4), sweep, scaled=True)
    assert [c["held"] for c in shown] == [True, True, True] and all(c["shown_by"] is None for c in shown)
    assert "slope ratio DV/ReDV 35" in shown[0]["measured"]
    # the quick preset's case: DV drifts no more than ReDV, no explosion, the sweep off target
    sweep_off = {0.0: {"final_second": 0.9, "final_mi": 2.8}}
    not_shown = _claims_remine.onehot(cfg, _onehot_summary(-0.02e-3, -0.03e-3, 10.0, 9.0), sweep_off, scaled=True)
    assert [c["held"] for c in not_shown] == [False, False, False]
    assert all("fastmi run remine_onehot (the paper's settings; measured" in c["shown_by"] for c in not_shown)
    # at the paper's settings nothing else is named
    assert all(c["shown_by"] is None for c in _claims_remine.onehot(cfg, _onehot_summary(0, 0, 1, 1), sweep_off,
                                                                      scaled=False))


def test_onehot_batch_sweep_claims_only_the_papers_small_batches():
    """A batch sweep (Figs 3 and 5) judges explosion at batch <= 32; batch 64 is no claim of the paper."""
    cfg = remine_onehot.Config(batches=(100, 64, 32, 8))
    summary = _onehot_summary(-0.7e-3, -0.02e-3, 165.0, 8.4)
    summary.update({k.replace("b32", b): v for k, v in summary.items() if k.endswith("b32") for b in ("b64", "b8")})
    summary["dv-b64"] = dict(summary["dv-b64"], max_abs_t=16.0)      # no explosion at 64
    claims = _claims_remine.onehot(cfg, summary, {}, scaled=True)
    batches = [c["paper"].split("at batch ")[1].split(" ")[0] for c in claims]
    assert batches == ["100", "32", "8"] and all(c["held"] for c in claims)


def test_onehot_table_keeps_exploded_columns_apart():
    cfg = remine_onehot.Config(batches=(100, 16))
    row = {"final_mi": 11235.309, "final_second": -34153.15, "second_term_slope": -65.164397, "max_abs_t": 4.06e5,
           "nonfinite_steps": 0}
    calm = {"final_mi": 2.8, "final_second": 0.0, "second_term_slope": 0.0, "max_abs_t": 9.0, "nonfinite_steps": 0}
    summary = {f"{e}-b{b}": (row if (e, b) == ("dv", 16) else calm) for e in remine_onehot.ESTIMATORS
               for b in cfg.batches}
    lines = remine_onehot.table(cfg, summary, {}).splitlines()
    dv16 = next(line for line in lines if line.startswith("dv-b16"))
    assert dv16.split() == ["dv-b16", "1.12e+04", "-3.42e+04", "-6.52e+04", "4.06e+05", "0"]


def test_clb_collapse_is_judged_from_accuracy_and_slb_needs_seeds():
    cfg = BenchConfig(dataset="fashion-mnist", estimators=("smile", "nwj", "tuba"), seeds=1)
    cell = lambda mi, acc: {"mi": mi, "acc": acc}  # noqa: E731
    collapse = {e: {"original": cell(math.nan, 0.104), "regularized": cell(-1.0, 0.6)} for e in ("smile", "nwj", "tuba")}
    (c,) = _claims_remine.benchmark("clb", cfg, collapse, 10, scaled=True)
    assert c["held"] is True
    collapse["tuba"]["original"] = cell(2.0, 0.8)                     # TUBA learned without the regularizer
    (c,) = _claims_remine.benchmark("clb", cfg, collapse, 10, scaled=True)
    assert c["held"] is False and "GPU" in c["shown_by"] and "not measured" in c["shown_by"]
    (c,) = _claims_remine.benchmark("slb", cfg, collapse, 10, scaled=True)
    assert c["held"] is None and "1 seed" in c["measured"]            # one seed cannot decide


def test_nb_filters_and_probe_gaps():
    summary = {(0.0, 4.0): {"dead": 0.7}, (4.0, 0.0): {"dead": 0.01}, (4.0, 4.0): {"dead": 0.2}}
    assert _claims_nb.filters(None, summary, scaled=True)[0]["held"] is True
    summary[(4.0, 4.0)]["dead"] = 0.6
    c = _claims_nb.filters(None, summary, scaled=True)[0]
    assert c["held"] is False and c["shown_by"].startswith("fastmi run nb_filters")
    probes = {"dms": {"test_acc": 0.43}, "random": {"test_acc": 0.31}}
    assert _claims_nb.dms_images(None, probes, scaled=True)[0]["held"] is True
    probes["dms"]["test_acc"] = 0.33
    assert _claims_nb.dms_images(None, probes, scaled=True)[0]["held"] is False


def test_vim_orderings_and_a_skipped_attack():
    plan = {"baseline": (_vim.ModelSpec("baseline"), 256, 3, "table"),
            "vib": (_vim.ModelSpec("vib", 1e-3), 256, 3, "table"), "vim": (_vim.ModelSpec("vim", 1e-3), 256, 3, "table")}
    rows = {"baseline": {"test_error": 2.0, "ari": 0.5, "hoyer": 0.3, "attack_l2": 1.0},
            "vib": {"test_error": 1.5, "ari": 0.6, "hoyer": 0.3, "attack_l2": 2.0},
            "vim": {"test_error": 1.0, "ari": 0.7, "hoyer": 0.4, "attack_l2": 3.0}}
    assert [c["held"] for c in _claims_vim.mnist(plan, rows, scaled=True)] == [True, True, True]
    for r in rows.values():
        r.pop("attack_l2")
    rows["vim"]["test_error"] = 3.0
    error, attack, codes = _claims_vim.mnist(plan, rows, scaled=True)
    assert error["held"] is False and "vim_mnist" in error["shown_by"]
    assert attack["held"] is None and "skipped" in attack["measured"]
