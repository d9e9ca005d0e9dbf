"""fastmi.experiments.run_lock: one run per run folder at a time; a second one (the same command, a
--resume or an --overwrite while the first runs) stops with one line and touches nothing."""
import multiprocessing
import os

import pytest

from fastmi.experiments import run_lock, runner

pytest.importorskip("fcntl")

ARGS = ["remine_onehot", "--quick", "--set", "steps=3", "--set", "batches=4", "--set", "sweep_targets=0",
        "--no-progress"]


def test_a_held_lock_stops_a_second_holder_and_is_gone_after_release(tmp_path):
    lock = run_lock.acquire(tmp_path)
    assert (tmp_path / run_lock.LOCK_NAME).read_text().strip() == str(os.getpid())
    with pytest.raises(run_lock.RunFolderBusy, match=f"in use by another fastmi run \\(process {os.getpid()}\\)"):
        run_lock.acquire(tmp_path)
    with pytest.raises(run_lock.RunFolderBusy):
        run_lock.check_free(tmp_path)
    lock.release()
    assert not (tmp_path / run_lock.LOCK_NAME).exists()
    run_lock.check_free(tmp_path)
    run_lock.acquire(tmp_path).release()


def _hold_and_die(path, ready):
    run_lock.acquire(path)
    ready.set()
    os._exit(0)          # killed without releasing: the file stays, the lock does not


def test_a_dead_holder_leaves_no_stale_lock(tmp_path):
    ctx = multiprocessing.get_context("fork")
    ready = ctx.Event()
    proc = ctx.Process(target=_hold_and_die, args=(tmp_path, ready))
    proc.start()
    proc.join(60)
    assert ready.is_set() and (tmp_path / run_lock.LOCK_NAME).exists()
    run_lock.check_free(tmp_path)
    run_lock.acquire(tmp_path).release()


@pytest.mark.parametrize("extra", [[], ["--resume"], ["--overwrite"]])
def test_a_run_into_a_busy_folder_is_one_line_and_changes_nothing(tmp_path, capsys, monkeypatch, extra):
    monkeypatch.delenv("FASTMI_DEBUG", raising=False)
    assert runner.main(ARGS + ["--out", str(tmp_path)]) == 0
    run_dir = tmp_path / "remine_onehot-quick-seed0"
    assert not (run_dir / run_lock.LOCK_NAME).exists()          # released at the end
    before = {p.name: p.read_bytes() for p in run_dir.iterdir() if p.is_file()}
    capsys.readouterr()
    lock = run_lock.acquire(run_dir)                            # another process is writing the folder
    try:
        with pytest.raises(SystemExit) as e:
            runner.main(ARGS + ["--out", str(tmp_path)] + extra)
    finally:
        lock.release()
    err = capsys.readouterr().err
    assert e.value.code == 2 and "in use by another fastmi run" in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1
    assert {p.name: p.read_bytes() for p in run_dir.iterdir() if p.is_file()} == before
