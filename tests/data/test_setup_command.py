"""``fastmi data``: --list says what each experiment needs and what is present; NAME gets it (apt and
torchvision are replaced by fakes here: nothing is installed or downloaded), or says in one line which
files to put where."""
import os
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest

import fastmi.data.idx as idx_module
from fastmi.data import setup_command, write_fake_dataset


@pytest.fixture
def no_system_data(monkeypatch, tmp_path):
    """No dataset in the system folders; the system's Fashion-MNIST folder is a temporary one."""
    system = tmp_path / "system" / "fashion-mnist"
    monkeypatch.setitem(idx_module.DEFAULT_DIRS, "mnist", [])
    monkeypatch.setitem(idx_module.DEFAULT_DIRS, "fashion-mnist", [str(system)])
    return system


def _fake_apt(monkeypatch, system, works=True, calls=None):
    calls = [] if calls is None else calls

    def run(cmd):
        calls.append(cmd)
        if works and cmd[:2] == ["apt-get", "install"]:
            write_fake_dataset("fashion-mnist", system.parent, n_train=4, n_test=8)
            return subprocess.CompletedProcess(cmd, 0, "", "")
        return subprocess.CompletedProcess(cmd, 100 if cmd[1] == "install" else 0, "",
                                           "E: Unable to locate package dataset-fashion-mnist")
    monkeypatch.setattr(setup_command, "_run", run)
    monkeypatch.setattr(setup_command.shutil, "which", lambda name: "/usr/bin/" + name)
    monkeypatch.setattr(setup_command, "_is_root", lambda: True)
    return calls


def _no_torchvision(monkeypatch):
    def fail():
        raise setup_command.CannotGet("torchvision is not usable here (ImportError: hidden by a test)")
    monkeypatch.setattr(setup_command, "_torchvision", fail)


def test_list_names_each_experiments_datasets_and_what_is_present(no_system_data, tmp_path, capsys):
    assert setup_command.main(["--list", "--data-dir", str(tmp_path / "data")]) == 0
    out = capsys.readouterr().out
    rows = {line.split()[0]: line for line in out.splitlines() if line.strip()}
    assert "none (generated data)" in rows["remine_onehot"]
    assert "cifar10 (missing)" in rows["remine_slb"] and "fashion-mnist (missing)" in rows["remine_slb"]
    assert "auto = mnist|fashion-mnist (missing)" in rows["vim_mnist"]
    assert "missing: fastmi data fashion-mnist" in rows["fashion-mnist"]
    write_fake_dataset("fashion-mnist", tmp_path / "data", n_train=3, n_test=8)
    setup_command.main(["--data-dir", str(tmp_path / "data")])                    # --list is the default
    rows = {line.split()[0]: line for line in capsys.readouterr().out.splitlines() if line.strip()}
    assert "auto = fashion-mnist (present)" in rows["vim_mnist"]
    assert rows["fashion-mnist"].split()[1] == "present:" and "identified as fashion-mnist" in rows["fashion-mnist"]


def test_fashion_mnist_comes_from_the_debian_package(no_system_data, tmp_path, monkeypatch, capsys):
    calls = _fake_apt(monkeypatch, no_system_data)
    assert setup_command.main(["fashion-mnist", "--data-dir", str(tmp_path / "data")]) == 0
    out = capsys.readouterr().out
    assert calls[0] == ["apt-get", "install", "-y", "dataset-fashion-mnist"]
    assert "got it (Debian package)" in out and str(no_system_data) in out
    calls.clear()
    assert setup_command.main(["fashion-mnist", "--data-dir", str(tmp_path / "data")]) == 0   # present: no apt
    assert calls == [] and "present" in capsys.readouterr().out


def test_an_experiment_name_gets_its_quick_runs_datasets(no_system_data, tmp_path, monkeypatch, capsys):
    _fake_apt(monkeypatch, no_system_data)
    _no_torchvision(monkeypatch)
    # vim_mnist's auto: MNIST cannot be had (no torchvision), Fashion-MNIST comes from apt
    assert setup_command.main(["vim_mnist", "--data-dir", str(tmp_path / "data")]) == 0
    out = capsys.readouterr().out
    assert "fashion-mnist: got it (Debian package)" in out and "auto takes it when MNIST is absent" in out


def test_what_cannot_be_got_is_one_line_naming_the_files_and_folder(no_system_data, tmp_path, monkeypatch, capsys):
    _fake_apt(monkeypatch, no_system_data, works=False)
    _no_torchvision(monkeypatch)
    data = tmp_path / "data"
    assert setup_command.main(["fashion-mnist", "cifar10", "--data-dir", str(data)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and "Traceback" not in "".join(err)
    assert err[0].startswith("fashion-mnist: cannot get it here") and "apt-get install dataset-fashion-mnist failed" in err[0]
    assert "torchvision is not usable here" in err[0] and f"{data}/fashion-mnist/" in err[0]
    assert err[1].startswith("cifar10: cannot get it here") and f"{data}/cifar-10-batches-py/" in err[1]


def test_no_apt_no_root_and_a_failed_download_each_say_why(no_system_data, tmp_path, monkeypatch):
    monkeypatch.setattr(setup_command.shutil, "which", lambda name: None)
    ok, line = setup_command.get("fashion-mnist", tmp_path)
    assert not ok and "apt-get is not available" in line
    monkeypatch.setattr(setup_command.shutil, "which", lambda name: "/usr/bin/" + name)
    monkeypatch.setattr(setup_command, "_is_root", lambda: False)
    monkeypatch.setattr(setup_command, "_run", lambda cmd: pytest.fail("ran apt-get without root"))

    class NoNetwork:
        def __init__(self, *a, **k):
            raise OSError("Name or service not known")
    tv = types.SimpleNamespace(datasets=types.SimpleNamespace(MNIST=NoNetwork, FashionMNIST=NoNetwork))
    monkeypatch.setattr(setup_command, "_torchvision", lambda: tv)
    ok, line = setup_command.get("fashion-mnist", tmp_path)
    assert not ok and "sudo apt-get install dataset-fashion-mnist" in line and "download failed (OSError" in line


def test_a_torchvision_download_lands_where_the_experiments_look(no_system_data, tmp_path, monkeypatch, capsys):
    from fastmi.data.idx import write_idx

    class FakeMNIST:   # torchvision's layout: <root>/MNIST/raw/*-ubyte
        def __init__(self, root, train, download):
            raw = tmp_path / "data" / "MNIST" / "raw"
            raw.mkdir(parents=True, exist_ok=True)
            stem = "train" if train else "t10k"
            x = np.zeros((6, 28, 28), dtype=np.uint8)
            x[:, 10:13, 6:22] = 255
            write_idx(raw / f"{stem}-images-idx3-ubyte", x)
            write_idx(raw / f"{stem}-labels-idx1-ubyte", np.arange(6, dtype=np.uint8))
    tv = types.SimpleNamespace(datasets=types.SimpleNamespace(MNIST=FakeMNIST))
    monkeypatch.setattr(setup_command, "_torchvision", lambda: tv)
    assert setup_command.main(["mnist", "--data-dir", str(tmp_path / "data")]) == 0
    out = capsys.readouterr().out
    assert "mnist: got it (torchvision download)" in out and f"fastmi run --data-dir {tmp_path / 'data'}" in out


def test_command_line_mistakes_are_one_line_and_exit_2(tmp_path):
    def fastmi(*args):
        env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[2]))
        return subprocess.run([sys.executable, "-m", "fastmi", "data", *args], capture_output=True, text=True,
                              cwd=tmp_path, env=env, timeout=120)
    for args in (["imagenet"], ["--list", "mnist"], ["--bogus"]):
        proc = fastmi(*args)
        lines = proc.stderr.strip().splitlines()
        assert proc.returncode == 2 and len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    (tmp_path / "f").write_text("x")
    proc = fastmi("mnist", "--data-dir", str(tmp_path / "f"))
    assert proc.returncode == 2 and "is a file" in proc.stderr
