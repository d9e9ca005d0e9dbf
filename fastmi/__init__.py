"""fastmi: fused kernels for mutual-information losses in PyTorch.

    import fastmi.functional as F
    loss, mi = F.infonce(scores)          # scores[i, j] = T(x_i, y_j), positives on the diagonal
"""
from ._core import registry as _registry  # noqa: F401  (loads the extension and probes the backends once)
from ._core.result import MIResult, NBMIMResult
from . import functional, nn, reference  # noqa: E402  (importing the families registers their ops)
from .estimation.train import MIEstimate, estimate_mi  # noqa: E402

__version__ = "0.1.0"
__all__ = ["MIResult", "NBMIMResult", "MIEstimate", "estimate_mi", "functional", "nn", "reference", "info",
           "__version__"]


def info() -> dict:
    """{backend: (available, why)}, as ``fastmi info`` prints it (per family: ``info_families()``)."""
    return _registry.availability()


def info_families() -> dict:
    """{family: {backend: (available, why)}} for every kernel family."""
    return {name: fam.availability() for name, fam in _registry.families().items()}
