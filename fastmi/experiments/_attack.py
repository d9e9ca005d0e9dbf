"""Targeted Carlini-Wagner L2 attack (Carlini & Wagner 2017) through foolbox 3's L2CarliniWagnerAttack.

For each image x with target class t, the attack minimises over w (x' = (tanh(w) + 1) / 2 rescaled to
the bounds, so the box constraint always holds)

    ||x' - x||_2^2 + c * max(max_{i != t} f_i(x') - f_t(x'), -kappa)

with Adam (``stepsize``) for ``steps`` iterations, and a binary search over c (``binary_search_steps``,
starting at ``initial_const``); it returns the closest successful x' found. Defaults are Carlini &
Wagner's (9 binary steps, 10 000 iterations, lr 1e-2, c0 = 1e-3, kappa = 0, early abort).

Reported per image: the L2, L1 and L_inf norms of x' - x (pixel scale of ``bounds``) and L0 = the
number of input values changed by more than ``l0_tol``.
"""
from __future__ import annotations

import dataclasses

import torch


@dataclasses.dataclass
class AttackResult:
    adversarials: torch.Tensor    # N x ... (same shape as the images)
    success: torch.Tensor         # N bool: the model predicts the target class on the adversarial
    l2: torch.Tensor              # N, per-image norms of the perturbation
    l1: torch.Tensor
    linf: torch.Tensor
    l0: torch.Tensor

    def summary(self) -> dict:
        """Means over the successful images (the paper's 'average distance'), and the success count."""
        ok = self.success
        mean = (lambda v: float(v[ok].double().mean())) if bool(ok.any()) else (lambda v: float("nan"))
        return {"l2": mean(self.l2), "l1": mean(self.l1), "linf": mean(self.linf), "l0": mean(self.l0),
                "successes": int(ok.sum()), "attacked": int(ok.numel())}


def _foolbox():
    try:
        import foolbox
    except ImportError as e:  # pragma: no cover - a set-up dependency (Makefile, extra "attacks")
        raise ImportError("the Carlini-Wagner attack uses foolbox: pip install 'foolbox==3.3.4' "
                          "(or pip install 'fastmi[attacks]')") from e
    return foolbox


def cw_l2_targeted(model: torch.nn.Module, images: torch.Tensor, targets: torch.Tensor, *, bounds=(0.0, 1.0),
                   binary_search_steps: int = 9, steps: int = 10000, stepsize: float = 1e-2,
                   initial_const: float = 1e-3, confidence: float = 0.0, abort_early: bool = True,
                   l0_tol: float = 1.0 / 255.0) -> AttackResult:
    """Attack the classifier ``model`` (x -> logits; put in eval mode) on ``images`` towards ``targets``."""
    if images.shape[0] != targets.shape[0] or targets.dim() != 1:
        raise ValueError(f"cw_l2_targeted: images {tuple(images.shape)} and targets {tuple(targets.shape)} must have "
                         "the same first dimension (targets 1-D)")
    if steps < 1 or binary_search_steps < 1:
        raise ValueError(f"cw_l2_targeted: steps and binary_search_steps must be >= 1, got {steps}, "
                         f"{binary_search_steps}")
    lo, hi = bounds
    if not (float(images.min()) >= lo and float(images.max()) <= hi):
        raise ValueError(f"cw_l2_targeted: images must lie in bounds {bounds}")
    fb = _foolbox()
    was_training = model.training
    model.eval()
    try:
        fmodel = fb.PyTorchModel(model, bounds=(lo, hi))
        attack = fb.attacks.L2CarliniWagnerAttack(binary_search_steps=binary_search_steps, steps=steps,
                                                  stepsize=stepsize, confidence=confidence,
                                                  initial_const=initial_const, abort_early=abort_early)
        _, adv, _ = attack(fmodel, images, fb.criteria.TargetedMisclassification(targets), epsilons=None)
        with torch.no_grad():
            success = model(adv).argmax(1) == targets
    finally:
        model.train(was_training)
    delta = (adv - images).detach().flatten(1).double()
    return AttackResult(adv.detach(), success, delta.norm(dim=1), delta.abs().sum(1), delta.abs().amax(1),
                        (delta.abs() > l0_tol).sum(1))
