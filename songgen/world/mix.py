"""Mixing: each instrument and voice gets EQ, compression, room and a place in the stereo
image (pedalboard), stems are levelled as in MUSDB, and a bus limiter shapes the mixture.

The limiter computes its gain from the *mixture* and applies that same gain to every stem
(a linked, look-ahead peak limiter), so the mixture stays the exact sum of the stems; the
stems are then quantised to 16 bits before they are summed, so it stays exact in the files.
"""

from __future__ import annotations

import numpy as np
from scipy.ndimage import maximum_filter1d
from scipy.signal import lfilter

from separation.audio import SAMPLE_RATE
from separation.tracks import SOURCES

from ..synthetic import rms


def channel_strip(audio: np.ndarray, rng: np.random.Generator, *, room: float, bright: float = 0.0) -> np.ndarray:
    """A random EQ (high-pass, one bell, a shelf), a compressor and a reverb send on a
    `(T, 2)` float32 signal; `room` is the reverb's wet level (0: dry)."""
    import pedalboard as pb

    chain = [
        pb.HighpassFilter(cutoff_frequency_hz=float(rng.uniform(30, 120))),
        pb.PeakFilter(
            cutoff_frequency_hz=float(np.exp(rng.uniform(np.log(200), np.log(6000)))),
            gain_db=float(rng.uniform(-6, 6)),
            q=float(rng.uniform(0.5, 2.0)),
        ),
        pb.HighShelfFilter(
            cutoff_frequency_hz=float(rng.uniform(4000, 10000)), gain_db=float(rng.uniform(-6, 3) + bright)
        ),
        pb.Compressor(
            threshold_db=float(rng.uniform(-24, -8)),
            ratio=float(rng.uniform(1.5, 5)),
            attack_ms=float(rng.uniform(2, 30)),
            release_ms=float(rng.uniform(50, 300)),
        ),
    ]
    if room > 0:
        chain.append(
            pb.Reverb(
                room_size=float(rng.uniform(0.2, 0.85)),
                damping=float(rng.uniform(0.2, 0.8)),
                wet_level=room,
                dry_level=1.0 - room / 2,
                width=float(rng.uniform(0.6, 1.0)),
            )
        )
    out = pb.Pedalboard(chain)(np.ascontiguousarray(audio.T, dtype=np.float32), SAMPLE_RATE)
    return np.ascontiguousarray(out.T[: len(audio)])


def balance(audio: np.ndarray, pan: float) -> np.ndarray:
    """Pan a stereo `(T, 2)` signal by attenuating one side (at +-1 that side is exactly zero)."""
    gains = np.array([min(1.0, 1.0 - pan), min(1.0, 1.0 + pan)], np.float32)
    return audio * gains


def bus_limiter(
    mixture: np.ndarray, ceiling: float = 0.89, lookahead: float = 0.005, release: float = 0.15
) -> np.ndarray:
    """Gain `(T,)` that keeps `mixture` `(T, 2)` under `ceiling`: the peak over a look-ahead
    window sets the reduction at once, recovery is a one-pole release."""
    peak = np.abs(mixture).max(axis=1)
    win = max(1, int(lookahead * SAMPLE_RATE))
    held = maximum_filter1d(peak, size=2 * win + 1, mode="nearest")
    want = np.minimum(1.0, ceiling / np.maximum(held, 1e-9))
    a = np.exp(-1.0 / (release * SAMPLE_RATE))
    # Release smoothing of the reduction (1 - gain), never below what the peaks need.
    smooth = lfilter([1 - a], [1, -a], 1.0 - want)
    smooth = maximum_filter1d(smooth, size=2 * win + 1, mode="nearest")
    gain = np.minimum(want, 1.0 - smooth)
    gain *= min(1.0, ceiling / max(1e-9, float(np.abs(mixture * gain[:, None]).max())))
    return gain.astype(np.float32)


def master(stems: dict[str, np.ndarray], rng: np.random.Generator, vocal_db: float) -> dict[str, np.ndarray]:
    """Level the stems, limit the bus and quantise: {source: (T, 2) float32} + "mixture", the
    exact sum of the four 16-bit stems. `vocal_db` is the vocals' level relative to the
    accompaniment while the singer sings."""
    levels = {"drums": rng.uniform(-3, 2), "bass": rng.uniform(-6, 0), "other": rng.uniform(-3, 2)}
    out = {k: v / rms(v) * 10 ** (levels[k] / 20) if rms(v) > 1e-6 else v for k, v in stems.items() if k != "vocals"}
    band = sum(out.values())
    vocals = stems["vocals"]
    singing = np.abs(vocals).max(axis=1) > 1e-3 * max(1e-9, float(np.abs(vocals).max()))
    if singing.any():
        ratio = rms(band[singing]) / rms(vocals[singing]) * 10 ** (vocal_db / 20)
        out["vocals"] = vocals * ratio
    else:
        out["vocals"] = vocals
    mixture = sum(out[k] for k in SOURCES)
    # Driven 0-4 dB into the limiter, as masters are.
    drive = 0.7 / max(1e-9, float(np.abs(mixture).max())) * rng.uniform(1.0, 1.6)
    scale = drive * bus_limiter(mixture * drive)[:, None]
    quantised = {k: np.round(out[k] * scale * 32768) for k in SOURCES}
    quantised["mixture"] = sum(quantised[k] for k in SOURCES)
    peak = np.abs(quantised["mixture"]).max()
    if peak > 32767:  # cannot happen after the limiter's final check; kept as a guard
        raise AssertionError(f"the mixture clips ({peak:.0f})")
    return {k: (v / 32768).astype(np.float32) for k, v in quantised.items()}
