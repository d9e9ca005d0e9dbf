"""The hybrid estimator's networks: autoencoder shapes and split, MoCo queue / momentum / loss, latent DDIM."""
import copy
import math

import pytest
import torch
from torch import nn

from fastmi.experiments import _hybrid_train as tr
from fastmi.models.hybrid_autoencoder import HybridAutoencoder
from fastmi.models.latent_ddim import LatentDiffusion, linear_alpha_bars
from fastmi.models.moco import KeyQueue, MoCo


@pytest.mark.parametrize("channels", [1, 3])
def test_autoencoder_maps_32x32_images_to_a_6x16x16_latent_and_back(channels):
    ae = HybridAutoencoder(channels, 6, (8, 16), cells=1)
    x = torch.rand(2, channels, 32, 32)
    z, recon = ae(x)
    assert z.shape == (2, 6, 16, 16) and recon.shape == x.shape
    assert recon.min() >= 0 and recon.max() <= 1


def test_channel_split_takes_the_first_half_of_the_channels_and_merge_inverts_it():
    ae = HybridAutoencoder(3, 6, (4, 4), cells=1)
    z = torch.randn(2, 6, 16, 16)
    y, y_hat = ae.split(z)
    assert torch.equal(y, z[:, :3]) and torch.equal(y_hat, z[:, 3:])
    assert torch.equal(ae.merge(y, y_hat), z)


def test_row_split_takes_the_top_eight_rows():
    ae = HybridAutoencoder(3, 6, (4, 4), cells=1, split="rows")
    z = torch.randn(2, 6, 16, 16)
    y, y_hat = ae.split(z)
    assert y.shape == (2, 6, 8, 16) and torch.equal(y, z[:, :, :8])
    assert torch.equal(ae.merge(y, y_hat), z)


def test_bad_split_settings_are_rejected():
    with pytest.raises(ValueError, match="even"):
        HybridAutoencoder(3, 5, (4, 4))
    with pytest.raises(ValueError, match="split"):
        HybridAutoencoder(3, 6, (4, 4), split="diagonal")


def test_queue_replaces_the_oldest_keys_and_wraps_around():
    q = KeyQueue(5, 2)
    a, b = torch.full((3, 2), 1.0), torch.full((3, 2), 2.0)
    q.enqueue(a)
    assert int(q.pointer) == 3 and torch.equal(q.keys[:3], a)
    q.enqueue(b)  # rows 3, 4, then 0
    assert int(q.pointer) == 1
    assert torch.equal(q.keys[3:], b[:2]) and torch.equal(q.keys[0], b[2]) and torch.equal(q.keys[1:3], a[1:])
    with pytest.raises(ValueError, match="queue of 5"):
        q.enqueue(torch.zeros(6, 2))


def test_initial_queue_keys_are_unit_vectors():
    q = KeyQueue(7, 4, torch.Generator().manual_seed(0))
    assert torch.allclose(q.keys.norm(dim=1), torch.ones(7))


def _moco(momentum=0.9, groups=1, dim=4, queue=16):
    enc = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.BatchNorm2d(2))
    return MoCo(enc, lambda e, x: e(x), 2 * 8 * 8, hidden=8, dim=dim, queue_size=queue, momentum=momentum,
                temperature=0.2, key_bn_groups=groups, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("m", [0.0, 0.9, 1.0])
def test_momentum_update_is_an_exponential_moving_average_of_the_query_networks(m):
    moco = _moco(momentum=m)
    with torch.no_grad():
        for p in list(moco.encoder.parameters()) + list(moco.head.parameters()):
            p.add_(torch.randn_like(p))
    before_q = [p.clone() for p in list(moco.encoder.parameters()) + list(moco.head.parameters())]
    before_k = [p.clone() for p in list(moco.key_encoder.parameters()) + list(moco.key_head.parameters())]
    moco.momentum_update()
    after_k = list(moco.key_encoder.parameters()) + list(moco.key_head.parameters())
    for pq, pk0, pk in zip(before_q, before_k, after_k):
        assert torch.allclose(pk, m * pk0 + (1 - m) * pq, atol=1e-6)
        assert not pk.requires_grad


def test_shuffled_key_groups_return_keys_in_the_input_order():
    moco = _moco(groups=3)
    moco.eval()  # running batch-norm statistics: the grouping cannot change a key
    x = torch.rand(9, 1, 8, 8)
    grouped = moco.keys(x, torch.Generator().manual_seed(1))
    moco.key_bn_groups = 1
    assert torch.allclose(grouped, moco.keys(x), atol=1e-6)


def _plain_moco_loss(q, k, queue, tau):
    """MoCo's pseudo-code (He et al. 2020, Algorithm 1), written independently of fastmi."""
    l_pos = torch.einsum("nc,nc->n", q, k).unsqueeze(-1)
    l_neg = torch.einsum("nc,ck->nk", q, queue.T)
    logits = torch.cat([l_pos, l_neg], dim=1) / tau
    labels = torch.zeros(logits.shape[0], dtype=torch.long)
    return nn.CrossEntropyLoss()(logits, labels)


@pytest.mark.parametrize("kind", ["fused", "reference"])
def test_moco_loss_and_its_gradient_equal_mocos_pseudo_code(kind):
    moco = _moco(dim=6, queue=32).double()
    gen = torch.Generator().manual_seed(3)
    q = nn.functional.normalize(torch.randn(10, 6, generator=gen, dtype=torch.float64), dim=1).requires_grad_(True)
    k = nn.functional.normalize(torch.randn(10, 6, generator=gen, dtype=torch.float64), dim=1)
    ours = tr.moco_loss(moco.logits(q, k), kind)
    (g_ours,) = torch.autograd.grad(ours, q)
    q2 = q.detach().clone().requires_grad_(True)
    plain = _plain_moco_loss(q2, k, moco.queue.keys, 0.2)
    (g_plain,) = torch.autograd.grad(plain, q2)
    assert ours.dtype == torch.float64
    assert abs(ours.detach().item() - plain.detach().item()) < 1e-10
    assert torch.allclose(g_ours, g_plain, atol=1e-12)


def test_reconstruction_loss_scales():
    x, r = torch.zeros(2, 1, 2, 2), torch.ones(2, 1, 2, 2)
    assert float(tr.reconstruction_loss(r, x, "sum")) == 4.0
    assert float(tr.reconstruction_loss(r, x, "mean")) == 1.0


def test_linear_schedule_matches_its_definition():
    abar = linear_alpha_bars(10, 0.1, 0.2)
    betas = [0.1 + i * (0.2 - 0.1) / 9 for i in range(10)]
    assert abs(float(abar[-1]) - math.prod(1 - b for b in betas)) < 1e-12


class _OracleDenoiser(nn.Module):
    """The exact eps of data concentrated at one latent c: eps = (z_t - sqrt(abar_t) c) / sqrt(1 - abar_t)."""

    def __init__(self, c, alpha_bars):
        super().__init__()
        self.c, self.alpha_bars = c, alpha_bars

    def forward(self, z, t):
        abar = self.alpha_bars[t].view(-1, 1, 1, 1)
        return (z - abar.sqrt() * self.c) / (1 - abar).sqrt()


def test_ddim_with_the_exact_denoiser_lands_on_the_data_point():
    diffusion = LatentDiffusion(2, 8, steps=100)
    c = torch.randn(1, 2, 4, 4)
    diffusion.net = _OracleDenoiser(c, diffusion.alpha_bars)
    out = diffusion.sample(3, (2, 4, 4), sampling_steps=10, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(out, c.expand(3, -1, -1, -1), atol=1e-4)
    out = diffusion.sample(3, (2, 4, 4), sampling_steps=10, generator=torch.Generator().manual_seed(0),
                           clip=float(c.abs().max()) + 0.1)
    assert torch.allclose(out, c.expand(3, -1, -1, -1), atol=1e-4)


def test_ddim_sampling_is_deterministic_given_the_generator_and_training_loss_is_finite():
    diffusion = LatentDiffusion(2, 8, steps=50)
    a = diffusion.sample(2, (2, 4, 4), 5, torch.Generator().manual_seed(7))
    b = diffusion.sample(2, (2, 4, 4), 5, torch.Generator().manual_seed(7))
    assert torch.equal(a, b)
    loss = diffusion.loss(torch.randn(4, 2, 4, 4), torch.Generator().manual_seed(0))
    loss.backward()
    assert math.isfinite(float(loss))


def test_train_step_moves_the_key_networks_and_fills_the_queue():
    import dataclasses
    from fastmi.experiments import hybrid

    cfg = dataclasses.replace(hybrid.Config(), widths=(4, 4), cells=1, head_hidden=8, moco_dim=4, queue_size=8,
                              key_bn_groups=2, moco_momentum=0.5)
    model = tr.HybridModel(cfg, 1, 32, torch.Generator().manual_seed(0))
    opt = torch.optim.Adam(model.trained_parameters(), lr=1e-2)
    aug = tr.augmentations(1, 32)
    keys_before = model.moco.queue.keys.clone()
    key_params = copy.deepcopy(list(model.moco.key_head.parameters()))
    row = tr.train_step(model, aug, opt, torch.rand(4, 1, 32, 32), 0.5, cfg)
    assert {"moco", "rec", "loss"} <= set(row) and int(model.moco.queue.pointer) == 4
    assert not torch.equal(model.moco.queue.keys[:4], keys_before[:4])
    assert torch.equal(model.moco.queue.keys[4:], keys_before[4:])
    assert any(not torch.equal(a, b) for a, b in zip(key_params, model.moco.key_head.parameters()))


class _BiasedDenoiser(nn.Module):
    """Predicts half of z_t as the noise: right in direction, wrong in size (an undertrained model)."""

    def forward(self, z, t):
        return 0.5 * z


def test_clipping_keeps_ddim_samples_in_the_datas_range_where_an_inexact_denoiser_explodes():
    diffusion = LatentDiffusion(2, 8, steps=1000)
    diffusion.net = _BiasedDenoiser()
    gen = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    wild = diffusion.sample(4, (2, 4, 4), 50, gen())
    tame = diffusion.sample(4, (2, 4, 4), 50, gen(), clip=3.0)
    assert wild.abs().max() > 20
    assert tame.abs().max() <= 3.0 + 1e-5
