"""fastmi.experiments.probe: linear / MLP probes on frozen features and the two evaluation protocols."""
import pytest
import torch

from fastmi.experiments.probe import accuracy, probe_model, train_probe


def _blobs(n, d=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 3
    x = torch.randn(n, d, generator=g) * 0.3
    x[:, :3] += torch.nn.functional.one_hot(y, 3).float() * 2.0
    return x, y


def test_linear_probe_learns_separable_classes():
    x, y = _blobs(400)
    r = train_probe(x[:300], y[:300], x[300:], y[300:], epochs=40, lr=1e-2)
    assert r.test_acc > 0.95 and r.best_epoch == len(r.history) - 1 and r.val_acc is None


def test_first_n_protocol_is_max_over_epochs_on_the_head():
    x, y = _blobs(500, seed=1)
    r = train_probe(x[:300], y[:300], x[300:], y[300:], epochs=5, lr=1e-3, hidden=8, first_n=10)
    assert r.first_n_best_acc == max(h["first_n_acc"] for h in r.history)
    assert all(abs(h["first_n_acc"] * 10 - round(h["first_n_acc"] * 10)) < 1e-9 for h in r.history)


def test_early_stopping_selects_the_best_validation_epoch():
    x, y = _blobs(300, seed=2)
    r = train_probe(x[:200], y[:200], x[200:], y[200:], epochs=200, lr=1e-2, val_fraction=0.2, patience=3)
    vals = [h["val_acc"] for h in r.history]
    assert r.val_acc == max(vals) and vals[r.best_epoch] == r.val_acc
    assert len(r.history) - 1 - r.best_epoch <= 3 and len(r.history) < 200   # stopped early
    assert r.test_acc == r.history[r.best_epoch]["test_acc"]


def test_probe_model_init_and_accuracy():
    m = probe_model(5, 3, hidden=4, generator=torch.Generator().manual_seed(0))
    w = m[0].weight
    assert torch.allclose(w @ w.T, torch.eye(4), atol=1e-5) and (m[0].bias == 0).all()
    lin = probe_model(2, 2)
    with torch.no_grad():
        lin[0].weight.copy_(torch.eye(2))
    assert accuracy(lin, torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]]), torch.tensor([0, 1, 1])) == 2 / 3


def test_bad_input_names_the_argument():
    x, y = _blobs(20)
    with pytest.raises(ValueError, match="train_x"):
        train_probe(x[:, 0], y, x, y)
    with pytest.raises(ValueError, match="test_y"):
        train_probe(x, y, x, y[:5])
    with pytest.raises(ValueError, match="features"):
        train_probe(x, y, x[:, :3], y)
    with pytest.raises(ValueError, match="val_fraction"):
        train_probe(x, y, x, y, val_fraction=1.5)
    bad = x.clone()
    bad[0, 0] = float("nan")
    with pytest.raises(ValueError, match="non-finite"):
        train_probe(bad, y, x, y)
