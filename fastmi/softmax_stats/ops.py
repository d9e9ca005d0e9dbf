"""The softmax_stats family's op: one read of a hidden state gives the softmax statistics of the
state and of its k x k average-pooled scale (Neural Bayes MIM).

    softmax_stats(x, pool, eps) -> (ent, marg, marg_pool)
        x          B x C x H x W (NCHW or channels-last), pre-softmax
        ent[s]     sum_{b,pos} sum_c S log(S + eps) of scale s (0: the state, 1: its pooled scale; 0 when pool = 0)
        marg       C x (H*W)  sum_b S              marg_pool  C x (H/k * W/k), pooled scale
    (S = softmax over C of the state, or of its average pool for the pooled scale; eps = 0 takes
    log S exactly.) The log in ``ent`` is treated as detached (the paper's sg(S): exact because
    sum_c dS_c = 0), so the backward is

        dx_c = S_c (g_ent (log(S_c + eps) - e) + g_marg[c, p] - sum_c' S_c' g_marg[c', p])

Fused (``fastmi::softmax_stats``: csrc/cpu/softmax_stats.cpp; ``fastmi::softmax_stats_triton``:
kernels/softmax_stats.py, the GPU path): the kernels also return a B x (2P + 2Q) tensor of per-sample
row statistics (logsumexp_c x and sum_c S log(S + eps) per position) that the backward recomputes
from; nothing B x C x H x W is saved besides x. "reference": the same three outputs with torch ops.
"""
from __future__ import annotations

import torch
import torch.nn.functional as TF
from torch import Tensor

from .._core import registry
from .._core.dtypes import acc_dtype, upcast
from .._core.fused_op import FusedOp


def pooled_positions(x: Tensor, pool: int) -> int:
    return (x.shape[2] // pool) * (x.shape[3] // pool) if pool else 0


def _fake_forward(x, pool, eps):
    B, C, H, W = x.shape
    P, Q = H * W, pooled_positions(x, pool)
    dt = acc_dtype(x.dtype)
    return (x.new_empty((2,), dtype=dt), x.new_empty((C, P), dtype=dt), x.new_empty((C, Q), dtype=dt),
            x.new_empty((B, 2 * P + 2 * Q), dtype=dt))


def _fake_backward(grad_ent, grad_marg, grad_marg_pool, x, stats, pool, eps):
    return torch.empty_like(x)


def _save(ctx, inputs, output):
    x, pool, eps = inputs
    ctx.save_for_backward(x, output[3])
    ctx.args = (pool, eps)
    ctx.mark_non_differentiable(output[3])


def _backward(ctx, impl, g_ent, g_marg, g_marg_pool, _g_stats):
    x, stats = ctx.saved_tensors
    return impl.backward(g_ent.contiguous(), g_marg.contiguous(), g_marg_pool.contiguous(), x, stats, *ctx.args), \
        None, None


OP = FusedOp(
    "softmax_stats", "(Tensor x, int pool, float eps) -> (Tensor, Tensor, Tensor, Tensor)",
    backward_schema="(Tensor grad_ent, Tensor grad_marg, Tensor grad_marg_pool, Tensor x, Tensor stats, int pool, "
                    "float eps) -> Tensor",
    fake=_fake_forward, fake_backward=_fake_backward, save=_save, backward=_backward,
    triton=("softmax_stats", "softmax_stats_fwd", "softmax_stats_bwd"))


def dense_layout(x: Tensor) -> Tensor:
    """x itself when it is NCHW- or channels-last-contiguous (the kernels' two layouts), else a copy."""
    if x.is_contiguous() or x.is_contiguous(memory_format=torch.channels_last):
        return x
    return x.contiguous()


def _fused(backend: str):
    impl = OP.implementation(backend)

    def softmax_stats(x: Tensor, pool: int, eps: float):
        x = dense_layout(x)
        if backend == "cpu":
            x = upcast(x)  # the CPU kernel computes half types in fp32
        return impl.forward(x, pool, eps)[:3]

    return softmax_stats


def _scale_stats(z: Tensor, eps: float) -> tuple[Tensor, Tensor]:
    """(sum_{b,pos,c} S log(sg(S) + eps), sum_b S as C x positions) of one pre-softmax scale z."""
    logp = torch.log_softmax(z, dim=1)
    S = logp.exp()
    log_term = (S.detach() + eps).log() if eps > 0 else logp.detach()
    return (S * log_term).sum(), S.sum(0).reshape(z.shape[1], -1)


def softmax_stats_reference(x: Tensor, pool: int, eps: float):
    z = upcast(x)
    ent, marg = _scale_stats(z, eps)
    if not pool:
        return torch.stack([ent, torch.zeros_like(ent)]), marg, marg.new_zeros((marg.shape[0], 0))
    ent_pool, marg_pool = _scale_stats(TF.avg_pool2d(z, pool, pool), eps)
    return torch.stack([ent, ent_pool]), marg, marg_pool


FAMILY = registry.family("softmax_stats", ext_ops=("softmax_stats", "softmax_stats_backward"))
for _b in ("cpu", "triton"):  # no CUDA C++ kernel: a bandwidth-bound row softmax, Triton is the GPU path
    FAMILY.register(_b, _fused(_b))
FAMILY.register("reference", softmax_stats_reference)
FAMILY.availability()
