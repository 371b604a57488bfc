"""A song from its score to four stems and a mixture, and MUSDB18-HQ-shaped folders of them."""

from __future__ import annotations

import dataclasses
import functools
import json
import multiprocessing
import os
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from separation.audio import SAMPLE_RATE

from ..synthetic import Traits, place_mono, validation_names, write_track
from ..synthetic import voice as formant_voice
from .mix import balance, channel_strip, master
from .patches import Patch
from .score import Song, make_song
from .sounds import SPLITS, Voice, check_installed, voices_of
from .synth import render_drums, synth_for
from .voices import Singer, lead_vocal

SPLIT_CODE = {"train": 1, "heldout": 2, "unseen": 3, "valid": 4}


def _program(soundfont: Path, program: int) -> int:
    """`program`, or the first of its GM family of eight that the soundfont has (csound's bank lacks a few)."""
    synth = synth_for(soundfont)
    family = program // 8 * 8
    for p in (program, *range(family, family + 8), 0):
        if synth.has(p):
            return p
    return 0


def _formant_vocal(song: Song, rng: np.random.Generator) -> np.ndarray:
    """The synthetic formant voice of `songgen.synthetic`, singing only in the song's phrases."""
    n = int(song.seconds * SAMPLE_RATE)
    sung = formant_voice(rng, n, 48 + song.key, 60.0 / song.tempo)
    gate = np.zeros(n, np.float32)
    for p in song.phrases:
        a, b = int(p.notes[0].start * SAMPLE_RATE), int((p.notes[-1].start + p.notes[-1].length) * SAMPLE_RATE)
        gate[a:b] = 1.0
    fade = np.hanning(441) / np.hanning(441).sum()
    return (sung * np.convolve(gate, fade, mode="same")).astype(np.float32)


def _vocals(
    song: Song, voice: Voice, soundfont: Path, rng, dual_mono: bool, singer: Singer | None = None
) -> tuple[np.ndarray, list[str]]:
    """The vocals stem `(T, 2)`: lead, double, harmony, breaths, and a choir patch if scored;
    `singer`: the sung takes' voice varied (a WORLD voice's only: the formant voice has its own)."""
    n = int(song.seconds * SAMPLE_RATE)
    if voice.engine == "formant":
        takes = {"lead": _formant_vocal(song, rng)}
    else:
        takes = lead_vocal(voice, song.phrases, song.seconds, rng, singer=singer)
    choir = [p for p in song.parts if p.stem == "vocals"]
    parts = [voice.id if singer is None else f"{voice.id}+{singer.id}"]
    room = float(rng.uniform(0.05, 0.3))
    if dual_mono and not choir:
        mono = sum(takes.values())
        wet = channel_strip(mono[:, None], rng, room=room, bright=2.0)[:, 0]
        return place_mono(wet, None), parts
    stem = place_mono(takes["lead"], float(rng.uniform(-0.1, 0.1)))
    for name, pan in (("double", rng.uniform(0.3, 0.7)), ("harmony", rng.uniform(-0.6, -0.2))):
        if name in takes and np.any(takes[name]):
            stem = stem + place_mono(takes[name], float(pan))
    for part in choir:
        program = _program(soundfont, part.program)
        audio = synth_for(soundfont).render(part.notes, program, song.seconds)
        stem = stem + 0.5 * audio / (np.abs(audio).max() + 1e-9) * np.abs(stem).max()
        parts.append(f"{soundfont.name}:{program}")  # the preset played, as for the other stems
    return channel_strip(stem[:n], rng, room=room, bright=2.0), parts


def render_song(
    seed: int,
    sounds: str = "train",
    seconds: float = 30.0,
    traits: Traits = Traits(),
    *,
    five_voices: bool = False,
    patch_share: float = 0.0,
    singer_share: float = 0.0,
):
    """One song from split `sounds`: ({source: (T, 2) float32, "mixture": their exact sum},
    what it was made of). `five_voices`: the first five training voices only, as sets rendered
    before the other four existed (the own test split of the published scores is one). `patch_share`:
    the chance that a bass or `other` part is played on a random synthesiser patch
    (`songgen.world.patches`) instead of its soundfont preset; `singer_share`: the chance that
    the song is sung by a varied copy of its voice (`voices.Singer`); both training sounds only."""
    check_shares(sounds, patch_share=patch_share, singer_share=singer_share)
    rng = np.random.default_rng([seed, SPLIT_CODE[sounds]])
    trng = np.random.default_rng([seed, SPLIT_CODE[sounds], 1])  # traits: their own draws
    # Patches draw from their own generator too, so the rest of the song (score, sounds, mix)
    # is the one `patch_share=0` renders: only the patched parts' instruments differ.
    prng = np.random.default_rng([seed, SPLIT_CODE[sounds], 2])
    srng = np.random.default_rng([seed, SPLIT_CODE[sounds], 3])  # singers: likewise
    bank = SPLITS[sounds]
    voices = voices_of(sounds, five_voices)
    voice = voices[int(rng.integers(len(voices)))]
    song = make_song(rng, seconds, female=voice.female)
    kit = bank.drumkits[int(rng.integers(len(bank.drumkits)))]
    n = int(seconds * SAMPLE_RATE)
    used = {"voice": voice.id, "kit": f"kit:{kit}", "soundfonts": [], "parts": {}}
    singer = None
    if singer_share and voice.engine != "formant" and srng.random() < singer_share:
        singer = Singer.draw(srng)
        used["singer"] = singer.id  # the key only where a singer varied the voice, as before it existed
    stems = {"bass": np.zeros((n, 2), np.float32), "other": np.zeros((n, 2), np.float32)}
    for part in song.parts:
        if part.stem == "vocals":
            continue
        soundfont = bank.soundfonts[int(rng.integers(len(bank.soundfonts)))]
        program = _program(soundfont, part.program)
        if patch_share and prng.random() < patch_share:
            patch = Patch.draw(prng, part.role)
            audio, sound = patch.render(part.notes, seconds), patch.id
        else:
            audio, sound = synth_for(soundfont).render(part.notes, program, seconds), f"{soundfont.name}:{program}"
            used["soundfonts"].append(soundfont.name)
        audio = channel_strip(audio, rng, room=float(rng.uniform(0.0, 0.3)))
        if part.stem == "bass" and trng.random() < traits.mono_bass:
            audio = place_mono(audio.mean(axis=1), None)
        elif part.stem == "other":
            audio = balance(audio, float(rng.uniform(-0.6, 0.6)))
        stems[part.stem] += audio / (np.abs(audio).max() + 1e-9) * (1.0 if part.role != "pad" else 0.5)
        used["parts"].setdefault(part.stem, []).append(f"{part.role}:{sound}")
    if trng.random() < traits.hard_pan:
        stems["other"] = balance(stems["other"], float(trng.choice([-1.0, 1.0])))
    drums = render_drums(kit, song.drums, seconds)
    stems["drums"] = channel_strip(drums, rng, room=float(rng.uniform(0.0, 0.2)))
    choir_font = bank.soundfonts[int(rng.integers(len(bank.soundfonts)))]
    dual_mono = trng.random() < traits.dual_mono_vocals
    stems["vocals"], vocal_parts = _vocals(song, voice, choir_font, rng, dual_mono, singer)
    used["parts"]["vocals"] = vocal_parts
    used["parts"]["drums"] = [f"kit:{kit}"]
    if any(p.stem == "vocals" for p in song.parts):
        used["soundfonts"].append(choir_font.name)
    vocal_db = float(np.clip(rng.normal(-1.0, 3.0), -8.0, 5.0))
    track = master(stems, rng, vocal_db)
    used["soundfonts"] = sorted(set(used["soundfonts"]))
    info = {
        "genre": song.genre,
        "tempo": round(song.tempo, 1),
        "key": song.key,
        "mode": song.mode,
        "vocal_db": round(vocal_db, 1),
        "sections": [(s, round(a, 2), round(b, 2)) for s, a, b in song.sections],
        **used,
    }
    return track, info


# What each share adds to a song, for its error message.
SHARES = {"patch_share": "synthesiser patches", "singer_share": "varied singers"}


def check_shares(sounds: str, **shares: float) -> None:
    """`patch_share`, `singer_share`: probabilities, and training sounds only: a held-out split
    rendered with patches or varied training voices would not be held out."""
    for name, share in shares.items():
        if not 0.0 <= share <= 1.0:
            raise ValueError(f"{name} is a probability, 0 to 1: got {share}")
        if share and sounds != "train":
            flag = "--" + name.replace("_", "-")
            raise ValueError(f"{SHARES[name]} are training sounds: {flag} needs --sounds train, not {sounds!r}")


def _render_one(
    job: tuple,
    *,
    sounds: str,
    seconds: float,
    traits: Traits,
    five_voices: bool,
    patch_share: float,
    singer_share: float,
) -> dict:
    """One track of a world: `job` is what differs per track, (folder, seed, silent_drums)."""
    folder, seed, silent_drums = job
    t0 = time.perf_counter()
    track, info = render_song(
        seed,
        sounds,
        seconds,
        traits,
        five_voices=five_voices,
        patch_share=patch_share,
        singer_share=singer_share,
    )
    if silent_drums:  # an acoustic song: the drums stem is exactly zero, the mixture the sum of the rest
        track["mixture"] = track["mixture"] - track["drums"]
        track["drums"] = np.zeros_like(track["drums"])
        info["parts"]["drums"] = []
    write_track(Path(folder), track)
    return {
        "name": Path(folder).name,
        "subset": Path(folder).parent.name,
        "seed": seed,
        "seconds_to_render": round(time.perf_counter() - t0, 2),
        **info,
    }


def write_world(
    root: str | os.PathLike,
    *,
    sounds: str = "train",
    train: int = 100,
    valid: int = 4,
    test: int = 10,
    seconds: float = 30.0,
    seed: int = 0,
    jobs: int = 1,
    traits: Traits = Traits(),
    five_voices: bool = False,
    patch_share: float = 0.0,
    singer_share: float = 0.0,
) -> dict:
    """Render a MUSDB18-HQ-shaped folder from split `sounds`: the training sounds give `train/`
    (training and validation songs) and `test/`; the `valid` sounds validation songs alone
    (named as musdb's, in `train/`), the held-out splits test songs alone. Returns (and writes as
    `world.json`) what every track was made of and how long it took. With `jobs > 1` the workers
    start by forkserver: a script that calls this needs an `if __name__ == "__main__":` guard, as
    for any pool that does not fork (`python -m songgen.world` has one)."""
    check_installed(sounds)
    check_shares(sounds, patch_share=patch_share, singer_share=singer_share)
    root = Path(root)
    if sounds == "valid":
        train = test = 0
    elif sounds != "train":
        train = valid = 0
    names = validation_names()
    plan = [("train", f"World {i:03d} - Train Song", 100_000 + i) for i in range(train)]
    plan += [("train", names[i], 200_000 + i) for i in range(valid)]
    plan += [("test", f"World {i:03d} - {sounds.capitalize()} Test Song", 300_000 + i) for i in range(test)]
    jobs_list, position = [], {}
    for subset, name, offset in plan:
        position[subset] = position.get(subset, -1) + 1
        silent = traits.silent_source and position[subset] == 1
        jobs_list.append((str(root / subset / name), seed * 1_000_003 + offset, silent))
    render_one = functools.partial(
        _render_one,
        sounds=sounds,
        seconds=seconds,
        traits=traits,
        five_voices=five_voices,
        patch_share=patch_share,
        singer_share=singer_share,
    )
    t0 = time.perf_counter()
    if jobs > 1:
        # forkserver, not fork: a process that has rendered before holds FluidSynth instances and
        # the threads of whatever else it loaded (torch in a trainer or a test run); a forked child
        # can inherit one of their locks held and hang forever. Workers start clean instead.
        context = multiprocessing.get_context("forkserver")
        with ProcessPoolExecutor(max_workers=jobs, mp_context=context) as pool:
            tracks = list(pool.map(render_one, jobs_list))
    else:
        tracks = [render_one(j) for j in jobs_list]
    wall = time.perf_counter() - t0
    meta = {
        "world": sounds,
        "seconds": seconds,
        "seed": seed,
        "traits": dataclasses.asdict(traits),
        # always true now; records of sets made before syllables were sung on the notes lack it
        "syllables_on_notes": True,
        "voices": [v.id for v in voices_of(sounds, five_voices)],
        "patch_share": patch_share,
        "singer_share": singer_share,
        "jobs": jobs,
        "render_seconds": round(wall, 1),
        "tracks_per_minute": round(60 * len(tracks) / max(wall, 1e-9), 2),
        "tracks": tracks,
    }
    root.mkdir(parents=True, exist_ok=True)
    (root / "world.json").write_text(json.dumps(meta, indent=1) + "\n")
    return meta
