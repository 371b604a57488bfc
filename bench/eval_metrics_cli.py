"""`python -m eval metrics` as a user runs it: the whole process, museval backend vs fast backend.

    ./run.sh bench eval_metrics_cli [--seconds 60] [--runs 3]

Writes the references (vocals, accompaniment of a synthetic song with dual-mono vocals and
vocal-free stretches) and IRM estimates of one track as float wav files, then times
`python -m eval metrics REF EST --backend B` end to end (interpreter start, imports, decoding,
scoring, printing), the median of `--runs` runs each. Prints both times and the ratio
museval / fast (target >= 5), and checks that both print the same table (within 0.01 dB).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

import common  # noqa: F401  (puts the project on sys.path)
from eval.methods import oracle_masks
from songgen.synthetic import make_track

ROOT = Path(__file__).resolve().parents[1]


def write_folders(folder: Path, seconds: float) -> tuple[Path, Path]:
    song = make_track(2024, seconds)
    song["vocals"][:, 1] = song["vocals"][:, 0]  # dual-mono vocals: the singular case, as on MUSDB
    mix = torch.from_numpy((song["vocals"] + song["drums"] + song["bass"] + song["other"]).T.copy())
    refs = torch.stack([torch.from_numpy(song["vocals"].T.copy()), mix - torch.from_numpy(song["vocals"].T.copy())])
    ests = oracle_masks(mix, refs, "irm")
    ref_dir, est_dir = folder / "references", folder / "estimates"
    for d, data in ((ref_dir, refs), (est_dir, ests)):
        d.mkdir()
        for name, wave in zip(("vocals", "accompaniment"), data, strict=True):
            sf.write(d / f"{name}.wav", wave.numpy().T, 44100, subtype="FLOAT")
    return ref_dir, est_dir


def timed(cmd: list[str]) -> tuple[float, str]:
    start = time.perf_counter()
    res = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=True)
    return time.perf_counter() - start, res.stdout


def table(text: str) -> np.ndarray:
    rows = [
        line.split()[1:]
        for line in text.splitlines()
        if line.split() and line.split()[0] in ("vocals", "accompaniment")
    ]
    return np.array(rows, dtype=float)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=60.0)
    p.add_argument("--runs", type=int, default=3)
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        ref_dir, est_dir = write_folders(Path(tmp), args.seconds)
        times, outputs = {}, {}
        for backend in ("fast", "museval"):
            cmd = [sys.executable, "-m", "eval", "metrics", str(ref_dir), str(est_dir), "--backend", backend]
            runs = [timed(cmd) for _ in range(args.runs)]
            times[backend] = statistics.median(t for t, _ in runs)
            outputs[backend] = runs[0][1]
    diff = np.abs(table(outputs["fast"]) - table(outputs["museval"]))
    print(
        f"python -m eval metrics, {args.seconds:.0f}-s stereo track, 2 sources (dual-mono vocals), whole process, "
        f"median of {args.runs} runs, {torch.get_num_threads()} CPU threads"
    )
    print(f"  --backend museval {times['museval']:6.2f} s")
    print(f"  --backend fast    {times['fast']:6.2f} s")
    print(f"  ratio museval / fast = {times['museval'] / times['fast']:.1f}x   (target >= 5)")
    print(f"  largest difference in the printed medians: {diff.max():.2f} dB (printed to 0.01 dB; target < 0.01)")


if __name__ == "__main__":
    main()
