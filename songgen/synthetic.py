"""A synthetic, MUSDB18-HQ-shaped data set: songs with a sung-like voice over a band.

    python -m songgen.synthetic data/synthetic --train 40 --valid 4 --test 10 --seconds 15

writes `train/` and `test/`, one folder per track with `mixture.wav`, `vocals.wav`,
`drums.wav`, `bass.wav` and `other.wav` (16-bit, 44.1 kHz stereo, mixture == sum of stems
exactly), read by the same `musdb.DB(root, is_wav=True)` code as the real data set. The
validation tracks carry the names of musdb's official validation tracks, so that
`split="valid"` selects them exactly as it does on MUSDB18-HQ.

The task is made hard enough to mean something: the voice is harmonic with vowel formants,
vibrato, syllables, consonant noise and pauses between phrases; the band has chords, a pad
and sometimes a lead synth in the same frequency range as the voice; voice and band have
similar energy, so the mixture as a vocals estimate scores near 0 dB SDR.

It also carries the traits of real MUSDB18 stems that break code tested only on randomly
panned, always-busy stems (`Traits`, each can be turned off):
- vocals exactly dual-mono (left == right, sample for sample) in most tracks, bass in many:
  BSSEval's projection systems are then singular;
- hard-panned instruments (a stem with one channel exactly zero) and exactly centred leads;
- vocal-free stretches (intro, an instrumental break, outro) of 30-70 % of every track, with
  the vocal stem exactly zero there, so whole 1-s evaluation windows are silent (NaN scores);
- one track per subset whose drums are silent throughout (an acoustic song).

Everything is numpy and deterministic by seed, about 1 s per 15-s track.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import yaml

from separation.audio import SAMPLE_RATE
from separation.tracks import SOURCES

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


@dataclass(frozen=True)
class Traits:
    """Real data's traits and how often they occur (shares of tracks); see the module docstring."""

    dual_mono_vocals: float = 0.75  # vocals with left == right exactly
    mono_bass: float = 0.6  # bass with left == right exactly
    hard_pan: float = 0.25  # `other` entirely on one side: its other channel is exactly zero
    vocal_free: tuple[float, float] | None = (0.3, 0.7)  # share of a track without vocals; None: sing throughout
    silent_source: bool = True  # the second track of each subset has silent drums

    @classmethod
    def none(cls) -> Traits:
        """The set as it was before real data's traits: panned stems, a singer who never stops for long."""
        return cls(dual_mono_vocals=0.0, mono_bass=0.0, hard_pan=0.0, vocal_free=None, silent_source=False)


REAL = Traits()


def _hz(midi: np.ndarray | float) -> np.ndarray | float:
    return 440.0 * 2 ** ((np.asarray(midi) - 69) / 12)


def _harmonic_tone(f0: np.ndarray, amps: np.ndarray, phase0: float = 0.0) -> np.ndarray:
    """Sum of harmonics k*f0(t) with amplitudes `amps[k-1]`, aliasing-free below Nyquist."""
    phase = phase0 + 2 * np.pi * np.cumsum(f0) / SAMPLE_RATE
    k = np.arange(1, len(amps) + 1)[:, None]
    amps = np.where(k[:, 0] * f0.max() < 0.45 * SAMPLE_RATE, amps, 0.0)
    return (amps[:, None] * np.sin(k * phase)).sum(axis=0)


def _envelope(n: int, attack: float, release: float) -> np.ndarray:
    env = np.ones(n)
    a, r = min(n, int(attack * SAMPLE_RATE)), min(n, int(release * SAMPLE_RATE))
    env[:a] = np.linspace(0, 1, a, endpoint=False)
    if r:
        env[n - r :] *= np.linspace(1, 0, r)
    return env


def _filtered_noise(rng: np.random.Generator, n: int, low: float, high: float) -> np.ndarray:
    spec = np.fft.rfft(rng.standard_normal(n))
    f = np.fft.rfftfreq(n, 1 / SAMPLE_RATE)
    spec[(f < low) | (f > high)] = 0
    out = np.fft.irfft(spec, n)
    return out / (np.abs(out).max() + 1e-9)


def _formant_gains(freqs: np.ndarray, vowel: str) -> np.ndarray:
    centres, widths = VOWELS[vowel]
    peaks = enumerate(zip(centres, widths, strict=True))
    gain = sum(1.0 / (1 + ((freqs - c) / (w / 2)) ** 2) * (0.7**i) for i, (c, w) in peaks)
    return (gain + 0.01) / np.maximum(freqs / 200, 1) ** 0.5


def voice(rng: np.random.Generator, n: int, key: int, beat: float) -> np.ndarray:
    """A singer: phrases of syllables (vowel + optional consonant) separated by pauses."""
    out = np.zeros(n)
    register = key + rng.choice([-12, 0]) + 12  # midi note of the tonic in the singer's octave
    vib_rate, vib_depth = rng.uniform(4.5, 6.5), rng.uniform(0.008, 0.025)
    t = rng.uniform(0.0, min(2.0, 0.1 * n / SAMPLE_RATE))  # the first entry, not too late in a short excerpt
    prev = _hz(register)
    while t < n / SAMPLE_RATE:
        phrase_end = t + rng.uniform(2.0, 5.0)
        while t < min(phrase_end, n / SAMPLE_RATE):
            dur = beat * rng.choice([0.5, 1.0, 1.0, 1.5, 2.0])
            start, m = int(t * SAMPLE_RATE), int(dur * SAMPLE_RATE)
            m = min(m, n - start)
            if m < 200:
                break
            pitch = _hz(register + MAJOR[rng.integers(7)] + 12 * rng.choice([0, 0, 1, -1]) * (rng.random() < 0.2))
            tt = np.arange(m) / SAMPLE_RATE
            glide = prev + (pitch - prev) * (1 - np.exp(-tt / 0.04))  # portamento from the last note
            f0 = glide * (
                1 + vib_depth * np.sin(2 * np.pi * vib_rate * tt + rng.uniform(0, 6)) * np.clip(tt / 0.2, 0, 1)
            )
            f0 *= 1 + 0.003 * np.cumsum(rng.standard_normal(m)) / np.sqrt(np.arange(1, m + 1))  # jitter
            k = np.arange(1, 41)
            tone = _harmonic_tone(f0, _formant_gains(k * pitch, rng.choice(list(VOWELS))), rng.uniform(0, 6))
            tone += 0.05 * _filtered_noise(rng, m, 1000, 6000)  # breath
            tone *= _envelope(m, 0.03, min(0.08, dur / 3))
            if rng.random() < 0.5:  # consonant: a short noise burst at the onset
                c = min(m, int(rng.uniform(0.02, 0.07) * SAMPLE_RATE))
                tone[:c] += rng.uniform(0.3, 0.8) * _filtered_noise(rng, c, 2500, 9000) * _envelope(c, 0.005, 0.02)
            out[start : start + m] += tone
            prev = pitch
            t += dur
        t += rng.uniform(0.5, 2.5)  # breath between phrases: the vocal-free parts of a song
    return out


def drums(rng: np.random.Generator, n: int, beat: float) -> np.ndarray:
    out = np.zeros(n)
    kick_len, snare_len, hat_len = int(0.25 * SAMPLE_RATE), int(0.2 * SAMPLE_RATE), int(0.06 * SAMPLE_RATE)
    tk = np.arange(kick_len) / SAMPLE_RATE
    kick = np.sin(2 * np.pi * np.cumsum(45 + 80 * np.exp(-tk * 30)) / SAMPLE_RATE) * np.exp(-tk * 12)
    ts = np.arange(snare_len) / SAMPLE_RATE
    snare = (0.7 * _filtered_noise(rng, snare_len, 1500, 8000) + 0.4 * np.sin(2 * np.pi * 185 * ts)) * np.exp(-ts * 22)
    hat = _filtered_noise(rng, hat_len, 7000, 16000) * np.exp(-np.arange(hat_len) / SAMPLE_RATE * 70) * 0.4
    step = beat / 2
    for i in range(int(n / SAMPLE_RATE / step) + 1):
        s = int(i * step * SAMPLE_RATE)
        for hit, on in ((kick, i % 4 == 0 or (i % 8 == 5 and rng.random() < 0.5)), (snare, i % 4 == 2), (hat, True)):
            if on and s < n:
                m = min(len(hit), n - s)
                out[s : s + m] += hit[:m] * rng.uniform(0.8, 1.0)
    return out


def bass(rng: np.random.Generator, n: int, key: int, beat: float, chords: list[int]) -> np.ndarray:
    out = np.zeros(n)
    amps = 1.0 / np.arange(1, 9) ** 1.5
    for i in range(int(n / SAMPLE_RATE / beat) + 1):
        s, m = int(i * beat * SAMPLE_RATE), int(beat * SAMPLE_RATE)
        m = min(m, n - s)
        if m <= 0:
            break
        root = key - 24 + MAJOR[chords[(i // 4) % 4]]
        f0 = np.full(m, _hz(root + (7 if i % 4 == 3 and rng.random() < 0.3 else 0)))
        out[s : s + m] += _harmonic_tone(f0, amps) * _envelope(m, 0.005, 0.05) * np.exp(-np.arange(m) / SAMPLE_RATE * 3)
    return out


def other(rng: np.random.Generator, n: int, key: int, beat: float, chords: list[int]) -> np.ndarray:
    """Chords (plucked), a sustained pad, and sometimes a lead synth, all in the voice's range."""
    out = np.zeros(n)
    pluck_amps = rng.uniform(0.3, 1.0, 12) / np.arange(1, 13)
    pad_amps = 1.0 / np.arange(1, 16)
    bar = 4 * beat
    for i in range(int(n / SAMPLE_RATE / bar) + 1):
        s, m = int(i * bar * SAMPLE_RATE), int(bar * SAMPLE_RATE)
        m = min(m, n - s)
        if m <= 0:
            break
        degree = chords[i % 4]
        notes = [key + MAJOR[(degree + j) % 7] + 12 * ((degree + j) // 7) for j in (0, 2, 4)]
        for note in notes:
            pad = _harmonic_tone(np.full(m, _hz(note)) * (1 + 0.002 * rng.standard_normal()), pad_amps)
            out[s : s + m] += 0.25 * pad * _envelope(m, 0.3, 0.3)
            for strum in range(0, 4, int(rng.choice([1, 2]))):
                ss = s + int(strum * beat * SAMPLE_RATE)
                mm = min(int(beat * SAMPLE_RATE), n - ss)
                if mm > 0:
                    tone = _harmonic_tone(np.full(mm, _hz(note + 12)), pluck_amps)
                    out[ss : ss + mm] += (
                        0.3 * tone * np.exp(-np.arange(mm) / SAMPLE_RATE * 6) * _envelope(mm, 0.003, 0.02)
                    )
    if rng.random() < 0.5:  # a lead synth: harmonic, melodic, but no formants and no vibrato
        lead = np.zeros(n)
        t = rng.uniform(0, 4)
        while t < n / SAMPLE_RATE:
            dur = beat * rng.choice([0.5, 1.0])
            s, m = int(t * SAMPLE_RATE), min(int(dur * SAMPLE_RATE), n - int(t * SAMPLE_RATE))
            if m <= 0:
                break
            f0 = np.full(m, _hz(key + 12 + MAJOR[rng.integers(7)]))
            lead[s : s + m] = _harmonic_tone(f0, 1.0 / np.arange(1, 20)) * _envelope(m, 0.01, 0.03)
            t += dur + (rng.uniform(1, 4) if rng.random() < 0.15 else 0)
        out += 0.5 * lead
    return out


def rms(x: np.ndarray) -> float:
    """Root mean square, accumulated in float64 (a float32 sum of 1.3 M squares loses digits)."""
    return float(np.sqrt(np.mean(np.square(x, dtype=np.float64))) + 1e-12)


def place_mono(mono: np.ndarray, pan: float | None) -> np.ndarray:
    """`(T,)` -> `(T, 2)` in `mono`'s dtype: `pan=None` is exactly dual-mono (left == right,
    sample for sample: a mono recording placed in the centre); otherwise constant-power panning
    (-1 left .. +1 right; at +-1 one channel is exactly zero)."""
    if pan is None:
        gains = np.array([np.sqrt(0.5), np.sqrt(0.5)])
    else:
        gains = np.array([np.sqrt(0.5 - pan / 2), np.sqrt(0.5 + pan / 2)])
    return mono[:, None] * gains.astype(mono.dtype)


def _stereo(x: np.ndarray, pan: float, width: float = 0.0, rng: np.random.Generator | None = None) -> np.ndarray:
    """`place_mono`, and optionally a little width from a short delay on the right channel."""
    out = place_mono(x, pan)
    if width and rng is not None:
        d = int(rng.uniform(0.0005, 0.0015) * SAMPLE_RATE)
        out[:, 1] = (1 - width) * out[:, 1] + width * np.concatenate([np.zeros(d), out[:-d, 1]])
    return out


FRAME = 2205  # 50 ms: the resolution at which "vocal-free" is measured


def vocal_free_share(vocals: np.ndarray) -> float:
    """Share of 50-ms frames whose RMS is below -60 dB re the loudest frame: `(T,)` or `(T, C)`."""
    x = vocals.reshape(vocals.shape[0], -1)[: vocals.shape[0] // FRAME * FRAME]
    frame_rms = np.sqrt((x.reshape(-1, FRAME, x.shape[-1]) ** 2).mean(axis=(1, 2)))
    return float((frame_rms <= 1e-3 * frame_rms.max()).mean()) if frame_rms.size and frame_rms.max() > 0 else 1.0


def _vocal_free_sections(rng: np.random.Generator, voice: np.ndarray, share: tuple[float, float]) -> np.ndarray:
    """Mute an intro, an instrumental break and an outro so that `share` of the track is vocal-free.

    The singer's own pauses count towards the target; the sections make up the rest. The
    vocal stem is exactly zero inside them (10-ms fades at their edges), as in many MUSDB stems.
    """
    n = voice.size
    lo, hi = share
    target = rng.uniform(lo + 0.05 * (hi - lo), hi - 0.05 * (hi - lo))
    weights = rng.dirichlet([2.0, 1.5, 2.0])  # intro, break, outro
    where = rng.uniform(0.3, 0.7)  # the break's position in what is left between intro and outro

    def muted(length: float) -> np.ndarray:
        intro, brk, outro = (int(w * length) for w in weights)
        gain = np.ones(n)
        fade = int(0.01 * SAMPLE_RATE)
        b0 = intro + int(where * max(0, n - intro - outro - brk))
        for start, stop in ((0, intro), (b0, b0 + brk), (n - outro, n)):
            if stop - start <= 0:
                continue
            gain[start:stop] = 0.0
            if start > 0:  # fade out into the section
                gain[max(0, start - fade) : start] *= np.linspace(1, 0, start - max(0, start - fade))
            if stop < n:  # and back in after it
                gain[stop : stop + fade] *= np.linspace(0, 1, min(fade, n - stop))
        return voice * gain

    # The share grows with the sections' total length: bisect for the target (the singer's own
    # pauses count too, so short sections may already be enough).
    low, high = 0.0, float(n)
    for _ in range(16):
        mid = (low + high) / 2
        low, high = (mid, high) if vocal_free_share(muted(mid)) < target else (low, mid)
    return muted(high)


def make_track(
    seed: int, seconds: float = 15.0, traits: Traits = REAL, *, silent_drums: bool = False
) -> dict[str, np.ndarray]:
    """One song: `{source: (T, 2) float32}` for the four stems and `mixture` (their exact sum).

    Stems are quantised to 16 bits *before* mixing, so that the mixture is exactly the sum
    of the stems also after writing 16-bit wav files. `traits` decides the real-data traits
    (dual-mono, hard panning, vocal-free sections); `silent_drums` makes the drums stem zero.
    """
    rng = np.random.default_rng(seed)
    n = int(seconds * SAMPLE_RATE)
    key = 48 + int(rng.integers(0, 12))  # C3..B3
    beat = 60.0 / rng.uniform(80, 140)
    chords = list(PROGRESSIONS[rng.integers(len(PROGRESSIONS))])
    sung = voice(rng, n, key, beat)
    # The traits draw from their own generator: turning them off leaves the notes as they are.
    trng = np.random.default_rng([seed, 1])
    if traits.vocal_free is not None:
        sung = _vocal_free_sections(trng, sung, traits.vocal_free)
    low = bass(rng, n, key, beat, chords)
    band = other(rng, n, key, beat, chords)
    kit = _stereo(drums(rng, n, beat), rng.uniform(-0.1, 0.1), 0.3, rng)
    vocal_pan, band_pan = rng.uniform(-0.2, 0.2), rng.uniform(-0.4, 0.4)
    if trng.random() < traits.hard_pan:
        band_pan = float(trng.choice([-1.0, 1.0]))
    raw = {
        "vocals": place_mono(sung, None) if trng.random() < traits.dual_mono_vocals else _stereo(sung, vocal_pan),
        "drums": np.zeros_like(kit) if silent_drums else kit,
        "bass": place_mono(low, None) if trng.random() < traits.mono_bass else _stereo(low, 0.0, 0.2, trng),
        "other": _stereo(band, band_pan, 0.5, trng),
    }
    levels = {"drums": rng.uniform(0.7, 1.2), "bass": rng.uniform(0.5, 0.9), "other": rng.uniform(0.7, 1.2)}
    stems = {k: raw[k] / rms(raw[k]) * levels.get(k, 1.0) for k in raw}
    band = stems["drums"] + stems["bass"] + stems["other"]
    active = np.abs(raw["vocals"]).max(axis=1) > 1e-3
    # Voice about as loud as the band while singing (+-3 dB): the mixture scores ~0 dB as a vocals estimate.
    stems["vocals"] *= rms(band[active]) / rms(stems["vocals"][active]) * 10 ** (rng.uniform(-3, 3) / 20)
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
    """MUSDB18-HQ: a folder of 16-bit wav files, one per source and one for the mixture."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, audio in track.items():
        sf.write(folder / f"{name}.wav", np.round(audio * 32768).astype(np.int16), SAMPLE_RATE, subtype="PCM_16")


# MUSDB18's stream order inside a .stem.mp4 (musdb's mus.yaml: mixture 0, drums 1, bass 2, other 3, vocals 4)
STEM_ORDER = ("mixture", "drums", "bass", "other", "vocals")


def write_stem_mp4(path: Path, track: dict[str, np.ndarray], bitrate: int = 256_000) -> None:
    """MUSDB18: one `.stem.mp4` with five AAC streams, written with stempeg/ffmpeg as the real
    set was. AAC is lossy: the decoded mixture is no longer exactly the sum of the decoded stems,
    and the decoder returns a few hundred samples more than the header's duration; both are
    true of the real MUSDB18 as well."""
    import stempeg

    path.parent.mkdir(parents=True, exist_ok=True)
    data = np.stack([track[name] for name in STEM_ORDER])
    stempeg.write_stems(str(path), data, SAMPLE_RATE, writer=stempeg.StreamsWriter(codec="aac", bitrate=bitrate))


def write_musdb_folder(
    root: str | os.PathLike,
    *,
    train: int = 40,
    valid: int = 4,
    test: int = 10,
    seconds: float = 15.0,
    seed: int = 0,
    traits: Traits = REAL,
    stems_mp4: bool = False,
) -> Path:
    """Write a MUSDB18-HQ-shaped folder (or MUSDB18-shaped with `stems_mp4`); returns its root.

    Track i of a split uses seed `seed * 100003 + offset + i`, so the same arguments always
    give the same files. With `traits.silent_source`, the second track of each subset has
    silent drums.
    """
    root = Path(root)
    names = validation_names()
    if valid > len(names):
        raise ValueError(f"at most {len(names)} validation tracks (musdb's validation list)")
    plan = [("train", f"Synthetic {i:03d} - Train Song", i) for i in range(train)]
    plan += [("train", names[i], 10_000 + i) for i in range(valid)]
    plan += [("test", f"Synthetic {i:03d} - Test Song", 20_000 + i) for i in range(test)]
    position: dict[str, int] = {}
    for subset, name, offset in plan:
        position[subset] = position.get(subset, -1) + 1
        silent = traits.silent_source and position[subset] == 1
        track = make_track(seed * 100_003 + offset, seconds, traits, silent_drums=silent)
        if stems_mp4:
            write_stem_mp4(root / subset / f"{name}.stem.mp4", track)
        else:
            write_track(root / subset / name, track)
    # Marks the folder as synthetic, for the model cards of what is trained on it.
    meta = {
        "train": train,
        "valid": valid,
        "test": test,
        "seconds": seconds,
        "seed": seed,
        "traits": dataclasses.asdict(traits),
        "format": "stem.mp4" if stems_mp4 else "wav",
    }
    (root / "synthetic.json").write_text(json.dumps(meta) + "\n")
    return root


def main() -> None:
    p = argparse.ArgumentParser(
        prog="python -m songgen.synthetic",
        description=__doc__.splitlines()[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("root", type=Path, help="folder to write train/ and test/ into")
    p.add_argument("--train", type=int, default=40, help="training tracks")
    p.add_argument("--valid", type=int, default=4, help="validation tracks (named as musdb's own)")
    p.add_argument("--test", type=int, default=10, help="test tracks")
    p.add_argument("--seconds", type=float, default=15.0, help="length of every track")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--stems-mp4", action="store_true", help="MUSDB18 layout (.stem.mp4, AAC) instead of MUSDB18-HQ wav folders"
    )
    p.add_argument("--no-dual-mono", action="store_true", help="no exactly dual-mono vocals or bass")
    p.add_argument("--no-hard-pan", action="store_true", help="no hard-panned stems")
    p.add_argument("--no-vocal-free", action="store_true", help="no vocal-free sections (the singer only breathes)")
    p.add_argument("--no-silent-source", action="store_true", help="no track with silent drums")
    p.add_argument("--no-traits", action="store_true", help="all of the four above")
    a = p.parse_args()
    traits = (
        Traits.none()
        if a.no_traits
        else Traits(
            dual_mono_vocals=0.0 if a.no_dual_mono else REAL.dual_mono_vocals,
            mono_bass=0.0 if a.no_dual_mono else REAL.mono_bass,
            hard_pan=0.0 if a.no_hard_pan else REAL.hard_pan,
            vocal_free=None if a.no_vocal_free else REAL.vocal_free,
            silent_source=not a.no_silent_source,
        )
    )
    write_musdb_folder(
        a.root,
        train=a.train,
        valid=a.valid,
        test=a.test,
        seconds=a.seconds,
        seed=a.seed,
        traits=traits,
        stems_mp4=a.stems_mp4,
    )
    print(f"wrote {a.train} train, {a.valid} validation and {a.test} test tracks of {a.seconds:g} s to {a.root}")


if __name__ == "__main__":
    main()
