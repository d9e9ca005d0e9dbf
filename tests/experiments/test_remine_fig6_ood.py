"""Choi & Lee Figure 6 (benchmark performance against lambda) and Appendix B (remine_ood)."""
import json
import math

import numpy as np
import pytest
import torch

from fastmi.experiments import _benchmark_lambda, remine_ood

from experiments._experiment_helpers import make_idx_folder, one_thread, run_tiny  # noqa: F401 (autouse fixture)


def _summary(points):
    """points: est -> {lambda: (mi, acc)} (lambda 0 = the original)."""
    return {est: {"all": {f"{lam:g}": {"mi": mi, "acc": acc, "mi_ci": math.nan, "acc_ci": math.nan}
                          for lam, (mi, acc) in per.items()}} for est, per in points.items()}


def test_tradeoff_is_the_pearson_correlation_over_lambda():
    s = _summary({"mine": {0: (9.0, 9.0), 0.1: (2.0, 0.80), 0.01: (2.2, 0.78), 0.001: (2.3, 0.70)},
                  "nwj": {0: (0.0, 0.1), 0.1: (1.0, 0.5), 0.01: (math.nan, 0.1), 0.001: (1.5, 0.6)}})
    corr = _benchmark_lambda.tradeoff(s)
    assert corr["mine"] == pytest.approx(np.corrcoef([2.0, 2.2, 2.3], [0.80, 0.78, 0.70])[0, 1])
    assert corr["mine"] < 0
    assert math.isnan(corr["nwj"])   # only 2 finite lambdas


def test_fig6_claim_is_decided_only_at_the_papers_scale():
    pts = {e: {0: (1.0, 0.5), 0.1: (2.0, 0.80), 0.01: (2.2, 0.78), 0.001: (2.3, 0.70)} for e in ("a", "b", "c")}
    cfg = remine_ood.Config(dataset="cifar10")
    (c,) = _benchmark_lambda.claim(cfg, "clb", _summary(pts), paper_scale=True)
    assert c["held"] is True and c["shown_by"] is None
    (c,) = _benchmark_lambda.claim(cfg, "clb", _summary(pts), paper_scale=False)
    assert c["held"] is None and "remine_clb" in c["shown_by"] and "a -0.87" in c["measured"]
    pos = {e: {0: (1.0, 0.5), 0.1: (2.0, 0.70), 0.01: (2.2, 0.78), 0.001: (2.3, 0.80)} for e in ("a", "b", "c")}
    assert _benchmark_lambda.claim(cfg, "clb", _summary(pos), paper_scale=True)[0]["held"] is False
    assert _benchmark_lambda.claim(cfg, "slb", _summary(pos), paper_scale=True) == []


def test_fig6_plot_and_lines_keep_a_diverged_lambda(tmp_path):
    s = _summary({"mine": {0: (2.0, 0.5), 0.1: (math.nan, math.nan), 0.01: (2.2, 0.6)}})
    cfg = remine_ood.Config(dataset="fashion-mnist")
    _benchmark_lambda.plot(tmp_path / "f.png", cfg, "clb", s)
    assert (tmp_path / "f.png").stat().st_size > 0
    lines = _benchmark_lambda.lines(s)
    assert "lambda=0.01" in lines[0] and "lambda=0.1" in lines[0]
    assert "diverged | diverged" in lines[1]


def test_fig6_plot_marks_a_blown_up_estimate_instead_of_flattening_the_rest(tmp_path, monkeypatch):
    """The quick CLB run's JS ended at -4.9e34: drawn as a point it squashed every other line to 0."""
    from fastmi.experiments import plotting

    s = _summary({"mine": {0: (-53.6, 0.60), 0.1: (-36.1, 0.63)}, "js": {0: (-4.9e34, 0.09), 0.1: (math.nan, 0.1)},
                  "nwj": {0: (math.nan, 0.1), 0.1: (-8092.0, 0.58)}})
    seen = {}
    real_save = plotting.save
    monkeypatch.setattr(plotting, "save", lambda fig, path: (seen.setdefault("fig", fig), real_save(fig, path)))
    _benchmark_lambda.plot(tmp_path / "f.png", remine_ood.Config(dataset="fashion-mnist"), "clb", s)
    mi_ax = seen["fig"].axes[0]
    assert plotting.unlabeled(seen["fig"]) == []
    lo, hi = mi_ax.get_ylim()
    assert lo > -1e5 and lo <= -8092.0                  # -8092 drawn, -4.9e34 not on the scale
    assert mi_ax.get_yscale() == "symlog"
    assert "js nan" in [t.get_text() for t in mi_ax.texts]
    legend = mi_ax.get_legend_handles_labels()[1]
    assert "js (original: -4.9e+34)" in legend and "nwj (original: diverged)" in legend
    assert plotting.DIVERGED_LABEL in legend
    line = _benchmark_lambda.lines(s)[2]
    assert line.split() == ["js", "-4.9e+34", "|", "0.090", "diverged", "|", "0.100"]


def test_tiny_clb_run_writes_the_lambda_sweep(tmp_path):
    data = make_idx_folder(tmp_path / "data")
    res = run_tiny("remine_clb", tmp_path / "run", data_dir=data,
                   config={"estimators": ("mine",), "reg_weights": (0.1, 0.01), "epochs": 1})
    assert (tmp_path / "run" / "clb_lambda_sweep.png").is_file()
    assert "Figure 6" in (tmp_path / "run" / "table.txt").read_text()
    assert res["claims"][0]["held"] is None


def test_set_stats_and_lme_on_known_outputs():
    t = torch.tensor([[math.log(2.0), -5.0], [-1.0, -2.0]], dtype=torch.float64)
    s = remine_ood.set_stats(t, torch.tensor([0, 1]))
    expected_lme = math.log(np.mean(np.exp([math.log(2.0), -5.0, -1.0, -2.0])))
    assert s["lme_all"] == pytest.approx(expected_lme)
    assert s["joint_mean"] == pytest.approx((math.log(2.0) - 2.0) / 2)
    assert s["joint_above0"] == 0.5 and s["max_below0"] == 0.5
    assert remine_ood.auroc(torch.tensor([1.0, 2.0]), torch.tensor([-1.0, 0.5])) == 1.0
    assert remine_ood.auroc(torch.tensor([-1.0, 0.5]), torch.tensor([1.0, 2.0])) == 0.0


@pytest.mark.parametrize("o, t, held", [(0.95, 0.2, True), (0.85, 0.2, False), (0.95, 0.97, False)])
def test_ood_claim(o, t, held):
    stats = {"ood": {"max_below0": o}, "test": {"max_below0": t}}
    (c,) = remine_ood.claim_of(stats, 0.9, paper_scale=False)
    assert c["held"] is held


def test_digits_are_uint8_images():
    images, labels = remine_ood.load_digits_images()
    assert images.dtype == torch.uint8 and tuple(images.shape[1:]) == (1, 8, 8)
    assert int(images.max()) == 255 and len(labels) == 1797


def test_tiny_ood_run(tmp_path):
    data = make_idx_folder(tmp_path / "data")
    run_dir = tmp_path / "run"
    res = run_tiny("remine_ood", run_dir, data_dir=data)
    assert set(res["sets"]) == {"train", "test", "ood"}
    assert res["sets"]["ood"]["n"] == 25 and res["sets"]["train"]["n"] == 20 and res["sets"]["test"]["n"] == 12
    assert 0.0 <= res["auroc"] <= 1.0
    assert (run_dir / "remine_ood.png").is_file()
    saved = json.loads((run_dir / "results.json").read_text())
    assert saved["claims"][0]["paper"].startswith("App B")


def test_ood_set_must_differ_from_the_training_set():
    from fastmi.experiments import settings
    with pytest.raises(settings.SettingError, match="ood"):
        remine_ood.Config(dataset="mnist", ood="mnist").validate()
