"""The prepared GPU script (bench/gpu_check.sh) and the GPU benchmark driver (bench/gpu.py), here
without a GPU: their dry runs, argument errors, and that they plan what the issue asks for."""
from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "bench" / "gpu_check.sh"


def run_script(*args, check_rc=None):
    proc = subprocess.run(["bash", str(SCRIPT), *args], cwd=ROOT, capture_output=True, text=True, timeout=60)
    if check_rc is not None:
        assert proc.returncode == check_rc, proc.stdout + proc.stderr
    return proc


def stage_limits(out: str) -> dict[str, int]:
    return {m.group(1): int(m.group(2)) for m in re.finditer(r"^\[(\w+)\] at most (\d+)s", out, re.M)}


def test_dry_run_plans_every_stage_within_the_budget(tmp_path):
    out = run_script("--dry-run", "--out", str(tmp_path / "res"), check_rc=0).stdout
    limits = stage_limits(out)
    assert list(limits) == ["env", "install", "tests", "fused", "large", "aot"]
    assert sum(limits.values()) <= 440 < 8 * 60  # worst case: every stage at its limit
    assert "pip install --no-build-isolation --no-deps --no-index -e ." in out
    assert re.search(r"pytest -q -m gpu\\ or\\ aot tests", out)
    assert "--cpu-sizes --dtypes float32 bfloat16 --impls fused reference" in out
    assert "--families separable --sizes 1048576 --cases infonce --dtypes bfloat16 --impls fused" in out
    assert "aot_report --out " + str(tmp_path / "res") in out
    assert "[compiled] skipped" in out  # the default budget has no room for torch.compile in the worst case
    assert not (tmp_path / "res").exists()  # a dry run creates nothing


def test_dry_run_with_more_budget_runs_the_compiled_baselines():
    out = run_script("--dry-run", "--budget", "600", check_rc=0).stdout
    limits = stage_limits(out)
    assert limits["compiled"] > 0 and sum(limits.values()) <= 600
    assert "--impls compiled" in out


@pytest.mark.parametrize("args, message", [
    (["--budget", "abc"], "--budget must be a whole number"),
    (["--budget", "60"], "at least 120"),
    (["--frobnicate"], "unknown argument"),
    (["--out"], "--out needs a folder"),
])
def test_bad_arguments_exit_2_with_one_line(args, message):
    proc = run_script(*args, check_rc=2)
    assert message in proc.stderr and len(proc.stderr.strip().splitlines()) == 1 and proc.stdout == ""


def test_refuses_a_results_folder_that_is_not_empty(tmp_path):
    (tmp_path / "summary.txt").write_text("finished results")
    proc = run_script("--out", str(tmp_path), check_rc=2)
    assert "not empty" in proc.stderr
    assert (tmp_path / "summary.txt").read_text() == "finished results"


def gpu_py(capsys, *args) -> tuple[int, str, str]:
    """bench/gpu.py's main() in this process: (exit code, stdout, stderr)."""
    from bench import gpu

    try:
        rc = gpu.main(list(args))
    except SystemExit as exc:  # --help
        rc = exc.code
    out = capsys.readouterr()
    return rc, out.out, out.err


def test_gpu_py_help_and_dry_run_import_every_family(capsys):
    assert gpu_py(capsys, "--help")[0] == 0
    rc, out, err = gpu_py(capsys, "--dry-run")
    assert rc == 0, err
    lines = out.splitlines()
    for family in ("critic_lse", "separable", "fd_jacobian", "mmd_imq", "softmax_stats"):
        assert any(line.startswith(f"{family}: sizes") for line in lines), out
    assert "separable: large batch n = 1048576, bfloat16, infonce, fused only" in lines


def test_gpu_py_cpu_sizes_are_the_cpu_benchmarks(capsys):
    import importlib

    rc, out, err = gpu_py(capsys, "--dry-run", "--cpu-sizes")
    assert rc == 0, err
    for family in ("critic_lse", "separable", "mmd_imq", "fd_jacobian"):
        sizes = importlib.import_module(f"bench.bench_{family}").SIZES
        assert f"{family}: sizes {sizes}," in out
    assert "softmax_stats: sizes [500]," in out  # bench_softmax_stats.py: the cases at their batch of 500
    assert "large batch" not in out


def test_gpu_py_rejects_an_unknown_family_in_one_line(capsys):
    rc, out, err = gpu_py(capsys, "--dry-run", "--families", "nope")
    assert rc == 2 and out == "" and len(err.strip().splitlines()) == 1 and "nope" in err


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="checks the no-GPU path")
def test_gpu_py_without_a_gpu_is_one_line_and_exit_2(capsys):
    rc, out, err = gpu_py(capsys, "--families", "critic_lse")
    assert rc == 2 and err.strip() == "bench/gpu.py: no CUDA device"


STUB_PYTHON = """#!/usr/bin/env bash
# stands in for the device machine's python3: logs each call, fails none
echo "$*" >> "$STUB_LOG"
case "$*" in
  *"import xdist"*) exit 1 ;;
  *"bench.aot_report --out "*) echo "{}" > "${@: -1}" ;;
  *"--junitxml="*) echo "1 passed in 0.1s" ;;
esac
exit 0
"""


def test_real_run_with_stub_tools_fills_the_folder(tmp_path):
    """The non-dry path end to end, with python3 and nvidia-smi replaced by stubs: every stage runs
    (shell functions included), in order, and the folder gets the log files and the summary."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    py = bin_dir / "python3"
    py.write_text(STUB_PYTHON)
    smi = bin_dir / "nvidia-smi"
    smi.write_text("#!/usr/bin/env bash\necho 9.0\n")
    for f in (py, smi):
        f.chmod(0o755)
    res, log = tmp_path / "res", tmp_path / "calls.log"
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "STUB_LOG": str(log), "HOME": str(tmp_path)}
    proc = subprocess.run(["bash", str(SCRIPT), "--out", str(res), "--python", str(py)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    calls = log.read_text().splitlines()
    expected = ["-m pip install --no-build-isolation --no-deps --no-index -e .", "-m fastmi info",
                "-m pytest -q -m gpu or aot tests", "bench/gpu.py --cpu-sizes --dtypes float32 bfloat16 --impls fused "
                "reference", "bench/gpu.py --families separable --sizes 1048576", "bench/gpu.py --cpu-sizes --dtypes "
                "float32 bfloat16 --impls compiled", "-m bench.aot_report --out"]
    positions = [next(i for i, c in enumerate(calls) if want in c) for want in expected]
    assert positions == sorted(positions), calls
    files = sorted(p.name for p in res.iterdir())
    assert {"env.txt", "install.log", "pytest.log", "bench.log", "aot-resources.json", "summary.txt"} <= set(files)
    assert len(files) <= 8 and all(p.is_file() for p in res.iterdir())
    summary = (res / "summary.txt").read_text()
    for stage in ("env", "install", "tests", "fused", "large", "compiled", "aot"):
        assert re.search(rf"^  {stage} rc 0, \d+ s$", summary, re.M), summary
    assert "pytest: 1 passed in 0.1s" in summary
    assert "TORCH_CUDA_ARCH_LIST=9.0" in (res / "install.log").read_text()
