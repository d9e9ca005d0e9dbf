"""fastmi: fused kernels for mutual-information losses in PyTorch.

    import fastmi.functional as F
    loss, mi = F.infonce(scores)          # scores[i, j] = T(x_i, y_j), positives on the diagonal
"""
from . import _backend  # noqa: F401  (loads the extension and probes the backends once)
from . import ops  # noqa: F401
from .ops import critic_lse as _critic_lse_ops  # noqa: F401  (registers the custom ops)
from .ops import separable as _separable_ops  # noqa: F401
from .ops import fd_jacobian as _fd_jacobian_ops  # noqa: F401
from .ops import mmd_imq as _mmd_imq_ops  # noqa: F401
from .ops import softmax_stats as _softmax_stats_ops  # noqa: F401
from ._result import MIResult, NBMIMResult
from . import functional, nn, reference  # noqa: E402

__version__ = "0.1.0"
__all__ = ["MIResult", "NBMIMResult", "functional", "nn", "reference", "info", "__version__"]


def info() -> dict:
    """{backend: (available, why)}, as ``fastmi info`` prints it."""
    return _backend.availability()
