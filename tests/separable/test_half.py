"""fp16/bf16 inputs with the cosine critic (issue 19, item 5): the gradient's two branches, through the
kernel (E y) and through the norms (-dL/da_i a_i x_i / |x_i|^2), nearly cancel when x_i is close to
its positives; they must meet in fp32, so that the fused gradient is no further from the float64
truth than the reference's own half-precision result (which rounds once, at the end)."""
import pytest
import torch

import fastmi
import fastmi.functional as F
from numerics import numerics_oracle as O

BACKENDS = [b for b in ("cpu", "triton") if fastmi.info()[b][0]]


def _error(name, x, y, backend, kw, truth):
    xs, ys = x.clone().requires_grad_(True), y.clone().requires_grad_(True)
    out = getattr(F, name)(xs, ys, backend=backend, **kw)
    out.loss.backward()
    return max(float((g.double() - t).abs().max() / t.abs().max()) for g, t in zip((xs.grad, ys.grad), truth))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("name,kw", [("infonce_separable", dict(symmetric=True)), ("dv_separable", {}),
                                     ("nwj_separable", {})])
def test_cosine_critic_gradient_cancels_in_fp32(backend, dtype, name, kw):
    kw = dict(kw, normalize=True, temperature=0.5)
    g = torch.Generator().manual_seed(0)
    worst = 0.0
    for trial in range(4):
        y = torch.randn(16, 32, generator=g)
        x = (y + 0.02 * torch.randn(16, 32, generator=g)).to(dtype)  # nearly parallel to its positive
        y = y.to(dtype)
        x64, y64 = x.double().requires_grad_(True), y.double().requires_grad_(True)
        P, N = O.masks(16, 16, infonce=name == "infonce_separable")
        S = O.separable_scores(x64, y64, 0.5, True)
        _, _, sur = O.critic(name.replace("_separable", ""), S, P, N)
        if kw.get("symmetric"):
            sur = (sur + O.critic("infonce", S.T, P.T, N.T)[2]) / 2
        truth = torch.autograd.grad(sur, (x64, y64))
        fused = _error(name, x, y, backend, kw, truth)
        ref = _error(name, x, y, "reference", kw, truth)
        # the final rounding to half is the only one allowed: fused within 1.5x the reference's error
        # plus one half-precision ulp of the largest gradient
        worst = max(worst, fused / (1.5 * ref + torch.finfo(dtype).eps))
    assert worst <= 1.0
