"""Custom ops of the softmax_stats family: one read of a hidden state gives the softmax statistics
of the state and of its k x k average-pooled scale (Neural Bayes MIM, SPEC 1.3-1.4).

    softmax_stats(x, pool, eps) -> (ent, marg, marg_pool, stats)
        x          B x C x H x W (NCHW or channels-last), pre-softmax
        ent[s]     sum_{b,pos} sum_c S log(S + eps) of scale s (0: state, 1: pooled; 0 when pool = 0)
        marg       C x (H*W)  sum_b S              marg_pool  C x (H/k * W/k), pooled scale
        stats      B x (2P + 2Q): per sample and position, logsumexp_c x and sum_c S log(S + eps)
    (S = softmax over C; eps = 0 takes log S exactly.) The log in ``ent`` is treated as detached
    (the paper's sg(S): exact because sum_c dS_c = 0), so the backward is
        dx_c = S_c (g_ent (log(S_c + eps) - e) + g_marg[c, p] - sum_c' S_c' g_marg[c', p])
    recomputed from ``stats``; nothing B x C x H x W is saved besides x itself.

Ops: ``fastmi::softmax_stats`` / ``_backward`` (C++ schema in csrc/fastmi.cpp, CPU kernel in
csrc/cpu/softmax_stats.cpp) and ``fastmi::softmax_stats_triton`` / ``_backward`` (Triton, the GPU path).
"""
from __future__ import annotations

import torch
from torch import Tensor

from .. import _backend


def pooled_positions(x: Tensor, pool: int) -> int:
    return (x.shape[2] // pool) * (x.shape[3] // pool) if pool else 0


def _fake_forward(x, pool, eps):
    B, C, H, W = x.shape
    P, Q = H * W, pooled_positions(x, pool)
    dt = x.dtype if x.dtype in (torch.float32, torch.float64) else torch.float32
    return (x.new_empty((2,), dtype=dt), x.new_empty((C, P), dtype=dt), x.new_empty((C, Q), dtype=dt),
            x.new_empty((B, 2 * P + 2 * Q), dtype=dt))


def _fake_backward(grad_ent, grad_marg, grad_marg_pool, x, stats, pool, eps):
    return torch.empty_like(x)


def _make_autograd(backward_op):
    def setup_context(ctx, inputs, output):
        x, pool, eps = inputs
        ctx.save_for_backward(x, output[3])
        ctx.args = (pool, eps)
        ctx.mark_non_differentiable(output[3])

    def backward(ctx, g_ent, g_marg, g_marg_pool, _g_stats):
        if torch.is_grad_enabled():  # create_graph=True: the backward kernel has no derivative of its own
            raise RuntimeError(
                "fastmi: second-order gradients through the fused softmax_stats kernels are not supported; "
                "use backend='reference' for double backward"
            )
        x, stats = ctx.saved_tensors
        pool, eps = ctx.args
        return backward_op(g_ent.contiguous(), g_marg.contiguous(), g_marg_pool.contiguous(), x, stats, pool,
                           eps), None, None

    return setup_context, backward


def _cpu_kernel_loaded() -> bool:
    """The extension is loaded and was built with this family (an older fastmi._C may not be)."""
    if not _backend.availability()["cpu"][0]:
        return False
    try:
        return torch._C._dispatch_has_kernel_for_dispatch_key("fastmi::softmax_stats", "CPU")
    except Exception:
        return False


CPU_KERNEL = _cpu_kernel_loaded()

# --- C++ extension ops --------------------------------------------------------------------------
if CPU_KERNEL:
    torch.library.register_fake("fastmi::softmax_stats")(_fake_forward)
    torch.library.register_fake("fastmi::softmax_stats_backward")(_fake_backward)
    _ctx, _bwd = _make_autograd(lambda *a: torch.ops.fastmi.softmax_stats_backward(*a))
    torch.library.register_autograd("fastmi::softmax_stats", _bwd, setup_context=_ctx)


# --- Triton ops ---------------------------------------------------------------------------------
@torch.library.custom_op("fastmi::softmax_stats_triton", mutates_args=())
def softmax_stats_triton(x: Tensor, pool: int, eps: float) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    from ..kernels import softmax_stats as kernels

    return kernels.softmax_stats_fwd(x, pool, eps)


@torch.library.custom_op("fastmi::softmax_stats_triton_backward", mutates_args=())
def softmax_stats_triton_backward(grad_ent: Tensor, grad_marg: Tensor, grad_marg_pool: Tensor, x: Tensor,
                                  stats: Tensor, pool: int, eps: float) -> Tensor:
    from ..kernels import softmax_stats as kernels

    return kernels.softmax_stats_bwd(grad_ent, grad_marg, grad_marg_pool, x, stats, pool, eps)


softmax_stats_triton.register_fake(_fake_forward)
softmax_stats_triton_backward.register_fake(_fake_backward)
_ctx, _bwd = _make_autograd(lambda *a: softmax_stats_triton_backward(*a))
softmax_stats_triton.register_autograd(_bwd, setup_context=_ctx)


def dense_layout(x: Tensor) -> Tensor:
    """x itself when it is NCHW- or channels-last-contiguous (the kernels' two layouts), else a copy."""
    if x.is_contiguous() or x.is_contiguous(memory_format=torch.channels_last):
        return x
    return x.contiguous()


def softmax_stats(x: Tensor, pool: int, eps: float, backend: str):
    """(ent, marg, marg_pool, stats) of a 4-D state with the chosen fused backend (autograd-aware)."""
    x = dense_layout(x)
    if backend == "triton":
        return softmax_stats_triton(x, pool, eps)
    if x.dtype not in (torch.float32, torch.float64):
        x = x.float()  # the CPU kernel computes half types in fp32
    return torch.ops.fastmi.softmax_stats(x, pool, eps)
