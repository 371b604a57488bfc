"""A synthetic, MUSDB18-HQ-shaped data set: songs with a sung-like voice over a band.

    python -m training.synthetic data/synthetic --train 40 --valid 4 --test 10 --seconds 15

writes `train/` and `test/`, one folder per track with `mixture.wav`, `vocals.wav`,
`drums.wav`, `bass.wav` and `other.wav` (16-bit, 44.1 kHz stereo, mixture == sum of stems
exactly), read by the same `musdb.DB(root, is_wav=True)` code as the real data set. The
validation tracks carry the names of musdb's official validation tracks, so that
`split="valid"` selects them exactly as it does on MUSDB18-HQ.

The task is made hard enough to mean something: the voice is harmonic with vowel formants,
vibrato, syllables, consonant noise and pauses between phrases; the band has chords, a pad
and sometimes a lead synth in the same frequency range as the voice; voice and band have
similar energy, so the mixture as a vocals estimate scores near 0 dB SDR.
Everything is numpy and deterministic by seed, about 1 s per 15-s track.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import numpy as np
import soundfile as sf
import yaml

SR = 44100
SOURCES = ("vocals", "drums", "bass", "other")

# Formants (Hz) and bandwidths of five vowels (Peterson & Barney 1952, adult averages).
VOWELS = {
    "a": ((730, 1090, 2440), (90, 110, 160)),
    "e": ((530, 1840, 2480), (70, 100, 160)),
    "i": ((270, 2290, 3010), (60, 100, 170)),
    "o": ((570, 840, 2410), (70, 80, 160)),
    "u": ((300, 870, 2240), (60, 80, 150)),
}
MAJOR = (0, 2, 4, 5, 7, 9, 11)
PROGRESSIONS = ((0, 5, 3, 4), (0, 3, 4, 4), (5, 3, 0, 4), (0, 4, 5, 3))


def _hz(midi: np.ndarray | float) -> np.ndarray | float:
    return 440.0 * 2 ** ((np.asarray(midi) - 69) / 12)


def _harmonic_tone(f0: np.ndarray, amps: np.ndarray, phase0: float = 0.0) -> np.ndarray:
    """Sum of harmonics k*f0(t) with amplitudes `amps[k-1]`, aliasing-free below Nyquist."""
    phase = phase0 + 2 * np.pi * np.cumsum(f0) / SR
    k = np.arange(1, len(amps) + 1)[:, None]
    amps = np.where(k[:, 0] * f0.max() < 0.45 * SR, amps, 0.0)
    return (amps[:, None] * np.sin(k * phase)).sum(axis=0)


def _envelope(n: int, attack: float, release: float) -> np.ndarray:
    env = np.ones(n)
    a, r = min(n, int(attack * SR)), min(n, int(release * SR))
    env[:a] = np.linspace(0, 1, a, endpoint=False)
    if r:
        env[n - r :] *= np.linspace(1, 0, r)
    return env


def _filtered_noise(rng: np.random.Generator, n: int, low: float, high: float) -> np.ndarray:
    spec = np.fft.rfft(rng.standard_normal(n))
    f = np.fft.rfftfreq(n, 1 / SR)
    spec[(f < low) | (f > high)] = 0
    out = np.fft.irfft(spec, n)
    return out / (np.abs(out).max() + 1e-9)


def _formant_gains(freqs: np.ndarray, vowel: str) -> np.ndarray:
    centres, widths = VOWELS[vowel]
    gain = sum(1.0 / (1 + ((freqs - c) / (w / 2)) ** 2) * (0.7**i) for i, (c, w) in enumerate(zip(centres, widths)))
    return (gain + 0.01) / np.maximum(freqs / 200, 1) ** 0.5


def voice(rng: np.random.Generator, n: int, key: int, beat: float) -> np.ndarray:
    """A singer: phrases of syllables (vowel + optional consonant) separated by pauses."""
    out = np.zeros(n)
    register = key + rng.choice([-12, 0]) + 12  # midi note of the tonic in the singer's octave
    vib_rate, vib_depth = rng.uniform(4.5, 6.5), rng.uniform(0.008, 0.025)
    t = rng.uniform(0.0, 2.0)
    prev = _hz(register)
    while t < n / SR:
        phrase_end = t + rng.uniform(2.0, 5.0)
        while t < min(phrase_end, n / SR):
            dur = beat * rng.choice([0.5, 1.0, 1.0, 1.5, 2.0])
            start, m = int(t * SR), int(dur * SR)
            m = min(m, n - start)
            if m < 200:
                break
            pitch = _hz(register + MAJOR[rng.integers(7)] + 12 * rng.choice([0, 0, 1, -1]) * (rng.random() < 0.2))
            tt = np.arange(m) / SR
            glide = prev + (pitch - prev) * (1 - np.exp(-tt / 0.04))  # portamento from the last note
            f0 = glide * (1 + vib_depth * np.sin(2 * np.pi * vib_rate * tt + rng.uniform(0, 6)) * np.clip(tt / 0.2, 0, 1))
            f0 *= 1 + 0.003 * np.cumsum(rng.standard_normal(m)) / np.sqrt(np.arange(1, m + 1))  # jitter
            k = np.arange(1, 41)
            tone = _harmonic_tone(f0, _formant_gains(k * pitch, rng.choice(list(VOWELS))), rng.uniform(0, 6))
            tone += 0.05 * _filtered_noise(rng, m, 1000, 6000)  # breath
            tone *= _envelope(m, 0.03, min(0.08, dur / 3))
            if rng.random() < 0.5:  # consonant: a short noise burst at the onset
                c = min(m, int(rng.uniform(0.02, 0.07) * SR))
                tone[:c] += rng.uniform(0.3, 0.8) * _filtered_noise(rng, c, 2500, 9000) * _envelope(c, 0.005, 0.02)
            out[start : start + m] += tone
            prev = pitch
            t += dur
        t += rng.uniform(0.5, 2.5)  # breath between phrases: the vocal-free parts of a song
    return out


def drums(rng: np.random.Generator, n: int, beat: float) -> np.ndarray:
    out = np.zeros(n)
    kick_len, snare_len, hat_len = int(0.25 * SR), int(0.2 * SR), int(0.06 * SR)
    tk = np.arange(kick_len) / SR
    kick = np.sin(2 * np.pi * np.cumsum(45 + 80 * np.exp(-tk * 30)) / SR) * np.exp(-tk * 12)
    ts = np.arange(snare_len) / SR
    snare = (0.7 * _filtered_noise(rng, snare_len, 1500, 8000) + 0.4 * np.sin(2 * np.pi * 185 * ts)) * np.exp(-ts * 22)
    hat = _filtered_noise(rng, hat_len, 7000, 16000) * np.exp(-np.arange(hat_len) / SR * 70) * 0.4
    step = beat / 2
    for i in range(int(n / SR / step) + 1):
        s = int(i * step * SR)
        for hit, on in ((kick, i % 4 == 0 or (i % 8 == 5 and rng.random() < 0.5)), (snare, i % 4 == 2), (hat, True)):
            if on and s < n:
                m = min(len(hit), n - s)
                out[s : s + m] += hit[:m] * rng.uniform(0.8, 1.0)
    return out


def bass(rng: np.random.Generator, n: int, key: int, beat: float, chords: list[int]) -> np.ndarray:
    out = np.zeros(n)
    amps = 1.0 / np.arange(1, 9) ** 1.5
    for i in range(int(n / SR / beat) + 1):
        s, m = int(i * beat * SR), int(beat * SR)
        m = min(m, n - s)
        if m <= 0:
            break
        root = key - 24 + MAJOR[chords[(i // 4) % 4]]
        f0 = np.full(m, _hz(root + (7 if i % 4 == 3 and rng.random() < 0.3 else 0)))
        out[s : s + m] += _harmonic_tone(f0, amps) * _envelope(m, 0.005, 0.05) * np.exp(-np.arange(m) / SR * 3)
    return out


def other(rng: np.random.Generator, n: int, key: int, beat: float, chords: list[int]) -> np.ndarray:
    """Chords (plucked), a sustained pad, and sometimes a lead synth, all in the voice's range."""
    out = np.zeros(n)
    pluck_amps = rng.uniform(0.3, 1.0, 12) / np.arange(1, 13)
    pad_amps = 1.0 / np.arange(1, 16)
    bar = 4 * beat
    for i in range(int(n / SR / bar) + 1):
        s, m = int(i * bar * SR), int(bar * SR)
        m = min(m, n - s)
        if m <= 0:
            break
        degree = chords[i % 4]
        notes = [key + MAJOR[(degree + j) % 7] + 12 * ((degree + j) // 7) for j in (0, 2, 4)]
        for note in notes:
            pad = _harmonic_tone(np.full(m, _hz(note)) * (1 + 0.002 * rng.standard_normal()), pad_amps)
            out[s : s + m] += 0.25 * pad * _envelope(m, 0.3, 0.3)
            for strum in range(0, 4, int(rng.choice([1, 2]))):
                ss = s + int(strum * beat * SR)
                mm = min(int(beat * SR), n - ss)
                if mm > 0:
                    tone = _harmonic_tone(np.full(mm, _hz(note + 12)), pluck_amps)
                    out[ss : ss + mm] += 0.3 * tone * np.exp(-np.arange(mm) / SR * 6) * _envelope(mm, 0.003, 0.02)
    if rng.random() < 0.5:  # a lead synth: harmonic, melodic, but no formants and no vibrato
        lead = np.zeros(n)
        t = rng.uniform(0, 4)
        while t < n / SR:
            dur = beat * rng.choice([0.5, 1.0])
            s, m = int(t * SR), min(int(dur * SR), n - int(t * SR))
            if m <= 0:
                break
            f0 = np.full(m, _hz(key + 12 + MAJOR[rng.integers(7)]))
            lead[s : s + m] = _harmonic_tone(f0, 1.0 / np.arange(1, 20)) * _envelope(m, 0.01, 0.03)
            t += dur + (rng.uniform(1, 4) if rng.random() < 0.15 else 0)
        out += 0.5 * lead
    return out


def _rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(x**2)) + 1e-12)


def _stereo(x: np.ndarray, pan: float, width: float = 0.0, rng: np.random.Generator | None = None) -> np.ndarray:
    left, right = x * np.sqrt(0.5 - pan / 2), x * np.sqrt(0.5 + pan / 2)
    if width and rng is not None:  # decorrelate a little: a short delay on one side
        d = int(rng.uniform(0.0005, 0.0015) * SR)
        right = (1 - width) * right + width * np.concatenate([np.zeros(d), right[:-d]])
    return np.stack([left, right], axis=1)


def make_track(seed: int, seconds: float = 15.0) -> dict[str, np.ndarray]:
    """One song: `{source: (T, 2) float32}` for the four stems and `mixture` (their exact sum).

    Stems are quantised to 16 bits *before* mixing, so that the mixture is exactly the sum
    of the stems also after writing 16-bit wav files.
    """
    rng = np.random.default_rng(seed)
    n = int(seconds * SR)
    key = 48 + int(rng.integers(0, 12))  # C3..B3
    beat = 60.0 / rng.uniform(80, 140)
    chords = list(PROGRESSIONS[rng.integers(len(PROGRESSIONS))])
    raw = {
        "vocals": _stereo(voice(rng, n, key, beat), rng.uniform(-0.2, 0.2)),
        "drums": _stereo(drums(rng, n, beat), rng.uniform(-0.1, 0.1), 0.3, rng),
        "bass": _stereo(bass(rng, n, key, beat, chords), 0.0),
        "other": _stereo(other(rng, n, key, beat, chords), rng.uniform(-0.4, 0.4), 0.5, rng),
    }
    levels = {"drums": rng.uniform(0.7, 1.2), "bass": rng.uniform(0.5, 0.9), "other": rng.uniform(0.7, 1.2)}
    stems = {k: raw[k] / _rms(raw[k]) * levels.get(k, 1.0) for k in raw}
    band = stems["drums"] + stems["bass"] + stems["other"]
    active = np.abs(raw["vocals"]).max(axis=1) > 1e-3
    # Voice about as loud as the band while singing (+-3 dB): the mixture scores ~0 dB as a vocals estimate.
    stems["vocals"] *= _rms(band[active]) / _rms(stems["vocals"][active]) * 10 ** (rng.uniform(-3, 3) / 20)
    peak = np.abs(sum(stems.values())).max()
    scale = 0.9 / peak
    # Integer samples, as soundfile reads 16-bit files back (k / 32768): the sum stays exact.
    out = {k: np.round(v * scale * 32768) for k, v in stems.items()}
    out["mixture"] = sum(out[k] for k in SOURCES)
    return {k: (v / 32768).astype(np.float32) for k, v in out.items()}


def validation_names() -> list[str]:
    import musdb

    with open(os.path.join(musdb.__path__[0], "configs", "mus.yaml")) as f:
        return list(yaml.safe_load(f)["validation_tracks"])


def write_track(folder: Path, track: dict[str, np.ndarray]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name, audio in track.items():
        sf.write(folder / f"{name}.wav", np.round(audio * 32768).astype(np.int16), SR, subtype="PCM_16")


def write_musdb_folder(
    root: str | os.PathLike, *, train: int = 40, valid: int = 4, test: int = 10, seconds: float = 15.0, seed: int = 0
) -> Path:
    """Write a MUSDB18-HQ-shaped folder; returns its root. Track i of a split uses seed
    `seed * 100003 + offset + i`, so the same arguments always give the same files."""
    root = Path(root)
    names = validation_names()
    if valid > len(names):
        raise ValueError(f"at most {len(names)} validation tracks (musdb's validation list)")
    plan = [("train", f"Synthetic {i:03d} - Train Song", i) for i in range(train)]
    plan += [("train", names[i], 10_000 + i) for i in range(valid)]
    plan += [("test", f"Synthetic {i:03d} - Test Song", 20_000 + i) for i in range(test)]
    for subset, name, offset in plan:
        write_track(root / subset / name, make_track(seed * 100_003 + offset, seconds))
    # Marks the folder as synthetic, for the model cards of what is trained on it.
    meta = {"train": train, "valid": valid, "test": test, "seconds": seconds, "seed": seed}
    (root / "synthetic.json").write_text(json.dumps(meta) + "\n")
    return root


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m training.synthetic", description=__doc__.splitlines()[0])
    p.add_argument("root", type=Path)
    p.add_argument("--train", type=int, default=40)
    p.add_argument("--valid", type=int, default=4)
    p.add_argument("--test", type=int, default=10)
    p.add_argument("--seconds", type=float, default=15.0)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()
    write_musdb_folder(a.root, train=a.train, valid=a.valid, test=a.test, seconds=a.seconds, seed=a.seed)
    print(f"wrote {a.train} train, {a.valid} validation and {a.test} test tracks of {a.seconds:.0f} s to {a.root}")


if __name__ == "__main__":
    main()
