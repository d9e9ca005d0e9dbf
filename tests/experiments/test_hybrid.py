"""The hybrid experiment: evaluation pieces against independent formulas, a tiny CIFAR run, setting errors."""
import json

import numpy as np
import pytest
import scipy.linalg
import torch
from torch import nn

from fastmi.data import write_fake_dataset
from fastmi.experiments import _hybrid_eval as ev
from fastmi.experiments import hybrid, runner
from fastmi.models.hybrid_autoencoder import HybridAutoencoder

from experiments._experiment_helpers import one_thread, run_tiny  # noqa: F401 (autouse fixture)


class _Flatten(nn.Module):
    """Identity features of 1 x 2 x 2 images (4 numbers), for the Frechet distance."""
    num_features = 4

    def forward(self, x):
        return x.flatten(1)


def _scipy_frechet(a: np.ndarray, b: np.ndarray) -> float:
    mu1, mu2 = a.mean(0), b.mean(0)
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    root = scipy.linalg.sqrtm(s1 @ s2).real
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1 + s2 - 2 * root))


def test_frechet_distance_matches_the_closed_form_with_scipys_matrix_root():
    gen = torch.Generator().manual_seed(0)
    a = torch.rand(400, 1, 2, 2, generator=gen, dtype=torch.float64)
    b = (0.5 * torch.rand(400, 1, 2, 2, generator=gen, dtype=torch.float64) + 0.3)
    ours = ev.frechet_distance(a, b, _Flatten())
    assert ours == pytest.approx(_scipy_frechet(a.flatten(1).numpy(), b.flatten(1).numpy()), rel=1e-4, abs=1e-6)
    assert ev.frechet_distance(a, a, _Flatten()) == pytest.approx(0.0, abs=1e-6)


def test_reconstruction_mse_units():
    x = torch.zeros(3, 2, 4, 4)
    r = torch.full_like(x, 0.5)
    m = ev.reconstruction_mse(x, r)
    assert m["mse_per_value"] == pytest.approx(0.25)
    assert m["mse_per_image"] == pytest.approx(0.25 * 32) and m["values_per_image"] == 32


class _Model(nn.Module):
    def __init__(self, split):
        super().__init__()
        self.ae = HybridAutoencoder(1, 4, (4, 4), cells=1, split=split)


@pytest.mark.parametrize("split", ["channels", "rows"])
def test_interpolation_endpoints_decode_the_codes_the_formulas_name(split):
    torch.manual_seed(0)
    model = _Model(split).eval()
    z0, z1 = torch.randn(2, 4, 16, 16), torch.randn(2, 4, 16, 16)
    frames = ev.interpolate(model, z0, z1, torch.linspace(0, 1, 3))
    dec = lambda z: ev.decode(model, z)  # noqa: E731
    y0, h0 = model.ae.split(z0)
    y1, h1 = model.ae.split(z1)
    assert torch.allclose(frames["z"][:, 0], dec(z0)) and torch.allclose(frames["z"][:, -1], dec(z1))
    assert torch.allclose(frames["y"][:, -1], dec(model.ae.merge(y1, h0)))
    assert torch.allclose(frames["y_hat"][:, -1], dec(model.ae.merge(y0, h1)))
    assert torch.allclose(frames["z"][:, 1], dec(0.5 * z0 + 0.5 * z1), atol=1e-6)
    move = ev.interpolation_movement(frames)
    assert move["z"] == pytest.approx(float((frames["z"][:, -1] - frames["z"][:, 0]).pow(2).mean()))


def test_tiny_cifar10_run_writes_every_figure_and_labels_the_distance(tmp_path):
    data = write_fake_dataset("cifar10", tmp_path / "data", n_train=40, n_test=20)
    res = run_tiny("hybrid", tmp_path / "run", data_dir=data, config={"dataset": "cifar10"})
    run_dir = tmp_path / "run"
    for png in ("tradeoff.png", "samples.png", "interpolations.png"):
        assert (run_dir / png).stat().st_size > 1000, png
    assert set(res["models"]) == {"0", "0.5", "1"}
    for r in res["models"].values():
        assert r["mse_per_image"] == pytest.approx(r["mse_per_value"] * 3 * 32 * 32)
        assert 0 <= r["probe_z"] <= 100
    gen = res["generation"]
    assert gen["metric"] == "classifier Frechet distance (not FID)"
    assert any("DDIM samples" in k for k in gen["rows"]) and any("calibration" in k for k in gen["rows"])
    table = (run_dir / "table.txt").read_text()
    assert "Table 1 beside this run (cifar10" in table and "77.6" in table and "49.04" in table and "claim: (b)" in table
    saved = json.loads((run_dir / "results.json").read_text())
    assert len(saved["claims"]) == 2 and saved["moco_loss_timing"]["fused_ms"] > 0
    header = (run_dir / "metrics.csv").read_text().splitlines()[0]
    assert "moco" in header and "rec" in header


def test_resume_reuses_finished_jobs(tmp_path):
    data = write_fake_dataset("fashion-mnist", tmp_path / "data", n_train=40, n_test=20)
    first = run_tiny("hybrid", tmp_path / "run", data_dir=data)
    again = run_tiny("hybrid", tmp_path / "run", data_dir=data, resume=True)
    assert again["models"] == first["models"] and again["generation"] == first["generation"]


@pytest.mark.parametrize("setting, message", [
    ("hybrid_alpha=0.3", "hybrid_alpha"), ("ddim_alphas=0.7", "ddim_alphas"), ("latent_channels=5", "latent_channels"),
    ("split=diagonal", "split"), ("queue_size=16", "queue_size"), ("inception_weights=/no/such/file.pth",
                                                                   "inception_weights"),
    ("alphas=0,2", "alphas"), ("recon_scale=max", "recon_scale")])
def test_bad_settings_are_one_line_errors(setting, message, capsys):
    with pytest.raises(SystemExit) as e:
        runner.main(["hybrid", "--set", setting, "--out", "/nonexistent-never-created"])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err and "Traceback" not in err


def test_inception_weights_need_torch_fidelity(tmp_path):
    weights = tmp_path / "inception.pth"
    weights.write_bytes(b"0")
    cfg = runner.make_config(hybrid, False, [f"inception_weights={weights}"])
    assert "torch_fidelity" in runner.requirements(hybrid, cfg)


def test_the_cifar_preset_runs_at_its_full_width_on_generated_data(tmp_path):
    """The paper-scale architecture, head, queue (65536) and DDIM, one step each on fake CIFAR-100
    (batches of 32 instead of 256 keep it seconds long)."""
    data = write_fake_dataset("cifar100", tmp_path / "data", n_train=32, n_test=32)
    cfg = runner.make_config(hybrid, False, ["dataset=cifar100", "n_train=32", "n_test=32", "epochs=1", "batch_size=32",
                                             "alphas=0,0.01,1", "probe_epochs=1", "ddim_epochs=1", "n_samples=16",
                                             "n_fid=16", "classifier_epochs=1", "sampling_steps=5"])
    ctx = runner.RunContext(name="hybrid", run_dir=tmp_path / "run", data_dir=str(data), progress=False)
    res = runner.run_experiment(hybrid, cfg, ctx)
    assert cfg.widths == (64, 128) and cfg.queue_size == 65536 and cfg.head_hidden == 2048
    assert set(res["table1"]) >= {"Hybrid (alpha=0.01)", "MoCo-v2 (alpha=0)", "NVAE (ours: autoencoder, alpha=1)"}
    assert res["generation"]["rows"]["latent DDIM samples, alpha=1"] >= 0
