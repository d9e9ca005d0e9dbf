"""The MI staircase of Poole et al.'s Gaussian benchmark, as Choi & Lee use it (appendix D.4)."""
from __future__ import annotations

import numpy as np


def mi_staircase(levels=(2.0, 4.0, 6.0, 8.0, 10.0), steps_per_level: int = 4000) -> np.ndarray:
    """Target MI (nats) for each training step: ``levels`` held for ``steps_per_level`` steps each.

    With the default levels this equals the authors' ``round(linspace(0.5, 5.5 - 1e-9, 20000)) * 2``
    except at the very first step, which that expression rounds to 0 (``first_step_zero`` in
    ``remine_gaussian`` restores it).
    """
    levels = [float(v) for v in levels]
    if not levels or any(v < 0 for v in levels):
        raise ValueError(f"mi_staircase: levels must be non-negative numbers, got {levels!r}")
    if not isinstance(steps_per_level, int) or steps_per_level < 1:
        raise ValueError(f"mi_staircase: steps_per_level must be a positive int, got {steps_per_level!r}")
    return np.repeat(np.asarray(levels, dtype=np.float64), steps_per_level)
