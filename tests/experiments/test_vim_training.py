"""The VIM / VIB / baseline objectives, EMA, learning-rate schedule and model specs (fastmi.experiments._vim)."""
import math

import pytest
import torch

from fastmi.experiments import _vim, vim_mnist
from fastmi.models import MLPEncoder, StochasticClassifier


def _batch(seed=0, b=9, k=5, c=4):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(b, c, generator=g, dtype=torch.float64)
    y = torch.randint(0, c, (b,), generator=g)
    mu = torch.randn(b, k, generator=g, dtype=torch.float64)
    std = torch.rand(b, k, generator=g, dtype=torch.float64) + 0.1
    z = mu + std * torch.randn(b, k, generator=g, dtype=torch.float64)
    return logits, y, mu, std, z


def _ce(logits, y):
    return float(sum(math.log(sum(math.exp(v) for v in row)) - row[t] for row, t in zip(logits.tolist(), y.tolist()))
                 / len(y))


def test_baseline_loss_is_cross_entropy():
    logits, y, mu, std, z = _batch()
    loss, ce, reg = _vim.objective_loss(_vim.ModelSpec("baseline"), logits, y, mu, std, z)
    assert float(loss) == pytest.approx(_ce(logits, y), rel=1e-12) and float(reg) == 0.0


def test_vib_loss_is_ce_plus_beta_kl():
    logits, y, mu, std, z = _batch(1)
    sigma, beta = 2.0, 0.3
    loss, ce, reg = _vim.objective_loss(_vim.ModelSpec("vib", beta, sigma), logits, y, mu, std, z)
    kl = 0.0
    for m_row, s_row in zip(mu.tolist(), std.tolist()):
        for m, s in zip(m_row, s_row):  # KL(N(m, s^2) || N(0, sigma^2)) per dimension
            kl += math.log(sigma / s) + (s * s + m * m) / (2 * sigma * sigma) - 0.5
    kl /= len(y)
    assert float(reg) == pytest.approx(kl, rel=1e-10)
    assert float(loss) == pytest.approx(_ce(logits, y) + beta * kl, rel=1e-10)


def test_vim_loss_is_ce_plus_beta_unbiased_imq_mmd_against_the_prior():
    logits, y, mu, std, z = _batch(2)
    sigma, beta = 1.5, 0.7
    b, k = z.shape
    loss, ce, reg = _vim.objective_loss(_vim.ModelSpec("vim", beta, sigma), logits, y, mu, std, z,
                                        backend="reference", generator=torch.Generator().manual_seed(5))
    p = torch.randn(b, k, generator=torch.Generator().manual_seed(5), dtype=torch.float64) * sigma
    kern = lambda a, c: k / (k + sum((u - v) ** 2 for u, v in zip(a, c)))  # noqa: E731  C = K
    zs, ps = z.tolist(), p.tolist()
    xx = sum(kern(zs[i], zs[j]) for i in range(b) for j in range(b) if i != j) / (b * (b - 1))
    yy = sum(kern(ps[i], ps[j]) for i in range(b) for j in range(b) if i != j) / (b * (b - 1))
    xy = sum(kern(a, c) for a in zs for c in ps) / (b * b)
    mmd = xx + yy - 2 * xy
    assert float(reg) == pytest.approx(mmd, rel=1e-9, abs=1e-12)
    assert float(loss) == pytest.approx(_ce(logits, y) + beta * mmd, rel=1e-9)
    # the fused CPU kernel gives the same prior term
    _, _, fused = _vim.objective_loss(_vim.ModelSpec("vim", beta, sigma), logits, y, mu, std, z, backend="auto",
                                      generator=torch.Generator().manual_seed(5))
    assert float(fused) == pytest.approx(mmd, rel=1e-6, abs=1e-9)


def test_ema_update():
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 2)
    ema = _vim.make_ema(model, 0.9)
    w0 = model.weight.detach().clone()
    ema.update_parameters(model)                 # the first update copies
    torch.testing.assert_close(ema.module.weight, w0)
    with torch.no_grad():
        model.weight.add_(1.0)
    ema.update_parameters(model)
    torch.testing.assert_close(ema.module.weight, 0.9 * w0 + 0.1 * (w0 + 1.0))
    with torch.no_grad():
        model.weight.mul_(2.0)
    ema.update_parameters(model)
    torch.testing.assert_close(ema.module.weight, 0.9 * (0.9 * w0 + 0.1 * (w0 + 1.0)) + 0.1 * (w0 + 1.0) * 2.0)
    assert _vim.make_ema(model, 0.0) is None


def test_lr_schedules():
    mnist = vim_mnist.Config()
    assert _vim.lr_at(mnist, 0) == _vim.lr_at(mnist, 1) == 1e-4
    assert _vim.lr_at(mnist, 2) == pytest.approx(1e-4 * 0.97)
    assert _vim.lr_at(mnist, 9) == pytest.approx(1e-4 * 0.97 ** 4)
    from fastmi.experiments import vim_cifar

    cifar = vim_cifar.Config()
    assert _vim.lr_at(cifar, 29) == 1e-3 and _vim.lr_at(cifar, 30) == pytest.approx(5e-4)


def test_model_specs():
    assert _vim.parse_spec("baseline", 1.0) == _vim.ModelSpec("baseline")
    assert _vim.parse_spec("vim:1e-3", 2.0) == _vim.ModelSpec("vim", 1e-3, 2.0)
    assert _vim.parse_spec("vib:1e-4:0.5", 1.0).job == "vib-beta0.0001-sigma0.5"
    for bad in ("vim", "dropout:2", "vib:x", "vim:-1", "lasso:1e-3"):
        with pytest.raises(ValueError):
            _vim.parse_spec(bad, 1.0)


def test_gradient_reaches_the_scale_only_for_stochastic_objectives():
    torch.manual_seed(0)
    x, y = torch.rand(8, 12), torch.randint(0, 3, (8,))
    for spec in (_vim.ModelSpec("baseline"), _vim.ModelSpec("vib", 1e-2), _vim.ModelSpec("vim", 1e-2)):
        model = StochasticClassifier(MLPEncoder(12, (16,), 4), 4, 3, stochastic=spec.objective != "baseline",
                                     scale_shift=0.0)
        g = torch.Generator().manual_seed(0)
        logits, mu, std, z = model(x, generator=g)
        loss, _, _ = _vim.objective_loss(spec, logits, y, mu, std, z, generator=g)
        loss.backward()
        last = model.encoder.net[-1].weight.grad          # rows 0..3: mu, rows 4..7: raw scale
        assert last[:4].abs().sum() > 0
        assert (last[4:].abs().sum() > 0) == (spec.objective != "baseline"), spec
