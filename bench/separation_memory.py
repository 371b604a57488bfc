"""Peak resident memory separating a 10-minute track, per model, each in a fresh process.

    ./run.sh bench separation_memory [--seconds 600] [--shifts 1,2]

Prints the peak RSS of each model's process, what the input and output tracks alone take,
and the ratio to umxhq measured in the same run (target: <= 2.5 GiB for every model). With
`--shifts 1,2` each model runs once per number of averaged passes (`APP_SHIFTS`), and each
row gives its ratio to the same model's one pass too.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys

LIMIT_GIB = 2.5


def child(name: str, seconds: float, shifts: int) -> None:
    from common import SR, separator, test_signal

    x = test_signal(seconds)
    sep = separator(name, shifts=shifts)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    stems = sep.separate(x, SR)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB -> GiB
    track_gb = x.numel() * 4 / 2**30
    print(json.dumps({"peak": peak, "before": before, "track": track_gb, "stems": len(stems)}))


def passes(text: str) -> list[int]:
    """`--shifts 1,2` -> [1, 2]; argparse reports a ValueError as a usage error."""
    return [int(n) for n in text.split(",")]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=600.0)
    p.add_argument("--models", default="dprnn,umxhq,conv1d")
    p.add_argument("--shifts", default="1", type=passes, help="comma-separated numbers of averaged passes (default 1)")
    p.add_argument("--child")
    args = p.parse_args()
    if args.child:
        return child(args.child, args.seconds, args.shifts[0])
    results = {}
    for name in args.models.split(","):
        for n in args.shifts:
            out = subprocess.run(
                [sys.executable, __file__, "--child", name, "--seconds", str(args.seconds), "--shifts", str(n)],
                capture_output=True,
                text=True,
                check=True,
            )
            results[name, n] = json.loads(out.stdout.strip().splitlines()[-1])
    print(
        f"{args.seconds / 60:.0f}-minute stereo 44.1 kHz track; "
        f"one stereo track = {results[name, n]['track']:.2f} GiB float32"
    )
    for (name, n), r in results.items():
        ok = "ok" if r["peak"] <= LIMIT_GIB else f"OVER {LIMIT_GIB} GiB"
        label = name if args.shifts == [1] else f"{name} x{n}"
        print(
            f"  {label:10s} peak RSS {r['peak']:.2f} GiB "
            f"(peak before separating: import, model, input {r['before']:.2f} GiB)  {ok}"
        )
        if name != "umxhq" and ("umxhq", n) in results:  # the reference: its ratio to itself says nothing
            print(f"  {label:10s} peak / umxhq peak (same passes) = {r['peak'] / results['umxhq', n]['peak']:.2f}")
        if n != 1 and (name, 1) in results:
            print(f"  {label:10s} peak / its one pass = {r['peak'] / results[name, 1]['peak']:.2f}")


if __name__ == "__main__":
    main()
