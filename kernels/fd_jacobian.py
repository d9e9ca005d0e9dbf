"""Triton kernels of the fd_jacobian family (Neural Bayes' smoothness regularizer R_c, SPEC 1.2).

Perturbation in the span of the batch, x (B x n):

    Xc_j = x_j - mean_k x_k  (or x_j when center is false),   D_i = sum_j c_ij Xc_j
    x_tilde_i = x_i + zeta_i D_i / ||D_i||      (D_i at rounding level -> sample i unperturbed)

The coefficients c_ij are generated inside the kernel from Triton's Philox (tl.randint4x /
tl.randn4x) with the stream of csrc/fd_jacobian.h, the same stream as the C++ kernel, so no B x B
matrix is ever stored: each program makes the BLOCK_M x BLOCK_K tile of coefficients it needs,
multiplies it with the centred BLOCK_K x BLOCK_N tile of x (tl.dot, IEEE fp32) and accumulates a
BLOCK_M x BLOCK_N tile of D. It writes D's tile and the tile's share of ||D_i||^2; a second,
elementwise kernel scales and adds. The column mean and the row norms ||Xc_j|| (for the zero test)
are small torch reductions on the host side.

Penalty: s_b = sum_c ((1/hw) sum_p (a - b)[b, c, p])^2 over inputs viewed as [B, C, hw], one
program per sample (forward) and per (sample, channel block) (backward). fp16/bf16 compute in fp32,
float64 in fp64.
"""
import torch
import triton
import triton.language as tl

BERNOULLI, GAUSSIAN = 0, 1


@triton.jit
def _coefficients(seed, rows, cols, B, NOISE: tl.constexpr):
    """c[i, j] for the rows x cols tile (float32), from the counter-based stream."""
    if NOISE == 0:
        q128 = (B + 127) // 128
        offs = rows[:, None].to(tl.int64) * q128 + (cols[None, :] // 128)
        w0, w1, w2, w3 = tl.randint4x(seed, offs)
        sel = (cols[None, :] % 128) // 32
        word = tl.where(sel == 0, w0, tl.where(sel == 1, w1, tl.where(sel == 2, w2, w3)))
        bit = (word >> (cols[None, :] % 32).to(tl.uint32)) & 1
        return bit.to(tl.float32)
    else:
        q4 = (B + 3) // 4
        offs = rows[:, None].to(tl.int64) * q4 + (cols[None, :] // 4)
        n0, n1, n2, n3 = tl.randn4x(seed, offs)
        sel = cols[None, :] % 4
        return tl.where(sel == 0, n0, tl.where(sel == 1, n1, tl.where(sel == 2, n2, n3)))


@triton.jit
def _combine_kernel(x_ptr, ybar_ptr, nrm_ptr, seed_ptr, d_ptr, sq_ptr, scale_ptr, B, n,
                    NOISE: tl.constexpr, CENTER: tl.constexpr,
                    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
    pid_m = tl.program_id(0)
    pid_n = tl.program_id(1)
    acc_t = d_ptr.dtype.element_ty
    seed = tl.load(seed_ptr)
    rows = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    cols = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    rmask = rows < B
    cmask = cols < n
    if CENTER:
        # Xc_j = (x_j - x_0) - ybar, ybar = mean_j (x_j - x_0): identical samples centre to exact zeros.
        x0 = tl.load(x_ptr + cols, mask=cmask, other=0.0).to(acc_t)
        ybar = tl.load(ybar_ptr + cols, mask=cmask, other=0.0)
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=acc_t)
    scale = tl.zeros((BLOCK_M,), dtype=tl.float64)
    for k0 in range(0, B, BLOCK_K):
        ks = k0 + tl.arange(0, BLOCK_K)
        kmask = ks < B
        c = _coefficients(seed, rows, ks, B, NOISE)
        c = tl.where(rmask[:, None] & kmask[None, :], c, 0.0).to(acc_t)
        xt = tl.load(x_ptr + ks[:, None].to(tl.int64) * n + cols[None, :],
                     mask=kmask[:, None] & cmask[None, :], other=0.0).to(acc_t)
        if CENTER:
            xt = tl.where(kmask[:, None] & cmask[None, :], (xt - x0[None, :]) - ybar[None, :], 0.0)
        acc += tl.dot(c, xt, input_precision="ieee")
        if pid_n == 0:
            nrm = tl.load(nrm_ptr + ks, mask=kmask, other=0.0)
            scale += tl.sum(tl.abs(c).to(tl.float64) * nrm[None, :], axis=1)
    mask = rmask[:, None] & cmask[None, :]
    tl.store(d_ptr + rows[:, None].to(tl.int64) * n + cols[None, :], acc, mask=mask)
    acc64 = acc.to(tl.float64)  # squared norms in fp64: no overflow for any finite fp32 D
    tl.store(sq_ptr + pid_n * B + rows, tl.sum(acc64 * acc64, axis=1), mask=rmask)
    if pid_n == 0:
        tl.store(scale_ptr + rows, scale, mask=rmask)


@triton.jit
def _finish_kernel(x_ptr, d_ptr, factor_ptr, out_ptr, n, BLOCK: tl.constexpr):
    # out_i = x_i + factor_i * D_i, factor_i = zeta_i / ||D_i|| (0 for a zero direction)
    row = tl.program_id(0)
    cols = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    mask = cols < n
    base = row.to(tl.int64) * n
    f = tl.load(factor_ptr + row)
    x = tl.load(x_ptr + base + cols, mask=mask, other=0.0).to(f.dtype)
    d = tl.load(d_ptr + base + cols, mask=mask, other=0.0)
    tl.store(out_ptr + base + cols, (x + f * d).to(out_ptr.dtype.element_ty), mask=mask)


def _acc_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def fd_perturb(x: torch.Tensor, seed: torch.Tensor, zeta: torch.Tensor, noise: int, center: bool) -> torch.Tensor:
    """x_tilde for x [B, n] (any floating dtype); seed: int64 [1] on x's device; zeta: [1] or [B]."""
    x = x.contiguous()
    B, n = x.shape
    acc = _acc_dtype(x.dtype)
    out = torch.empty_like(x)
    if n == 0:
        return out
    if center:
        y = x.to(acc) - x[:1].to(acc)
        ybar = y.to(torch.float64).mean(0).to(acc)
        nrm = torch.linalg.vector_norm(y - ybar, dim=1, dtype=torch.float64)
        del y
    else:
        ybar = torch.zeros(n, dtype=acc, device=x.device)
        nrm = torch.linalg.vector_norm(x, dim=1, dtype=torch.float64)
    BLOCK_M, BLOCK_N, BLOCK_K = 32, 64, 32
    grid = (triton.cdiv(B, BLOCK_M), triton.cdiv(n, BLOCK_N))
    d = torch.empty((B, n), dtype=acc, device=x.device)
    sq = torch.empty((grid[1], B), dtype=torch.float64, device=x.device)
    scale = torch.empty(B, dtype=torch.float64, device=x.device)
    _combine_kernel[grid](x, ybar, nrm, seed.to(torch.int64).reshape(1), d, sq, scale, B, n,
                          NOISE=int(noise), CENTER=bool(center),
                          BLOCK_M=BLOCK_M, BLOCK_N=BLOCK_N, BLOCK_K=BLOCK_K)
    norm = sq.sum(0).sqrt()
    tol = 8.0 * B ** 0.5 * torch.finfo(acc).eps
    # zero (rounding-level) or overflowed direction: factor 0, the sample is left unperturbed
    keep = (norm > tol * scale) & (norm > 0) & torch.isfinite(norm)
    z = zeta.to(torch.float64).reshape(-1).expand(B)
    factor = torch.where(keep, z / torch.where(keep, norm, 1.0), 0.0).to(acc).contiguous()
    d = torch.where(keep[:, None], d, 0.0)  # no 0 * inf
    BLOCK = 1024
    _finish_kernel[(B, triton.cdiv(n, BLOCK))](x, d, factor, out, n, BLOCK=BLOCK)
    return out


# ----------------------------------------------------------------------------------------------
# penalty: per-sample squared (pooled) difference
def _tiles(C: int, hw: int):
    bhw = triton.next_power_of_2(hw)
    bc = max(1, min(triton.next_power_of_2(C), 2048 // bhw))
    return bc, bhw


@triton.jit
def _sqdiff_kernel(a_ptr, b_ptr, s_ptr, C, hw, inv_hw, BLOCK_C: tl.constexpr, BLOCK_HW: tl.constexpr):
    row = tl.program_id(0)
    acc_t = s_ptr.dtype.element_ty
    base = row.to(tl.int64) * C * hw
    ps = tl.arange(0, BLOCK_HW)
    total = tl.zeros((BLOCK_C,), dtype=acc_t)
    for c0 in range(0, C, BLOCK_C):
        cs = c0 + tl.arange(0, BLOCK_C)
        mask = (cs[:, None] < C) & (ps[None, :] < hw)
        off = base + cs[:, None] * hw + ps[None, :]
        a = tl.load(a_ptr + off, mask=mask, other=0.0).to(acc_t)
        b = tl.load(b_ptr + off, mask=mask, other=0.0).to(acc_t)
        m = tl.sum(a - b, axis=1) * inv_hw
        total += m * m
    tl.store(s_ptr + row, tl.sum(total, axis=0))


@triton.jit
def _sqdiff_bwd_kernel(g_ptr, a_ptr, b_ptr, ga_ptr, gb_ptr, C, hw, inv_hw,
                       BLOCK_C: tl.constexpr, BLOCK_HW: tl.constexpr):
    row = tl.program_id(0)
    cs = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    ps = tl.arange(0, BLOCK_HW)
    g = tl.load(g_ptr + row)
    acc_t = g.dtype
    mask = (cs[:, None] < C) & (ps[None, :] < hw)
    off = row.to(tl.int64) * C * hw + cs[:, None] * hw + ps[None, :]
    a = tl.load(a_ptr + off, mask=mask, other=0.0).to(acc_t)
    b = tl.load(b_ptr + off, mask=mask, other=0.0).to(acc_t)
    m = tl.sum(a - b, axis=1) * inv_hw
    v = (2.0 * g * m * inv_hw)[:, None] + tl.zeros((BLOCK_C, BLOCK_HW), dtype=acc_t)
    tl.store(ga_ptr + off, v.to(ga_ptr.dtype.element_ty), mask=mask)
    tl.store(gb_ptr + off, (-v).to(gb_ptr.dtype.element_ty), mask=mask)


def fd_sqdiff(a: torch.Tensor, b: torch.Tensor, hw: int) -> torch.Tensor:
    """s [B] (fp32, fp64 for float64 inputs) of a, b viewed as [B, C, hw]."""
    a, b = a.contiguous(), b.contiguous()
    B = a.shape[0]
    C = a.numel() // max(B, 1) // hw
    s = torch.empty(B, dtype=_acc_dtype(a.dtype), device=a.device)
    if B == 0:
        return s
    if C == 0:
        return s.zero_()
    bc, bhw = _tiles(C, hw)
    _sqdiff_kernel[(B,)](a, b, s, C, hw, 1.0 / hw, BLOCK_C=bc, BLOCK_HW=bhw)
    return s


def fd_sqdiff_backward(grad: torch.Tensor, a: torch.Tensor, b: torch.Tensor, hw: int):
    a, b = a.contiguous(), b.contiguous()
    B = a.shape[0]
    C = a.numel() // max(B, 1) // hw
    ga, gb = torch.empty_like(a), torch.empty_like(a)
    if B == 0 or C == 0:
        return ga.zero_(), gb.zero_()
    bc, bhw = _tiles(C, hw)
    g = grad.to(_acc_dtype(a.dtype)).contiguous()
    _sqdiff_bwd_kernel[(B, triton.cdiv(C, bc))](g, a, b, ga, gb, C, hw, 1.0 / hw, BLOCK_C=bc, BLOCK_HW=bhw)
    return ga, gb
