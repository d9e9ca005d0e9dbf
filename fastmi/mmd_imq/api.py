"""Variational InfoMax's MMD prior term (inverse-multiquadric kernel, as in WAE) and VIB's KL."""
from __future__ import annotations

import torch

from .._core import distributed, validate
from .._core.dtypes import upcast
from . import ops


WAE_SCALES = (0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0)
"""The multi-scale set of WAE (tolstikhin/wae): pass ``scales=WAE_SCALES, scale=2 * K * sigma**2``."""


def _imq_scales(scale, scales, K: int, name: str) -> list:
    base = float(K) if scale is None else validate.number(scale, "scale", name, low=0.0, strict=True)
    if base == float("inf"):
        raise ValueError(f"{name}: scale must be finite, got inf")
    if scales is None:
        return [base]
    if isinstance(scales, torch.Tensor):
        scales = scales.tolist()
    try:
        rel = [validate.number(r, "scales", name, low=0.0, strict=True) for r in scales]
    except TypeError:
        raise TypeError(f"{name}: scales must be a sequence of positive numbers, got {scales!r}") from None
    if not rel or any(r == float("inf") for r in rel):
        raise ValueError(f"{name}: scales must be a non-empty sequence of positive finite numbers, got {scales!r}")
    return [base * r for r in rel]


def _check_mmd(name, x, y, scale, scales, estimator, backend, local_sizes: bool):
    """(x, y, kernel constants, unbiased, the backend's op)."""
    x = validate.tensor(x, "x", name, ndim=2)
    y = validate.tensor(y, "y", name, ndim=2)
    validate.same_device(name, x=x, y=y)
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"{name}: x and y must have the same feature dimension K, got x {tuple(x.shape)} "
                         f"and y {tuple(y.shape)}")
    if x.dtype != y.dtype:
        raise TypeError(f"{name}: x is {x.dtype} but y is {y.dtype}")
    if estimator not in ("unbiased", "biased"):
        raise ValueError(f"{name}: estimator must be 'unbiased' or 'biased', got {estimator!r}")
    unbiased = estimator == "unbiased"
    if local_sizes:
        _check_rows(name, unbiased, x.shape[0], y.shape[0])
    cs = _imq_scales(scale, scales, x.shape[1], name)
    validate.finite(x, "x", name)
    validate.finite(y, "y", name)
    _, mmd_sq = ops.FAMILY.select(backend, x, name)
    return x, y, cs, unbiased, mmd_sq


def _facts(checked) -> dict:
    x, y, cs, unbiased, _ = checked
    return {"x rows": x.shape[0], "y rows": y.shape[0], "feature size": x.shape[1],
            "dtype": distributed.dtype_code(x.dtype), "options": distributed.fingerprint(cs, unbiased)}


def _check_rows(name: str, unbiased: bool, n: int, m: int, where: str = "") -> None:
    if unbiased:
        for arg, rows in (("x", n), ("y", m)):
            if rows < 2:
                raise ValueError(f"{name}: the unbiased estimator needs at least 2 rows in {arg}{where}, got {rows} "
                                 "(use estimator='biased')")


def mmd_imq(x, y, *, scale=None, scales=None, estimator="unbiased", backend="auto", group=None) -> torch.Tensor:
    """MMD^2 between the samples x (n x K) and y (m x K) with the inverse-multiquadric kernel

        k(a, b) = sum_{C in Cs} C / (C + ||a - b||^2),   Cs = [scale * r for r in scales] (or [scale])

        unbiased (U-statistic, the WAE estimator):
            MMD^2 = sum_{i!=j} k(x_i, x_j) / (n(n-1)) + sum_{i!=j} k(y_i, y_j) / (m(m-1))
                    - 2 sum_{i,j} k(x_i, y_j) / (n m)
        biased (V-statistic): diagonals included, divided by n^2 and m^2.

    ``scale`` is C (default K, the VIM paper's choice; WAE uses 2 K sigma^2); ``scales`` are
    multipliers of it whose kernels are summed (e.g. ``WAE_SCALES``). Returns a 0-d tensor
    (fp32 for fp16/bf16 inputs). The fused kernels never form an n x m matrix.

    ``group=``: each rank passes its own rows of x and y; every rank gathers all of them (O((n + m) K)
    memory, differentiable) and computes the MMD^2 of the concatenated samples, so the pairs across
    ranks are counted. (Every rank computes all pairs: the pair sums are not split over the ranks.)
    """
    return _mmd("mmd_imq", group, lambda: (x, y), [x, y], scale, scales, estimator, backend)


def _mmd(name: str, group, inputs, rows, scale, scales, estimator, backend) -> torch.Tensor:
    """MMD^2 of ``inputs()`` -> (x, y) (which runs the caller's own checks), here or over ``group``."""
    group = distributed.resolve(group, name)

    def check():
        x, y = inputs()
        return _check_mmd(name, x, y, scale, scales, estimator, backend, local_sizes=group is None)

    if group is None:
        x, y, cs, unbiased, mmd_sq = check()
        return mmd_sq(x, y, cs, unbiased)
    (x, y, cs, unbiased, mmd_sq), shards, _ = distributed.agree(
        group, name, rows, check, _facts, sizes=("x rows", "y rows"), same=("feature size", "dtype", "options"))
    _check_rows(name, unbiased, shards["x rows"].total, shards["y rows"].total, " over all ranks")
    return mmd_sq(distributed.gather_rows(x, shards["x rows"]), distributed.gather_rows(y, shards["y rows"]), cs,
                  unbiased)


def mmd_imq_prior(z, *, sigma=1.0, n_prior=None, scale=None, scales=None, estimator="unbiased", generator=None,
                  backend="auto", group=None) -> torch.Tensor:
    """Variational InfoMax's prior term: MMD^2 (``mmd_imq``) between the codes z (n x K) and a fresh
    sample p of the prior N(0, sigma^2 I), p = sigma * randn(n_prior, K) (n_prior defaults to n):

        MMD^2(z, p) with k(a, b) = C / (C + ||a - b||^2), C = scale (default K, independent of sigma)

    ``generator`` (a torch.Generator on z's device) makes the draw reproducible in eager mode. It
    cannot be traced by torch.compile(fullgraph=True): there, leave it None and seed torch's default
    generator (torch.manual_seed), or draw p outside the compiled function with the generator and call
    ``mmd_imq(z, p)`` inside (a RuntimeError says so). ``group=``: each rank
    draws n_prior samples (default: its own rows) and the MMD^2 is between the codes and the prior
    samples of every rank (as ``mmd_imq(..., group=)``); seed each rank's generator differently.
    """
    name = "mmd_imq_prior"
    validate.generator(generator, name, "p = sigma * torch.randn(n, K, generator=g), then F.mmd_imq(z, p) inside")

    def draw():
        codes = validate.tensor(z, "z", name, ndim=2)
        s = validate.number(sigma, "sigma", name, low=0.0, strict=True)
        if s == float("inf"):
            raise ValueError(f"{name}: sigma must be finite")
        k = codes.shape[0] if n_prior is None else n_prior
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ValueError(f"{name}: n_prior must be a positive int, got {n_prior!r}")
        dtype = codes.dtype if codes.dtype in (torch.float32, torch.float64) else torch.float32
        p = torch.randn(k, codes.shape[1], generator=generator, device=codes.device, dtype=dtype) * s
        return (codes if codes.dtype == dtype else codes.float()), p

    return _mmd(name, group, draw, [z], scale, scales, estimator, backend)


def gaussian_kl(mu, std, *, sigma=1.0) -> torch.Tensor:
    """VIB's KL term (Alemi et al.), mean over the batch (the first dimension):

        KL(N(mu, diag std^2) || N(0, sigma^2 I)) = 1/2 sum_d [ (std^2 + mu^2) / sigma^2 - 1 - log(std^2 / sigma^2) ]

    mu and std have the same shape (B x K, or B x ...: summed over all but the first dimension; a 1-D
    input is B one-dimensional codes); std must be > 0. Elementwise, so plain
    PyTorch on every backend; fp16/bf16 are computed in fp32.
    """
    name = "gaussian_kl"
    mu = validate.tensor(mu, "mu", name)
    std = validate.tensor(std, "std", name)
    validate.like(name, mu, std, "mu", "std", dtype=False)
    s = validate.number(sigma, "sigma", name, low=0.0, strict=True)
    if s == float("inf"):
        raise ValueError(f"{name}: sigma must be finite")
    validate.finite(mu, "mu", name)
    validate.finite(std, "std", name)
    if not torch.compiler.is_compiling() and not bool((std > 0).all()):
        raise ValueError(f"{name}: std must be > 0 everywhere (it is a standard deviation)")
    mu, std = upcast(mu), upcast(std)
    s2 = s * s
    var = std * std
    kl = 0.5 * ((var + mu * mu) / s2 - 1.0 - torch.log(var / s2))
    return kl.reshape(kl.shape[0], -1).sum(1).mean()


__all__ = ["mmd_imq", "mmd_imq_prior", "gaussian_kl", "WAE_SCALES"]
