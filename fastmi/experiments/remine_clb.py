"""Choi & Lee's contrastive learning benchmark (CLB, appendix D.3 and Table 2): ResNet-18 trained with each
MI estimator, original vs regularized (lambda in {0.1, 0.01, 0.001}), 5 seeds, MI estimate and test
accuracy in the layout of Table 2 with the paper's numbers beside. The protocol is in
``_benchmark``; CIFAR-10/100 come from --data-dir, and ``--set dataset=fashion-mnist`` (the quick
preset) runs the same protocol on Fashion-MNIST idx files on a CPU.
"""
from __future__ import annotations

import dataclasses
import sys

from . import _benchmark, runner

NAME = "remine_clb"
SUMMARY = "Choi & Lee Table 2, CLB: ResNet-18 with each estimator vs its regularized version (CIFAR / Fashion-MNIST)"
QUICK = dict(_benchmark.QUICK)
REQUIRES = _benchmark.REQUIRES
dataset_names = _benchmark.dataset_names


@dataclasses.dataclass
class Config(_benchmark.BenchConfig):
    """Paper defaults: CIFAR-10, batch 10, 100 epochs (CIFAR-100: batch 100, 150 epochs), 5 seeds."""


def run(cfg: Config, ctx: runner.RunContext) -> dict:
    return _benchmark.run("clb", cfg, ctx)


if __name__ == "__main__":
    raise SystemExit(runner.main(sys.argv[1:], module=sys.modules[__name__]))
