"""The kernel contracts are stated once per language: the C++ enums (csrc/<family>.h, or the kernel
file where only that file reads them) and the Python constants (fastmi/<family>/...). These tests
read the C++ source and check the two statements agree, so neither can drift."""
import re
from pathlib import Path

import pytest

from fastmi.critic_lse import contract
from fastmi.fd_jacobian import ops as fd_ops
from fastmi.separable import ops as separable_ops

CSRC = Path(__file__).resolve().parents[2] / "csrc"


def cpp_enum(path: Path, name: str) -> dict:
    """{member: value} of ``enum name { ... }`` in a C++ file (implicit values count up from the last)."""
    text = path.read_text()
    found = re.search(r"enum\s+" + name + r"\s*\{([^}]*)\}", text)
    assert found, f"enum {name} not found in {path}"
    out, value = {}, -1
    for item in found.group(1).split(","):
        item = item.strip()
        if not item:
            continue
        key, _, val = (s.strip() for s in item.partition("="))
        value = int(val) if val else value + 1
        out[key] = value
    return out


def test_critic_lse_statistics_order():
    stats = cpp_enum(CSRC / "critic_lse.h", "Stat")
    assert [stats[f"STAT_{s}"] for s in contract.STATS] == list(range(contract.NUM_STATS))
    assert stats["NUM_STATS"] == contract.NUM_STATS


def test_critic_lse_negative_modes():
    modes = cpp_enum(CSRC / "critic_lse.h", "NegMode")
    assert [modes[f"NEG_{m.upper()}"] for m in contract.NEGATIVES] == [0, 1, 2]


def test_separable_exclusions():
    excl = cpp_enum(CSRC / "cpu" / "separable.cpp", "Exclude")
    assert excl == {"EXCL_NONE": separable_ops.EXCLUDE_NONE, "EXCL_DIAG": separable_ops.EXCLUDE_DIAG,
                    "EXCL_POSITIVE": separable_ops.EXCLUDE_POSITIVE}


def test_fd_jacobian_noise_kinds():
    noise = cpp_enum(CSRC / "fd_jacobian.h", "Noise")
    assert noise == {f"NOISE_{k.upper()}": v for k, v in fd_ops.NOISE.items()}


def test_parser_reads_explicit_and_implicit_values(tmp_path):
    f = tmp_path / "x.h"
    f.write_text("enum E { A = 2, B, C = 7, D };")
    assert cpp_enum(f, "E") == {"A": 2, "B": 3, "C": 7, "D": 8}
    with pytest.raises(AssertionError):
        cpp_enum(f, "Missing")
