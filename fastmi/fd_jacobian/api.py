"""Neural Bayes' finite-difference Jacobian smoothness regularizer R_c: a perturbation in the span of
the batch, and the penalty on how far a network's outputs move under it."""
from __future__ import annotations

import math
from typing import Optional

import torch

from .._core import validate
from .._core.dtypes import acc_dtype
from . import ops


def draw_zeta(zeta_std: float, count: int, generator: Optional[torch.Generator], device) -> torch.Tensor:
    """zeta = zeta_std * N(0, 1): ``count`` values (1 = one per batch, as the authors' code; B = per sample).
    Drawn on the generator's device (x's device without a generator); float32."""
    dev = generator.device if generator is not None else device
    return zeta_std * torch.randn(count, generator=generator, device=dev, dtype=torch.float32)


def _zeta_arg(zeta, B: int, device, name: str, dtype: torch.dtype):
    """zeta as given by the user: a nonzero finite number (kept in ``dtype``, the accumulation type of
    the features: float64 features get a float64 zeta, not one rounded to float32), or a tensor of
    shape [], [1] or [B]."""
    if isinstance(zeta, (int, float)) and not isinstance(zeta, bool):
        z = validate.number(zeta, "zeta", name)
        if z == 0 or math.isinf(z):
            raise ValueError(f"{name}: zeta must be finite and nonzero (the penalty divides by zeta^2), got {z}")
        return torch.tensor(z, dtype=dtype, device=device)
    z = validate.tensor(zeta, "zeta", name)
    validate.same_device(name, x=torch.empty(0, device=device), zeta=z)
    if z.dim() > 1 or (z.dim() == 1 and z.shape[0] not in (1, B)):
        raise ValueError(f"{name}: zeta must be a scalar or have one value per sample (B={B}), got shape {tuple(z.shape)}")
    if z.device.type == "cpu" and not torch.compiler.is_compiling():  # no device sync for this check
        if not bool(torch.isfinite(z).all()) or bool((z == 0).any()):
            raise ValueError(f"{name}: zeta must be finite and nonzero (the penalty divides by zeta^2)")
    return z


def perturb_in_span(x, *, zeta=None, zeta_std=0.1, noise="bernoulli", center=True, per_sample_zeta=False,
                    generator=None, backend="auto"):
    """Perturb each sample along a random unit direction in the span of the (centred) batch, no gradient:

        Xc_j = x_j - mean_k x_k  (center=True; x_j otherwise),    D_i = sum_j c_ij Xc_j
        delta_i = D_i / ||D_i||,    x_tilde_i = x_i + zeta_i delta_i,    zeta ~ zeta_std * N(0, 1)

    noise="bernoulli": c_ij ~ Bernoulli(1/2) in {0,1}, random subset sums of the centred batch (the
    authors' code); noise="gaussian": c_ij ~ N(0, 1) (the paper, Eq 35-36). One zeta per batch (the
    code), or per sample with per_sample_zeta=True, unless ``zeta`` is given (a number or a tensor of
    shape [], [1] or [B]). x is B x (any shape), B >= 2. Returns (x_tilde, zeta): x_tilde like x
    (detached), zeta a tensor ([] or [B]) to pass to ``fd_smoothness``.

    A direction at rounding level (all samples identical, or a subset sum that cancels, e.g. all
    c_ij = 1 when centring), ||D_i|| <= 8 sqrt(B) eps sum_j |c_ij| ||Xc_j||, is zero: that sample is
    left unperturbed and adds 0 to the penalty.

    Randomness: zeta, then a 64-bit seed, are drawn from ``generator`` (or the default one); the fused
    backends make the c_ij from that seed with a counter-based Philox stream (no B x B matrix), the
    same stream on the C++ and Triton backends. The reference backend draws the B x B matrix with
    torch's generator: its x_tilde has the same distribution (and the same zeta), not the same values.
    Under torch.compile(fullgraph=True) ``generator`` must be None (a torch.Generator cannot be traced;
    a RuntimeError says so): seed torch's default generator with torch.manual_seed instead, which
    makes the compiled draws reproducible (though not equal to eager ones), or pass ``zeta``.
    """
    name = "perturb_in_span"
    x = validate.tensor(x, "x", name)
    if x.dim() < 2:
        raise ValueError(f"{name}: x must be B x (features...), at least 2-D, got shape {tuple(x.shape)}")
    B = x.shape[0]
    if B < 2:
        raise ValueError(f"{name}: x needs B >= 2 samples (the perturbation lies in the span of the batch), got B={B}")
    if noise not in ops.NOISE:
        raise ValueError(f"{name}: noise must be 'bernoulli' (the authors' code) or 'gaussian' (the paper), got {noise!r}")
    center = validate.flag(center, "center", name)
    per_sample_zeta = validate.flag(per_sample_zeta, "per_sample_zeta", name)
    validate.generator(generator, name, "zeta=sigma * torch.randn((), generator=g) keeps zeta reproducible")
    if zeta is None:
        std = validate.number(zeta_std, "zeta_std", name, low=0.0, strict=True)
        if math.isinf(std):
            raise ValueError(f"{name}: zeta_std must be finite")
    else:
        zeta = _zeta_arg(zeta, B, x.device, name, acc_dtype(x.dtype))
    _, ops_ = ops.FAMILY.select(backend, x, name)
    if zeta is None:
        zeta = draw_zeta(std, B if per_sample_zeta else 1, generator, x.device).to(x.device, acc_dtype(x.dtype))
        zeta = zeta if per_sample_zeta else zeta.reshape(())
    x_tilde = ops_.perturb(x.reshape(B, -1), zeta.detach().reshape(-1), noise, center, generator)
    return x_tilde.reshape(x.shape), zeta


def fd_smoothness(f_clean, f_perturbed, zeta, *, pool=None, backend="auto"):
    """Finite-difference Jacobian smoothness penalty R_c (Neural Bayes, Eq 4):

        R_c = (1/B) sum_b || f_clean_b - f_perturbed_b ||^2 / zeta_b^2

    (||x_tilde_b - x_b|| = |zeta_b| since the directions have unit norm). zeta: a nonzero number or
    a tensor of shape [], [1] or [B] (differentiable). pool="global" first averages a B x C x H x W
    (or B x C x ...) state over its positions, as the authors do with the last CNN state. Gradients
    flow into both f_clean and f_perturbed. Result: fp32 (fp64 for float64 inputs).
    A zero zeta on a CUDA device is not checked (that would synchronize): it gives inf.
    """
    name = "fd_smoothness"
    a = validate.tensor(f_clean, "f_clean", name)
    p = validate.tensor(f_perturbed, "f_perturbed", name)
    validate.like(name, a, p, "f_clean", "f_perturbed")
    if a.dim() < 1:
        raise ValueError(f"{name}: f_clean must have a batch dimension")
    if pool not in (None, "global"):
        raise ValueError(f"{name}: pool must be None or 'global', got {pool!r}")
    if pool == "global" and a.dim() < 3:
        raise ValueError(f"{name}: pool='global' needs a B x C x H x W (or B x C x ...) state, got shape {tuple(a.shape)}")
    z = _zeta_arg(zeta, a.shape[0], a.device, name, acc_dtype(a.dtype))
    _, ops_ = ops.FAMILY.select(backend, a, name)
    hw = math.prod(a.shape[2:]) if pool == "global" else 1
    B = a.shape[0]
    s = ops_.sqdiff(a.reshape(B, -1), p.reshape(B, -1), hw)
    z = z.to(s.dtype)
    return (s / (z * z)).mean()


def jacobian_smoothness(fn, x, *, pool=None, backend="auto", **perturb_args):
    """R_c in one call: x_tilde, zeta = perturb_in_span(x, **perturb_args); then
    fd_smoothness(fn(x), fn(x_tilde), zeta, pool=pool). fn runs twice (BatchNorm in training mode
    uses each batch's own statistics, as in the authors' code); both passes receive gradients."""
    if not callable(fn):
        raise TypeError(f"jacobian_smoothness: fn must be callable (a model or function), got {type(fn).__name__}")
    x_tilde, zeta = perturb_in_span(x, backend=backend, **perturb_args)
    return fd_smoothness(fn(x), fn(x_tilde), zeta, pool=pool, backend=backend)


__all__ = ["perturb_in_span", "fd_smoothness", "jacobian_smoothness"]
