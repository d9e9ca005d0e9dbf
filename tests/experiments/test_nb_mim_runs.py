"""Neural Bayes-MIM experiments end to end on tiny generated data: the quick (Fashion-MNIST) path and the
full-setting CIFAR-10 / CIFAR-100 / STL-10 commands, table contents, resume and the command line."""
import json

import pytest

from fastmi.data import write_fake_dataset
from fastmi.experiments import nb_mim, nb_mim_ablation, nb_mim_batch, runner

from experiments._experiment_helpers import make_idx_folder, one_thread, run_tiny, tiny_config  # noqa: F401 (autouse fixture)


@pytest.mark.parametrize("dataset", ["cifar10", "cifar100", "stl10"])
def test_full_setting_datasets_on_fake_files(dataset, tmp_path):
    root = tmp_path / "data"
    for name in ({"cifar100": ("cifar10", "cifar100")}.get(dataset, (dataset,))):
        write_fake_dataset(name, root, n_train=24, n_test=12, n_unlabeled=16)
    module, cfg = tiny_config("nb_mim", dataset=dataset, n_train=0, n_test=0, epochs=1)
    ctx = runner.RunContext(name="nb_mim", run_dir=tmp_path / "run", data_dir=str(root), progress=False)
    res = runner.run_experiment(module, cfg, ctx)
    table = (tmp_path / "run" / "table.txt").read_text()
    paper = nb_mim.PAPER_TABLE1[dataset]
    assert f"{paper['mim']:.2f}" in table and f"{paper['random']:.2f}" in table
    assert "first 128, best epoch" in table and "full test, last epoch" in table
    assert 0 <= res["summary"]["mim"]["first128_best"] <= 1
    assert len(res["random_grid"]) == 16
    run = next(iter(res["runs"].values()))
    assert run["best_epoch"] == 0 and set(run["probes"]) == {"0.001"}


def test_quick_table_names_every_difference(tmp_path):
    data = make_idx_folder(tmp_path / "data", n_train=40, n_test=20)
    res = run_tiny("nb_mim", tmp_path / "run", data_dir=data)
    table = (tmp_path / "run" / "table.txt").read_text()
    for key in ("dataset='fashion-mnist'", "width=0.05", "epochs=2", "mbs=10", "bs=20", "n_train=30",
                "probe_epochs=2", "encoder channels 10-25-35-50", "zero-padded to 32x32"):
        assert key in table, key
    assert "67.97 (58.59-67.97)" in table and "82.81" in table
    r = res["summary"]["random"]
    assert r["first128_best"]["min"] <= r["first128_best"]["best"]
    saved = json.loads((tmp_path / "run" / "results.json").read_text())
    assert set(saved["seconds"]["jobs"]) == {"random-encoder", next(iter(saved["runs"]))}


def test_resume_gives_the_same_results(tmp_path):
    data = make_idx_folder(tmp_path / "data", n_train=40, n_test=20)
    module, cfg = tiny_config("nb_mim", random_baseline=False, epochs=3)
    ctx = lambda **kw: runner.RunContext(name="nb_mim", run_dir=tmp_path / "run", data_dir=str(data),  # noqa: E731
                                         progress=False, **kw)
    full = runner.run_experiment(module, cfg, ctx())["runs"]
    with pytest.raises(runner.Interrupted):
        runner.run_experiment(module, cfg, ctx(stop_after=2, overwrite=True))
    resumed = runner.run_experiment(module, cfg, ctx(resume=True))["runs"]
    assert resumed == full


def test_batch_grid_layout(tmp_path):
    data = make_idx_folder(tmp_path / "data", n_train=40, n_test=20)
    module, cfg = tiny_config("nb_mim_batch", mbs_values=(5, 20), bs_values=(10, 20))
    ctx = runner.RunContext(name="nb_mim_batch", run_dir=tmp_path / "run", data_dir=str(data), progress=False)
    res = runner.run_experiment(module, cfg, ctx)
    assert set(res["grid"]) == {"5x10", "5x20", "20x20"}                   # BS < MBS is N/A, as in the paper
    # 30 images, 1 epoch: MBS 5 -> 6 draws, BS 10 -> a step every 2 draws
    assert res["grid"]["5x10"]["opt_steps"] == 3 and res["grid"]["5x20"]["opt_steps"] == 1
    assert "N/A" in (tmp_path / "run" / "table.txt").read_text()
    assert (tmp_path / "run" / "nb_mim_batch.png").is_file()
    with pytest.raises(ValueError, match="bs_values must hold a value >= some of mbs_values"):
        runner.make_config(nb_mim_batch, False, ["mbs_values=500", "bs_values=50"])


def test_ablation_draws_and_figures(tmp_path):
    cfg = nb_mim_ablation.Config()
    pairs = nb_mim_ablation.draws(cfg, 0)
    assert len(pairs) == 42 and pairs == nb_mim_ablation.draws(cfg, 0)
    assert all(0 <= a <= 10 and 0 < b <= 5 for a, b in pairs[:32])
    assert all(a == 0 for a, _ in pairs[32:37]) and all(b == 0 for _, b in pairs[37:])
    data = make_idx_folder(tmp_path / "data", n_train=40, n_test=20)
    module, tiny = tiny_config("nb_mim_ablation")
    ctx = runner.RunContext(name="nb_mim_ablation", run_dir=tmp_path / "run", data_dir=str(data), progress=False)
    res = runner.run_experiment(module, tiny, ctx)
    assert len(res["points"]) == 3 * 2 * 2 and set(res["summary"]) == {"v1-pool0", "v1-pool2", "v2-pool0", "v2-pool2"}
    for f in ("nb_mim_ablation_fig2.png", "nb_mim_ablation_fig6.png"):
        assert (tmp_path / "run" / f).is_file()


def test_config_errors():
    with pytest.raises(ValueError, match="bs"):
        runner.make_config(nb_mim, False, ["mbs=500", "bs=100"])
    with pytest.raises(ValueError, match="dataset must be one of"):
        runner.make_config(nb_mim, False, ["dataset=imagenet"])
    with pytest.raises(ValueError, match="priors"):
        runner.make_config(nb_mim_ablation, False, ["priors=v3"])
    cfg = runner.make_config(nb_mim, True, [])
    assert cfg.dataset == "fashion-mnist" and cfg.width == 0.1
