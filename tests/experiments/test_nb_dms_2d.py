"""nb_dms_2d: the 2-D manifold data, the 512-D embedding, the DMS network and training step."""
import dataclasses
import math

import numpy as np
import pytest
import torch

from fastmi import functional as F
from fastmi.data.manifolds import (Standardizer, embed, make_manifolds, random_rotation, rotation_2d, spirals,
                                   unembed)
from fastmi.experiments import nb_dms_2d, runner
from fastmi.experiments._nb_dms import dms_step, predict, rc_weight
from fastmi.models import DMSMLP

from experiments._experiment_helpers import one_thread  # noqa: F401 (autouse fixture)


def test_spirals_recipe():
    x, y = spirals(50, arms=3, angle=100.0, noise=0.5, rng=np.random.default_rng(0))
    assert x.shape == (150, 2) and np.array_equal(y, np.repeat([0, 1, 2], 50))
    arm = x[:50]
    # the other arms are the first one rotated by 120 and 240 degrees (same noise)
    np.testing.assert_allclose(x[50:100], arm @ rotation_2d(120).T, atol=1e-12)
    np.testing.assert_allclose(x[100:], arm @ rotation_2d(240).T, atol=1e-12)
    # t in [1, 1 + 780 * (100/180 pi) / 360], uniform noise in [0, 0.5) on each coordinate
    t_max = 1 + 780 * (100 / 180 * math.pi) / 360
    r = np.linalg.norm(arm, axis=1)
    assert r.min() > 1 - 0.5 * math.sqrt(2) and r.max() < t_max + 0.5 * math.sqrt(2)


@pytest.mark.parametrize("name,n,k", [("circles", 40, 2), ("moons", 40, 2), ("blobs", 30, 3), ("spirals", 30, 3)])
def test_make_manifolds_shapes(name, n, k):
    x, y = make_manifolds(name, n, rng=np.random.default_rng(1))
    assert x.shape == (n, 2) and y.shape == (n,) and set(np.unique(y)) == set(range(k))
    with pytest.raises(ValueError, match="name must be one of"):
        make_manifolds("swissroll", 10)


def test_rotation_and_embedding_roundtrip():
    rng = np.random.default_rng(2)
    q = random_rotation(64, rng)
    np.testing.assert_allclose(q @ q.T, np.eye(64), atol=1e-10)
    x = rng.standard_normal((20, 2))
    z = embed(x, q)
    padded = np.zeros((20, 64))
    padded[:, :2] = x
    np.testing.assert_allclose(z, padded @ q.T, atol=1e-12)       # [x, 0] Q^T
    np.testing.assert_allclose(np.linalg.norm(z, axis=1), np.linalg.norm(x, axis=1), rtol=1e-12)
    np.testing.assert_allclose(unembed(z, q), x, atol=1e-12)
    with pytest.raises(ValueError, match="embed"):
        embed(rng.standard_normal((3, 65)), q)


def test_standardisation_except_spirals():
    cfg = dataclasses.replace(nb_dms_2d.Config(), dim=32)
    moons = nb_dms_2d.make_data(cfg, "moons", 0)
    plane = unembed(moons["x"].double().numpy(), moons["rot"])   # back from 32-D: standardised 2-D data
    np.testing.assert_allclose(plane.mean(0), 0, atol=1e-6)
    np.testing.assert_allclose(plane.std(0), 1, atol=1e-6)
    np.testing.assert_allclose(moons["std"].inverse(plane), moons["x2"], atol=1e-5)
    sp = nb_dms_2d.make_data(cfg, "spirals", 0)
    assert sp["x"].shape == (1200, 32) and sp["x"].dtype == torch.float32
    np.testing.assert_allclose(unembed(sp["x"].double().numpy(), sp["rot"]), sp["x2"], atol=1e-5)   # not standardised
    s = Standardizer(sp["x2"], enabled=False)
    np.testing.assert_array_equal(s(sp["x2"]), sp["x2"])


def test_dms_mlp_architecture():
    net = DMSMLP(512, 3)
    linears = [m for m in net.modules() if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(512, 400), (400, 400), (400, 400), (400, 400),
                                                                 (400, 3)]
    assert all(m.bias is None for m in linears)
    assert sum(isinstance(m, torch.nn.BatchNorm1d) for m in net.modules()) == 4
    n_params = sum(p.numel() for p in net.parameters())
    assert n_params == 512 * 400 + 3 * 400 * 400 + 400 * 3 + 4 * 2 * 400
    assert net(torch.randn(5, 512)).shape == (5, 3)
    with pytest.raises(ValueError, match="k >= 2"):
        DMSMLP(512, 1)


def test_dms_mlp_bn_init():
    torch.manual_seed(0)
    ones = [m.weight for m in DMSMLP(8, 3, (32, 32)).modules() if isinstance(m, torch.nn.BatchNorm1d)]
    assert all(torch.equal(w, torch.ones_like(w)) for w in ones)
    torch.manual_seed(0)
    uni = [m for m in DMSMLP(8, 3, (32, 32), bn_init="uniform").modules() if isinstance(m, torch.nn.BatchNorm1d)]
    for m in uni:   # PyTorch <= 1.1: gamma ~ U(0, 1), beta = 0
        assert 0 <= m.weight.min() and m.weight.max() < 1 and m.weight.std() > 0.1
        assert torch.equal(m.bias, torch.zeros_like(m.bias))
    with pytest.raises(ValueError, match="bn_init"):
        DMSMLP(8, 3, bn_init="zeros")
    with pytest.raises(ValueError, match="bn_init"):
        dataclasses.replace(nb_dms_2d.Config(), bn_init="zeros").validate()


def test_uniform_bn_init_matches_the_notebooks_first_epoch():
    """DML.ipynb's spirals log starts at DMS 1.370 and R_c 0.081: U(0, 1) gammas give such values at
    initialisation, gammas of 1 give a larger R_c (~0.3) and a lower DMS (~1.35) (SPEC 1.6 data)."""
    data = nb_dms_2d.make_data(nb_dms_2d.Config(), "spirals", 123)
    values = {}
    for init in ("ones", "uniform"):
        rc, dms = [], []
        for s in range(3):
            torch.manual_seed(s)
            net = DMSMLP(512, 3, bn_init=init).train()
            with torch.no_grad():
                xt, z = F.perturb_in_span(data["x"], generator=torch.Generator().manual_seed(s))
                logits = net(data["x"])
                rc.append(F.fd_smoothness(logits, net(xt), z).item())
                dms.append(F.nb_dms(logits).item())
        values[init] = (np.mean(rc), np.mean(dms))
    assert values["uniform"][0] < 0.15 < 0.2 < values["ones"][0]
    assert values["ones"][1] < 1.362 < values["uniform"][1] < 2 * math.log(2)


def test_rc_weight_switch_or_multiply():
    assert rc_weight(3.0, False) == 1.0 and rc_weight(0.0, False) == 0.0
    assert rc_weight(3.0, True) == 3.0


def test_dms_step_rc_matches_independent_computation():
    torch.manual_seed(0)
    net = DMSMLP(8, 2, (16, 16))
    x = torch.randn(12, 8)
    opt = torch.optim.SGD(net.parameters(), lr=0.0)   # no update: the terms can be recomputed
    gen = torch.Generator().manual_seed(5)
    twin = torch.Generator().manual_seed(5)
    row = dms_step(net, opt, x, beta=3.0, generator=gen, backend="reference")
    x_tilde, zeta = F.perturb_in_span(x, generator=twin, backend="reference")
    net.train()
    with torch.no_grad():
        clean, pert = net(x), net(x_tilde)
    rc = (((clean - pert) ** 2).sum(1) / zeta ** 2).mean()
    assert row["rc"].item() == pytest.approx(rc.item(), rel=1e-5)
    assert row["dms"].item() == pytest.approx(F.nb_dms(clean).item(), rel=1e-6)
    assert row["loss"].item() == pytest.approx(row["dms"].item() + row["rc"].item(), rel=1e-6)
    with pytest.raises(ValueError, match="rc_bn"):
        dms_step(net, opt, x, beta=1.0, rc_bn="frozen")


def test_rc_clean_pass_separate_same_step_more_bn_updates():
    """DML.ipynb's own R_c clean pass: the same parameters after the step, BN running stats updated 3x not 2x."""
    x = torch.randn(12, 8)
    nets, counts = [], []
    for mode in ("reuse", "separate"):
        torch.manual_seed(0)
        net = DMSMLP(8, 3, (16, 16))
        opt = torch.optim.Adam(net.parameters(), lr=1e-2)
        dms_step(net, opt, x, beta=1.0, rc_clean_pass=mode, generator=torch.Generator().manual_seed(5),
                 backend="reference")
        nets.append(net)
        counts.append(int(net.net[1].num_batches_tracked))
    assert counts == [2, 3]
    for a, b in zip(nets[0].parameters(), nets[1].parameters()):
        assert torch.allclose(a, b, atol=1e-6)
    assert not torch.allclose(nets[0].net[1].running_mean, nets[1].net[1].running_mean)
    with pytest.raises(ValueError, match="rc_clean_pass"):
        dms_step(nets[0], torch.optim.SGD(nets[0].parameters(), lr=0.0), x, beta=1.0, rc_clean_pass="x")
    with pytest.raises(ValueError, match="rc_clean_pass"):
        dataclasses.replace(nb_dms_2d.Config(), rc_clean_pass="x").validate()


def test_short_run_lowers_dms_loss_and_separates_blobs():
    cfg = dataclasses.replace(nb_dms_2d.Config(), dim=16)
    data = nb_dms_2d.make_data(cfg, "blobs", 1)
    torch.manual_seed(0)
    net = DMSMLP(16, 3, (64, 64))
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    gen = torch.Generator().manual_seed(0)
    rows = [dms_step(net, opt, data["x"], beta=3.0, generator=gen) for _ in range(100)]
    assert rows[-1]["dms"] < rows[0]["dms"] - 0.5
    from sklearn.metrics import adjusted_rand_score

    pred = predict(net, data["x"]).argmax(1).numpy()
    assert adjusted_rand_score(data["labels"], pred) > 0.9


def test_tiny_run_results(tmp_path):
    from experiments._experiment_helpers import run_tiny

    res = run_tiny("nb_dms_2d", tmp_path / "run")
    assert set(res["datasets"]) == {"spirals", "circles", "moons", "blobs"}
    for d, r in res["datasets"].items():
        assert -1.0 <= r["ari"][0] <= 1.0 and 1 <= r["clusters_used"][0] <= (3 if d in ("spirals", "blobs") else 2)
    assert (tmp_path / "run" / "nb_dms_2d.png").is_file()
    table = (tmp_path / "run" / "table.txt").read_text()
    assert "ARI" in table and "spirals_epochs=3 (paper: 600)" in table


def test_config_validation():
    with pytest.raises(ValueError, match="datasets"):
        dataclasses.replace(nb_dms_2d.Config(), datasets=("swissroll",)).validate()
    with pytest.raises(ValueError, match="rc_bn"):
        dataclasses.replace(nb_dms_2d.Config(), rc_bn="x").validate()
    with pytest.raises(ValueError, match="circles"):
        dataclasses.replace(nb_dms_2d.Config(), circles_k=1).validate()


def _fake_run(dms_values):
    return runner.JobResult([{"dms": v} for v in dms_values], {}, 0.0)


def test_selection_score_is_the_median_of_the_last_window():
    rows = _fake_run([9.0, 9.0, 0.1, 0.5, 0.2]).rows
    assert nb_dms_2d.selection_score(rows, 3) == pytest.approx(0.2)
    assert nb_dms_2d.selection_score(rows, 50) == pytest.approx(0.5)   # a window longer than the run: all epochs


def test_choose_restart_takes_the_lowest_objective_and_ignores_a_final_spike():
    steady = _fake_run([0.3] * 10)
    spiky_but_better = _fake_run([0.01] * 9 + [0.9])    # jumped partitions at its last epoch
    assert nb_dms_2d.choose_restart([steady, spiky_but_better], 5) == 1
    assert nb_dms_2d.choose_restart([steady, _fake_run([0.3] * 10)], 5) == 0          # ties: the first
    assert nb_dms_2d.choose_restart([_fake_run([float("nan")] * 5), steady], 5) == 1  # NaN never wins


def test_restarts_share_the_data_and_keep_restart0_as_the_single_run(tmp_path):
    from experiments._experiment_helpers import run_tiny

    assert nb_dms_2d.job_name("moons", 2) == "moons-seed2"
    assert nb_dms_2d.data_job(nb_dms_2d.job_name("moons", 2, 3)) == "moons-seed2"
    single = run_tiny("nb_dms_2d", tmp_path / "one", config={"datasets": ("moons", "blobs")})
    multi = run_tiny("nb_dms_2d", tmp_path / "three",
                     config={"datasets": ("moons", "blobs"), "restarts": 3, "select_window": 2})
    for d in ("moons", "blobs"):
        r = multi["datasets"][d]
        assert len(r["restart_ari"][0]) == len(r["restart_score"][0]) == 3
        assert r["restart_ari"][0][0] == pytest.approx(single["datasets"][d]["ari"][0])
        pick = r["chosen_restart"][0]
        assert r["restart_score"][0][pick] == min(r["restart_score"][0])
        assert r["ari"][0] == r["restart_ari"][0][pick]
    jobs = {row.split(",")[0] for row in (tmp_path / "three" / "metrics.csv").read_text().splitlines()[1:]}
    assert jobs == {"moons-seed0", "moons-seed0-restart1", "moons-seed0-restart2",
                    "blobs-seed0", "blobs-seed0-restart1", "blobs-seed0-restart2"}
    table = (tmp_path / "three" / "table.txt").read_text()
    assert "Restarts: 3 per seed" in table and "restarts=3 (paper: 1)" in table and "*" in table


def test_restarts_validation():
    with pytest.raises(ValueError, match="restarts"):
        dataclasses.replace(nb_dms_2d.Config(), restarts=0).validate()
    with pytest.raises(ValueError, match="select_window"):
        dataclasses.replace(nb_dms_2d.Config(), select_window=0).validate()


def test_rc_noise_gaussian_draws_normal_coefficients():
    """rc_noise="gaussian": R_c's directions are N(0, 1) subset sums (the paper's text), the same zeta."""
    torch.manual_seed(0)
    net = DMSMLP(8, 2, (16, 16))
    x = torch.randn(12, 8)
    opt = torch.optim.SGD(net.parameters(), lr=0.0)
    rows = {}
    for noise in ("bernoulli", "gaussian"):
        rows[noise] = dms_step(net, opt, x, beta=1.0, rc_noise=noise, generator=torch.Generator().manual_seed(5),
                               backend="reference")
        x_tilde, zeta = F.perturb_in_span(x, noise=noise, generator=torch.Generator().manual_seed(5),
                                          backend="reference")
        net.train()
        with torch.no_grad():
            clean, pert = net(x), net(x_tilde)
        assert rows[noise]["rc"].item() == pytest.approx((((clean - pert) ** 2).sum(1) / zeta ** 2).mean().item(),
                                                         rel=1e-5)
    assert rows["bernoulli"]["rc"].item() != pytest.approx(rows["gaussian"]["rc"].item(), rel=1e-3)
    with pytest.raises(ValueError, match="rc_noise"):
        dms_step(net, opt, x, beta=1.0, rc_noise="uniform")
    with pytest.raises(ValueError, match="rc_noise"):
        dataclasses.replace(nb_dms_2d.Config(), rc_noise="uniform").validate()


def test_batch_steps_per_epoch(tmp_path, monkeypatch):
    """batch=B: floor(N / B) steps per epoch on shuffled batches of B distinct points; 0: one full step."""
    from experiments._experiment_helpers import run_tiny, tiny_config

    seen = []

    def recording_step(model, opt, x, **kw):
        seen.append(x.clone())
        return real(model, opt, x, **kw)

    real = nb_dms_2d.dms_step
    monkeypatch.setattr(nb_dms_2d, "dms_step", recording_step)
    _, cfg = tiny_config("nb_dms_2d", datasets=("moons",))
    n, epochs = cfg.moons_n, cfg.moons_epochs
    for batch, per_epoch, size in ((0, 1, n), (n // 3, 3, n // 3), (n // 2 + 1, 1, n // 2 + 1)):
        seen.clear()
        res = run_tiny("nb_dms_2d", tmp_path / f"b{batch}", config={"datasets": ("moons",), "batch": batch})
        assert len(seen) == per_epoch * epochs and {len(b) for b in seen} == {size}
        first_epoch = torch.cat(seen[:per_epoch])
        assert len(torch.unique(first_epoch, dim=0)) == len(first_epoch)     # no point twice in an epoch
        assert np.isfinite(res["datasets"]["moons"]["final_dms"][0])
    with pytest.raises(ValueError, match="batch"):
        dataclasses.replace(nb_dms_2d.Config(), batch=1).validate()
    with pytest.raises(ValueError, match="batch"):
        dataclasses.replace(nb_dms_2d.Config(), batch=-5).validate()
