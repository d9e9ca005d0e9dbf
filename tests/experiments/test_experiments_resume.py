"""--resume: an interrupted run continues from its checkpoints and ends with the same results (CPU)."""
import json

import pytest

from fastmi.experiments import runner

from experiments._experiment_helpers import make_idx_folder, one_thread, tiny_config  # noqa: F401 (autouse fixture)


def _run(name, run_dir, data_dir=None, **kw):
    module, cfg = tiny_config(name, **({"estimators": ("mine", "nwj")} if name == "remine_slb" else {}))
    ctx = runner.RunContext(name=name, run_dir=run_dir, data_dir=data_dir, progress=False, **kw)
    return runner.run_experiment(module, cfg, ctx)


def _strip(results):
    return {k: v for k, v in json.loads(json.dumps(results, default=str)).items() if not k.startswith("seconds")}


@pytest.mark.parametrize("name,stop", [("remine_onehot", 47), ("remine_gaussian", 13), ("remine_slb", 3)])
def test_resume_matches_uninterrupted(name, stop, tmp_path):
    data = str(make_idx_folder(tmp_path / "data")) if name == "remine_slb" else None
    full = _run(name, tmp_path / "full", data)
    with pytest.raises(runner.Interrupted):
        _run(name, tmp_path / "cut", data, stop_after=stop)
    assert list((tmp_path / "cut" / "jobs").glob("*.ckpt.pt")) or list((tmp_path / "cut" / "jobs").glob("*.done.pt"))
    resumed = _run(name, tmp_path / "cut", data, resume=True)
    assert _strip(resumed) == _strip(full)
    assert (tmp_path / "cut" / "metrics.csv").read_text() == (tmp_path / "full" / "metrics.csv").read_text()


def test_resume_refuses_another_config(tmp_path):
    module, cfg = tiny_config("remine_onehot")
    runner.run_experiment(module, cfg, runner.RunContext(name="remine_onehot", run_dir=tmp_path, progress=False))
    _, other = tiny_config("remine_onehot", lr=0.05)
    with pytest.raises(ValueError, match=r"lr: 0\.1 -> 0\.05"):
        runner.run_experiment(module, other, runner.RunContext(name="remine_onehot", run_dir=tmp_path,
                                                               progress=False, resume=True))
    with pytest.raises(ValueError, match=r"seed: 0 -> 3"):
        runner.run_experiment(module, cfg, runner.RunContext(name="remine_onehot", run_dir=tmp_path, seed=3,
                                                             progress=False, resume=True))


def test_resume_names_settings_an_older_run_folder_lacks(tmp_path):
    module, cfg = tiny_config("remine_onehot")
    runner.run_experiment(module, cfg, runner.RunContext(name="remine_onehot", run_dir=tmp_path, progress=False))
    path = tmp_path / "config.json"
    old = json.loads(path.read_text())
    del old["config"]["lr"]                      # as written by a fastmi that had no such setting
    path.write_text(json.dumps(old))
    with pytest.raises(ValueError, match=r"lr: absent \(an older fastmi\)"):
        runner.run_experiment(module, cfg, runner.RunContext(name="remine_onehot", run_dir=tmp_path,
                                                             progress=False, resume=True))


def test_without_resume_a_folder_with_work_is_kept_unless_overwrite(tmp_path):
    module, cfg = tiny_config("remine_onehot")
    with pytest.raises(runner.Interrupted):
        runner.run_experiment(module, cfg, runner.RunContext(name="remine_onehot", run_dir=tmp_path,
                                                             progress=False, stop_after=30))
    kept = sorted(p.name for p in (tmp_path / "jobs").iterdir())
    assert kept
    with pytest.raises(runner.RunFolderError, match="--resume.*--overwrite"):
        runner.run_experiment(module, cfg, runner.RunContext(name="remine_onehot", run_dir=tmp_path, progress=False))
    assert sorted(p.name for p in (tmp_path / "jobs").iterdir()) == kept
    (tmp_path / "notes.txt").write_text("mine")
    again = runner.run_experiment(module, cfg, runner.RunContext(name="remine_onehot", run_dir=tmp_path,
                                                                 progress=False, overwrite=True))
    assert again["runs"] and (tmp_path / "notes.txt").read_text() == "mine"   # only the run's own files go
