"""Write a synthetic song (sung-like voice over a band, from `training.synthetic`) to try the CLI on.

    python scripts/make_demo_clip.py out/demo.wav [--seconds 12] [--seed 7]

Also writes the true stems beside it (`demo.vocals.wav`, `demo.accompaniment.wav`), so a
separation of it can be scored.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import soundfile as sf

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from training.synthetic import SR, make_track  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("out", type=Path)
    p.add_argument("--seconds", type=float, default=12.0)
    p.add_argument("--seed", type=int, default=7_000_001)  # not one of the demo checkpoints' training songs
    args = p.parse_args()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    track = make_track(args.seed, args.seconds)
    sf.write(args.out, track["mixture"], SR, subtype="PCM_16")
    sf.write(args.out.with_suffix(".vocals.wav"), track["vocals"], SR, subtype="PCM_16")
    sf.write(args.out.with_suffix(".accompaniment.wav"), track["mixture"] - track["vocals"], SR, subtype="FLOAT")
    print(f"wrote {args.out} ({args.seconds:.0f} s) and its reference stems")


if __name__ == "__main__":
    main()
