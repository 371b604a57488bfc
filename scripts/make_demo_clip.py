"""Write a short synthetic song (a sung-like vowel over chords and drums) to try the CLI on.

    python scripts/make_demo_clip.py out/demo.wav [--seconds 12]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import soundfile as sf


def demo_clip(seconds: float = 12.0, sr: int = 44100, seed: int = 0) -> np.ndarray:
    """`(T, 2)` float32: vibrato harmonic voice with pauses, chord pad, kick and hi-hat."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sr)) / sr
    notes = 220 * 2 ** (np.array([0, 3, 5, 7, 5, 3, 0, -2]) / 12)
    f0 = notes[(t / 0.75).astype(int) % len(notes)] * (1 + 0.015 * np.sin(2 * np.pi * 5.5 * t))
    phase = 2 * np.pi * np.cumsum(f0) / sr
    formants = (1.0, 0.8, 0.5, 0.6, 0.3, 0.2, 0.15, 0.1)  # a rough "ah"
    voice = sum(a * np.sin((k + 1) * phase) for k, a in enumerate(formants))
    voice *= ((t % 3.0) < 2.4) * np.clip(np.sin(np.pi * (t % 0.75) / 0.75) * 3, 0, 1)
    chords = sum(np.sin(2 * np.pi * f * t) for f in (110.0, 138.6, 164.8, 220.0)) / 4
    beat = t % 0.5
    kick = np.sin(2 * np.pi * 55 * beat) * np.exp(-beat * 20)
    hat = rng.standard_normal(t.size) * np.exp(-((t + 0.25) % 0.5) * 60) * 0.3
    band = chords * 0.5 + kick + hat
    left, right = 0.25 * voice + 0.3 * band, 0.25 * voice + 0.25 * band
    return (np.stack([left, right], axis=1) * 0.6).astype(np.float32)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("out", type=Path)
    p.add_argument("--seconds", type=float, default=12.0)
    args = p.parse_args()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    sf.write(args.out, demo_clip(args.seconds), 44100, subtype="PCM_24")
    print(f"wrote {args.out} ({args.seconds:.0f} s)")


if __name__ == "__main__":
    main()
