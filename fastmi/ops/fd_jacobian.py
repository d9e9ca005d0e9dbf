"""Custom ops of the fd_jacobian family (Neural Bayes' smoothness regularizer R_c, SPEC 1.2).

    fd_perturb(x [B, n], seed int64 [1], zeta [1] or [B], noise, center) -> x_tilde [B, n]
        x_tilde_i = x_i + zeta_i D_i/||D_i||,  D = C @ Xc,  c_ij from the Philox stream of
        csrc/fd_jacobian.h (noise 0: Bernoulli {0,1}, 1: N(0,1)); no gradient (the perturbation
        is a constant of the penalty, as in the authors' code), so it has no autograd formula.
    fd_sqdiff(f_clean, f_perturbed, hw) -> s [B],  s_b = sum_c ((1/hw) sum_p (f_clean - f_perturbed)[b, c, p])^2
        with fd_sqdiff_backward for autograd (recomputes from the inputs; nothing is saved but them).

Ops: ``fastmi::fd_perturb`` / ``fastmi::fd_sqdiff`` / ``fastmi::fd_sqdiff_backward`` (C++ schema in
csrc/fastmi.cpp, CPU kernels in csrc/cpu/fd_jacobian.cpp) and the ``*_triton`` ops defined here
(kernels/fd_jacobian.py, the GPU path: there is no CUDA C++ kernel for this family). All have fake
implementations, so torch.compile(fullgraph=True) traces them.
"""
from __future__ import annotations

import torch
from torch import Tensor

from .. import _backend

NOISE = {"bernoulli": 0, "gaussian": 1}


def acc_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def _fake_perturb(x, seed, zeta, noise, center):
    return torch.empty_like(x, memory_format=torch.contiguous_format)


def _fake_sqdiff(f_clean, f_perturbed, hw):
    return f_clean.new_empty((f_clean.shape[0],), dtype=acc_dtype(f_clean.dtype))


def _fake_sqdiff_backward(grad, f_clean, f_perturbed, hw):
    like = lambda: torch.empty_like(f_clean, memory_format=torch.contiguous_format)  # noqa: E731
    return like(), like()


def _make_autograd(backward_op):
    def setup_context(ctx, inputs, output):
        f_clean, f_perturbed, hw = inputs
        ctx.save_for_backward(f_clean, f_perturbed)
        ctx.hw = hw

    def backward(ctx, grad):
        if torch.is_grad_enabled():  # create_graph=True: the backward kernel has no derivative of its own
            raise RuntimeError("fastmi: second-order gradients through the fused fd_smoothness kernels are not "
                               "supported; use backend='reference' for double backward")
        f_clean, f_perturbed = ctx.saved_tensors
        ga, gb = backward_op(grad.contiguous(), f_clean, f_perturbed, ctx.hw)
        return ga, gb, None

    return setup_context, backward


# --- C++ extension ops ------------------------------------------------------------------------
if _backend.ext_has_op("fd_perturb") and _backend.ext_has_op("fd_sqdiff"):
    torch.library.register_fake("fastmi::fd_perturb")(_fake_perturb)
    torch.library.register_fake("fastmi::fd_sqdiff")(_fake_sqdiff)
    torch.library.register_fake("fastmi::fd_sqdiff_backward")(_fake_sqdiff_backward)
    _ctx, _bwd = _make_autograd(lambda *a: torch.ops.fastmi.fd_sqdiff_backward(*a))
    torch.library.register_autograd("fastmi::fd_sqdiff", _bwd, setup_context=_ctx)


# --- Triton ops -------------------------------------------------------------------------------
@torch.library.custom_op("fastmi::fd_perturb_triton", mutates_args=())
def fd_perturb_triton(x: Tensor, seed: Tensor, zeta: Tensor, noise: int, center: bool) -> Tensor:
    from ..kernels import fd_jacobian as kernels

    return kernels.fd_perturb(x, seed, zeta, noise, center)


@torch.library.custom_op("fastmi::fd_sqdiff_triton", mutates_args=())
def fd_sqdiff_triton(f_clean: Tensor, f_perturbed: Tensor, hw: int) -> Tensor:
    from ..kernels import fd_jacobian as kernels

    return kernels.fd_sqdiff(f_clean, f_perturbed, hw)


@torch.library.custom_op("fastmi::fd_sqdiff_triton_backward", mutates_args=())
def fd_sqdiff_triton_backward(grad: Tensor, f_clean: Tensor, f_perturbed: Tensor, hw: int) -> tuple[Tensor, Tensor]:
    from ..kernels import fd_jacobian as kernels

    return kernels.fd_sqdiff_backward(grad, f_clean, f_perturbed, hw)


fd_perturb_triton.register_fake(_fake_perturb)
fd_sqdiff_triton.register_fake(_fake_sqdiff)
fd_sqdiff_triton_backward.register_fake(_fake_sqdiff_backward)
_ctx, _bwd = _make_autograd(lambda *a: fd_sqdiff_triton_backward(*a))
fd_sqdiff_triton.register_autograd(_bwd, setup_context=_ctx)


def _cpu_dtype(t: Tensor) -> Tensor:
    return t if t.dtype in (torch.float32, torch.float64) else t.float()  # half types compute in fp32


def perturb(x2d: Tensor, seed: Tensor, zeta: Tensor, noise: str, center: bool, backend: str) -> Tensor:
    """x_tilde for x2d [B, n] (detached) with the chosen fused backend; same dtype as x2d."""
    x2d = x2d.detach()
    if backend == "triton":
        return fd_perturb_triton(x2d, seed, zeta, NOISE[noise], center)
    out = torch.ops.fastmi.fd_perturb(_cpu_dtype(x2d), seed, zeta, NOISE[noise], center)
    return out.to(x2d.dtype)


def sqdiff(f_clean: Tensor, f_perturbed: Tensor, hw: int, backend: str) -> Tensor:
    """s [B] (autograd-aware) with the chosen fused backend; fp32 (fp64 for float64 inputs)."""
    if backend == "triton":
        return fd_sqdiff_triton(f_clean, f_perturbed, hw)
    return torch.ops.fastmi.fd_sqdiff(_cpu_dtype(f_clean), _cpu_dtype(f_perturbed), hw)
