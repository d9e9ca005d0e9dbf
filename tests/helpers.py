"""What the test modules share: the backends a family runs on here (read from fastmi's registry),
moving tensors to a backend's device, the matching skip marks, and a thread-count context."""
import contextlib

import pytest
import torch

from fastmi._core import registry

GPU = torch.cuda.is_available()


def fused(family: str) -> list:
    """The fused backends of ``family`` that run in this process ("cpu", "triton", "cuda")."""
    return list(registry.family(family).available())


def available(family: str, backend: str) -> bool:
    return registry.family(family).availability()[backend][0]


def needs(family: str, backend: str):
    """Skip unless ``backend`` of ``family`` runs here (the reason says why not)."""
    ok, why = registry.family(family).availability()[backend]
    return pytest.mark.skipif(not ok, reason=why)


def on(backend, x):
    """``x`` on the device ``backend`` runs on (Triton: CUDA, or CPU through the interpreter);
    anything that is not a tensor is returned as it is."""
    if not isinstance(x, torch.Tensor):
        return x
    return x.to("cuda") if backend == "cuda" or (backend == "triton" and GPU) else x


def bound_cases():
    """(bound name, options) for the critic_lse tests, derived from fastmi's table of bounds: every
    bound at its defaults, with each option moved off its default (clip on or off, flags flipped), a
    per-row tensor for a log-baseline input, and regularized. Stateful bounds (MINE) are left to
    their own tests. Options are passed by name; "per_row" asks the test for a length-n tensor."""
    from fastmi.critic_lse.bounds import BOUNDS

    cases = []
    for name, b in BOUNDS.items():
        if b.module_state:
            continue
        cases.append((name, {}))
        for o in b.options:
            if o.name == "clip":
                cases.append((name, {"clip": None if o.default is not None else 1.0}))
            elif isinstance(o.default, bool):
                cases.append((name, {o.name: not o.default, **({"clip": 0.5} if "clip" in {p.name for p in b.options}
                                                                  else {})}))
            for value in o.cases:
                cases.append((name, {o.name: value}))
        for i in b.inputs:
            if i.per_row:
                clip = {"clip": 2.0} if "clip" in {o.name for o in b.options} else {}
                cases.append((name, {i.name: "per_row", **clip}))
                for o in b.options:  # the per-row input with every listed value of the other options
                    cases.extend((name, {i.name: "per_row", o.name: value}) for value in o.cases)
        cases.append((name, {"reg_weight": 0.3, "reg_target": 0.5}))
    cases.append(("dv", {"reg_weight": 0.2, "reg_norm": "l1"}))
    return cases


@contextlib.contextmanager
def threads(k: int):
    """torch's intra-op thread count set to k inside the block, restored after it."""
    old = torch.get_num_threads()
    torch.set_num_threads(k)
    try:
        yield
    finally:
        torch.set_num_threads(old)
