"""Notes to audio: FluidSynth (through its C library, by ctypes) for pitched instruments and
choir patches, and a sampler of Hydrogen drum-kit recordings for drums.

FluidSynth's own reverb and chorus are off: the mix adds room per stem (`songgen.world.mix`),
so that a stem's dry sound and its effects are drawn like the rest of the mix. Rendering is
deterministic: the same notes give the same samples.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
from scipy.signal import resample_poly

from separation.audio import SAMPLE_RATE
from separation.errors import SeparationError

from .sounds import drum_kit


@dataclass(frozen=True)
class Note:
    """A note: onset and length in seconds, MIDI pitch, velocity 1-127."""

    start: float
    length: float
    pitch: int
    velocity: int


@functools.lru_cache(maxsize=1)
def _lib() -> ctypes.CDLL:
    name = ctypes.util.find_library("fluidsynth")
    if name is None:
        raise SeparationError(
            "libfluidsynth is not installed: `apt-get install fluidsynth` (or scripts/setup.sh --dev)"
        )
    lib = ctypes.CDLL(name)
    vp, ci, cd, cc = ctypes.c_void_p, ctypes.c_int, ctypes.c_double, ctypes.c_char_p
    for fn, args, res in (
        ("new_fluid_settings", [], vp),
        ("fluid_settings_setnum", [vp, cc, cd], ci),
        ("fluid_settings_setint", [vp, cc, ci], ci),
        ("new_fluid_synth", [vp], vp),
        ("fluid_synth_sfload", [vp, cc, ci], ci),
        ("fluid_synth_program_select", [vp, ci, ci, ci, ci], ci),
        ("fluid_synth_noteon", [vp, ci, ci, ci], ci),
        ("fluid_synth_noteoff", [vp, ci, ci], ci),
        ("fluid_synth_cc", [vp, ci, ci, ci], ci),
        ("fluid_set_log_function", [ci, vp, vp], vp),
        ("fluid_synth_get_sfont_by_id", [vp, ci], vp),
        ("fluid_synth_add_sfont", [vp, vp], ci),
        ("fluid_synth_remove_sfont", [vp, vp], ci),
        ("delete_fluid_synth", [vp], None),
        ("fluid_synth_write_float", [vp, ci, vp, ci, ci, vp, ci, ci], ci),
    ):
        f = getattr(lib, fn)
        f.argtypes, f.restype = args, res
    # A new instance selects presets on all 16 channels before its soundfont is added, and
    # warns for each; the presets that matter are checked (`Synth.render` raises).
    for level in (2, 3):  # FLUID_WARN, FLUID_INFO
        lib.fluid_set_log_function(level, None, None)
    return lib


BLOCK = 64  # FluidSynth's FLUID_BUFSIZE


def _block(seconds: float) -> int:
    return int(round(seconds * SAMPLE_RATE / BLOCK)) * BLOCK


class Synth:
    """A soundfont loaded once (MuseScore General takes ~5 s, so a worker keeps it: `synth_for`),
    and a fresh FluidSynth instance for every render: a reused instance keeps state between
    renders (its block position, voices' internals) and would not give the same samples twice."""

    def __init__(self, soundfont: Path):
        lib = _lib()
        self.soundfont = Path(soundfont)
        settings = lib.new_fluid_settings()
        lib.fluid_settings_setnum(settings, b"synth.sample-rate", float(SAMPLE_RATE))
        lib.fluid_settings_setnum(settings, b"synth.gain", 0.4)
        lib.fluid_settings_setint(settings, b"synth.reverb.active", 0)
        lib.fluid_settings_setint(settings, b"synth.chorus.active", 0)
        lib.fluid_settings_setint(settings, b"synth.polyphony", 256)
        self._settings, self._loader = settings, lib.new_fluid_synth(settings)
        sfid = lib.fluid_synth_sfload(self._loader, str(self.soundfont).encode(), 1)
        if sfid < 0:
            raise SeparationError(f"FluidSynth could not load {self.soundfont}")
        self._sfont = lib.fluid_synth_get_sfont_by_id(self._loader, sfid)
        self._sfid = sfid

    def has(self, program: int, bank: int = 0) -> bool:
        return _lib().fluid_synth_program_select(self._loader, 0, self._sfid, bank, program) == 0

    def render(self, notes: list[Note], program: int, seconds: float, *, drums: bool = False) -> np.ndarray:
        """`(T, 2)` float32 of `notes` played on GM `program` (bank 128 for `drums`)."""
        lib = _lib()
        synth = lib.new_fluid_synth(self._settings)
        try:
            sfid = lib.fluid_synth_add_sfont(synth, self._sfont)
            bank = 128 if drums else 0
            if lib.fluid_synth_program_select(synth, 0, sfid, bank, program) != 0:
                raise SeparationError(f"{self.soundfont.name} has no preset {bank}:{program}")
            lib.fluid_synth_cc(synth, 0, 7, 110)  # channel volume: the mix sets levels
            return _play(synth, notes, seconds)
        finally:
            lib.fluid_synth_remove_sfont(synth, self._sfont)  # the loader keeps it
            lib.delete_fluid_synth(synth)


def _play(synth, notes: list[Note], seconds: float) -> np.ndarray:
    lib = _lib()
    # FluidSynth applies events at the start of its 64-sample blocks: events on that grid (1.5 ms).
    events = sorted(
        [(_block(n.start), 1, n.pitch, n.velocity) for n in notes]
        + [(_block(n.start + n.length), 0, n.pitch, 0) for n in notes]
    )
    total = int(seconds * SAMPLE_RATE)
    left, right = np.zeros(total, np.float32), np.zeros(total, np.float32)
    pos = 0
    for at, on, pitch, velocity in [*events, (total, -1, 0, 0)]:
        at = min(max(at, pos), total)
        if at > pos:
            lib.fluid_synth_write_float(synth, at - pos, left[pos:].ctypes.data, 0, 1, right[pos:].ctypes.data, 0, 1)
            pos = at
        if on == 1:
            lib.fluid_synth_noteon(synth, 0, pitch, max(1, min(127, velocity)))
        elif on == 0:
            lib.fluid_synth_noteoff(synth, 0, pitch)
    return np.stack([left, right], axis=1)


@functools.lru_cache(maxsize=8)
def synth_for(soundfont: Path) -> Synth:
    return Synth(soundfont)


# ---------------------------------------------------------------------------- drums


@functools.lru_cache(maxsize=512)
def _sample(path: Path) -> np.ndarray:
    """A kit sample as `(T, 2)` float32 at the project's rate."""
    audio, rate = sf.read(path, dtype="float32", always_2d=True)
    audio = audio[:, :2] if audio.shape[1] >= 2 else np.repeat(audio, 2, axis=1)
    if rate != SAMPLE_RATE:
        g = np.gcd(int(rate), SAMPLE_RATE)
        audio = resample_poly(audio, SAMPLE_RATE // g, int(rate) // g, axis=0).astype(np.float32)
    return audio[: 4 * SAMPLE_RATE]  # long cymbal tails: 4 s is plenty


def render_drums(kit: str, hits: list[tuple[str, float, float]], seconds: float) -> np.ndarray:
    """`(T, 2)` float32 of `hits` = `[(piece, time s, velocity 0-1)]` played on a Hydrogen kit;
    the velocity picks the sample layer and scales it (pieces the kit lacks fall back to a
    similar one: an open hat to the closed one, a ride to a crash or the hat, a clap to the snare)."""
    pieces = drum_kit(kit)
    fallback = {"open_hat": "hat", "ride": "crash", "crash": "ride", "clap": "snare", "tom_high": "tom_low"}
    total = int(seconds * SAMPLE_RATE)
    out = np.zeros((total, 2), np.float32)
    for piece, time, velocity in hits:
        name = piece if piece in pieces else fallback.get(piece, "hat")
        if name not in pieces:
            name = "hat" if piece in ("ride", "crash") else "snare"
        layers = pieces[name].layers
        layer = next((lay for lay in layers if lay[0] <= velocity <= lay[1]), layers[-1])
        audio = _sample(layer[2]) * (layer[3] * (0.25 + 0.75 * velocity))
        at = int(time * SAMPLE_RATE)
        if 0 <= at < total:
            n = min(len(audio), total - at)
            out[at : at + n] += audio[:n]
    return out
