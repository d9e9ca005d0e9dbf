"""nb_filters: the filter MLP, the MIM loss's uniform minimum, the dead-filter metric, a tiny run."""
import dataclasses
import math

import numpy as np
import pytest
import torch

from fastmi import functional as F
from fastmi.experiments import nb_filters
from fastmi.models import FilterMLP

from experiments._experiment_helpers import make_idx_folder, one_thread, run_tiny  # noqa: F401 (autouse fixture)


def test_prior_at_uniform_marginal():
    # R_p(C) = -sum_c [(1/C) log(1/C) + (1 - 1/C) log(1 - 1/C)]
    for c in (2, 10, 100, 500):
        direct = -c * ((1 / c) * math.log(1 / c) + (1 - 1 / c) * math.log(1 - 1 / c))
        assert nb_filters.prior_value(c) == pytest.approx(direct, rel=1e-12)
    assert nb_filters.prior_value(2) == pytest.approx(2 * math.log(2))


def test_uniform_minimum_is_33_38_and_matches_nb_mim():
    """SPEC 1.3's sanity value: 784-500-500-100 states, alpha = 4, one-hot states with uniform marginals."""
    value = nb_filters.uniform_minimum((500, 500, 100), 4.0)
    assert value == pytest.approx(33.3790, abs=5e-4)
    B = 1000   # a multiple of every width: each unit wins B / C samples
    states = []
    for c in (500, 500, 100):
        logits = torch.zeros(B, c, dtype=torch.float64)
        logits[torch.arange(B), torch.arange(B) % c] = 40.0     # softmax one-hot up to e^-40
        states.append(logits)
    res = F.nb_mim(states, alpha=4.0, backend="reference")
    assert res.loss.item() == pytest.approx(value, abs=1e-6)
    assert float(res.entropy.abs().max()) < 1e-6   # -log(1 + eps) per one-hot sample
    # the notebook's final 35.36 lies above the minimum: it still carries conditional entropy
    assert nb_filters.PAPER_NOTEBOOK_LOSS > value + 1.9


def test_filter_mlp_states_are_pre_bn():
    torch.manual_seed(0)
    net = FilterMLP()
    n_params = sum(p.numel() for p in net.parameters())
    assert n_params == (784 * 500 + 500) + (500 * 500 + 500) + (500 * 100 + 100) + 2 * (500 + 500 + 100)
    x = torch.randn(6, 1, 28, 28)
    states, out = net(x)
    assert [tuple(s.shape) for s in states] == [(6, 500), (6, 500), (6, 100)]
    fc1, fc2, fc3 = net.fcs
    bn1, bn2, bn3 = net.bns
    h1 = fc1(x.reshape(6, -1))
    torch.testing.assert_close(states[0], h1)
    h2 = fc2(torch.relu(bn1(h1)))
    torch.testing.assert_close(states[1], h2)
    torch.testing.assert_close(out, torch.relu(bn3(fc3(torch.relu(bn2(h2))))))
    assert net.filters.shape == (500, 784)


def test_dead_filter_metric_on_a_constructed_case():
    net = FilterMLP(dim_in=4, hidden=(5, 5), dim_out=3)
    init = torch.full((5, 4), 0.5)
    with torch.no_grad():
        w = init.clone()
        w[0, 0] += 2.0     # units 0, 1, 2 respond to inputs 0, 1, 2; their filters moved by 2 / 1 = 2
        w[1, 1] += 2.0
        w[2, 2] += 2.0
        w[4] -= 0.1        # units 3 and 4 stay (almost) at init: moved by 0 and 0.2
        net.fcs[0].weight.copy_(w)
        net.fcs[0].bias.zero_()
    x = torch.eye(4)[:3] * 2.0            # inputs excite units 0, 1, 2 only
    d = nb_filters.dead_filters(net, x, init)
    assert d["dead"] == pytest.approx(2 / 5)                       # units 3 and 4 never win
    assert d["dead_mask"].tolist() == [False, False, False, True, True]
    assert d["change_live"] == pytest.approx(2.0)
    assert d["change_dead"] == pytest.approx(0.0)                  # torch's median: the lower of 0 and 0.2
    with torch.no_grad():
        net.fcs[0].weight[3, 3] += 5.0    # now unit 3 wins on the 4th input: alive
    d2 = nb_filters.dead_filters(net, torch.eye(4) * 2.0)
    assert d2["dead_mask"].tolist() == [False, False, False, False, True] and "change_dead" not in d2


def test_mosaic_layout():
    filters = np.arange(3 * 4, dtype=np.float64).reshape(3, 4)   # three 2 x 2 filters
    m = nb_filters.mosaic(filters, 3, side=2, cols=2)
    assert m.shape == (2 * 3 + 1, 2 * 3 + 1)
    np.testing.assert_array_equal(m[1:3, 1:3], [[0, 1], [2, 3]])
    np.testing.assert_array_equal(m[1:3, 4:6], [[4, 5], [6, 7]])
    np.testing.assert_array_equal(m[4:6, 1:3], [[8, 9], [10, 11]])
    assert np.isnan(m[4:6, 4:6]).all() and np.isnan(m[0]).all()


def test_tiny_run_on_generated_idx(tmp_path):
    data = make_idx_folder(tmp_path / "data", n_train=40, n_test=20)
    res = run_tiny("nb_filters", tmp_path / "run", data_dir=data)
    assert res["dataset"] == "fashion-mnist"
    assert set(res["settings"]) == {"alpha=0,beta=4", "alpha=4,beta=0", "alpha=4,beta=4"}
    for s in res["settings"].values():
        assert 0.0 <= s["dead"] <= 1.0 and s["change_live"] >= 0.0
    assert res["settings"]["alpha=4,beta=0"]["rc"] == 0.0
    assert res["uniform_minimum_alpha4"] == pytest.approx(nb_filters.uniform_minimum((16, 16, 8), 4.0))
    table = (tmp_path / "run" / "table.txt").read_text()
    assert "dead (never wins)" in table and "epochs=2 (paper: 50)" in table
    assert (tmp_path / "run" / "nb_filters.png").is_file()


def test_mim_loss_decreases_in_a_short_run(tmp_path):
    data = make_idx_folder(tmp_path / "data", n_train=200, n_test=20)
    _, cfg = __import__("experiments._experiment_helpers", fromlist=["tiny_config"]).tiny_config("nb_filters")
    cfg = dataclasses.replace(cfg, settings=((4.0, 4.0),), n_train=200, batch=100, epochs=8)
    from fastmi.experiments import runner

    ctx = runner.RunContext(name="nb_filters", run_dir=tmp_path / "run", data_dir=str(data), progress=False)
    res = runner.run_experiment(nb_filters, cfg, ctx)
    import csv

    rows = list(csv.DictReader(open(tmp_path / "run" / "metrics.csv")))
    assert float(rows[-1]["loss"]) < float(rows[0]["loss"]) - 0.02
    assert float(rows[-1]["entropy"]) < float(rows[0]["entropy"])
    assert res["settings"]["alpha=4,beta=4"]["loss"] == pytest.approx(float(rows[-1]["loss"]))


def test_config_validation():
    with pytest.raises(ValueError, match="settings"):
        dataclasses.replace(nb_filters.Config(), settings=((1.0,),)).validate()
    with pytest.raises(ValueError, match="dataset"):
        dataclasses.replace(nb_filters.Config(), dataset="cifar10").validate()
