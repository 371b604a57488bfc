"""Validation speed: the parts of the whole-track validation `python -m training` runs every epoch.

    ./run.sh bench validation_speed [--seconds 240] [--tracks 2] [--device cpu|cuda] [--models dprnn,umx]

Per model: the separation of whole tracks through the overlap-add chunker on `--device`, the
spectral validation loss (a segment of STFT frames at a time) on the CPU and on `--device`
(where the training loop computes it), and uSDR. Prints seconds per minute of audio and, on a
GPU, the ratio loss on the device / loss on the CPU measured in this run. Track content does
not change the cost: the tracks are music-shaped noise split into two sources.
"""

from __future__ import annotations

import argparse
import platform
import time

import torch

from common import SR, test_signal
from separation.models import build_model
from separation.separator import overlap_add
from separation.spectral import STFT
from training.losses import LossConfig, whole_track_spectral_loss
from training.validation import usdr


def timed(device: torch.device, fn, *args) -> tuple[float, object]:
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    out = fn(*args)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start, out


@torch.no_grad()
def measure(name: str, tracks: list[tuple[torch.Tensor, torch.Tensor]], device: torch.device) -> dict[str, float]:
    model = build_model(name).eval().to(device)
    model.wiener_iterations = 0  # as in validation: the training objective's own estimate
    stfts = {"cpu": STFT(model.config.n_fft, model.config.hop), device.type: model.stft}  # one entry on a CPU
    segment = int(model.segment_seconds * model.sample_rate)

    def separate(mix):
        return overlap_add(model, mix, segment=segment, device=device, min_length=model.min_samples)

    mix, targets = (x[..., : 10 * SR] for x in tracks[0])
    separate(mix)  # warm-up: kernels, allocator, cuDNN plans
    for stft in stfts.values():
        whole_track_spectral_loss(targets, targets, mix, stft, LossConfig())
    times = {"separation": 0.0, "usdr": 0.0, **{f"loss_{d}": 0.0 for d in stfts}}
    for mix, targets in tracks:
        t, est = timed(device, separate, mix)
        times["separation"] += t
        for place, stft in stfts.items():
            times[f"loss_{place}"] += timed(device, whole_track_spectral_loss, est, targets, mix, stft, LossConfig())[0]
        times["usdr"] += sum(timed(device, usdr, est[i], targets[i])[0] for i in range(2))
    return times


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=240.0, help="length of each track (MUSDB's mean is ~4 min)")
    p.add_argument("--tracks", type=int, default=2)
    p.add_argument("--device", default="cpu")
    p.add_argument("--models", default="dprnn,umx")
    args = p.parse_args()
    device = torch.device(args.device)
    tracks = []
    for k in range(args.tracks):
        mix = test_signal(args.seconds, seed=k)
        vocals = 0.5 * test_signal(args.seconds, seed=1000 + k)
        tracks.append((mix + vocals, torch.stack([vocals, mix])))
    minutes = args.tracks * args.seconds / 60
    print(
        f"{args.tracks} tracks of {args.seconds:.0f} s, separated on {args.device} "
        f"({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads); "
        "seconds per minute of audio"
    )
    for name in args.models.split(","):
        times = measure(name, tracks, device)
        parts = "  ".join(f"{k} {v / minutes:6.3f}" for k, v in times.items())
        print(f"  {name:6s} {parts}")
        if device.type != "cpu":
            total_cpu = times["separation"] + times["loss_cpu"] + times["usdr"]
            total_dev = times["separation"] + times[f"loss_{device.type}"] + times["usdr"]
            ratio = times[f"loss_{device.type}"] / times["loss_cpu"]
            print(
                f"  {name:6s} ratio loss on {device.type} / loss on cpu = {ratio:.2f}; "
                f"validation pass {total_dev / minutes:.3f} vs {total_cpu / minutes:.3f} s per minute of audio"
            )


if __name__ == "__main__":
    main()
