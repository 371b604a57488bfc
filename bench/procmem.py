"""Peak memory of a command and all its child processes, read from /proc (Linux).

    peak, code = run_measured([sys.executable, "-m", "eval", ...])

`ru_maxrss` of the children reports the largest single process only; parallel workers
(`--jobs 2`) share the machine's memory, so what matters is the peak of their *sum*,
sampled here every 20 ms over the whole process tree.
"""

from __future__ import annotations

import os
import subprocess
import time

PAGE = os.sysconf("SC_PAGE_SIZE")


def process_tree(pid: int) -> list[int]:
    """`pid` and all its descendants that are alive now."""
    found = [pid]
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children") as f:
                for child in f.read().split():
                    found += process_tree(int(child))
    except OSError:  # the process ended while we looked
        pass
    return found


def rss(pid: int) -> int:
    """Resident bytes of one process (0 if it is gone)."""
    try:
        with open(f"/proc/{pid}/statm") as f:
            return int(f.read().split()[1]) * PAGE
    except (OSError, IndexError, ValueError):
        return 0


def tree_rss(pid: int) -> int:
    return sum(rss(p) for p in process_tree(pid))


def run_measured(cmd: list[str], *, interval: float = 0.02, timeout: float | None = None, **popen) -> tuple[int, int]:
    """Run `cmd` to the end; return (peak resident bytes of its process tree, exit status)."""
    proc = subprocess.Popen(cmd, **popen)
    peak, deadline = 0, None if timeout is None else time.monotonic() + timeout
    while proc.poll() is None:
        peak = max(peak, tree_rss(proc.pid))
        if deadline is not None and time.monotonic() > deadline:
            proc.kill()
            proc.wait()
            raise TimeoutError(f"{cmd[:3]}... ran over {timeout} s")
        time.sleep(interval)
    return peak, proc.returncode
