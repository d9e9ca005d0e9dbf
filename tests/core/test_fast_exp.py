"""csrc/cpu/fast_exp.h (the vector exp and softplus log1p of the critic_lse CPU kernels) against
double precision: exp within 2 ulp on a strided sweep of every float bit pattern, log1p on [0, 1]
likewise, and the special values."""
import shutil
import subprocess
from pathlib import Path

import pytest
from torch.utils import cpp_extension

from fastmi import _build

HERE = Path(__file__).resolve().parent


@pytest.fixture(scope="module")
def checker(tmp_path_factory):
    if shutil.which("g++") is None:
        pytest.skip("g++ not found")
    exe = tmp_path_factory.mktemp("fast_exp") / "fast_exp_check"
    includes = [f"-I{p}" for p in cpp_extension.include_paths()]
    flags = [f for f in _build.cxx_flags() if f != "-fopenmp"]
    subprocess.run(["g++", *flags, *includes, str(HERE / "fast_exp_check.cpp"), "-o", str(exe)], check=True,
                   capture_output=True)
    return exe


@pytest.mark.parametrize("function,stride,limit", [
    ("exp", "61", 1.3),      # 1.26 ulp measured on the full sweep (stride 1)
    ("log1p", "7", 1.55),    # 1.51 ulp measured on every float in [0, 1] (stride 1)
])
def test_accuracy(checker, function, stride, limit):
    args = [str(checker), stride] + ([function] if function != "exp" else [])
    out = subprocess.run(args, check=True, capture_output=True, text=True).stdout.split()
    if out == ["generic"]:
        pytest.skip("this build uses ATen's functions (no AVX2 + FMA)")
    max_ulp, bad = float(out[1]), int(out[3])
    assert bad == 0
    assert max_ulp < limit
