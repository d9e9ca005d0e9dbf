"""Theoretical occupancy of a kernel on an A100 (sm_80) and an H100 / H200 (sm_90) from its
registers per thread, threads per block and shared memory per block.

The per-SM limits are those of the CUDA C++ Programming Guide's "Technical Specifications per
Compute Capability" table and of NVIDIA's Ampere and Hopper tuning guides (section "Occupancy" /
"Shared Memory"): 64 K 32-bit registers, at most 255 per thread, 2048 resident threads (64 warps)
and 32 resident blocks per SM for both; shared memory per SM 164 KB (A100) / 228 KB (H100), of which
one block may use 163 KB / 227 KB. The allocation rules follow the toolkit's occupancy calculator
(include/cuda_occupancy.h, ``cudaOccMaxActiveBlocksPerMultiprocessor``): registers are allocated per
warp in units of 256 and per SM sub-partition (4 per SM); shared memory in units of 128 bytes, plus
1 KB per block that the driver reserves on sm_80 and later; the SM is assumed configured for its
largest shared-memory carve-out (what Triton's launcher asks for when a kernel needs it). SM
counts: A100 SXM 108, H100 SXM and H200 132 (the tuning guides; 132 read on this workplace's H200).
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class SMLimits:
    arch: str
    device: str
    sms: int
    regs_per_sm: int = 65536
    regs_per_block: int = 65536
    max_regs_per_thread: int = 255
    reg_alloc_unit: int = 256  # registers, per warp
    sub_partitions: int = 4
    max_threads_per_sm: int = 2048
    max_threads_per_block: int = 1024
    max_blocks_per_sm: int = 32
    warp_size: int = 32
    smem_per_sm: int = 0  # bytes, largest carve-out
    smem_per_block: int = 0  # bytes, opt-in maximum
    smem_alloc_unit: int = 128
    smem_reserved_per_block: int = 1024


KB = 1024
TARGETS = {
    "sm_80": SMLimits("sm_80", "A100", sms=108, smem_per_sm=164 * KB, smem_per_block=163 * KB),
    "sm_90": SMLimits("sm_90", "H100/H200", sms=132, smem_per_sm=228 * KB, smem_per_block=227 * KB),
}


def _round_up(x: int, unit: int) -> int:
    return -(-x // unit) * unit


def occupancy(lim: SMLimits, registers: int, threads: int, smem_bytes: int) -> dict:
    """Resident blocks and warps per SM, the occupancy (resident warps / 64) and what limits it.

    ``fits`` is False when one block cannot be resident at all (too many registers or threads,
    or more shared memory than a block may have)."""
    warps = -(-threads // lim.warp_size)
    by_threads = lim.max_threads_per_sm // lim.warp_size // warps if threads <= lim.max_threads_per_block else 0
    regs_per_warp = _round_up(max(registers, 1) * lim.warp_size, lim.reg_alloc_unit)
    regs_hw_check = regs_per_warp * _round_up(warps, lim.sub_partitions)
    if registers > lim.max_regs_per_thread or regs_hw_check > lim.regs_per_block:
        by_regs = 0
    else:
        warps_per_sub = (lim.regs_per_sm // lim.sub_partitions) // regs_per_warp
        by_regs = warps_per_sub * lim.sub_partitions // warps
    smem_alloc = _round_up(smem_bytes + lim.smem_reserved_per_block, lim.smem_alloc_unit)
    if smem_bytes > lim.smem_per_block:
        by_smem = 0
    else:
        by_smem = lim.smem_per_sm // smem_alloc
    limits = {"blocks": lim.max_blocks_per_sm, "warps": by_threads, "registers": by_regs, "shared memory": by_smem}
    blocks = min(limits.values())
    limiter = min(limits, key=lambda k: (limits[k], list(limits).index(k)))
    return {"blocks_per_sm": blocks, "warps_per_sm": blocks * warps,
            "occupancy": blocks * warps / (lim.max_threads_per_sm // lim.warp_size),
            "limited_by": limiter, "fits": blocks > 0, "smem_allocated_bytes": smem_alloc}
