"""nb_dms_images: Appendix C's CNN, the train / validation split shared with the probe, a tiny run."""
import dataclasses

import pytest
import torch

from fastmi.experiments import nb_dms_images
from fastmi.experiments._nb_dms import dms_step
from fastmi.experiments.probe import train_probe
from fastmi.models import DMSCNN

from experiments._experiment_helpers import make_idx_folder, one_thread, run_tiny  # noqa: F401 (autouse fixture)


def test_dms_cnn_shapes_and_parameters():
    net = DMSCNN()
    convs = [m for m in net.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [(c.in_channels, c.out_channels, c.kernel_size, c.stride, c.padding) for c in convs] == [
        (1, 100, (3, 3), (1, 1), (0, 0)), (100, 100, (3, 3), (1, 1), (0, 0)),
        (100, 200, (3, 3), (1, 1), (0, 0)), (200, 500, (3, 3), (1, 1), (0, 0))]
    n_params = sum(p.numel() for p in net.parameters())
    conv = (9 * 1 * 100 + 100) + (9 * 100 * 100 + 100) + (9 * 100 * 200 + 200) + (9 * 200 * 500 + 500)
    assert n_params == conv + 2 * (100 + 100 + 200 + 500) + (500 * 10 + 10)
    shapes = []
    hooks = [c.register_forward_hook(lambda m, i, o: shapes.append(tuple(o.shape[1:]))) for c in convs]
    x = torch.randn(3, 1, 28, 28)
    assert net(x).shape == (3, 10) and net.features(x).shape == (3, 500)
    for h in hooks:
        h.remove()
    # 26 -> pool 13 -> 11 -> 9 -> pool 4 -> 2 x 2 before the global average pool
    assert shapes[:4] == [(100, 26, 26), (100, 11, 11), (200, 9, 9), (500, 2, 2)]
    bns = [m for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert len(bns) == 4 and all(torch.all(b.weight == 1) and torch.all(b.bias == 0) for b in bns)
    w = convs[1].weight.reshape(100, -1)
    torch.testing.assert_close(w @ w.T, torch.eye(100), atol=1e-4, rtol=0)   # orthogonal rows


def test_split_is_the_probe_validation_split():
    """The probe validates on exactly the images held out from DMS training: with all-zero features the
    probe predicts the majority class, so a validation set made only of the minority class scores 0."""
    n, seed = 200, 11
    tr, va = nb_dms_images.split_train_val(n, 0.1, seed)
    assert len(va) == 20 and len(tr) == 180 and len(set(tr.tolist()) | set(va.tolist())) == n
    y = torch.ones(n, dtype=torch.int64)
    y[va] = 0
    feats = torch.zeros(n, 4)
    r = train_probe(feats, y, feats[:10], y[:10], epochs=3, lr=0.1, val_fraction=0.1, patience=5,
                    generator=torch.Generator().manual_seed(seed))
    assert r.val_acc == 0.0
    with pytest.raises(ValueError, match="val_fraction"):
        nb_dms_images.split_train_val(3, 0.9, 0)


def test_dms_loss_decreases_on_two_kinds_of_images():
    torch.manual_seed(0)
    x = torch.cat([torch.rand(32, 1, 28, 28) * 0.2 - 1.0, torch.rand(32, 1, 28, 28) * 0.2 + 0.8])
    net = DMSCNN(1, 2, (8, 8, 8, 8))
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    gen = torch.Generator().manual_seed(0)
    rows = [dms_step(net, opt, x, beta=1.0, generator=gen) for _ in range(25)]
    assert rows[-1]["dms"] < rows[0]["dms"] - 0.2


def test_tiny_run_on_generated_idx(tmp_path):
    data = make_idx_folder(tmp_path / "data", n_train=40, n_test=20)
    res = run_tiny("nb_dms_images", tmp_path / "run", data_dir=data)
    assert res["dataset"] == "fashion-mnist" and res["n_train"] == 36 and res["n_val"] == 4
    for key in ("dms", "random"):
        p = res["probes"][key]
        assert 0.0 <= p["test_acc"] <= 1.0 and 0.0 <= p["first_n_best_acc"] <= 1.0
    table = (tmp_path / "run" / "table.txt").read_text()
    assert "random CNN" in table and "99.22" in table and "batch=16 (paper: 5000)" in table


def test_config_validation():
    with pytest.raises(ValueError, match="probe_features"):
        dataclasses.replace(nb_dms_images.Config(), probe_features="hidden").validate()
    with pytest.raises(ValueError, match="val_fraction"):
        dataclasses.replace(nb_dms_images.Config(), val_fraction=1.0).validate()


def test_calibrate_bn_uses_the_statistics_of_the_data():
    torch.manual_seed(0)
    net = DMSCNN(1, 3, (4, 4, 4, 4))
    x = torch.randn(20, 1, 28, 28) * 2 + 1
    inputs = []
    hook = net.bns[0].register_forward_hook(lambda m, i, o: inputs.append(i[0].detach()))
    nb_dms_images.calibrate_bn(net, x, batch=10, device="cpu")
    hook.remove()
    assert len(inputs) == 2 and net.bns[0].momentum == 0.1          # two batches; momentum restored
    per_batch_mean = torch.stack([t.mean(dim=(0, 2, 3)) for t in inputs])
    torch.testing.assert_close(net.bns[0].running_mean, per_batch_mean.mean(0), rtol=1e-5, atol=1e-6)


def test_resume_reuses_the_trained_network(tmp_path):
    """A resumed run whose DMS job had finished must get the trained weights back, not a fresh network."""
    from fastmi.experiments import runner

    _, cfg = __import__("experiments._experiment_helpers", fromlist=["tiny_config"]).tiny_config("nb_dms_images")
    x = torch.randn(24, 1, 28, 28)
    ctx = runner.RunContext(name="nb_dms_images", run_dir=tmp_path, progress=False)
    trained, _ = nb_dms_images.train_dms(ctx, cfg, x)
    torch.manual_seed(ctx.job_seed("dms-cnn"))
    fresh = DMSCNN(1, cfg.k, tuple(cfg.channels))
    assert not torch.equal(fresh.fc.weight, trained.fc.weight)
    ctx2 = runner.RunContext(name="nb_dms_images", run_dir=tmp_path, progress=False, resume=True)
    resumed, _ = nb_dms_images.train_dms(ctx2, cfg, x)
    for k, v in trained.state_dict().items():
        assert torch.equal(v, resumed.state_dict()[k]), k
