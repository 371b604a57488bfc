"""Peak memory of `python -m eval` on full-length (7-minute) tracks, fast backend vs museval.

    ./run.sh bench eval_memory [--minutes 7]

Writes two MUSDB18-HQ-shaped 7-minute songs (a 30-s synthetic song with real data's traits,
repeated) and runs the real command on them, sampling the resident memory of the whole process
tree (parent and `--jobs` workers) from /proc every 20 ms:
  - `--methods irm` on one track with each backend (ratio fast / museval),
  - `--methods dprnn` on one track (a model's separation on top of the metrics),
  - `--methods irm --jobs 2` on both tracks with the fast backend (two workers at once).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

import common  # noqa: F401  (puts the project on sys.path)
from procmem import run_measured
from songgen.synthetic import make_track, write_track

ROOT = Path(__file__).resolve().parents[1]
GB = 2**30


def write_songs(root: Path, minutes: float) -> None:
    repeats = int(round(minutes * 2))
    for i, seed in enumerate((11, 12)):
        song = make_track(seed, 30.0)
        write_track(root / "test" / f"Song {i} - Full Length", {k: np.tile(v, (repeats, 1)) for k, v in song.items()})


def measure(root: Path, out: Path, *args: str) -> tuple[float, float]:
    cmd = [sys.executable, "-m", "eval", "--musdb-root", str(root), "--is-wav", "--out", str(out), "-q", *args]
    start = time.perf_counter()
    peak, code = run_measured(cmd, cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT)), stdout=subprocess.DEVNULL)
    if code != 0:
        raise SystemExit(f"{' '.join(cmd)} failed with status {code}")
    return peak / GB, time.perf_counter() - start


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--minutes", type=float, default=7.0)
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "musdb"
        write_songs(root, args.minutes)
        one = ["--tracks", "Song 0 - Full Length"]
        rows = {
            "irm, fast": measure(root, Path(tmp) / "a", "--methods", "irm", *one),
            "irm, museval": measure(root, Path(tmp) / "b", "--methods", "irm", "--backend", "museval", *one),
            "dprnn, fast": measure(root, Path(tmp) / "c", "--methods", "dprnn", *one),
            "irm, fast, 2 tracks, --jobs 2": measure(
                root, Path(tmp) / "d", "--methods", "irm", "--jobs", "2", "--max-memory", "64"
            ),
        }
    print(f"python -m eval on {args.minutes:g}-minute stereo tracks: peak resident memory of the process tree")
    for name, (peak, seconds) in rows.items():
        print(f"  {name:32s} {peak:5.2f} GB  ({seconds:.0f} s)")
    ratio = rows["irm, fast"][0] / rows["irm, museval"][0]
    print(f"  ratio fast / museval (one track, irm) = {ratio:.2f}")


if __name__ == "__main__":
    main()
