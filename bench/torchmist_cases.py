"""The cases of bench_torchmist.py: one training step of the same estimator on the same critic
(the same weights) and the same batch, in fastmi and in torch-mist (``pip install torch-mist``).

    case            fastmi                                torch-mist 0.2.17
    infonce_sep     F.infonce_separable(f(x), g(y))       InfoNCE(SeparableCritic(f, g), neg_samples=0)
    infonce_joint   F.infonce(T(x_i, y_j))                InfoNCE(JointCritic(h), neg_samples=0)
    nwj_joint       F.nwj(T(x_i, y_j))  (off-diagonal)    NWJ(JointCritic(h), neg_samples=-1)
    js_joint        F.js(T, value="nwj_shifted")               JS(JointCritic(h), neg_samples=-1)

T = <f(x), g(y)> (fastmi.nn.separable_critic) or h([x, y]) (fastmi.nn.joint_critic, whose layers
torch-mist's JointCritic runs as one network on the concatenated pairs). A step is the loss of one
batch and its backward into the critic's parameters; the optimizer's update is the same on both
sides and is left out. The protocol of bench.memory: loss_fn(name, impl), inputs_for(name, n),
step(fn, data), grad_bytes(data).
"""
from __future__ import annotations

import copy
import math

import torch

import fastmi
import fastmi.functional as F

X_DIM = Y_DIM = 5
HIDDEN = (64, 64)
EMBED = 32
IMPLS = ("fastmi", "torch-mist")

# name -> (estimator, critic kind, the fastmi bound on one batch, the torch-mist constructor and its options)
CASES = {
    "infonce_sep": ("infonce", "separable", lambda c, x, y: F.infonce_separable(*c.embed(x, y)), "InfoNCE", 0),
    "infonce_joint": ("infonce", "joint", lambda c, x, y: F.infonce(c.scores(x, y)), "InfoNCE", 0),
    "nwj_joint": ("nwj", "joint", lambda c, x, y: F.nwj(c.scores(x, y)), "NWJ", -1),
    "js_joint": ("js", "joint", lambda c, x, y: F.js(c.scores(x, y), value="nwj_shifted"), "JS", -1),
}


def torch_mist_error() -> str | None:
    """Why torch-mist cannot be used here (None when it imports)."""
    try:
        import torch_mist  # noqa: F401
        from torch_mist.estimators.discriminative import implementations  # noqa: F401
    except Exception as exc:  # any failure to import is a reason to skip, recorded as it was
        return f"{type(exc).__name__}: {exc}"
    return None


def critic(name: str, seed: int = 0):
    """The case's fastmi critic, initialized from ``seed``."""
    kind = CASES[name][1]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if kind == "separable":
            return fastmi.nn.separable_critic(X_DIM, Y_DIM, HIDDEN, EMBED)
        return fastmi.nn.joint_critic(X_DIM, Y_DIM, HIDDEN)


def torch_mist_estimator(name: str, net):
    """torch-mist's estimator of the case around (a copy of) the same critic weights."""
    from torch import nn
    from torch_mist.critic import JointCritic, SeparableCritic
    from torch_mist.estimators.discriminative import implementations as impl

    net = copy.deepcopy(net)
    if CASES[name][1] == "separable":
        wrapped = SeparableCritic(f_x=net.f, f_y=net.g)
    else:
        wrapped = JointCritic(nn.Sequential(net.first, net.rest))
    return getattr(impl, CASES[name][3])(critic=wrapped, neg_samples=CASES[name][4])


class Step:
    """One implementation of a case: ``loss(x, y)`` (to minimize), ``mi(x, y)`` (the estimate of the
    batch), ``params``."""

    def __init__(self, name: str, impl: str, net=None):
        net = critic(name) if net is None else net
        self.name, self.impl = name, impl
        if impl == "fastmi":
            self.module = copy.deepcopy(net)
            bound = CASES[name][2]
            self._loss = lambda x, y: bound(self.module, x, y).loss
            self._mi = lambda x, y: bound(self.module, x, y).mi
        elif impl == "torch-mist":
            from torch_mist.utils.caching import delete_cache_hook

            self.module = torch_mist_estimator(name, net)

            def fresh(method):  # torch-mist caches a batch's critic values; a benchmark repeats the batch
                def call(x, y):
                    for m in self.module.modules():
                        delete_cache_hook(m)
                    return method(x, y)
                return call
            self._loss, self._mi = fresh(self.module.loss), fresh(self.module.mutual_information)
        else:
            raise ValueError(f"impl must be one of {IMPLS}, got {impl!r}")
        self.params = list(self.module.parameters())

    def loss(self, x, y):
        return self._loss(x, y)

    def mi(self, x, y):
        return self._mi(x, y)

    def __call__(self, x, y):
        return self.loss(x, y)


def correlated_gaussians(n: int, mi: float = 2.0, d: int = X_DIM, seed: int = 0):
    """x ~ N(0, I_d), y = rho x + sqrt(1 - rho^2) e: I(X; Y) = -d/2 log(1 - rho^2) = mi."""
    rho = math.sqrt(1 - math.exp(-2 * mi / d))
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g)
    return x, rho * x + math.sqrt(1 - rho**2) * torch.randn(n, d, generator=g)


def loss_fn(name: str, impl: str):
    return Step(name, impl)


def inputs_for(name: str, n: int):
    return correlated_gaussians(n, seed=n)


def step(fn, data):
    """The loss of one batch and its backward; the gradients accumulate into buffers that exist from
    the first step on (so the memory measured is the step's own)."""
    fn(*data).backward()


def grad_bytes(data) -> int:
    return 0  # the parameters' gradient buffers exist before the measured step
