"""Files that appear whole or not at all, with the permissions of ordinary new files.

    atomic_write(path, lambda tmp: tmp.write_text(...))   # also audio, JSON, CSV

A file is written beside its final name and renamed over it, so an interrupted run (Ctrl-C,
a killed job, a full disk) never leaves a half-written result that looks finished.
"""

from __future__ import annotations

import functools
import os
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path

_lock = threading.Lock()


@functools.cache
def umask() -> int:
    """The process umask, read once: from /proc on Linux (reading it anywhere else means
    setting it, which must not race with other threads, hence the lock and the cache)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    with _lock:
        mask = os.umask(0)
        os.umask(mask)
    return mask


def file_mode() -> int:
    return 0o666 & ~umask()


def dir_mode() -> int:
    return 0o777 & ~umask()


def atomic_write(path: str | os.PathLike, write: Callable[[Path], None]) -> Path:
    """Call `write(tmp)` on a temporary file in the target's folder, then rename it to `path`.

    The temporary name keeps the suffix (writers such as soundfile pick the format from it);
    the file gets ordinary permissions (mkstemp makes 0600 files). On any error the temporary
    file is removed and `path` is left as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}-", suffix=path.suffix)
    os.close(fd)
    tmp = Path(name)
    try:
        write(tmp)
        os.chmod(tmp, file_mode())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write(path, lambda tmp: tmp.write_text(text))
