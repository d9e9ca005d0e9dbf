"""fastmi demo (make demo): its sections run with tiny settings, its options are checked, and its
verdict lines say what the results say."""
import pytest

from fastmi import demo, demo_kernels, demo_large_batch


def test_tiny_demo_runs(capsys, tmp_path):
    assert demo.main(["--sizes", "64", "--no-compile", "--large-n", "0", "--mi-steps", "3", "--batch", "16",
                      "--eval-n", "32", "--experiments", "", "--runs", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "Same values as plain PyTorch" in out and "speed-up" in out and "MI estimates" in out
    assert "Paper experiments" not in out and "load average" in out
    for name in demo_kernels.LOSSES:
        assert name in out


def test_fused_and_plain_agree_in_the_table():
    s = demo_kernels.scores(96)
    for name in demo_kernels.LOSSES:
        dl, dg = demo_kernels.agreement(name, s)
        assert dl < 1e-5 and dg < 1e-6


@pytest.mark.parametrize("argv,words", [
    (["--experiments", "nope"], "unknown nope"),
    (["--large-n", "lots"], "--large-n must be auto or a number"),
    (["--threads", "0"], "--threads >= 1"),
])
def test_bad_options_are_one_line(argv, words, capsys):
    with pytest.raises(SystemExit) as e:
        demo.main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert e.value.code == 2 and len(err) == 1 and words in err[0]


def test_large_batch_is_the_smallest_the_machine_cannot_hold_densely():
    gib = 2**30
    n = demo_large_batch.auto_batch(23.2, 23.5 * gib)
    assert n % 1000 == 0 and 23.2 * n * n > 23.5 * gib and 23.2 * (n - 1000) ** 2 <= 23.5 * gib
    assert demo_large_batch.auto_batch(23.2, 1 * gib) == demo_large_batch.AUTO_MIN
    assert demo_large_batch.auto_batch(23.2, 1024 * gib) == demo_large_batch.AUTO_MAX


def test_verdicts_follow_the_results():
    sweep = {"-2": {"final_second": -2.05, "final_mi": 2.0}, "0": {"final_second": 0.01, "final_mi": 2.06},
             "2": {"final_second": 2.14, "final_mi": 2.01}}
    assert ": reproduced" in demo._onehot_verdict({"target_sweep": sweep})
    sweep["2"]["final_second"] = 0.5
    assert "NOT reproduced" in demo._onehot_verdict({"target_sweep": sweep})
    good = {"datasets": {"moons": {"ari": [1.0]}, "blobs": {"ari": [0.995]}}}
    assert ": reproduced" in demo._dms_verdict(good)
    good["datasets"]["blobs"]["ari"] = [0.6]
    assert "NOT reproduced" in demo._dms_verdict(good)
    assert set(demo.DEMO_RUNS) == {"remine_onehot", "nb_dms_2d"}
