"""Music source separation: vocals and accompaniment (karaoke) from any song.

from separation import Separator
stems = Separator.from_name("dprnn").separate(waveform, sample_rate)
"""

from .audio import SAMPLE_RATE, load_audio, read_audio, save_audio
from .errors import SeparationError, UntrainedModelWarning
from .separator import Separator

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
