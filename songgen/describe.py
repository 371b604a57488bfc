"""What a generated data folder holds, read from the record its generator left in it.

`songgen.synthetic` writes `synthetic.json` and `songgen.world` writes `world.json` beside
`train/` and `test/`. Training cards ("trained on ...") and evaluation records ("scored on ...")
both describe a folder from these files; this module is the one reader of them.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

# The names a world's sound split goes by in an evaluation record.
_SOUNDS = {"train": "the training sounds", "heldout": "held-out sounds", "unseen": "unseen sounds"}


@dataclass(frozen=True)
class Generated:
    """A folder written by one of this package's generators: `generator` is its module
    (`songgen.synthetic` or `songgen.world`), `meta` the record it wrote."""

    generator: str
    meta: dict

    @property
    def is_world(self) -> bool:
        return self.generator == "songgen.world"

    def brief(self) -> str:
        """One parenthesis for an evaluation record, e.g. `songgen.world, held-out sounds, seed 0`."""
        seed = self.meta.get("seed", "?")
        if self.is_world:
            split = self.meta.get("world")
            return f"{self.generator}, {_SOUNDS.get(split, split)}, seed {seed}"
        traits = self.meta.get("traits") or {}
        real = traits.get("vocal_free") is not None or traits.get("dual_mono_vocals", 0) > 0
        return f"{self.generator}, seed {seed}, {'with' if real else 'without'} real data's traits"

    def used(self, *, tracks: int, kind: str) -> str:
        """What a training run used of it: `tracks` tracks of its `kind` ("train" or "validation")."""
        used = f"{tracks} {kind} track" + ("" if tracks == 1 else "s")
        if not self.is_world:
            return f"synthetic MUSDB-shaped set ({self.generator}, {self.meta}; {used} of it)"
        m = self.meta
        # Records of sets rendered before an option existed have no key for it: the option was
        # off (syllables were stretched evenly over a phrase; the first five training voices).
        even = "" if m.get("syllables_on_notes") else ", evenly stretched syllables"
        sounds = "" if m.get("world", "train") == "train" else f", the {m['world']!r} sounds"
        voices = f", {len(m['voices'])} voices" if "voices" in m else ""
        shares = [(flag, m.get(key, 0.0)) for flag, key in (("patch", "patch_share"), ("singer", "singer_share"))]
        options = "".join(f", --{flag}-share {share:g}" for flag, share in shares if share)
        return (
            f"songs rendered from sampled sounds ({self.generator}{sounds}, {used} of "
            f"{m['seconds']:g} s, seed {m['seed']}{even}{voices}{options})"
        )


def read_generated(root: str | os.PathLike) -> Generated | None:
    """The generator's record of `root`, or None for a folder not generated here (MUSDB itself)."""
    for generator, name in (("songgen.synthetic", "synthetic.json"), ("songgen.world", "world.json")):
        path = Path(root) / name
        if path.exists():
            return Generated(generator, json.loads(path.read_text()))
    return None


def describe_generated(root: str | os.PathLike, *, tracks: int, kind: str) -> str | None:
    """What a training run used of a generated folder (None: not generated here)."""
    found = read_generated(root)
    return found.used(tracks=tracks, kind=kind) if found else None


def describe_scored(root: str | os.PathLike, subset: str) -> str:
    """What scores were measured on, for eval's `method.json` and the model cards made from it."""
    root = Path(root).resolve()
    found = read_generated(root)
    return f"{subset} subset of {root.name}/" + (f" ({found.brief()})" if found else "")
