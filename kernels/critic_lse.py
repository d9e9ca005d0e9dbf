"""Triton kernels of the critic_lse family: fused row statistics of a score matrix S (n x m).

For row i, with positives P_i and negatives N_i, and tau = clip (may be +inf):

    0 LSE  = log sum_{j in N_i} exp(S_ij)                 (torch.logsumexp conventions)
    1 CLSE = log sum_{j in N_i} exp(clamp(S_ij, -tau, tau))
    2 SP   = sum_{j in N_i} softplus(S_ij)
    3 POS  = sum_{j in P_i} S_ij
    4 PSP  = sum_{j in P_i} softplus(-S_ij)
    5 CPOS = sum_{j in P_i} clamp(S_ij, -tau, tau)

P_i = {pos_index[i]} (index), {j : pos_mask[i, j]} (mask), or {i} (diagonal, n == m).
N_i = all j (neg_mode 0), j not in P_i (1), j != i (2). Statistic k is computed only when bit k of
`need` is set (it is written as 0 otherwise). The backward of sum_k G_k * stat_k is

    dS_ij = [j in N_i] (G0 exp(S_ij - LSE_i) + G1 exp(S_ij - CLSE_i) [|S_ij| <= tau] + G2 sigmoid(S_ij))
          + [j in P_i] (G3 - G4 sigmoid(-S_ij) + G5 [|S_ij| <= tau])

where, as in the C++ kernel (csrc/cpu/critic_lse.cpp), a term of N_i is skipped for rows whose G_k
is 0 or whose LSE_i / CLSE_i is +-inf (exp(S_ij - lse) = 0 at every finite entry; G may be inf or NaN). Half inputs accumulate in fp32; float64 inputs compute in fp64. pos_index is not range-checked
on the host (that would synchronize): an out-of-range index gives NaN positive statistics.

Forward: one pass over S. A program owns BLOCK_M rows and streams their columns in tiles of BLOCK_N,
keeping an online max / rescaled sum-exp per row (the clipped LSE reuses the running max, since
clamp is monotone). Diagonal / index positives are one gathered load per row; mask positives are
summed in the same pass. Backward: one read of S and one write of dS per element, on a 2-D grid of
tiles, recomputing everything from the saved O(n) statistics.
"""
import struct

import torch
import triton
import triton.language as tl

from ..critic_lse.contract import (CLSE, CPOS, LSE, NEGATIVE_STATS, NUM_STATS, POS, POSITIVE_KINDS, POSITIVE_STATS,
                                   PSP, SP, bits)

_LSE, _CLSE, _SP, _POS, _PSP, _CPOS = (tl.constexpr(1 << k) for k in (LSE, CLSE, SP, POS, PSP, CPOS))  # need bits
_NEG_BITS = tl.constexpr(bits(*NEGATIVE_STATS))  # statistics over N_i
_POS_BITS = tl.constexpr(bits(*POSITIVE_STATS))  # statistics over P_i
POS_DIAG, POS_INDEX, POS_MASK = (POSITIVE_KINDS.index(k) for k in ("diag", "index", "mask"))

_MAX_TILE = 4096  # elements of S per program and loop step (half that for float64)
_MAX_ROWS = 64  # rows per program when m is small


# ----------------------------------------------------------------------------------------------
# elementwise helpers
@triton.jit
def _clip(x, tau):
    # min(max(x, -tau), tau) with NaN propagated, as the C++ kernel does.
    x = tl.maximum(x, -tau, propagate_nan=tl.PropagateNan.ALL)
    return tl.minimum(x, tau, propagate_nan=tl.PropagateNan.ALL)


@triton.jit
def _softplus(x):
    # max(x, 0) + log1p(exp(-|x|)); log1p(u) for u in [0, 1] as log(1 + u) * u / ((1 + u) - 1),
    # which is accurate to a few ulp (tl has no log1p the interpreter can run).
    u = tl.exp(-tl.abs(x))
    w = 1.0 + u
    log1p = tl.where(w == 1.0, u, tl.log(w) * (u / tl.where(w == 1.0, 1.0, w - 1.0)))
    return tl.maximum(x, 0.0) + log1p


@triton.jit
def _sigmoid_pair(x):
    # (sigmoid(x), sigmoid(-x)) from one exp, without overflow.
    e = tl.exp(-tl.abs(x))
    r = 1.0 / (1.0 + e)
    return tl.where(x >= 0, r, e * r), tl.where(x >= 0, e * r, r)


@triton.jit
def _finite_or_zero(v):
    return tl.where(tl.abs(v) < float("inf"), v, 0.0)


@triton.jit
def _lse_finish(mx, s):
    # -inf for an empty / all -inf set (s == 0), +inf when +inf is present, NaN when s is NaN.
    lse = tl.where(s == 0, float("-inf"), _finite_or_zero(mx) + tl.log(tl.where(s == 0, 1.0, s)))
    return tl.where((tl.abs(mx) == float("inf")) & (s == s), mx, lse)


@triton.jit
def _tau(tau_hi, tau_mid, tau_lo, ACC: tl.constexpr):
    # clip arrives as three fp32 parts (kernel float arguments are fp32) so fp64 gets it exactly.
    if ACC == tl.float64:
        return (tl.cast(tau_hi, tl.float64) + tl.cast(tau_mid, tl.float64)) + tl.cast(tau_lo, tl.float64)
    else:
        return tl.cast(tau_hi, ACC)


@triton.jit
def _positive_column(rows, row_ok, POS_INDEX, POS_KIND: tl.constexpr):
    # The one positive column of each row (diagonal / index kinds); unused for masks.
    if POS_KIND == 1:
        return tl.load(POS_INDEX + rows, mask=row_ok, other=0).to(tl.int64)
    else:
        return rows


@triton.jit
def _row_stat(T, k, stride_k, rows, row_ok, ACC: tl.constexpr):
    return tl.load(T + k * stride_k + rows, mask=row_ok, other=0.0).to(ACC)


# ----------------------------------------------------------------------------------------------
# forward
@triton.jit
def _critic_lse_fwd_kernel(
    S, stride_sm, stride_sn,
    POS_INDEX, PMASK, stride_pm, stride_pn,
    STATS,  # [6, n], contiguous
    n, m, tau_hi, tau_mid, tau_lo,
    POS_KIND: tl.constexpr, NEG_MODE: tl.constexpr, NEED: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, ACC: tl.constexpr,
):
    tau = _tau(tau_hi, tau_mid, tau_lo, ACC)
    rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    row_ok = rows < n
    rows = rows.to(tl.int64)
    s_rows = S + rows[:, None] * stride_sm
    pcol = _positive_column(rows, row_ok, POS_INDEX, POS_KIND)
    if NEG_MODE == 2:
        ecol = rows  # the one column each row excludes from N_i
    else:
        ecol = pcol

    zero = tl.zeros([BLOCK_M], ACC)
    m_i = tl.full([BLOCK_M], float("-inf"), ACC)  # running max of S over N_i
    s_lse, s_clse, s_sp, p_pos, p_psp, p_cpos = zero, zero, zero, zero, zero, zero
    if (_NEG_BITS & NEED) or (POS_KIND == 2 and (_POS_BITS & NEED)):
        for start in range(0, m, BLOCK_N):
            cols = start + tl.arange(0, BLOCK_N)
            ok = row_ok[:, None] & (cols[None, :] < m)
            x = tl.load(s_rows + cols[None, :].to(tl.int64) * stride_sn, mask=ok, other=0.0).to(ACC)
            keep = ok
            if NEG_MODE == 2 or (NEG_MODE == 1 and POS_KIND != 2):
                keep = keep & (cols[None, :] != ecol[:, None])
            if POS_KIND == 2 and (NEG_MODE == 1 or (_POS_BITS & NEED)):
                pm = PMASK + rows[:, None] * stride_pm + cols[None, :].to(tl.int64) * stride_pn
                is_pos = tl.load(pm, mask=ok, other=0) != 0
                if NEG_MODE == 1:
                    keep = keep & (is_pos == 0)
                if _POS & NEED:
                    p_pos += tl.sum(tl.where(is_pos, x, 0.0), 1)
                if _PSP & NEED:
                    p_psp += tl.sum(tl.where(is_pos, _softplus(-x), 0.0), 1)
                if _CPOS & NEED:
                    p_cpos += tl.sum(tl.where(is_pos, _clip(x, tau), 0.0), 1)
            if (_LSE | _CLSE) & NEED:
                xn = tl.where(keep, x, float("-inf"))
                m_new = tl.maximum(m_i, tl.max(xn, 1))
                if _LSE & NEED:
                    sh = _finite_or_zero(m_new)
                    # alpha = exp(m_i - sh) is 0 (not NaN) while m_i = -inf, when s_lse is 0 too
                    s_lse = s_lse * tl.exp(m_i - sh) + tl.sum(tl.exp(xn - sh[:, None]), 1)
                if _CLSE & NEED:
                    csh = _finite_or_zero(_clip(m_new, tau))
                    cx = tl.where(keep, _clip(x, tau), float("-inf"))
                    s_clse = s_clse * tl.exp(_clip(m_i, tau) - csh) + tl.sum(tl.exp(cx - csh[:, None]), 1)
                m_i = m_new
            if _SP & NEED:
                s_sp += tl.sum(tl.where(keep, _softplus(x), 0.0), 1)

    if POS_KIND != 2 and (_POS_BITS & NEED):
        pok = row_ok & (pcol >= 0) & (pcol < m)  # an out-of-range index gives NaN statistics
        xp = tl.load(S + rows * stride_sm + pcol * stride_sn, mask=pok, other=float("nan")).to(ACC)
        if _POS & NEED:
            p_pos = xp
        if _PSP & NEED:
            p_psp = _softplus(-xp)
        if _CPOS & NEED:
            p_cpos = _clip(xp, tau)

    # statistics not in NEED are still 0 here
    lse, clse = zero, zero
    if _LSE & NEED:
        lse = _lse_finish(m_i, s_lse)
    if _CLSE & NEED:
        clse = _lse_finish(_clip(m_i, tau), s_clse)
    ty = STATS.dtype.element_ty
    out = STATS + rows
    tl.store(out, lse.to(ty), mask=row_ok)
    tl.store(out + n, clse.to(ty), mask=row_ok)
    tl.store(out + 2 * n, s_sp.to(ty), mask=row_ok)
    tl.store(out + 3 * n, p_pos.to(ty), mask=row_ok)
    tl.store(out + 4 * n, p_psp.to(ty), mask=row_ok)
    tl.store(out + 5 * n, p_cpos.to(ty), mask=row_ok)


# ----------------------------------------------------------------------------------------------
# backward
@triton.jit
def _critic_lse_bwd_kernel(
    DS,  # [n, m], contiguous
    S, stride_sm, stride_sn,
    POS_INDEX, PMASK, stride_pm, stride_pn,
    G, stride_gk, stride_gn, T, stride_tk, stride_tn,  # grad_stats and stats, [6, n]
    n, m, tau_hi, tau_mid, tau_lo,
    POS_KIND: tl.constexpr, NEG_MODE: tl.constexpr, NEED: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, ACC: tl.constexpr,
):
    tau = _tau(tau_hi, tau_mid, tau_lo, ACC)
    rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    cols = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    row_ok = rows < n
    rows = rows.to(tl.int64)
    ok = row_ok[:, None] & (cols[None, :] < m)
    x = tl.load(S + rows[:, None] * stride_sm + cols[None, :].to(tl.int64) * stride_sn, mask=ok, other=0.0).to(ACC)
    g_rows = rows * stride_gn
    t_rows = rows * stride_tn
    pcol = _positive_column(rows, row_ok, POS_INDEX, POS_KIND)
    is_pos = ok
    if POS_KIND == 2 and (NEG_MODE == 1 or (_POS_BITS & NEED)):
        pm = PMASK + rows[:, None] * stride_pm + cols[None, :].to(tl.int64) * stride_pn
        is_pos = tl.load(pm, mask=ok, other=0) != 0
    inside = (x >= -tau) & (x <= tau)
    sig_x, sig_negx = _sigmoid_pair(x)

    ds = tl.zeros([BLOCK_M, BLOCK_N], ACC)
    if _NEG_BITS & NEED:
        keep = ok
        if NEG_MODE == 2:
            keep = keep & (cols[None, :] != rows[:, None])
        if NEG_MODE == 1:
            if POS_KIND == 2:
                keep = keep & (is_pos == 0)
            else:
                keep = keep & (cols[None, :] != pcol[:, None])
        # a row whose (clipped) lse is +-inf gives exp(x - lse) = 0 at every finite x: the term adds
        # nothing there, whatever g is (inf or NaN when the row overflowed), never inf * 0
        if _LSE & NEED:
            g = _row_stat(G, 0, stride_gk, g_rows, row_ok, ACC)[:, None]
            lse = _row_stat(T, 0, stride_tk, t_rows, row_ok, ACC)[:, None]
            ds += tl.where((g != 0) & (tl.abs(lse) != float("inf")), g * tl.exp(x - lse), 0.0)
        if _CLSE & NEED:
            g = _row_stat(G, 1, stride_gk, g_rows, row_ok, ACC)[:, None]
            clse = _row_stat(T, 1, stride_tk, t_rows, row_ok, ACC)[:, None]
            live = inside & (g != 0) & (tl.abs(clse) != float("inf"))  # inside: clamp(x) == x
            ds += tl.where(live, g * tl.exp(x - clse), 0.0)
        if _SP & NEED:
            g = _row_stat(G, 2, stride_gk, g_rows, row_ok, ACC)[:, None]
            ds += tl.where(g != 0, g * sig_x, 0.0)
        ds = tl.where(keep, ds, 0.0)

    if _POS_BITS & NEED:
        if POS_KIND == 2:
            xp, inside_p = x, inside  # elementwise over the tile
            sig_p = sig_negx
        else:
            # one gathered element per row, scattered back below by column comparison
            pok = row_ok & (pcol >= 0) & (pcol < m)
            xp = tl.load(S + rows * stride_sm + pcol * stride_sn, mask=pok, other=0.0).to(ACC)[:, None]
            inside_p = (xp >= -tau) & (xp <= tau)
            sig_p = _sigmoid_pair(xp)[1]
        dp = tl.zeros(xp.shape, ACC)
        if _POS & NEED:
            dp += _row_stat(G, 3, stride_gk, g_rows, row_ok, ACC)[:, None]
        if _PSP & NEED:
            dp -= _row_stat(G, 4, stride_gk, g_rows, row_ok, ACC)[:, None] * sig_p
        if _CPOS & NEED:
            dp += tl.where(inside_p, _row_stat(G, 5, stride_gk, g_rows, row_ok, ACC)[:, None], 0.0)
        if POS_KIND != 2:
            is_pos = cols[None, :] == pcol[:, None]
        ds += tl.where(is_pos & ok, dp, 0.0)

    tl.store(DS + rows[:, None] * m + cols[None, :], ds.to(DS.dtype.element_ty), mask=ok)


# ----------------------------------------------------------------------------------------------
# launch wrappers
def _check(cond, msg):
    if not cond:
        raise RuntimeError(f"fastmi::critic_lse (triton): {msg}")


def _prepare(scores, pos_index, pos_mask, neg_mode):
    _check(scores.dim() == 2, f"scores must be 2-D, got {scores.dim()}-D")
    _check(scores.dtype in (torch.float16, torch.bfloat16, torch.float32, torch.float64),
           f"scores must be float16, bfloat16, float32 or float64, got {scores.dtype}")
    _check(neg_mode in (0, 1, 2), "neg_mode must be 0, 1 or 2")
    _check(pos_index is None or pos_mask is None, "give pos_index or pos_mask, not both")
    n, m = scores.shape
    if pos_index is not None:
        _check(pos_index.dim() == 1 and pos_index.shape[0] == n and pos_index.dtype == torch.int64,
               "pos_index must be an int64 vector of length n")
        return POS_INDEX, pos_index.contiguous(), scores, (0, 0)
    if pos_mask is not None:
        _check(pos_mask.shape == scores.shape and pos_mask.dtype == torch.bool,
               "pos_mask must be a bool tensor shaped like scores")
        mask = pos_mask.view(torch.uint8)
        return POS_MASK, scores, mask, mask.stride()
    _check(n == m, "diagonal positives need a square score matrix")
    return POS_DIAG, scores, scores, (0, 0)  # unused pointers


def _acc(dtype):
    return tl.float64 if dtype == torch.float64 else tl.float32


def _blocks(n, m, dtype):
    # Power-of-two tiles of at most _MAX_TILE elements: BLOCK_N covers a row (capped), several
    # rows per program when rows are short. Few distinct values, so few recompilations.
    tile = _MAX_TILE // 2 if dtype == torch.float64 else _MAX_TILE
    block_n = min(max(triton.next_power_of_2(m), 16), tile)
    block_m = max(1, min(tile // block_n, triton.next_power_of_2(max(n, 1)), _MAX_ROWS))
    num_warps = min(8, max(1, block_m * block_n // 512))
    return block_m, block_n, num_warps


def _tau_parts(clip):
    # clip = hi + mid + lo exactly, each part an fp32 (hi is clip rounded to fp32).
    def f32(v):
        try:
            return struct.unpack("f", struct.pack("f", v))[0]
        except OverflowError:  # |clip| beyond fp32: treated as infinite
            return float("inf") if v > 0 else float("-inf")

    clip = float(clip)
    hi = f32(clip)
    if hi != hi or abs(hi) == float("inf"):
        return hi, 0.0, 0.0
    mid = f32(clip - hi)
    return hi, mid, f32(clip - hi - mid)


def critic_lse_fwd(scores, pos_index, pos_mask, neg_mode: int, clip: float, need: int) -> torch.Tensor:
    """stats [6, n] (fp32; fp64 for float64 scores) of ``scores`` (any strides, no copy)."""
    kind, idx, mask, mask_strides = _prepare(scores, pos_index, pos_mask, neg_mode)
    n, m = scores.shape
    stats_dtype = torch.float64 if scores.dtype == torch.float64 else torch.float32
    stats = torch.empty((NUM_STATS, n), dtype=stats_dtype, device=scores.device)
    if n == 0:
        return stats
    block_m, block_n, num_warps = _blocks(n, m, scores.dtype)
    _critic_lse_fwd_kernel[(triton.cdiv(n, block_m),)](
        scores, scores.stride(0), scores.stride(1), idx, mask, *mask_strides, stats,
        n, m, *_tau_parts(clip),
        POS_KIND=kind, NEG_MODE=int(neg_mode), NEED=int(need) & 63,
        BLOCK_M=block_m, BLOCK_N=block_n, ACC=_acc(scores.dtype), num_warps=num_warps,
    )
    return stats


def critic_lse_bwd(grad_stats, scores, pos_index, pos_mask, neg_mode: int, clip: float, need: int,
                   stats) -> torch.Tensor:
    """grad_scores (contiguous, dtype of scores) of sum_k grad_stats[k] . stats[k]."""
    kind, idx, mask, mask_strides = _prepare(scores, pos_index, pos_mask, neg_mode)
    n, m = scores.shape
    _check(grad_stats.shape == (NUM_STATS, n) and stats.shape == (NUM_STATS, n),
           f"grad_stats and stats must be [{NUM_STATS}, n]")
    grad = torch.empty((n, m), dtype=scores.dtype, device=scores.device)
    if n == 0 or m == 0:
        return grad
    block_m, block_n, num_warps = _blocks(n, m, scores.dtype)
    grid = (triton.cdiv(n, block_m), triton.cdiv(m, block_n))
    _critic_lse_bwd_kernel[grid](
        grad, scores, scores.stride(0), scores.stride(1), idx, mask, *mask_strides,
        grad_stats, grad_stats.stride(0), grad_stats.stride(1), stats, stats.stride(0), stats.stride(1),
        n, m, *_tau_parts(clip),
        POS_KIND=kind, NEG_MODE=int(neg_mode), NEED=int(need) & 63,
        BLOCK_M=block_m, BLOCK_N=block_n, ACC=_acc(scores.dtype), num_warps=num_warps,
    )
    return grad
