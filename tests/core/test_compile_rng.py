"""Randomness under torch.compile(fullgraph=True) (issue 19, item 11): a torch.Generator cannot be
traced, so inside a compiled function generator= gives an error that names the alternatives, and the
alternatives work: torch's default generator seeded with torch.manual_seed (reproducible compiled
draws), or a draw outside the compiled function."""
import math

import pytest
import torch

import fastmi
import fastmi.functional as F

BACKEND = "cpu" if fastmi.info()["cpu"][0] else "reference"


def _twice(fn, *args):
    torch.manual_seed(11)
    a = fn(*args)
    torch.manual_seed(11)
    b = fn(*args)
    return a, b


def test_perturb_in_span_compiles_with_the_default_generator_reproducibly():
    x = torch.randn(6, 20)
    fn = torch.compile(lambda v: F.perturb_in_span(v, backend=BACKEND), fullgraph=True)
    (xa, za), (xb, zb) = _twice(fn, x)
    assert torch.equal(xa, xb) and torch.equal(za, zb)
    assert torch.allclose((xa - x).norm(dim=1), za.abs().expand(6), rtol=1e-5)  # unit directions


def test_mmd_imq_prior_compiles_with_the_default_generator_reproducibly():
    z = torch.randn(16, 3, requires_grad=True)
    fn = torch.compile(lambda v: F.mmd_imq_prior(v, sigma=2.0, backend=BACKEND), fullgraph=True)
    a, b = _twice(fn, z)
    assert torch.equal(a, b) and math.isfinite(a.item())
    a.backward()
    assert torch.isfinite(z.grad).all()


@pytest.mark.parametrize("which", ["perturb_in_span", "mmd_imq_prior"])
def test_generator_under_compile_names_the_alternatives(which):
    gen = torch.Generator().manual_seed(0)
    call = {"perturb_in_span": lambda v: F.perturb_in_span(v, generator=gen, backend=BACKEND)[0],
            "mmd_imq_prior": lambda v: F.mmd_imq_prior(v, generator=gen, backend=BACKEND)}[which]
    with pytest.raises(Exception, match="generator= cannot be traced by torch.compile") as err:
        torch.compile(call, fullgraph=True)(torch.randn(6, 4))
    assert "torch.manual_seed" in str(err.value)


def test_drawing_outside_the_compiled_function_equals_the_generator_path():
    z = torch.randn(12, 3)
    eager = F.mmd_imq_prior(z, sigma=1.5, generator=torch.Generator().manual_seed(4), backend=BACKEND)
    p = 1.5 * torch.randn(12, 3, generator=torch.Generator().manual_seed(4))
    compiled = torch.compile(lambda a, b: F.mmd_imq(a, b, backend=BACKEND), fullgraph=True)(z, p)
    torch.testing.assert_close(compiled, eager, rtol=1e-6, atol=1e-7)


def test_eager_generator_still_reproducible():
    x = torch.randn(6, 20)
    a = F.perturb_in_span(x, generator=torch.Generator().manual_seed(2), backend=BACKEND)
    b = F.perturb_in_span(x, generator=torch.Generator().manual_seed(2), backend=BACKEND)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
