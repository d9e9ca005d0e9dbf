"""fastmi demo (make demo): its sections run with tiny settings, and --experiments is checked."""
import pytest

from fastmi import demo


def test_tiny_demo_runs(capsys):
    assert demo.main(["--steps", "3", "--batch", "16", "--sizes", "32", "--large-n", "0", "--experiments", ""]) == 0
    out = capsys.readouterr().out
    assert "MI estimation" in out and "speed-up" in out and "Paper experiment" not in out


def test_unknown_demo_experiment_is_named():
    with pytest.raises(SystemExit):
        demo.main(["--steps", "1", "--batch", "8", "--sizes", "16", "--large-n", "0", "--experiments", "nope"])
    assert set(demo.DEMO_RUNS) >= {"remine_onehot", "nb_dms_2d"}
