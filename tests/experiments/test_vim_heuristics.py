"""Table 1's heuristic baselines of the VIM paper: dropout, label smoothing, confidence penalty."""
import math

import numpy as np
import pytest
import torch
from torch import nn

from fastmi.experiments import _vim, vim_mnist
from fastmi.models.vim import MLPEncoder

from experiments._experiment_helpers import one_thread, run_tiny, tiny_data_dir  # noqa: F401 (autouse fixture)


def _numpy_terms(logits, y):
    z = logits.astype(np.float64)
    p = np.exp(z - z.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    ce = -np.log(p[np.arange(len(y)), y]).mean()
    entropy = -(p * np.log(p)).sum(1).mean()
    return p, ce, entropy


def test_confidence_penalty_is_ce_minus_beta_entropy():
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(7, 10, generator=gen, dtype=torch.float64) * 3
    y = torch.randint(0, 10, (7,), generator=gen)
    _, ce, entropy = _numpy_terms(logits.numpy(), y.numpy())
    loss, h = _vim.confidence_penalty(logits, y, 0.3)
    assert float(h) == pytest.approx(entropy, rel=1e-12)
    assert float(loss) == pytest.approx(ce - 0.3 * entropy, rel=1e-12)
    spec = _vim.parse_spec("confpen:0.3", 1.0)
    total, ce_t, reg = _vim.objective_loss(spec, logits, y, None, None, None)
    assert float(total) == pytest.approx(ce - 0.3 * entropy, rel=1e-12)
    assert float(ce_t) == pytest.approx(ce, rel=1e-12) and float(reg) == pytest.approx(entropy, rel=1e-12)


def test_label_smoothing_is_ce_against_smoothed_targets():
    gen = torch.Generator().manual_seed(1)
    logits = torch.randn(5, 10, generator=gen, dtype=torch.float64)
    y = torch.randint(0, 10, (5,), generator=gen)
    p, ce, _ = _numpy_terms(logits.numpy(), y.numpy())
    eps = 0.1
    q = np.full((5, 10), eps / 10)
    q[np.arange(5), y.numpy()] += 1 - eps
    expected = -(q * np.log(p)).sum(1).mean()
    total, ce_t, reg = _vim.objective_loss(_vim.parse_spec("smooth:0.1", 1.0), logits, y, None, None, None)
    assert float(total) == pytest.approx(expected, rel=1e-12)
    assert float(ce_t) == pytest.approx(ce, rel=1e-12)
    assert float(reg) == pytest.approx(expected - ce, rel=1e-10)


def test_dropout_model_drops_hidden_units_in_training_only():
    spec = _vim.parse_spec("dropout:0.5", 1.0)
    assert not spec.stochastic and spec.job == "dropout0.5"
    cfg = vim_mnist.Config(hidden=(32, 32), k=4)
    model = vim_mnist._builder(cfg, 4)(spec)
    drops = [m for m in model.modules() if isinstance(m, nn.Dropout)]
    assert [d.p for d in drops] == [0.5, 0.5]
    x = torch.rand(3, 784)
    model.eval()
    torch.testing.assert_close(model.mean_logits(x), model.mean_logits(x))
    model.train()
    assert not torch.equal(model.encode(x)[0], model.encode(x)[0])
    assert not [m for m in MLPEncoder(784, (8,), 2).modules() if isinstance(m, nn.Dropout)]
    assert not vim_mnist._builder(cfg, 4)(_vim.parse_spec("confpen:0.1", 1.0)).stochastic


@pytest.mark.parametrize("text", ["dropout:1.5", "smooth:0", "confpen:-1", "dropout:0.5:2", "confpen"])
def test_bad_heuristic_specs(text):
    with pytest.raises(ValueError):
        _vim.parse_spec(text, 1.0)


def _plan_rows(errors):
    plan, rows = {}, {}
    for text, e in errors.items():
        spec = _vim.parse_spec(text, 1.0)
        plan[spec.job] = (spec, 4, 1, "table")
        rows[spec.job] = {"test_error": e}
    return plan, rows


def test_heuristic_claims_decide_only_beyond_two_standard_errors():
    plan, rows = _plan_rows({"baseline": 3.0, "dropout:0.5": 2.0, "smooth:0.1": 2.1, "confpen:0.1": 2.2,
                             "vib:1e-3": 1.0, "vim:1e-3": 1.1})
    first, second = vim_mnist.heuristic_claims(plan, rows, 10000)
    assert first["held"] is True and second["held"] is True and first["shown_by"] is None
    rows["dropout0.5"]["test_error"] = 2.95          # within noise of the baseline on 10000 images
    assert vim_mnist.heuristic_claims(plan, rows, 10000)[0]["held"] is None
    rows["dropout0.5"]["test_error"] = 4.0           # clearly worse than the baseline
    first, _ = vim_mnist.heuristic_claims(plan, rows, 10000)
    assert first["held"] is False and "vim_mnist" in first["shown_by"]
    assert vim_mnist._gap_se(1.0, 1.0, 10000) == pytest.approx(100 * math.sqrt(2 * 0.01 * 0.99 / 10000))
    assert vim_mnist.heuristic_claims(*_plan_rows({"baseline": 1.0, "vim:1e-3": 1.0}), 100) == []


def test_tiny_run_with_the_heuristic_rows(tmp_path):
    data = tiny_data_dir("vim_mnist", tmp_path)
    models = ("baseline", "dropout:0.5", "smooth:0.1", "confpen:0.1", "vim:1e-3")
    res = run_tiny("vim_mnist", tmp_path / "run", data_dir=data,
                   config={"models": models, "sweep_betas": (), "k2_models": (), "attack_n": 0})
    assert set(res["models"]) == {"baseline", "dropout0.5", "smooth0.1", "confpen0.1", "vim-beta0.001-sigma1"}
    text = (tmp_path / "run" / "table.txt").read_text()
    for label, paper in (("Dropout p=0.5", "1.34"), ("Label smooth 0.1", "1.23"), ("Conf. penalty 0.1", "1.17")):
        line = next(l for l in text.splitlines() if l.startswith(label))
        assert paper in line
    assert [c["paper"].split(":")[0] for c in res["claims"]] == ["Table 1", "Table 1"]
