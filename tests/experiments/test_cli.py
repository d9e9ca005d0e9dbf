"""The fastmi command as a user meets it, through a subprocess: every mistake is one line on stderr
and exit status 2, no traceback, caught before anything runs, and nothing of an earlier run is lost."""
import hashlib
import json
import os
import shutil
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from experiments._experiment_helpers import one_thread, run_tiny  # noqa: F401 (autouse fixture)

ROOT = Path(__file__).resolve().parents[2]
# a remine_onehot run of a few seconds
SMALL = ["--quick", "--set", "steps=20", "--set", "batches=8,4", "--set", "sweep_targets=0", "--set",
         "drift_window=5", "--set", "ckpt_every=5", "--no-progress"]


def fastmi(*args, cwd, env_extra=None, fake_missing=(), tmp=None, timeout=300):
    """Run ``python -m fastmi *args``; ``fake_missing`` packages fail to import (a stub raising ImportError)."""
    env = dict(os.environ, PYTHONPATH=str(ROOT), **(env_extra or {}))
    if fake_missing:
        stubs = Path(tmp) / "stubs"
        for name in fake_missing:
            (stubs / name).mkdir(parents=True, exist_ok=True)
            (stubs / name / "__init__.py").write_text(f"raise ImportError('{name} is hidden by a test')\n")
        env["PYTHONPATH"] = f"{stubs}{os.pathsep}{ROOT}"
    return subprocess.run([sys.executable, "-m", "fastmi", *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)


def assert_usage_error(proc, *words):
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2, proc.stderr
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert lines[0].startswith(("fastmi run: error: ", "fastmi: error: ", "fastmi demo: error: ")), lines[0]
    for w in words:
        assert w in lines[0], (w, lines[0])


def snapshot(folder: Path) -> dict:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """A finished tiny remine_onehot run in <out>/remine_onehot-quick-seed0 (as --quick names it)."""
    out = tmp_path_factory.mktemp("out")
    run_tiny("remine_onehot", out / "remine_onehot-quick-seed0")
    return out


def test_bad_setting_in_a_folder_holding_a_run_touches_nothing(finished_run, tmp_path):
    stale = tmp_path / "stale"
    shutil.copytree(finished_run, stale)
    before = snapshot(stale)
    proc = fastmi("run", "remine_onehot", "--quick", "--out", str(stale), "--set", "batches=a", cwd=tmp_path)
    assert_usage_error(proc, "batches must be a list of ints", "'a'")
    assert snapshot(stale) == before


def test_rerun_without_resume_is_refused_and_names_the_ways_out(finished_run, tmp_path):
    before = snapshot(finished_run)
    proc = fastmi("run", "remine_onehot", "--out", str(finished_run), *SMALL, cwd=tmp_path)
    assert_usage_error(proc, "holds a run", "finished jobs", "--resume", "--out", "--overwrite")
    assert snapshot(finished_run) == before


@pytest.mark.parametrize("args,words", [
    (["--set", "steps=-5"], ["remine_onehot: steps must be an int >= 2, got -5"]),
    (["--set", "steps=many"], ["steps must be an int, got 'many'"]),
    (["--set", "batches=a,b"], ["batches must be a list of ints"]),
    (["--set", "stpes=3"], ["no setting 'stpes'", "did you mean steps"]),
    (["--set", "lr=0"], ["lr must be a number > 0, got 0.0"]),
    (["--resume"], ["--resume: there is no run to continue"]),
    (["--resume", "--overwrite"], ["give one of them"]),
    (["--backend", "gpu"], ["--backend must be one of"]),
    (["--seed", "x"], ["--seed"]),
    (["--threads", "-1"], ["--threads must be >= 0"]),
])
def test_mistakes_are_one_line_before_anything_runs(args, words, tmp_path):
    proc = fastmi("run", "remine_onehot", "--out", str(tmp_path / "runs"), *args, cwd=tmp_path)
    assert_usage_error(proc, *words)
    assert not (tmp_path / "runs").exists()


def test_out_pointing_at_a_file(tmp_path):
    (tmp_path / "afile").write_text("keep me")
    proc = fastmi("run", "remine_onehot", "--out", str(tmp_path / "afile"), cwd=tmp_path)
    assert_usage_error(proc, "is a file, not a folder")
    assert (tmp_path / "afile").read_text() == "keep me"


def test_triton_backend_that_cannot_run(tmp_path):
    proc = fastmi("run", "remine_onehot", "--backend", "triton", "--out", str(tmp_path / "runs"), cwd=tmp_path,
                  fake_missing=["triton"], tmp=tmp_path, env_extra={"TRITON_INTERPRET": "1"})
    assert_usage_error(proc, "--backend 'triton' is not available", "triton")
    assert not (tmp_path / "runs").exists()


def test_missing_optional_package_is_named_up_front(tmp_path):
    proc = fastmi("run", "remine_onehot", "--out", str(tmp_path / "runs"), cwd=tmp_path, fake_missing=["matplotlib"],
                  tmp=tmp_path)
    assert_usage_error(proc, "remine_onehot needs matplotlib", "pip install matplotlib")
    assert not (tmp_path / "runs").exists()


def test_without_foolbox_quick_skips_the_attack_with_a_warning_and_the_paper_run_is_one_line(tmp_path, monkeypatch):
    from fastmi.data import write_fake_dataset

    data = write_fake_dataset("fashion-mnist", tmp_path / "data", n_train=40, n_test=20)
    tiny = ["--set", "hidden=8", "--set", "k=2", "--set", "n_train=40", "--set", "n_test=20", "--set", "epochs=1",
            "--set", "batch_size=10", "--set", "models=baseline", "--set", "sweep_betas=", "--set", "k2_models=",
            "--set", "kmeans_init=1", "--set", "attack_steps=2", "--set", "attack_binary_steps=1"]
    common = ["run", "vim_mnist", "--data-dir", str(data), "--out", str(tmp_path / "runs"), "--no-progress", *tiny]
    proc = fastmi(*common, cwd=tmp_path, fake_missing=["foolbox"], tmp=tmp_path)          # the paper's settings
    assert_usage_error(proc, "vim_mnist needs foolbox", "--set attack_n=0", "--quick skips it")
    assert not (tmp_path / "runs").exists()
    proc = fastmi(*common, "--quick", cwd=tmp_path, fake_missing=["foolbox"], tmp=tmp_path)
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
    warning = [line for line in proc.stderr.splitlines() if "foolbox" in line]
    assert len(warning) == 1 and "warning" in warning[0] and "CW-L2 attack" in warning[0] and "skipped" in warning[0]
    assert "CW-L2 attack (Table 2): skipped, foolbox is not installed" in proc.stdout
    saved = json.loads((tmp_path / "runs" / "vim_mnist-quick-seed0" / "results.json").read_text())
    assert "foolbox" in saved["skipped"][0] and "attack_l2" not in saved["models"]["baseline"]
    from fastmi.experiments import runner, vim_mnist

    monkeypatch.setitem(sys.modules, "foolbox", None)          # import foolbox fails in this process too
    assert "foolbox" in runner.missing_optional(vim_mnist, runner.make_config(vim_mnist, True, []))
    assert runner.missing_optional(vim_mnist, runner.make_config(vim_mnist, True, ["attack_n=0"])) == {}


def test_help_lists_the_settings_and_version(tmp_path):
    proc = fastmi("run", "remine_onehot", "--help", cwd=tmp_path)
    assert proc.returncode == 0
    rows = {line.split()[0]: line for line in proc.stdout.splitlines() if line.startswith("  ") and line.split()}
    assert "3000" in rows["steps"] and "600" in rows["steps"] and "int" in rows["steps"]        # paper, --quick
    assert "100,32" in rows["batches"] and "stable, then the unstable" in rows["batches"]               # its comment
    assert "run setting" in rows["ckpt_every"]
    proc = fastmi("run", "nb_filters", "--help", cwd=tmp_path)
    assert "auto (MNIST)" in proc.stdout                                                       # the paper's value
    proc = fastmi("--version", cwd=tmp_path)
    assert proc.returncode == 0 and proc.stdout.startswith("fastmi ")


def test_ctrl_c_keeps_the_work_and_gives_the_resume_command(tmp_path):
    args = ["run", "remine_onehot", "--quick", "--set", "steps=4000", "--set", "batches=8", "--set",
            "sweep_targets=0", "--set", "ckpt_every=100", "--no-progress", "--out", str(tmp_path / "runs")]
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    # a shell's background job (nohup ... &) starts with SIGINT ignored, and Python then never raises
    # KeyboardInterrupt: the child gets the default handling a terminal's Ctrl-C meets
    proc = subprocess.Popen([sys.executable, "-m", "fastmi", *args], cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    jobs = tmp_path / "runs" / "remine_onehot-quick-seed0" / "jobs"
    deadline = time.monotonic() + 240
    while not list(jobs.glob("*.pt")) and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    assert "interrupted" in lines[0] and "continue with: fastmi run remine_onehot" in lines[0]
    command = shlex.split(lines[0].split("continue with: fastmi ", 1)[1])
    assert command == args + ["--resume"]
    assert list(jobs.glob("*.pt"))          # the checkpoints and finished jobs stay for --resume


def test_provenance_in_the_run_folder(finished_run):
    run = finished_run / "remine_onehot-quick-seed0"
    results = json.loads((run / "results.json").read_text())
    config = json.loads((run / "config.json").read_text())
    prov = results["provenance"]
    assert prov == config["provenance"]
    assert prov["backend"]["requested"] == "auto" and prov["backend"]["resolved"] in ("cpu", "reference")
    assert prov["torch"] and prov["fastmi"] and "threads" in prov and prov["device"] == "cpu"
    assert prov["git"] is None or len(prov["git"]["commit"]) == 40
    assert config["data"] == [{"dataset": "synthetic", "how": "generated from the run's seed (no files)"}]


def test_datasets_decided_and_read_are_recorded(tmp_path):
    from experiments._experiment_helpers import make_idx_folder

    data = make_idx_folder(tmp_path / "data")
    results = run_tiny("nb_filters", tmp_path / "run", data_dir=data)
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    (found,) = config["data"]
    assert found["dataset"] == "fashion-mnist" and found["path"] == str(data.resolve())
    assert found["how"].startswith("idx files in --data-dir; identified as fashion-mnist from the mean pixel 0.49")
    assert {(r["dataset"], r["split"], r["path"]) for r in results["data_read"]} == {
        ("fashion-mnist", "train", str(data.resolve())), ("fashion-mnist", "test", str(data.resolve()))}


def test_info_into_a_closed_pipe_is_quiet(tmp_path, monkeypatch):
    """`fastmi info | head -1`: the reader left, so writing raises BrokenPipeError: exit status 0,
    no traceback (in process: a real pipe would take the whole output before the reader closes)."""
    from fastmi import cli

    class ClosedPipe:
        def __init__(self, f):
            self.f = f

        def write(self, text):
            raise BrokenPipeError(32, "Broken pipe")

        def flush(self):
            pass

        def fileno(self):
            return self.f.fileno()

    with open(tmp_path / "stdout", "w") as f:
        monkeypatch.setattr(sys, "stdout", ClosedPipe(f))
        assert cli.main(["info"]) == 0
