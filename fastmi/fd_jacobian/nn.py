"""nn.Module version of Neural Bayes' smoothness regularizer R_c."""
from __future__ import annotations

from .._core import validate
from .._core.options_module import OptionsModule
from . import api


class JacobianSmoothness(OptionsModule):
    """Neural Bayes' smoothness regularizer R_c as a module: ``F.jacobian_smoothness`` with fixed options.

        penalty = JacobianSmoothness(pool="global")(model, x)     # add beta * penalty to the loss

    forward(fn, x, generator=None): perturbs x in the span of the batch (``F.perturb_in_span`` with
    this module's zeta_std / noise / center / per_sample_zeta) and returns
    mean_b ||fn(x)_b - fn(x_tilde)_b||^2 / zeta_b^2. Stateless: no parameters or buffers.
    """

    def __init__(self, *, zeta_std=0.1, noise="bernoulli", center=True, per_sample_zeta=False, pool=None,
                 backend="auto"):
        center = validate.flag(center, "center", "JacobianSmoothness")
        per_sample_zeta = validate.flag(per_sample_zeta, "per_sample_zeta", "JacobianSmoothness")
        super().__init__(zeta_std=zeta_std, noise=noise, center=center, per_sample_zeta=per_sample_zeta, pool=pool,
                         backend=backend)

    def forward(self, fn, x, generator=None):
        return api.jacobian_smoothness(fn, x, generator=generator, **self.options)


__all__ = ["JacobianSmoothness"]
