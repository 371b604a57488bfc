"""Music source separation: vocals and accompaniment (karaoke) from any song.

from separation import Separator
stems = Separator.from_name("dprnn").separate(waveform, sample_rate)
"""

from . import allocator

# Before anything here imports torch or starts a thread: glibc gives each thread its arena at the
# thread's first allocation, so the one-arena setting reaches only threads that come after it.
allocator.tune()

from .audio import SAMPLE_RATE, load_audio, read_audio, save_audio  # noqa: E402
from .errors import SeparationError, UntrainedModelWarning  # noqa: E402
from .separator import Separator  # noqa: E402

__version__ = "0.1.0"

__all__ = [
    "SAMPLE_RATE",
    "Separator",
    "SeparationError",
    "UntrainedModelWarning",
    "load_audio",
    "read_audio",
    "save_audio",
]
