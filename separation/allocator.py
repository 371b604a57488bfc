"""The C allocator's settings that PyTorch's CPU tensors live in.

PyTorch takes each CPU tensor from `malloc` and returns it on free. glibc serves a request above
its mmap threshold (128 kB at start, adapting up to 32 MB) with a fresh mapping from the kernel,
whose every page costs a page fault and zeroing when first written, and unmaps it on free. A
separation allocates and frees spectrogram-sized tensors (tens to a few hundred MB) for every
segment, so it paid that again and again: 308,000 page faults (1.2 GB of fresh pages) and about
a third of the time of a 60-s DPRNN separation on a 2-core machine (`./run.sh bench
separation_speed --allocator default` shows it). With the thresholds below the same run takes
no page faults after the first segments: freed memory is reused by the next segment.

One arena for every thread: a thread other than the first gets an arena of its own, made of
heaps of at most 64 MB, and a larger request there is mapped afresh whatever the threshold.
The app separates in its server's worker threads; there a 30-s separation still took 60,000 to
140,000 page faults a run with the thresholds alone, and none once warm with one arena.

The cost: the process keeps up to `TRIM_THRESHOLD` of freed memory for reuse instead of
returning it to the system at once. The settings are process-wide; importing `separation`
applies them once (`tune()`), only on glibc, never over the user's own `MALLOC_*` environment
variables, and not at all with `SEPARATION_ALLOCATOR=default`.
"""

from __future__ import annotations

import ctypes
import logging
import os
import platform
import threading

log = logging.getLogger(__name__)

MB = 1 << 20
# Above the largest per-segment tensor (a batch of two 30-s segments' complex stems: 170 MB).
MMAP_THRESHOLD = 256 * MB
TRIM_THRESHOLD = 512 * MB
ARENAS = 1
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD, _M_ARENA_MAX = -1, -3, -8  # glibc's malloc.h

_lock = threading.Lock()
_state: str | None = None  # what `tune()` did, once: "tuned", or why not


def tune() -> str:
    """Apply the thresholds once per process; returns what was done ("tuned", or why not)."""
    global _state
    with _lock:
        if _state is None:
            _state = _apply()
            log.debug("allocator: %s", _state)
        return _state


def _apply() -> str:
    if os.environ.get("SEPARATION_ALLOCATOR", "").lower() == "default":
        return "left as it is (SEPARATION_ALLOCATOR=default)"
    if any(name.startswith("MALLOC_") for name in os.environ):
        return "left as it is (MALLOC_* set in the environment)"
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return "left as it is (not glibc)"
    try:
        libc = ctypes.CDLL("libc.so.6")
        settings = ((_M_MMAP_THRESHOLD, MMAP_THRESHOLD), (_M_TRIM_THRESHOLD, TRIM_THRESHOLD), (_M_ARENA_MAX, ARENAS))
        ok = all(libc.mallopt(option, value) == 1 for option, value in settings)
    except (OSError, AttributeError):
        return "left as it is (no mallopt)"
    return "tuned" if ok else "left as it is (mallopt refused)"
