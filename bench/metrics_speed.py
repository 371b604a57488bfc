"""BSSEval v4 speed: the fast torch backend vs museval on one 60-second stereo track, 2 sources.

    ./run.sh bench metrics_speed [--seconds 60] [--device cpu|cuda]

The track is a synthetic song (vocals, accompaniment) and the estimates are its oracle
IRM separation, as in a real evaluation. One timed run of each backend (after a 3-s warm-up
of the fast one); prints both wall times, the ratio museval time / fast time (target >= 10 on
this CPU) and the largest difference between their scores (target < 0.01 dB).
"""

from __future__ import annotations

import argparse
import platform
import time

import numpy as np
import torch

import common  # noqa: F401  (puts the project on sys.path)

from eval.methods import oracle_masks
from eval.scores import BSS_METRICS, framewise
from training.synthetic import make_track


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=60.0)
    p.add_argument("--device", default="cpu")
    args = p.parse_args()
    song = make_track(2024, seconds=args.seconds)
    mix = torch.from_numpy(song["mixture"].T.copy())
    refs = torch.stack([torch.from_numpy(song["vocals"].T.copy()), mix - torch.from_numpy(song["vocals"].T.copy())])
    ests = oracle_masks(mix, refs, "irm")
    refs, ests = refs.double().numpy(), ests.double().numpy()

    framewise(refs[..., : 3 * 44100], ests[..., : 3 * 44100], backend="fast", device=args.device)  # warm-up
    times, scores = {}, {}
    for backend in ("fast", "museval"):
        start = time.perf_counter()
        scores[backend] = framewise(refs, ests, backend=backend, device=args.device)
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()
        times[backend] = time.perf_counter() - start
    diff = max(
        float(np.nanmax(np.abs(scores["fast"][m] - scores["museval"][m]))) for m in BSS_METRICS
    )
    where = torch.cuda.get_device_name() if args.device.startswith("cuda") else f"{platform.processor() or 'cpu'}, {torch.get_num_threads()} threads"
    print(f"BSSEval v4 of a {args.seconds:.0f}-s stereo track, 2 sources, {scores['fast']['SDR'].shape[1]} windows; fast on {args.device} ({where})")
    print(f"  museval  {times['museval']:7.2f} s")
    print(f"  fast     {times['fast']:7.2f} s   (both rows include SI-SDR)")
    print(f"  ratio museval / fast = {times['museval'] / times['fast']:.1f}x   (target >= 10)")
    print(f"  largest difference in SDR/SIR/ISR/SAR: {diff:.2e} dB   (target < 0.01)")


if __name__ == "__main__":
    main()
