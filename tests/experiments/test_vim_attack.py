"""The targeted Carlini-Wagner L2 attack (fastmi.experiments._attack) on a linear model, where the
smallest perturbation that makes the target win is known in closed form."""
import pytest
import torch

from fastmi.experiments._attack import cw_l2_targeted


def _linear(d=20, seed=0):
    g = torch.Generator().manual_seed(seed)
    lin = torch.nn.Linear(d, 2)
    with torch.no_grad():
        lin.weight.copy_(torch.randn(2, d, generator=g))
        lin.bias.zero_()
    return lin, g


def test_cw_finds_the_minimal_l2_perturbation_of_a_linear_model():
    lin, g = _linear()
    x = 0.4 + 0.2 * torch.rand(4, 20, generator=g)          # far from the [0, 1] box edges
    with torch.no_grad():
        f = lin(x)
    src = f.argmax(1)
    target = 1 - src
    w = lin.weight[target] - lin.weight[src]                  # the target's margin grows along w
    # minimal L2 step to the decision boundary (f_t = f_s): margin / ||w_t - w_s||, direction w
    closed = ((f.gather(1, src[:, None]) - f.gather(1, target[:, None])).squeeze(1) / w.norm(dim=1)).detach()
    res = cw_l2_targeted(lin, x, target, binary_search_steps=8, steps=100, stepsize=0.05)
    assert res.success.all()
    torch.testing.assert_close(res.l2.float(), closed, rtol=0.04, atol=1e-3)
    assert (res.l2 >= closed.double() * 0.999).all()         # nothing closer than the boundary can succeed
    # the perturbation points along w (the boundary's normal)
    cos = torch.nn.functional.cosine_similarity(res.adversarials - x, w.detach(), dim=1)
    assert (cos > 0.95).all()
    d = (res.adversarials - x).abs()
    torch.testing.assert_close(res.l1, d.sum(1).double())
    torch.testing.assert_close(res.linf, d.amax(1).double())
    s = res.summary()
    assert s["successes"] == 4 and s["l2"] == pytest.approx(float(res.l2.mean()))


def test_cw_respects_the_box_and_checks_its_arguments():
    lin, g = _linear(seed=1)
    x = torch.rand(3, 20, generator=g)
    target = 1 - lin(x).argmax(1)
    res = cw_l2_targeted(lin, x, target, binary_search_steps=2, steps=30, stepsize=0.05)
    assert float(res.adversarials.min()) >= 0.0 and float(res.adversarials.max()) <= 1.0
    with pytest.raises(ValueError, match="bounds"):
        cw_l2_targeted(lin, x + 2.0, target)
    with pytest.raises(ValueError, match="targets"):
        cw_l2_targeted(lin, x, target[:2])
    with pytest.raises(ValueError, match="steps"):
        cw_l2_targeted(lin, x, target, steps=0)
