"""MUSDB18(-HQ) for training: random augmented chunks, and whole tracks for validation.

Tracks are found and read by `separation.tracks` (musdb's subsets and its official
train/validation split; only the frames of a chunk are read).

Augmentation, after Open-Unmix's `train.py` and Uhlich et al. 2017:
- each source from a random track at a random position ("remixing", `remix`),
- a random gain per source (`gain`), a random left/right swap per source (`channel_swap`),
- a random EQ per source (`eq`: the share of sources given one bell and one shelf filter of
  up to +-9 dB; another mix engineer's choices, so a model does not learn one set of timbres),
- a random reverb per source (`reverb`: the share of sources sent through a synthetic stereo
  room; the wet signal stays in that source's target, as a mix's reverb returns do in MUSDB's
  stems: a vocal's reverb is part of `vocals`),
- a random change of speed per source (`repitch`: the share of source chunks played up to
  `repitch_semitones` faster or slower, pitch, formants and tempo together, as a tape or a
  sampler's varispeed does; after Demucs' repitch): other singers' registers and vocal tracts
  than the training voices', which is what a model meets on voices it never heard,
- a controlled share of chunks with silent vocals (`silent_vocals`): random chunks of real
  songs are often vocal-free (a third or more of MUSDB's tracks have no vocals); with a rate
  set, a chunk either has its vocals muted on purpose, or its vocals are drawn (up to 10
  tries) from a position where the singer is singing.

The mixture of a training chunk is always the sum of its (augmented) sources, so a chunk is its
targets alone and the mixture is made where the model is (`mixture_of`): a batch crosses from the
loader's workers, through pinned memory, to the GPU as two signals instead of three.
Every chunk is a pure function of (seed, epoch, index): a resumed run sees the same data.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import Dataset

from separation.audio import SAMPLE_RATE
from separation.errors import SeparationError
from separation.tracks import (
    ACCOMPANIMENT,
    SOURCES,
    accompaniment,
    read_source,
    track_frames,
)


@dataclass(frozen=True)
class DataConfig:
    # Defaults from an equal-time sweep on rendered songs (docs/experiments.md): at a small budget
    # 3-s chunks (twice the steps of 6-s ones in the same time) and a random EQ on half the sources
    # (more timbres than the instruments themselves give) learned fastest.
    seconds: float = 3.0
    samples_per_track: int = 64
    remix: bool = True
    gain: tuple[float, float] = (0.25, 1.25)
    channel_swap: bool = True
    eq: float = 0.5  # share of source chunks given a random EQ
    reverb: float = 0.0  # share of source chunks given a random reverb
    repitch: float = 0.0  # share of source chunks played at another speed
    repitch_semitones: float = 2.0  # up to this far, up or down (2 semitones: +-12 % speed)
    silent_vocals: float | None = None  # None: whatever the random positions give
    vocal_threshold_db: float = -40.0  # a chunk "has vocals" when their RMS is above this

    def __post_init__(self):
        for name in ("eq", "reverb", "repitch"):
            share = getattr(self, name)
            if not 0.0 <= share <= 1.0:
                raise SeparationError(f"the {name} augmentation is a share of chunks, 0 to 1, not {share}")
        if not 0.0 <= self.repitch_semitones <= 12.0:
            raise SeparationError(f"--repitch-semitones is 0 to 12, not {self.repitch_semitones}")
        low, high = self.gain
        if not 0.0 < low <= high:
            raise SeparationError(f"the gain range must be 0 < LO <= HI, not {low} {high}")


class ChunkDataset(Dataset):
    """Random augmented training chunks: targets `(2 sources, 2 channels, T)`, vocals first;
    their mixture is `mixture_of(targets)`."""

    def __init__(self, tracks: list, cfg: DataConfig = DataConfig(), *, seed: int = 0, sample_rate: int = SAMPLE_RATE):
        if not tracks:
            raise SeparationError("no training tracks")
        self.tracks, self.cfg, self.seed = tracks, cfg, seed
        self.frames = int(cfg.seconds * sample_rate)
        self.lengths = [track_frames(t) for t in tracks]
        short = [t.name for t, n in zip(tracks, self.lengths, strict=True) if n < self.frames]
        if short:
            raise SeparationError(f"tracks shorter than the {cfg.seconds}-s chunks: {', '.join(short[:3])}")
        self.epoch = 0  # set by the training loop before each epoch

    def __len__(self) -> int:
        return len(self.tracks) * self.cfg.samples_per_track

    def _chunk(self, rng: np.random.Generator, track_index: int, source: str, speed: float = 1.0) -> np.ndarray:
        """`(C, frames)` of one source at a random position, played `speed` times as fast."""
        if speed == 1.0:
            start = int(rng.integers(0, self.lengths[track_index] - self.frames + 1))
            return read_source(self.tracks[track_index], source, start, self.frames)
        # read speed x frames (a track too short for them plays at the fastest speed it allows)
        speed = min(speed, self.lengths[track_index] / self.frames)
        needed = min(int(np.ceil(self.frames * speed)) + 1, self.lengths[track_index])
        start = int(rng.integers(0, self.lengths[track_index] - needed + 1))
        return varispeed(read_source(self.tracks[track_index], source, start, needed), speed, self.frames)

    def __getitem__(self, index: int) -> torch.Tensor:
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
            speed = 1.0  # drawn only with the augmentation on, so that other settings see the same data as before
            if cfg.repitch and rng.random() < cfg.repitch:
                speed = float(2.0 ** (rng.uniform(-cfg.repitch_semitones, cfg.repitch_semitones) / 12))
            audio = self._chunk(rng, track, source, speed)
            if source == "vocals" and cfg.silent_vocals is not None:
                for _ in range(10):
                    rms = float(np.sqrt(np.mean(audio**2)) + 1e-12)
                    if 20 * np.log10(rms) > cfg.vocal_threshold_db:
                        break
                    audio = self._chunk(rng, int(rng.integers(len(self.tracks))) if cfg.remix else home, source, speed)
            audio = audio * rng.uniform(*cfg.gain)
            if cfg.eq and rng.random() < cfg.eq:
                audio = random_eq(audio, rng)
            if cfg.reverb and rng.random() < cfg.reverb:
                audio = random_reverb(audio, rng)
            if cfg.channel_swap and rng.random() < 0.5:
                audio = audio[::-1]
            stems[source] = audio
        vocals = torch.from_numpy(np.ascontiguousarray(stems["vocals"]))
        backing = torch.from_numpy(np.ascontiguousarray(accompaniment(stems[s] for s in ACCOMPANIMENT)))
        return torch.stack([vocals, backing]).float()


def mixture_of(targets: torch.Tensor) -> torch.Tensor:
    """The mixture of training chunks: `(..., 2 sources, C, T) -> (..., C, T)`, the exact sum."""
    return targets.sum(dim=-3)


def _biquad(kind: str, freq: float, gain_db: float, q: float = 0.7, rate: int = SAMPLE_RATE):
    """RBJ audio-EQ-cookbook peaking or high-shelf filter: (b, a)."""
    a_ = 10 ** (gain_db / 40)
    w = 2 * np.pi * freq / rate
    alpha = np.sin(w) / (2 * q)
    cos = np.cos(w)
    if kind == "peak":
        b = [1 + alpha * a_, -2 * cos, 1 - alpha * a_]
        a = [1 + alpha / a_, -2 * cos, 1 - alpha / a_]
    else:  # high shelf
        s = 2 * np.sqrt(a_) * alpha
        b = [
            a_ * ((a_ + 1) + (a_ - 1) * cos + s),
            -2 * a_ * ((a_ - 1) + (a_ + 1) * cos),
            a_ * ((a_ + 1) + (a_ - 1) * cos - s),
        ]
        a = [(a_ + 1) - (a_ - 1) * cos + s, 2 * ((a_ - 1) - (a_ + 1) * cos), (a_ + 1) - (a_ - 1) * cos - s]
    return np.array(b) / a[0], np.array(a) / a[0]


def varispeed(audio: np.ndarray, speed: float, frames: int) -> np.ndarray:
    """`(C, T)` played `speed` times as fast (pitch, formants and tempo scale together), as
    `(C, frames)` float32: polyphase resampling by a ratio within 0.5 % of `speed`, then the
    first `frames` (zero-padded if the input was short)."""
    from math import gcd

    from scipy.signal import resample_poly

    up = 200
    down = max(1, round(up * speed))
    g = gcd(up, down)
    out = resample_poly(audio, up // g, down // g, axis=-1)[..., :frames]
    if out.shape[-1] < frames:
        out = np.pad(out, ((0, 0), (0, frames - out.shape[-1])))
    return out.astype(np.float32)


def random_eq(audio: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """`(C, T)` through a random bell (150 Hz-8 kHz) and high shelf (2-10 kHz), +-9 dB each."""
    from scipy.signal import lfilter

    for kind, lo, hi in (("peak", 150.0, 8000.0), ("shelf", 2000.0, 10000.0)):
        freq = float(np.exp(rng.uniform(np.log(lo), np.log(hi))))
        b, a = _biquad(kind, freq, float(rng.uniform(-9, 9)), float(rng.uniform(0.5, 2.0)))
        audio = lfilter(b, a, audio, axis=-1)
    return audio.astype(np.float32)


def random_reverb(audio: np.ndarray, rng: np.random.Generator, rate: int = SAMPLE_RATE) -> np.ndarray:
    """`(C, T)` -> `(C, T)` plus a synthetic room: per channel an independent noise tail that
    decays by 60 dB in RT60 = 0.2-2 s (faster above a random damping frequency, as air and walls
    absorb highs), after a 0-40 ms pre-delay, mixed in 6-20 dB below the dry signal's energy.
    Independent tails make even a dual-mono source's reverb stereo, as a mix's reverb is."""
    from scipy.signal import fftconvolve, lfilter

    channels, frames = audio.shape
    rt60 = float(rng.uniform(0.2, 2.0))
    length = min(int(rt60 * rate), frames)
    t = np.arange(length) / rate
    tails = rng.standard_normal((channels, length)) * np.exp(-6.91 * t / rt60)
    # Damping: a one-pole low-pass at 2-10 kHz on the tail.
    pole = float(np.exp(-2 * np.pi * rng.uniform(2000.0, 10000.0) / rate))
    tails = lfilter([1 - pole], [1, -pole], tails, axis=-1)
    delay = int(rng.uniform(0.0, 0.04) * rate)
    wet = np.zeros_like(audio, dtype=np.float64)
    wet[:, delay:] = fftconvolve(audio, tails, axes=-1)[:, : frames - delay]
    dry_energy, wet_energy = float(np.sum(audio.astype(np.float64) ** 2)), float(np.sum(wet**2))
    if wet_energy <= 0.0 or dry_energy <= 0.0:  # silent source: nothing to reverberate
        return audio
    wet *= np.sqrt(dry_energy / wet_energy) * 10 ** (-rng.uniform(6.0, 20.0) / 20)
    return (audio + wet).astype(np.float32)


def epoch_batches(
    n_items: int, batch_size: int, *, seed: int, epoch: int, rank: int = 0, world_size: int = 1
) -> list[list[int]]:
    """This rank's batches of item indices for an epoch: a seeded permutation, full batches
    only, dealt round-robin to the ranks. Resuming at batch k is `epoch_batches(...)[k:]`."""
    gen = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    order = torch.randperm(n_items, generator=gen).tolist()
    batches = [order[i : i + batch_size] for i in range(0, n_items - batch_size + 1, batch_size)]
    usable = len(batches) - len(batches) % world_size
    return batches[rank:usable:world_size]
