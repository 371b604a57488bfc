"""Peak resident memory separating a 10-minute track, per model, each in a fresh process.

    ./run.sh bench separation_memory [--seconds 600]

Prints the peak RSS of each model's process, what the input and output tracks alone take,
and the ratio to umxhq measured in the same run (target: <= 2.5 GB for every model).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys

LIMIT_GB = 2.5


def child(name: str, seconds: float) -> None:
    from common import SR, separator, test_signal

    x = test_signal(seconds)
    sep = separator(name)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    stems = sep.separate(x, SR)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB -> GiB
    track_gb = x.numel() * 4 / 2**30
    print(json.dumps({"peak": peak, "before": before, "track": track_gb, "stems": len(stems)}))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=600.0)
    p.add_argument("--models", default="dprnn,umxhq,conv1d")
    p.add_argument("--child")
    args = p.parse_args()
    if args.child:
        return child(args.child, args.seconds)
    results = {}
    for name in args.models.split(","):
        out = subprocess.run(
            [sys.executable, __file__, "--child", name, "--seconds", str(args.seconds)],
            capture_output=True,
            text=True,
            check=True,
        )
        results[name] = json.loads(out.stdout.strip().splitlines()[-1])
    print(
        f"{args.seconds / 60:.0f}-minute stereo 44.1 kHz track; "
        f"one stereo track = {results[name]['track']:.2f} GB float32"
    )
    for name, r in results.items():
        ok = "ok" if r["peak"] <= LIMIT_GB else f"OVER {LIMIT_GB} GB"
        print(
            f"  {name:7s} peak RSS {r['peak']:.2f} GB "
            f"(peak before separating: import, model, input {r['before']:.2f} GB)  {ok}"
        )
        if "umxhq" in results:
            print(f"  {name:7s} peak / umxhq peak = {r['peak'] / results['umxhq']['peak']:.2f}")


if __name__ == "__main__":
    main()
