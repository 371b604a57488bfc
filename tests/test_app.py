"""The Gradio app, launched on localhost: gradio_client calls, a real browser, the ratings store.

umxhq runs on stand-in weights saved in upstream's format in a temporary torch hub cache
(through the real loader); DPRNN is the shipped checkpoint. Nothing touches the network.
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
import shutil
import socket
import sqlite3
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError

from eval.ratings import SCREENING, summary
from separation.audio import SAMPLE_RATE
from separation.errors import SeparationError
from separation.separator import SHIFT_SPAN_SECONDS, OutOfMemory, segment_offsets
from tests.helpers import CHROMIUM, in_threads, serve_app, voice_and_band
from webapp import lab as lab_module
from webapp.config import AppConfig
from webapp.listening.listeners import RateLimiter
from webapp.listening.store import RatingError, RatingsStore, safe_cell
from webapp.service import ModelPool, ModelSlot, separate_with_fallback

SR = SAMPLE_RATE  # the project's one sample rate


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """The app with both models, on a free port; closed after the module."""
    from openunmix.model import OpenUnmix

    root = tmp_path_factory.mktemp("app")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TORCH_HOME", str(root / "torch"))
        from separation.pretrained import upstream_cache_path

        torch.manual_seed(0)
        net = OpenUnmix(nb_bins=2049, nb_channels=2, hidden_size=512, max_bin=1487)
        path = upstream_cache_path("umxhq")
        path.parent.mkdir(parents=True)
        torch.save(net.state_dict(), path)
        pool = ModelPool(["dprnn", "umxhq"], device="cpu", background=False)
    assert all(s.ready for s in pool.slots.values()), [s.message for s in pool.slots.values()]
    config = AppConfig(
        data_dir=root / "data", admin_token="s3cret-token", max_minutes=2.0, max_upload_mb=5, trial_seconds=1.0
    )
    lab = lab_module.LabApp(config, pool=pool)
    demo, lab.url = serve_app(lab, concurrency=4)
    yield lab
    demo.close()


@pytest.fixture(scope="module")
def client(lab):
    return Client(lab.url, verbose=False)


def wav_file(path: Path, seconds: float = 6.0) -> Path:
    voice, band = voice_and_band(seconds)
    sf.write(path, (voice + band).T, SR, subtype="PCM_16")
    return path


# ---------------------------------------------------------------------------- gradio_client


@pytest.mark.slow
def test_separate_a_demo_clip_with_both_models(lab, client):
    clip = next(iter(lab.clips))
    # the clip's first 30 s are the listening test's: refused, saying so and what to do
    with pytest.raises(AppError, match=r"the first 30 s of .* are the blind listening test's material.*start at 30 s"):
        client.predict(clip, 2, 8, api_name="/separate_clip")
    files, info = client.predict(clip, 32, 8, api_name="/separate_clip")
    assert set(info["stems"]) == {"dprnn", "umxhq"} and info["errors"] == {}
    assert len(files) == 4
    for f in files:
        data, rate = sf.read(f)
        assert rate == SR and data.shape == (8 * SR, 2)
    rows = {(r["model"], r["source"]): r for r in info["metrics"]}
    assert set(rows) == {(m, s) for m in ("dprnn", "umxhq") for s in ("vocals", "accompaniment")}
    assert all(math.isfinite(rows[k]["SDR"]) for k in rows)
    # the shipped DPRNN separates the demo songs (the mixture scores about -5 dB as a vocals
    # estimate on them); umxhq here has random stand-in weights
    assert (
        rows[("dprnn", "vocals")]["SDR"] > 0.5
        and rows[("dprnn", "vocals")]["SDR"] > rows[("umxhq", "vocals")]["SDR"] + 3
    )
    assert set(info["timings"]) >= {"separate dprnn", "separate umxhq", "metrics", "spectrograms", "total"}


def test_separate_an_uploaded_file(client, tmp_path):
    files, info = client.predict(
        handle_file(str(wav_file(tmp_path / "my song.wav", 5.0))), "dprnn", api_name="/separate"
    )
    assert list(info["stems"]) == ["dprnn"] and info["metrics"] == []
    assert len(files) == 2 and sf.info(files[0]).frames == 5 * SR


@pytest.mark.parametrize(
    "name,content,message",
    [
        ("notes.mp3", b"these are my lyrics, not audio\n", "text file, not audio"),
        ("empty.wav", b"", "empty"),
        ("noise.flac", bytes(range(256)) * 40, "not an audio file|no channels or no sample rate"),
    ],
)
@pytest.mark.slow
def test_a_bad_upload_returns_the_error_and_the_app_keeps_serving(client, tmp_path, name, content, message):
    bad = tmp_path / name
    bad.write_bytes(content)
    with pytest.raises(AppError, match=message):
        client.predict(handle_file(str(bad)), "all", api_name="/separate")
    files, info = client.predict(handle_file(str(wav_file(tmp_path / "ok.wav", 3.0))), "dprnn", api_name="/separate")
    assert len(files) == 2


def test_an_upload_over_the_duration_cap_is_refused(client, tmp_path):
    long = tmp_path / "long.wav"
    sf.write(long, np.zeros((int(2.5 * 60 * 8000), 1), dtype=np.int16), 8000, subtype="PCM_16")  # 2.5 min > 2 min cap
    with pytest.raises(AppError, match="over the 2:00 limit"):
        client.predict(handle_file(str(long)), "all", api_name="/separate")


@pytest.mark.slow
def test_ratings_round_trip_through_the_api(lab, client, monkeypatch):
    listener = client.predict(api_name="/listener")
    with sqlite3.connect(lab.study.store.path) as db:
        (answers,) = db.execute("SELECT headphone_check FROM listeners WHERE id = ?", (listener,)).fetchone() or (None,)
    assert answers is None  # the check is made when asked for
    client.predict(listener, api_name="/headphone_check")
    with sqlite3.connect(lab.study.store.path) as db:
        (answers,) = db.execute("SELECT headphone_check FROM listeners WHERE id = ?", (listener,)).fetchone()
    assert client.predict(listener, json.loads(answers), api_name="/headphone_answer")["passed"]
    files, trial = client.predict(listener, "mushra", api_name="/trial")
    assert trial["kind"] == "mushra" and trial["labels"] == ["A", "B", "C", "D"]  # reference, anchor, 2 models
    assert len(files) == 5 and trial["seconds"] == 1.0  # four hidden samples + the open reference
    names = " ".join(Path(f).name for f in files)
    assert "dprnn" not in names and "umxhq" not in names and "anchor" not in names  # blind
    conditions = lab.study.store.get_trial(trial["trial_id"]).conditions
    scores = {label: {"reference": 100.0, "anchor": 10.0}.get(c, 60.0) for label, c in conditions.items()}
    time.sleep(1.0)
    assert client.predict(listener, trial["trial_id"], {"scores": scores}, api_name="/rate") == {"saved": 4}
    with pytest.raises(AppError, match="already rated"):
        client.predict(listener, trial["trial_id"], {"scores": scores}, api_name="/rate")
    # stored with how they came, and not counted by default: a script needs no play records
    assert {r["via"] for r in lab.study.store.rows() if r["listener"] == listener} == {"api"}
    stats = client.predict(api_name="/results")
    api_rows = sum(1 for r in lab.study.store.rows() if r["via"] == "api")
    assert api_rows >= 4 and stats["api_ratings"] == {"rows": api_rows, "counted": False}
    assert not stats["mushra"]["scores"] and stats["ratings"] == 0  # nothing counted
    # the admin's choice (APP_COUNT_API_RATINGS=1) for scripted tests; undone when the test ends
    monkeypatch.setattr(lab.config, "count_api_ratings", True)
    stats = client.predict(api_name="/results")
    assert stats["api_ratings"] == {"rows": api_rows, "counted": True} and stats["ratings"] == api_rows
    rows = {(r["condition"], r["source"]): r for r in stats["mushra"]["scores"]}
    assert any(c == "reference" and r["n"] >= 1 and r["mean"] == 100 for (c, _), r in rows.items())
    assert {"dprnn", "umxhq", "anchor"} <= {c for c, _ in rows}
    # counts, never listener ids; this listener passed every screening criterion
    assert isinstance(stats["mushra"]["kept"], int) and isinstance(stats["mushra"]["dropped"], int)
    assert stats["kept_listeners"] >= 1 and set(stats["screening"]) == set(SCREENING)
    rows, flags = lab.study.campaign.screened()
    direct = summary(rows, flags=flags)  # what the server computes, ids included
    assert stats["mushra"]["kept"] == len(direct["mushra"]["kept"]) and listener in direct["mushra"]["kept"]
    assert listener not in str(stats)


@pytest.mark.slow
def test_a_loopback_caller_cannot_choose_its_address(lab, monkeypatch):
    """Without a proxy in front (APP_PROXY_HOPS=0) `X-Forwarded-For` is believed by no one: not by
    the app, and not by uvicorn, which by default rewrites the client address for loopback peers.
    Eleven callers from 127.0.0.1, each naming another address, are one client: its limit of new
    listener ids per hour (10) refuses the eleventh."""
    assert lab.config.proxy_hops == 0
    # this test's counts only, with a small limit
    monkeypatch.setattr(lab.study, "limiter", RateLimiter({**lab.study.limiter.limits, "listeners": (10, 3600.0)}))
    answers = []
    for i in range(11):
        client = Client(lab.url, verbose=False, headers={"X-Forwarded-For": f"198.51.100.{i + 1}"})
        try:
            answers.append(client.predict(api_name="/listener"))
        except AppError as e:
            answers.append(str(e))
    assert all(len(a) > 20 and "too many" not in a for a in answers[:10])
    assert "too many new listener ids from this connection" in answers[10]


def test_admin_export_is_streamed_once_and_formula_safe(lab):
    listener = lab.study.new_listener("test")
    for clip, via in (('=HYPERLINK("http://x")', "page"), ("=cmd|' /C calc'!A0", "api")):
        trial = lab.study.store.create_trial(
            listener=listener,
            kind="mushra",
            clip=clip,
            source="vocals",
            conditions={"A": "dprnn"},
            versions={"dprnn": "v"},
        )
        lab.study.store.submit(listener, trial.id, scores={"A": 40}, via=via)
    for token in ("guess", "", None):
        with pytest.raises(RatingError, match="wrong admin token"):
            lab.study.export_link(token, "admin-test")
    link = lab.study.export_link("s3cret-token", "another-client")
    with urllib.request.urlopen(lab.url.rstrip("/") + link) as response:
        rows = list(csv.DictReader(io.StringIO(response.read().decode())))
    clips = [r["clip"] for r in rows]
    assert "'=cmd|' /C calc'!A0" in clips
    assert not any(c.startswith(("=", "+", "-", "@")) for c in clips)
    # no headphone check taken: the listener's counted row carries that flag; the API row is not
    # counted (APP_COUNT_API_RATINGS is off), so no screening speaks of it: one screening for all
    mine = {r["via"]: r for r in rows if r["listener"] == listener}
    assert (mine["page"]["counted"], mine["page"]["excluded_by"], mine["page"]["counts_in_means"]) == (
        "1",
        "headphones",
        "0",
    )
    assert (mine["api"]["counted"], mine["api"]["excluded_by"]) == ("0", "")
    assert mine["page"]["label"] == "A" and mine["page"]["labels"] == '{"A": "dprnn"}'
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", mine["page"]["answered_utc"])
    assert lab.study.export_stream(link.rsplit("/", 1)[-1]) is None  # used up


# ---------------------------------------------------------------------------- a real browser


@pytest.mark.browser
@pytest.mark.slow
def test_browser_upload_and_separate(lab, tmp_path):
    from playwright.sync_api import expect, sync_playwright

    song = wav_file(tmp_path / "browser song.wav", 6.0)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"], headless=True)
        page = browser.new_page(viewport={"width": 1400, "height": 1100})
        page.goto(lab.url)
        page.locator("input[type=file]").first.set_input_files(str(song))
        page.get_by_role("button", name="Separate my song").click()
        expect(page.get_by_text("browser song.wav (6.0 s)")).to_be_visible(timeout=90_000)
        for name in ("dprnn", "umxhq"):
            expect(page.get_by_text(f"{name}: vocals", exact=True)).to_be_visible()
        expect(page.locator("audio")).not_to_have_count(0)
        # the guide-vocal slider follows the keyboard too: two arrow presses (5 % a step) make the
        # karaoke of a 10 % guide vocal, as a drag released there would
        guides = set(lab.work_root.rglob("dprnn-karaoke-guide*.wav"))
        page.get_by_role("slider", name="Guide vocal in the karaoke track (%)").focus()
        page.keyboard.press("ArrowRight")
        page.keyboard.press("ArrowRight")

        def made() -> set[str]:  # the guide mixes made since (of this separation: new paths)
            return {p.name for p in set(lab.work_root.rglob("dprnn-karaoke-guide*.wav")) - guides}

        _wait_for(lambda: "dprnn-karaoke-guide010.wav" in made())
        page.get_by_role("tab", name="Spectrograms: vocals").click()
        expect(page.locator(".js-plotly-plot .heatmaplayer").first).to_be_visible(timeout=30_000)
        # the colour bar reads as a level meter: 0 dB at the top, the floor at the bottom
        ticks = page.locator(".js-plotly-plot .colorbar g[class$='tick'] text").all()
        labels = sorted((t.bounding_box()["y"], t.text_content().replace("\u2212", "-")) for t in ticks)
        assert labels[0][1] == "0" and labels[-1][1] == "-90", labels  # top to bottom
        page.screenshot(path=str(tmp_path / "separated.png"), full_page=True)
        browser.close()
    assert (tmp_path / "separated.png").stat().st_size > 10_000
    out = Path(__file__).resolve().parents[1] / "out" / "screenshots"
    out.mkdir(parents=True, exist_ok=True)
    shutil.copy(tmp_path / "separated.png", out / "app-separated.png")


def _launch(data_dir: Path, port: int | None = None, **settings):
    """An app of its own (the conv1d demo model only: its page is what these tests need)."""
    pool = ModelPool(["conv1d"], device="cpu", background=False)
    lab = lab_module.LabApp(AppConfig(data_dir=data_dir, models=["conv1d"], **settings), pool=pool)
    demo, url = serve_app(lab, port=port)
    return lab, demo, url


def _listeners(lab) -> int:
    with sqlite3.connect(lab.study.store.path) as db:
        return db.execute("SELECT COUNT(*) FROM listeners").fetchone()[0]


def _wait_for(condition, seconds: float = 30.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


@pytest.mark.browser
def test_a_returning_listener_is_the_same_listener_after_a_restart(tmp_path):
    """The page keeps the listener id in the browser, sealed with a key derived from the app's
    secret (kept in the data folder): after the server restarts (a Space sleeping, rebuilt or
    redeployed) the same browser is the same listener, not a new one sent back to the headphone check."""
    from playwright.sync_api import sync_playwright

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    data = tmp_path / "data"
    lab, demo, url = _launch(data, port)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"], headless=True)
        page = browser.new_page()
        page.goto(url)
        _wait_for(lambda: _listeners(lab) == 1)
        demo.close()
        lab, demo, url = _launch(data, port)  # the same data folder: the same secret.key and ratings
        try:
            page.reload()
            page.get_by_role("tab", name="Listen and rate (blind)").click()
            page.get_by_role("button", name="Start a blind trial").click()
            page.get_by_text("Before the first trial: a short headphone check.").wait_for(timeout=30_000)
            assert _listeners(lab) == 1  # recognised: no second listener
        finally:
            browser.close()
            demo.close()


@pytest.mark.browser
def test_a_listener_over_the_address_limit_is_told_why_and_until_when(tmp_path):
    """A second browser behind an address whose limit of new listeners is used up: the rating
    tab says so at once, and Start says it again with the time to come back (not "unknown or
    forged listener id: reload the page", which reloading never cured)."""
    from playwright.sync_api import expect, sync_playwright

    lab, demo, url = _launch(tmp_path / "data", limits={"listeners": 1, "trials": 600, "ratings": 600, "checks": 60})
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"], headless=True)
            first = browser.new_context().new_page()
            first.goto(url)
            _wait_for(lambda: _listeners(lab) == 1)
            second = browser.new_context().new_page()  # another browser: its own storage, the same address
            second.goto(url)
            second.get_by_role("tab", name="Listen and rate (blind)").click()
            said = "Ratings cannot start from this browser yet: this network address has had as many new listeners"
            expect(second.get_by_text(said)).to_be_visible(timeout=30_000)
            second.get_by_role("button", name="Start a blind trial").click()
            toast = second.locator(".toast-body", has_text="please come back after")
            expect(toast).to_be_visible(timeout=30_000)
            assert re.search(r"come back after \d\d:\d\d UTC", toast.inner_text())
            assert "forged" not in toast.inner_text() and _listeners(lab) == 1
            browser.close()
    finally:
        demo.close()


@pytest.mark.slow
def test_the_demo_separations_are_kept_across_a_restart(tmp_path, monkeypatch):
    """The example clips' separations that trials share are kept in the data folder, outside the
    work folder's clean-up: after a restart the first trials read them instead of separating
    again (11-12.6 s each on a 2-core CPU, with listeners waiting); other weights separate anew."""
    import json

    pool = ModelPool(["conv1d"], device="cpu", background=False)
    config = AppConfig(data_dir=tmp_path / "data", models=["conv1d"])
    first = lab_module.LabApp(config, pool=pool)
    clip = next(iter(first.clips))
    sep = first.demo_separation(clip)
    assert sep.workdir.is_relative_to(config.data_dir) and not sep.workdir.is_relative_to(first.work_root)
    again = lab_module.LabApp(config, pool=pool)  # a restart: a new process, the same data folder
    monkeypatch.setattr(again, "separate", lambda *a, **k: pytest.fail("separated again"))
    kept = again.demo_separation(clip)
    assert (kept.stems, kept.references, kept.versions, kept.seconds) == (
        sep.stems,
        sep.references,
        sep.versions,
        sep.seconds,
    )
    assert json.dumps(kept.metrics) == json.dumps(sep.metrics)
    again.config.work_max_mb = 0  # the tightest clean-up leaves it alone
    again.tidy(now=True)
    assert kept.mixture.exists() and again.demo_separation(clip) is kept
    monkeypatch.undo()
    monkeypatch.setattr(pool.slots["conv1d"], "version", "conv1d#0123456789ab")  # other weights
    newer = lab_module.LabApp(config, pool=pool).demo_separation(clip)
    assert newer.versions == {"conv1d": "conv1d#0123456789ab"} and newer.workdir != kept.workdir
    assert not kept.workdir.exists()  # one kept separation per clip


# ---------------------------------------------------------------------------- the store


def test_store_under_load_loses_nothing_and_survives_a_restart(tmp_path):
    path = tmp_path / "ratings.sqlite"
    store = RatingsStore(path, rate_limit=10_000)

    def writer(w: int) -> None:
        listener = f"listener{w:04d}"
        for i in range(50):
            trial = store.create_trial(
                listener=listener,
                kind="mushra",
                clip=f"clip {i}",
                source="vocals",
                conditions={"A": "dprnn"},
                versions={"dprnn": "v1"},
            )
            store.submit(listener, trial.id, scores={"A": float(i)})

    errors = in_threads(writer, 20)
    assert errors == []
    assert store.count() == 1000
    store.close()
    again = RatingsStore(path)  # the app restarted
    assert again.count() == 1000
    assert sorted(r["score"] for r in again.rows() if r["listener"] == "listener0007") == [float(i) for i in range(50)]


def test_safe_cell():
    assert safe_cell("=1+1") == "'=1+1" and safe_cell("@SUM(A1)") == "'@SUM(A1)" and safe_cell("-2") == "'-2"
    assert safe_cell("dprnn") == "dprnn" and safe_cell(None) == "" and safe_cell(3.5) == "3.5"


# ---------------------------------------------------------------------------- faults


def test_out_of_memory_retries_with_smaller_segments(mixture):
    from separation import Separator
    from separation.models.base import ModelInfo

    class Greedy(torch.nn.Module):
        """Runs out of memory on segments longer than one second."""

        sources = ("vocals", "accompaniment")
        segment_seconds = 2.0
        min_samples = 1
        supports_wiener = False
        architecture = "test"

        def forward(self, x):
            if x.shape[-1] > SR:
                raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
            return torch.stack([x * 0.25, x * 0.75], dim=1)

    info = ModelInfo("greedy", "test", True, "here")
    slot = ModelSlot("greedy", state="ready", separator=Separator(Greedy(), info, device="cpu", shifts=2))
    with pytest.raises(OutOfMemory, match="ran out of memory on one 2.0-s segment"):
        slot.separator.separate(mixture, SR)  # 2-s segments: out of memory
    totals = []
    stems = separate_with_fallback(slot, mixture, progress=lambda d, t: totals.append(t))  # retried with 1-s segments
    assert torch.allclose(stems["vocals"] + stems["accompaniment"], mixture, atol=1e-5)
    # the retry kept the two averaged passes the separator was set up with
    delay = int(SHIFT_SPAN_SECONDS * SR) // 2  # the second of two passes is delayed by half the span
    length = mixture.shape[-1]
    assert totals[-1] == len(segment_offsets(length, SR, 0.25)) + len(segment_offsets(length + delay, SR, 0.25))


def test_a_model_that_fails_to_load_leaves_the_others_working(tmp_path):
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text("{not json")
    pool = ModelPool(["dprnn", str(broken)], device="cpu", background=False)
    states = {n: s.state for n, s in pool.slots.items()}
    assert states == {"dprnn": "ready", str(broken): "unavailable"}
    assert "config.json" in pool.slots[str(broken)].message


def test_an_upload_over_the_size_cap_is_refused(lab, client, tmp_path):
    big = tmp_path / "big.wav"
    sf.write(big, np.random.default_rng(0).standard_normal((40 * SR, 2)) * 0.1, SR, subtype="PCM_16")  # ~7 MB > 5 MB
    with pytest.raises(ValueError, match="exceeds the maximum file size"):
        client.predict(handle_file(str(big)), "all", api_name="/separate")
    # and the server checks it too, whatever the client does
    with pytest.raises(SeparationError, match=r"over the \d+ MB limit"):
        lab.read_upload(str(big))


@pytest.mark.slow
def test_a_trial_falls_back_to_an_example_clip_when_the_upload_cannot_make_one(tmp_path):
    """One model and no true stems: no A/B is possible, so the trial is a MUSHRA on a demo clip."""
    pool = ModelPool(["dprnn"], device="cpu", background=False)
    lab = lab_module.LabApp(AppConfig(data_dir=tmp_path), pool=pool)
    voice, band = voice_and_band(3.0)
    upload = lab.separate(torch.from_numpy(voice + band), None, "upload.wav")
    listener = lab.study.new_listener("test")
    lab.study.headphone_check(listener, "test")
    (truth,) = (
        lab.study.store._connect().execute("SELECT headphone_check FROM listeners WHERE id = ?", (listener,)).fetchone()
    )
    lab.study.store.answer_headphone_check(listener, json.loads(truth))  # passed: on headphones
    trial, used = lab.study.trial_for(upload, listener)
    assert used is not upload and used.references and trial.kind == "mushra"
    assert sorted(lab.study.store.get_trial(trial.trial_id).conditions.values()) == ["anchor", "dprnn", "reference"]
    assert not trial.own  # a campaign stimulus: it counts
    with pytest.raises(RatingError, match="an A/B trial needs two models"):  # asked for by name (the API)
        lab.study.trial_for(None, listener, kind="ab")
