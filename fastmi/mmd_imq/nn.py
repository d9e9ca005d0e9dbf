"""nn.Module version of Variational InfoMax's prior penalty."""
from __future__ import annotations

import math

from .._core import distributed
from .._core.options_module import OptionsModule
from . import api


class MMDPrior(OptionsModule):
    """Variational InfoMax's prior penalty as a module: ``F.mmd_imq_prior(z)``, MMD^2 between the
    codes z (n x K) and a fresh N(0, sigma^2 I) sample each call, kernel C / (C + ||a - b||^2)
    with C = scale (default K). Multiply by beta and add to the loss. group: None, "world" or a
    ProcessGroup (the codes and prior samples of every rank; pass each rank its own generator seed)."""

    def __init__(self, *, sigma=1.0, n_prior=None, scale=None, scales=None, estimator="unbiased", backend="auto",
                 group=None):
        if not (isinstance(sigma, (int, float)) and not isinstance(sigma, bool) and 0 < float(sigma) < math.inf):
            raise ValueError(f"MMDPrior: sigma must be a positive finite number, got {sigma!r}")
        super().__init__(sigma=float(sigma), n_prior=n_prior, scale=scale, scales=scales, estimator=estimator,
                         backend=backend, group=distributed.check_group(group, "MMDPrior"))

    def forward(self, z, generator=None):
        return api.mmd_imq_prior(z, generator=generator, **self.options)


__all__ = ["MMDPrior"]
