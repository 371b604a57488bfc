"""What tests share besides fixtures: the project root, tiny model configs, test signals and a
thread helper (`from tests.helpers import ...`; fixtures live in conftest.py)."""

from __future__ import annotations

import dataclasses
import os
import shutil
import threading
import time
from pathlib import Path

import numpy as np

from separation.audio import SAMPLE_RATE
from separation.models.conv1d import Conv1DConfig
from separation.models.dprnn import DPRNNConfig
from separation.models.umx import UMXConfig

ROOT = Path(__file__).resolve().parents[1]
# Debian's Chromium for the `browser` tests (never a browser download); None where it is missing.
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
# The session's private Hub cache, set by conftest.py before anything imports huggingface_hub.
HF_CACHE = Path(os.environ["HF_HUB_CACHE"])
SR = SAMPLE_RATE  # the project's one sample rate

TINY_CONFIGS = {
    "dprnn": DPRNNConfig(
        n_fft=512, hop=128, max_bin=128, feature_dim=16, hidden_size=16, num_blocks=2, chunk_size=8, segment_seconds=1.0
    ),
    "conv1d": Conv1DConfig(hidden=(4, 8, 4), segment_seconds=1.0),
    "umx": UMXConfig(n_fft=512, hop=128, max_bin=128, hidden_size=16, nb_layers=1, segment_seconds=1.0),
}


def tiny_train_config(root, out, **changes):
    """A TrainConfig for tests: the tiny DPRNN on 1-s chunks of a MUSDB-shaped folder."""
    from training.data import DataConfig
    from training.loop import TrainConfig
    from training.losses import LossConfig

    base = dict(
        model="dprnn",
        model_config=dataclasses.asdict(TINY_CONFIGS["dprnn"]),
        musdb_root=str(root),
        is_wav=True,
        out=str(out),
        data=DataConfig(seconds=1.0, samples_per_track=2),
        loss=LossConfig(freq_width=8, time_width=4),
        batch_size=2,
        epochs=2,
        lr=3e-3,
        seed=3,
    )
    base.update(changes)
    return TrainConfig(**base)


def in_threads(work, n: int) -> list[str]:
    """Run `work(i)` for i < n in n threads at once; the errors they raised, as text."""
    errors: list[str] = []

    def run(i: int) -> None:
        try:
            work(i)
        except Exception as exc:  # a "database is locked" would land here
            errors.append(repr(exc))

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return errors


def voice_and_band(seconds: float, sr: int = SR, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A vibrato harmonic 'voice' and a chord-plus-noise 'band', each `(2, T)` float32."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sr)) / sr
    f0 = 220 * (1 + 0.02 * np.sin(2 * np.pi * 5.5 * t))
    phase = 2 * np.pi * np.cumsum(f0) / sr
    voice = sum(np.sin(k * phase) / k for k in range(1, 8)) * (np.sin(2 * np.pi * 1.5 * t) > -0.3)
    band = sum(np.sin(2 * np.pi * f * t + rng.uniform(0, 6)) for f in (130.8, 164.8, 196.0, 261.6)) / 4
    band = band + 0.05 * rng.standard_normal(t.size)
    voice = np.stack([0.6 * voice, 0.5 * voice]) * 0.2
    band = np.stack([band, 0.8 * band]) * 0.2
    return voice.astype(np.float32), band.astype(np.float32)


class Clock:
    """A clock for code that takes one (`clock=`), moved by the test instead of sleeping. With
    `real=True` it runs with the wall clock, `advance` adding to it (for a server that also
    stamps things on its own)."""

    def __init__(self, start: float = 1_800_000_000.0, *, real: bool = False):
        self.offset, self.real = (0.0 if real else start), real

    def __call__(self) -> float:
        return (time.time() if self.real else 0.0) + self.offset

    def advance(self, seconds: float) -> None:
        self.offset += seconds


def serve_app(lab, *, port: int | None = None, concurrency: int | None = None):
    """The app's page and routes on loopback, launched as `webapp.ui.main` launches them: (demo, url)."""
    from webapp import lab as lab_module
    from webapp import ui as ui_module

    demo = ui_module.build_ui(lab)
    demo.queue(default_concurrency_limit=concurrency) if concurrency else demo.queue()
    app, url, _ = demo.launch(
        prevent_thread_lock=True,
        server_name="127.0.0.1",
        server_port=port,
        quiet=True,
        **lab_module.launch_options(lab),
    )
    ui_module.register_routes(app, lab)
    return demo, url


def pass_headphone_check_in_page(page, store_path) -> str:
    """Open the listening tab, Start, answer the headphone check with the answers the server keeps
    for it (what a listener on headphones hears); returns the listener id."""
    import json
    import sqlite3

    from playwright.sync_api import expect

    page.get_by_role("tab", name="Listen and rate (blind)").click()
    page.get_by_role("button", name="Start a blind trial").click()
    expect(page.get_by_text("Before the first trial: a short headphone check.")).to_be_visible(timeout=30_000)
    with sqlite3.connect(store_path) as db:
        listener, answers = db.execute(
            "SELECT id, headphone_check FROM listeners WHERE headphone_check IS NOT NULL AND headphone_score IS NULL"
            " ORDER BY created DESC LIMIT 1"
        ).fetchone()
    checks = page.locator(".block", has=page.get_by_text("softest tone", exact=True))
    for i, answer in enumerate(json.loads(answers)):
        checks.nth(i).get_by_label(str(answer), exact=True).check()
    page.get_by_role("button", name="Send my answers").click()
    expect(page.get_by_text("Headphone check: 6 of 6 right, passed")).to_be_visible(timeout=10_000)
    return listener
