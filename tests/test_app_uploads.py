"""Hostile and odd uploads through the app's API (gradio_client on localhost): specific errors
before any work, bounded decoding, no server paths in public answers, and the app still
serving the next ordinary request. The hostile files are generated here and are small."""

from __future__ import annotations

import math
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError

from separation.audio import SAMPLE_RATE
from separation.errors import AudioTooLargeError, SeparationError, scrub_paths
from tests.helpers import ROOT, voice_and_band
from webapp import lab as lab_module
from webapp import ui as ui_module
from webapp.config import AppConfig
from webapp.service import ModelPool

SR = SAMPLE_RATE  # the project's one sample rate


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """The app as offline users run it: DPRNN shipped, umxhq without weights (no network)."""
    root = tmp_path_factory.mktemp("uploads")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TORCH_HOME", str(root / "torch"))  # an empty torch hub cache: umxhq is unavailable
        pool = ModelPool(["dprnn", "umxhq"], device="cpu", background=False)
    assert pool.slots["dprnn"].ready and pool.slots["umxhq"].state == "unavailable"
    lab = lab_module.LabApp(AppConfig(data_dir=root / "data", max_minutes=2.0, max_upload_mb=5), pool=pool)
    demo = ui_module.build_ui(lab)
    demo.queue(default_concurrency_limit=2)
    _, url, _ = demo.launch(
        prevent_thread_lock=True, server_name="127.0.0.1", quiet=True, **lab_module.launch_options(lab)
    )
    lab.url = url
    lab.private = [str(root), str(ROOT), os.path.expanduser("~")]  # folders no answer may name
    yield lab
    demo.close()


@pytest.fixture(scope="module")
def client(lab):
    return Client(lab.url, verbose=False)


@pytest.fixture
def song(tmp_path) -> Path:
    voice, band = voice_and_band(3.0)
    path = tmp_path / "song.wav"
    sf.write(path, (voice + band).T, SR, subtype="PCM_16")
    return path


def still_serves(client, song: Path) -> None:
    files, info = client.predict(handle_file(str(song)), "dprnn", api_name="/separate")
    assert len(files) == 2 and info["seconds"] == pytest.approx(3.0)


def refused(client, match: str, *args, api_name="/separate") -> str:
    with pytest.raises(AppError) as err:
        client.predict(*args, api_name=api_name)
    message = str(err.value)
    assert re.search(match, message), message
    return message


def work_folders(lab) -> int:
    return sum(1 for _ in lab.work_root.glob("*/*"))


@pytest.mark.slow
def test_many_channels_at_a_high_rate_are_refused_from_the_header(lab, client, song, tmp_path):
    # 20 s of 8 channels at 384 kHz: 61 M samples to decode, ~50 kB of FLAC (silence)
    path = tmp_path / "eight-channels.flac"
    with sf.SoundFile(path, "w", 384_000, 8, "PCM_16") as f:
        for _ in range(20):
            f.write(np.zeros((384_000, 8), np.float32))
    assert path.stat().st_size < 1_000_000
    before = work_folders(lab)
    refused(
        client,
        r"0:20 of 8 channels at 384 kHz, 61 million samples to decode, over the 46 million",
        handle_file(str(path)),
        "all",
    )
    assert work_folders(lab) == before  # refused before any separation
    still_serves(client, song)


@pytest.mark.slow
def test_a_file_without_a_duration_is_stopped_at_the_cap_while_decoding(lab, client, song, tmp_path):
    # 3 minutes of 8-channel Opus written through a pipe: the header has no duration (~0.2 MB)
    path = tmp_path / "piped.webm"
    with open(path, "wb") as out:
        subprocess.run(
            [
                "ffmpeg",
                "-v",
                "error",
                "-f",
                "lavfi",
                "-i",
                "sine=frequency=440:duration=180",
                "-ac",
                "8",
                "-c:a",
                "libopus",
                "-b:a",
                "8k",
                "-f",
                "webm",
                "pipe:1",
            ],
            stdout=out,
            check=True,
        )
    probe = subprocess.run(
        ["ffprobe", "-v", "error", "-show_entries", "format=duration", "-of", "csv=p=0", str(path)],
        capture_output=True,
        text=True,
    )
    assert probe.stdout.strip() in ("", "N/A")  # really no duration in the header
    refused(
        client,
        r"lasts more than the 2:00 limit \(its header does not say how long it is: decoding stopped there\)",
        handle_file(str(path)),
        "all",
    )
    still_serves(client, song)


@pytest.mark.parametrize("samples", [1, 1024, 44099])
def test_too_short_an_upload_is_a_clear_message_before_any_work(lab, client, song, tmp_path, samples):
    path = tmp_path / "short.wav"
    sf.write(path, np.full((samples, 2), 0.1, np.float32), SR)
    before = work_folders(lab)
    refused(
        client, r"short.wav: the audio lasts 0\.\d+ s; the app separates 1 s or more", handle_file(str(path)), "all"
    )
    assert work_folders(lab) == before
    still_serves(client, song)


@pytest.mark.parametrize(
    "start,length,match",
    [
        (0, 0.02, r"the excerpt lasts 0.02 s: it must last at least 1 s"),
        (0, 0, r"the excerpt lasts 0 s: it must last at least 1 s"),
        (59.99, 10, r"starts at 59.99 s but .* lasts 60.00 s: start at 59.00 s at the latest"),
        (61, 5, r"starts at 61 s .* lasts 60.00 s"),
        (29, 5, r"the first 30 s of .* are the blind listening test's material"),
        (-1, 5, r"must start at 0 s or later, not -1 s"),
    ],
)
@pytest.mark.slow
def test_excerpt_bounds_are_checked_before_any_work(lab, client, song, start, length, match):
    clip = next(iter(lab.clips))
    assert lab.clips[clip].duration == pytest.approx(60.0)
    before = work_folders(lab)
    refused(client, match, clip, start, length, api_name="/separate_clip")
    assert work_folders(lab) == before
    files, info = client.predict(clip, 58.5, 10, api_name="/separate_clip")  # the last 1.5 s: fine
    assert info["seconds"] == pytest.approx(1.5, abs=0.01)
    still_serves(client, song)


@pytest.mark.parametrize("start,length", [(math.nan, 5), (0, math.inf), ("abc", 5), (None, 5)])
def test_excerpt_bounds_that_are_not_numbers(lab, start, length):
    """JSON clients cannot send NaN (gradio_client refuses to), but a form field or a raw request can."""
    clip = next(iter(lab.clips))
    with pytest.raises(SeparationError, match=r"must be a number of seconds"):
        lab_module.clip_excerpt(lab, clip, start, length)


def test_api_errors_are_plain_text_not_html(client):
    """A refusal's words reach an API client as written: quotes are not HTML entities (the page's
    toast escapes what could be markup, `<`, `>` and `&`, and nothing else)."""
    message = refused(
        client, r"export is disabled: set ADMIN_TOKEN in the app's environment", "x", api_name="/export_link"
    )
    assert "&#x27;" not in message and "&amp;" not in message
    from webapp.ui_common import page_text

    assert page_text('<b>"x.wav" & co</b>') == '&lt;b&gt;"x.wav" &amp; co&lt;/b&gt;'


def test_sizes_are_in_one_unit_everywhere(lab, client, song, tmp_path):
    """5 MB = 5,000,000 bytes in the page, Gradio's upload limit and the app's own check alike:
    a file between 5 MB and 5 MiB (5,242,880 bytes) used to pass the upload and then be refused
    as '4.9 MB, over the 5 MB limit'."""
    assert lab.config.max_upload_bytes == 5_000_000
    assert lab_module.launch_options(lab)["max_file_size"] == 5_000_000
    between = tmp_path / "between.wav"
    frames = (5_100_000 - 44) // 4  # 16-bit stereo, a 44-byte header: 5,100,000 bytes
    sf.write(between, np.zeros((frames, 2), np.int16), SR, subtype="PCM_16")
    assert 5_000_000 < between.stat().st_size < 5 * 2**20
    with pytest.raises(ValueError, match="exceeds the maximum file size of 5000000 bytes"):  # gradio_client's check
        client.predict(handle_file(str(between)), "all", api_name="/separate")
    import httpx

    with open(between, "rb") as f:  # a client that does not check: Gradio's own upload limit, in the same bytes
        answer = httpx.post(client.upload_url, files=[("files", ("between.wav", f))], timeout=60)
    assert answer.status_code == 413 and "5000000 bytes" in answer.text
    with pytest.raises(AudioTooLargeError, match=r"5\.1 MB, over the 5 MB limit"):  # and the app's check, the same
        lab.read_upload(str(between))
    page = ui_module.build_ui(lab).config
    assert "5 MB (5,000,000 bytes)" in str(page)
    still_serves(client, song)


def test_public_answers_name_no_server_path(lab, client, song, tmp_path):
    files, info = client.predict(handle_file(str(song)), "all", api_name="/separate")
    assert info["errors"] == {
        "umxhq": "unavailable: umxhq weights are not available offline "
        "(run `python -m separation download umxhq` where there is internet)"
    }
    assert re.fullmatch(r"dprnn#[0-9a-f]{12}", info["versions"]["dprnn"])
    about = ui_module.about_markdown(lab) + lab.status_markdown()
    for text in (str(info), about, ui_module.summary_line(lab.separate(*voice_and_band_mix(), "x.wav"))):
        assert scrub_paths(text) == text, text
        assert not any(folder in text for folder in lab.private), text
        # no emoji: without an emoji font they are boxes ("\u2610 dprnn"); words say it everywhere
        assert all(ord(c) < 0x2190 for c in text), [c for c in text if ord(c) >= 0x2190]
    assert "**dprnn**: ready (dprnn, trained, on cpu)" in about
    # a damaged checkpoint's message, public: its file name without the folder
    broken = tmp_path / "secret-folder" / "ckpt"
    broken.mkdir(parents=True)
    (broken / "config.json").write_text("{not json")
    pool = ModelPool([str(broken)], device="cpu", background=False)
    slot = pool.slots[str(broken)]
    assert "config.json" in slot.message and "secret-folder" not in slot.message and "secret-folder" in slot.detail


def voice_and_band_mix():
    import torch

    voice, band = voice_and_band(2.0)
    return torch.from_numpy(voice + band), None


def test_unknown_model_names_are_refused_before_any_work(lab, client, song):
    before = work_folders(lab)
    message = refused(
        client,
        r"unknown model name: choose from dprnn, umxhq, or all",
        handle_file(str(song)),
        "<img src=x onerror=alert(1)>",
    )
    assert "<img" not in message  # not echoed
    assert work_folders(lab) == before
    files, info = client.predict(handle_file(str(song)), "dprnn", api_name="/separate")
    assert list(info["stems"]) == ["dprnn"]


@pytest.mark.slow
def test_offline_means_no_outbound_request_at_all(tmp_path):
    """The real app, started with HF_HUB_OFFLINE=1 and every network connection recorded: it
    starts, serves the page and a separation, and never tries an address off this machine."""
    log = tmp_path / "connections.txt"
    guard = tmp_path / "guard"
    guard.mkdir()
    (guard / "sitecustomize.py").write_text(  # every name lookup and connection off this machine is logged and fails
        "import socket\n"
        "LOCAL = ('127.', '::1', 'localhost', '0.0.0.0')\n"
        "def record(what):\n"
        f"    open({str(log)!r}, 'a').write(repr(what) + '\\n')\n"
        "    raise OSError('network disabled in this test')\n"
        "_connect, _getaddrinfo = socket.socket.connect, socket.getaddrinfo\n"
        "def connect(self, address):\n"
        "    host = address[0] if isinstance(address, tuple) else ''\n"
        "    if self.family != socket.AF_UNIX and not str(host).startswith(LOCAL):\n"
        "        record(address)\n"
        "    return _connect(self, address)\n"
        "def getaddrinfo(host, *args, **kwargs):\n"
        "    if host is not None and not str(host).startswith(LOCAL):\n"
        "        record(host)\n"
        "    return _getaddrinfo(host, *args, **kwargs)\n"
        "socket.socket.connect, socket.getaddrinfo = connect, getaddrinfo\n"
    )
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if k not in ("GRADIO_ANALYTICS_ENABLED",)}
    env.update(
        HF_HUB_OFFLINE="1",
        PYTHONPATH=f"{guard}:{ROOT}",
        GRADIO_SERVER_PORT=str(port),
        APP_DATA_DIR=str(tmp_path / "data"),
        TORCH_HOME=str(tmp_path / "torch"),
    )
    proc = subprocess.Popen(
        [sys.executable, "app.py"], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        client = None
        for _ in range(240):
            try:
                client = Client(f"http://127.0.0.1:{port}/", verbose=False)
                break
            except Exception:
                if proc.poll() is not None:
                    break
                import time

                time.sleep(0.5)
        assert client is not None, proc.stdout.read() if proc.poll() is not None else "the app did not start"
        voice, band = voice_and_band(2.0)
        sf.write(tmp_path / "song.wav", (voice + band).T, SR)
        files, info = client.predict(handle_file(str(tmp_path / "song.wav")), "all", api_name="/separate")
        assert "dprnn" in info["stems"] and "not available offline" in info["errors"]["umxhq"]
    finally:
        proc.terminate()
        proc.wait(30)
    assert not log.exists(), log.read_text()


# ---------------------------------------------------------------------------- GPU Spaces


def test_the_spaces_package_outside_a_space_changes_nothing(lab, client, song, monkeypatch):
    """`spaces` is installed here (requirements-dev), but this is no ZeroGPU Space: `spaces.GPU`
    hands the function back, and the app (whose separations go through it) just works."""
    import spaces

    from webapp.gpu import on_gpu, zero_gpu

    monkeypatch.delenv("SPACES_ZERO_GPU", raising=False)
    assert not zero_gpu()

    def fn(x):
        return x

    assert on_gpu(fn, duration=lambda x: 30) is fn and spaces.GPU(duration=30)(fn) is fn
    still_serves(client, song)


@pytest.mark.slow
def test_on_zerogpu_the_separation_runs_inside_spaces_gpu_with_a_duration_from_the_clip(tmp_path, monkeypatch):
    import torch

    import webapp.gpu as gpu

    calls = []

    class StandIn:  # what `spaces` does on ZeroGPU: call `duration` with the call's arguments, then the function
        @staticmethod
        def GPU(duration):
            def decorate(fn):
                def wrapper(*args, **kwargs):
                    calls.append({"duration": duration(*args, **kwargs), "function": fn.__name__})
                    return fn(*args, **kwargs)

                return wrapper

            return decorate

    monkeypatch.setattr(gpu, "spaces_module", lambda: StandIn)
    monkeypatch.setenv("SPACES_ZERO_GPU", "true")
    pool = ModelPool(["dprnn"], device="cpu", background=False)
    lab = lab_module.LabApp(AppConfig(data_dir=tmp_path), pool=pool)
    assert lab.zero_gpu
    voice, band = voice_and_band(3.0)
    sep = lab.separate(torch.from_numpy(voice + band), None, "song.wav")
    assert set(sep.stems) == {"dprnn"}
    assert calls == [{"duration": gpu.gpu_seconds(3.0, 1), "function": "_separate_now"}]
    clip = next(iter(lab.clips))
    mix, refs, label = lab_module.clip_excerpt(lab, clip, 30, 30)  # after the campaign's part
    sep = lab.separate(mix, refs, label)  # the metrics run inside too
    assert sep.metrics and calls[-1]["duration"] == gpu.gpu_seconds(30.0, 1) == 23
    assert gpu.gpu_seconds(600, 2) == 140 and gpu.gpu_seconds(7200, 2) == gpu.MAX_SECONDS


@pytest.mark.gpu
def test_models_move_to_the_gpu_for_the_call_and_back():
    import torch

    pool = ModelPool(["dprnn"], device="cpu", background=False)
    with pool.on("cuda"):
        sep = pool.slots["dprnn"].separator
        assert sep.device.type == "cuda" and next(sep.model.parameters()).is_cuda
        voice, band = voice_and_band(2.0)
        assert sep.separate(torch.from_numpy(voice + band), SR)["vocals"].shape == (2, 2 * SR)
    assert not next(pool.slots["dprnn"].separator.model.parameters()).is_cuda
