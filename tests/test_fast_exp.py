"""csrc/cpu/fast_exp.h (the vector exp of the critic_lse CPU kernels) against double-precision
exp: within 2 ulp on a strided sweep of every float bit pattern, and the special values."""
import shutil
import subprocess
from pathlib import Path

import pytest
from torch.utils import cpp_extension

from fastmi import _build

HERE = Path(__file__).resolve().parent


@pytest.mark.skipif(shutil.which("g++") is None, reason="g++ not found")
def test_fast_exp_accuracy(tmp_path):
    exe = tmp_path / "fast_exp_check"
    includes = [f"-I{p}" for p in cpp_extension.include_paths()]
    flags = [f for f in _build.cxx_flags() if f != "-fopenmp"]
    subprocess.run(["g++", *flags, *includes, str(HERE / "fast_exp_check.cpp"), "-o", str(exe)], check=True,
                   capture_output=True)
    out = subprocess.run([str(exe), "61"], check=True, capture_output=True, text=True).stdout.split()
    if out == ["generic"]:
        pytest.skip("this build uses ATen's exp (no AVX2 + FMA)")
    max_ulp, bad = float(out[1]), int(out[3])
    assert bad == 0
    assert max_ulp < 1.3  # 1.26 measured on the full sweep (stride 1)
