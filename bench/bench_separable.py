"""separable microbenchmarks on CPU (pytest-benchmark): forward+backward, float32, d = 128, fused
(the n x n matrix never exists) vs the dense reference (x @ y.T then InfoNCE) eager and
torch.compile'd, in the same run, plus peak extra memory.

    python -m pytest -q bench/bench_separable.py --benchmark-only
"""
import pytest
import torch

from bench.memory import peak_extra_bytes
from bench.separable_cases import CASES, inputs, loss_fn, step

SIZES = [2048, 8192]
IMPLS = ["fused", "reference", "compiled"]


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("name", list(CASES))
def test_separable(benchmark, name, n, impl):
    fn = loss_fn(name, impl)
    xy = inputs(n)
    step(fn, xy)  # warm-up (and compilation for torch.compile)
    benchmark.group = f"separable {name} n={n}"
    benchmark.extra_info.update(family="separable", loss=name, n=n, d=xy[0].shape[1], impl=impl, dtype="float32",
                                threads=torch.get_num_threads())
    if impl != "compiled":  # compiled graphs are measured for time only (a child process would recompile)
        benchmark.extra_info["peak_extra_bytes"] = peak_extra_bytes(name, impl, n, family="separable")
    benchmark.pedantic(step, args=(fn, xy), rounds=7 if n <= 2048 else 5, warmup_rounds=1)
