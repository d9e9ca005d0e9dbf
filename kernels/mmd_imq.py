"""Triton kernels of the mmd_imq family: MMD^2 with k(a, b) = sum_C C / (C + ||a - b||^2), and its
gradient in the same pass.

One program owns a block of BM rows of one sample (x or y) and one chunk of BK feature columns of
its gradient; it sweeps the column blocks of its own sample (the "self" pairs, weight c_self) and
then of the other sample (the "cross" pairs, weight -1/(nm)). Per tile: D = A B^T (tl.dot with
"tf32x3" on GPUs: three TF32 tensor-core products, about fp32 accuracy, where plain TF32 would ruin
the cancellation-prone expansion; "ieee" in the interpreter), d2 = |a|^2 + |b|^2 - 2D clamped at 0,
pairs whose d2 cancelled below 2^-5 (|a|^2 + |b|^2) recomputed from exact differences, kernel
sums into a per-row value, W = 4 c g (g = dk/dd2) and the gradient
    dA = rowsum(W) * A - W B
accumulated in registers. Rows own their gradient, so there are no atomics and the result is
deterministic; the price is that the symmetric x-x and y-y tiles are evaluated from both sides
(the C++ kernel uses the upper triangle). Nothing n x m is stored.

Inputs come prepared by ``fastmi.mmd_imq.ops.prepare`` (centred on their means, scaled by a power
of two), see there. Everything is computed in fp32, or in fp64 for float64 inputs (ACC).
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

CANCEL: tl.constexpr = tl.constexpr(1.0 / 32.0)  # same threshold as csrc/cpu/mmd_imq.cpp


@triton.jit
def _sq_dist_tile(a_ptr, b_ptr, qa, qb, rows, cols, rmask, cmask, K, BK: tl.constexpr, BM: tl.constexpr,
                  BN: tl.constexpr, PREC: tl.constexpr, SELF: tl.constexpr, ACC: tl.constexpr):
    acc = tl.zeros((BM, BN), dtype=ACC)
    for k0 in range(0, K, BK):
        ks = k0 + tl.arange(0, BK)
        km = ks < K
        a = tl.load(a_ptr + rows[:, None] * K + ks[None, :], mask=rmask[:, None] & km[None, :], other=0.0)
        b = tl.load(b_ptr + cols[:, None] * K + ks[None, :], mask=cmask[:, None] & km[None, :], other=0.0)
        acc += tl.dot(a, tl.trans(b), input_precision=PREC)
    s = qa[:, None] + qb[None, :]
    d2 = tl.maximum(s - 2.0 * acc, 0.0)
    # pairs that lost more than ~5 bits to cancellation (nearly coincident points, far from the
    # centre) are recomputed from exact differences; rare, so the branch is usually skipped
    flag = (d2 < s * CANCEL) & rmask[:, None] & cmask[None, :]
    if SELF:  # a point and itself: d2 = 0 is set exactly by the caller
        flag = flag & (rows[:, None] != cols[None, :])
    if tl.max(flag.to(tl.int32)) > 0:
        exact = tl.zeros((BM, BN), dtype=ACC)
        for k in range(0, K):
            ak = tl.load(a_ptr + rows * K + k, mask=rmask, other=0.0)
            bk = tl.load(b_ptr + cols * K + k, mask=cmask, other=0.0)
            diff = ak[:, None] - bk[None, :]
            exact += diff * diff
        d2 = tl.where(flag, exact, d2)
    return d2


@triton.jit
def _sweep(a_ptr, qa_ptr, b_ptr, qb_ptr, c_ptr, ns, n_a, n_b, K, coef, rows, rmask, kout, kmask, val,
           SELF: tl.constexpr, UNBIASED: tl.constexpr, WANT_GRAD: tl.constexpr, BM: tl.constexpr,
           BN: tl.constexpr, BK: tl.constexpr, PREC: tl.constexpr, ACC: tl.constexpr):
    """Sweep all column blocks of b for the rows of a: returns (row values, row gradient chunk)."""
    qa = tl.load(qa_ptr + rows, mask=rmask, other=0.0)
    acc = tl.zeros((BM, BK), dtype=ACC)
    rowsum = tl.zeros((BM,), dtype=ACC)
    for j0 in range(0, n_b, BN):
        cols = j0 + tl.arange(0, BN)
        cmask = cols < n_b
        qb = tl.load(qb_ptr + cols, mask=cmask, other=0.0)
        d2 = _sq_dist_tile(a_ptr, b_ptr, qa, qb, rows, cols, rmask, cmask, K, BK, BM, BN, PREC, SELF, ACC)
        valid = rmask[:, None] & cmask[None, :]
        if SELF:
            diag = rows[:, None] == cols[None, :]
            d2 = tl.where(diag, 0.0, d2)  # exact: a point's distance to itself
        ksum = tl.zeros((BM, BN), dtype=ACC)
        gsum = tl.zeros((BM, BN), dtype=ACC)
        for s in range(ns):
            c = tl.load(c_ptr + s)
            t = c / (c + d2)
            ksum += t
            gsum += t * t / c
        vmask = valid
        if SELF and UNBIASED:
            vmask = vmask & (rows[:, None] != cols[None, :])
        val += coef * tl.sum(tl.where(vmask, ksum, 0.0), axis=1)
        if WANT_GRAD:
            gmask = valid
            if SELF:
                gmask = gmask & (rows[:, None] != cols[None, :])
            w = tl.where(gmask, -4.0 * coef * gsum, 0.0)
            rowsum += tl.sum(w, axis=1)
            bo = tl.load(b_ptr + cols[:, None] * K + kout[None, :], mask=cmask[:, None] & kmask[None, :], other=0.0)
            acc += tl.dot(w, bo, input_precision=PREC)
    a_out = tl.load(a_ptr + rows[:, None] * K + kout[None, :], mask=rmask[:, None] & kmask[None, :], other=0.0)
    return val, rowsum[:, None] * a_out - acc


@triton.jit
def _mmd_imq_rows_kernel(a_self, qa_self, a_cross, qa_cross, b_cross, qb_cross, c_ptr, scale_ptr,
                         val_out, grad_out, ns, n_a, n_b, K,
                         UNBIASED: tl.constexpr, WANT_GRAD: tl.constexpr, BM: tl.constexpr, BN: tl.constexpr,
                         BK: tl.constexpr, PREC: tl.constexpr, ACC: tl.constexpr):
    pid_m = tl.program_id(0)
    pid_k = tl.program_id(1)
    rows = pid_m * BM + tl.arange(0, BM)
    rmask = rows < n_a
    kout = pid_k * BK + tl.arange(0, BK)
    kmask = kout < K
    # c_ptr: the ns scales C, then the pair weights of the self and the cross pairs (in ACC: a float
    # argument would be fp32, and float64 inputs need the weights in float64)
    coef_self = tl.load(c_ptr + ns)
    coef_cross = tl.load(c_ptr + ns + 1)
    val = tl.zeros((BM,), dtype=ACC)
    val, g_self = _sweep(a_self, qa_self, a_self, qa_self, c_ptr, ns, n_a, n_a, K, coef_self, rows, rmask, kout, kmask,
                         val, True, UNBIASED, WANT_GRAD, BM, BN, BK, PREC, ACC)
    val, g_cross = _sweep(a_cross, qa_cross, b_cross, qb_cross, c_ptr, ns, n_a, n_b, K, coef_cross, rows, rmask, kout,
                          kmask, val, False, UNBIASED, WANT_GRAD, BM, BN, BK, PREC, ACC)
    if pid_k == 0:
        tl.store(val_out + rows, val, mask=rmask)
    if WANT_GRAD:
        inv_s = tl.load(scale_ptr)
        g = (g_self + g_cross) * inv_s
        tl.store(grad_out + rows[:, None] * K + kout[None, :], g, mask=rmask[:, None] & kmask[None, :])


def _blocks(K: int, on_gpu: bool):
    bk = min(max(16, triton.next_power_of_2(K)), 128 if on_gpu else 64)
    return (64, 64, bk) if on_gpu else (32, 32, bk)


def _smaller_tiles(BM: int, BN: int, BK: int) -> list:
    """The tiles to try, largest first: BK halved down to 16, then BM and BN halved down to 16."""
    out = [(BM, BN, BK)]
    while BK > 16:
        BK //= 2
        out.append((BM, BN, BK))
    while BM > 16 or BN > 16:
        BM, BN = max(16, BM // 2), max(16, BN // 2)
        out.append((BM, BN, BK))
    return out


# (device, dtype, K's first tile, UNBIASED, WANT_GRAD) -> the tile that fitted; filled on the first
# launch that needed a smaller one
_FITTED: dict = {}


def rows_pass(a_self, qa_self, a_cross, qa_cross, b_cross, qb_cross, scales, inv_s, coef_self: float, coef_cross: float,
              unbiased: bool, want_grad: bool):
    """(per-row values [n_a], gradient [n_a, K] in the caller's units, or None) for the rows of one sample,
    in the dtype of the prepared points (fp32, or fp64 for float64 inputs).

    A tile whose compiled kernel needs more shared memory or registers than the GPU has (Triton's
    OutOfResources: BK = 128 asks 192 KB of shared memory from some Triton versions, over an A100's
    164 KB) is retried with smaller ones (``_smaller_tiles``); the one that fits is remembered."""
    from triton.runtime.errors import OutOfResources

    n_a, K = a_self.shape
    n_b = b_cross.shape[0]
    fp64 = a_self.dtype == torch.float64
    BM, BN, BK = _blocks(K, a_self.is_cuda)
    if fp64 and a_self.is_cuda:  # fp64 tiles take twice the registers
        BM, BN = BM // 2, BN // 2
    key = (a_self.device, a_self.dtype, BK, unbiased, want_grad)
    val = torch.empty(n_a, device=a_self.device, dtype=a_self.dtype)
    grad = torch.empty((n_a, K) if want_grad else (1, 1), device=a_self.device, dtype=a_self.dtype)
    weights = torch.cat([scales, torch.tensor([coef_self, coef_cross], dtype=scales.dtype, device=scales.device)])
    tiles = _smaller_tiles(BM, BN, BK)
    if key in _FITTED:
        tiles = tiles[tiles.index(_FITTED[key]):]
    for i, (bm, bn, bk) in enumerate(tiles):
        grid = (triton.cdiv(n_a, bm), triton.cdiv(K, bk) if want_grad else 1)
        try:
            _mmd_imq_rows_kernel[grid](a_self, qa_self, a_cross, qa_cross, b_cross, qb_cross, weights, inv_s, val,
                                       grad, scales.numel(), n_a, n_b, K, UNBIASED=unbiased,
                                       WANT_GRAD=want_grad, BM=bm, BN=bn, BK=bk,
                                       PREC="tf32x3" if a_self.is_cuda and not fp64 else "ieee",
                                       ACC=tl.float64 if fp64 else tl.float32)
        except OutOfResources:
            if i == len(tiles) - 1:
                raise
            continue
        if i:
            _FITTED[key] = (bm, bn, bk)
        break
    return val, (grad if want_grad else None)
