"""Tiny end-to-end runs of vim_mnist and vim_cifar through runner.run_experiment on generated data."""
import json

import pytest

from fastmi.data import write_fake_dataset
from fastmi.experiments import runner, vim_cifar, vim_mnist

from experiments._experiment_helpers import one_thread, run_tiny, tiny_config  # noqa: F401 (autouse fixture)


def test_vim_mnist_tiny_run(tmp_path):
    data = write_fake_dataset("fashion-mnist", tmp_path / "data", n_train=40, n_test=20)
    res = run_tiny("vim_mnist", tmp_path / "run", data_dir=data)
    assert res["dataset"] == "fashion-mnist" and "Fashion-MNIST used instead" in res["note"]
    roles = res["roles"]
    assert [j for j, r in roles.items() if r == "table"] == ["baseline", "vib-beta0.001-sigma1", "vim-beta0.001-sigma1"]
    assert {j for j, r in roles.items() if r == "sweep"} == {"vib-beta0.01-sigma1-ep1", "vim-beta0.01-sigma1-ep1"}
    assert {j for j, r in roles.items() if r == "k2"} == {"k2-baseline", "k2-vim-beta0.001-sigma1"}
    for job, row in res["models"].items():
        assert 0.0 <= row["test_error"] <= 100.0 and -1.0 <= row["ari"] <= 1.0 and 0.0 <= row["hoyer"] <= 1.0
        assert row["epochs"] == (2 if roles[job] == "table" else 1)
        assert ("attack_attacked" in row) == (roles[job] == "table")
    table = (tmp_path / "run" / "table.txt").read_text()
    for text in ("Ordering test error VIM < VIB < baseline", "INFERRED", "dataset fashion-mnist (paper: MNIST)",
                 "K = 2 (Figure 2)", "Figure 1"):
        assert text in table, text
    for png in ("beta_sweep.png", "codes_k2.png"):
        assert (tmp_path / "run" / png).is_file()
    saved = json.loads((tmp_path / "run" / "results.json").read_text())
    assert "codes" not in json.dumps(saved["models"])


def test_data_dir_at_the_fashion_folder_itself_is_named_fashion_mnist(tmp_path, monkeypatch):
    """The issue: --data-dir pointing at the Fashion-MNIST folder itself made dataset=auto call it MNIST
    in the table and figure titles, without the 'Fashion-MNIST used instead' note."""
    import fastmi.data.idx as idx_module
    from fastmi.experiments import plotting

    monkeypatch.setitem(idx_module.DEFAULT_DIRS, "mnist", [])
    monkeypatch.setitem(idx_module.DEFAULT_DIRS, "fashion-mnist", [])
    folder = write_fake_dataset("fashion-mnist", tmp_path / "data", n_train=40, n_test=20) / "fashion-mnist"
    titles = []
    real_save = plotting.save
    monkeypatch.setattr(plotting, "save", lambda fig, path: (titles.extend(a.get_title() for a in fig.axes),
                                                             real_save(fig, path)))
    res = run_tiny("vim_mnist", tmp_path / "run", data_dir=folder,
                   config={"models": ("baseline",), "k2_models": (), "attack_n": 0})
    assert res["dataset"] == "fashion-mnist" and "Fashion-MNIST used instead" in res["note"]
    table = (tmp_path / "run" / "table.txt").read_text()
    assert "on fashion-mnist" in table and "Fashion-MNIST used instead" in table
    assert any("fashion-mnist" in t for t in titles) and not any(" mnist" in t.replace("fashion-mnist", "") for t in titles)
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["data"][0]["dataset"] == "fashion-mnist" and "identified as fashion-mnist" in config["data"][0]["how"]


def test_vim_mnist_attack_runs_on_the_first_zeros(tmp_path):
    data = write_fake_dataset("fashion-mnist", tmp_path / "data", n_train=40, n_test=20)
    module, cfg = tiny_config("vim_mnist", models=("baseline",), sweep_betas=(), k2_models=(), epochs=1)
    ctx = runner.RunContext(name="vim_mnist", run_dir=tmp_path / "run", data_dir=str(data), progress=False)
    res = runner.run_experiment(module, cfg, ctx)
    row = res["models"]["baseline"]
    assert row["attack_attacked"] == 2 and 0 <= row["attack_successes"] <= 2
    if row["attack_successes"]:
        assert row["attack_l2"] <= row["attack_l1"] and row["attack_linf"] <= row["attack_l2"] + 1e-9


def test_vim_cifar_tiny_run_on_fake_cifar(tmp_path):
    data = write_fake_dataset("cifar10", tmp_path / "data", n_train=40, n_test=20)
    res = run_tiny("vim_cifar", tmp_path / "run", data_dir=data)
    assert set(res["models"]) == {"baseline", "vib-beta0.001-sigma1", "vim-beta0.001-sigma1"}
    assert (tmp_path / "run" / "cifar_sweeps.png").is_file()
    assert "widths=(4, 4, 4, 4) (paper: (128, 256, 512, 1024))" in (tmp_path / "run" / "table.txt").read_text()


def test_vim_cifar_quick_runs_on_fashion_mnist(tmp_path):
    """--quick reads Fashion-MNIST (what `fastmi data` can get without a network), 28 x 28 grey images
    resized to the encoder's 32 x 32 x 3; the table and figure name it."""
    assert runner.make_config(vim_cifar, True, []).dataset == "fashion-mnist"
    data = write_fake_dataset("fashion-mnist", tmp_path / "data", n_train=40, n_test=20)
    res = run_tiny("vim_cifar", tmp_path / "run", data_dir=data, config={"dataset": "fashion-mnist"})
    assert res["dataset"] == "fashion-mnist" and all(0 <= r["test_error"] <= 100 for r in res["models"].values())
    assert "on fashion-mnist" in (tmp_path / "run" / "table.txt").read_text()


def test_configs_reject_bad_settings():
    with pytest.raises(ValueError, match="dataset"):
        runner.make_config(vim_mnist, False, ["dataset=cifar10"])
    with pytest.raises(ValueError, match="dropout"):
        runner.make_config(vim_mnist, False, ["models=baseline,dropout:1e-3"])
    with pytest.raises(ValueError, match="ema_decay"):
        runner.make_config(vim_cifar, False, ["ema_decay=1.0"])
    with pytest.raises(ValueError, match="objectives"):
        runner.make_config(vim_cifar, False, ["objectives=vae"])
    cfg = runner.make_config(vim_mnist, True, ["models=baseline,vim:1e-3:2"])
    assert cfg.models == ("baseline", "vim:1e-3:2") and cfg.epochs == vim_mnist.QUICK["epochs"]
