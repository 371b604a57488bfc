"""Shared fixtures: synthetic audio made with numpy, tiny model configs, isolated caches.

Nothing here touches the network: the Hub and torch hub caches point at temporary folders
and `HF_HUB_OFFLINE=1` is set for the whole session. Constants and helpers the tests import
are in tests/helpers.py.
"""

from __future__ import annotations

import os
import tempfile

import pytest
import torch

# huggingface_hub reads these once, at import: set them before anything imports it.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"
os.environ["HF_HUB_CACHE"] = tempfile.mkdtemp(prefix="hf-cache-")

from tests.helpers import CHROMIUM, voice_and_band  # noqa: E402


@pytest.hookimpl(tryfirst=True)  # before `-m` deselects: a world or browser test is slow too
def pytest_collection_modifyitems(config, items):
    """`world` and `browser` tests count as `slow`; `gpu` and `browser` tests are skipped where
    there is no GPU or no Chromium (markers: pytest.ini)."""
    gpu = torch.cuda.is_available()
    for item in items:
        if item.get_closest_marker("world") or item.get_closest_marker("browser"):
            item.add_marker(pytest.mark.slow)
        if item.get_closest_marker("gpu") and not gpu:
            item.add_marker(pytest.mark.skip(reason="needs a GPU"))
        if item.get_closest_marker("browser") and CHROMIUM is None:
            item.add_marker(pytest.mark.skip(reason="Debian's chromium is not installed (scripts/setup.sh --dev)"))


@pytest.fixture(scope="session")
def musdb_root(tmp_path_factory):
    """A small MUSDB18-HQ-shaped synthetic set (train, valid and test) that training tests read;
    eval's tests define their own (test songs only)."""
    from songgen.synthetic import write_musdb_folder

    return write_musdb_folder(tmp_path_factory.mktemp("musdb"), train=3, valid=1, test=1, seconds=4.0, seed=1)


@pytest.fixture(scope="session", autouse=True)
def demo_songs_made_once():
    """Every app a test builds writes its demo clips (three 60-s songs) into its own data folder:
    the songs are made once per test session (the same seeds make the same songs)."""
    import functools

    from webapp import clips

    original = clips.make_track
    clips.make_track = functools.lru_cache(maxsize=8)(original)
    yield
    clips.make_track = original


@pytest.fixture
def mixture() -> torch.Tensor:
    voice, band = voice_and_band(3.0)
    return torch.from_numpy(voice + band)


@pytest.fixture
def no_shipped_checkpoints(tmp_path, monkeypatch):
    """As on an install without the shipped weights: named models fall back to random weights."""
    from separation import pretrained

    monkeypatch.setattr(pretrained, "WEIGHTS_DIR", tmp_path / "no-weights")
    monkeypatch.setenv("SEPARATION_WEIGHTS", str(tmp_path / "no-weights"))  # for subprocesses
    return tmp_path / "no-weights"


@pytest.fixture(autouse=True)
def isolated_caches(tmp_path_factory, monkeypatch):
    """A fresh torch hub cache per test: tests never see (or fill) the user's."""
    root = tmp_path_factory.mktemp("caches")
    monkeypatch.setenv("TORCH_HOME", str(root / "torch"))
    monkeypatch.delenv("DPRNN_REPO", raising=False)
    monkeypatch.delenv("CONV1D_REPO", raising=False)
    return root


@pytest.fixture
def shipped_dprnn():
    """The DPRNN the project ships (separation/weights/dprnn), in eval mode."""
    from separation.pretrained import get_named_model

    model, info = get_named_model("dprnn").load()
    assert info.trained
    return model.eval()
