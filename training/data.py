"""MUSDB18(-HQ) for training: random augmented chunks, and whole tracks for validation.

Tracks are found by `musdb.DB` (its subsets and its official train/validation split). Chunks
of MUSDB18-HQ wav files are then read with soundfile, which reads only the frames it needs;
musdb itself decodes wav through an ffmpeg subprocess per call (~50 ms), which would starve a
CPU training loop. MUSDB18 stems (.mp4) go through musdb/stempeg as usual.

Augmentation, after Open-Unmix's `train.py` and Uhlich et al. 2017:
- each source from a random track at a random position ("remixing", `remix`),
- a random gain per source (`gain`), a random left/right swap per source (`channel_swap`),
- a controlled share of chunks with silent vocals (`silent_vocals`): the seed found ~65% of
  its chunks vocal-free; with a rate set, a chunk either has its vocals muted on purpose, or
  its vocals are drawn (up to 10 tries) from a position where the singer is singing.

The mixture of a training chunk is always the sum of its (augmented) sources.
Every chunk is a pure function of (seed, epoch, index): a resumed run sees the same data.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import soundfile as sf
import torch
from torch.utils.data import Dataset

from separation.errors import SeparationError

SOURCES = ("vocals", "drums", "bass", "other")
TARGETS = ("vocals", "accompaniment")


@dataclass(frozen=True)
class DataConfig:
    seconds: float = 6.0
    samples_per_track: int = 64
    remix: bool = True
    gain: tuple[float, float] = (0.25, 1.25)
    channel_swap: bool = True
    silent_vocals: float | None = None  # None: whatever the random positions give
    vocal_threshold_db: float = -40.0  # a chunk "has vocals" when their RMS is above this


def open_musdb(root: str | os.PathLike, *, is_wav: bool, subset: str = "train", split: str | None = None) -> list:
    """musdb tracks of a subset/split, with a clear error when the folder is not MUSDB."""
    import musdb

    if not os.path.isdir(root):
        raise SeparationError(f"--musdb-root {root}: no such folder")
    db = musdb.DB(root=str(root), is_wav=is_wav, subsets=subset, split=split)
    if len(db.tracks) == 0:
        what = f"{subset}/{split}" if split else subset
        hint = "" if is_wav else " (for MUSDB18-HQ wav folders pass --is-wav)"
        raise SeparationError(f"{root}: no {what} tracks found{hint}")
    return list(db.tracks)


def track_frames(track) -> int:
    if track.is_wav:
        return sf.info(track.sources["vocals"].path).frames
    return int(track.duration * track.rate)


def read_source(track, source: str, start: int = 0, frames: int = -1) -> np.ndarray:
    """`(C, frames)` float32 of one source of a track (the whole track with frames=-1)."""
    if track.is_wav:
        data, _ = sf.read(track.sources[source].path, start=start, frames=frames, dtype="float32", always_2d=True)
    else:
        track.chunk_start = start / track.rate
        track.chunk_duration = None if frames < 0 else frames / track.rate
        try:
            data = track.sources[source].audio.astype(np.float32)
        finally:
            track.chunk_start, track.chunk_duration = 0, None
        if frames >= 0:  # AAC decodes to a few samples more or less than asked: exactly `frames`
            data = np.pad(data[:frames], ((0, max(0, frames - data.shape[0])), (0, 0)))
    return data.T


def load_targets(track) -> torch.Tensor:
    """A whole track's targets `(2, C, T)`: vocals, and accompaniment = drums + bass + other.

    The accompaniment is summed stem by stem into the output, so a 7-minute track needs its
    result and one stem at a time (~0.6 GB), not all four stems and their copies at once.
    """
    vocals = read_source(track, "vocals")
    length = vocals.shape[-1]
    targets = None
    for source in ("drums", "bass", "other"):
        stem = read_source(track, source)
        length = min(length, stem.shape[-1])  # decoded AAC streams can differ by a few samples
        if targets is None:
            targets = torch.empty((2, vocals.shape[0], vocals.shape[-1]), dtype=torch.float32)
            targets[0] = torch.from_numpy(vocals)
            targets[1, :, :length] = torch.from_numpy(stem[:, :length])
        else:
            targets[1, :, :length] += torch.from_numpy(stem[:, :length])
        del stem
    return targets[..., :length]


def load_track(track) -> tuple[torch.Tensor, torch.Tensor]:
    """A whole track: mixture `(2, T)` (the sum of the targets) and targets `(2, 2, T)`."""
    targets = load_targets(track)
    return targets.sum(dim=0), targets


class ChunkDataset(Dataset):
    """Random augmented training chunks: `(mixture (2, T), targets (2, 2, T))`."""

    def __init__(self, tracks: list, cfg: DataConfig = DataConfig(), *, seed: int = 0, sample_rate: int = 44100):
        if not tracks:
            raise SeparationError("no training tracks")
        self.tracks, self.cfg, self.seed = tracks, cfg, seed
        self.frames = int(cfg.seconds * sample_rate)
        self.lengths = [track_frames(t) for t in tracks]
        short = [t.name for t, n in zip(tracks, self.lengths) if n < self.frames]
        if short:
            raise SeparationError(f"tracks shorter than the {cfg.seconds}-s chunks: {', '.join(short[:3])}")
        self.epoch = 0  # set by the training loop before each epoch

    def __len__(self) -> int:
        return len(self.tracks) * self.cfg.samples_per_track

    def _chunk(self, rng: np.random.Generator, track_index: int, source: str) -> np.ndarray:
        start = int(rng.integers(0, self.lengths[track_index] - self.frames + 1))
        return read_source(self.tracks[track_index], source, start, self.frames)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        cfg = self.cfg
        rng = np.random.default_rng([self.seed, self.epoch, index])
        home = index // cfg.samples_per_track
        mute_vocals = cfg.silent_vocals is not None and rng.random() < cfg.silent_vocals
        stems = {}
        for source in SOURCES:
            track = int(rng.integers(len(self.tracks))) if cfg.remix else home
            if source == "vocals" and mute_vocals:
                stems[source] = np.zeros((2, self.frames), dtype=np.float32)
                continue
            audio = self._chunk(rng, track, source)
            if source == "vocals" and cfg.silent_vocals is not None:
                for _ in range(10):
                    rms = float(np.sqrt(np.mean(audio**2)) + 1e-12)
                    if 20 * np.log10(rms) > cfg.vocal_threshold_db:
                        break
                    audio = self._chunk(rng, int(rng.integers(len(self.tracks))) if cfg.remix else home, source)
            audio = audio * rng.uniform(*cfg.gain)
            if cfg.channel_swap and rng.random() < 0.5:
                audio = audio[::-1]
            stems[source] = audio
        vocals = torch.from_numpy(np.ascontiguousarray(stems["vocals"]))
        accompaniment = torch.from_numpy(np.ascontiguousarray(stems["drums"] + stems["bass"] + stems["other"]))
        targets = torch.stack([vocals, accompaniment]).float()
        return targets.sum(dim=0), targets


def epoch_batches(n_items: int, batch_size: int, *, seed: int, epoch: int, rank: int = 0, world: int = 1) -> list[list[int]]:
    """This rank's batches of item indices for an epoch: a seeded permutation, full batches
    only, dealt round-robin to the ranks. Resuming at batch k is `epoch_batches(...)[k:]`."""
    gen = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    order = torch.randperm(n_items, generator=gen).tolist()
    batches = [order[i : i + batch_size] for i in range(0, n_items - batch_size + 1, batch_size)]
    usable = len(batches) - len(batches) % world
    return batches[rank:usable:world]
