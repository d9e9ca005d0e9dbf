"""fp16/bf16 score matrices on the CPU (issue 19, item 6): the kernel converts one row at a time, so
the extra memory stays O(n) instead of an n x m fp32 copy (and its fp32 gradient); and the results
equal the fp32 kernel's on the same (half-rounded) values."""
import os

import pytest
import torch

import fastmi
import fastmi.functional as F
from bench.critic_lse_half_memory import peak_extra_bytes

pytestmark = pytest.mark.skipif(not fastmi.info()["cpu"][0], reason="fastmi._C not available")


@pytest.mark.skipif(not os.path.exists("/proc/self/clear_refs"), reason="needs Linux /proc")
@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_no_fp32_copy_of_half_scores(dtype):
    n = 2048
    extra = peak_extra_bytes("nwj", dtype, n)
    assert extra < n * n, f"{extra} bytes beyond the inputs and gradients (an fp32 copy is {4 * n * n})"


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("name", ["infonce", "dv", "nwj", "js", "smile"])
@pytest.mark.parametrize("m", [1, 7, 8, 9, 17, 33])
def test_half_scores_equal_fp32_kernel_on_the_same_values(dtype, name, m):
    n = 5
    S = (torch.randn(n, m) * 4).to(dtype)
    pos = torch.randint(0, m, (n,))
    S1 = S.clone().requires_grad_(True)
    out = getattr(F, name)(S1, positives=pos, backend="cpu")
    out.loss.backward()
    S2 = S.float().requires_grad_(True)
    ref = getattr(F, name)(S2, positives=pos, backend="cpu")
    ref.loss.backward()
    assert out.loss.dtype == torch.float32 and S1.grad.dtype == dtype
    assert torch.equal(out.loss, ref.loss) and torch.equal(out.mi, ref.mi, ) or torch.isnan(out.mi)
    assert torch.equal(S1.grad, S2.grad.to(dtype))
