"""Procedural instruments: a random synthesiser patch per part, for timbres no soundfont has.

Debian ships four independent General MIDI soundfonts, and two of them (TimGM6mb, FluidR3) are
held out for evaluation (`songgen.world.sounds`), so every pitched instrument a model trains on
comes from two banks. A model that learned those banks' ~250 presets meets TimGM6mb's and FluidR3's
instruments as new sounds. `--patch-share P` (`python -m songgen.world`, training sounds only)
plays a share of the bass and `other` parts on a patch drawn at random instead: additive
(band-limited saw, square, triangle or organ drawbars, optionally stretched like a piano's
strings), or two-operator FM; an amplitude envelope from percussive to bowed, a brightness
envelope, a resonant peak, unison voices spread in stereo, vibrato and a noise attack. The
parameter space, not any one patch, is the point: no two songs share an instrument.

Deterministic: a patch is its parameters, drawn from the generator it is given, and the same
notes give the same samples. No sample data; numpy only.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass

import numpy as np

from separation.audio import SAMPLE_RATE

from .synth import Note

KINDS = ("saw", "square", "triangle", "organ", "fm")
MAX_HARMONICS = 32  # a band-limited tone: harmonics above ~12 kHz are dropped too
TOP_HZ = 12_000.0


def _log_uniform(rng: np.random.Generator, lo: float, hi: float) -> float:
    return float(np.exp(rng.uniform(np.log(lo), np.log(hi))))


@dataclass(frozen=True)
class Patch:
    """One synthesiser sound. Times in seconds; `cutoff` and `peak` as multiples of the note's
    fundamental (a brightness that follows the key, as a key-tracked filter), `detune` in cents."""

    kind: str
    drawbars: tuple[float, ...]  # organ: levels of harmonics 1-8
    stretch: float  # inharmonicity B: partial k at k*f0*sqrt(1 + B k^2)
    cutoff: float  # brightness at rest (harmonic number of the -6 dB point)
    sweep: float  # extra brightness at the note's start, decaying with `sweep_time`
    sweep_time: float
    peak: float  # resonant boost at the cutoff, linear gain
    attack: float
    decay: float
    sustain: float  # level after decay (0: plucked or struck)
    release: float
    fm_ratio: float
    fm_index: float
    voices: int  # unison voices
    detune: float
    width: float  # stereo spread of the unison, 0-1
    vibrato_cents: float
    vibrato_hz: float
    noise: float  # level of a short noise burst at the attack

    @classmethod
    def draw(cls, rng: np.random.Generator, role: str) -> Patch:
        """A random patch for a part of `role` (bass, comp, pad, lead)."""
        kind = str(rng.choice(KINDS))
        bars = tuple(float(x) for x in rng.uniform(0, 1, 8) * (rng.random(8) < 0.6)) if kind == "organ" else ()
        if kind == "organ" and not any(bars):
            bars = (1.0,) + bars[1:]
        sustained = role in ("pad", "lead") or rng.random() < 0.4
        bass = role == "bass"  # a bass stays a bass: its energy low, as the stems' tests expect of MUSDB's
        return cls(
            kind=kind,
            drawbars=bars,
            stretch=_log_uniform(rng, 1e-5, 2e-3) if rng.random() < 0.3 else 0.0,
            cutoff=_log_uniform(rng, 1.5, 8.0 if bass else 24.0),
            sweep=_log_uniform(rng, 0.1, 3.0 if bass else 12.0) if rng.random() < 0.6 else 0.0,
            sweep_time=_log_uniform(rng, 0.02, 0.8),
            peak=float(rng.uniform(0, 3)) if rng.random() < 0.4 else 0.0,
            attack=_log_uniform(rng, 0.04, 0.4) if role == "pad" else _log_uniform(rng, 0.001, 0.08),
            decay=_log_uniform(rng, 0.08, 2.5),
            sustain=float(rng.uniform(0.3, 1.0)) if sustained else float(rng.uniform(0.0, 0.15)),
            release=_log_uniform(rng, 0.02, 0.6),
            fm_ratio=float(rng.choice([0.5, 1.0, 2.0] if bass else [0.5, 1.0, 1.0, 2.0, 3.0, 3.5, 4.0, 5.0, 7.0])),
            fm_index=_log_uniform(rng, 0.2, 2.0 if bass else 6.0),
            voices=int(rng.choice([1, 1, 2, 3])),
            detune=float(rng.uniform(2, 15)),
            width=float(rng.uniform(0, 1)),
            vibrato_cents=float(rng.uniform(5, 25)) if rng.random() < 0.4 else 0.0,
            vibrato_hz=float(rng.uniform(4, 7)),
            noise=float(rng.uniform(0.02, 0.3)) if rng.random() < 0.35 else 0.0,
        )

    @property
    def id(self) -> str:
        """A short name for the parameters (what `world.json` records of the part)."""
        text = repr(sorted(asdict(self).items())).encode()
        return f"patch:{self.kind}:{hashlib.sha1(text).hexdigest()[:8]}"

    def render(self, notes: list[Note], seconds: float) -> np.ndarray:
        """`(T, 2)` float32 of `notes` played on this patch, T = `seconds` at the project's rate."""
        total = int(seconds * SAMPLE_RATE)
        out = np.zeros((total, 2), np.float32)
        for i, note in enumerate(notes):
            at = int(note.start * SAMPLE_RATE)
            if at >= total:
                continue
            tone = self._note(note, i)
            n = min(len(tone), total - at)
            out[at : at + n] += tone[:n]
        return out

    # ------------------------------------------------------------------ one note

    def _envelope(self, t: np.ndarray, held: int) -> np.ndarray:
        """ADSR at the note's times `t` (seconds, `(n,)`), the key released after `held` samples;
        `(n,)` float32."""
        n = len(t)
        attack = np.minimum(t / self.attack, 1.0)
        decay = self.sustain + (1.0 - self.sustain) * np.exp(-np.maximum(t - self.attack, 0.0) / self.decay)
        env = attack * decay
        release = np.exp(-np.maximum(t - held / SAMPLE_RATE, 0.0) / (self.release / 4.0))  # -35 dB at `release`
        tail = min(n, int(0.005 * SAMPLE_RATE))
        release[n - tail :] *= np.linspace(1.0, 0.0, tail)  # ends at exactly 0: no click where it stops
        return (env * release).astype(np.float32)

    def _note(self, note: Note, index: int) -> np.ndarray:
        held = max(int(note.length * SAMPLE_RATE), 64)
        n = held + int(self.release * SAMPLE_RATE)
        f0 = 440.0 * 2.0 ** ((note.pitch - 69) / 12.0)
        t = np.arange(n, dtype=np.float32) / SAMPLE_RATE
        # Per-note phases from the note's own index and pitch: deterministic, and chords do not
        # start every voice in phase.
        phase_rng = np.random.default_rng([index, note.pitch])
        vib = 1.0
        if self.vibrato_cents:
            onset = np.minimum(t / 0.3, 1.0)  # vibrato grows in over 0.3 s
            vib = 2.0 ** (self.vibrato_cents / 1200.0 * onset * np.sin(2 * np.pi * self.vibrato_hz * t))
        bright = 1.0 + self.sweep * np.exp(-t / self.sweep_time)  # (n,): brightness envelope
        left = np.zeros(n, np.float32)
        right = np.zeros(n, np.float32)
        for v in range(self.voices):
            offset = 0.0 if self.voices == 1 else (v / (self.voices - 1) - 0.5) * 2.0
            f = f0 * 2.0 ** (offset * self.detune / 1200.0)
            phase = 2 * np.pi * np.cumsum(f * vib * np.ones(n, np.float32), dtype=np.float64) / SAMPLE_RATE
            tone = self._tone(phase, f, bright, phase_rng)
            pan = 0.5 + 0.5 * offset * self.width
            left += tone * np.float32(np.sqrt(1.0 - pan))
            right += tone * np.float32(np.sqrt(pan))
        tone = np.stack([left, right], axis=1) / np.sqrt(self.voices)
        if self.noise:
            burst = phase_rng.standard_normal(min(n, int(0.03 * SAMPLE_RATE))).astype(np.float32)
            burst *= np.exp(-np.arange(len(burst)) / (0.006 * SAMPLE_RATE)).astype(np.float32)
            tone[: len(burst)] += (self.noise * burst)[:, None]
        gain = (note.velocity / 127.0) ** 1.5
        return (tone * (self._envelope(t, held) * gain)[:, None]).astype(np.float32)

    def _tone(self, phase: np.ndarray, f0: float, bright: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """One unison voice, `(n,)` float32, from its running phase (radians, float64)."""
        if self.kind == "fm":
            index = self.fm_index * np.minimum(bright / (1.0 + self.sweep), 1.0) if self.sweep else self.fm_index
            return np.sin(phase + index * np.sin(self.fm_ratio * phase)).astype(np.float32)
        k = np.arange(1, MAX_HARMONICS + 1, dtype=np.float64)
        partials = k * np.sqrt(1.0 + self.stretch * k**2)
        keep = partials * f0 < min(TOP_HZ, 0.45 * SAMPLE_RATE)
        k, partials = k[keep], partials[keep]
        if self.kind == "saw":
            amps = 1.0 / k
        elif self.kind == "square":
            amps = np.where(k % 2 == 1, 1.0 / k, 0.0)
        elif self.kind == "triangle":
            amps = np.where(k % 2 == 1, 1.0 / k**2, 0.0)
        else:  # organ: drawbars on the first eight harmonics
            bars = np.zeros(len(k))
            m = min(len(k), len(self.drawbars))
            bars[:m] = self.drawbars[:m]
            amps = bars
        live = amps > 0
        k, partials, amps = k[live], partials[live], amps[live]
        if not len(k):
            return np.zeros(len(phase), np.float32)

        # A brightness that moves with the envelope, as a low-pass sweep: each partial's gain at
        # two brightness levels, and the envelope fading between them (two matrix products).
        def spectrum(cut: float) -> np.ndarray:
            rel = partials / cut
            g = 1.0 / np.sqrt(1.0 + rel**4)  # a 2-pole low-pass in harmonic numbers
            if self.peak:
                g *= 1.0 + self.peak * np.exp(-(((partials - cut) / (0.2 * cut + 0.5)) ** 2))
            return (amps * g).astype(np.float32)

        sines = np.sin(np.outer(partials, phase) + rng.uniform(0, 2 * np.pi, (len(k), 1))).astype(np.float32)
        rest = spectrum(self.cutoff) @ sines
        if not self.sweep:
            return rest
        top = spectrum(self.cutoff * (1.0 + self.sweep)) @ sines
        mix = ((bright - 1.0) / self.sweep).astype(np.float32)  # 1 at the start, 0 at rest
        return mix * top + (1.0 - mix) * rest
