"""The rendered training world (`songgen.world`): exact sums, determinism, stems that hold only
their own instruments, held-out sounds kept out of training, musdb reads it, training runs on
it, fine-tuning starts from a checkpoint's weights."""

from __future__ import annotations

import dataclasses
import json
import re
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf
import torch
from scipy.signal import welch

from separation import Separator
from separation.audio import SAMPLE_RATE
from separation.errors import CheckpointError, SeparationError
from separation.tracks import SOURCES, open_musdb
from songgen.synthetic import vocal_free_share, write_musdb_folder
from songgen.world import sounds as sounds_module
from songgen.world import voices
from songgen.world.render import render_song, write_world
from songgen.world.score import make_song
from songgen.world.sounds import SPLITS, all_sound_files
from songgen.world.synth import Note
from tests.helpers import ROOT, TINY_CONFIGS, tiny_train_config
from training.loop import TrainConfig, Trainer, resume_config

pytestmark = pytest.mark.world  # every test here renders or reads the world's sounds

SECONDS = 10.0


@pytest.fixture(scope="module")
def songs():
    """Six training-world songs and one of each held-out split (rendered once for the module)."""
    out = {("train", s): render_song(s, "train", SECONDS) for s in range(6)}
    out[("heldout", 0)] = render_song(0, "heldout", SECONDS)
    out[("unseen", 0)] = render_song(0, "unseen", SECONDS)
    return out


def test_mixture_is_the_exact_sum_of_16_bit_stems(songs):
    for track, _ in songs.values():
        ints = {k: track[k].astype(np.float64) * 32768 for k in track}
        for k, v in ints.items():
            assert np.array_equal(v, np.round(v)), f"{k} is not on the 16-bit grid"
        assert np.array_equal(ints["mixture"], sum(ints[s] for s in SOURCES))
        assert np.abs(track["mixture"]).max() < 1.0  # the bus limiter keeps it from clipping
        assert all(np.abs(track[s]).max() > 0 for s in ("vocals", "bass", "other"))


def test_a_seed_gives_the_same_song_and_another_seed_another(songs):
    again, info = render_song(3, "train", SECONDS)
    first, first_info = songs[("train", 3)]
    assert info == first_info
    for k in first:
        assert np.array_equal(first[k], again[k])
    other = songs[("train", 4)][0]
    assert not np.allclose(first["vocals"], other["vocals"])


def _voiced_onsets(audio: np.ndarray, start: float) -> np.ndarray:
    import pyworld

    f0, _ = pyworld.dio(audio.astype(np.float64), SAMPLE_RATE, frame_period=voices.FRAME_MS)
    rises = np.flatnonzero(np.diff(np.concatenate([[0], (f0 > 0).astype(int)])) == 1)
    return start + rises * voices.FRAME_MS / 1000


def test_sung_syllables_start_on_the_notes():
    """A singer starts each syllable's vowel on a note; evenly stretched speech does not. Measured
    on the audio: the voiced onsets that WORLD finds in the sung phrase, against the note onsets."""
    voice = SPLITS["train"].voices[1]
    found = {}
    for align in (True, False):
        near = total = 0
        for seed in range(2):
            song = make_song(np.random.default_rng(seed), 20.0, female=voice.female)
            for phrase in song.phrases[:3]:
                start, audio = voices.sing(voice, phrase.words, phrase.notes, np.random.default_rng(1), align=align)
                assert start <= phrase.notes[0].start <= start + 0.15  # the first consonant leads the beat
                assert start + len(audio) / SAMPLE_RATE <= phrase.notes[-1].start + phrase.notes[-1].length + 0.25
                onsets = np.array([n.start for n in phrase.notes])
                heard = _voiced_onsets(audio, start)
                near += sum(bool(np.any(np.abs(onsets - t) < 0.05)) for t in heard)
                total += len(heard)
        found[align] = near / total
    assert found[True] >= 0.7, found
    assert found[False] < 0.5 * found[True], found


@pytest.mark.parametrize("nuclei,notes", [(3, 3), (2, 5), (6, 3)])
def test_syllables_map_onto_notes_as_melismas_or_shared_notes(nuclei, notes):
    """More notes than syllables: the vowel runs on over the extra notes; more syllables than
    notes: they share one. Every syllable group starts exactly on its note, in order."""
    voiced = np.zeros(400, bool)
    firsts = [20 + 60 * i for i in range(nuclei)]
    for a in firsts:
        voiced[a : a + 30] = True  # 150-ms vowels with 150 ms of consonants between them
    sp = np.ones((400, 8))
    melody = [Note(1.0 + 0.5 * k, 0.45, 60 + k, 90) for k in range(notes)]
    start, idx = voices._timing(voiced, sp, melody)
    assert np.all(np.diff(idx) >= 0) and idx[0] == 0 and idx[-1] == pytest.approx(399)  # all the speech, in order
    assert start == pytest.approx(1.0 - 0.1)  # the 20 frames of leading consonant, before the beat
    step = voices.FRAME_MS / 1000
    for i, a in enumerate(firsts):
        k = i * notes // nuclei
        if i and (i - 1) * notes // nuclei == k:
            continue  # this syllable shares the note with the one before
        frame = int(np.searchsorted(idx, a))
        assert start + frame * step == pytest.approx(melody[k].start, abs=step), (i, k)
    held = start + np.searchsorted(idx, firsts[-1] + 29) * step  # the last vowel's end
    assert held == pytest.approx(melody[-1].start + melody[-1].length, abs=step)


def test_each_stem_holds_only_its_instruments(songs):
    for (split, _), (track, info) in songs.items():
        parts = info["parts"]
        # what was rendered into each stem (GM programs: 32-39 are basses, 52-54 choir and voice)
        assert all(int(p.split(":")[-1]) in range(32, 40) for p in parts["bass"])
        assert all(p.split(":")[0] in ("comp", "pad", "lead") for p in parts["other"])
        assert all(int(p.split(":")[-1]) not in range(32, 40) for p in parts["other"])
        assert parts["drums"] == [info["kit"]]
        assert parts["vocals"][0] == info["voice"]
        assert all(int(p.split(":")[-1]) in (52, 53, 54) for p in parts["vocals"][1:])
        # and what is heard: the bass stem is low, the vocals stem is voice-band
        f, power = welch(track["bass"].mean(axis=1), SAMPLE_RATE, nperseg=4096)
        assert power[f < 1500].sum() / power.sum() > 0.8, (split, info["genre"])
        f, power = welch(track["vocals"].mean(axis=1), SAMPLE_RATE, nperseg=4096)
        assert power[(f > 100) & (f < 8000)].sum() / power.sum() > 0.8


def test_songs_carry_vocal_free_sections_and_real_datas_traits(songs):
    shares = [vocal_free_share(t["vocals"]) for t, _ in songs.values()]
    assert min(shares) > 0.05 and np.median(shares) > 0.15  # intros, breaks, outros, breaths
    dual_mono = [np.array_equal(t["vocals"][:, 0], t["vocals"][:, 1]) for t, _ in songs.values()]
    assert any(dual_mono) and not all(dual_mono)


def test_held_out_sounds_never_reach_the_training_split(tmp_path):
    train, heldout, unseen = (all_sound_files(s) for s in ("train", "heldout", "unseen"))
    assert not (train & heldout) and not (train & unseen) and not (heldout & unseen)
    # The validation voices are heard by no other split (its instruments are the training ones).
    valid_voices = {v.id for v in SPLITS["valid"].voices}
    assert valid_voices and not valid_voices & (train | heldout | unseen)
    assert {"FluidR3_GM.sf2", "FluidR3_GS.sf2"} <= unseen
    assert any(v.startswith("espeak:") for v in unseen) and not any(v.startswith("espeak:") for v in train | heldout)
    meta = write_world(tmp_path / "world", train=3, valid=1, test=1, seconds=6.0, jobs=2)
    for t in meta["tracks"]:
        used = {t["voice"], t["kit"], *t["soundfonts"]}
        assert used <= train, used - train
    held = write_world(tmp_path / "unseen", sounds="unseen", test=2, seconds=6.0)
    assert not (tmp_path / "unseen" / "train").exists()  # held-out splits are test sets only
    for t in held["tracks"]:
        assert {t["voice"], t["kit"], *t["soundfonts"]} <= unseen
    # musdb reads the rendered folder as it reads MUSDB18-HQ
    tracks = open_musdb(tmp_path / "world", is_wav=True, subset="train", split="train")
    assert len(tracks) == 3 and len(open_musdb(tmp_path / "world", is_wav=True, subset="train", split="valid")) == 1
    assert meta["tracks_per_minute"] > 0 and json.loads((tmp_path / "world" / "world.json").read_text())["tracks"]
    assert meta["syllables_on_notes"] is True  # the default: sung syllables on the notes
    assert meta["voices"] == [v.id for v in SPLITS["train"].voices]


def test_validation_songs_sung_by_unheard_voices_choose_the_epoch(tmp_path, world_root):
    """`--sounds valid` renders validation songs alone (musdb's validation names, in train/), each
    sung by a voice kept out of training; the trainer validates on them with --musdb-root and
    trains on --extra-train only."""
    meta = write_world(tmp_path / "valid", sounds="valid", train=5, valid=2, test=5, seconds=6.0)
    assert [t["subset"] for t in meta["tracks"]] == ["train", "train"] and not (tmp_path / "valid" / "test").exists()
    assert {t["voice"] for t in meta["tracks"]} <= {v.id for v in SPLITS["valid"].voices}
    assert len(open_musdb(tmp_path / "valid", is_wav=True, subset="train", split="valid")) == 2
    with pytest.raises(SeparationError, match="no train/train tracks"):  # alone it trains on nothing
        Trainer(_cfg(tmp_path / "valid", tmp_path / "alone"))
    trainer = Trainer(_cfg(tmp_path / "valid", tmp_path / "run", extra_train=(str(world_root),)))
    assert [t.name for t in trainer.valid_set.tracks] == [t["name"] for t in meta["tracks"]]
    assert len(trainer.dataset.tracks) == 4  # the extra set's 3 training + 1 validation songs
    # the card tells what it trained on from what chose its epoch: the validation songs are not training data
    assert (
        trainer.data_name
        == "songs rendered from sampled sounds (songgen.world, 4 train tracks of 6 s, seed 0, 9 voices)"
    )
    assert trainer.valid_set.description == (
        "songs rendered from sampled sounds (songgen.world, the 'valid' sounds, 2 validation tracks of 6 s, "
        "seed 0, 2 voices)"
    )
    assert np.isfinite(trainer.run()["best_valid_loss"])
    card = (tmp_path / "run" / "best" / "README.md").read_text()
    # in a few words: the validation songs, by voices kept out of training, are named as such
    assert "| training data | 4 songs rendered by songgen.world (6 s, seed 0) |" in card
    valid = "2 songs rendered by songgen.world (the 'valid' sounds, 6 s, seed 0)"
    assert f"| validation data (chose the best epoch) | {valid} |" in card
    assert "datasets:" not in card  # rendered songs are no Hub dataset
    tuned = Trainer(_cfg(world_root, tmp_path / "tuned", init_from=str(tmp_path / "run" / "best")))
    assert tuned.parent["valid_data"] == trainer.valid_set.description  # the chain keeps it


def test_five_voices_reproduces_the_sets_rendered_before_the_new_voices(monkeypatch, tmp_path):
    """The training voices grew from five to nine; `five_voices` draws from the first five, as the
    sets rendered before did (the published own test split is one), and a Flite voice (one of the new) sings."""
    assert [v.engine for v in sounds_module.voices_of("train", five_voices=True)] == ["festival"] * 4 + ["formant"]
    assert sounds_module.voices_of("unseen", five_voices=True) == SPLITS["unseen"].voices  # training voices only
    old = write_world(tmp_path / "old", train=2, valid=0, test=0, seconds=4.0, five_voices=True)
    assert old["voices"] == [v.id for v in SPLITS["train"].voices[:5]]
    assert {t["voice"] for t in old["tracks"]} <= set(old["voices"])
    awb = sounds_module.Voice("flite", "awb", "flite")
    monkeypatch.setitem(sounds_module.SPLITS, "train", dataclasses.replace(SPLITS["train"], voices=(awb,)))
    track, info = render_song(0, "train", SECONDS)
    assert info["voice"] == "flite:awb" and info["parts"]["vocals"][0] == "flite:awb"
    assert np.abs(track["vocals"]).max() > 0.01 and vocal_free_share(track["vocals"]) < 0.9


def test_a_missing_sound_is_a_clear_error(monkeypatch, tmp_path):
    gone = dataclasses.replace(SPLITS["heldout"], soundfonts=(tmp_path / "TimGM6mb.sf2",))
    monkeypatch.setitem(sounds_module.SPLITS, "heldout", gone)
    with pytest.raises(SeparationError, match="apt-get install timgm6mb-soundfont"):
        write_world(tmp_path / "w", sounds="heldout", test=1, seconds=4.0)
    assert not (tmp_path / "w").exists()  # nothing half-written


@pytest.fixture(scope="module")
def world_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("world")
    write_world(root, train=3, valid=1, test=1, seconds=6.0, jobs=2)
    return root


def _cfg(root, out, **kw) -> TrainConfig:
    return tiny_train_config(root, out, **{"epochs": 1, **kw})


def test_training_runs_on_the_world_and_fine_tunes_from_a_checkpoint(world_root, tmp_path):
    first = Trainer(_cfg(world_root, tmp_path / "a")).run()
    assert first["step"] == 3 and np.isfinite(first["best_valid_loss"])
    start = Separator.from_pretrained(tmp_path / "a" / "best").model.state_dict()
    tuned = Trainer(_cfg(world_root, tmp_path / "b", init_from=str(tmp_path / "a" / "best")))
    for k, v in tuned.model.state_dict().items():  # it starts where the checkpoint is, not at random
        assert torch.equal(v.cpu(), start[k].to(v.dtype)), k
    assert np.isfinite(tuned.run()["best_valid_loss"])
    # A fine-tune of a fine-tune: its card states the whole chain of data and budgets.
    again = Trainer(_cfg(world_root, tmp_path / "e", init_from=str(tmp_path / "b" / "best"), epochs=2))
    again.run()
    training = json.loads((tmp_path / "e" / "best" / "config.json").read_text())["training"]
    assert training["init_from"] == str(tmp_path / "b" / "best")
    assert training["parent"]["init_from"] == str(tmp_path / "a" / "best")
    assert training["parent"]["parent"]["steps"] == 3 and "init_from" not in training["parent"]["parent"]
    card = (tmp_path / "e" / "best" / "README.md").read_text()
    lineage = card.split("## Lineage")[1].split("\n## ")[0]
    steps = [row.split(" | ")[2] for row in lineage.splitlines() if row.startswith(("| 0 ", "| 1 ", "| 2 "))]
    assert [s.split(",")[0] for s in steps] == ["fine-tune", "fine-tune", "trained from scratch"]
    assert lineage.count(" min on CPU (") == 3 and "| compute, all 3 steps of the lineage |" in card
    resumed = Trainer(resume_config(tmp_path / "e", epochs=3), resume=True)
    assert resumed.parent == training["parent"]  # a resumed fine-tune keeps its lineage
    with pytest.raises(CheckpointError, match="is a dprnn checkpoint, not conv1d"):
        Trainer(_cfg(world_root, tmp_path / "c", model="conv1d", init_from=str(tmp_path / "a" / "best")))
    shaped = {**dataclasses.asdict(TINY_CONFIGS["dprnn"]), "hidden_size": 24}
    with pytest.raises(CheckpointError, match="changes the weights' shapes"):
        Trainer(_cfg(world_root, tmp_path / "d", model_config=shaped, init_from=str(tmp_path / "a" / "best")))


def test_extra_training_folders_add_their_tracks_but_not_their_validation(world_root, tmp_path):
    # The world plus a synthetic set: every track under the synthetic train/ (validation-named
    # ones too) is training data; validation stays the world's one track.
    synthetic = write_musdb_folder(tmp_path / "synthetic", train=2, valid=1, test=0, seconds=4.0, seed=2)
    trainer = Trainer(_cfg(world_root, tmp_path / "run", extra_train=(str(synthetic),)))
    names = [t.name for t in trainer.dataset.tracks]
    assert len(names) == 3 + 3 and sum(n.startswith("World") for n in names) == 3
    valid = open_musdb(world_root, is_wav=True, split="valid")
    assert [t.name for t in trainer.valid_set.tracks] == [t.name for t in valid]
    assert trainer.data_name.startswith("songs rendered from sampled sounds (songgen.world, 3 train tracks of 6 s")
    assert "1 validation track of 6 s" in trainer.valid_set.description
    assert "evenly stretched" not in trainer.data_name  # only records of sets rendered before the alignment say so
    assert "plus synthetic MUSDB-shaped set" in trainer.data_name
    assert trainer.run()["step"] == 6  # (3 + 3 tracks) x 2 chunks / batch 2
    card = (tmp_path / "run" / "best" / "README.md").read_text()
    assert "plus synthetic MUSDB-shaped set" in card  # the card names both
    assert resume_config(tmp_path / "run").extra_train == (str(synthetic),)  # a resumed run keeps them
    from training.__main__ import build_parser, config_from_args

    argv = ["--musdb-root", "w", "--extra-train", "a", "--extra-train", "b"]
    assert config_from_args(build_parser().parse_args(argv)).extra_train == ("a", "b")
    with pytest.raises(SeparationError, match="no train tracks found"):
        Trainer(_cfg(world_root, tmp_path / "bad", extra_train=(str(tmp_path / "run"),)))


def test_cli_writes_a_world_and_refuses_bad_arguments(tmp_path):
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "songgen.world",
            str(tmp_path / "w"),
            "--sounds",
            "heldout",
            "--test",
            "1",
            "--seconds",
            "4",
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert run.returncode == 0, run.stderr
    assert "wrote 1 tracks of 4 s from the 'heldout' sounds" in run.stdout
    assert json.loads((tmp_path / "w" / "world.json").read_text())["syllables_on_notes"] is True
    mix, rate = sf.read(next((tmp_path / "w" / "test").iterdir()) / "mixture.wav")
    assert rate == SAMPLE_RATE and mix.shape == (4 * SAMPLE_RATE, 2)
    bad = subprocess.run(
        [sys.executable, "-m", "songgen.world", str(tmp_path / "x"), "--sounds", "fluid"],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert bad.returncode == 2 and "invalid choice: 'fluid'" in bad.stderr


def test_every_package_a_missing_sound_names_is_installed_by_setup():
    listed = set((ROOT / "packages-world.txt").read_text().split())
    source = (ROOT / "songgen" / "world" / "sounds.py").read_text()
    named = set(re.findall(r'"([a-z0-9-]+(?:soundfont|drumkits|festvox-[a-z0-9-]+|festival|espeak-ng))"', source))
    named |= {v.package for s in SPLITS.values() for v in s.voices if v.package}
    assert named and named <= listed, named - listed
    assert "fluidsynth" in listed and "packages-world.txt" in (ROOT / "scripts" / "setup.sh").read_text()
    # and the package a voice names is the one that installs it (ked_diphone once named kal's
    # package, so a machine set up from the list sang kal's voice in its place)
    for v in {v for s in SPLITS.values() for v in s.voices if v.engine == "festival"}:
        folder = next(sounds_module.FESTIVAL_VOICES.glob(f"*/{v.name}"))
        owner = subprocess.run(["dpkg-query", "-S", str(folder)], capture_output=True, text=True, check=True)
        assert owner.stdout.split(":")[0] == v.package, (v.id, owner.stdout)


def test_a_voice_that_is_not_there_is_an_error_not_another_singer(tmp_path):
    # Festival answers an unknown voice with a Scheme error on stderr, exit status 0 and its
    # default voice, flite with its default voice alone; a world must not record one singer and
    # render another.
    with pytest.raises(SeparationError, match=r"festival:no_such_diphone failed in Festival.*festvox-nothing"):
        voices.speak(sounds_module.Voice("festival", "no_such_diphone", "festvox-nothing"), "la la")
    # flite says nothing at all and sings in kal
    assert {"awb", "rms"} <= set(voices.flite_voices())
    with pytest.raises(SeparationError, match="flite:no_such: flite has no voice 'no_such' .*awb"):
        voices.speak(sounds_module.Voice("flite", "no_such", "flite"), "la la")
    audio, rate = voices.speak(SPLITS["train"].voices[1], "la la")  # ked_diphone, which is there
    assert rate == 16000 and audio.size > 0.1 * rate


# ---------------------------------------------------------------------------- synthesiser patches


def test_patch_share_plays_parts_on_random_synth_patches_and_changes_nothing_else(songs):
    """`patch_share` swaps soundfont presets for random synthesiser patches in bass and `other`
    parts; at 0 the song is bit for bit the one rendered before the option existed, and the
    score, voice and kit never depend on it."""
    plain, plain_info = songs[("train", 2)]
    track, info = render_song(2, "train", SECONDS, patch_share=0.0)
    assert info == plain_info and all(np.array_equal(track[k], plain[k]) for k in plain)
    patched, pinfo = render_song(2, "train", SECONDS, patch_share=1.0)
    again, _ = render_song(2, "train", SECONDS, patch_share=1.0)
    assert all(np.array_equal(patched[k], again[k]) for k in patched)  # deterministic
    for key in ("genre", "tempo", "key", "sections", "voice", "kit"):
        assert pinfo[key] == plain_info[key]
    roles = [p.split(":")[0] for p in plain_info["parts"]["bass"] + plain_info["parts"]["other"]]
    played = pinfo["parts"]["bass"] + pinfo["parts"]["other"]
    assert [p.split(":")[0] for p in played] == roles  # the same parts, each on a patch
    label = r"(bass|comp|pad|lead):patch:(saw|square|triangle|organ|fm):[0-9a-f]{8}"
    assert all(re.fullmatch(label, p) for p in played)
    assert len(set(p.split(":", 1)[1] for p in played)) == len(played)  # no two parts share a patch
    chosen = {p.split(":")[1] for p in plain_info["parts"]["bass"] + plain_info["parts"]["other"]}
    assert not chosen <= set(pinfo["soundfonts"])  # an unplayed soundfont is not listed as used
    ints = {k: patched[k].astype(np.float64) * 32768 for k in patched}
    assert np.array_equal(ints["mixture"], sum(ints[s] for s in SOURCES))  # still the exact sum
    assert not np.array_equal(patched["bass"], plain["bass"]) and np.abs(patched["bass"]).max() > 0.01
    f, power = welch(patched["bass"].mean(axis=1), SAMPLE_RATE, nperseg=4096)
    assert power[f < 1500].sum() / power.sum() > 0.8  # a patched bass is still a bass


def test_a_patch_is_band_limited_finite_and_silent_after_its_release():
    from songgen.world.patches import KINDS, TOP_HZ, Patch

    rng = np.random.default_rng(0)
    seen = set()
    for i in range(40):
        patch = Patch.draw(rng, ["bass", "comp", "pad", "lead"][i % 4])
        seen.add(patch.kind)
        notes = [Note(0.1, 0.4, 84, 100), Note(0.6, 0.3, 40, 30)]
        audio = patch.render(notes, 2.0)
        assert audio.shape == (2 * SAMPLE_RATE, 2) and audio.dtype == np.float32 and np.isfinite(audio).all()
        assert np.abs(audio).max() > 1e-3
        assert not audio[: int(0.1 * SAMPLE_RATE)].any()  # nothing before the first note
        end = int((0.9 + patch.release) * SAMPLE_RATE) + 1
        assert not audio[end:].any()  # the last release ends at exactly zero
        if patch.kind != "fm":  # additive: no partial above TOP_HZ, so nothing aliased (the noise burst aside)
            tone = dataclasses.replace(patch, noise=0.0).render(notes, 2.0)
            f, power = welch(tone[:, 0], SAMPLE_RATE, nperseg=2048)
            assert power[f > TOP_HZ + 500].sum() < 1e-4 * power.sum(), patch
    assert seen == set(KINDS)


@pytest.mark.parametrize("share", ["patch_share", "singer_share"])
def test_patches_and_varied_singers_are_training_sounds_only(tmp_path, share):
    for sounds in ("heldout", "unseen", "valid"):
        with pytest.raises(ValueError, match="training sounds"):
            render_song(0, sounds, 4.0, **{share: 0.5})
        with pytest.raises(ValueError, match="training sounds"):
            write_world(tmp_path / sounds, sounds=sounds, test=1, seconds=4.0, **{share: 0.5})
        assert not (tmp_path / sounds).exists()
    flag = "--" + share.replace("_", "-")
    cli = [sys.executable, "-m", "songgen.world", str(tmp_path / "cli"), "--train", "1", "--valid", "0", "--test", "0"]
    args = [*cli, "--sounds", "unseen", flag, "0.5"]
    done = subprocess.run(args, capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 2 and "training sounds" in done.stderr and flag in done.stderr
    assert not (tmp_path / "cli").exists()
    for bad in ("1.5", "-0.1", "nan", "half"):
        done = subprocess.run([*cli, flag, bad], capture_output=True, text=True, cwd=ROOT)
        assert done.returncode == 2 and "a probability from 0 to 1" in done.stderr, bad
    assert not (tmp_path / "cli").exists()


def test_a_patched_set_says_so_in_its_description(tmp_path):
    from songgen.describe import describe_generated

    meta = write_world(tmp_path / "p", train=2, valid=0, test=0, seconds=4.0, patch_share=0.5, singer_share=1.0)
    assert meta["patch_share"] == 0.5 and meta["singer_share"] == 1.0
    assert any(":patch:" in p for t in meta["tracks"] for p in t["parts"]["bass"] + t["parts"]["other"])
    # every song but one sung by the formant voice (it has no WORLD analysis to vary) has a singer
    assert all(("singer" in t) == (t["voice"] != "formant:synthetic") for t in meta["tracks"])
    text = describe_generated(str(tmp_path / "p"), tracks=2, kind="train")
    assert text.endswith(", 9 voices, --patch-share 0.5, --singer-share 1)")


# ---------------------------------------------------------------------------- varied singers


def test_singer_share_varies_the_voice_and_changes_nothing_else(songs):
    """`singer_share` sings a song through a varied copy of its voice; at 0 the song is bit for
    bit the one rendered before the option existed, and nothing but the vocals is redrawn (the
    other stems move only by the shared bus limiter's gain)."""
    seed = next(s for s in range(6) if songs[("train", s)][1]["voice"] != "formant:synthetic")
    plain, plain_info = songs[("train", seed)]
    track, info = render_song(seed, "train", SECONDS, singer_share=0.0)
    assert info == plain_info and "singer" not in info and all(np.array_equal(track[k], plain[k]) for k in plain)
    varied, vinfo = render_song(seed, "train", SECONDS, singer_share=1.0)
    again, _ = render_song(seed, "train", SECONDS, singer_share=1.0)
    assert all(np.array_equal(varied[k], again[k]) for k in varied)  # deterministic
    assert re.fullmatch(r"singer:w[0-9.]+:b[0-9.]+:t[+-][0-9.]+:r[0-9.]+@[0-9]+", vinfo["singer"])
    assert vinfo["parts"]["vocals"][0] == f"{plain_info['voice']}+{vinfo['singer']}"
    assert {k: v for k, v in vinfo.items() if k != "singer"} == plain_info | {"parts": vinfo["parts"]}
    assert vinfo["parts"]["vocals"][1:] == plain_info["parts"]["vocals"][1:]
    assert all(vinfo["parts"][k] == plain_info["parts"][k] for k in ("bass", "drums", "other"))
    ints = {k: varied[k].astype(np.float64) * 32768 for k in varied}
    assert np.array_equal(ints["mixture"], sum(ints[s] for s in SOURCES))  # still the exact sum
    assert not np.array_equal(varied["vocals"], plain["vocals"]) and np.abs(varied["vocals"]).max() > 0.01
    for stem in ("bass", "drums", "other"):
        a, b = varied[stem].ravel().astype(np.float64), plain[stem].ravel().astype(np.float64)
        if np.any(b):
            assert np.corrcoef(a, b)[0, 1] > 0.99, stem
    for start, end in _vocal_free_spans(plain_info):  # vocal-free sections stay vocal-free
        span = slice(int(start * SAMPLE_RATE) + 4410, int(end * SAMPLE_RATE))
        assert np.abs(varied["vocals"][span]).max() <= np.abs(plain["vocals"][span]).max() + 1e-3


def _vocal_free_spans(info: dict) -> list[tuple[float, float]]:
    return [(a, b) for name, a, b in info["sections"] if name in ("intro", "break", "outro") and b - a > 0.5]


def test_a_singer_reshapes_the_envelope_as_its_parameters_say():
    """`Singer.color` on a flat envelope: tilt and singer's formant where they are said to be,
    breathiness up or down; the default singer changes nothing; drawn singers stay in range."""
    Singer = voices.Singer
    bins = 1025
    freqs = np.linspace(0, SAMPLE_RATE / 2, bins)
    sp, ap = np.ones((3, bins)), np.full((3, bins), 0.25)
    same_sp, same_ap = Singer().color(sp, ap)
    assert np.array_equal(same_sp, sp) and np.array_equal(same_ap, ap)
    bright, _ = Singer(tilt_db=2.0).color(sp, ap)
    db = 10 * np.log10(bright[0])
    at = {f: db[np.argmin(np.abs(freqs - f))] for f in (250, 1000, 4000)}
    assert at[1000] == pytest.approx(0.0, abs=0.2) and at[4000] == pytest.approx(4.0, abs=0.2)
    assert at[250] == pytest.approx(-4.0, abs=0.2)
    ring, _ = Singer(ring_db=6.0, ring_hz=3000.0).color(sp, ap)
    assert freqs[np.argmax(ring[0])] == pytest.approx(3000.0, abs=25.0)
    assert 10 * np.log10(ring[0].max()) == pytest.approx(6.0, abs=0.05) and ring[0][:50].max() < 1.001
    assert (Singer(breath=0.5).color(sp, ap)[1] > ap).all() and (Singer(breath=1.5).color(sp, ap)[1] < ap).all()
    rng = np.random.default_rng(0)
    drawn = [Singer.draw(rng) for _ in range(200)]
    assert all(0.88 <= d.warp <= 1.14 and 0.35 <= d.breath <= 1.6 and 0 <= d.ring_db <= 9 for d in drawn)
    assert min(d.breath for d in drawn) < 0.5 and max(d.breath for d in drawn) > 1.3  # both ways


def test_a_longer_vocal_tract_lowers_the_sung_formants():
    """A singer's `warp` acts on the sung audio, not only on paper: the same phrase, same notes
    and same draws, sung with a shorter vocal tract (warp 1.14) has its spectral centroid higher
    than with a longer one (0.88), at the same timing."""
    voice = SPLITS["train"].voices[1]
    song = make_song(np.random.default_rng(0), 20.0, female=voice.female)
    phrase = song.phrases[0]
    sung = {}
    for warp in (0.88, 1.14):
        singer = voices.Singer(warp=warp)
        sung[warp] = voices.sing(voice, phrase.words, phrase.notes, np.random.default_rng(1), singer=singer)
    (s1, low), (s2, high) = sung[0.88], sung[1.14]
    assert s1 == s2 and len(low) == len(high) and np.isfinite(low).all() and np.isfinite(high).all()

    def centroid(x):
        f, power = welch(x, SAMPLE_RATE, nperseg=2048)
        band = f < 8000
        return float((f[band] * power[band]).sum() / power[band].sum())

    assert centroid(high) > 1.08 * centroid(low)
