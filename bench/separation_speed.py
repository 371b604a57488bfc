"""Separation speed: the same stereo track through DPRNN and umxhq, interleaved, best of several runs.

    ./run.sh bench separation_speed [--seconds 60] [--repeats 5] [--device cpu|cuda] [--wiener 1]
                                    [--shifts 1 2] [--allocator tuned|default] [--profile dprnn]

Each model separates the track `--repeats` times, the models taking turns so that a slow spell
of a shared machine hits them alike. Prints each model's best and median wall time, real-time
factor and page faults per run, and the ratio DPRNN time / umxhq time measured in this run
(targets on a 2-core CPU, 60-s track: DPRNN >= 60x real time, ratio <= 0.7). `--allocator
default` leaves glibc's malloc as it is (see `separation.allocator`), to show what its tuning
gains; `--profile NAME` prints `torch.profiler`'s table of one more run of that model.
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import statistics
import time

import torch

from common import SR, separator, test_signal


def timed_run(sep, x: torch.Tensor, device: str) -> tuple[float, int]:
    """One separation: (seconds, minor page faults)."""
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    start = time.perf_counter()
    sep.separate(x, SR)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return time.perf_counter() - start, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults


def profile(sep, x: torch.Tensor, rows: int = 25) -> None:
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        sep.separate(x, SR)
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=rows))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=60.0)
    p.add_argument("--repeats", type=int, default=5, help="timed runs per model (after one warm-up)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--wiener", type=int, nargs="*", default=[1], help="EM iterations to compare at")
    p.add_argument("--shifts", type=int, nargs="*", default=[1], help="averaged passes to compare at")
    p.add_argument("--models", default="dprnn,umxhq,conv1d")
    p.add_argument("--allocator", choices=("tuned", "default"), default="tuned")
    p.add_argument("--profile", metavar="NAME", help="print the profile of one more run of this model")
    args = p.parse_args()
    if args.allocator == "default":
        os.environ["SEPARATION_ALLOCATOR"] = "default"  # read when the first Separator is built
    x = test_signal(args.seconds)
    names = args.models.split(",")
    print(
        f"{args.seconds:.0f}-s stereo 44.1 kHz track on {args.device} "
        f"({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads), "
        f"allocator {args.allocator}, best and median of {args.repeats} runs"
    )
    for wiener in args.wiener:
        first: dict[str, float] = {}
        for shifts in args.shifts:
            seps = {
                name: separator(name, device=args.device, wiener=None if name == "conv1d" else wiener, shifts=shifts)
                for name in names
            }
            for sep in seps.values():
                sep.separate(x[:, : 5 * SR], SR)  # warm-up: kernels, thread pools, allocator
            runs: dict[str, list[tuple[float, int]]] = {name: [] for name in names}
            for _ in range(args.repeats):
                for name, sep in seps.items():
                    runs[name].append(timed_run(sep, x, args.device))
            best = {name: min(t for t, _ in r) for name, r in runs.items()}
            median = {name: statistics.median(t for t, _ in r) for name, r in runs.items()}
            for name in names:
                first.setdefault(name, best[name])
                faults = statistics.median(f for _, f in runs[name])
                print(
                    f"  wiener={wiener} shifts={shifts} {name:7s} best {best[name]:6.2f} s "
                    f"({args.seconds / best[name]:5.1f}x real time)  median {median[name]:6.2f} s  "
                    f"page faults/run {faults:9,.0f}  {best[name] / first[name]:.2f}x the first --shifts"
                )
            if "dprnn" in best and "umxhq" in best:
                print(
                    f"  wiener={wiener} shifts={shifts} ratio dprnn/umxhq time = {best['dprnn'] / best['umxhq']:.2f} "
                    f"(best), {median['dprnn'] / median['umxhq']:.2f} (median)"
                )
            if args.profile:
                print(f"\nprofile of one {args.profile} run (wiener={wiener}, shifts={shifts}):")
                profile(seps[args.profile], x)


if __name__ == "__main__":
    main()
