"""Microbenchmarks of the estimators added beyond the four papers (bench/estimators_cases.py), on CPU
with pytest-benchmark: forward + backward, float32, fused vs fastmi's reference backend vs the plain
PyTorch of the papers' code, in the same run, plus peak extra memory. The fused and plain values
are checked to agree before timing.

    python -m pytest -q bench/bench_estimators.py --benchmark-only --benchmark-json=bench/results/<file>.json
"""
import pytest
import torch

from bench.estimators_cases import CASES, inputs_for, loss_fn, step
from bench.memory import peak_extra_bytes

SIZES = [1024, 4096]
IMPLS = ["fused", "reference", "plain"]


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("name", list(CASES))
def test_estimators(benchmark, name, n, impl):
    fn = loss_fn(name, impl)
    data = inputs_for(name, n)
    want = loss_fn(name, "plain")(*data).loss
    got = fn(*data).loss
    torch.testing.assert_close(got.detach(), want.detach(), rtol=2e-3, atol=2e-3)
    step(fn, data)  # warm-up
    benchmark.group = f"estimators {name} n={n}"
    benchmark.extra_info.update(family="estimators", loss=name, n=n, impl=impl, dtype="float32",
                                threads=torch.get_num_threads())
    benchmark.extra_info["peak_extra_bytes"] = peak_extra_bytes(name, impl, n, family="estimators")
    benchmark.pedantic(step, args=(fn, data), rounds=5, warmup_rounds=1)
