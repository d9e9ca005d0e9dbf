"""The backend registry: dispatch, the fallback without the extension, per-family availability, and `fastmi info`."""
import os
import subprocess
import sys
import warnings

import pytest
import torch

import fastmi
import fastmi.functional as F
from fastmi._core import registry

CRITIC = registry.family("critic_lse")


def test_auto_picks_cpu_kernel_for_cpu_tensors():
    if fastmi.info()["cpu"][0]:
        assert CRITIC.select("auto", torch.empty(2), "t")[0] == "cpu"


def test_env_replaces_auto_only(monkeypatch):
    monkeypatch.setenv("FASTMI_BACKEND", "reference")
    assert CRITIC.select("auto", torch.empty(2), "t")[0] == "reference"
    if fastmi.info()["cpu"][0]:
        assert CRITIC.select("cpu", torch.empty(2), "t")[0] == "cpu"
    monkeypatch.setenv("FASTMI_BACKEND", "nope")
    with pytest.raises(ValueError, match="FASTMI_BACKEND"):
        CRITIC.select("auto", torch.empty(2), "t")


def test_unavailable_backend_is_an_error(monkeypatch):
    monkeypatch.setattr(CRITIC, "_availability", {**CRITIC.availability(), "cuda": (False, "no CUDA device")})
    with pytest.raises(RuntimeError, match="backend='cuda' is not available: no CUDA device"):
        F.infonce(torch.randn(3, 3), backend="cuda")


def test_fallback_warns_once(monkeypatch):
    for fam in registry.families().values():
        monkeypatch.setattr(fam, "_availability", {**fam.availability(), "cpu": (False, "simulated missing compiler")})
    monkeypatch.setattr(registry, "_warned", set())
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        a = F.infonce(torch.randn(5, 5))
        F.dv(torch.randn(5, 5))
    msgs = [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]
    assert len(msgs) == 1 and "simulated missing compiler" in msgs[0]  # one warning for the family
    assert torch.isfinite(a.mi)


def test_import_and_work_without_extension_or_triton(tmp_path):
    """A fresh interpreter with no extension and no triton still computes every loss (one warning)."""
    code = (
        "import sys, warnings; sys.modules['triton'] = None\n"
        "warnings.simplefilter('always')\n"
        "with warnings.catch_warnings(record=True) as w:\n"
        "    import torch, fastmi, fastmi.functional as F\n"
        "    s = torch.randn(6, 6)\n"
        "    vals = [F.infonce(s).mi, F.dv(s).mi, F.nwj(s).mi, F.js(s).mi, F.smile(s).mi]\n"
        "n = sum('reference (unfused) backend' in str(x.message) for x in w)\n"
        "assert n == 1, [str(x.message) for x in w]\n"
        "assert not fastmi.info()['cpu'][0] and not fastmi.info()['triton'][0]\n"
        "print('ok', len(vals))\n"
    )
    env = dict(os.environ, FASTMI_NO_EXT="1")
    env.pop("TRITON_INTERPRET", None)
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "ok 5" in out.stdout


def test_fastmi_info_cli():
    out = subprocess.run([sys.executable, "-m", "fastmi", "info"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    for name in ("triton", "cuda", "cpu", "reference"):
        assert name in out.stdout


def test_stale_extension_without_a_family_op_falls_back(monkeypatch):
    """A fastmi._C built before a family existed: auto falls back to the reference with a warning,
    an explicit backend='cpu' says what is missing."""
    if not fastmi.info()["cpu"][0]:
        pytest.skip("fastmi._C not available")
    fam = registry.family("separable")
    monkeypatch.setattr(registry, "_has_kernel", lambda op, key: op != "separable_lse")
    monkeypatch.setattr(fam, "_availability", None)  # probed again with the stale extension
    monkeypatch.setattr(registry, "_warned", set())
    x, y = torch.randn(5, 3), torch.randn(5, 3)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = F.infonce_separable(x, y)
    assert any("fastmi::separable_lse" in str(w.message) for w in caught)
    torch.testing.assert_close(out.loss, F.infonce_separable(x, y, backend="reference").loss)
    with pytest.raises(RuntimeError, match="separable_lse"):
        F.infonce_separable(x, y, backend="cpu")


_FUNC_LOSSES = {
    "infonce": (lambda t, be: F.infonce(t, backend=be).loss, (6, 6)),
    "nwj_separable": (lambda t, be: F.nwj_separable(t, t.flip(0), backend=be).loss, (6, 4)),
    "mmd_imq": (lambda t, be: F.mmd_imq(t, t.flip(0) + 0.5, backend=be), (6, 4)),
    "nb_mim": (lambda t, be: F.nb_mim(t, backend=be).loss, (6, 4)),
    "nb_dms": (lambda t, be: F.nb_dms(t, backend=be), (6, 3)),
    "fd_smoothness": (lambda t, be: F.fd_smoothness(t, 1.1 * t, 0.1, backend=be), (6, 4)),
}


@pytest.mark.parametrize("loss", sorted(_FUNC_LOSSES))
def test_torch_func_grad_runs_on_auto_and_matches_autograd(loss, monkeypatch):
    """Inside torch.func.grad, backend='auto' takes the reference path (the fused custom ops cannot be
    differentiated by functorch yet) and gives the gradient loss.backward() gives."""
    monkeypatch.setattr(registry, "_warned", set())
    fn, shape = _FUNC_LOSSES[loss]
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(0))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        g = torch.func.grad(lambda t: fn(t, "auto"))(x)
    leaf = x.clone().requires_grad_()
    fn(leaf, "auto").backward()
    torch.testing.assert_close(g, leaf.grad, rtol=1e-5, atol=1e-6)
    if loss == "nb_dms":   # torch ops on every backend: an explicit fused backend runs too
        torch.testing.assert_close(torch.func.grad(lambda t: fn(t, "cpu"))(x), g)
    elif fastmi.info()["cpu"][0]:
        assert any("torch.func" in str(w.message) for w in caught)
        with pytest.raises(RuntimeError, match="torch.func gradient transform"):
            torch.func.grad(lambda t: fn(t, "cpu"))(x)


def test_vmap_alone_keeps_the_fused_backend():
    assert not registry._differentiating_transform()
    seen = []
    torch.func.vmap(lambda t: seen.append(registry._differentiating_transform()) or t.sum())(torch.randn(2, 3))
    assert seen == [False]
    torch.func.grad(lambda t: seen.append(registry._differentiating_transform()) or t.sum())(torch.randn(3))
    assert seen == [False, True]


def test_every_family_is_registered_with_a_reference():
    fams = registry.families()
    assert set(fams) == {"critic_lse", "separable", "softmax_stats", "mmd_imq", "fd_jacobian"}
    for fam in fams.values():
        assert "reference" in fam.ops and fam.availability()["reference"][0]
        assert set(fam.available()) <= set(fam.implemented())


def test_a_backend_a_family_lacks_is_named():
    with pytest.raises(ValueError, match="no 'cuda' kernel"):
        F.infonce_separable(torch.randn(4, 3), torch.randn(4, 3), backend="cuda")


def test_fastmi_info_lists_families():
    out = subprocess.run([sys.executable, "-m", "fastmi", "info"], capture_output=True, text=True)
    for fam in registry.families():
        assert fam in out.stdout
