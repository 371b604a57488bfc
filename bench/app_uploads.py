"""The app's peak memory on hostile and ordinary uploads, read from /proc while the real app runs.

    ./run.sh bench app_uploads

Starts `python app.py` on localhost (offline; DPRNN shipped, umxhq on stand-in weights saved in
upstream's format, so that both models run as on a Space), then sends through gradio_client's
`/separate`, one at a time:
  - a 10-minute stereo mp3 (an ordinary song at the duration cap: accepted),
  - a 2-minute FLAC of 8 channels at 384 kHz (8.6 MB: under both caps, 369 M samples to decode),
  - a 20-minute 8-channel Opus webm written through a pipe, so that its header has no duration
    (2.7 MB),
and prints, for each, what the app answered and the app's peak resident memory (process and
children, sampled every 20 ms) during the request, against the app's memory at rest in the
same run. Target: peak <= 3 GB in every case on this 2-core, 24 GB machine.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
from gradio_client import Client, handle_file

import common  # noqa: F401  (puts the project on sys.path)
from procmem import tree_rss

ROOT = Path(__file__).resolve().parents[1]
GB = 2**30


def hostile_files(folder: Path) -> dict[str, Path]:
    files = {}
    mp3 = folder / "ten-minutes.mp3"  # a tone and noise, 128 kbit/s: ~9.6 MB
    subprocess.run(
        [
            "ffmpeg",
            "-v",
            "error",
            "-f",
            "lavfi",
            "-i",
            "sine=frequency=220:duration=597",
            "-f",
            "lavfi",
            "-i",
            "anoisesrc=d=597:a=0.05",
            "-filter_complex",
            "amerge",
            "-ac",
            "2",
            "-b:a",
            "128k",
            str(mp3),
        ],
        check=True,
    )
    files["10-min stereo mp3"] = mp3
    rate = 384_000
    t = np.arange(rate) / rate
    tone = np.stack([0.1 * np.sin(2 * np.pi * (220 + 50 * c) * t) for c in range(8)], 1).astype(np.float32)
    flac = folder / "eight-channels-384k.flac"
    with sf.SoundFile(flac, "w", rate, 8, "PCM_16") as f:  # 1 s of tones in every 10: compresses to ~9 MB
        for _ in range(12):
            f.write(tone)
            f.write(np.zeros((9 * rate, 8), np.float32))
    files["2-min 8-ch 384 kHz FLAC"] = flac
    webm = folder / "piped.webm"
    with open(webm, "wb") as out:  # through a pipe: the muxer cannot go back to write the duration
        subprocess.run(
            [
                "ffmpeg",
                "-v",
                "error",
                "-f",
                "lavfi",
                "-i",
                "sine=frequency=440:duration=1200",
                "-ac",
                "8",
                "-c:a",
                "libopus",
                "-b:a",
                "16k",
                "-f",
                "webm",
                "pipe:1",
            ],
            stdout=out,
            check=True,
        )
    files["20-min 8-ch webm, no duration"] = webm
    return files


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_app(folder: Path) -> tuple[subprocess.Popen, str]:
    from openunmix.model import OpenUnmix

    torch_home = folder / "torch"
    os.environ["TORCH_HOME"] = str(torch_home)
    from separation.pretrained import upstream_cache_path

    path = upstream_cache_path("umxhq")
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(OpenUnmix(nb_bins=2049, nb_channels=2, hidden_size=512, max_bin=1487).state_dict(), path)
    port = free_port()
    env = dict(
        os.environ,
        GRADIO_SERVER_PORT=str(port),
        APP_DATA_DIR=str(folder / "data"),
        HF_HUB_OFFLINE="1",
        TORCH_HOME=str(torch_home),
        APP_MODELS="dprnn,umxhq",
        GRADIO_ANALYTICS_ENABLED="False",
    )
    log = open(folder / "app.log", "w")
    proc = subprocess.Popen([sys.executable, "app.py"], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(url, timeout=2)
            return proc, url
        except OSError:
            if proc.poll() is not None:
                raise SystemExit(f"the app stopped: see {folder / 'app.log'}") from None
            time.sleep(0.5)
    proc.kill()
    raise SystemExit("the app did not start in 3 minutes")


def measured(pid: int, call) -> tuple[float, str]:
    """Run `call()` while sampling the app's memory; (peak GB, outcome)."""
    peak, stop = [0], threading.Event()

    def sample():
        while not stop.is_set():
            peak[0] = max(peak[0], tree_rss(pid))
            time.sleep(0.02)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    try:
        outcome = call()
    except Exception as exc:  # the app's refusal comes back as an AppError
        outcome = f"refused: {str(exc).splitlines()[0][:150]}"
    stop.set()
    thread.join()
    return peak[0] / GB, outcome


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        files = hostile_files(folder)
        proc, url = start_app(folder)
        try:
            client = Client(url, verbose=False)
            time.sleep(2)  # let the model threads finish loading
            rest = tree_rss(proc.pid) / GB
            rows = {}
            for name, path in files.items():

                def call(path=path):
                    stems, info = client.predict(handle_file(str(path)), "all", api_name="/separate")
                    return f"accepted: {info['seconds']:.0f} s separated by {', '.join(info['stems'])}"

                rows[name] = (path.stat().st_size / 1e6, *measured(proc.pid, call))
        finally:
            proc.terminate()
            proc.wait(30)
    print(f"app peak resident memory per upload (at rest before them: {rest:.2f} GB); target <= 3 GB each")
    for name, (size, peak, outcome) in rows.items():
        print(f"  {name:30s} {size:5.1f} MB  peak {peak:5.2f} GB ({peak / rest:4.1f}x rest)  {outcome}")


if __name__ == "__main__":
    main()
