"""fastmi.experiments.plotting: diverged / non-finite values are a distinct marker (never clipped into
the range of the real values, never drawn as 0), and a panel without axis labels is caught."""
import math

import numpy as np
import pytest

pytest.importorskip("matplotlib")

from fastmi.experiments import _benchmark, plotting  # noqa: E402


def _markers(ax):
    """(x, y in axes coordinates) of the diverged markers drawn on ``ax``."""
    out = []
    for coll in ax.collections:
        if coll.get_label() == plotting.DIVERGED_LABEL or (len(coll.get_offsets()) and
                                                            tuple(coll.get_edgecolor()[0][:3]) == (1.0, 0.0, 0.0)):
            out += [tuple(p) for p in coll.get_offsets()]
    return out


def test_bars_draw_real_values_and_mark_the_rest():
    fig, (ax,) = plotting.grid(1, 1)
    plotting.bars(ax, [0, 1, 2, 3, 4], [1.5, math.nan, -1e30, math.inf, -3.0], 0.4, label="ours")
    heights = sorted(round(p.get_height(), 3) for p in ax.patches)
    assert heights == [-3.0, 1.5]                      # only real values are bars: NaN is no 0-height bar
    marks = _markers(ax)
    assert sorted(x for x, _ in marks) == [1, 2, 3]
    assert dict(marks)[2] == 0.0 and dict(marks)[1] == 1.0   # negative at the bottom edge, NaN at the top
    lo, hi = ax.get_ylim()
    assert lo <= -3.0 < 1.5 <= hi and lo > -100         # the axis spans the real values, not -1e30, not cut at -1
    assert plotting.DIVERGED_LABEL in ax.get_legend_handles_labels()[1]
    texts = [t.get_text() for t in ax.texts]
    assert "nan" in texts and "-1e+30" in texts and "inf" in texts
    plotting.pyplot().close(fig)


def test_curve_marks_where_a_run_blew_up():
    fig, (ax,) = plotting.grid(1, 1)
    y = np.array([1.0, 2.0, math.nan, math.nan, 3.0, math.inf])
    plotting.curve(ax, np.arange(6), y, label="estimate")
    assert sorted(x for x, _ in _markers(ax)) == [2, 5]   # the first step of each non-finite stretch
    plotting.pyplot().close(fig)


def test_unlabeled_panels_are_named(tmp_path, capsys):
    fig, axes = plotting.grid(2, 2)
    plotting.labels(axes[0], "step", "MI estimate (nats)", "labelled")
    axes[1].set_title("bare")
    assert plotting.unlabeled(fig) == ["bare"]
    plotting.PROBLEMS.clear()
    plotting.save(fig, tmp_path / "f.png")
    assert plotting.PROBLEMS == [(str(tmp_path / "f.png"), ["bare"])] and "bare" in capsys.readouterr().err
    plotting.PROBLEMS.clear()


def test_the_clb_panel_keeps_diverged_runs_apart_from_real_values(tmp_path, monkeypatch):
    """The issue: values below -1 were clipped to -1 and NaN drawn as 0 (which reads as the paper's 0 = diverged)."""
    cfg = _benchmark.BenchConfig(dataset="fashion-mnist", estimators=("mine", "nwj", "smile"), reg_weights=(0.1,))
    cell = lambda mi, acc: {"mi": mi, "mi_ci": math.nan, "acc": acc, "acc_ci": math.nan}  # noqa: E731
    summary = {"mine": {"original": cell(-57.9, 0.55), "regularized": cell(-57.0, 0.6)},
               "nwj": {"original": cell(math.nan, 0.104), "regularized": cell(-8090.0, 0.6)},
               "smile": {"original": cell(-4.5, 0.13), "regularized": cell(-2e4, 0.55)}}
    seen = {}
    real_save = plotting.save
    monkeypatch.setattr(plotting, "save", lambda fig, path: (seen.setdefault("fig", fig), real_save(fig, path)))
    _benchmark._plot(tmp_path / "clb.png", cfg, "clb", summary)
    mi_ax, acc_ax = seen["fig"].axes[:2]
    assert plotting.unlabeled(seen["fig"]) == []
    assert "nats" in mi_ax.get_ylabel() and "accuracy" in acc_ax.get_ylabel()
    lo, _ = mi_ax.get_ylim()
    assert lo <= -8090.0                                # a real value far below -1 is drawn where it is
    assert len(_markers(mi_ax)) == 2                    # NaN and -2e4 (beyond 1e4): the marker, not a bar
    assert min(p.get_height() for p in mi_ax.patches) == pytest.approx(-8090.0)
    assert mi_ax.get_yscale() == "symlog"               # -8090 and -57 both readable
    # the paper's own "0 = diverged" (NWJ, SMILE original on CIFAR-10) is a mark too, not a dash at 0
    assert "paper: diverged (its 0)" in mi_ax.get_legend_handles_labels()[1]
    dashes = [tuple(p) for c in mi_ax.collections if c.get_label() == "paper (CIFAR)" for p in c.get_offsets()]
    assert dashes and all(y != 0.0 for _, y in dashes)


def _onehot_sweep(tmp_path, monkeypatch, summary, batches="100,32,8"):
    from fastmi.experiments import remine_onehot, runner

    cfg = runner.make_config(remine_onehot, False, [f"batches={batches}"])
    seen = {}
    real_save = plotting.save
    monkeypatch.setattr(plotting, "save", lambda fig, path: (seen.setdefault("fig", fig), real_save(fig, path)))
    remine_onehot._plot_batches(tmp_path / "batch_sweep.png", cfg, summary)
    assert (tmp_path / "batch_sweep.png").exists() and plotting.unlabeled(seen["fig"]) == []
    return seen["fig"].axes[:2]


def _row(t, mi, nan_steps=0):
    return {"max_abs_t": t, "final_mi": mi, "nonfinite_steps": nan_steps}


def test_the_onehot_batch_sweep_marks_exploded_runs_by_name(tmp_path, monkeypatch):
    """Figs 3 and 5 in one view: an infinite |T| or an estimate that is not finite or beyond 1e4 is the
    marker named after its estimator (the estimates near log 16 stay readable); a finite 9.6e37 |T| is
    a point, and NaN steps are said in the legend."""
    summary = {}
    for b in (100, 32, 8):
        summary.update({f"dv-b{b}": _row(math.inf if b == 8 else 50.0, 1.7e9 if b == 8 else 2.7),
                        f"nwj-b{b}": _row(9.6e37 if b == 8 else 12.0, math.nan if b == 8 else 2.6, 5 * (b == 8)),
                        f"redv-b{b}": _row(8.0, 2.7), f"renwj-b{b}": _row(10.0, 2.7)})
    t_ax, mi_ax = _onehot_sweep(tmp_path, monkeypatch, summary)
    assert t_ax.get_yscale() == "log" and mi_ax.get_yscale() == "linear"
    assert len(_markers(t_ax)) == 1 and "DV inf" in [t.get_text() for t in t_ax.texts]
    nwj = [line for line in t_ax.get_lines() if line.get_label().startswith("NWJ")][0]
    assert max(nwj.get_ydata()) == pytest.approx(9.6e37)
    assert nwj.get_label() == "NWJ (non-finite steps at batch 8)"
    assert sorted(t.get_text() for t in mi_ax.texts) == ["DV 1.7e+09", "NWJ nan"]
    assert mi_ax.get_ylim()[1] < 10                     # log 16 and the regularized estimates readable
    assert [t.xyann[1] for t in mi_ax.texts] in ([-9, -16], [-16, -9])   # two notes at batch 8 stacked apart


def test_the_onehot_batch_sweep_survives_every_run_diverged(tmp_path, monkeypatch):
    summary = {f"{e}-b{b}": _row(math.inf, math.nan, 10) for e in ("dv", "nwj", "redv", "renwj") for b in (100, 32)}
    t_ax, mi_ax = _onehot_sweep(tmp_path, monkeypatch, summary, batches="100,32")
    assert len(_markers(t_ax)) == 8 and t_ax.get_yscale() == "linear"
    lo, hi = t_ax.get_xlim()
    assert lo < 32 and hi > 100                         # the markers' batches are inside the panel


def test_fig6_panels_survive_every_value_diverged(tmp_path, monkeypatch):
    """remine_clb --set estimators=js: nothing finite to draw; the lambdas still set the x range."""
    from fastmi.experiments import _benchmark_lambda, remine_ood

    nan = math.nan
    summary = {"js": {"all": {"0": {"mi": -4.9e34, "acc": 0.09, "mi_ci": nan, "acc_ci": nan},
                              "0.1": {"mi": nan, "acc": 0.1, "mi_ci": nan, "acc_ci": nan},
                              "0.01": {"mi": nan, "acc": 0.1, "mi_ci": nan, "acc_ci": nan}}}}
    seen = {}
    real_save = plotting.save
    monkeypatch.setattr(plotting, "save", lambda fig, path: (seen.setdefault("fig", fig), real_save(fig, path)))
    _benchmark_lambda.plot(tmp_path / "f.png", remine_ood.Config(dataset="fashion-mnist"), "clb", summary)
    mi_ax = seen["fig"].axes[0]
    lo, hi = mi_ax.get_xlim()
    assert lo < 0.01 and hi > 0.1 and len(_markers(mi_ax)) == 2
