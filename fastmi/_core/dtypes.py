"""The dtype rules of every fused kernel: half types (fp16, bf16) accumulate and return in fp32,
float64 stays float64 end to end, float32 stays float32."""
from __future__ import annotations

import torch


def acc_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype a kernel accumulates in (and returns statistics in) for inputs of ``dtype``."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def upcast(x: torch.Tensor) -> torch.Tensor:
    """``x`` in its accumulation dtype (a copy only for fp16/bf16)."""
    return x if x.dtype in (torch.float32, torch.float64) else x.float()
