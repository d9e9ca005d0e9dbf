"""softmax_stats (Neural Bayes MIM) microbenchmarks on CPU (pytest-benchmark): forward+backward of
nb_mim, float32, fused vs reference vs torch.compile(reference) in the same run, plus peak extra
memory (fused and reference; compiled graphs are timed only).

    .venv/bin/python -m pytest -q bench/bench_softmax_stats.py --benchmark-only
    python -m bench.report .benchmarks/...json   # ratios table
"""
import pytest
import torch

from bench.softmax_stats_cases import CASES, loss_fn, states, step
from bench.softmax_stats_memory import peak_extra_bytes

IMPLS = ["fused", "reference", "compiled"]


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("case", list(CASES))
def test_softmax_stats(benchmark, case, impl):
    fn = loss_fn(case, impl)
    xs = states(case)
    step(fn, xs)  # warm-up (and compilation for torch.compile)
    benchmark.group = f"softmax_stats nb_mim {case}"
    benchmark.extra_info.update(family="softmax_stats", loss=f"nb_mim {case}", n=xs[0].shape[0], impl=impl,
                                dtype="float32", threads=torch.get_num_threads())
    if impl != "compiled":
        benchmark.extra_info["peak_extra_bytes"] = peak_extra_bytes(case, impl)
    benchmark.pedantic(step, args=(fn, xs), rounds=5, warmup_rounds=1)
