"""Shared fixtures: synthetic audio made with numpy, tiny model configs, isolated caches.

Nothing here touches the network: the Hub and torch hub caches point at temporary folders
and `HF_HUB_OFFLINE=1` is set for the whole session.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import tempfile
import threading
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
# huggingface_hub reads these once, at import: set them before anything imports it.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"
os.environ["HF_HUB_CACHE"] = tempfile.mkdtemp(prefix="hf-cache-")
HF_CACHE = Path(os.environ["HF_HUB_CACHE"])

from separation.audio import SAMPLE_RATE  # noqa: E402
from separation.models.conv1d import Conv1DConfig  # noqa: E402
from separation.models.dprnn import DPRNNConfig  # noqa: E402
from separation.models.umx import UMXConfig  # noqa: E402

SR = SAMPLE_RATE  # the project's one sample rate

TINY_CONFIGS = {
    "dprnn": DPRNNConfig(
        n_fft=512, hop=128, max_bin=128, feature_dim=16, hidden_size=16, num_blocks=2, chunk_size=8, segment_seconds=1.0
    ),
    "conv1d": Conv1DConfig(hidden=(4, 8, 4), segment_seconds=1.0),
    "umx": UMXConfig(n_fft=512, hop=128, max_bin=128, hidden_size=16, nb_layers=1, segment_seconds=1.0),
}


@pytest.fixture(scope="session")
def musdb_root(tmp_path_factory):
    """A small MUSDB18-HQ-shaped synthetic set (train, valid and test) that training tests read;
    eval's tests define their own (test songs only)."""
    from training.synthetic import write_musdb_folder

    return write_musdb_folder(tmp_path_factory.mktemp("musdb"), train=3, valid=1, test=1, seconds=4.0, seed=1)


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


@pytest.fixture
def mixture() -> torch.Tensor:
    voice, band = voice_and_band(3.0)
    return torch.from_numpy(voice + band)


@pytest.fixture
def no_shipped_checkpoints(tmp_path, monkeypatch):
    """As on a checkout without assets/checkpoints: named models fall back to random weights."""
    from separation import pretrained

    monkeypatch.setattr(pretrained, "ASSETS_DIR", tmp_path / "no-assets")
    monkeypatch.setenv("SEPARATION_ASSETS", str(tmp_path / "no-assets"))  # for subprocesses
    return tmp_path / "no-assets"


@pytest.fixture(autouse=True)
def isolated_caches(tmp_path_factory, monkeypatch):
    """A fresh torch hub cache per test: tests never see (or fill) the user's."""
    root = tmp_path_factory.mktemp("caches")
    monkeypatch.setenv("TORCH_HOME", str(root / "torch"))
    monkeypatch.delenv("DPRNN_REPO", raising=False)
    monkeypatch.delenv("CONV1D_REPO", raising=False)
    return root
