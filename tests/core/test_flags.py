"""Every boolean option of every public function and nn module takes True/False (numpy's bool too)
and nothing else: a truthy string such as "no" is a TypeError that names the option (issue 19,
item 3). The options are found by introspection, so a new boolean option without its check fails
here."""
import inspect

import numpy as np
import pytest
import torch

import fastmi
import fastmi.functional as F
import fastmi.nn as fnn
from fastmi import reference as R

S = torch.randn(4, 4)
X, Y = torch.randn(4, 3), torch.randn(4, 3)

# one valid call per public function with a boolean option: fn(**{flag: value}) must run
CALLS = {
    F.mine: lambda fn, **kw: fn(S, torch.tensor(float("nan")), **kw),
    F.smile: lambda fn, **kw: fn(S, **kw),
    F.infonce_separable: lambda fn, **kw: fn(X, Y, **kw),
    F.dv_separable: lambda fn, **kw: fn(X, Y, **kw),
    F.nwj_separable: lambda fn, **kw: fn(X, Y, **kw),
    F.perturb_in_span: lambda fn, **kw: fn(X, **kw),
    R.mine: lambda fn, **kw: fn(S, torch.tensor(float("nan")), **kw),
    R.smile: lambda fn, **kw: fn(S, **kw),
    R.separable_scores: lambda fn, **kw: fn(X, Y, **kw),
    R.infonce_separable: lambda fn, **kw: fn(X, Y, **kw),
    R.dv_separable: lambda fn, **kw: fn(X, Y, **kw),
    R.nwj_separable: lambda fn, **kw: fn(X, Y, **kw),
    R.perturb_in_span: lambda fn, **kw: fn(X, **kw),
}


def _bool_options(fn):
    return [p.name for p in inspect.signature(fn).parameters.values() if isinstance(p.default, bool)]


def _public_functions():
    out = []
    for module in (F, R):
        for name in getattr(module, "__all__", dir(module)):
            fn = getattr(module, name)
            if inspect.isfunction(fn) and not name.startswith("_") and _bool_options(fn):
                out.append(fn)
    return out


def test_every_boolean_option_is_covered():
    assert set(_public_functions()) == set(CALLS), "a public function with a boolean option has no case here"


CASES = [(fn, flag) for fn in CALLS for flag in _bool_options(fn)]


@pytest.mark.parametrize("fn,flag", CASES, ids=[f"{fn.__module__}.{fn.__name__}-{f}" for fn, f in CASES])
def test_function_flags(fn, flag):
    for bad in ("no", 0, 1, None, torch.tensor(True)):
        with pytest.raises(TypeError, match=flag):
            CALLS[fn](fn, **{flag: bad})
    for good in (False, True, np.bool_(True)):
        CALLS[fn](fn, **{flag: good})


MODULES = {
    fnn.SMILE: ["clip_positives"],
    fnn.InfoNCESeparable: ["learn_temperature", "normalize", "symmetric"],
    fnn.DVSeparable: ["learn_temperature", "normalize", "symmetric"],
    fnn.NWJSeparable: ["learn_temperature", "normalize", "symmetric"],
    fnn.JacobianSmoothness: ["center", "per_sample_zeta"],
}


def test_every_module_boolean_option_is_covered():
    found = {}
    for name in dir(fnn):
        cls = getattr(fnn, name)
        if inspect.isclass(cls) and issubclass(cls, torch.nn.Module) and not name.startswith("_"):
            flags = set()
            for klass in cls.__mro__:
                if "__init__" in vars(klass):
                    flags |= set(_bool_options(klass.__init__))
            bound = getattr(cls, "bound", None)
            if bound is not None and not name.endswith("Separable"):  # the table's options are keyword arguments
                flags |= {o.name for o in bound.options if isinstance(o.default, bool) and o.name not in (bound.module_state or ())}
            if flags:
                found[cls] = flags
    assert found == {cls: set(flags) for cls, flags in MODULES.items()}


@pytest.mark.parametrize("cls,flag", [(c, f) for c, fs in MODULES.items() for f in fs])
def test_module_flags(cls, flag):
    with pytest.raises(TypeError, match=flag):
        cls(**{flag: "no"})
    cls(**{flag: np.bool_(False)})
    cls(**{flag: True})


def test_normalize_no_is_not_the_cosine_critic():
    """The reported bug: normalize="no" acted as True."""
    with pytest.raises(TypeError, match="normalize"):
        F.infonce_separable(X, Y, normalize="no", backend="reference")
    with pytest.raises(TypeError, match="symmetric"):
        F.infonce_separable(X, Y, symmetric="no", backend="cpu" if fastmi.info()["cpu"][0] else "reference")
