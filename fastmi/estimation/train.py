"""``fastmi.estimate_mi``: estimate I(X; Y) from paired samples by training a critic.

The samples are split (seeded) into train / validation / test. The critic is trained with Adam on
random train batches through the fused losses; every ``eval_every`` steps the bound is evaluated on
the validation batches, and training stops after ``patience`` evaluations without improvement (or
at ``max_steps``), keeping the best weights. The estimate is the mean of the bound over the test
batches (data never used to choose anything), with its standard error across those batches.

Upper bounds (club, l1out) fit a Gaussian q(y|x) by maximum likelihood instead (early stopping on
the validation log-likelihood) and report the bound of the fitted q on the test batches.
"""
from __future__ import annotations

import copy
import math
import statistics
import time
from dataclasses import dataclass, field

import torch
from torch import nn

from .._core import registry, validate
from .critics import JointCritic, SeparableCritic, joint_critic, separable_critic
from .objectives import ESTIMATORS, Objective


@dataclass
class MIEstimate:
    """The result of ``estimate_mi``. ``estimate``: the mean of the bound over the held-out test
    batches (nats); ``stderr``: its standard error across those batches; ``curve``: one entry per
    evaluation ({"step", "train", "valid"}: the mean training bound since the last evaluation and the
    validation criterion); ``model``: the trained critic and auxiliary networks (best weights)."""

    estimate: float
    stderr: float
    estimator: str
    lower_bound: bool
    steps: int
    best_step: int
    stopped_early: bool
    seconds: float
    batch_size: int
    n_train: int
    n_valid: int
    n_test: int
    test_values: list = field(repr=False)
    curve: list = field(repr=False)
    model: nn.Module = field(repr=False)

    def __float__(self) -> float:
        return self.estimate

    def __str__(self) -> str:
        kind = "lower" if self.lower_bound else "upper"
        stop = f"stopped at step {self.steps}, best {self.best_step}" if self.stopped_early else \
            f"{self.steps} steps, best {self.best_step}"
        return (f"{self.estimator} ({kind} bound): {self.estimate:.4f} +- {self.stderr:.4f} nats "
                f"({len(self.test_values)} test batches of {self.batch_size}; {stop}; {self.seconds:.1f} s)")


def _as_samples(v, arg: str) -> torch.Tensor:
    if not isinstance(v, torch.Tensor):
        try:
            v = torch.as_tensor(v)
        except (TypeError, ValueError, RuntimeError):
            raise TypeError(f"estimate_mi: {arg} must be a tensor or an array of samples, got {type(v).__name__}") from None
    if not v.is_floating_point():
        v = v.to(torch.get_default_dtype())
    if v.dim() == 1:
        v = v[:, None]
    if v.dim() != 2:
        raise ValueError(f"estimate_mi: {arg} must be n x d (or a vector of n samples), got shape {tuple(v.shape)}")
    return v


def _fraction(v, arg: str) -> float:
    return validate.number(v, arg, "estimate_mi", low=0.0, strict=True, high=1.0, high_strict=True)


def _integer(v, arg: str, low: int) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or v < low:
        raise ValueError(f"estimate_mi: {arg} must be an integer >= {low}, got {v!r}")
    return v


def _make_critic(critic, estimator: str, x_dim: int, y_dim: int, hidden, embed_dim: int):
    if estimator in ("club", "l1out"):
        return None  # the Gaussian conditional q(y|x) replaces the critic
    if critic == "separable":
        return separable_critic(x_dim, y_dim, hidden, embed_dim)
    if critic == "joint":
        return joint_critic(x_dim, y_dim, hidden)
    if isinstance(critic, nn.Module) and hasattr(critic, "scores"):
        return critic
    raise ValueError("estimate_mi: critic must be 'separable', 'joint' or a module with scores(x, y) -> n x m "
                     f"(fastmi.nn.separable_critic / joint_critic); got {critic!r}")


def _batches(n: int, batch_size: int):
    """Consecutive batches of a held-out split: full batches (one short batch if there is no full one)."""
    if n < batch_size:
        return [slice(0, n)]
    return [slice(k, k + batch_size) for k in range(0, n - batch_size + 1, batch_size)]


@torch.no_grad()
def _evaluate(fn, x, y, batch_size: int) -> list:
    return [float(fn(x[b], y[b])) for b in _batches(x.shape[0], batch_size)]


def estimate_mi(x, y, estimator: str = "infonce", critic="separable", *, hidden=(64, 64), embed_dim: int = 32,
                batch_size: int = 128, lr: float = 5e-4, max_steps: int = 5000, eval_every: int = 100,
                patience: int = 5, valid_fraction: float = 0.1, test_fraction: float = 0.2, seed: int = 0,
                progress: bool = True, backend: str = "auto", **options) -> MIEstimate:
    """Estimate I(X; Y) in nats from n paired samples x (n x dx) and y (n x dy).

    estimator: "infonce", "dv", "nwj", "js", "smile", "mine", "tuba", "alpha_tuba", "flo" (lower bounds,
    a trained critic) or "club", "l1out" (upper bounds, a trained Gaussian q(y|x)); ``options`` go to
    the bound (e.g. alpha=0.1 for alpha_tuba, clip=1.0 for smile, negatives=1 for one shifted negative
    per anchor). critic: "separable" (<f(x), g(y)>, MLPs to R^embed_dim), "joint" (an MLP of [x, y]),
    or a module with ``scores(x, y)``. hidden: the MLPs' hidden widths (also of the baseline, u and q
    networks). Training: Adam(lr), batches of ``batch_size``, evaluation every ``eval_every`` steps on
    the validation split, early stopping after ``patience`` evaluations without improvement.

    Returns an ``MIEstimate`` (float(result) is the estimate). Expect each bound's bias: InfoNCE
    cannot exceed log(batch_size); NWJ/TUBA are unbiased for their value but noisy; JS and SMILE
    near the truth when it is well below their clip; CLUB is loose (above MI) when q is sharp.
    """
    if estimator not in ESTIMATORS:
        raise ValueError(f"estimate_mi: estimator must be one of {ESTIMATORS}, got {estimator!r}")
    x, y = _as_samples(x, "x"), _as_samples(y, "y")
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"estimate_mi: x has {x.shape[0]} samples but y has {y.shape[0]} (one pair per row)")
    validate.same_device("estimate_mi", x=x, y=y)
    if x.dtype != y.dtype:
        y = y.to(x.dtype)
    batch_size = _integer(batch_size, "batch_size", 2)
    max_steps, eval_every, patience = (_integer(max_steps, "max_steps", 1), _integer(eval_every, "eval_every", 1),
                                       _integer(patience, "patience", 1))
    vf, tf = _fraction(valid_fraction, "valid_fraction"), _fraction(test_fraction, "test_fraction")
    lr = validate.number(lr, "lr", "estimate_mi", low=0.0, strict=True)
    registry.check_name(backend, "estimate_mi")
    n = x.shape[0]
    n_valid, n_test = int(round(n * vf)), int(round(n * tf))
    n_train = n - n_valid - n_test
    if min(n_valid, n_test) < 2 or n_train < batch_size:
        raise ValueError(f"estimate_mi: {n} samples leave {n_train} for training (batch_size={batch_size}), "
                         f"{n_valid} for validation and {n_test} for testing; each held-out split needs >= 2 and "
                         "training one batch: give more samples or a smaller batch_size")

    gen = torch.Generator().manual_seed(seed)
    order = torch.randperm(n, generator=gen).to(x.device)
    tr, va, te = order[:n_train], order[n_train:n_train + n_valid], order[n_train + n_valid:]
    xtr, ytr, xva, yva, xte, yte = x[tr], y[tr], x[va], y[va], x[te], y[te]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = _make_critic(critic, estimator, x.shape[1], y.shape[1], tuple(hidden), embed_dim)
        model = Objective(estimator, net, x.shape[1], y.shape[1], tuple(hidden), options, backend)
    model = model.to(device=x.device, dtype=x.dtype)
    try:  # a wrong option or input fails here, before any training
        with torch.no_grad():
            model(xtr[:batch_size], ytr[:batch_size])
    except (TypeError, ValueError) as exc:
        raise type(exc)(f"estimate_mi({estimator!r}): {exc}") from None
    if isinstance(getattr(model, "mine", None), nn.Module):
        model.mine.reset()
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    return _train(model, opt, (xtr, ytr, xva, yva, xte, yte), estimator, batch_size, max_steps, eval_every, patience,
                  gen, progress)


def _train(model, opt, data, estimator, batch_size, max_steps, eval_every, patience, gen, progress) -> MIEstimate:
    from tqdm.auto import tqdm

    xtr, ytr, xva, yva, xte, yte = data
    start = time.perf_counter()
    best, best_step, best_state, bad, step, curve, recent = -math.inf, 0, None, 0, 0, [], []
    stopped = False
    bar = tqdm(total=max_steps, desc=f"estimate_mi[{estimator}]", disable=not progress, leave=False)
    n_batches = xtr.shape[0] // batch_size
    while step < max_steps and not stopped:
        perm = torch.randperm(xtr.shape[0], generator=gen).to(xtr.device)
        for b in range(n_batches):
            idx = perm[b * batch_size:(b + 1) * batch_size]
            out = model(xtr[idx], ytr[idx])
            opt.zero_grad(set_to_none=True)
            if torch.isfinite(out.loss):  # a non-finite batch (e.g. an overflowing critic) is skipped
                out.loss.backward()
                opt.step()
            recent.append(float(out.mi))
            step += 1
            bar.update(1)
            if step % eval_every == 0 or step == max_steps:
                model.eval()
                valid = statistics.fmean(_evaluate(model.criterion, xva, yva, batch_size))
                model.train()
                train = statistics.fmean(v for v in recent if math.isfinite(v)) if any(map(math.isfinite, recent)) \
                    else math.nan
                curve.append({"step": step, "train": train, "valid": valid})
                recent = []
                bar.set_postfix(train=f"{train:.3f}", valid=f"{valid:.3f}")
                if valid > best:
                    best, best_step, best_state, bad = valid, step, copy.deepcopy(model.state_dict()), 0
                else:
                    bad += 1
                    stopped = bad >= patience
            if step >= max_steps or stopped:
                break
    bar.close()
    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    values = _evaluate(lambda a, b: model(a, b).mi, xte, yte, batch_size)
    est = statistics.fmean(values)
    se = statistics.stdev(values) / math.sqrt(len(values)) if len(values) > 1 else math.nan
    return MIEstimate(est, se, estimator, model.lower, step, best_step, stopped, time.perf_counter() - start,
                      batch_size, xtr.shape[0], xva.shape[0], xte.shape[0], values, curve, model)


__all__ = ["estimate_mi", "MIEstimate", "SeparableCritic", "JointCritic"]
