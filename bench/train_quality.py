"""Separation quality on the held-out test split of a (synthetic) MUSDB-shaped set:
BSSEval v4 SDR medians (museval: 1-s windows, median over windows per track, then over
tracks) for the mixture as estimate (floor), the oracle ideal ratio mask (ceiling of
masking) and trained checkpoints.

    ./run.sh bench train_quality --musdb-root data/synthetic dprnn=runs/dprnn/best conv1d=runs/conv1d/best

Prints per method the vocals and accompaniment SDR medians and each model's gap to the IRM.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import museval
import numpy as np
import torch

import common  # noqa: F401  (puts the project on sys.path)

from separation import Separator
from separation.spectral import STFT
from training.data import TARGETS, load_track, open_musdb


def oracle_irm(mix: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """IRM1 (SiSEC 2018): mask_j = |S_j| / sum_k |S_k| on the mixture STFT (n_fft 4096)."""
    stft = STFT(4096, 1024)
    mags = stft(targets).abs()
    masks = mags / mags.sum(dim=0, keepdim=True).clamp_min(1e-8)
    return stft.inverse(masks * stft(mix)[None], mix.shape[-1])


def bsseval_sdr(targets: torch.Tensor, estimates: torch.Tensor) -> list[float]:
    """Median-over-windows BSSEval v4 SDR of each source; `(S, C, T)` tensors."""
    sdr, _, _, _ = museval.evaluate(targets.permute(0, 2, 1).numpy(), estimates.permute(0, 2, 1).numpy(), win=44100, hop=44100)
    return [float(np.nanmedian(s)) for s in sdr]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--musdb-root", required=True)
    p.add_argument("--limit", type=int, help="first N test tracks only")
    p.add_argument("--json", help="write the per-track scores here")
    p.add_argument("methods", nargs="*", help="NAME=CHECKPOINT pairs")
    args = p.parse_args()
    tracks = open_musdb(args.musdb_root, is_wav=True, subset="test")[: args.limit]
    separators = {}
    for item in args.methods:
        name, _, path = item.partition("=")
        separators[name] = Separator.from_pretrained(path, device="cpu")
    scores: dict[str, list[list[float]]] = {m: [] for m in ["mixture", "irm", *separators]}
    seconds = {m: 0.0 for m in scores}
    for track in tracks:
        mix, targets = load_track(track)
        for method in scores:
            start = time.perf_counter()
            if method == "mixture":
                est = mix.expand_as(targets)
            elif method == "irm":
                est = oracle_irm(mix, targets)
            else:
                stems = separators[method].separate(mix, 44100)
                est = torch.stack([stems[s] for s in TARGETS])
            seconds[method] += time.perf_counter() - start
            scores[method].append(bsseval_sdr(targets, est))
    print(f"{len(tracks)} test tracks of {args.musdb_root}; BSSEval v4 SDR, median over 1-s windows then tracks (dB)")
    print(f"  {'method':10s} {'vocals':>8s} {'accomp.':>8s}   gap to IRM (vocals)")
    irm = np.median(np.array(scores["irm"]), axis=0)
    for method, rows in scores.items():
        med = np.median(np.array(rows), axis=0)
        gap = f"{med[0] - irm[0]:+.2f}" if method != "irm" else ""
        print(f"  {method:10s} {med[0]:8.2f} {med[1]:8.2f}   {gap}")
    if args.json:
        medians = {m: dict(zip(TARGETS, np.median(np.array(rows), axis=0).tolist())) for m, rows in scores.items()}
        data = f"held-out test split of {Path(args.musdb_root).name}/, {len(tracks)} tracks"
        with open(args.json, "w") as f:
            json.dump({"data": data, "tracks": [t.name for t in tracks], "medians": medians, "scores": scores, "separation_seconds": seconds}, f, indent=1)


if __name__ == "__main__":
    main()
