"""How fastmi's compiled kernels are built, shipped and loaded: the C++ sources travel inside the
wheel (for the JIT fallback), the CPU variant is chosen at load time and the portable one matches
the references, a build for another torch is not loaded."""
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

import fastmi
from fastmi import _build, _ext

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = Path(fastmi.__file__).resolve().parent
FROM_CHECKOUT = PACKAGE.parent == ROOT          # else: the tests run against an installed fastmi
needs_ext = pytest.mark.skipif(not fastmi.info()["cpu"][0], reason="no compiled CPU kernels here")
# the kernel tests the portable variant runs: every CPU kernel family, without the Triton, CUDA,
# torch.compile and opcheck cases (they test the dispatch, not the arithmetic of the variant)
PORTABLE_TESTS = ["tests/critic_lse/test_kernels.py", "tests/separable/test_api.py", "tests/fd_jacobian/test_kernels.py",
                  "tests/mmd_imq/test_kernels.py", "tests/softmax_stats/test_kernels.py"]
PORTABLE_SKIP = "not triton and not cuda and not compile and not opcheck and not fallback and not streaming"


def _python(code: str, timeout: int = 600, **env):
    path = {"PYTHONPATH": str(ROOT)} if FROM_CHECKOUT else {}
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=timeout,
                          env=dict(os.environ, **path, **env))


def test_sources_are_found_in_a_checkout_and_in_an_installed_package(tmp_path, monkeypatch):
    assert _build.csrc_dir() == (ROOT / "csrc" if FROM_CHECKOUT else PACKAGE / "csrc")
    installed = tmp_path / "site-packages" / "fastmi"
    (installed / "csrc").mkdir(parents=True)
    (installed / "csrc" / "fastmi.cpp").write_text("")
    monkeypatch.setattr(_build, "PACKAGE", installed)
    assert _build.csrc_dir() == installed / "csrc"
    assert _build.core_sources() == [str(installed / "csrc" / "fastmi.cpp")]
    (installed / "csrc" / "fastmi.cpp").unlink()
    with pytest.raises(FileNotFoundError, match="neither"):
        _build.csrc_dir()


def test_shipped_sources_cover_every_include():
    shipped = {p.relative_to(_build.csrc_dir()).as_posix() for p in _build.shipped_sources()}
    assert {"fastmi.cpp", "critic_lse.h", "fd_jacobian.h", "cpu/fast_exp.h", "cpu/huge_pages.h"} <= shipped
    assert {f"cpu/{f}.cpp" for f in _build.FAMILIES} <= shipped


def test_flags_have_no_debug_info_and_avx2_only_in_its_variant():
    assert "-g0" in _build.cxx_flags("portable") and "-s" in _build.link_flags()
    assert not any("avx" in f.lower() for f in _build.cxx_flags("portable"))
    assert "-mavx2" in _build.cxx_flags("avx2") and "-mfma" in _build.cxx_flags("avx2")


@pytest.mark.parametrize("env,want", [({"FASTMI_ISA": "portable"}, "portable"),
                                      ({"ATEN_CPU_CAPABILITY": "default"}, "portable")])
def test_the_variant_follows_the_environment(env, want):
    out = _python("from fastmi import _build; print(_build.isa_for_this_cpu()[0])", **env)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == want


def test_variants_to_build(monkeypatch):
    monkeypatch.delenv("FASTMI_CPU_VARIANTS", raising=False)
    assert _build.isa_variants() == (["avx2", "portable"] if _build.is_x86() else ["portable"])
    monkeypatch.setenv("FASTMI_CPU_VARIANTS", "this")
    assert _build.isa_variants() == [_build.isa_for_this_cpu()[0]]
    monkeypatch.setenv("FASTMI_CPU_VARIANTS", "some")
    with pytest.raises(ValueError, match="FASTMI_CPU_VARIANTS"):
        _build.isa_variants()


def test_a_build_for_another_torch_is_not_loaded(monkeypatch):
    saved = dict(_ext._state)
    monkeypatch.setenv("FASTMI_NO_JIT", "1")
    monkeypatch.setattr(_ext, "_torch_version", lambda: "0.0.1")
    _ext._state.update(tried=False, module=None, how=None, error=None)
    try:
        assert _ext.load() is None
        error = _ext.status()["error"]
        assert "this is torch 0.0.1" in error and "JIT build disabled" in error
    finally:
        _ext._state.clear()
        _ext._state.update(saved)


@needs_ext
def test_portable_variant_loads_and_matches_the_references():
    # make setup builds only this CPU's variant: the first run then JIT-builds the portable one (once)
    out = _python("from fastmi import _ext; s = _ext.status(); print(s['isa'], s['module'] is not None)",
                  FASTMI_ISA="portable", timeout=3600)
    assert out.stdout.split() == ["portable", "True"], out.stdout + out.stderr
    tests = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-x", *PORTABLE_TESTS,
                            "-k", PORTABLE_SKIP], cwd=ROOT, capture_output=True, text=True, timeout=1800,
                           env=dict(os.environ, FASTMI_ISA="portable"))
    assert tests.returncode == 0, tests.stdout[-4000:] + tests.stderr[-2000:]
    assert " passed" in tests.stdout.splitlines()[-1]


@pytest.mark.skipif(not (ROOT / "setup.py").is_file(), reason="needs the source checkout")
def test_the_wheel_ships_the_sources(tmp_path):
    """A pure-Python wheel (FASTMI_NO_EXT_BUILD=1, seconds) holds fastmi/csrc: the JIT build's input."""
    out = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-build-isolation", "--no-deps", "-q", "-w",
                          str(tmp_path), str(ROOT)], capture_output=True, text=True, timeout=600,
                         env=dict(os.environ, FASTMI_NO_EXT_BUILD="1"))
    if out.returncode != 0 and "No module named pip" in out.stderr:
        pytest.skip("pip is not available")
    assert out.returncode == 0, out.stderr[-3000:]
    wheel = next(tmp_path.glob("fastmi-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    shipped = {f"fastmi/csrc/{p.relative_to(_build.csrc_dir()).as_posix()}" for p in _build.shipped_sources()}
    assert shipped <= names
    assert "fastmi/_build.py" in names and "fastmi/kernels/critic_lse.py" in names
