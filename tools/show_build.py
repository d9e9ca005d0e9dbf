"""Run a build command, show its progress in a few lines, keep its whole output in a log file.

    python tools/show_build.py build/setup.log -- python -m pip install -v --no-build-isolation -e .

Shown: fastmi's own lines ("fastmi: compiling ...") and one line per compiled file (from ninja's
"[k/N] c++ ... -c <source>" lines), with the elapsed time; on failure, the log's last 60 lines.
Exit status: the command's.
"""
from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path

NINJA = re.compile(r"^\s*\[(\d+)/(\d+)\] .* -c (\S+)")


def main(argv: list[str]) -> int:
    log_path, cmd = Path(argv[0]), argv[argv.index("--") + 1:]
    log_path.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1)
        for line in proc.stdout:
            log.write(line)
            stamp = f"[{time.perf_counter() - t0:4.0f} s]"
            m = NINJA.match(line)
            if m:
                print(f"  {stamp} [{m.group(1)}/{m.group(2)}] {Path(m.group(3)).name}", flush=True)
            elif line.strip().startswith("fastmi:"):   # pip -v indents the build's output
                print(f"  {stamp} {line.strip()}", flush=True)
        code = proc.wait()
    if code != 0:
        tail = log_path.read_text().splitlines()[-60:]
        print("\n".join(tail), file=sys.stderr)
        print(f"build failed (exit {code}); the whole output is in {log_path}", file=sys.stderr)
    return code


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
