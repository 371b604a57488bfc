"""Render speed of the training world: tracks per minute on this machine, one process and
`--jobs` processes, against the synthetic generator (`songgen.synthetic`) in the same run.

    ./run.sh bench world_render [--tracks 8] [--seconds 30] [--jobs 2] [--patch-share 0.5] [--singer-share 0.5]

With `--patch-share P` it also renders the same tracks with synthesiser patches
(`songgen.world.patches`), with `--singer-share P` with varied singers (`voices.Singer`), and
prints each rate against the plain one.

Each process loads its soundfonts once (MuseScore General: ~5 s), as a long render does; the
first track of each process pays it, so more tracks give a truer rate.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import common  # noqa: F401  (puts the project on sys.path)
from songgen.synthetic import Traits, make_track
from songgen.world.render import write_world


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tracks", type=int, default=8)
    p.add_argument("--seconds", type=float, default=30.0)
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument("--patch-share", type=float, default=0.0, help="also render with this share of patched parts")
    p.add_argument("--singer-share", type=float, default=0.0, help="also render with this share of varied singers")
    a = p.parse_args()
    t0 = time.perf_counter()
    for i in range(a.tracks):
        make_track(i, a.seconds, Traits())
    synthetic = 60 * a.tracks / (time.perf_counter() - t0)
    print(f"{a.tracks} tracks of {a.seconds:g} s")
    print(f"  synthetic generator (1 process, in memory): {synthetic:6.1f} tracks/min")
    rates = {}
    for jobs in sorted({1, a.jobs}):
        with tempfile.TemporaryDirectory() as tmp:
            meta = write_world(Path(tmp) / "w", train=a.tracks, valid=0, test=0, seconds=a.seconds, jobs=jobs)
        rates[jobs] = meta["tracks_per_minute"]
        per = sorted(t["seconds_to_render"] for t in meta["tracks"])
        print(
            f"  world, {jobs} process(es), written to disk:  {rates[jobs]:6.1f} tracks/min "
            f"(per track {per[len(per) // 2]:.1f} s median, {per[-1]:.1f} s slowest)"
        )
    print(f"  ratio world / synthetic (1 process): {rates[1] / synthetic:.2f}")
    if a.jobs > 1:
        print(f"  speed-up with {a.jobs} processes: {rates[a.jobs] / rates[1]:.2f}x")
    kw = dict(train=a.tracks, valid=0, test=0, seconds=a.seconds, jobs=a.jobs)
    for option, share in (("patch_share", a.patch_share), ("singer_share", a.singer_share)):
        if not share:
            continue
        with tempfile.TemporaryDirectory() as tmp:
            meta = write_world(Path(tmp) / "p", **{option: share}, **kw)
        rate = meta["tracks_per_minute"]
        if option == "patch_share":
            played = [p for t in meta["tracks"] for p in t["parts"]["bass"] + t["parts"]["other"]]
            what = f"{sum(':patch:' in p for p in played)} of {len(played)} parts patched"
        else:
            what = f"{sum('singer' in t for t in meta['tracks'])} of {len(meta['tracks'])} songs by varied singers"
        print(
            f"  world with --{option.replace('_', '-')} {share:g} ({what}), {a.jobs} process(es): "
            f"{rate:6.1f} tracks/min, ratio to plain {rate / rates[a.jobs]:.2f}"
        )


if __name__ == "__main__":
    main()
