"""One fastmi run per run folder at a time: an advisory lock on ``<run folder>/.fastmi-run.lock``.

Two processes writing one folder (the same command started twice, a ``--resume`` or ``--overwrite``
while the first still runs) would interleave checkpoints and results. The runner takes the lock before
it writes anything and holds it until the run ends; a second run finds it held and stops with one line
naming the process. The lock is ``fcntl.flock``: the system drops it when its process dies (even
killed), so a crash leaves no stale lock, only the file, which the next run takes over. Where
``fcntl`` is missing (Windows) runs are not locked.
"""
from __future__ import annotations

import os
from pathlib import Path

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None

LOCK_NAME = ".fastmi-run.lock"


class RunFolderBusy(ValueError):
    """Another process holds the run folder's lock."""


def _holder(path: Path) -> str:
    try:
        pid = path.read_text().strip()
    except OSError:
        pid = ""
    return f"process {pid}" if pid else "another process"


def _busy(run_dir: Path, path: Path) -> RunFolderBusy:
    return RunFolderBusy(f"{run_dir} is in use by another fastmi run ({_holder(path)}): wait for it to end, "
                         "or give this one another --out")


def check_free(run_dir: Path) -> None:
    """RunFolderBusy if a live process holds ``run_dir``'s lock; touches nothing (nothing is created)."""
    path = Path(run_dir) / LOCK_NAME
    if fcntl is None or not path.is_file():
        return
    with open(path, "rb") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise _busy(Path(run_dir), path) from None
        fcntl.flock(f, fcntl.LOCK_UN)


class RunLock:
    """The held lock of one run folder (``acquire``); ``release`` ends it and removes the file."""

    def __init__(self, path: Path, handle):
        self.path, self.handle = path, handle

    def release(self) -> None:
        if self.handle is None:
            return
        self.path.unlink(missing_ok=True)   # while still held: no other run can have opened it meanwhile
        self.handle.close()
        self.handle = None


def acquire(run_dir: Path) -> RunLock:
    """Take ``run_dir``'s lock (the folder must exist) and write this process's id into it."""
    path = Path(run_dir) / LOCK_NAME
    if fcntl is None:
        return RunLock(path, None)
    handle = open(path, "a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        raise _busy(Path(run_dir), path) from None
    handle.seek(0)
    handle.truncate()
    handle.write(f"{os.getpid()}\n")
    handle.flush()
    return RunLock(path, handle)
