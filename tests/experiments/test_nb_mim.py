"""Neural Bayes-MIM: the CNN's states, the MBS/BS gradient accumulation, model selection, the data."""
import math

import pytest
import torch

import fastmi.functional as F
import oracle
from fastmi.experiments import _nb_mim_data as D
from fastmi.experiments import _nb_mim_train as T
from fastmi.models import MIMEncoder, mim_channels

from experiments._experiment_helpers import one_thread  # noqa: F401 (autouse fixture)


def _scales(states, pool=2):
    return [tuple(z.shape[1:]) for h in states for z in oracle.nb_scales(h, pool)]


def test_cifar_states_and_their_8_scales():
    torch.manual_seed(0)
    enc = MIMEncoder(in_channels=3).eval()
    with torch.no_grad():
        hs = enc(torch.randn(2, 3, 32, 32), states=True)
    assert [tuple(h.shape[1:]) for h in hs] == [(200, 30, 30), (500, 13, 13), (700, 11, 11), (1000, 3, 3)]
    assert _scales(hs) == [(200, 30, 30), (200, 15, 15), (500, 13, 13), (500, 6, 6), (700, 11, 11), (700, 5, 5),
                           (1000, 3, 3), (1000, 1, 1)]
    assert all((h >= 0).all() for h in hs)                                   # post-ReLU states
    res = F.nb_mim(hs, alpha=2.0, pool=2)
    assert res.entropy.shape == (8,) and F.nb_mim(hs, pool=0).entropy.shape == (4,)
    # the 1 x 1 scale of h3 is the mean of its top-left 2 x 2 positions (floor mode)
    assert torch.allclose(oracle.nb_scales(hs[3], 2)[1][..., 0, 0], hs[3][..., :2, :2].mean((-1, -2)))


def test_mnist_states():
    with torch.no_grad():
        hs = MIMEncoder(in_channels=1, width=0.05).eval()(torch.randn(2, 1, 28, 28), states=True)
    assert [h.shape[-1] for h in hs] == [26, 11, 9, 2]
    assert [s[-1] for s in _scales(hs)] == [26, 13, 11, 5, 9, 4, 2, 1]


def test_forward_is_the_global_mean_of_h3():
    enc = MIMEncoder(in_channels=1, width=0.05).eval()
    x = torch.randn(3, 1, 32, 32)
    with torch.no_grad():
        assert torch.allclose(enc(x), enc(x, states=True)[-1].mean((2, 3)))
    assert enc(x).shape == (3, enc.feature_dim) == (3, 50)


def test_init_width_and_random_encoder():
    enc = MIMEncoder(in_channels=3, width=0.1)
    assert enc.channels == mim_channels(0.1) == (20, 50, 70, 100)
    for conv in enc.convs:
        w = conv.weight.detach().flatten(1)
        gram = w @ w.T if w.shape[0] <= w.shape[1] else w.T @ w
        assert torch.allclose(gram, torch.eye(gram.shape[0]), atol=1e-5)       # orthogonal init
    for bn in enc.norms:
        assert torch.equal(bn.weight, torch.ones_like(bn.weight)) and torch.equal(bn.bias, torch.zeros_like(bn.bias))
    rnd = MIMEncoder(in_channels=3, width=0.1, bn=False)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in rnd.modules())
    with pytest.raises(ValueError, match="width"):
        MIMEncoder(width=0)
    with pytest.raises(ValueError, match="B x C x H x W"):
        enc(torch.zeros(3, 32, 32))


class _Recorder(torch.optim.Optimizer):
    """Records the gradients it is asked to step with (no update)."""

    def __init__(self, params):
        super().__init__(params, {})
        self.seen = []

    def step(self, closure=None):
        self.seen.append([p.grad.clone() for g in self.param_groups for p in g["params"]])


def test_accumulation_equals_one_big_batch_gradient():
    torch.manual_seed(0)
    lin = torch.nn.Linear(5, 3)
    opt = _Recorder(lin.parameters())
    acc = T.GradAccumulator(lin.parameters(), opt, mbs=4, bs=12)
    x = torch.randn(12, 5)
    for i in range(3):
        lin(x[4 * i: 4 * i + 4]).pow(2).mean().backward()
        assert acc.minibatch_done() == (i == 2)
    big = torch.autograd.grad(lin(x).pow(2).mean(), list(lin.parameters()))
    assert len(opt.seen) == 1
    for got, want in zip(opt.seen[0], big):
        assert torch.allclose(got, want, atol=1e-6)
    assert all(float(p.grad.abs().sum()) == 0 for p in lin.parameters())      # zeroed after the step


def test_accumulation_counter_and_scale():
    p = torch.nn.Parameter(torch.zeros(1))
    opt = _Recorder([p])
    acc = T.GradAccumulator([p], opt, mbs=100, bs=250)                       # not a multiple: ceil(250/100) = 3
    stepped = []
    for _ in range(6):
        p.grad = torch.ones(1) if p.grad is None else p.grad + 1
        stepped.append(acc.minibatch_done())
    assert stepped == [False, False, True, False, False, True]
    assert [float(g[0]) for g in opt.seen] == pytest.approx([1.0, 1.0])      # 3 minibatch grads x 1/3
    state = acc.state_dict()
    acc2 = T.GradAccumulator([p], opt, mbs=100, bs=250)
    acc2.load_state_dict({"seen": 100, "steps": 7})
    assert acc2.seen == 100 and acc2.steps == 7 and state == {"seen": 0, "steps": 2}


def _tiny_data(n=30, n_test=20, seed=0):
    g = torch.Generator().manual_seed(seed)
    imgs = torch.randint(0, 256, (n, 1, 28, 28), generator=g, dtype=torch.uint8)
    test = torch.randint(0, 256, (n_test, 1, 28, 28), generator=g, dtype=torch.uint8)
    tr, te = D.Split(imgs, torch.arange(n) % 10), D.Split(test, torch.arange(n_test) % 10)
    return D.MIMData("fashion-mnist", "fashion-mnist", tr, te, tr, te, in_channels=1, num_classes=10)


def _ctx(tmp_path):
    from fastmi.experiments import runner

    return runner.RunContext(name="t", run_dir=tmp_path, progress=False)


def test_steps_persist_across_epochs_and_selection(tmp_path):
    from fastmi.experiments import nb_mim

    cfg = nb_mim.Config(dataset="fashion-mnist", width=0.05, epochs=3, mbs=10, bs=20, probe_epochs=2,
                        probe_lrs=(1e-3,), random_baseline=False)
    data = _tiny_data()
    res = T.train_encoder(_ctx(tmp_path), cfg, data, T.EncoderRun.of(cfg, lr=1e-3, weight_decay=0.0))
    # 3 draws per epoch, a step every 2 draws, counter kept across epochs: steps after draws 2, 4, 6, 8
    assert [r["opt_steps"] for r in res.rows] == [1, 3, 4] and res.final["opt_steps"] == 4
    sel = [r["select_loss"] for r in res.rows]
    assert res.final["best_epoch"] == min(range(3), key=sel.__getitem__)
    assert res.final["select_loss"] == pytest.approx(min(sel))
    p = res.final["probes"]["0.001"]
    assert 0 <= p["first128_best"] <= 1 and 0 <= p["full_test"] <= 1


def test_selection_loss_is_the_mim_loss_of_the_first_mbs_test_images():
    torch.manual_seed(1)
    data = _tiny_data()
    enc = MIMEncoder(in_channels=1, width=0.05)
    enc(data.inputs(data.encoder.images[:10], train=False))                  # move the BN running stats
    run = T.EncoderRun(alpha=3.0, beta=1.0, pool=2, mbs=8, bs=8)
    got = T.selection_loss(enc, data, run, "auto", "cpu")
    assert enc.training                                                       # mode restored
    enc.eval()
    with torch.no_grad():
        want = F.nb_mim(enc(data.inputs(data.encoder_test.images[:8], train=False), states=True), alpha=3.0,
                        pool=2, backend="reference").loss
    assert got == pytest.approx(float(want), rel=1e-5)
    data.encoder_test.images[8:] = 0                                          # images after the first MBS do not count
    assert T.selection_loss(enc, data, run, "auto", "cpu") == pytest.approx(got, rel=1e-6)


def test_best_weights_keep_the_lowest_loss():
    m = torch.nn.Linear(2, 1)
    best = T.BestWeights()
    assert best.offer(2.0, 0, m) and not best.offer(3.0, 1, m)
    w0 = best.weights["weight"].clone()
    with torch.no_grad():
        m.weight.add_(1.0)
    assert best.offer(1.0, 2, m) and best.epoch == 2 and not torch.equal(best.weights["weight"], w0)
    other = T.BestWeights()
    other.load_state_dict(best.state_dict())
    assert other.loss == 1.0 and torch.equal(other.weights["weight"], best.weights["weight"])


def test_random_probe_grid_is_the_papers_16_configurations():
    grid = T.RANDOM_PROBE_GRID
    assert len(grid) == 16 and len(set(grid)) == 16
    assert {g[0] for g in grid} == {0.0, 1e-5, 5e-5, 1e-4} and {g[1] for g in grid} == {128, 256}
    assert {g[2] for g in grid} == {1e-4, 1e-3}


def test_encoder_run_errors():
    with pytest.raises(ValueError, match=r"bs must be an int >= mbs \(500\).*got 100"):
        T.EncoderRun(alpha=1.0, beta=1.0, mbs=500, bs=100).validate()
    with pytest.raises(ValueError, match="prior"):
        T.EncoderRun(alpha=1.0, beta=1.0, prior="v3").validate()
    with pytest.raises(ValueError, match="alpha"):
        T.EncoderRun(alpha=-1.0, beta=1.0).validate()


def test_fashion_inputs_are_padded_and_normalised():
    imgs = torch.zeros(2, 1, 28, 28, dtype=torch.uint8)
    imgs[:, :, 5, 7] = 255
    x = D.to_inputs(imgs, "fashion-mnist")
    assert x.shape == (2, 1, 32, 32)
    assert x[0, 0, 0, 0] == pytest.approx(-0.2860 / 0.3530)
    assert x[0, 0, 7, 9] == pytest.approx((1 - 0.2860) / 0.3530)             # shifted by the 2-pixel pad


def test_cifar_inputs_use_the_cifar10_constants():
    imgs = torch.full((1, 3, 32, 32), 255, dtype=torch.uint8)
    x = D.to_inputs(imgs, "cifar100")
    want = [(1 - m) / s for m, s in zip(D.CIFAR10_MEAN, D.CIFAR10_STD)]
    assert torch.allclose(x[0, :, 0, 0], torch.tensor(want))


def test_stl_crops_and_resize():
    g = torch.Generator().manual_seed(0)
    top, left, h, w = D.crop_boxes(500, 96, 96, generator=g)
    frac = (h * w).float() / (96 * 96)
    assert (top >= 0).all() and (left >= 0).all() and (top + h <= 96).all() and (left + w <= 96).all()
    assert frac.min() > 0.28 and frac.max() <= 1.0 and frac.mean() > 0.5                       # scale (0.3, 1)
    assert ((w.float() / h) > 0.65).all() and ((w.float() / h) < 1.5).all()                    # ratio (0.7, 1.4)
    imgs = torch.randint(0, 256, (4, 3, 96, 96), dtype=torch.uint8)
    assert D.to_inputs(imgs, "stl10", train=True, generator=g).shape == (4, 3, 32, 32)
    flat = torch.full((1, 3, 96, 96), 128, dtype=torch.uint8)
    x = D.to_inputs(flat, "stl10")
    assert x.shape == (1, 3, 32, 32) and torch.allclose(x, x[:, :, :1, :1].expand_as(x), atol=1e-5)


def test_load_stl10_trains_the_encoder_on_train_and_unlabeled(tmp_path):
    from fastmi.data import write_fake_dataset

    write_fake_dataset("stl10", tmp_path, n_train=12, n_test=8, n_unlabeled=20)
    data = D.load("stl10", tmp_path)
    assert len(data.encoder) == 32 and len(data.probe_train) == 12 and len(data.probe_test) == 8
    assert (data.encoder.labels[12:] == -1).all() and data.in_channels == 3


def test_cifar100_probes_a_cifar10_encoder(tmp_path):
    from fastmi.data import write_fake_dataset

    write_fake_dataset("cifar10", tmp_path, n_train=20, n_test=10)
    write_fake_dataset("cifar100", tmp_path, n_train=30, n_test=10)
    data = D.load("cifar100", tmp_path, n_test=6)
    assert data.encoder_name == "cifar10" and len(data.encoder) == 20 and len(data.probe_train) == 30
    assert data.num_classes == 100 and torch.equal(data.probe_test.images, data.probe_test.images[:6])
    assert len(data.probe_test) == 6


def test_missing_cifar_says_what_to_do(tmp_path):
    from fastmi.data import DatasetNotFoundError

    with pytest.raises(DatasetNotFoundError, match="--quick"):
        D.load("cifar10", tmp_path)
    with pytest.raises(ValueError, match="dataset must be one of"):
        D.load("mnist", tmp_path)


def test_pct():
    assert T.pct(0.828125) == "82.81" and T.pct(None) == "-" and T.pct(math.nan) == "-"
