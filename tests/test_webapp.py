"""The app's pipeline without a server: clips, karaoke, figures, trials, settings, sync."""

from __future__ import annotations

import json
import random
import threading
import urllib.error

import numpy as np
import pytest
import soundfile as sf
import torch

from separation import Separator
from separation.audio import SAMPLE_RATE
from separation.errors import SeparationError
from separation.pretrained import UPSTREAM
from training.synthetic import write_musdb_folder
from webapp.clips import ensure_demo_clips, load_clip, musdb_clips
from webapp.config import AppConfig
from webapp.figures import FLOOR_DB, spectrogram_figure
from webapp.service import ModelPool, karaoke, make_trial, run_separation
from webapp.store import RatingsStore
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
    assert fig.data[0].zmin == 0 and fig.data[0].zmax == -FLOOR_DB  # dB below the mixture's peak
    assert len(separated.framewise["dprnn"]["vocals"]) == 6


def test_spectrograms_are_decimated(separated):
    mix = torch.randn(2, 60 * SR) * 0.1
    fig = spectrogram_figure({"mixture": mix, "estimate": mix * 0.5})
    z = fig.data[0].z
    assert z.shape[0] == 160 and z.shape[1] <= 360 and z.dtype == np.uint8
    assert len(fig.to_json()) < 200_000  # a minute of audio, two panels
    # the estimate at half amplitude is 6 dB further down on the mixture's scale
    assert abs(float(np.median(fig.data[1].z.astype(float) - fig.data[0].z.astype(float))) - 6) <= 1


def test_karaoke_guide_vocal(separated):
    acc, _ = sf.read(separated.stems["dprnn"]["accompaniment"], dtype="float32")
    voc, _ = sf.read(separated.stems["dprnn"]["vocals"], dtype="float32")
    assert karaoke(separated, "dprnn", 0.0) == separated.stems["dprnn"]["accompaniment"]
    guided, _ = sf.read(karaoke(separated, "dprnn", 0.3), dtype="float32")
    np.testing.assert_allclose(guided, np.clip(acc + 0.3 * voc, -1, 1), atol=2 / 32768)


def test_mushra_trial_hides_and_shuffles(separated, tmp_path):
    store = RatingsStore(tmp_path / "r.sqlite")
    orders = set()
    for seed in range(6):
        audio = make_trial(separated, store, "e" * 32, rng=random.Random(seed))
        trial = store.get_trial(audio.trial_id)
        assert audio.kind == "mushra" and sorted(trial.conditions.values()) == [
            "anchor",
            "conv1d",
            "dprnn",
            "reference",
        ]
        assert all(sf.info(f).frames == 6 * SR for f in audio.files.values())  # whole 6-s clip (< 10 s)
        assert all(f.name == f"sample-{label}.wav" for label, f in audio.files.items())
        orders.add(tuple(trial.conditions[label] for label in audio.labels))
        # the hidden reference is the open reference, bit for bit
        hidden = next(label for label, c in trial.conditions.items() if c == "reference")
        assert np.array_equal(sf.read(audio.files[hidden])[0], sf.read(audio.reference)[0])
    assert len(orders) > 1


def test_anchor_is_low_passed(separated, tmp_path):
    store = RatingsStore(tmp_path / "r.sqlite")
    audio = make_trial(separated, store, "f" * 32, rng=random.Random(1))
    trial = store.get_trial(audio.trial_id)
    label = next(label for label, c in trial.conditions.items() if c == "anchor")
    anchor = sf.read(audio.files[label])[0][:, 0]
    reference = sf.read(audio.reference)[0][:, 0]
    spectrum = lambda x: np.abs(np.fft.rfft(x)) ** 2  # noqa: E731
    freqs = np.fft.rfftfreq(len(anchor), 1 / SR)
    high = freqs > 5000
    if spectrum(reference)[high].sum() > 0:
        assert spectrum(anchor)[high].sum() < 1e-3 * spectrum(reference)[high].sum()


def test_trial_excerpts_avoid_long_silences(tmp_path):
    """Vocals are absent from much of a real song: a 10-s vocals trial must not be drawn from an
    instrumental stretch (listeners would rate silence)."""
    from webapp.service import audible_excerpt

    wave = np.zeros((40 * SR, 2), dtype=np.float32)
    wave[25 * SR : 35 * SR] = 0.1 * np.random.default_rng(0).standard_normal((10 * SR, 2))  # sung from 25 s to 35 s
    path = tmp_path / "vocals.wav"
    sf.write(path, wave, SR, subtype="FLOAT")
    starts = {audible_excerpt([path], 10 * SR, random.Random(seed)) for seed in range(30)}
    assert all(21 * SR <= s <= 29 * SR for s in starts) and len(starts) > 3  # >= 6 of the 10 s sung, and varied
    silent = tmp_path / "silent.wav"
    sf.write(silent, np.zeros((20 * SR, 2), dtype=np.float32), SR)
    assert 0 <= audible_excerpt([silent], 10 * SR, random.Random(1)) <= 10 * SR  # nothing audible: any excerpt


def test_ab_trial_without_references(pool, tmp_path):
    mix = torch.randn(2, 3 * SR) * 0.05
    sep = run_separation(mix, None, pool=pool, workdir=tmp_path, clip="upload.wav", figures=False)
    assert sep.metrics == [] and sep.references is None
    audio = make_trial(sep, RatingsStore(tmp_path / "r.sqlite"), "g" * 32, rng=random.Random(0))
    assert audio.kind == "ab" and audio.labels == ["A", "B"] and audio.reference is None


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


def test_old_request_folders_are_cleaned_up(tmp_path):
    import os
    import time

    from webapp.service import cleanup, new_workdir

    old, new = new_workdir(tmp_path), new_workdir(tmp_path)
    (old / "vocals.wav").write_bytes(b"x")
    past = time.time() - 5 * 3600
    os.utime(old, (past, past))
    cleanup(tmp_path, max_age_s=3 * 3600)
    assert not old.exists() and new.exists()
