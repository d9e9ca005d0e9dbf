"""fastmi.models.vim: parameter counts, the scale parameterisation, noise behaviour, predictions."""
import pytest
import torch
from torch.nn import functional as TF

from fastmi.models import ConvEncoder, MeanLogits, MLPEncoder, StochasticClassifier


def n_params(m):
    return sum(p.numel() for p in m.parameters())


def test_mlp_encoder_parameter_count():
    # 784-1024-1024-512 with biases, counted by hand
    expected = (784 * 1024 + 1024) + (1024 * 1024 + 1024) + (1024 * 512 + 512)
    assert n_params(MLPEncoder(784, (1024, 1024), 256)) == expected == 2_378_240
    model = StochasticClassifier(MLPEncoder(784, (1024, 1024), 256), 256, 10)
    assert n_params(model) == expected + 256 * 10 + 10


def test_conv_encoder_table4_shapes_and_count():
    enc = ConvEncoder(64)
    convs = 3 * 128 * 16 + 128 * 256 * 16 + 256 * 512 * 16 + 512 * 1024 * 16   # 4x4 kernels, no bias (BN follows)
    bns = 2 * (128 + 256 + 512 + 1024)
    fc = 1024 * 2 * 2 * 128 + 128                                              # 32 -> 16 -> 8 -> 4 -> 2
    assert n_params(enc) == convs + bns + fc
    assert enc(torch.randn(2, 3, 32, 32)).shape == (2, 128)
    with pytest.raises(ValueError, match="image_size"):
        ConvEncoder(4, image_size=8)


def test_scale_is_shifted_softplus_and_codes_split():
    torch.manual_seed(0)
    model = StochasticClassifier(MLPEncoder(6, (5,), 3), 3, 4)
    x = torch.randn(7, 6)
    out = model.encoder(x)
    mu, std = model.encode(x)
    torch.testing.assert_close(mu, out[:, :3])
    torch.testing.assert_close(std, torch.log1p(torch.exp(out[:, 3:] - 5.0)))
    assert (std > 0).all()


def test_stochastic_model_samples_noise_with_the_right_scale():
    torch.manual_seed(0)
    model = StochasticClassifier(MLPEncoder(6, (5,), 3), 3, 4, scale_shift=0.0)
    x = torch.randn(4, 6)
    mu, std = model.encode(x)
    z = model.sample(mu, std, 20000, torch.Generator().manual_seed(1))
    assert z.shape == (20000, 4, 3)
    torch.testing.assert_close(z.mean(0), mu, atol=0.03, rtol=0)
    torch.testing.assert_close(z.std(0), std, atol=0.03, rtol=0.02)
    _, _, _, z1 = model(x, generator=torch.Generator().manual_seed(2))
    _, _, _, z2 = model(x, generator=torch.Generator().manual_seed(3))
    assert not torch.equal(z1, z2)


def test_baseline_is_deterministic():
    torch.manual_seed(0)
    model = StochasticClassifier(MLPEncoder(6, (5,), 3), 3, 4, stochastic=False)
    x = torch.randn(5, 6)
    logits1, mu, _, z1 = model(x)
    logits2, _, _, z2 = model(x)
    assert torch.equal(z1, mu) and torch.equal(z1, z2) and torch.equal(logits1, logits2)
    torch.testing.assert_close(model.predict_proba(x, 12), TF.softmax(model.mean_logits(x), 1))
    torch.testing.assert_close(MeanLogits(model)(x), logits1)


def test_predict_proba_averages_softmax_over_samples():
    torch.manual_seed(0)
    model = StochasticClassifier(MLPEncoder(6, (5,), 3), 3, 4, scale_shift=0.0)
    x = torch.randn(5, 6)
    p = model.predict_proba(x, 12, torch.Generator().manual_seed(4))
    mu, std = model.encode(x)
    z = model.sample(mu, std, 12, torch.Generator().manual_seed(4))
    expected = torch.stack([TF.softmax(model.decoder(z[i]), 1) for i in range(12)]).mean(0)
    torch.testing.assert_close(p, expected)
    torch.testing.assert_close(p.sum(1), torch.ones(5))
