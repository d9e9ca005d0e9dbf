"""fd_jacobian microbenchmarks on CPU (pytest-benchmark): B = 500, x of 3 x 32 x 32, float32; the
perturbation (forward: no gradient flows through it) and the penalty (forward + backward), fused vs
reference vs torch.compile(reference) in the same run, plus peak extra memory.

    python -m pytest -q bench/bench_fd_jacobian.py --benchmark-only
    python -m bench.report .benchmarks/...json
"""
import pytest
import torch

from bench.fd_jacobian_cases import CASES, case_fn, inputs, step
from bench.fd_jacobian_memory import peak_extra_bytes

SIZES = [500]
IMPLS = ["fused", "reference", "compiled"]


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("B", SIZES)
@pytest.mark.parametrize("name", list(CASES))
def test_fd_jacobian(benchmark, name, B, impl):
    fn = case_fn(name, impl)
    args = inputs(name, B)
    step(name, fn, args)  # warm-up (and compilation for torch.compile)
    benchmark.group = f"fd_jacobian {name} B={B}"
    benchmark.extra_info.update(family="fd_jacobian", loss=name, n=B, impl=impl, dtype="float32",
                                threads=torch.get_num_threads())
    if impl != "compiled":  # compiled graphs are measured for time only (a child process would recompile)
        benchmark.extra_info["peak_extra_bytes"] = peak_extra_bytes(name, impl, B)
    benchmark.pedantic(step, args=(name, fn, args), rounds=15, warmup_rounds=2)
