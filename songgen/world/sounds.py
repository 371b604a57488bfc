"""The sampled sounds a song is rendered from, and which of them each split may use.

Four splits of sounds, whose voices are never mixed:
- `train`: what the models learn from (and the `test` subset of the same world is rendered from);
- `valid`: the training instruments and kits sung by two voices kept out of training (Festival's
  Czech `czech_machac` and Finnish `suo_fi_lj_diphone`): validation songs that choose a fine-tune's
  best epoch by how it does on a voice it never heard, not on its training singers. Debian has no
  fourth independent soundfont (its others are FluidR3 again, a MuseScore General variant or an
  OPL3 chip emulation), so this split holds out voices only;
- `heldout`: one soundfont, one voice and one drum kit kept out of training by this project, its
  own "unseen" test (TimGM6mb, Festival's Catalan `upc_ca_ona_hts`, the ForzeeStereo kit);
- `unseen`: sounds reserved for evaluation only: the FluidR3 soundfonts and
  espeak-ng's voices (and two more drum kits).

All of them are Debian packages (`packages-world.txt`; `scripts/setup.sh --dev` installs
them). A missing one is a clear error naming its package, never a silent substitution: a
split rendered from other sounds than it says would make its scores lie.
"""

from __future__ import annotations

import functools
import importlib.util
import re
import shutil
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

from separation.errors import SeparationError

SF2 = Path("/usr/share/sounds/sf2")
SF3 = Path("/usr/share/sounds/sf3")
DRUMKITS = Path("/usr/share/hydrogen/data/drumkits")
FESTIVAL_VOICES = Path("/usr/share/festival/voices")

# The Debian packages of every sound: packages-world.txt (scripts/setup.sh --dev installs them).


# engine -> (the program run to speak, the Debian package that installs it)
ENGINES = {"festival": ("festival", "festival"), "espeak": ("espeak-ng", "espeak-ng"), "flite": ("flite", "flite")}


@dataclass(frozen=True)
class Voice:
    """A text-to-speech voice: `engine` is "festival" (`name` is its voice function without
    `voice_`), "espeak" (`name` is an espeak-ng voice, e.g. `en+f3`), "flite" (`name` is one of
    `flite -lv`, e.g. `awb`) or "formant" (the synthetic
    voice of `songgen.synthetic`, which needs no text); `female` picks the melody's range."""

    engine: str
    name: str
    package: str = ""
    female: bool = False

    @property
    def id(self) -> str:
        return f"{self.engine}:{self.name}"

    @property
    def program(self) -> str | None:
        """The speech synthesiser `songgen.world.voices` runs for this voice (None: none)."""
        return ENGINES.get(self.engine, (None, None))[0]


@dataclass(frozen=True)
class SoundSet:
    soundfonts: tuple[Path, ...]
    voices: tuple[Voice, ...]
    drumkits: tuple[str, ...]


SPLITS: dict[str, SoundSet] = {
    "train": SoundSet(
        soundfonts=(SF3 / "MuseScore_General_Full.sf3", SF2 / "sf_GMbank.sf2"),
        voices=(
            Voice("festival", "kal_diphone", "festvox-kallpc16k"),
            Voice("festival", "ked_diphone", "festvox-kdlpc16k"),
            Voice("festival", "cmu_us_slt_arctic_hts", "festvox-us-slt-hts", female=True),
            Voice("festival", "lp_diphone", "festvox-italp16k", female=True),
            Voice("formant", "synthetic"),
            # More singers, accents and synthesis engines. Sets rendered before these existed drew
            # from the five above alone (`--five-voices` reproduces them: FIVE_VOICES); the own
            # test split of the published scores is one of them.
            Voice("flite", "awb", "flite"),
            Voice("flite", "rms", "flite"),
            Voice("festival", "czech_dita", "festvox-czech-dita", female=True),
            Voice("festival", "pc_diphone", "festvox-itapc16k"),
        ),
        drumkits=(
            "BJA_Pacific",
            "ColomboAcousticDrumkit",
            "ElectricEmpireKit",
            "HardElectro1",
            "Millo-Drums_v.1",
            "Millo_MultiLayered2",
            "VariBreaks",
            "rumpf_kit_z01_h2",
        ),
    ),
    "heldout": SoundSet(
        soundfonts=(SF2 / "TimGM6mb.sf2",),
        voices=(Voice("festival", "upc_ca_ona_hts", "festvox-ca-ona-hts", female=True),),
        drumkits=("ForzeeStereo",),
    ),
    "unseen": SoundSet(
        soundfonts=(SF2 / "FluidR3_GM.sf2",),
        voices=(
            Voice("espeak", "en+f3", "espeak-ng", female=True),
            Voice("espeak", "en+m3", "espeak-ng"),
            Voice("espeak", "en-us+f4", "espeak-ng", female=True),
            Voice("espeak", "en-gb-x-rp+m7", "espeak-ng"),
        ),
        drumkits=("The Black Pearl 1.0", "Audiophob", "Millo_MultiLayered3"),
    ),
}
SPLITS["valid"] = SoundSet(
    soundfonts=SPLITS["train"].soundfonts,
    voices=(
        Voice("festival", "czech_machac", "festvox-czech-machac"),
        Voice("festival", "suo_fi_lj_diphone", "festvox-suopuhe-lj", female=True),
    ),
    drumkits=SPLITS["train"].drumkits,
)
FIVE_VOICES = 5  # how many of the training voices sets rendered before the other four drew from


def voices_of(split: str, five_voices: bool = False) -> tuple[Voice, ...]:
    """The voices a song of `split` is sung by; `five_voices`: the first five training voices only,
    which reproduces sets rendered before the other four existed."""
    voices = SPLITS[split].voices
    return voices[:FIVE_VOICES] if five_voices and split == "train" else voices


# FluidR3_GS.sf2 (fluid-soundfont-gs) is a small set of GS variations on top of FluidR3_GM; it
# is never loaded for training either, and `all_sound_files("unseen")` lists it.
UNSEEN_EXTRA = (SF2 / "FluidR3_GS.sf2",)

_PACKAGE_OF = {
    "MuseScore_General_Full.sf3": "musescore-general-soundfont",
    "sf_GMbank.sf2": "csound-soundfont",
    "TimGM6mb.sf2": "timgm6mb-soundfont",
    "FluidR3_GM.sf2": "fluid-soundfont-gm",
    "FluidR3_GS.sf2": "fluid-soundfont-gs",
}


def _missing(what: str, package: str) -> SeparationError:
    return SeparationError(f"{what} is not installed: `apt-get install {package}` (or scripts/setup.sh --dev)")


def all_sound_files(split: str) -> set[str]:
    """Every sound of a split by name (soundfont file names, voice ids, kit names): what the
    rendered tracks record, so that tests can check no held-out sound reached `train`."""
    s = SPLITS[split]
    names = {p.name for p in s.soundfonts} | {v.id for v in s.voices} | {f"kit:{k}" for k in s.drumkits}
    if split == "unseen":
        names |= {p.name for p in UNSEEN_EXTRA}
    return names


def check_installed(split: str) -> None:
    """Raise a `SeparationError` naming the package of the first missing sound or renderer."""
    for module in ("pyworld", "pedalboard"):  # imported where used, so that the rest imports without them
        if importlib.util.find_spec(module) is None:
            raise SeparationError(f"{module} is not installed: the training world needs `pip install '.[world]'`")
    s = SPLITS[split]
    for path in s.soundfonts:
        if not path.exists():
            raise _missing(f"the soundfont {path}", _PACKAGE_OF.get(path.name, "fluid-soundfont-gm"))
    for kit in s.drumkits:
        if not (DRUMKITS / kit / "drumkit.xml").exists():
            raise _missing(f"the drum kit {kit!r}", "hydrogen-drumkits")
    for v in s.voices:
        if v.program and shutil.which(v.program) is None:
            raise _missing(v.program, ENGINES[v.engine][1])
        if v.engine == "festival" and not list(FESTIVAL_VOICES.glob(f"*/{v.name}")):
            raise _missing(f"the Festival voice {v.name}", v.package)


# ---------------------------------------------------------------------------- drum kits

# Kit pieces a groove uses, found in a kit's instrument names (Hydrogen kits name them freely).
PIECES = {
    "kick": r"kick|bass ?drum|\bbd\b",
    "snare": r"snare(?! roll)|\bsd\b",
    "hat": r"(closed|cl\b).*(hh|hat)|(hh|hat).*(closed|\bcl\b)|hi-hat closed",
    "open_hat": r"open|\bop\b|semi-open",
    "crash": r"crash",
    "ride": r"ride(?! ?bell)(?! ?cup)",
    "tom_high": r"tom ?(hi|high|1\b)|high tom",
    "tom_low": r"tom ?(low|floor)|floor tom|low tom",
    "clap": r"clap",
}


@dataclass(frozen=True)
class KitPiece:
    """One instrument of a kit: its sample files by velocity layer, `[(min, max, path, gain)]`."""

    name: str
    layers: tuple[tuple[float, float, Path, float], ...]


@functools.lru_cache(maxsize=32)
def drum_kit(name: str) -> dict[str, KitPiece]:
    """The pieces of a Hydrogen kit (`/usr/share/hydrogen/data/drumkits/<name>/drumkit.xml`)
    found for each role of `PIECES`; a kit without kick, snare and a hi-hat is refused."""
    folder = DRUMKITS / name
    if not (folder / "drumkit.xml").exists():
        raise _missing(f"the drum kit {name!r}", "hydrogen-drumkits")
    root = ET.parse(folder / "drumkit.xml").getroot()
    ns = {"h": root.tag.split("}")[0][1:]} if root.tag.startswith("{") else {}
    q = (lambda tag: f"h:{tag}") if ns else (lambda tag: tag)
    found: dict[str, KitPiece] = {}
    for inst in root.iter(f"{{{ns['h']}}}instrument" if ns else "instrument"):
        label = (inst.findtext(q("name"), default="", namespaces=ns) or "").strip()
        layers = []
        for layer in inst.findall(q("layer"), ns) or [inst]:
            file = layer.findtext(q("filename"), default="", namespaces=ns)
            if file and (folder / file).exists():
                lo = float(layer.findtext(q("min"), default="0", namespaces=ns))
                hi = float(layer.findtext(q("max"), default="1", namespaces=ns))
                gain = float(layer.findtext(q("gain"), default="1", namespaces=ns))
                layers.append((lo, hi, folder / file, gain))
        if not layers:
            continue
        for role, pattern in PIECES.items():
            if role not in found and re.search(pattern, label, re.IGNORECASE):
                found[role] = KitPiece(label, tuple(sorted(layers)))
                break
    if "hat" not in found and "open_hat" in found:
        found["hat"] = found["open_hat"]
    missing = [r for r in ("kick", "snare", "hat") if r not in found]
    if missing:
        raise SeparationError(f"the drum kit {name!r} has no {', '.join(missing)}")
    return found
