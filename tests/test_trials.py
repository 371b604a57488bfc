"""Blind trials without a server: files that reveal nothing, matched loudness, the anchor, gold
trials, the headphone check, excerpt metrics; the store's rules; signed listener ids; limits."""

from __future__ import annotations

import hashlib
import json
import os
import random
import stat
import threading
import time

import numpy as np
import pytest
import soundfile as sf
import torch

from separation.audio import SAMPLE_RATE
from tests.helpers import Clock, voice_and_band
from webapp.clips import ensure_demo_clips, load_clip
from webapp.listening.listeners import RateLimiter, Signer, client_address
from webapp.listening.page import missing_text
from webapp.listening.stimuli import (
    EXCERPTS_PER_SOURCE,
    HEADPHONE_TRIALS,
    LEVEL_JITTER_DB,
    PEAK,
    TrialFiles,
    audible_excerpt,
    headphone_check,
    loudness,
    make_trial,
    match_loudness,
    prepare_excerpts,
    write_dithered,
)
from webapp.listening.store import IncompleteTrial, RatingError, RatingsStore
from webapp.service import ModelPool, cleanup, new_workdir, run_separation

SR = SAMPLE_RATE


@pytest.fixture(scope="module")
def pool():
    return ModelPool(["dprnn", "conv1d"], device="cpu", background=False)


@pytest.fixture(scope="module")
def separated(pool, tmp_path_factory):
    (clip,) = ensure_demo_clips(tmp_path_factory.mktemp("demo"), seeds=(5,), seconds=8.0)
    mix, refs = load_clip(clip, 1.0, 6.0)
    return run_separation(mix, refs, pool=pool, workdir=tmp_path_factory.mktemp("work"), clip=clip.id)


@pytest.fixture
def files(tmp_path):
    return TrialFiles(tmp_path / "trials")


def read(path) -> np.ndarray:
    return sf.read(path, dtype="float64")[0]


def conditions_of(store, audio) -> dict[str, str]:
    return store.get_trial(audio.trial_id).conditions


@pytest.mark.slow
def test_a_mushra_trial_hides_shuffles_and_never_repeats_a_file(separated, files, tmp_path):
    store = RatingsStore(tmp_path / "r.sqlite")
    orders, names = set(), set()
    for seed in range(6):
        audio = make_trial(separated, store, "e" * 32, files, rng=random.Random(seed), seconds=4.0)
        conditions = conditions_of(store, audio)
        assert audio.kind == "mushra" and sorted(conditions.values()) == ["anchor", "conv1d", "dprnn", "reference"]
        assert all(sf.info(f).frames == 4 * SR for f in [*audio.files.values(), audio.reference])
        trial_names = {f.name for f in [*audio.files.values(), audio.reference]}
        assert len(trial_names) == 5 and not trial_names & names  # new random names in every trial
        names |= trial_names
        orders.add(tuple(conditions[label] for label in audio.labels))
        hidden = next(label for label, c in conditions.items() if c == "reference")
        # the hidden reference is the reference, but never byte for byte: each served file has a
        # level offset of its own (kept with the trial) and its own dither
        offsets = store.get_trial(audio.trial_id).offsets
        assert set(offsets) == {*audio.labels, "reference"} and len(set(offsets.values())) == 5
        assert all(abs(v) <= LEVEL_JITTER_DB for v in offsets.values())
        assert audio.files[hidden].read_bytes() != audio.reference.read_bytes()
        hidden_wave = read(audio.files[hidden]) / 10 ** (offsets[hidden] / 20)
        # within the two files' dithers and roundings, twice over (excerpt, then trial): <= 6 LSB
        assert np.abs(hidden_wave - read(audio.reference) / 10 ** (offsets["reference"] / 20)).max() <= 6.5 / 32768
    assert len(orders) > 1


def test_served_files_are_plain_16_bit_wavs_of_the_signal_with_their_own_dither(tmp_path):
    """The trial files' writer (its own wav writer, no libsndfile on the request's path): a wav any
    reader opens, the signal at its level offset within the dither's 1 LSB and the rounding's half,
    from floats or from 16-bit samples alike, and never the same bytes twice."""
    rng = np.random.default_rng(0)
    wave = np.clip(0.3 * rng.standard_normal((2, SR)), -1, 1).astype(np.float32)
    wave[:, :100] = [[1.0], [-1.0]]  # full scale both ways
    pcm16 = (wave * 32767).astype(np.int16)
    written = [
        write_dithered(tmp_path / "a.wav", wave, rng, 0.15, table=True),
        write_dithered(tmp_path / "b.wav", wave, rng, 0.15, table=True),
        write_dithered(tmp_path / "c.wav", pcm16, rng, -0.2),
    ]
    info = sf.info(written[0])
    assert (info.samplerate, info.channels, info.frames, info.subtype) == (SR, 2, SR, "PCM_16")
    assert written[0].stat().st_size == 44 + 4 * SR  # the 44-byte header and the samples, nothing else
    sources = (wave * 32768.0, wave * 32768.0, pcm16.astype(float))
    for path, gain_db, source in zip(written, (0.15, 0.15, -0.2), sources, strict=True):
        pcm = sf.read(path, dtype="int16", always_2d=True)[0].T.astype(float)
        expected = np.clip(source * 10 ** (gain_db / 20), -32768, 32767)
        assert np.abs(pcm - expected).max() <= 1.5 + 1e-3
        if gain_db > 0:  # raised past full scale: clipped at the 16-bit range, not wrapped around
            assert pcm[0, 0] == 32767 and pcm[1, 0] == -32768
        assert 0.2 < np.std(pcm - expected) < 0.7  # TPDF of 1 LSB each side, plus rounding: ~0.5 LSB
    assert written[0].read_bytes() != written[1].read_bytes()


def test_conditions_are_loudness_matched_without_clipping():
    rng = np.random.default_rng(0)
    quiet = 0.01 * rng.standard_normal((2, 3 * SR)).astype(np.float32)
    loud = 0.9 * np.clip(rng.standard_normal((2, 3 * SR)), -1, 1).astype(np.float32)  # would need > 0 dBFS
    out, levels = match_loudness({"reference": quiet, "model": loud, "louder": 3 * quiet}, "reference")
    assert max(levels.values()) - min(levels.values()) < 0.1
    assert max(float(np.abs(w).max()) for w in out.values()) <= PEAK + 1e-6  # lowered together, not clipped
    silent, _ = match_loudness({"reference": quiet, "silent": np.zeros_like(quiet)}, "reference")
    assert not silent["silent"].any()  # silence stays silence (no infinite gain)


def test_trial_files_are_within_one_lu(separated, files, tmp_path):
    store = RatingsStore(tmp_path / "r.sqlite")
    audio = make_trial(separated, store, "e" * 32, files, rng=random.Random(3), seconds=4.0)
    levels = [loudness(read(f).T) for f in [*audio.files.values(), audio.reference]]
    assert max(levels) - min(levels) < 1.0, levels


def test_the_anchor_is_low_passed(separated, files, tmp_path):
    store = RatingsStore(tmp_path / "r.sqlite")
    audio = make_trial(separated, store, "f" * 32, files, rng=random.Random(1), source="accompaniment")
    label = next(label for label, c in conditions_of(store, audio).items() if c == "anchor")
    anchor, reference = read(audio.files[label])[:, 0], read(audio.reference)[:, 0]
    freqs = np.fft.rfftfreq(len(anchor), 1 / SR)
    high = freqs > 5000

    def power(x):
        return np.abs(np.fft.rfft(x)) ** 2

    assert power(reference)[high].sum() > 0
    assert power(anchor)[high].sum() < 1e-3 * power(reference)[high].sum()


def test_excerpts_are_a_fixed_set_and_no_served_file_equals_another(separated, files, tmp_path):
    """The stimuli are a fixed set, but the files a browser gets are each its own: one listener's
    identification of a file (its hash) is no lookup table for the next trial or listener."""
    store = RatingsStore(tmp_path / "r.sqlite")
    for seed in range(12):
        make_trial(separated, store, "e" * 32, files, rng=random.Random(seed), seconds=2.0, source="vocals")
    excerpts = list(files.excerpts.iterdir())
    assert 1 <= len(excerpts) <= EXCERPTS_PER_SOURCE
    served = list(files.served.rglob("*.wav"))
    assert len(served) == 12 * 5
    hashes = {hashlib.sha256(p.read_bytes()).hexdigest() for p in served}
    hashes |= {hashlib.sha256(p.read_bytes()).hexdigest() for p in files.excerpts.rglob("*.wav")}
    assert len(hashes) == 12 * 5 + len(list(files.excerpts.rglob("*.wav")))
    assert len({p.stat().st_size for p in served}) == 1  # one length and format: the size tells nothing
    # each MUSHRA excerpt's conditions are scored on the excerpt itself, once
    metrics = store.excerpt_metrics()
    keys = {excerpt for excerpt, _ in metrics}
    assert len(keys) == len(excerpts)
    for (_, condition), values in metrics.items():
        assert condition in ("anchor", "dprnn", "conv1d") and set(values) == {"SDR", "ISR", "SAR", "SI-SDR"}
        assert all(v is None or np.isfinite(v) for v in values.values())


def test_the_stimuli_are_prepared_ahead_and_trials_then_write_nothing(separated, files, tmp_path):
    store = RatingsStore(tmp_path / "r.sqlite")
    written = prepare_excerpts(separated, store, files, seconds=2.0)
    folders = sorted(files.excerpts.iterdir())
    assert written == len(folders) and 2 <= written <= 2 * EXCERPTS_PER_SOURCE  # both sources' fixed sets
    assert all((f / "done").exists() for f in folders) and len({k for k, _ in store.excerpt_metrics()}) == written
    assert prepare_excerpts(separated, store, files, seconds=2.0) == 0  # once
    stamps = {f: f.stat().st_mtime_ns for f in folders}
    for seed in range(10):
        make_trial(separated, store, "e" * 32, files, rng=random.Random(seed), seconds=2.0)
    assert sorted(files.excerpts.iterdir()) == folders  # every trial found its excerpt made
    assert any(f.stat().st_mtime_ns != stamps[f] for f in folders)  # in use: kept by the age clean-up


def test_ab_and_gold_trials_without_references(pool, files, tmp_path):
    voice, band = voice_and_band(3.0)
    sep = run_separation(
        torch.from_numpy(voice + band), None, pool=pool, workdir=tmp_path, clip="up.wav", figures=False
    )
    store = RatingsStore(tmp_path / "r.sqlite")
    kinds = {}
    for seed in range(30):
        audio = make_trial(sep, store, "g" * 32, files, rng=random.Random(seed))
        kinds.setdefault(audio.kind, []).append(audio)
        assert audio.labels == ["A", "B"] and audio.reference is None
    assert set(kinds) == {"ab", "gold"} and 2 <= len(kinds["gold"]) <= 14  # GOLD_RATE = 0.2 of 30
    # the stimuli they are balanced by: an A/B pair's, and a gold check's apart from a MUSHRA excerpt's
    stimuli = {kind: store.get_trial(found[0].trial_id).stimulus for kind, found in kinds.items()}
    assert stimuli["ab"].endswith("|conv1d,dprnn") and stimuli["gold"].endswith("|gold"), stimuli
    gold = kinds["gold"][0]
    trial = store.get_trial(gold.trial_id)
    assert sorted(trial.conditions.values()) == ["clean", "degraded"]
    assert trial.conditions[trial.answer] == "clean"
    clean = read(gold.files[trial.answer])
    degraded = read(gold.files[next(x for x in trial.conditions if x != trial.answer)])
    assert abs(loudness(clean.T) - loudness(degraded.T)) < 1.0  # matched: only quality tells them apart
    assert np.mean((clean - degraded) ** 2) > 0.05 * np.mean(clean**2)  # clearly worse


def test_excerpts_avoid_long_silences(tmp_path):
    """Vocals are absent from much of a real song: a 10-s vocals trial must not be drawn from an
    instrumental stretch (listeners would rate silence)."""
    wave = np.zeros((40 * SR, 2), dtype=np.float32)
    wave[25 * SR : 35 * SR] = 0.1 * np.random.default_rng(0).standard_normal((10 * SR, 2))  # sung from 25 s to 35 s
    path = tmp_path / "vocals.wav"
    sf.write(path, wave, SR, subtype="FLOAT")
    starts = {audible_excerpt([path], 10 * SR, random.Random(seed)) for seed in range(30)}
    assert all(21 * SR <= s <= 29 * SR for s in starts) and len(starts) > 3  # >= 6 of the 10 s sung, and varied
    silent = tmp_path / "silent.wav"
    sf.write(silent, np.zeros((20 * SR, 2), dtype=np.float32), SR)
    assert 0 <= audible_excerpt([silent], 10 * SR, random.Random(1)) <= 10 * SR  # nothing audible: any excerpt


def test_the_headphone_check_tells_headphones_from_loudspeakers(tmp_path):
    """Woods et al. (2017): on headphones the -6 dB tone is the softest; over loudspeakers the
    antiphase tone cancels in the air (left + right) and sounds softest. A listener who picks
    the softest tone as heard passes on headphones and fails on loudspeakers."""
    trial_files = TrialFiles(tmp_path / "trials")
    files, answers = headphone_check(trial_files, np.random.default_rng(0))
    assert len(files) == len(answers) == HEADPHONE_TRIALS and set(answers) <= {1, 2, 3}
    tones = [slice(0, SR), slice(int(1.5 * SR), int(2.5 * SR)), slice(3 * SR, 4 * SR)]

    def softest(path, heard):
        wave = read(path)
        return 1 + int(np.argmin([heard(wave[t]) for t in tones]))

    def headphones(x):
        return np.mean(x[:, 0] ** 2) + np.mean(x[:, 1] ** 2)  # each ear its own channel

    def loudspeakers(x):
        return np.mean((x[:, 0] + x[:, 1]) ** 2)  # both channels sum in the room

    assert [softest(f, headphones) for f in files] == answers
    assert sum(softest(f, loudspeakers) == a for f, a in zip(files, answers, strict=True)) == 0
    assert len({f.name for f in files}) == HEADPHONE_TRIALS
    # six fixed orders, but every check's files are its own (a level offset and dither of their own):
    # no file of 20 checks equals another byte for byte, and each still tells headphones apart
    hashes = {hashlib.sha256(f.read_bytes()).hexdigest() for f in files}
    for seed in range(100, 120):  # the app draws from an unseeded generator; here 20 other seeds
        more, truth = headphone_check(trial_files, np.random.default_rng(seed))
        assert not {f.name for f in more} & {f.name for f in files}
        assert [softest(f, headphones) for f in more] == truth
        hashes |= {hashlib.sha256(f.read_bytes()).hexdigest() for f in more}
    assert len(hashes) == 21 * HEADPHONE_TRIALS
    assert len(list((tmp_path / "trials" / "headphones").glob("*.wav"))) == 6


# ---------------------------------------------------------------------------- the store's rules


def trial(store, kind="mushra", conditions=None, seconds=0.0, listener="c" * 32):
    return store.create_trial(
        listener=listener,
        kind=kind,
        clip="x",
        source="vocals",
        conditions=conditions or {"A": "dprnn", "B": "reference"},
        versions={},
        seconds=seconds,
    )


def test_a_locked_database_says_so_and_leaves_no_transaction_open(tmp_path):
    """Where another writer holds the lock past the busy timeout, the error is sqlite's own
    "database is locked" (the handler's ROLLBACK used to replace it with "no transaction is
    active"), and once the lock is gone the same connection rates normally."""
    import sqlite3

    store = RatingsStore(tmp_path / "r.sqlite")
    t = trial(store)
    store._connect().execute("PRAGMA busy_timeout=100")
    other = sqlite3.connect(tmp_path / "r.sqlite", isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    with pytest.raises(sqlite3.OperationalError, match="database is locked"):
        store.submit("c" * 32, t.id, scores={"A": 50, "B": 100})
    other.execute("ROLLBACK")
    assert not store._connect().in_transaction
    assert store.submit("c" * 32, t.id, scores={"A": 50, "B": 100}) == 2


def test_two_answers_to_one_headphone_check_are_not_both_scored(tmp_path, monkeypatch):
    """An answer arriving while another is being scored (here: sent from inside the first one,
    after it read "no score yet") is refused, and the first then finds the check done: one score
    per listener, so answers cannot be tried one against another."""
    store = RatingsStore(tmp_path / "r.sqlite")
    store.add_listener("c" * 32, "client")
    store.set_headphone_check("c" * 32, [1, 2, 3])
    real_loads, sent = json.loads, []

    def concurrent_answer(text, *args, **kwargs):
        if not sent:
            sent.append(None)
            sent[0] = store.answer_headphone_check("c" * 32, [3, 2, 1])  # the other request, first to store
        return real_loads(text, *args, **kwargs)

    monkeypatch.setattr("webapp.listening.store.json.loads", concurrent_answer)
    with pytest.raises(RatingError, match="already done"):
        store.answer_headphone_check("c" * 32, [1, 2, 3])
    assert sent == [1] and store.headphone_score("c" * 32) == 1  # the one stored score is the first stored


def test_each_rating_records_how_it_came_and_older_rows_say_unknown(tmp_path):
    """`via`: "page" (every sample heard and every slider set first) or "api" (a script). A
    database written before the column existed is migrated in place; its rows say "unknown"."""
    import sqlite3

    from webapp.listening import store as store_module

    path = tmp_path / "old.sqlite"
    with sqlite3.connect(path) as db:  # the schema as it was, and one rating in it
        db.executescript(store_module.SCHEMA)
        db.execute(
            "INSERT INTO trials (id, listener, kind, clip, source, conditions, versions, created) VALUES"
            " ('t0', 'l', 'mushra', 'x', 'vocals', '{}', '{}', 0)"
        )
        db.execute(
            "INSERT INTO ratings (listener, trial, kind, clip, source, condition, score, created,"
            " app_version, checkpoint) VALUES ('l', 't0', 'mushra', 'x', 'vocals', 'dprnn', 50, 0, 'v', '-')"
        )
    store = RatingsStore(path)
    assert [r["via"] for r in store.rows()] == ["unknown"]
    page, api = trial(store), trial(store)
    heard = {"A": 3.0, "B": 3.0, "reference": 3.0}
    store.submit(
        "c" * 32, page.id, scores={"A": 50, "B": 100}, heard=heard, rated=["A", "B"], min_heard=3.0, via="page"
    )
    store.submit("c" * 32, api.id, scores={"A": 50, "B": 100})
    assert [r["via"] for r in store.rows()] == ["unknown", "page", "page", "api", "api"]
    answered = store.answered("c" * 32)
    assert [a["trial"] for a in answered] == [page.id, api.id] and [a["via"] for a in answered] == ["page", "api"]
    assert store.answered("d" * 32) == []  # answers, not rows
    with pytest.raises(ValueError, match="via is one of"):
        store.submit("c" * 32, trial(store).id, scores={"A": 1, "B": 2}, via="email")


def test_no_rating_sooner_than_the_excerpt(tmp_path):
    clock = Clock()
    store = RatingsStore(tmp_path / "r.sqlite", clock=clock)
    t = trial(store, seconds=10.0)
    clock.advance(9.9)
    with pytest.raises(RatingError, match="too soon: the samples last 10 s each"):
        store.submit("c" * 32, t.id, scores={"A": 50, "B": 100})
    assert store.count() == 0
    clock.advance(0.1)
    assert store.submit("c" * 32, t.id, scores={"A": 50, "B": 100}) == 2


def test_from_the_page_every_sample_must_be_heard_long_enough_and_rated(tmp_path):
    store = RatingsStore(tmp_path / "r.sqlite")
    t = trial(store, seconds=10.0)
    store.clock = lambda: t.created + 60

    def send(heard, rated):
        return store.submit("c" * 32, t.id, scores={"A": 50, "B": 100}, heard=heard, rated=rated, min_heard=3.0)

    with pytest.raises(IncompleteTrial) as refused:  # a RatingError the page puts in words
        send(None, None)
    assert missing_text(refused.value.unheard, refused.value.unset, refused.value.seconds) == (
        "listen to A, B and the reference for 3 s each; rate A and B"
    )
    # a 0.1-s play-pause of A is not hearing it; 2.999 s of B is not 3 s
    with pytest.raises(IncompleteTrial) as refused:
        send({"A": 0.1, "B": 2.999, "reference": 30.0}, ["B"])
    assert (refused.value.unheard, refused.value.unset) == (["A", "B"], ["A"])
    assert isinstance(refused.value, RatingError)
    for bad in ({"A": "3"}, {"A": float("nan")}, {"A": -1}, ["A"], {"A": True}):
        with pytest.raises(RatingError):
            send(bad, ["A", "B"])
    assert store.count() == 0 and store.get_trial(t.id).heard == {}
    heard = {"A": 3.0, "B": 4.5, "reference": 12.25}
    assert send(heard, ["A", "B"]) == 2
    assert store.get_trial(t.id).heard == heard  # kept with the trial, for screening
    assert {r["heard"] for r in store.rows()} == {19.75} and {r["took"] for r in store.rows()} == {60.0}
    assert missing_text(["B"], [], 3.0) == "listen to B for 3 s"
    # the minimum is never longer than the excerpt: a 2-s excerpt needs 2 s of each
    short = trial(store, seconds=2.0)
    store.clock = lambda: short.created + 60
    done = {"A": 2.0, "B": 2.0, "reference": 2.0}
    assert store.submit("c" * 32, short.id, scores={"A": 1, "B": 2}, heard=done, rated=["A", "B"], min_heard=3.0)


def test_answers_are_validated_before_anything_is_written(tmp_path):
    store = RatingsStore(tmp_path / "r.sqlite", rate_limit=3)
    me, other = "c" * 32, "d" * 32
    t = trial(store)
    with pytest.raises(RatingError, match="rate every sample"):
        store.submit(me, t.id, scores={"A": 50})
    for bad, match in ((-1, "from 0 to 100"), (100.5, "from 0 to 100"), (float("nan"), "from 0 to 100"),
                       ("50", "not text"), (True, "not true/false"), (None, "not nothing")):  # fmt: skip
        with pytest.raises(RatingError, match=match):
            store.submit(me, t.id, scores={"A": bad, "B": 50})
    with pytest.raises(RatingError, match="unknown trial"):
        store.submit(me, "no-such-trial", scores={"A": 1, "B": 2})
    with pytest.raises(RatingError, match="another listener"):
        store.submit(other, t.id, scores={"A": 1, "B": 2})
    with pytest.raises(RatingError, match="listener id"):
        store.submit("x'; DROP TABLE ratings; --", t.id, scores={"A": 1, "B": 2})
    assert store.count() == 0  # nothing half-written
    store.submit(me, t.id, scores={"A": 10, "B": 95})
    with pytest.raises(RatingError, match="already rated"):
        store.submit(me, t.id, scores={"A": 10, "B": 95})
    ab = trial(store, "ab", {"A": "umxhq", "B": "dprnn"})
    for choice in (None, "", "C", True, {"choice": "A"}):
        with pytest.raises(RatingError, match="say which sample you prefer"):
            store.submit(me, ab.id, choice=choice)
    with pytest.raises(RatingError, match="from 1 to 5"):
        store.submit(me, ab.id, choice="A", mos={"A": 6})
    store.submit(me, ab.id, choice="B", mos={"A": 2, "B": 4})
    assert [r for r in store.rows() if r["kind"] == "ab"][0]["choice"] == "dprnn"
    tie = trial(store, "ab", {"A": "umxhq", "B": "dprnn"})
    store.submit(me, tie.id, choice="no preference")
    assert [r for r in store.rows() if r["trial"] == tie.id][0]["choice"] is None
    with pytest.raises(RatingError, match="too many ratings"):
        store.submit(me, trial(store).id, scores={"A": 1, "B": 2})  # a fourth trial within the minute


def test_a_gold_trial_answers_like_any_ab_trial(tmp_path):
    """Its refusals are the A/B ones (a client cannot find gold trials by their errors), and
    only the choice is kept."""
    store = RatingsStore(tmp_path / "r.sqlite")
    gold = trial(store, "gold", {"A": "degraded", "B": "clean"})
    ab = trial(store, "ab", {"A": "umxhq", "B": "dprnn"})
    for bad in ({"A": True}, {"A": "5"}, {"A": 9}, [4, 4], {"C": 3}):
        messages = set()
        for t in (gold, ab):
            with pytest.raises(RatingError) as err:
                store.submit("c" * 32, t.id, choice="A", mos=bad)
            messages.add(str(err.value))
        assert len(messages) == 1, messages
    assert store.submit("c" * 32, gold.id, choice="B", mos={"A": 2, "B": 5}) == 1
    (row,) = store.rows()
    assert row["kind"] == "gold" and row["choice"] == "clean"


def test_an_old_database_is_migrated_in_place(tmp_path):
    import sqlite3

    path = tmp_path / "old.sqlite"
    with sqlite3.connect(path) as db:  # the first version's trials table
        db.execute(
            "CREATE TABLE trials (id TEXT PRIMARY KEY, listener TEXT NOT NULL, kind TEXT NOT NULL, clip TEXT NOT NULL,"
            " source TEXT NOT NULL, conditions TEXT NOT NULL, versions TEXT NOT NULL, created REAL NOT NULL)"
        )
        db.execute(
            "INSERT INTO trials VALUES ('t1', 'cccccccccccc', 'mushra', 'x', 'vocals', '{\"A\": \"d\"}', '{}', 1)"
        )
    store = RatingsStore(path)
    old = store.get_trial("t1")
    assert old.seconds == 0 and old.heard == {} and old.files == {} and old.conditions == {"A": "d"}
    assert store.submit("cccccccccccc", "t1", scores={"A": 5}) == 1


# ---------------------------------------------------------------------------- listeners and limits


def test_listener_ids_are_signed_and_the_key_is_kept(tmp_path):
    key = tmp_path / "secret.key"
    signer = Signer(key_file=key)
    token = signer.issue()
    assert signer.valid(token) and signer.check(token) == token
    assert stat.S_IMODE(os.stat(key).st_mode) == 0o600
    assert Signer(key_file=key).valid(token)  # the same key after a restart
    assert not Signer("another key").valid(token)
    ident, sig = token.split(".")
    for forged in ("a" * 32, f"{ident}.{'0' * 32}", f"{'0' * 32}.{sig}", token.upper(), None, 5, ""):
        assert not signer.valid(forged)
        with pytest.raises(RatingError, match="unknown or forged listener id"):
            signer.check(forged)
    assert signer.client_key("1.2.3.4") == signer.client_key("1.2.3.4") != signer.client_key("1.2.3.5")
    assert "1.2.3.4" not in signer.client_key("1.2.3.4")


def test_the_client_address_believes_only_the_proxies_it_is_told_of():
    class Request:
        def __init__(self, forwarded, peer="10.0.0.1"):
            self.headers = {"x-forwarded-for": forwarded} if forwarded else {}
            self.client = type("Peer", (), {"host": peer})()

    spoofed = Request("6.6.6.6, 203.0.113.9")  # the client wrote 6.6.6.6; the proxy appended .9
    assert client_address(spoofed, proxy_hops=0) == "10.0.0.1"  # the header is not believed at all
    assert client_address(spoofed, proxy_hops=1) == "203.0.113.9"
    assert client_address(Request("203.0.113.9, 10.2.0.1"), proxy_hops=2) == "203.0.113.9"
    assert client_address(Request(None), proxy_hops=1) == "10.0.0.1"
    assert client_address(None) == "local"


def test_rate_limits_count_per_key_in_a_sliding_window():
    clock = Clock()
    limiter = RateLimiter({"trials": (3, 0.3)}, clock=clock)
    for _ in range(3):
        limiter.allow("trials", "a", "trials")
    with pytest.raises(RatingError, match=r"too many trials from this connection: at most 3 per 1 s; try again in"):
        limiter.allow("trials", "a", "trials")
    limiter.allow("trials", "b", "trials")  # another client
    clock.advance(0.35)
    limiter.allow("trials", "a", "trials")  # the window moved on
    assert limiter.failures("trials", "a") == 1


def test_the_work_folder_is_kept_under_its_size_cap(tmp_path):
    folders = []
    for i in range(4):
        d = new_workdir(tmp_path)
        (d / "stem.wav").write_bytes(b"x" * 1000)
        os.utime(d, (time.time() - 100 + i, time.time() - 100 + i))
        folders.append(d)
    excerpt = tmp_path / "trials" / "excerpts" / "e1"
    excerpt.mkdir(parents=True)
    (excerpt / "a.wav").write_bytes(b"y" * 1000)
    legacy = tmp_path / "ratings-x1y2"  # a raw export an older version left where the app serves files
    legacy.mkdir()
    (legacy / "ratings.csv").write_text("listener,score\n")
    cleanup(tmp_path, max_age_s=3600, max_bytes=2500)
    assert not legacy.exists()
    assert [d.exists() for d in folders] == [False, False, False, True] and excerpt.exists()  # oldest go first
    old = new_workdir(tmp_path)
    os.utime(old, (time.time() - 5 * 3600, time.time() - 5 * 3600))
    cleanup(tmp_path, max_age_s=3 * 3600)
    assert not old.exists()


def test_the_clean_up_never_deletes_an_excerpt_a_trial_is_using(tmp_path):
    """The clean-up deletes an old excerpt holding its lock, and only if nothing touched it since it
    was judged old: a trial that touched it (`ensure_excerpt`) while the clean-up waited keeps it."""
    excerpt = tmp_path / "trials" / "excerpts" / "e1"
    excerpt.mkdir(parents=True)
    (excerpt / "a.wav").write_bytes(b"y" * 1000)
    files = TrialFiles(tmp_path / "trials")
    hours_ago = time.time() - 5 * 3600
    os.utime(excerpt, (hours_ago, hours_ago))
    lock = files.folder_lock("e1")
    lock.acquire()  # a trial holds the excerpt
    sweep = threading.Thread(target=cleanup, args=(tmp_path,), kwargs={"max_age_s": 3600, "locks": files.folder_lock})
    sweep.start()
    sweep.join(0.5)
    assert sweep.is_alive() and excerpt.exists()  # waiting for the lock
    os.utime(excerpt)  # the trial touches it: in use
    lock.release()
    sweep.join(5)
    assert not sweep.is_alive() and excerpt.exists()
    os.utime(excerpt, (hours_ago, hours_ago))  # untouched for hours: now it goes
    cleanup(tmp_path, max_age_s=3600, locks=files.folder_lock)
    assert not excerpt.exists()
