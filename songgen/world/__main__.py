"""Render a MUSDB18-HQ-shaped set of songs from sampled sounds.

    python -m songgen.world data/world --train 100 --valid 4 --test 10 --jobs 2
    python -m songgen.world data/world-heldout --sounds heldout --test 10   # this project's unseen split
    python -m songgen.world data/world-unseen --sounds unseen --test 10     # FluidR3 + espeak-ng, never trained on
    python -m songgen.world data/world-valid --sounds valid --valid 14      # validation songs by unheard voices
    python -m songgen.world data/world-patches --train 400 --valid 0 --test 0 --patch-share 0.5  # + synth patches
    python -m songgen.world data/world-singers --train 400 --valid 0 --test 0 --singer-share 0.5  # + varied singers

Every track folder holds mixture.wav (the exact sum of the stems) and vocals/drums/bass/other.wav;
`world.json` records what each track was made of (genre, voice, kit, soundfonts, programs) and
the render speed. Needs the Debian packages of `packages-world.txt` (`scripts/setup.sh --dev`
installs them).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from separation.cli import HelpFormatter, dispatch, exit_now

from ..synthetic import REAL, Traits
from .render import check_shares, write_world
from .sounds import SPLITS


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m songgen.world", description=__doc__, formatter_class=HelpFormatter)
    p.add_argument("root", type=Path, help="folder to write train/ and test/ into")
    p.add_argument("--sounds", choices=list(SPLITS), default="train", help="which split of sounds to render from")
    p.add_argument("--train", type=int, default=100, help="training tracks (the train sounds only)")
    p.add_argument(
        "--valid",
        type=int,
        default=4,
        help="validation tracks, named as musdb's own (the train sounds, or with --sounds valid the train "
        "instruments sung by voices kept out of training)",
    )
    p.add_argument("--test", type=int, default=10, help="test tracks")
    p.add_argument("--seconds", type=float, default=30.0, help="length of every track, in seconds")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--jobs", type=int, default=1, help="tracks rendered at once (one process each)")
    p.add_argument("--no-traits", action="store_true", help="no dual-mono stems, hard panning or silent drums")
    p.add_argument(
        "--five-voices",
        action="store_true",
        help="sing with the first five training voices only, as the sets rendered before the other four "
        "existed (the published scores' own test split is one)",
    )
    p.add_argument(
        "--patch-share",
        type=_share,
        default=0.0,
        metavar="P",
        help="chance that a bass or other part plays a random synthesiser patch instead of a soundfont "
        "preset (training sounds only; 0 renders the sets before it bit for bit)",
    )
    p.add_argument(
        "--singer-share",
        type=_share,
        default=0.0,
        metavar="P",
        help="chance that a song is sung by a varied copy of its voice: another vocal tract length, "
        "breathiness, brightness and singer's formant (training sounds only; 0 renders the sets before it "
        "bit for bit)",
    )
    return p


def _share(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"a probability from 0 to 1, not {text!r}")
    return value


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    a = parser.parse_args(argv)
    options = dict(vars(a))
    root, no_traits = options.pop("root"), options.pop("no_traits")
    try:
        # write_world's own check, as a usage error before any work
        check_shares(a.sounds, patch_share=a.patch_share, singer_share=a.singer_share)
    except ValueError as e:
        parser.error(str(e))
    meta = write_world(root, traits=Traits.none() if no_traits else REAL, **options)
    n = len(meta["tracks"])
    print(
        f"wrote {n} tracks of {a.seconds:g} s from the {a.sounds!r} sounds to {a.root} "
        f"in {meta['render_seconds']:.0f} s ({meta['tracks_per_minute']:.1f} tracks/min with {a.jobs} jobs)"
    )
    return 0


if __name__ == "__main__":
    exit_now(dispatch(None, {}, main, "interrupted: the tracks written so far are complete"))
