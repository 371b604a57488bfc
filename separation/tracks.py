"""MUSDB18 and MUSDB18-HQ tracks: listing, reading sources, the mixture, the accompaniment.

The one place that reads MUSDB, below both `training` and `eval` (and the app's clips):

    tracks = open_musdb(root, is_wav=True, subset="test")
    mix, refs = read_mixture(tracks[0]), load_targets(tracks[0])    # (C, T), (2, C, T)

Tracks are found by `musdb.DB` (its subsets and its official train/validation split). Sources
of MUSDB18-HQ wav files are read with soundfile, which reads only the frames asked for
(musdb itself decodes wav through an ffmpeg subprocess per call, ~50 ms, which would starve a
training loop); MUSDB18 stems (`.stem.mp4`, AAC) go through musdb/stempeg.

Shapes: `(C, T)` float32 per signal, C channels (2), T samples at 44.1 kHz.
"""

from __future__ import annotations

import os
from collections.abc import Iterable

import numpy as np
import soundfile as sf
import torch

from .errors import SeparationError

SOURCES = ("vocals", "drums", "bass", "other")  # MUSDB's stems
ACCOMPANIMENT = ("drums", "bass", "other")  # what the karaoke track is made of
TARGETS = ("vocals", "accompaniment")  # what this project's separators estimate


def accompaniment(stems: Iterable):
    """The sum of drums, bass and other (arrays or tensors of one shape), in a new array."""
    stems = list(stems)
    total = stems[0].copy() if isinstance(stems[0], np.ndarray) else stems[0].clone()
    for stem in stems[1:]:
        total += stem
    return total


def open_musdb(
    root: str | os.PathLike, *, is_wav: bool, subset: str = "train", split: str | None = None, required: bool = True
) -> list:
    """musdb tracks of a subset/split, with a clear error when the folder is not MUSDB (or, with
    `required=False`, an empty list when it is but holds none of that split)."""
    import musdb  # imports stempeg, which needs ffmpeg on PATH: only when MUSDB is really used

    if not os.path.isdir(root):
        raise SeparationError(f"--musdb-root {root}: no such folder")
    db = musdb.DB(root=str(root), is_wav=is_wav, subsets=subset, split=split)
    if len(db.tracks) == 0 and required:
        what = f"{subset}/{split}" if split else subset
        hint = "" if is_wav else " (for MUSDB18-HQ wav folders pass --is-wav)"
        raise SeparationError(f"{root}: no {what} tracks found{hint}")
    return list(db.tracks)


def track_frames(track) -> int:
    if track.is_wav:
        return sf.info(track.sources["vocals"].path).frames
    return int(track.duration * track.rate)


def _read_stream(track, stream, start: int, frames: int) -> np.ndarray:
    """`stream` (a musdb Source, or the Track for its mixture) of a MUSDB18 stem file."""
    track.chunk_start = start / track.rate
    track.chunk_duration = None if frames < 0 else frames / track.rate
    try:
        data = stream.audio.astype(np.float32)
    finally:
        track.chunk_start, track.chunk_duration = 0, None
    if frames >= 0:  # AAC decodes to a few samples more or less than asked: exactly `frames`
        data = np.pad(data[:frames], ((0, max(0, frames - data.shape[0])), (0, 0)))
    return data.T


def read_source(track, source: str, start: int = 0, frames: int = -1) -> np.ndarray:
    """`(C, frames)` float32 of one source of a track (the whole track with frames=-1)."""
    if track.is_wav:
        data, _ = sf.read(track.sources[source].path, start=start, frames=frames, dtype="float32", always_2d=True)
        return data.T
    return _read_stream(track, track.sources[source], start, frames)


def read_mixture(track, start: int = 0, frames: int = -1) -> np.ndarray:
    """`(C, frames)` float32 of the track's own mixture (what a user would separate; in MUSDB18
    a separately encoded stream, not the sum of the decoded stems)."""
    if track.is_wav:
        data, _ = sf.read(track.path, start=start, frames=frames, dtype="float32", always_2d=True)
        return data.T
    return _read_stream(track, track, start, frames)


def load_targets(track) -> torch.Tensor:
    """A whole track's targets `(2, C, T)`: vocals, and accompaniment = drums + bass + other.

    The accompaniment is summed stem by stem into the output, so a 7-minute track needs its
    result and one stem at a time (~0.6 GB), not all four stems and their copies at once.
    """
    vocals = read_source(track, "vocals")
    length = vocals.shape[-1]
    targets = torch.zeros((2, vocals.shape[0], vocals.shape[-1]), dtype=torch.float32)
    targets[0] = torch.from_numpy(vocals)
    for source in ACCOMPANIMENT:
        stem = read_source(track, source)
        length = min(length, stem.shape[-1])  # decoded AAC streams can differ by a few samples
        targets[1, :, :length] += torch.from_numpy(stem[:, :length])
        del stem
    return targets[..., :length]


def load_track(track) -> tuple[torch.Tensor, torch.Tensor]:
    """A whole track: mixture `(2, T)` (the sum of the targets) and targets `(2, 2, T)`."""
    targets = load_targets(track)
    return targets.sum(dim=0), targets
