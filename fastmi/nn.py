"""nn.Module wrappers of fastmi.functional. Constructor arguments are the loss's options; forward
takes the scores (or joint=/marginal=) and returns ``MIResult(loss, mi)``. MINE owns its moving
average as a buffer."""
from __future__ import annotations

import inspect
import math

import torch
from torch import nn

from . import _backend, _scores, _validate
from . import functional as F


class _CriticLoss(nn.Module):
    _fn = None

    def __init__(self, *, negatives=None, reg_weight=0.0, reg_target=0.0, reg_norm="l2", backend="auto", **options):
        super().__init__()
        self.options = dict(negatives=negatives, reg_weight=reg_weight, reg_target=reg_target, reg_norm=reg_norm,
                            backend=backend, **options)
        self._check_options()

    def _check_options(self) -> None:
        """The options' errors at construction, not at the first forward (same messages as F.*)."""
        name = type(self).__name__
        accepted = inspect.signature(type(self)._fn).parameters
        for key in self.options:
            if key not in accepted:
                raise TypeError(f"{name}: unexpected option {key!r}")
        o = self.options
        _validate.regularization(o["reg_weight"], o["reg_target"], o["reg_norm"], name)
        if o["negatives"] is not None and o["negatives"] not in _scores.NEGATIVES:
            raise ValueError(f"{name}: negatives must be one of {_scores.NEGATIVES} or None, got {o['negatives']!r}")
        if o["backend"] not in _backend.BACKENDS:
            raise ValueError(f"{name}: backend must be one of {_backend.BACKENDS}, got {o['backend']!r}")
        if "clip" in o:
            _validate.clip(o["clip"], name)
        if "clip_positives" in o:
            _validate.flag(o["clip_positives"], "clip_positives", name)
        if "value" in o and o["value"] not in ("nwj", "nwj_shifted"):
            raise ValueError(f"{name}: value must be 'nwj' or 'nwj_shifted', got {o['value']!r}")

    def forward(self, scores=None, positives=None, **vector_form):
        return type(self)._fn(scores, positives=positives, **vector_form, **self.options)

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v!r}" for k, v in self.options.items())


class InfoNCE(_CriticLoss):
    """``F.infonce`` as a module (InfoNCE / CPC; ReInfoNCE with reg_weight > 0)."""

    _fn = staticmethod(F.infonce)

    def forward(self, scores, positives=None):
        return F.infonce(scores, positives=positives, **self.options)


class DV(_CriticLoss):
    """``F.dv``: Donsker-Varadhan (MINE value without moving average); ReDV/ReMINE with reg_weight."""

    _fn = staticmethod(F.dv)

    def __init__(self, *, clip=None, **kw):
        super().__init__(clip=clip, **kw)


class NWJ(_CriticLoss):
    """``F.nwj``; ReNWJ with reg_weight > 0."""

    _fn = staticmethod(F.nwj)

    def __init__(self, *, clip=None, **kw):
        super().__init__(clip=clip, **kw)


class JS(_CriticLoss):
    """``F.js``: JS training, NWJ value (value="nwj", or "nwj_shifted": NWJ on S + 1); ReJS with reg_weight > 0."""

    _fn = staticmethod(F.js)

    def __init__(self, *, value="nwj", **kw):
        super().__init__(value=value, **kw)


class SMILE(_CriticLoss):
    """``F.smile``: clipped DV value, JS gradient; ReSMILE with reg_weight > 0."""

    _fn = staticmethod(F.smile)

    def __init__(self, *, clip=5.0, clip_positives=False, **kw):
        super().__init__(clip=clip, clip_positives=clip_positives, **kw)


class TUBA(_CriticLoss):
    """``F.tuba``; the log-baseline is given per call (a scalar, or one value per row, learnable)."""

    _fn = staticmethod(F.tuba)

    def __init__(self, *, clip=None, **kw):
        super().__init__(clip=clip, **kw)

    def forward(self, scores=None, log_baseline=0.0, positives=None, **vector_form):
        return F.tuba(scores, log_baseline, positives=positives, **vector_form, **self.options)


class MINE(_CriticLoss):
    """``F.mine`` with its moving average of E_N[exp S] kept (in log space) as the buffer ``running_lme``.

    momentum: weight of the old average (0.9 = the common default); reset() empties the average.
    The average is updated in training mode only (as BatchNorm's running statistics).
    """

    _fn = staticmethod(F.mine)

    def __init__(self, *, momentum=0.9, **kw):
        super().__init__(**kw)
        self.momentum = _validate.number(momentum, "momentum", "MINE", low=0.0, high=1.0, high_strict=True)
        self.register_buffer("running_lme", torch.tensor(math.nan))

    def reset(self) -> None:
        self.running_lme.fill_(math.nan)

    def forward(self, scores=None, positives=None, **vector_form):
        return F.mine(scores, self.running_lme, momentum=self.momentum, update=self.training, positives=positives,
                      **vector_form, **self.options)


class _SeparableLoss(nn.Module):
    """A separable-critic loss on embeddings x (n x d) and y (m x d); S = x y^T / temperature never exists.

    temperature: the initial value; learn_temperature=True makes log(temperature) a parameter
    (``log_temperature``), as CLIP learns its logit scale. normalize=True: the cosine critic.
    """

    _fn = None

    def __init__(self, *, temperature=1.0, learn_temperature=False, normalize=False, negatives=None, reg_weight=0.0,
                 reg_target=0.0, reg_norm="l2", backend="auto", **options):
        super().__init__()
        name = type(self).__name__
        t = float(temperature)
        if not (t > 0 and math.isfinite(t)):
            raise ValueError(f"{name}: temperature must be positive and finite, got {temperature}")
        learn_temperature = _validate.flag(learn_temperature, "learn_temperature", name)
        normalize = _validate.flag(normalize, "normalize", name)
        for key in ("symmetric",):
            if key in options:
                options[key] = _validate.flag(options[key], key, name)
        if learn_temperature:
            self.log_temperature = nn.Parameter(torch.tensor(math.log(t)))
        else:
            self.log_temperature = None
            self._temperature = t
        self.options = dict(normalize=normalize, negatives=negatives, reg_weight=reg_weight, reg_target=reg_target,
                            reg_norm=reg_norm, backend=backend, **options)

    @property
    def temperature(self):
        return self._temperature if self.log_temperature is None else self.log_temperature.exp()

    def forward(self, x, y, positives=None):
        return type(self)._fn(x, y, temperature=self.temperature, positives=positives, **self.options)

    def extra_repr(self) -> str:
        t = "learned" if self.log_temperature is not None else self._temperature
        return ", ".join([f"temperature={t!r}"] + [f"{k}={v!r}" for k, v in self.options.items()])


class InfoNCESeparable(_SeparableLoss):
    """``F.infonce_separable`` as a module; symmetric=True gives CLIP / NT-Xent."""

    _fn = staticmethod(F.infonce_separable)

    def __init__(self, *, symmetric=False, **kw):
        super().__init__(symmetric=symmetric, **kw)


class DVSeparable(_SeparableLoss):
    """``F.dv_separable`` as a module."""

    _fn = staticmethod(F.dv_separable)


class NWJSeparable(_SeparableLoss):
    """``F.nwj_separable`` as a module."""

    _fn = staticmethod(F.nwj_separable)
class JacobianSmoothness(nn.Module):
    """Neural Bayes' smoothness regularizer R_c as a module: ``F.jacobian_smoothness`` with fixed options.

        penalty = JacobianSmoothness(pool="global")(model, x)     # add beta * penalty to the loss

    forward(fn, x, generator=None): perturbs x in the span of the batch (``F.perturb_in_span`` with
    this module's zeta_std / noise / center / per_sample_zeta) and returns
    mean_b ||fn(x)_b - fn(x_tilde)_b||^2 / zeta_b^2. Stateless: no parameters or buffers.
    """

    def __init__(self, *, zeta_std=0.1, noise="bernoulli", center=True, per_sample_zeta=False, pool=None,
                 backend="auto"):
        super().__init__()
        center = _validate.flag(center, "center", "JacobianSmoothness")
        per_sample_zeta = _validate.flag(per_sample_zeta, "per_sample_zeta", "JacobianSmoothness")
        self.options = dict(zeta_std=zeta_std, noise=noise, center=center, per_sample_zeta=per_sample_zeta,
                            pool=pool, backend=backend)

    def forward(self, fn, x, generator=None):
        return F.jacobian_smoothness(fn, x, generator=generator, **self.options)

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v!r}" for k, v in self.options.items())


class NeuralBayesMIM(nn.Module):
    """``F.nb_mim`` as a module: forward(states) -> NBMIMResult(loss, entropy, prior).

    alpha: weight of the prior term, (1 + alpha) R_p; prior: "v2" (the authors' code) or "v1";
    pool: kernel of the extra average-pooled scale of each 4-D state (0: none)."""

    def __init__(self, *, alpha=2.0, prior="v2", pool=2, eps=1e-7, backend="auto"):
        super().__init__()
        self.options = dict(alpha=alpha, prior=prior, pool=pool, eps=eps, backend=backend)

    def forward(self, states):
        return F.nb_mim(states, **self.options)

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v!r}" for k, v in self.options.items())


class MMDPrior(nn.Module):
    """Variational InfoMax's prior penalty as a module: ``F.mmd_imq_prior(z)``, MMD^2 between the
    codes z (n x K) and a fresh N(0, sigma^2 I) sample each call, kernel C / (C + ||a - b||^2)
    with C = scale (default K). Multiply by beta and add to the loss."""

    def __init__(self, *, sigma=1.0, n_prior=None, scale=None, scales=None, estimator="unbiased", backend="auto"):
        super().__init__()
        if not (isinstance(sigma, (int, float)) and not isinstance(sigma, bool) and 0 < float(sigma) < math.inf):
            raise ValueError(f"MMDPrior: sigma must be a positive finite number, got {sigma!r}")
        self.options = dict(sigma=float(sigma), n_prior=n_prior, scale=scale, scales=scales, estimator=estimator,
                            backend=backend)

    def forward(self, z, generator=None):
        return F.mmd_imq_prior(z, generator=generator, **self.options)

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v!r}" for k, v in self.options.items())


class NeuralBayesDMS(nn.Module):
    """``F.nb_dms`` as a module: forward(logits) -> scalar loss. scale="code" (the authors' code,
    default) or "paper" (Eq 5, half of it)."""

    def __init__(self, *, eps=1e-7, scale="code", backend="auto"):
        super().__init__()
        self.options = dict(eps=eps, scale=scale, backend=backend)

    def forward(self, logits):
        return F.nb_dms(logits, **self.options)

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v!r}" for k, v in self.options.items())
