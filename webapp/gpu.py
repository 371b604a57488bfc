"""Hugging Face ZeroGPU: a GPU that exists only inside functions decorated with `spaces.GPU`.

On a ZeroGPU Space (the `spaces` package is there and `SPACES_ZERO_GPU` is set), CUDA is
available only while a `@spaces.GPU(duration=...)` function runs; `duration` (seconds, or a
function of the call's arguments) is what the Space asks the scheduler for, and a shorter
request is served sooner. Elsewhere `spaces.GPU` returns the function unchanged, and without
the package nothing is wrapped: the app runs the same on a laptop, a CPU Space or a GPU Space.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable

log = logging.getLogger("webapp")

# A separation's GPU time on a shared GPU, measured on an H100 (a 3-minute song: DPRNN 0.22 s,
# umxhq 0.66 s) with a wide margin for ZeroGPU's own start-up and the metrics.
BASE_SECONDS = 20
PER_MINUTE_PER_MODEL = 6
MAX_SECONDS = 300


def gpu_seconds(audio_seconds: float, models: int) -> int:
    """The duration to ask ZeroGPU for: separating `audio_seconds` with `models` models."""
    need = BASE_SECONDS + PER_MINUTE_PER_MODEL * max(1, models) * audio_seconds / 60
    return int(min(MAX_SECONDS, math.ceil(need)))


def zero_gpu() -> bool:
    """Running on ZeroGPU hardware (what `spaces` itself reads)."""
    return os.environ.get("SPACES_ZERO_GPU", "").strip().lower() in ("1", "t", "true")


def spaces_module():
    """The `spaces` package, or None where it is not installed."""
    try:
        import spaces
    except ImportError:
        return None
    return spaces


def on_gpu(fn: Callable, duration: Callable[..., int], spaces=None) -> Callable:
    """`fn` wrapped in `spaces.GPU(duration=duration)` when the `spaces` package is installed
    (a no-op outside ZeroGPU, by that package's design); `fn` itself otherwise."""
    spaces = spaces if spaces is not None else spaces_module()
    if spaces is None:
        return fn
    log.info("spaces package present: separations run inside spaces.GPU (ZeroGPU when the Space has it)")
    return spaces.GPU(duration=duration)(fn)
