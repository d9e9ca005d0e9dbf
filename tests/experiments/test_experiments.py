"""Smoke runs of every experiment with a tiny config (seconds each), and the command line."""
import json
import subprocess
import sys

import pytest

from fastmi.experiments import EXPERIMENTS, runner

from experiments._experiment_helpers import make_idx_folder, one_thread, run_tiny, tiny_data_dir  # noqa: F401 (autouse fixture)


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_tiny_run_writes_run_folder(name, tmp_path, capsys):
    from fastmi.experiments import plotting

    data = tiny_data_dir(name, tmp_path)
    run_dir = tmp_path / "run"
    plotting.PROBLEMS.clear()
    results = run_tiny(name, run_dir, data_dir=data)
    assert plotting.PROBLEMS == [], "figure panels without axis labels"
    for f in ("config.json", "metrics.csv", "results.json", "table.txt"):
        assert (run_dir / f).is_file(), f
    assert list(run_dir.glob("*.png")), "no figure written"
    saved = json.loads((run_dir / "results.json").read_text())
    assert saved["experiment"] == name and "seconds" in saved
    assert "Settings that differ from the paper" in (run_dir / "table.txt").read_text()
    out = capsys.readouterr().out
    assert "run folder" in out
    # the paper's claims: decided from the run (True / False / None), printed after the table
    assert saved["claims"], "no paper claim stated"
    for c in saved["claims"]:
        assert c["held"] in (True, False, None) and c["paper"] and c["measured"]
        assert c["held"] is True or c["shown_by"], c          # not shown here: which preset shows it
    assert sum(line.startswith("claim: ") for line in out.splitlines()) == len(saved["claims"])
    header = (run_dir / "metrics.csv").read_text().splitlines()[0]
    assert header.startswith("job,")
    assert results


def test_onehot_results_are_sane(tmp_path):
    results = run_tiny("remine_onehot", tmp_path / "run")
    assert set(results["runs"]) == {f"{e}-b{b}" for e in ("dv", "redv", "nwj", "renwj") for b in (8, 4)}
    assert set(results["target_sweep"]) == {"-1", "1"}
    assert abs(results["true_mi"] - 2.7725887) < 1e-6


def test_gaussian_stage_statistics(tmp_path):
    results = run_tiny("remine_gaussian", tmp_path / "run")
    assert len(results["stages"]) == 12
    for stats in results["stages"].values():
        assert [s["mi"] for s in stats] == [1.0, 2.0]
        for s in stats:
            assert s["mse"] == pytest.approx(s["bias"] ** 2 + s["variance"], rel=1e-6, abs=1e-9)


def test_gaussian_table_keeps_columns_apart_when_an_estimator_diverges():
    from fastmi.experiments import remine_gaussian
    cfg = runner.make_config(remine_gaussian, False, [])
    calm = [{"bias": -0.1, "variance": 0.1, "mse": 0.11} for _ in cfg.levels]
    wild = [{"bias": 747.13, "variance": 334130.85, "mse": 892332.41} for _ in cfg.levels]
    lines = remine_gaussian.table(cfg, {"dv": wild, "nwj": calm}).splitlines()
    header, dv_row, nwj_row = lines[1], lines[2], lines[3]
    assert len(header) == len(dv_row) == len(nwj_row)
    assert dv_row.count("+747.13 / 334130.85 / 892332.41") == len(cfg.levels)
    assert "892332.41+747.13" not in dv_row
    assert all(header.split()[i + 1] == f"I={v:g}" for i, v in enumerate(cfg.levels))


def test_benchmark_summary_layout(tmp_path):
    results = run_tiny("remine_slb", tmp_path / "run", data_dir=make_idx_folder(tmp_path / "data"))
    assert set(results["summary"]) == {"mine", "smile", "infonce", "nwj", "tuba", "js"}
    for s in results["summary"].values():
        assert 0.0 <= s["original"]["acc"] <= 1.0 and s["chosen_lambda"] == 0.1


def test_list_and_bad_arguments(capsys):
    assert runner.main(["--list"]) == 0
    out = capsys.readouterr().out
    assert all(name in out for name in EXPERIMENTS)
    with pytest.raises(SystemExit):
        runner.main(["remine_onehot", "--set", "no_such_key=1"])
    assert "no_such_key" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        runner.main(["remine_onehot", "--set", "steps=many"])
    assert "steps" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        runner.main(["no_such_experiment"])
    assert "unknown experiment" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        runner.main(["remine_onehot", "--backend", "gpu"])
    assert "--backend must be one of" in capsys.readouterr().err


def test_errors_found_during_a_run_are_usage_errors(tmp_path, monkeypatch, capsys):
    args = ["remine_onehot", "--quick", "--set", "steps=3", "--set", "batches=4", "--set", "sweep_targets=0",
            "--out", str(tmp_path), "--no-progress"]
    assert runner.main(args) == 0
    capsys.readouterr()
    monkeypatch.delenv("FASTMI_DEBUG", raising=False)
    with pytest.raises(SystemExit) as e:                       # --resume with another learning rate
        runner.main(args + ["--resume", "--set", "lr=0.5"])
    err = capsys.readouterr().err
    assert e.value.code == 2 and "--resume" in err and "lr: " in err and "Traceback" not in err
    monkeypatch.setenv("FASTMI_DEBUG", "1")
    with pytest.raises(ValueError, match="--resume"):
        runner.main(args + ["--resume", "--set", "lr=0.5"])


def test_set_parses_types():
    from fastmi.experiments import remine_gaussian

    cfg = runner.make_config(remine_gaussian, True, ["levels=1,2.5", "cubic=true", "lr=1e-3", "batch=16"])
    assert cfg.levels == (1, 2.5) and cfg.cubic is True and cfg.lr == 1e-3 and cfg.batch == 16
    assert cfg.steps_per_level == remine_gaussian.QUICK["steps_per_level"]
    diffs = runner.differences(cfg)
    assert any(d.startswith("cubic=True") for d in diffs) and not any(d.startswith("ckpt_every") for d in diffs)


def test_python_dash_m_entry_point():
    out = subprocess.run([sys.executable, "-m", "fastmi.experiments.remine_onehot", "--help"], capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0 and "--resume" in out.stdout
    out = subprocess.run([sys.executable, "-m", "fastmi", "run", "--list"], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0 and "remine_gaussian" in out.stdout


def test_missing_dataset_is_a_command_line_error(tmp_path, monkeypatch, capsys):
    from fastmi.data import idx

    monkeypatch.setitem(idx.DEFAULT_DIRS, "fashion-mnist", [])
    with pytest.raises(SystemExit) as e:
        runner.main(["remine_slb", "--quick", "--data-dir", str(tmp_path), "--out", str(tmp_path / "runs"),
                     "--no-progress"])
    assert e.value.code == 2
    assert "dataset-fashion-mnist" in capsys.readouterr().err


def test_run_context_accepts_a_str_folder(tmp_path):
    ctx = runner.RunContext(name="remine_onehot", run_dir=str(tmp_path / "run"), progress=False)
    assert ctx.run_dir == tmp_path / "run" and ctx._job_path("a b", "done").parent == tmp_path / "run" / "jobs"
