"""The reference backend is what users run without a compiler: as careful as the fused kernels
(issue 19, item 8). Compared with tests/oracle.py."""
import pytest
import torch

import fastmi
import fastmi.functional as F
from numerics import numerics_oracle as O


@pytest.mark.parametrize("name", ["js", "smile"])
@pytest.mark.parametrize("reg", [0.0, 0.5])
def test_softplus_is_float64_accurate_beyond_20(name, reg):
    """softplus(S) for S > 20: torch's default threshold returned S (gradient 1 instead of
    sigmoid(S) = 1 - 2e-9); JS and SMILE train on it, ReJS regularizes it."""
    g = torch.Generator().manual_seed(0)
    S = (torch.randn(6, 6, generator=g, dtype=torch.float64) * 3 + 24)
    S.fill_diagonal_(-23.0)
    S1 = S.clone().requires_grad_(True)
    out = getattr(F, name)(S1, reg_weight=reg, backend="reference")
    out.loss.backward()
    S2 = S.clone().requires_grad_(True)
    P, N = O.masks(6, 6)
    loss, mi, sur = O.critic(name, S2, P, N, reg_weight=reg, **({"clip": 5.0} if name == "smile" else {}))
    (want,) = torch.autograd.grad(sur, S2)
    O.assert_matches(S1.grad, want, torch.float64, rtol=1e-12, atol=1e-15, what="grad")
    O.assert_matches(out.loss, loss, torch.float64, rtol=1e-12, atol=0, what="loss")


BACKENDS = [b for b in ("cpu", "triton", "reference") if fastmi.info()[b][0]]


@pytest.mark.parametrize("name", ["infonce_separable", "dv_separable", "nwj_separable"])
@pytest.mark.parametrize("which", ["x", "y"])
def test_zero_norm_row_is_the_same_error_on_every_backend(name, which):
    x, y = torch.randn(4, 3), torch.randn(4, 3)
    (x if which == "x" else y)[2] = 0.0
    messages = set()
    for backend in BACKENDS:
        with pytest.raises(ValueError, match=f"{which} has 1 zero-norm row") as err:
            getattr(F, name)(x, y, normalize=True, backend=backend)
        messages.add(str(err.value))
    assert len(messages) == 1
    getattr(F, name)(x, y, normalize=False, backend="reference")  # the dot-product critic is defined there
