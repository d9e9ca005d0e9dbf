"""One optimisation step of Neural Bayes-DMS with the smoothness regularizer (SPEC 1.1-1.2), shared by
nb_dms_2d and nb_dms_images.

    loss = nb_dms(g(x)) + w * R_c,   R_c = mean_b ||g(x_b) - g(x_b + zeta delta_b)||^2 / zeta^2

g = the network's pre-softmax logits, delta = a random subset sum of the centred batch (unit norm),
zeta = 0.1 N(0, 1), one per batch. w: in DML.ipynb beta only switches R_c on (w = 1 if beta > 0);
``beta_multiplies=True`` uses w = beta (the paper's Eq 10 form).

``rc_bn``: "train" (the authors' code) runs both R_c passes with BatchNorm in training mode, each with
its own batch statistics; the clean pass of the DMS term is reused as R_c's clean pass (the same
numbers in training mode, one forward pass fewer). "eval" runs both R_c passes with the running
statistics (gradients still flow), so R_c measures the smoothness of the function used at test time.

``rc_noise``: the subset-sum coefficients of delta, "bernoulli" (c ~ {0, 1}, DML.ipynb) or "gaussian"
(c ~ N(0, 1), the paper's Eq 4 text).

``rc_clean_pass`` (rc_bn="train" only): "separate" (DML.ipynb) runs R_c's clean pass as its own
training-mode forward pass, so BatchNorm's running statistics take three updates per step (DMS clean,
R_c clean, R_c perturbed); its outputs equal the DMS pass's, so the gradients are those of "reuse",
and the extra pass runs without a graph (only the running statistics change). "reuse" (ours, older
default) takes two updates per step. Only the evaluation-mode (running statistics) predictions differ.
"""
from __future__ import annotations

import torch

from .. import functional as F

RC_BN_MODES = ("train", "eval")
RC_CLEAN_PASSES = ("reuse", "separate")
RC_NOISES = ("bernoulli", "gaussian")


def rc_weight(beta: float, beta_multiplies: bool) -> float:
    """The coefficient of R_c: beta, or 1.0 / 0.0 when beta only switches it on (the authors' code)."""
    if beta_multiplies:
        return float(beta)
    return 1.0 if beta > 0 else 0.0


def dms_step(model: torch.nn.Module, opt: torch.optim.Optimizer, x: torch.Tensor, *, beta: float,
             beta_multiplies: bool = False, rc_bn: str = "train", rc_clean_pass: str = "reuse",
             rc_noise: str = "bernoulli", generator=None, backend: str = "auto") -> dict:
    """One Adam step on the DMS loss (+ R_c) of batch ``x``; returns the detached terms."""
    if rc_bn not in RC_BN_MODES:
        raise ValueError(f"rc_bn must be one of {RC_BN_MODES}, got {rc_bn!r}")
    if rc_clean_pass not in RC_CLEAN_PASSES:
        raise ValueError(f"rc_clean_pass must be one of {RC_CLEAN_PASSES}, got {rc_clean_pass!r}")
    if rc_noise not in RC_NOISES:
        raise ValueError(f"rc_noise must be one of {RC_NOISES}, got {rc_noise!r}")
    model.train()
    logits = model(x)
    dms = F.nb_dms(logits, backend=backend)
    w = rc_weight(beta, beta_multiplies)
    rc = torch.zeros((), device=x.device)
    if w > 0:
        x_tilde, zeta = F.perturb_in_span(x, noise=rc_noise, generator=generator, backend=backend)
        if rc_bn == "eval":
            model.eval()
            clean, pert = model(x), model(x_tilde)
            model.train()
        else:
            if rc_clean_pass == "separate":
                with torch.no_grad():
                    model(x)   # DML.ipynb's own R_c clean pass: same outputs, one more BN running-stat update
            clean, pert = logits, model(x_tilde)
        rc = F.fd_smoothness(clean, pert, zeta, backend=backend)
    loss = dms + w * rc
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return {"loss": loss.detach(), "dms": dms.detach(), "rc": rc.detach()}


@torch.no_grad()
def predict(model: torch.nn.Module, x: torch.Tensor, batch: int = 4096) -> torch.Tensor:
    """Logits of ``x`` with the model in evaluation mode (running BatchNorm statistics), in chunks."""
    was = model.training
    model.eval()
    out = torch.cat([model(x[i:i + batch]) for i in range(0, x.shape[0], batch)])
    model.train(was)
    return out
