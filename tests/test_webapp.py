"""The app's pipeline without a server: clips, karaoke, figures, settings, sync (trials: test_trials)."""

from __future__ import annotations

import json
import threading
import urllib.error
from types import SimpleNamespace

import numpy as np
import pytest
import soundfile as sf
import torch

from separation import Separator
from separation.audio import SAMPLE_RATE
from separation.errors import SeparationError
from separation.pretrained import UPSTREAM
from songgen.synthetic import write_musdb_folder
from tests.helpers import ROOT
from webapp.clips import ensure_demo_clips, load_clip, musdb_clips
from webapp.config import AppConfig
from webapp.figures import FLOOR_DB, spectrogram_figure
from webapp.listening.store import RatingsStore
from webapp.service import ModelPool, karaoke, run_separation
from webapp.sync import JsonlSync

SR = SAMPLE_RATE  # the project's one sample rate


@pytest.fixture(scope="module")
def pool():
    return ModelPool(["dprnn", "conv1d"], device="cpu", background=False)


@pytest.fixture(scope="module")
def demo_clip(tmp_path_factory):
    return ensure_demo_clips(tmp_path_factory.mktemp("demo"), seeds=(5,), seconds=8.0)[0]


@pytest.fixture(scope="module")
def separated(pool, demo_clip, tmp_path_factory):
    mix, refs = load_clip(demo_clip, 1.0, 6.0)
    return run_separation(mix, refs, pool=pool, workdir=tmp_path_factory.mktemp("work"), clip=demo_clip.id)


def test_demo_clips_are_written_once_with_their_stems(tmp_path):
    (clip,) = ensure_demo_clips(tmp_path, seeds=(9,), seconds=3.0)
    stamp = clip.mixture.stat().st_mtime_ns
    mix, refs = load_clip(clip)
    assert mix.shape == (2, 3 * SR) and torch.allclose(refs["vocals"] + refs["accompaniment"], mix, atol=1e-6)
    (again,) = ensure_demo_clips(tmp_path, seeds=(9,), seconds=3.0)
    assert again.mixture.stat().st_mtime_ns == stamp  # not rewritten on the next start
    with pytest.raises(SeparationError, match="starts at 5 s"):
        load_clip(clip, 5.0, 1.0)


def test_musdb_test_tracks_become_clips(tmp_path):
    root = write_musdb_folder(tmp_path / "musdb", train=0, valid=0, test=2, seconds=5.0, seed=3)
    clips = musdb_clips(root)
    assert [c.id for c in clips] == ["MUSDB: Synthetic 000 - Test Song", "MUSDB: Synthetic 001 - Test Song"]
    mix, refs = load_clip(clips[1], 1.0, 2.5)
    assert mix.shape == (2, int(2.5 * SR)) and set(refs) == {"vocals", "accompaniment"}
    stems = {
        n: sf.read(
            root / "test" / "Synthetic 001 - Test Song" / f"{n}.wav", start=SR, frames=int(2.5 * SR), dtype="float32"
        )[0].T
        for n in ("vocals", "drums", "bass", "other")
    }
    np.testing.assert_allclose(refs["vocals"].numpy(), stems["vocals"])
    np.testing.assert_allclose(
        refs["accompaniment"].numpy(), stems["drums"] + stems["bass"] + stems["other"], atol=1e-6
    )


def test_a_separation_has_stems_metrics_and_linked_spectrograms(separated):
    assert set(separated.stems) == {"dprnn", "conv1d"} and separated.errors == {}
    for stems in separated.stems.values():
        for path in stems.values():
            assert sf.info(path).frames == 6 * SR
    rows = {(r["model"], r["source"]): r for r in separated.metrics}
    assert rows[("dprnn", "vocals")]["SDR"] > rows[("conv1d", "vocals")]["SDR"]
    fig = separated.figures["vocals"]
    titles = [a.text for a in fig.layout.annotations]
    assert titles == ["mixture", "reference vocals", "dprnn vocals", "conv1d vocals", "dprnn error", "conv1d error"]
    for axis in ("xaxis", "yaxis"):  # zoom one, all follow: every axis matches one common axis
        matches = [fig.layout[f"{axis}{i if i > 1 else ''}"].matches for i in range(1, 7)]
        assert len({m for m in matches if m}) == 1 and matches.count(None) == 1
    # dB relative to the mixture's peak: the colour bar runs from the floor (bottom) up to 0 dB (top)
    # (stored as dB above the floor, one byte a cell; the bar's labels say dB relative to the peak)
    bar = fig.data[0].colorbar
    assert fig.data[0].zmin == 0 and fig.data[0].zmax == -FLOOR_DB and not fig.data[0].reversescale
    assert np.asarray(fig.data[0].z).max() == -FLOOR_DB  # the mixture's peak cell: the top of the bar
    assert list(bar.tickvals) == sorted(bar.tickvals) and (bar.ticktext[0], bar.ticktext[-1]) == ("-90", "0")
    assert len(separated.framewise["dprnn"]["vocals"]) == 6


def test_spectrograms_are_decimated(separated):
    mix = torch.randn(2, 60 * SR) * 0.1
    fig = spectrogram_figure({"mixture": mix, "estimate": mix * 0.5})
    z = fig.data[0].z
    assert z.shape[0] == 160 and z.shape[1] <= 360 and z.dtype == np.uint8  # whole dB, one byte a cell
    assert len(fig.to_json()) < 200_000  # a minute of audio, two panels
    # the estimate at half amplitude is 6 dB further down on the mixture's scale
    assert abs(float(np.median(fig.data[0].z.astype(float) - fig.data[1].z.astype(float))) - 6) <= 1


def test_karaoke_guide_vocal(separated):
    acc, _ = sf.read(separated.stems["dprnn"]["accompaniment"], dtype="float32")
    voc, _ = sf.read(separated.stems["dprnn"]["vocals"], dtype="float32")
    assert karaoke(separated, "dprnn", 0.0) == separated.stems["dprnn"]["accompaniment"]
    guided, _ = sf.read(karaoke(separated, "dprnn", 0.3), dtype="float32")
    np.testing.assert_allclose(guided, np.clip(acc + 0.3 * voc, -1, 1), atol=2 / 32768)


@pytest.mark.parametrize("hub_offline", [True, False])
def test_unavailable_umxhq_says_why_without_server_paths(monkeypatch, isolated_caches, hub_offline):
    tried = []

    def refuse(url, *args, **kwargs):
        tried.append(url)
        raise urllib.error.URLError("network disabled in tests")

    monkeypatch.setattr(torch.hub, "download_url_to_file", refuse)
    if not hub_offline:
        monkeypatch.delenv("HF_HUB_OFFLINE")
    pool = ModelPool(["umxhq", "dprnn"], device="cpu", background=False)
    slot = pool.slots["umxhq"]
    assert slot.state == "unavailable" and "\n" not in slot.message
    assert slot.message == (
        "unavailable: umxhq weights are not available offline "
        "(run `python -m separation download umxhq` where there is internet)"
    )
    assert str(isolated_caches) in slot.detail and "download umxhq" in slot.detail  # the server log has the path
    assert tried == ([] if hub_offline else [UPSTREAM["umxhq"]["url"]])  # offline means no request at all
    assert pool.slots["dprnn"].ready and "/" not in pool.slots["dprnn"].version
    assert pool.slots["dprnn"].version.startswith("dprnn#") and len(pool.slots["dprnn"].version) == len("dprnn#") + 12


def test_settings_from_the_environment(tmp_path):
    cfg = AppConfig.from_env(
        {
            "APP_MODELS": "dprnn, user/repo",
            "APP_DATA_DIR": str(tmp_path),
            "APP_MAX_MINUTES": "3",
            "APP_CONCURRENCY": "2",
            "ADMIN_TOKEN": "t",
        }
    )
    assert cfg.models == ["dprnn", "user/repo"] and cfg.max_minutes == 3.0 and cfg.concurrency == 2
    assert cfg.ratings_db == tmp_path / "ratings.sqlite" and cfg.admin_token == "t"
    assert AppConfig.from_env({}).models == ["dprnn", "umxhq"]
    # per-client limits believe X-Forwarded-For only as far as there are proxies
    assert AppConfig.from_env({}).proxy_hops == 0
    assert AppConfig.from_env({"SPACE_ID": "user/lab"}).proxy_hops == 1
    assert AppConfig.from_env({"SPACE_ID": "user/lab", "APP_PROXY_HOPS": "2"}).proxy_hops == 2
    assert AppConfig.from_env({"APP_TRIAL_SECONDS": "8", "APP_SECRET": "k"}).trial_seconds == 8.0
    assert AppConfig.from_env({}).shifts == 1 and AppConfig.from_env({"APP_SHIFTS": "2"}).shifts == 2
    with pytest.raises(SeparationError, match="APP_SHIFTS must be a whole number from 1 to 8, not 9"):
        AppConfig.from_env({"APP_SHIFTS": "9"})
    # per-address limits: sized for a class behind one address by default, each a setting
    assert AppConfig.from_env({}).limits == {"listeners": 60, "trials": 600, "ratings": 600, "checks": 60}
    lab_limits = AppConfig.from_env({"APP_LIMIT_LISTENERS": "200", "APP_LIMIT_TRIALS": "3000"}).limits
    assert lab_limits == {"listeners": 200, "trials": 3000, "ratings": 600, "checks": 60}
    for bad in ("0", "-3", "many"):
        with pytest.raises(SeparationError, match=f"APP_LIMIT_CHECKS must be a whole number of 1 or more, not '{bad}'"):
            AppConfig.from_env({"APP_LIMIT_CHECKS": bad})


@pytest.mark.parametrize(
    "name,value,says",
    [
        ("APP_SESSION_TRIALS", "0", "a whole number from 1 to 100, not 0"),  # was a ZeroDivisionError mid-session
        ("APP_TRIAL_SECONDS", "0", "seconds above 0, at most 60, not 0.0"),  # switched the wait and listening off
        ("APP_TRIAL_SECONDS", "-5", "seconds above 0, at most 60, not -5.0"),
        ("APP_MIN_HEARD_S", "61", "seconds from 0 to 60, not 61.0"),
        ("APP_CONCURRENCY", "0", "a whole number of 1 or more, not 0"),
        ("APP_CONCURRENCY", "two", "a whole number of 1 or more, not 'two'"),
        ("APP_QUEUE_SIZE", "-1", "a whole number of 1 or more, not -1"),
        ("APP_MAX_UPLOAD_MB", "0", "a number of MB above 0, not 0.0"),
        ("APP_MAX_MINUTES", "nan", "a number of minutes above 0, not nan"),
        ("APP_WORK_MAX_MB", "-1", "a number of MB above 0, not -1.0"),
        ("APP_PROXY_HOPS", "-1", "a whole number of 0 or more, not -1"),
    ],
)
def test_every_setting_is_checked_at_start_with_one_line_naming_it(name, value, says):
    with pytest.raises(SeparationError) as refused:
        AppConfig.from_env({name: value})
    assert str(refused.value) == f"{name} must be {says}"


def test_the_app_stops_at_a_bad_setting_with_that_line(tmp_path):
    import os
    import subprocess
    import sys

    env = os.environ | {"APP_SESSION_TRIALS": "0", "APP_DATA_DIR": str(tmp_path)}
    out = subprocess.run([sys.executable, "app.py"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and out.stdout == ""
    assert out.stderr == "separation-lab: error: APP_SESSION_TRIALS must be a whole number from 1 to 100, not 0\n"


def test_model_version_names_the_weights_and_the_averaged_passes():
    from webapp.service import model_version

    sep = Separator.from_name("dprnn", device="cpu")
    assert model_version(sep) == f"dprnn#{model_version(sep).split('#')[1]}" and "+" not in model_version(sep)
    assert model_version(sep.variant(shifts=2)) == model_version(sep) + "+shifts2"  # other audio, same weights
    slot = ModelPool(["dprnn"], device="cpu", shifts=2, background=False).slots["dprnn"]  # what APP_SHIFTS sets
    assert slot.version == model_version(sep) + "+shifts2" and slot.message.endswith(", 2 passes averaged")


def test_ratings_sync_appends_json_lines_under_the_scheduler_lock(tmp_path):
    class Scheduler:  # what JsonlSync needs of huggingface_hub.CommitScheduler
        lock = threading.Lock()

    sync = JsonlSync(tmp_path / "sync", Scheduler())
    store = RatingsStore(tmp_path / "r.sqlite", on_write=sync)
    trial = store.create_trial(
        listener="h" * 32,
        kind="mushra",
        clip="c",
        source="vocals",
        conditions={"A": "dprnn", "B": "anchor"},
        versions={},
    )
    store.submit("h" * 32, trial.id, scores={"A": 70, "B": 20})
    lines = [json.loads(line) for line in sync.path.read_text().splitlines()]
    assert sorted((r["condition"], r["score"]) for r in lines) == [("anchor", 20.0), ("dprnn", 70.0)]


def test_separator_device_auto_uses_what_is_there():
    sep = Separator.from_name("conv1d", device="auto")
    assert sep.device.type == ("cuda" if torch.cuda.is_available() else "cpu")


def test_counts_read_as_words():
    """'1 listener', not '1 listeners' (the results line and the session's length)."""
    from webapp.ui_common import counted

    assert [counted(n, "listener") for n in (0, 1, 2)] == ["0 listeners", "1 listener", "2 listeners"]


def test_with_one_model_the_page_says_why_there_is_no_ab_and_hides_its_results(pool, tmp_path):
    import gradio as gr

    from webapp.lab import LabApp
    from webapp.listening.page import build_results_tab, intro_text

    def lab(models):
        ns = SimpleNamespace(pool=models, config=AppConfig(data_dir=tmp_path))
        ns.working_models = lambda: LabApp.working_models(ns)
        return ns

    one = lab(ModelPool(["dprnn"], device="cpu", background=False))
    assert "need two; this app runs one, so every trial is MUSHRA" in intro_text(one)
    # two named, one of them unable to load (umxhq's weights are not reachable here): one model
    failed = lab(ModelPool(["dprnn", "umxhq"], device="cpu", background=False))
    assert failed.pool.slots["umxhq"].state == "unavailable" and failed.working_models() == ["dprnn"]
    assert "this app runs one" in intro_text(failed)
    assert "which of A and B you prefer" not in intro_text(one)
    assert "which of A and B you prefer" in intro_text(lab(pool))
    with gr.Blocks():
        single, both = build_results_tab(one), build_results_tab(lab(pool))
    assert single.mushra_plot.visible and single.mushra.visible
    assert not (single.preference_plot.visible or single.preference.visible or single.mos.visible)
    assert both.preference_plot.visible and both.preference.visible and both.mos.visible


def test_separations_run_on_the_labs_own_threads_and_a_handler_may_nest_them(pool, demo_clip, tmp_path):
    """Every separation runs on one of the lab's `concurrency` threads (torch's OpenMP teams stay
    few); a request handler that puts its whole work there, as the Separate tab's do, calls
    `separate` from inside without waiting on itself; the caller's context variables go along
    (where Gradio looks up the request a progress bar belongs to)."""
    import contextvars

    from webapp.lab import LabApp

    lab = LabApp(AppConfig(data_dir=tmp_path), pool=pool)
    request = contextvars.ContextVar("request", default=None)
    mix, refs = load_clip(demo_clip, 0.0, 2.0)
    seen = []

    def progress(fraction, text):
        seen.append((threading.current_thread().name, request.get()))

    def handler():
        seen.append((threading.current_thread().name, request.get()))
        return lab.separate(mix, refs, demo_clip.id, progress=progress, models=["dprnn"])

    def request_thread(i):
        request.set(f"request {i}")
        results.append(lab.on_compute_thread(handler))

    results: list = []
    threads = [threading.Thread(target=request_thread, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert len(results) == 3 and all(set(r.stems) == {"dprnn"} for r in results)
    names = {name for name, _ in seen}
    assert names == {"separate_0"}, names  # concurrency 1: one thread for every request
    assert {r for _, r in seen} == {"request 0", "request 1", "request 2"}
    assert all(r is not None for _, r in seen)
