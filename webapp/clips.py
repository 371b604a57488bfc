"""Clips the app can separate with known references: generated demo songs, or MUSDB test tracks.

Demo clips are synthetic songs (`songgen.synthetic.make_track`, the data the shipped DPRNN
was trained on, but songs it never saw) written once to the app's data folder on first
start. With `MUSDB_PATH` set, the MUSDB test tracks are offered instead, and the user picks
the start and length of the excerpt.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from separation import save_audio
from separation.audio import SAMPLE_RATE, parse_seconds
from separation.errors import SeparationError
from separation.tracks import ACCOMPANIMENT, SOURCES, accompaniment, read_mixture, read_source
from songgen.synthetic import make_track

log = logging.getLogger("webapp")

DEMO_SEEDS = (31337, 4242, 777)  # not in the training/validation/test seeds of songgen.synthetic
DEMO_SECONDS = 60.0
# The listening campaign's material: the first this many seconds of every clip (its excerpts are
# cut from their separation). The Separate tab offers what follows, and refuses this part unless
# `APP_SEPARATE_CAMPAIGN_CLIPS` (its output is what the blind samples were cut from).
CAMPAIGN_SECONDS = 30.0


@dataclass(frozen=True)
class Clip:
    id: str  # what the dropdown shows and the ratings store records
    duration: float  # seconds
    mixture: Path | None  # demo clips: a wav file
    track: object | None = None  # MUSDB: a musdb Track


def ensure_demo_clips(folder: str | os.PathLike, seeds=DEMO_SEEDS, seconds: float = DEMO_SECONDS) -> list[Clip]:
    """Write the demo songs (mixture, vocals, accompaniment) if they are not there yet."""
    folder = Path(folder)
    clips = []
    for i, seed in enumerate(seeds):
        d = folder / f"demo-{i + 1}"
        complete = all((d / f"{n}.flac").exists() for n in ("mixture", "vocals", "accompaniment"))
        if not complete or sf.info(d / "mixture.flac").duration < seconds - 0.01:  # an older, shorter demo
            d.mkdir(parents=True, exist_ok=True)
            song = make_track(seed, seconds)
            backing = accompaniment(song[s] for s in ACCOMPANIMENT)
            for name, audio in (
                ("vocals", song["vocals"]),
                ("accompaniment", backing),
                ("mixture", song["mixture"]),
            ):
                # lossless: the stems are multiples of 2**-15, which 24-bit FLAC stores exactly (~3x smaller
                # than wav); written atomically, mixture last: its presence means "complete"
                save_audio(d / f"{name}.flac", torch.from_numpy(audio.T), SAMPLE_RATE, bit_depth="24")
            log.info("wrote demo clip %s", d)
        clips.append(Clip(f"Demo song {i + 1} (synthetic)", sf.info(d / "mixture.flac").duration, d / "mixture.flac"))
    return clips


def musdb_clips(root: str | os.PathLike, is_wav: bool | None = None) -> list[Clip]:
    """The MUSDB test tracks (MUSDB18-HQ wav folders or MUSDB18 stems, detected if not given)."""
    import musdb

    root = Path(root)
    if not (root / "test").is_dir():
        raise SeparationError(f"MUSDB_PATH={root}: no test/ folder")
    if is_wav is None:
        is_wav = any((root / "test").glob("*/mixture.wav"))
    db = musdb.DB(root=str(root), is_wav=is_wav, subsets="test")
    if not db.tracks:
        raise SeparationError(f"MUSDB_PATH={root}: no test tracks found")
    return [Clip(f"MUSDB: {t.name}", float(t.duration), None, t) for t in db.tracks]


MIN_SECONDS = 1.0  # the shortest excerpt or upload the app separates


def check_excerpt(
    start, length, duration: float, *, name: str, min_seconds: float = MIN_SECONDS
) -> tuple[float, float]:
    """`(start, length)` checked against a clip of `duration` seconds, before anything is read:
    a number, not negative, inside the clip, and at least `min_seconds` long where it ends."""
    start = parse_seconds(start, "excerpt's start")
    length = duration - start if length is None else parse_seconds(length, "excerpt's length")
    if start < 0:
        raise SeparationError(f"the excerpt must start at 0 s or later, not {start:g} s")
    if length < min_seconds:
        raise SeparationError(f"the excerpt lasts {length:g} s: it must last at least {min_seconds:g} s")
    if start > duration - min_seconds:
        raise SeparationError(
            f"the excerpt starts at {start:g} s but {name} lasts {duration:.2f} s: start at "
            f"{max(0.0, duration - min_seconds):.2f} s at the latest (an excerpt lasts at least {min_seconds:g} s)"
        )
    return start, min(length, duration - start)


def load_clip(
    clip: Clip, start: float = 0.0, length: float | None = None
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """`(mixture (2, T), {"vocals", "accompaniment"}: (2, T))` of an excerpt, float32 at 44.1 kHz."""
    start, length = check_excerpt(start, length, clip.duration, name=clip.id)
    first = int(start * SAMPLE_RATE)
    frames = -1 if length is None else int(length * SAMPLE_RATE)
    if clip.mixture is not None:
        folder = clip.mixture.parent
        read = {
            n: sf.read(
                folder / f"{n}{clip.mixture.suffix}", start=first, frames=frames, dtype="float32", always_2d=True
            )[0].T
            for n in ("mixture", "vocals", "accompaniment")
        }
    else:
        read = _musdb_excerpt(clip.track, first, frames)
    n = min(x.shape[-1] for x in read.values())
    out = {k: torch.from_numpy(np.ascontiguousarray(v[:, :n])) for k, v in read.items()}
    mix = out.pop("mixture")
    return mix, out


def _musdb_excerpt(track, first: int, frames: int) -> dict[str, np.ndarray]:
    stems = {s: read_source(track, s, first, frames) for s in SOURCES}
    return {
        "mixture": read_mixture(track, first, frames),
        "vocals": stems["vocals"],
        "accompaniment": accompaniment(stems[s] for s in ACCOMPANIMENT),
    }
