"""Separation speed: the same 3-minute stereo track through DPRNN and umxhq, one run each.

    ./run.sh bench separation_speed [--seconds 180] [--device cpu|cuda] [--wiener 1] [--shifts 1 2]

Prints each model's wall time and real-time factor, and the ratio DPRNN time / umxhq time
measured in this run (targets on a 2-core CPU: DPRNN >= 20x real time, ratio <= 1). With
`--shifts 1 2`, also each model's time with two averaged passes over its time with one.
"""

from __future__ import annotations

import argparse
import platform
import time

import torch

from common import SR, separator, test_signal


def timed(name: str, x: torch.Tensor, device: str, wiener: int | None, shifts: int = 1) -> float:
    sep = separator(name, device=device, wiener=wiener, shifts=shifts)
    sep.separate(x[:, : 5 * SR], SR)  # warm-up: kernels, thread pools, allocator
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    start = time.perf_counter()
    sep.separate(x, SR)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return time.perf_counter() - start


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=180.0)
    p.add_argument("--device", default="cpu")
    p.add_argument("--wiener", type=int, nargs="*", default=[1, 0], help="EM iterations to compare at")
    p.add_argument("--shifts", type=int, nargs="*", default=[1], help="averaged passes to compare at")
    p.add_argument("--models", default="dprnn,umxhq,conv1d")
    args = p.parse_args()
    x = test_signal(args.seconds)
    names = args.models.split(",")
    print(
        f"{args.seconds:.0f}-s stereo 44.1 kHz track on {args.device} "
        f"({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"
    )
    for wiener in args.wiener:
        base = {}
        for shifts in args.shifts:
            times = {}
            for name in names:
                w = None if name == "conv1d" else wiener
                times[name] = timed(name, x, args.device, w, shifts)
                base.setdefault(name, times[name])
                print(
                    f"  wiener={wiener} shifts={shifts} {name:7s} {times[name]:7.2f} s   "
                    f"{args.seconds / times[name]:6.1f}x real time   {times[name] / base[name]:.2f}x the first --shifts"
                )
            if "dprnn" in times and "umxhq" in times:
                ratio = times["dprnn"] / times["umxhq"]
                print(f"  wiener={wiener} shifts={shifts} ratio dprnn/umxhq time = {ratio:.2f}")


if __name__ == "__main__":
    main()
