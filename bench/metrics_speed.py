"""BSSEval v4 speed: the fast torch backend vs museval on one 60-second stereo track, 2 sources.

    ./run.sh bench metrics_speed [--seconds 60] [--device cpu|cuda]

Two tracks: a synthetic song whose vocals are panned, and the same song with exactly dual-mono
vocals (left == right, as in many MUSDB stems), which makes BSSEval's least-squares systems
singular. The estimates are the oracle IRM separation, as in a real evaluation. One timed run
of each backend per track (after a 3-s warm-up of the fast one); prints both wall times, the
ratio museval time / fast time (target >= 10 on this CPU) and the largest difference between
their scores (target < 0.01 dB; values above 100 dB, round-off in both, are left out and counted).
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
from songgen.synthetic import Traits, make_track


def track(seconds: float, dual_mono: bool) -> tuple[np.ndarray, np.ndarray]:
    song = make_track(2024, seconds, Traits(dual_mono_vocals=1.0 if dual_mono else 0.0))
    vocals = torch.from_numpy(song["vocals"].T.copy())
    mix = torch.from_numpy(song["mixture"].T.copy())
    refs = torch.stack([vocals, mix - vocals])
    return refs.double().numpy(), oracle_masks(mix, refs, "irm").double().numpy()


def compare(refs: np.ndarray, ests: np.ndarray, device: str) -> tuple[dict, float, int]:
    times, scores = {}, {}
    for backend in ("fast", "museval"):
        start = time.perf_counter()
        scores[backend] = framewise(refs, ests, backend=backend, device=device)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        times[backend] = time.perf_counter() - start
    diff, floor = 0.0, 0
    for m in BSS_METRICS:
        a, b = scores["fast"][m], scores["museval"][m]
        both = np.isfinite(a) & np.isfinite(b)
        roundoff = both & (a > 100) & (b > 100)
        floor += int(roundoff.sum())
        keep = both & ~roundoff
        if keep.any():
            diff = max(diff, float(np.abs(a[keep] - b[keep]).max()))
    return times, diff, floor


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=60.0)
    p.add_argument("--device", default="cpu")
    args = p.parse_args()
    where = (
        torch.cuda.get_device_name()
        if args.device.startswith("cuda")
        else f"{platform.processor() or 'cpu'}, {torch.get_num_threads()} threads"
    )
    print(
        f"BSSEval v4 of a {args.seconds:.0f}-s stereo track, 2 sources, IRM estimates; "
        f"fast on {args.device} ({where}); both include SI-SDR"
    )
    for dual_mono in (False, True):
        refs, ests = track(args.seconds, dual_mono)
        framewise(refs[..., : 3 * 44100], ests[..., : 3 * 44100], backend="fast", device=args.device)  # warm-up
        times, diff, floor = compare(refs, ests, args.device)
        assert dual_mono == bool(np.array_equal(refs[0, 0], refs[0, 1]))
        print(
            f"  {'dual-mono vocals' if dual_mono else 'panned vocals':17s} museval {times['museval']:6.2f} s  "
            f"fast {times['fast']:5.2f} s  ratio {times['museval'] / times['fast']:5.1f}x (target >= 10)  "
            f"largest difference {diff:.1e} dB (target < 0.01; {floor} round-off values > 100 dB left out)"
        )


if __name__ == "__main__":
    main()
