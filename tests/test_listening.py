"""Blind listening tests as listeners and attackers meet them: the app on localhost, driven by
gradio_client and by Debian's chromium. Trials use 2-s excerpts (the server's wait is the same
length), the shipped DPRNN and Conv1D, and the demo clips. Nothing touches the network."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import re
import sqlite3
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from gradio_client import Client
from gradio_client.exceptions import AppError

from separation.audio import SAMPLE_RATE
from tests.helpers import CHROMIUM, Clock, in_threads, pass_headphone_check_in_page, serve_app
from webapp import lab as lab_module
from webapp.config import AppConfig
from webapp.listening.listeners import Signer
from webapp.listening.page import saved_message
from webapp.listening.player import file_url
from webapp.listening.stimuli import EXCERPTS_PER_SOURCE, loudness
from webapp.service import ModelPool

SR = SAMPLE_RATE
pytestmark = pytest.mark.slow  # every test here talks to a launched app (about 6 s to start)

SECONDS = 2.0  # the trials' excerpt, and the server's minimum time before a rating
CLOCK = Clock(real=True)  # the ratings store's clock in this module's app
ADMIN = "adm1n-token"


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """The app behind one proxy hop (as on a Space): each test client is told apart by the
    X-Forwarded-For entry the proxy would append."""
    root = tmp_path_factory.mktemp("listening")
    pool = ModelPool(["dprnn", "conv1d"], device="cpu", background=False)
    config = AppConfig(
        data_dir=root / "data",
        admin_token=ADMIN,
        trial_seconds=SECONDS,
        session_trials=3,
        proxy_hops=1,
        min_heard=0.5,  # each sample's listening before its rating counts (3 s in a real campaign)
    )
    lab = lab_module.LabApp(config, pool=pool)
    lab.study.store.clock = CLOCK  # the wait before a rating is measured on it: tests move it, not sleep
    lab.study.trial_files = type(lab.study.trial_files)(root / "trials")  # this module's own trial folder
    demo, lab.url = serve_app(lab, concurrency=8)
    yield lab
    demo.close()


_addresses = (f"10.1.{i // 250}.{i % 250 + 1}" for i in range(60_000))


def new_client(lab, *, download: bool = True) -> Client:
    """A client from an address of its own (as the Space's proxy reports it)."""
    return Client(lab.url, verbose=False, download_files=download, headers={"X-Forwarded-For": next(_addresses)})


def pending_check(lab, listener: str) -> list[int]:
    """The answers of a listener's headphone check, as the server keeps them (a listener with
    working headphones hears them)."""
    with sqlite3.connect(lab.study.store.path) as db:
        return json.loads(db.execute("SELECT headphone_check FROM listeners WHERE id = ?", (listener,)).fetchone()[0])


def ready_listener(client: Client, lab, passed: bool = True) -> str:
    listener = client.predict(api_name="/listener")
    files, info = client.predict(listener, api_name="/headphone_check")
    assert len(files) == info["files"] == 6
    answers = pending_check(lab, listener)
    if not passed:
        answers = [a % 3 + 1 for a in answers]  # every one wrong
    assert client.predict(listener, answers, api_name="/headphone_answer") == {
        "score": 6 if passed else 0,
        "passed": passed,
    }
    return listener


def rate_when_allowed(client: Client, listener: str, trial: dict, answer: dict) -> dict:
    CLOCK.advance(SECONDS)
    return client.predict(listener, trial["trial_id"], answer, api_name="/rate")


def get_trial(client: Client, listener: str, kind: str = "mushra") -> tuple[list[str], dict]:
    files, trial = client.predict(listener, kind, api_name="/trial")
    return files, trial


def attentive_scores(lab, trial: dict) -> dict:
    """What an attentive listener gives: the hidden reference 100, the anchor 20, the models 60."""
    conditions = lab.study.store.get_trial(trial["trial_id"]).conditions
    return {"scores": {x: {"reference": 100, "anchor": 20}.get(c, 60) for x, c in conditions.items()}}


def read(path) -> np.ndarray:
    return sf.read(path, dtype="float64")[0]


# ---------------------------------------------------------------------------- blind


def test_a_trial_s_files_reveal_no_condition(lab):
    client = new_client(lab)
    listener = ready_listener(client, lab)
    files, trial = get_trial(client, listener)
    assert trial["kind"] == "mushra" and len(files) == len(trial["labels"]) + 1 == 5  # + the open reference
    names = [Path(f).name for f in files]
    assert names == trial["files"] and len(set(names)) == 5
    assert all(len(n) == len("0123456789abcdef01234567.wav") for n in names)  # random, nothing else in them
    on_server = {p.name: p for p in lab.study.trial_files.served.rglob("*.wav")}
    stored = lab.study.store.get_trial(trial["trial_id"])
    label = {c: lab_label for lab_label, c in stored.conditions.items()}
    hidden = Path(files[trial["labels"].index(label["reference"])])
    reference = Path(files[-1])
    # never the same bytes (a level offset and dither of their own), the same audio once the offsets
    # (kept with the trial) are undone, within their dithers and roundings (twice: excerpt, trial)
    assert hidden.read_bytes() != reference.read_bytes()
    gain = {k: 10 ** (v / 20) for k, v in stored.offsets.items()}
    undone = read(hidden) / gain[label["reference"]] - read(reference) / gain["reference"]
    assert np.abs(undone).max() <= 6.5 / 32768
    # the same length and format for all
    infos = [sf.info(f) for f in files]
    assert {(i.frames, i.samplerate, i.channels, i.subtype) for i in infos} == {(int(SECONDS * SR), SR, 2, "PCM_16")}
    # the same loudness (BS.1770): the anchor and both models within 1 LU of the reference
    levels = {c: loudness(read(files[trial["labels"].index(lab_label)]).T) for c, lab_label in label.items()}
    assert max(levels.values()) - min(levels.values()) < 1.0, levels
    assert all(np.abs(read(f)).max() <= 10 ** (-1 / 20) + 1e-3 for f in files)  # not clipped
    # the files are served from their random paths (a static folder), not Gradio's content-hash cache
    assert all(n in on_server for n in names)
    assert len({on_server[n].parent for n in names}) == 1
    second_files, second = get_trial(client, listener)
    assert not {Path(f).name for f in second_files} & set(names)


def test_no_response_header_tells_conditions_apart_and_only_trial_files_are_served(lab):
    """Over 10 trials, every sample of every condition is served with the same ETag, Last-Modified
    and length, through Gradio's file route (the API's files) and the page's player route alike:
    no header names the anchor or the hidden reference. The excerpts and references beside the
    trial folders are not served at all."""
    client = new_client(lab)
    listener = ready_listener(client, lab)
    seen: dict[str, set] = {}
    for _ in range(10):
        files, trial = get_trial(client, listener)
        conditions = lab.study.store.get_trial(trial["trial_id"]).conditions
        on_server = {p.name: p for p in lab.study.trial_files.served.rglob("*.wav")}
        for label, file in zip(trial["labels"], files, strict=False):  # the last file: the open reference
            url = f"{lab.url}gradio_api/file={on_server[Path(file).name]}"
            with urllib.request.urlopen(urllib.request.Request(url, method="HEAD")) as response:
                headers = tuple(response.headers.get(h) for h in ("ETag", "Last-Modified", "Content-Length"))
            assert all(headers), headers
            with urllib.request.urlopen(lab.url + file_url(on_server[Path(file).name])) as response:
                names = ("Content-Length", "Content-Type", "Cache-Control", "ETag", "Last-Modified")
                headers += tuple(response.headers.get(h) for h in names)
                assert len(response.read()) == int(response.headers["Content-Length"])
            seen.setdefault(conditions[label], set()).add(headers)
    assert {"reference", "anchor"} <= set(seen) and len(seen) >= 3
    assert len(set().union(*seen.values())) == 1, seen  # one set of headers for every condition
    hidden = next(lab.study.trial_files.excerpts.rglob("reference.wav"))
    for path in (hidden, lab.study.store.path):
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(f"{lab.url}gradio_api/file={path}")
        assert refused.value.code in (403, 404)


def test_the_checks_files_come_whole_in_one_response_until_the_check_is_answered(lab):
    """The headphone check's files, fetched from Gradio's file route as its players fetch them, come
    in one response each (`webapp.static_cache.OneRead`): the file's bytes, the trial files'
    headers (no tag, no time), gone once the check is answered; anything else on that route is
    still Gradio's (its own headers, its refusals)."""
    client = new_client(lab, download=False)
    listener = client.predict(api_name="/listener")
    files, _ = client.predict(listener, api_name="/headphone_check")
    paths = [Path(f["path"] if isinstance(f, dict) else f) for f in files]
    assert all(p.parent.parent == lab.study.trial_files.served for p in paths)
    for path in paths:
        with urllib.request.urlopen(f"{lab.url}gradio_api/file={path}") as response:
            assert response.read() == path.read_bytes()
            assert response.headers["Content-Type"] == "audio/wav"
            assert response.headers["Cache-Control"] == "private, max-age=3600"
            assert response.headers.get("ETag") is None and response.headers.get("Last-Modified") is None
    ranged = urllib.request.Request(f"{lab.url}gradio_api/file={paths[0]}", headers={"Range": "bytes=0-99"})
    with urllib.request.urlopen(ranged) as response:  # a range: Gradio's route answers it
        assert response.status == 206 and len(response.read()) == 100
    client.predict(listener, pending_check(lab, listener), api_name="/headphone_answer")
    for path in (paths[0], lab.study.store.path):  # answered: gone; never served: refused
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(f"{lab.url}gradio_api/file={path}")
        assert refused.value.code in (403, 404)


def test_no_trial_file_is_a_lookup_table_for_the_next(lab):
    """The excerpts are a fixed set (3 per clip and source), but every file a trial serves is its
    own (a level offset and dither of its own): over 24 trials no two served files share a hash,
    so one listener's identification of a file names nothing in anyone else's trial."""
    client = new_client(lab)
    listener = ready_listener(client, lab)
    hashes = []
    for _ in range(24):
        files, _ = get_trial(client, listener)
        hashes += [hashlib.sha256(Path(f).read_bytes()).hexdigest() for f in files]
    assert len(hashes) == 24 * 5 and len(set(hashes)) == len(hashes)
    # MUSHRA excerpts: at most the fixed set exist, however many trials
    mushra = [d for d in lab.study.trial_files.excerpts.iterdir() if (d / "anchor.wav").exists()]
    assert len(mushra) <= len(lab.clips) * 2 * EXCERPTS_PER_SOURCE < 24


# ---------------------------------------------------------------------------- really listened to


def test_the_lab_prepares_every_example_clip_s_stimuli_once(lab):
    lab.prepare()  # what app.py starts in the background: whatever earlier tests left is completed
    folders = {p.name for p in lab.study.trial_files.excerpts.iterdir() if (p / "done").exists()}
    mushra = {key for key, _ in lab.study.store.excerpt_metrics()}  # scored: one per MUSHRA excerpt
    assert len(lab.clips) * 2 <= len(mushra) <= len(lab.clips) * 2 * EXCERPTS_PER_SOURCE
    assert len(folders) >= len(mushra) and lab.prepare() == 0  # nothing left to write
    client = new_client(lab)
    listener = ready_listener(client, lab)
    _, trial = get_trial(client, listener)
    assert lab.study.store.get_trial(trial["trial_id"]).excerpt in mushra  # a prepared one
    assert {p.name for p in lab.study.trial_files.excerpts.iterdir()} == folders  # nothing cut for it


def test_the_last_trial_of_a_session_repeats_an_excerpt_blind(lab, monkeypatch):
    """Test-retest: the session's last trial (here the 3rd) plays an excerpt the listener rated in
    this session again, with new labels and new files; the others are drawn without replacement;
    screening compares the two answers and the means count the first."""
    monkeypatch.setattr(lab.config, "count_api_ratings", True)  # this session is driven over the API
    client = new_client(lab)
    listener = ready_listener(client, lab)
    excerpts, names = [], set()
    for _ in range(3):
        files, trial = get_trial(client, listener)
        stored = lab.study.store.get_trial(trial["trial_id"])
        excerpts.append(stored.excerpt)
        assert not {Path(f).name for f in files} & names  # new files every time, the repeat's too
        names |= {Path(f).name for f in files}
        rate_when_allowed(client, listener, trial, attentive_scores(lab, trial))
    assert excerpts[0] != excerpts[1] and excerpts[2] in excerpts[:2], excerpts
    repeated = lab.study.store.get_trial(trial["trial_id"])
    first = lab.study.store.get_trial(repeated.repeat_of)
    assert first.excerpt == repeated.excerpt and first.listener == repeated.listener
    _, fourth = get_trial(client, listener)  # a new session: no repeat due
    assert lab.study.store.get_trial(fourth["trial_id"]).excerpt is not None
    # the session is complete: the page gives a completion code, which the admin export lists
    # beside each of the session's ratings (a paid campaign checks a payment against them)
    who = lab.study.listener(listener)
    code = lab.study.completion_code(who, 1)
    assert re.fullmatch(r"[0-9A-HJKMNP-TV-Z]{4}-[0-9A-HJKMNP-TV-Z]{4}", code)  # no I, L, O or U
    assert lab.study.campaign.completed_codes(who) == [code] and "last of 3" in saved_message(lab, listener)
    assert code != lab.study.completion_code(who, 2) and code != lab.study.completion_code("f" * 32, 1)
    assert lab_module.LabApp(lab.config, pool=lab.pool).study.completion_code(who, 1) == code  # a restart: the same
    link = new_client(lab).predict(ADMIN, api_name="/export_link")
    with urllib.request.urlopen(lab.url.rstrip("/") + link) as response:
        rows = [r for r in csv.DictReader(io.StringIO(response.read().decode())) if r["listener"] == who]
    assert len(rows) == 3 * 4 and {r["completion_code"] for r in rows} == {code}


def test_an_early_rating_is_refused_and_stores_nothing(lab):
    client = new_client(lab)
    listener = ready_listener(client, lab)
    _, trial = get_trial(client, listener)
    answer = {"scores": {label: 80 for label in trial["labels"]}}
    before = lab.study.store.count()
    with pytest.raises(AppError, match="too soon: the samples last 2 s each"):
        client.predict(listener, trial["trial_id"], answer, api_name="/rate")
    assert lab.study.store.count() == before
    assert rate_when_allowed(client, listener, trial, answer) == {"saved": 4}
    assert lab.study.store.count() == before + 4


@pytest.mark.parametrize(
    "answer,match",
    [
        ({}, "say which sample you prefer"),
        ({"choice": None}, "say which sample you prefer"),
        ({"choice": "C"}, "say which sample you prefer"),
        ({"choice": True}, "say which sample you prefer"),
        ({"choice": "A", "mos": {"A": True, "B": 3}}, "a number from 1 to 5, not true/false"),
        ({"choice": "A", "mos": {"A": "5", "B": 3}}, "a number from 1 to 5, not text"),
        ({"choice": "A", "mos": [5, 3]}, r"\{label: 1-5\}"),
        ("A", "a JSON object"),
    ],
)
def test_malformed_ab_answers_are_refused(lab, answer, match):
    client = new_client(lab)
    listener = ready_listener(client, lab)
    _, trial = get_trial(client, listener, "ab")
    assert trial["kind"] == "ab" and trial["labels"] == ["A", "B"]  # gold trials included: they look the same
    before = lab.study.store.count()
    CLOCK.advance(SECONDS)
    with pytest.raises(AppError, match=match):
        client.predict(listener, trial["trial_id"], answer, api_name="/rate")
    assert lab.study.store.count() == before


@pytest.mark.parametrize("bad", [True, "50", None, 101, -1])
def test_mushra_scores_must_be_numbers_in_range(lab, bad):
    client = new_client(lab)
    listener = ready_listener(client, lab)
    _, trial = get_trial(client, listener)
    scores = {label: 60 for label in trial["labels"]}
    scores[trial["labels"][0]] = bad
    before = lab.study.store.count()
    CLOCK.advance(SECONDS)
    with pytest.raises(AppError, match="a score must be"):
        client.predict(listener, trial["trial_id"], {"scores": scores}, api_name="/rate")
    assert lab.study.store.count() == before


# ---------------------------------------------------------------------------- one person, one listener


def test_listener_ids_are_issued_and_signed_by_the_server(lab):
    client = new_client(lab)
    real = ready_listener(client, lab)
    ident, sig = real.split(".")
    forged = [
        "a" * 32,  # unsigned, as clients chose them before
        f"{'0' * 32}.{sig}",  # someone else's signature
        f"{ident}.{'0' * 32}",
        Signer("another server's key").issue(),
        real + "x",
        "",
    ]
    for token in forged:
        for api_name, args in (("/trial", (token, "mushra")), ("/headphone_check", (token,))):
            with pytest.raises(AppError, match="unknown or forged listener id"):
                client.predict(*args, api_name=api_name)
        with pytest.raises(AppError, match="unknown or forged listener id"):
            client.predict(token, "0" * 32, {"scores": {"A": 1}}, api_name="/rate")
    # a listener who has not taken the headphone check gets no trial
    fresh = client.predict(api_name="/listener")
    with pytest.raises(AppError, match="take the headphone check first"):
        client.predict(fresh, "mushra", api_name="/trial")
    # someone else's trial cannot be rated with one's own id
    _, trial = get_trial(client, real)
    other = ready_listener(client, lab)
    CLOCK.advance(SECONDS)
    with pytest.raises(AppError, match="another listener"):
        client.predict(other, trial["trial_id"], {"scores": {x: 50 for x in trial["labels"]}}, api_name="/rate")


def test_new_listeners_are_limited_per_client_not_per_id(lab):
    client = new_client(lab)
    limit = lab.config.limits["listeners"]
    for _ in range(limit):
        client.predict(api_name="/listener")
    with pytest.raises(
        AppError, match=f"too many new listener ids from this connection: at most {limit} per 1 h; try again in"
    ):
        client.predict(api_name="/listener")
    # what the client writes in X-Forwarded-For is not believed: the proxy's entry is the address
    spoofed = Client(
        lab.url, verbose=False, headers={"X-Forwarded-For": f"1.2.3.4, {client.headers['X-Forwarded-For']}"}
    )
    with pytest.raises(AppError, match="too many new listener ids"):
        spoofed.predict(api_name="/listener")
    new_client(lab).predict(api_name="/listener")  # another address is not affected


def test_an_export_streams_once_and_leaves_no_file(lab, monkeypatch):
    # a listener who failed the check goes on only where the campaign allows it, and their API
    # ratings are screened only where they count: both switched on here, to see the flag
    monkeypatch.setattr(lab.config, "allow_failed_headphones", True)
    monkeypatch.setattr(lab.config, "count_api_ratings", True)
    client = new_client(lab)
    listener = ready_listener(client, lab, passed=False)  # flagged by the headphone check
    _, trial = get_trial(client, listener)
    rate_when_allowed(client, listener, trial, attentive_scores(lab, trial))
    before = {p for p in Path(lab.work_root).rglob("*") if p.is_file()}
    for _ in range(lab.study.limiter.limits["admin"][0]):
        with pytest.raises(AppError, match="wrong admin token"):
            client.predict("guess", api_name="/export_link")
    with pytest.raises(AppError, match="too many wrong admin tokens"):
        client.predict(ADMIN, api_name="/export_link")  # throttled: even the right token waits
    admin = new_client(lab)
    link = admin.predict(ADMIN, api_name="/export_link")
    with urllib.request.urlopen(lab.url.rstrip("/") + link) as response:
        assert response.headers["Content-Disposition"] == 'attachment; filename="ratings.csv"'
        rows = list(csv.DictReader(io.StringIO(response.read().decode())))
    mine = [r for r in rows if r["listener"] == listener]
    assert len(mine) == 4 and {r["excluded_by"] for r in mine} == {"headphones"}
    with pytest.raises(urllib.error.HTTPError, match="404"):
        urllib.request.urlopen(lab.url.rstrip("/") + link)  # used up
    after = {p for p in Path(lab.work_root).rglob("*") if p.is_file()}
    assert not [p for p in after - before if p.suffix == ".csv"]
    assert not list(lab.study.trial_files.root.rglob("*.csv")) and not list(lab.data_dir.rglob("*.csv"))
    gradio_cache = Path(os.environ.get("GRADIO_TEMP_DIR", Path(os.environ.get("TMPDIR", "/tmp")) / "gradio"))
    assert not list(gradio_cache.rglob("ratings*.csv"))


def test_twenty_clients_fifty_ratings_each_store_exactly_1000_rows(lab):
    """Twenty clients, each with two listeners, rate 50 A/B trials at once over the API. The
    trials are issued by `Study.trial_for` (what /trial calls) to keep the test short."""
    per_client = 50
    before = lab.study.store.count()
    clients = [new_client(lab, download=False) for _ in range(20)]  # the audio is not needed here
    listeners = [[ready_listener(c, lab) for _ in range(2)] for c in clients]
    trials = [
        [(who := listeners[i][k % 2], lab.study.trial_for(None, who, f"c{i}", kind="ab")[0]) for k in range(50)]
        for i in range(20)
    ]
    CLOCK.advance(SECONDS)

    def run(i: int) -> None:
        for listener, trial in trials[i]:
            answer = {"choice": "A"} if trial.kind == "gold" else {"choice": "B", "mos": None}
            saved = clients[i].predict(listener, trial.trial_id, answer, api_name="/rate")
            assert saved == {"saved": 1}

    errors = in_threads(run, 20)
    assert errors == []
    assert lab.study.store.count() - before == 20 * per_client == 1000
    kinds = [trial.kind for batch in trials for _, trial in batch]
    assert 100 < kinds.count("gold") < 300  # GOLD_RATE = 0.2 of 1000


# ---------------------------------------------------------------------------- in the browser


def browser(p):
    # sounds play without a click on the page (the test starts them from script)
    return p.chromium.launch(
        executable_path=CHROMIUM, args=["--no-sandbox", "--autoplay-policy=no-user-gesture-required"], headless=True
    )


def player_state(page) -> dict:
    """The trial player's transport as the page has it (position, current sample, sources sounding)."""
    return page.locator(".lab-trial").evaluate("e => e.labPlayer.state()")


def wait_ready(page) -> None:
    from playwright.sync_api import expect

    expect(page.locator(".lab-trial .lab-play")).to_have_text("Play", timeout=30_000)  # decoded


def listen(page, key: str, seconds: float) -> None:
    """Switch to a sample (its button, as a listener's click) and let it play `seconds`."""
    page.locator(f".lab-switch[data-key='{key}']").click()
    page.wait_for_timeout(int(seconds * 1000))


def check_transport(page) -> None:
    """What the trial player promises, read back from the page: switching keeps the position, one
    sample sounds afterwards, and the loop region holds."""
    # switching keeps the position: B starts where the reference was, on the same clock instant
    page.locator(".lab-play").click()
    page.wait_for_function("() => document.querySelector('.lab-trial').labPlayer.state().position > 0.8")
    page.locator("body").click(position={"x": 5, "y": 5})  # the keys act on the page, not a field
    page.keyboard.press("2")
    page.wait_for_timeout(150)
    state = player_state(page)
    switch = state["lastSwitch"]
    assert (switch["from"], switch["to"]) == ("reference", "B") and state["current"] == "B"
    assert 0.8 <= switch["at"] < SECONDS and abs(state["position"] - switch["at"]) < 0.5, state
    # one sample sounds: the reference's source faded out in 5 ms and stopped
    assert state["sounding"] == ["B"] and state["sources"] == 1, state
    page.keyboard.press("r")
    page.wait_for_timeout(150)
    state = player_state(page)
    assert state["sounding"] == ["reference"] and state["lastSwitch"]["at"] > 0, state

    # a loop region set on the reference holds: the position never leaves it
    page.locator(".lab-loop-a").fill("0.5")
    page.locator(".lab-loop-a").dispatch_event("change")
    page.locator(".lab-loop-b").fill("1.2")
    page.locator(".lab-loop-b").dispatch_event("change")
    seen = []
    for _ in range(25):  # 1.5 s: the 0.7-s region plays twice over
        page.wait_for_timeout(60)
        seen.append(player_state(page)["position"])
    assert all(0.5 - 1e-6 <= x <= 1.2 + 1e-6 for x in seen), seen
    assert max(seen) - min(seen) > 0.4  # it played (and wrapped), it did not stand still
    page.locator("body").click(position={"x": 5, "y": 5})  # out of the number field
    page.keyboard.press(" ")  # space pauses
    assert player_state(page)["playing"] is False


@pytest.mark.browser
def test_a_mushra_session_in_the_browser(lab):
    from playwright.sync_api import expect, sync_playwright

    out = Path(__file__).resolve().parents[1] / "out" / "screenshots"
    out.mkdir(parents=True, exist_ok=True)
    need = lab.config.min_heard
    with sync_playwright() as p:
        chromium = browser(p)
        page = chromium.new_page(viewport={"width": 1300, "height": 1300})
        page.goto(lab.url)
        listener = pass_headphone_check_in_page(page, lab.study.store.path)
        page.get_by_role("button", name="Start a blind trial").click()
        expect(page.get_by_text("Trial 1 of 3")).to_be_visible(timeout=60_000)
        wait_ready(page)
        (trial,) = open_trials(lab, listener)
        submit = page.locator(".lab-submit")
        expect(submit).to_be_disabled()
        expect(submit).to_have_text(
            f"Submit ratings (listen to A, B, C, D and the reference for {need:g} s each; rate A, B, C and D first)"
        )
        # one player, no <audio> element and no waveform: every sample is its own random file in
        # the trial's random folder of the served folder (not Gradio's content-hash cache)
        expect(page.locator("audio").locator("visible=true")).to_have_count(0)
        urls = json.loads(page.locator(".lab-trial").evaluate("e => JSON.stringify(e.labPlayer.spec())"))["urls"]
        # their URLs name the random folder and file only, nothing of where the server keeps them
        assert len(set(urls.values())) == 5 and len({u.rsplit("/", 2)[-2] for u in urls.values()}) == 1
        assert all(re.fullmatch(r"trial-audio/[0-9a-f]{32}/[0-9a-f]{24}\.wav", u) for u in urls.values()), urls
        folder = next(iter(urls.values())).rsplit("/", 2)[-2]
        assert (lab.study.trial_files.served / folder).is_dir() and str(lab.work_root) not in page.content()

        # a 0.1-s play-pause is 0.1 s heard: it unlocks nothing
        page.locator(".lab-play").click()
        page.wait_for_timeout(100)
        page.locator(".lab-play").click()
        state = player_state(page)
        assert state["current"] == "reference" and 0.05 < state["heard"]["reference"] < 0.5, state
        expect(submit).to_be_disabled()
        # and a submission forced through (the button enabled by hand) is refused by the server
        CLOCK.advance(SECONDS)  # past the server's wait: what refuses it now is what was not heard
        page.locator(".lab-trial").evaluate("e => e.labPlayer.submitAnyway()")
        refusal = page.locator(".toast-body", has_text=f"listen to A, B, C, D and the reference for {need:g} s each")
        expect(refusal).to_be_visible(timeout=10_000)
        assert not [r for r in lab.study.store.rows() if r["listener"] == listener]
        page.get_by_test_id("toast-close").first.click()

        check_transport(page)

        # listen to each sample long enough, then rate each
        for key in ["reference", "A", "B", "C", "D"]:
            listen(page, key, need + 0.2)
        page.keyboard.press(" ")
        expect(submit).to_have_text("Submit ratings (rate A, B, C and D first)", timeout=10_000)
        scores = {"reference": 100, "anchor": 15, "dprnn": 70, "conv1d": 45}
        for label in "ABCD":
            page.get_by_label(f"score of {label}", exact=True).evaluate(
                "(e, v) => { e.value = v; e.dispatchEvent(new Event('input', {bubbles: true})); }",
                str(scores[trial.conditions[label]]),
            )
        expect(page.locator(".lab-value[data-key='A']")).not_to_have_text("not rated")
        expect(submit).to_have_text("Submit ratings")
        expect(submit).to_be_enabled()
        page.screenshot(path=str(out / "listening-mushra.png"), full_page=True)

        # Start in mid-trial shows the same trial again (no second trial left open)
        page.get_by_role("button", name="Start a blind trial").click()
        expect(page.get_by_text("(Your unanswered trial, shown again.)")).to_be_visible(timeout=30_000)
        assert len(open_trials(lab, listener)) == 1
        assert page.locator(".lab-trial").get_attribute("data-trial") == trial.id
        submit.click()
        expect(page.get_by_text("Saved (1 of 3)")).to_be_visible(timeout=10_000)
        expect(page.locator(".lab-trial")).to_have_attribute("data-state", "empty")
        # the session's place is kept on the server: after a reload the next trial is the second
        page.reload()
        page.get_by_role("tab", name="Listen and rate (blind)").click()
        page.get_by_role("button", name="Start a blind trial").click()
        expect(page.get_by_text("Trial 2 of 3")).to_be_visible(timeout=60_000)
        chromium.close()
    stored = {r["condition"]: r["score"] for r in lab.study.store.rows() if r["listener"] == listener}
    assert stored == {c: float(s) for c, s in scores.items()}
    heard = lab.study.store.get_trial(trial.id).heard
    assert set(heard) == {"A", "B", "C", "D", "reference"} and min(heard.values()) >= need, heard


def open_trials(lab, listener: str):
    with sqlite3.connect(lab.study.store.path) as db:
        ids = [row[0] for row in db.execute("SELECT id FROM trials WHERE listener = ? ORDER BY created", (listener,))]
    return [lab.study.store.get_trial(i) for i in ids]


@pytest.mark.browser
def test_an_ab_session_on_an_upload_in_the_browser(lab, tmp_path):
    from playwright.sync_api import expect, sync_playwright

    from tests.helpers import voice_and_band

    voice, band = voice_and_band(5.0)
    song = tmp_path / "my song.wav"
    sf.write(song, (voice + band).T, SR, subtype="PCM_16")
    out = Path(__file__).resolve().parents[1] / "out" / "screenshots"
    with sync_playwright() as p:
        chromium = browser(p)
        page = chromium.new_page(viewport={"width": 1300, "height": 1000})
        page.goto(lab.url)
        page.locator("input[type=file]").first.set_input_files(str(song))
        page.get_by_role("button", name="Separate my song").click()
        expect(page.get_by_text("my song.wav (5.0 s)")).to_be_visible(timeout=90_000)
        listener = pass_headphone_check_in_page(page, lab.study.store.path)
        page.get_by_role("button", name="Start a blind trial").click()
        # the listener's own separation: rated for them, outside the study's sessions and statistics
        expect(page.get_by_text("Your own separation: A/B on")).to_be_visible(timeout=60_000)
        expect(page.get_by_text("not counted in the study")).to_be_visible()
        wait_ready(page)
        need = lab.config.min_heard
        submit = page.locator(".lab-submit")
        expect(submit).to_have_text(f"Submit ratings (listen to A and B for {need:g} s each; choose first)")
        expect(page.locator(".lab-switch[data-key='reference']")).to_have_count(0)  # no reference in A/B
        expect(page.locator(".lab-score")).to_have_count(0)  # and no 0-100 sliders
        listen(page, "A", need + 0.2)
        expect(submit).to_have_text(f"Submit ratings (listen to B for {need:g} s; choose first)")
        listen(page, "B", need + 0.2)
        page.locator(".lab-play").click()
        expect(submit).to_have_text("Submit ratings (choose first)")
        expect(submit).to_be_disabled()
        page.get_by_label("B is better").check()
        expect(submit).to_be_enabled()
        # the optional quality score of A is set, B's is left alone: only A's is stored
        page.get_by_label("overall quality of A").select_option("4")
        page.screenshot(path=str(out / "listening-ab.png"), full_page=True)
        CLOCK.advance(SECONDS)  # a real listener has heard both 10-s samples by now
        submit.click()
        expect(page.get_by_text("Saved (your own separation")).to_be_visible(timeout=10_000)
        chromium.close()
    (trial,) = open_trials(lab, listener)
    assert trial.own and trial.stimulus is None and lab.study.campaign.session(listener).done == 0
    assert trial.clip == "my song.wav" and trial.kind in ("ab", "gold")
    rows = [r for r in lab.study.store.rows() if r["listener"] == listener]
    (row,) = [r for r in rows if r["kind"] in ("ab", "gold")]
    assert row["choice"] == trial.conditions["B"]
    mos = [(r["condition"], r["score"]) for r in rows if r["kind"] == "mos"]
    assert mos == ([(trial.conditions["A"], 4.0)] if trial.kind == "ab" else [])  # B's untouched slider: nothing
