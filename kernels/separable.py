"""Triton kernels of the separable family: log-sum-exp statistics of S, never stored, where

    S_ij = a_i b_j (x_i . y_j)      x: n x d, y: m x d, a = x_scale [n], b = y_scale [m] (fp32)

For the negatives of row i (all columns, or all but one excluded column):

    row_lse[i] = log sum_{j in N_i} exp S_ij,      col_lse[j] = log sum_{i in N^j} exp S_ij,
    pos[i] = S_{i p(i)}     (p(i) = pos_index[i], or i)

Row pass (``_row_lse_kernel``): a program owns BLOCK_M rows of A and streams B in tiles of BLOCK_N
rows; each tile S = A_blk B_blk^T is a tl.dot over BLOCK_K chunks of the features (fp32
accumulation; fp32 inputs use TF32 only when torch.get_float32_matmul_precision() allows it) and is
folded into an online max / rescaled sum per row. row_lse is the pass on (x, y), col_lse the pass
on (y, x) with the exclusion transposed.

Gradient pass (``_grad_kernel``): with g = dL/drow_lse and h = dL/dcol_lse,

    dS_ij = g_i exp(S_ij - row_lse_i) + h_j exp(S_ij - col_lse_j)  on the negatives (0 elsewhere)
            + q_i [j = p(i)]                                        (q = dL/dpos)
    E = a dS b,  dx = E y,  dy = E^T x,  da_i = sum_j dS_ij b_j (x_i . y_j),  db likewise

a program owns BLOCK_M rows of A and BLOCK_D of its features, recomputes S tile by tile and
accumulates dA = E B (and, in the programs of the first feature block, the scale gradient). dx is the pass on (x, y); dy the pass on (y, x), i.e. over column tiles of S
with the two terms' roles swapped. Every output element is written once by one program: no atomics,
deterministic.
"""
import torch
import triton
import triton.language as tl

from .critic_lse import _lse_finish

# Where the positive of a tile row is (POS_KIND): the diagonal, pos_index of the tile's rows (the
# x -> y orientation) or of its columns (the transposed passes over y).
POS_DIAG, POS_ROW_INDEX, POS_COL_INDEX = 0, 1, 2
# Negatives (EXCLUDE, the op's `exclude`): all, all but the diagonal, all but the positive.
EXCL_NONE, EXCL_DIAG, EXCL_POSITIVE = 0, 1, 2


@triton.jit
def _scores(A, B, AS, BS, IDX, rows, cols, row_ok, col_ok, d, stride_a, stride_b,
            POS_KIND: tl.constexpr, EXCLUDE: tl.constexpr, IS_FP32: tl.constexpr, PREC: tl.constexpr, ACC: tl.constexpr, UPCAST: tl.constexpr,
            BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
    # raw = A[rows] B[cols]^T; s = a raw b; s restricted to the negatives (-inf elsewhere); positives.
    raw = tl.zeros((BLOCK_M, BLOCK_N), dtype=ACC)
    for k0 in range(0, d, BLOCK_K):
        ks = k0 + tl.arange(0, BLOCK_K)
        k_ok = ks < d
        a = tl.load(A + rows[:, None] * stride_a + ks[None, :], mask=row_ok[:, None] & k_ok[None, :], other=0.0)
        b = tl.load(B + cols[:, None] * stride_b + ks[None, :], mask=col_ok[:, None] & k_ok[None, :], other=0.0)
        if UPCAST:
            a, b = a.to(tl.float32), b.to(tl.float32)
        if IS_FP32 or UPCAST:
            raw = tl.dot(a, tl.trans(b), raw, input_precision=PREC)
        else:
            raw = tl.dot(a, tl.trans(b), raw)
    sa = tl.load(AS + rows, mask=row_ok, other=0.0).to(ACC)
    sb = tl.load(BS + cols, mask=col_ok, other=0.0).to(ACC)
    inside = row_ok[:, None] & col_ok[None, :]
    if POS_KIND == 0:
        is_pos = rows[:, None] == cols[None, :]
    elif POS_KIND == 1:
        p = tl.load(IDX + rows, mask=row_ok, other=-1)
        is_pos = p[:, None] == cols[None, :]
    else:
        p = tl.load(IDX + cols, mask=col_ok, other=-1)
        is_pos = rows[:, None] == p[None, :]
    is_pos = is_pos & inside
    ok = inside
    if EXCLUDE == 1:
        ok = ok & (rows[:, None] != cols[None, :])
    elif EXCLUDE == 2:
        ok = ok & (is_pos == 0)
    s = raw * sa[:, None] * sb[None, :]
    return raw, s, tl.where(ok, s, float("-inf")), is_pos, sa, sb


@triton.jit
def _row_lse_kernel(A, B, AS, BS, IDX, OUT, POS, n_a, n_b, d, stride_a, stride_b,
                    POS_KIND: tl.constexpr, EXCLUDE: tl.constexpr, WANT_POS: tl.constexpr, IS_FP32: tl.constexpr, PREC: tl.constexpr, ACC: tl.constexpr,
                    UPCAST: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
    rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    row_ok = rows < n_a
    mx = tl.full((BLOCK_M,), float("-inf"), dtype=ACC)
    sm = tl.zeros((BLOCK_M,), dtype=ACC)
    pos = tl.zeros((BLOCK_M,), dtype=ACC)
    for c0 in range(0, n_b, BLOCK_N):
        cols = c0 + tl.arange(0, BLOCK_N)
        _, s_all, s, is_pos, _, _ = _scores(A, B, AS, BS, IDX, rows, cols, row_ok, cols < n_b, d, stride_a, stride_b,
                                            POS_KIND, EXCLUDE, IS_FP32, PREC, ACC, UPCAST, BLOCK_M, BLOCK_N, BLOCK_K)
        if WANT_POS:
            pos += tl.sum(tl.where(is_pos, s_all, 0.0), 1)
        new = tl.maximum(mx, tl.max(s, 1))
        shift = tl.where(new == float("-inf"), 0.0, new)  # exp(-inf - shift) = 0, never NaN
        sm = sm * tl.exp(mx - shift) + tl.sum(tl.exp(s - shift[:, None]), 1)
        mx = new
    tl.store(OUT + rows, _lse_finish(mx, sm), mask=row_ok)
    if WANT_POS:
        tl.store(POS + rows, pos, mask=row_ok)


@triton.jit
def _term(G, L, idx, ok):
    # (coefficient, shift) of g exp(s - lse); a zero gradient or a non-finite lse (no negatives)
    # gives (0, +inf) so the term is exactly 0, never 0 * inf.
    g = tl.load(G + idx, mask=ok, other=0.0)
    lse = tl.load(L + idx, mask=ok, other=0.0)
    live = (g != 0) & (tl.abs(lse) < float("inf"))
    return tl.where(live, g, 0.0), tl.where(live, lse, float("inf"))


@triton.jit
def _grad_kernel(A, B, AS, BS, IDX, G, L, H, C, Q, OUT, OUT_S, n_a, n_b, d, stride_a, stride_b, stride_o,
                 ROW_TERM: tl.constexpr, COL_TERM: tl.constexpr, Q_OF_ROWS: tl.constexpr,
                 POS_KIND: tl.constexpr, EXCLUDE: tl.constexpr, IS_FP32: tl.constexpr, PREC: tl.constexpr, ACC: tl.constexpr,
                 UPCAST: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_D: tl.constexpr):
    rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    row_ok = rows < n_a
    feats = tl.program_id(1) * BLOCK_D + tl.arange(0, BLOCK_D)
    feat_ok = feats < d
    if ROW_TERM:
        ga, gb = _term(G, L, rows, row_ok)
    acc = tl.zeros((BLOCK_M, BLOCK_D), dtype=ACC)
    dscale = tl.zeros((BLOCK_M,), dtype=ACC)
    for c0 in range(0, n_b, BLOCK_N):
        cols = c0 + tl.arange(0, BLOCK_N)
        col_ok = cols < n_b
        raw, _, s, is_pos, sa, sb = _scores(A, B, AS, BS, IDX, rows, cols, row_ok, col_ok, d, stride_a, stride_b,
                                            POS_KIND, EXCLUDE, IS_FP32, PREC, ACC, UPCAST, BLOCK_M, BLOCK_N, BLOCK_K)
        # q of each positive entry: per tile row in the x -> y orientation, per tile column transposed
        if Q_OF_ROWS:
            q = tl.load(Q + rows, mask=row_ok, other=0.0)
            ds = tl.where(is_pos, q[:, None], 0.0).to(ACC)
        else:
            q = tl.load(Q + cols, mask=col_ok, other=0.0)
            ds = tl.where(is_pos, q[None, :], 0.0).to(ACC)
        if ROW_TERM:
            ds += ga[:, None] * tl.exp(s - gb[:, None])
        if COL_TERM:
            ha, hb = _term(H, C, cols, col_ok)
            ds += ha[None, :] * tl.exp(s - hb[None, :])
        dscale += tl.sum(ds * raw * sb[None, :], 1)
        e = ds * sa[:, None] * sb[None, :]
        b = tl.load(B + cols[:, None] * stride_b + feats[None, :], mask=col_ok[:, None] & feat_ok[None, :], other=0.0)
        if UPCAST:
            b = b.to(tl.float32)
        if IS_FP32 or UPCAST:
            acc = tl.dot(e.to(b.dtype), b, acc, input_precision=PREC)
        else:
            acc = tl.dot(e.to(b.dtype), b, acc)
    out = OUT + rows[:, None] * stride_o + feats[None, :]
    tl.store(out, acc.to(OUT.dtype.element_ty), mask=row_ok[:, None] & feat_ok[None, :])
    if tl.program_id(1) == 0:
        tl.store(OUT_S + rows, dscale, mask=row_ok)


# ----------------------------------------------------------------------------------------------
def _check(cond, msg):
    if not cond:
        raise RuntimeError(f"fastmi::separable_lse (triton): {msg}")


def _prepare(x, y, x_scale, y_scale, pos_index, exclude):
    _check(x.dim() == 2 and y.dim() == 2 and x.shape[1] == y.shape[1], "x and y must be n x d and m x d")
    _check(x.dtype == y.dtype, "x and y must have the same dtype")
    _check(x.dtype in (torch.float16, torch.bfloat16, torch.float32, torch.float64),
           f"x and y must be float16, bfloat16, float32 or float64, got {x.dtype}")
    _check(exclude in (EXCL_NONE, EXCL_DIAG, EXCL_POSITIVE), "exclude must be 0, 1 or 2")
    _check(x_scale.shape == (x.shape[0],) and y_scale.shape == (y.shape[0],), "x_scale must be [n], y_scale [m]")
    dt = torch.float64 if x.dtype == torch.float64 else torch.float32
    idx = None
    if pos_index is not None:
        _check(pos_index.shape == (x.shape[0],), "pos_index must have n entries")
        idx = pos_index.to(torch.int64).contiguous()
    else:
        _check(x.shape[0] <= y.shape[0], "diagonal positives need n <= m")
    return x.contiguous(), y.contiguous(), x_scale.to(dt).contiguous(), y_scale.to(dt).contiguous(), idx


def _meta(x):
    """Compile-time arguments shared by both kernels: dtype flags and tile sizes."""
    d = x.shape[1]
    interpreting = x.device.type == "cpu"  # TRITON_INTERPRET=1: small tiles keep the interpreter quick
    acc = tl.float64 if x.dtype == torch.float64 else tl.float32
    # The interpreter has no bfloat16/float16 matmul: there, half tiles are upcast before tl.dot.
    upcast = interpreting and x.dtype in (torch.float16, torch.bfloat16)
    prec = "ieee" if upcast or torch.get_float32_matmul_precision() == "highest" else "tf32"
    block = 32 if interpreting else (32 if x.dtype == torch.float64 else 64)
    block_k = max(16, min(triton.next_power_of_2(d), 32 if interpreting else 64))
    return dict(IS_FP32=x.dtype == torch.float32, PREC=prec, ACC=acc, UPCAST=upcast, BLOCK_M=block, BLOCK_N=block, BLOCK_K=block_k)


def _row_lse(a, b, sa, sb, idx, pos_kind, exclude, want_pos, meta, out_dtype):
    out = torch.empty(a.shape[0], dtype=out_dtype, device=a.device)
    pos = torch.zeros(a.shape[0] if want_pos else 0, dtype=out_dtype, device=a.device)
    if a.shape[0] == 0:
        return out, pos
    grid = (triton.cdiv(a.shape[0], meta["BLOCK_M"]),)
    _row_lse_kernel[grid](a, b, sa, sb, idx, out, pos, a.shape[0], b.shape[0], a.shape[1], a.stride(0), b.stride(0),
                          POS_KIND=pos_kind, EXCLUDE=exclude, WANT_POS=want_pos, **meta, num_warps=4)
    return out, pos


def _pos_kinds(idx):
    """POS_KIND of the x -> y passes and of the transposed (y -> x) passes."""
    return (POS_DIAG, POS_DIAG) if idx is None else (POS_ROW_INDEX, POS_COL_INDEX)


def separable_lse_fwd(x, y, x_scale, y_scale, pos_index, exclude: int, cols: bool):
    """(row_lse [n], col_lse [m] or [0], pos [n]) in fp32 (fp64 for float64 inputs)."""
    x, y, sx, sy, idx = _prepare(x, y, x_scale, y_scale, pos_index, exclude)
    meta = _meta(x)
    dt = sx.dtype
    fwd, tr = _pos_kinds(idx)
    row, pos = _row_lse(x, y, sx, sy, idx, fwd, exclude, True, meta, dt)
    col = (_row_lse(y, x, sy, sx, idx, tr, exclude, False, meta, dt)[0] if cols
           else x.new_empty((0,), dtype=dt))
    return row, col, pos


def _grad(a, b, sa, sb, idx, g, lse_a, h, lse_b, q, q_of_rows, row_term, col_term, pos_kind, exclude, meta):
    out = torch.empty(a.shape, dtype=sa.dtype, device=a.device)  # fp32 for fp16/bf16 inputs: see ops/separable.py
    out_s = torch.empty_like(sa)
    n_a, d = a.shape
    if n_a == 0 or b.shape[0] == 0:
        return out.zero_(), out_s.zero_()
    interpreting = a.device.type == "cpu"
    block_d = max(16, min(triton.next_power_of_2(d), 64 if interpreting else 256))
    grid = (triton.cdiv(n_a, meta["BLOCK_M"]), triton.cdiv(d, block_d))
    _grad_kernel[grid](a, b, sa, sb, idx, g, lse_a, h, lse_b, q, out, out_s, n_a, b.shape[0], d, a.stride(0),
                       b.stride(0), out.stride(0), ROW_TERM=row_term, COL_TERM=col_term, Q_OF_ROWS=q_of_rows,
                       POS_KIND=pos_kind, EXCLUDE=exclude, **meta,
                       BLOCK_D=block_d, num_warps=8 if block_d > 64 else 4)
    return out, out_s


def separable_lse_bwd(grad_row, grad_col, grad_pos, x, y, x_scale, y_scale, pos_index, exclude: int, cols: bool,
                      row_lse, col_lse):
    """(dx, dy, dx_scale, dy_scale) of sum_i grad_row_i row_lse_i + sum_j grad_col_j col_lse_j; all in
    fp32 for fp16/bf16 inputs (fp64 for float64)."""
    x, y, sx, sy, idx = _prepare(x, y, x_scale, y_scale, pos_index, exclude)
    _check(grad_row.shape == (x.shape[0],) and row_lse.shape == (x.shape[0],) and grad_pos.shape == (x.shape[0],),
           "grad_row, grad_pos, row_lse must be [n]")
    if cols:
        _check(grad_col.shape == (y.shape[0],) and col_lse.shape == (y.shape[0],), "grad_col, col_lse must be [m]")
    else:  # placeholders the kernels never read
        grad_col, col_lse = row_lse.new_zeros(y.shape[0]), row_lse.new_zeros(y.shape[0])
    meta = _meta(x)
    g, L = grad_row.to(row_lse.dtype).contiguous(), row_lse.contiguous()
    h, C = grad_col.to(row_lse.dtype).contiguous(), col_lse.to(row_lse.dtype).contiguous()
    q = grad_pos.to(row_lse.dtype).contiguous()
    fwd, tr = _pos_kinds(idx)
    dx, dsx = _grad(x, y, sx, sy, idx, g, L, h, C, q, True, True, bool(cols), fwd, exclude, meta)
    dy, dsy = _grad(y, x, sy, sx, idx, h, C, g, L, q, False, bool(cols), True, tr, exclude, meta)
    return dx, dy, dsx, dsy
