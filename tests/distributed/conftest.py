"""The spawned ranks, shared by the distributed tests: one spawn per world size for the session."""
import os
import sys

import pytest

from helpers import available

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import dist_worker as W  # noqa: E402


@pytest.fixture(scope="session")
def spawned():
    """spawned(world_size) -> [what every rank computed] (dist_worker.everything), computed once."""
    cache = {}

    def get(world_size: int) -> list:
        if world_size not in cache:
            skip = tuple(c.id for c in W.CASES if c.backend == "triton" and not available("separable", "triton"))
            cache[world_size] = W.spawn(W.everything, world_size, skip)
        return cache[world_size]

    return get
