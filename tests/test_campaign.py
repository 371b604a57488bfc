"""The campaign's rules on a real ratings store: what counts, what a session plays, the codes, the
export, and the results board. No server: `Campaign` and `ResultsBoard` as the app uses them."""

from __future__ import annotations

import csv
import io
import json
import random
import re
import threading
import time
from types import SimpleNamespace

import pytest

from tests.helpers import Clock
from webapp.listening.campaign import CODE_ALPHABET, EXPORT_COLUMNS, Campaign, completion_text
from webapp.listening.results import ResultsBoard
from webapp.listening.store import RatingsStore

STIMULI = [f"clip|vocals|{k}" for k in range(5)]


def settings(**kw):
    return SimpleNamespace(**{"session_trials": 4, "count_api_ratings": False, "count_own_trials": False, **kw})


@pytest.fixture
def store(tmp_path):
    return RatingsStore(tmp_path / "r.sqlite", clock=Clock(), rate_limit=1000)


def answer(store, listener, stimulus, *, via="page", own=False, repeat_of=None, excerpt=None):
    """One MUSHRA trial on `stimulus`, answered."""
    trial = store.create_trial(
        listener=listener,
        kind="mushra",
        clip="clip",
        source="vocals",
        conditions={"A": "reference", "B": "dprnn"},
        versions={"reference": "-", "dprnn": "v1"},
        excerpt=excerpt or json.dumps(["sep", "vocals", 0, 10, "mushra", [stimulus]]),
        stimulus=None if own else stimulus,
        own=own,
        repeat_of=repeat_of,
        start_s=1.0,
        offsets={"A": 0.1, "B": -0.1, "reference": 0.0},
    )
    store.submit(listener, trial.id, scores={"A": 100, "B": 60}, via=via)
    return trial


def test_api_and_own_answers_make_no_session_unless_the_settings_say(store):
    who = "a" * 32
    answer(store, who, STIMULI[0], via="api")
    answer(store, who, STIMULI[1], own=True)
    answer(store, who, STIMULI[2])
    campaign = Campaign(store, settings(), b"k")
    assert campaign.session(who).done == 1  # the page's answer on a campaign stimulus only
    assert Campaign(store, settings(count_api_ratings=True), b"k").session(who).done == 2
    assert Campaign(store, settings(count_api_ratings=True, count_own_trials=True), b"k").session(who).done == 3
    rows, _ = campaign.screened()
    assert {r["stimulus"] for r in rows} == {STIMULI[2]}  # the statistics see what the session counts


def test_a_session_draws_without_replacement_and_its_last_trial_repeats_an_earlier_one(store):
    who, campaign = "b" * 32, Campaign(store, settings(), b"k")
    counts = dict.fromkeys(STIMULI, 0)
    counts[STIMULI[0]] = 5  # the most rated comes last
    played = []
    for _ in range(3):
        assert campaign.repeat_due(who) is None
        pick = campaign.choose(who, counts, random.Random(len(played)))
        assert pick not in played and pick != STIMULI[0]
        played.append(pick)
        answer(store, who, pick)
    repeat = campaign.repeat_due(who, random.Random(0))  # the 4th of 4: one of the session's three again
    assert (
        repeat is not None
        and repeat["stimulus"] in played
        and repeat["trial"] in {a["trial"] for a in store.answered(who)}
    )
    answer(store, who, repeat["stimulus"], repeat_of=repeat["trial"])
    session = campaign.session(who)
    assert (session.number, session.done) == (2, 0)
    # the next session prefers what this listener never rated, whatever its count
    assert campaign.choose(who, counts) in set(STIMULI) - set(played)


def test_completion_codes_are_unambiguous_and_follow_counted_sessions(store):
    who, campaign = "c" * 32, Campaign(store, settings(session_trials=2), b"secret")
    assert campaign.completed_codes(who) == []
    for k in range(2):
        answer(store, who, STIMULI[k], via="api")  # not counted: no code for a script's answers
    assert campaign.completed_codes(who) == []
    for k in range(4):
        answer(store, who, STIMULI[k])
    codes = campaign.completed_codes(who)
    assert len(codes) == 2 and codes[0] != codes[1]
    for code in codes:
        assert re.fullmatch(r"[0-9A-Z]{4}-[0-9A-Z]{4}", code) and not set(code) & set("ILOU")
    assert Campaign(store, settings(session_trials=2), b"secret").completed_codes(who) == codes  # a restart
    assert Campaign(store, settings(session_trials=2), b"other").completed_codes(who) != codes
    # every character of the alphabet can appear; none outside it
    seen = {c for n in range(400) for c in completion_text(n.to_bytes(5, "big") * 2).replace("-", "")}
    assert seen <= set(CODE_ALPHABET) and len(set(CODE_ALPHABET)) == 32


def test_the_export_gives_each_rating_what_an_analysis_needs(store):
    who, campaign = "d" * 32, Campaign(store, settings(session_trials=2), b"k")
    first = answer(store, who, STIMULI[0])
    answer(store, who, STIMULI[0], repeat_of=first.id)  # the same excerpt again
    answer(store, who, STIMULI[1], via="api")
    rows = list(csv.DictReader(io.StringIO("".join(campaign.export_lines()))))
    assert list(rows[0]) == EXPORT_COLUMNS and len(rows) == 6
    by_trial = {}
    for r in rows:
        by_trial.setdefault(r["trial"], []).append(r)
    original, again, api = by_trial.values()
    assert {r["counts_in_means"] for r in original} == {"0"}  # the listener took no headphone check
    assert {r["excluded_by"] for r in original} == {"headphones"}
    assert {r["repeat_of"] for r in again} == {first.id} and {r["session"] for r in original + again} == {"1"}
    assert {r["completion_code"] for r in again} == {campaign.completion_code(who, 1)}
    assert {(r["counted"], r["via"], r["excluded_by"], r["session"]) for r in api} == {("0", "api", "", "")}
    dprnn = next(r for r in original if r["condition"] == "dprnn")
    assert (dprnn["label"], dprnn["level_offset_db"], dprnn["excerpt_start_s"]) == ("B", "-0.1", "1.0")
    assert json.loads(dprnn["labels"]) == {"A": "reference", "B": "dprnn"}
    assert dprnn["issued_utc"].endswith("Z") and dprnn["answered_utc"] >= dprnn["issued_utc"]


def test_the_results_board_computes_once_per_change_for_any_number_of_readers():
    """Sixty pages reading at once cost one computation per change of the ratings, and a reader
    never waits for one (`latest`); `current` waits for the ratings as they are."""
    version = [1]
    computed = []

    def compute():
        computed.append(version[0])
        time.sleep(0.05)
        return {"ratings": version[0]}, {}

    board = ResultsBoard(lambda: (version[0],), compute, every=0.0, poll=0.05)
    assert board.current(timeout=5).summary == {"ratings": 1}
    seen = []

    def page():
        for _ in range(20):
            snap = board.latest()
            seen.append(snap.summary["ratings"])

    readers = [threading.Thread(target=page) for _ in range(60)]
    for t in readers:
        t.start()
    for t in readers:
        t.join()
    assert computed == [1] and set(seen) == {1}  # 1,200 reads, one computation
    version[0] = 2
    board.changed()
    assert board.current(timeout=5).summary == {"ratings": 2} and computed == [1, 2]
    # while ratings keep changing, `every` spaces the computations out
    slow = ResultsBoard(lambda: (time.monotonic(),), compute, every=0.5, poll=0.01)
    slow.start()
    time.sleep(1.2)
    assert 2 <= slow.computations <= 4


def test_a_trial_s_files_go_once_it_is_answered_and_a_check_s_once_it_is_taken(tmp_path):
    """Every served file is written for its trial (~9 MB a 10-s MUSHRA trial): kept while the
    trial is open (a reload shows it again), deleted once it is answered, so the work folder holds
    the open trials, not every trial ever served."""
    import numpy as np
    import soundfile as sf

    from webapp.config import AppConfig
    from webapp.listening.study import Study

    study = Study(
        AppConfig(data_dir=tmp_path / "data", trial_seconds=1.0),
        clips=[],
        models=[],
        separation=lambda clip: None,
        work_root=tmp_path / "work",
    )
    study.store.clock = Clock()
    source = tmp_path / "x.wav"
    sf.write(source, np.zeros((44100, 2), np.float32), 44100, subtype="PCM_16")
    who = study.new_listener("c")
    check = study.headphone_check(who, "c")
    assert all(f.exists() for f in check)
    (truth,) = study.store._connect().execute("SELECT headphone_check FROM listeners WHERE id = ?", (who,)).fetchone()
    study.answer_headphone_check(who, json.loads(truth))
    assert not any(f.exists() for f in check) and not check[0].parent.exists()
    served, _ = study.trial_files.publish({"A": source, "B": source})
    trial = study.store.create_trial(
        listener=who,
        kind="mushra",
        clip="c",
        source="vocals",
        conditions={"A": "reference", "B": "dprnn"},
        versions={},
        files=served,
        seconds=1.0,
    )
    assert all(p.exists() for p in served.values())
    study.store.clock.advance(1.0)
    study.answer(who, trial.id, {"scores": {"A": 100, "B": 50}})
    assert not any(p.exists() for p in served.values()) and not next(iter(served.values())).parent.exists()
    assert source.exists()  # only served files are ever deleted
