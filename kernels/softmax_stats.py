"""Triton kernels of the softmax_stats family (Neural Bayes MIM): the GPU path (there is no CUDA
C++ kernel for this family; the work is a bandwidth-bound row softmax that Triton handles well).

The state x (B x C x H x W, any strides) is cut into *units*: a k x k pooling window (its k^2
positions, tile KKP x BLOCK_C), or one position outside every window (floor-mode remainder, or no
pool). A program owns one unit and one chunk of BCHUNK samples, so each element of x is loaded
once: the state's softmax statistics and the pooled scale's (the mean of the tile's rows) come
from the same registers. For unit u and chunk j, per scale:

    S = softmax_c(x[b, :, p]),  e_bp = sum_c S log(S + eps)   (eps = 0: log S = x - lse, exact)
    part[j, c, p] = sum_{b in chunk j} S[b, c, p],  ent_part[j, u] = sum_{b, p in u} e_bp

and the per-(b, p) lse and e go to ``stats`` for the backward. The chunk partial sums are added in
chunk order afterwards (deterministic). The backward program recomputes S from lse and writes

    dx_c = S_c (g_ent (log(S_c + eps) - e) + g_marg[c, p] - sum_c' S_c' g_marg[c', p])

plus the pooled scale's gradient / k^2 on each position of the window.
"""
from __future__ import annotations

import functools

import torch
import triton
import triton.language as tl

BCHUNK = 64
MAX_CHANNELS = 16384  # a unit's tile holds a whole channel row


@triton.jit
def _softmax_rows(xv, valid, EPS: tl.constexpr, EXACT: tl.constexpr):
    """Row softmax of a 2-D tile whose masked entries are -inf; rows where ``valid`` is false give S = 0."""
    m = tl.max(xv, axis=1)
    m = tl.where(valid, m, 0.0)
    ex = tl.exp(xv - m[:, None])
    z = tl.sum(ex, axis=1)
    z = tl.where(valid, z, 1.0)
    S = ex / z[:, None]
    lse = m + tl.log(z)
    if EXACT:
        L = xv - lse[:, None]
    else:
        L = tl.log(S + EPS)
    t = tl.where(S == 0, 0.0, S * L)  # 0 log 0 = 0; NaN (non-finite input) propagates
    return S, L, lse, tl.sum(t, axis=1)


@triton.jit
def _unit(off_ptr, pos_ptr, q_ptr, u, C, KKP: tl.constexpr, BLOCK_C: tl.constexpr):
    """The positions of work unit u (a pooling window or a leftover position): its channel lanes and
    their mask, positions, row offsets, which rows exist, the 2-D load mask and its pooled position q
    (if any)."""
    rows = tl.arange(0, KKP)
    cols = tl.arange(0, BLOCK_C)
    pos = tl.load(pos_ptr + u * KKP + rows)
    off = tl.load(off_ptr + u * KKP + rows)
    rvalid = pos >= 0
    cmask = cols < C
    mask2 = rvalid[:, None] & cmask[None, :]
    q = tl.load(q_ptr + u + tl.arange(0, 1))  # a 1-block: masks must be blocks
    return cols, cmask, pos, off, rvalid, mask2, q, q >= 0


@triton.jit
def _fwd_kernel(x_ptr, off_ptr, pos_ptr, q_ptr, part_ptr, partq_ptr, ent_ptr, stats_ptr,
                B, C, P, Q, n_units, sb, sc, srow,
                EPS: tl.constexpr, EXACT: tl.constexpr, HAS_POOL: tl.constexpr, KK: tl.constexpr,
                KKP: tl.constexpr, BLOCK_C: tl.constexpr, CHUNK: tl.constexpr, ACC: tl.constexpr):
    u = tl.program_id(0)
    j = tl.program_id(1)
    cols, cmask, pos, off, rvalid, mask2, q, qv = _unit(off_ptr, pos_ptr, q_ptr, u, C, KKP, BLOCK_C)
    acc = tl.zeros((KKP, BLOCK_C), dtype=ACC)
    accq = tl.zeros((BLOCK_C,), dtype=ACC)
    ent_rows = tl.zeros((KKP,), dtype=ACC)
    ent_q = tl.zeros((1,), dtype=ACC)
    b0 = j * CHUNK
    for i in range(0, CHUNK):
        b = b0 + i
        if b < B:
            xv = tl.load(x_ptr + b * sb + off[:, None] + cols[None, :] * sc, mask=mask2, other=float("-inf")).to(ACC)
            S, L, lse, e = _softmax_rows(xv, rvalid, EPS, EXACT)
            acc += tl.where(mask2, S, 0.0)
            ent_rows += tl.where(rvalid, e, 0.0)
            tl.store(stats_ptr + b * srow + pos, lse, mask=rvalid)
            tl.store(stats_ptr + b * srow + P + pos, e, mask=rvalid)
            if HAS_POOL:
                xp = tl.sum(tl.where(mask2, xv, 0.0), axis=0) / KK
                xp = tl.where(cmask, xp, float("-inf"))
                Sq, Lq, lq, eq = _softmax_rows(xp[None, :], tl.arange(0, 1) >= 0, EPS, EXACT)
                accq += tl.where(cmask & qv, tl.sum(Sq, axis=0), 0.0)
                ent_q += tl.where(qv, eq, 0.0)
                tl.store(stats_ptr + b * srow + 2 * P + q, lq, mask=qv)
                tl.store(stats_ptr + b * srow + 2 * P + Q + q, eq, mask=qv)
    tl.store(part_ptr + j * C * P + cols[None, :] * P + pos[:, None], acc, mask=mask2)
    if HAS_POOL:
        tl.store(partq_ptr + j * C * Q + cols * Q + q, accq, mask=cmask & qv)
    tl.store(ent_ptr + (j * n_units + u) * 2, tl.sum(ent_rows, axis=0))
    tl.store(ent_ptr + (j * n_units + u) * 2 + 1 + tl.arange(0, 1), ent_q)


@triton.jit
def _bwd_kernel(x_ptr, off_ptr, pos_ptr, q_ptr, ge_ptr, gm_ptr, gmq_ptr, stats_ptr, grad_ptr,
                B, C, P, Q, sb, sc, srow,
                EPS: tl.constexpr, EXACT: tl.constexpr, HAS_POOL: tl.constexpr, KK: tl.constexpr,
                KKP: tl.constexpr, BLOCK_C: tl.constexpr, CHUNK: tl.constexpr, ACC: tl.constexpr):
    u = tl.program_id(0)
    j = tl.program_id(1)
    cols, cmask, pos, off, rvalid, mask2, q, qv = _unit(off_ptr, pos_ptr, q_ptr, u, C, KKP, BLOCK_C)
    ge0 = tl.load(ge_ptr).to(ACC)
    ge1 = tl.load(ge_ptr + 1).to(ACC)
    gm = tl.load(gm_ptr + cols[None, :] * P + pos[:, None], mask=mask2, other=0.0).to(ACC)
    if HAS_POOL:
        gmq = tl.load(gmq_ptr + cols * Q + q, mask=cmask & qv, other=0.0).to(ACC)
        qvs = tl.sum(qv.to(tl.int32), axis=0) > 0
    b0 = j * CHUNK
    for i in range(0, CHUNK):
        b = b0 + i
        if b < B:
            ptrs = b * sb + off[:, None] + cols[None, :] * sc
            xv = tl.load(x_ptr + ptrs, mask=mask2, other=float("-inf")).to(ACC)
            lse = tl.load(stats_ptr + b * srow + pos, mask=rvalid, other=0.0)
            e = tl.load(stats_ptr + b * srow + P + pos, mask=rvalid, other=0.0)
            S = tl.exp(xv - lse[:, None])
            if EXACT:
                L = xv - lse[:, None]
            else:
                L = tl.log(S + EPS)
            dot = tl.sum(tl.where(mask2, S * gm, 0.0), axis=1)
            g = S * (ge0 * (L - e[:, None]) + gm - dot[:, None])
            g = tl.where(S == 0, 0.0, g)
            if HAS_POOL:
                xp = tl.sum(tl.where(mask2, xv, 0.0), axis=0) / KK
                xp = tl.where(cmask, xp, float("-inf"))
                lq = tl.sum(tl.load(stats_ptr + b * srow + 2 * P + q, mask=qv, other=0.0), axis=0)
                eq = tl.sum(tl.load(stats_ptr + b * srow + 2 * P + Q + q, mask=qv, other=0.0), axis=0)
                Sq = tl.exp(xp - lq)
                if EXACT:
                    Lq = xp - lq
                else:
                    Lq = tl.log(Sq + EPS)
                dq = tl.sum(tl.where(cmask, Sq * gmq, 0.0), axis=0)
                gq = Sq * (ge1 * (Lq - eq) + gmq - dq)
                gq = tl.where(Sq == 0, 0.0, gq)
                gq = tl.where(qvs, gq, 0.0)
                g += gq[None, :] / KK
            tl.store(grad_ptr + ptrs, g.to(grad_ptr.dtype.element_ty), mask=mask2)


@functools.lru_cache(maxsize=64)
def _units_cpu(H: int, W: int, k: int, sh: int, sw: int):
    """(offsets, positions, windows) of every unit, as nested lists; -1 pads unused rows."""
    kkp = triton.next_power_of_2(k * k) if k else 1
    offs, poss, qs, covered = [], [], [], set()
    if k:
        for qh in range(H // k):
            for qw in range(W // k):
                ps = [(qh * k + i, qw * k + jj) for i in range(k) for jj in range(k)]
                covered.update(ps)
                pad = kkp - len(ps)
                poss.append([h * W + w for h, w in ps] + [-1] * pad)
                offs.append([h * sh + w * sw for h, w in ps] + [0] * pad)
                qs.append(qh * (W // k) + qw)
    for h in range(H):
        for w in range(W):
            if (h, w) not in covered:
                poss.append([h * W + w] + [-1] * (kkp - 1))
                offs.append([h * sh + w * sw] + [0] * (kkp - 1))
                qs.append(-1)
    return offs, poss, qs, kkp


def _units(x: torch.Tensor, k: int):
    offs, poss, qs, kkp = _units_cpu(x.shape[2], x.shape[3], k, x.stride(2), x.stride(3))
    dev = x.device
    return (torch.tensor(offs, dtype=torch.int64, device=dev), torch.tensor(poss, dtype=torch.int64, device=dev),
            torch.tensor(qs, dtype=torch.int64, device=dev), kkp)


def _acc(dtype: torch.dtype):
    return (tl.float64, torch.float64) if dtype == torch.float64 else (tl.float32, torch.float32)


def _common(x: torch.Tensor, pool: int):
    B, C, H, W = x.shape
    if C > MAX_CHANNELS:
        raise ValueError(f"softmax_stats (triton): at most {MAX_CHANNELS} channels, got {C}")
    P = H * W
    Q = (H // pool) * (W // pool) if pool else 0
    return B, C, P, Q, triton.next_power_of_2(C), triton.cdiv(B, BCHUNK)


def softmax_stats_fwd(x: torch.Tensor, pool: int, eps: float):
    """(ent [2], marg C x P, marg_pool C x Q, stats B x (2P + 2Q)) in fp32 (fp64 for float64 x)."""
    B, C, P, Q, block_c, chunks = _common(x, pool)
    acc_tl, acc_dt = _acc(x.dtype)
    offs, poss, qs, kkp = _units(x, pool)
    n_units = qs.shape[0]
    part = torch.zeros((chunks, C, P), dtype=acc_dt, device=x.device)
    partq = torch.zeros((chunks, C, Q), dtype=acc_dt, device=x.device)
    ent = torch.zeros((chunks, n_units, 2), dtype=acc_dt, device=x.device)
    stats = torch.zeros((B, 2 * P + 2 * Q), dtype=acc_dt, device=x.device)
    _fwd_kernel[(n_units, chunks)](
        x, offs, poss, qs, part, partq, ent, stats, B, C, P, Q, n_units, x.stride(0), x.stride(1), stats.stride(0),
        EPS=float(eps), EXACT=eps == 0, HAS_POOL=pool > 0, KK=max(pool * pool, 1), KKP=kkp, BLOCK_C=block_c,
        CHUNK=BCHUNK, ACC=acc_tl, num_warps=4 if block_c * kkp <= 2048 else 8)
    return ent.sum((0, 1)), part.sum(0), partq.sum(0), stats


def softmax_stats_bwd(grad_ent, grad_marg, grad_marg_pool, x, stats, pool: int, eps: float):
    B, C, P, Q, block_c, chunks = _common(x, pool)
    acc_tl, _ = _acc(x.dtype)
    offs, poss, qs, kkp = _units(x, pool)
    grad = torch.empty_like(x)
    assert grad.stride() == x.stride()
    _bwd_kernel[(qs.shape[0], chunks)](
        x, offs, poss, qs, grad_ent.contiguous(), grad_marg.contiguous(), grad_marg_pool.contiguous(),
        stats.contiguous(), grad, B, C, P, Q, x.stride(0), x.stride(1), stats.stride(0),
        EPS=float(eps), EXACT=eps == 0, HAS_POOL=pool > 0, KK=max(pool * pool, 1), KKP=kkp, BLOCK_C=block_c,
        CHUNK=BCHUNK, ACC=acc_tl, num_warps=4 if block_c * kkp <= 2048 else 8)
    return grad
