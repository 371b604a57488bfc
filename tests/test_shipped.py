"""The demo checkpoints that ship in assets/: small, self-describing, loaded by default, and
actually separating (on synthetic songs they were not trained on)."""

from __future__ import annotations

import json
import warnings

import pytest
import torch

from conftest import SR
from separation import Separator, UntrainedModelWarning
from separation.pretrained import ASSETS_DIR
from training.loop import usdr
from training.synthetic import make_track

SHIPPED = ["dprnn", "conv1d"]


@pytest.mark.parametrize("name", SHIPPED)
def test_checkpoint_is_small_and_describes_itself(name):
    folder = ASSETS_DIR / "checkpoints" / name
    meta = json.loads((folder / "config.json").read_text())
    assert meta["architecture"] == name and meta["trained"]
    assert meta["training"]["data"].startswith("synthetic")
    assert "test" in meta["training"], "held-out test scores belong in the checkpoint"
    assert (folder / "model.safetensors").stat().st_size <= 20 * 2**20
    assert "Trained on synthetic data" in (folder / "README.md").read_text()


@pytest.fixture(scope="module")
def unseen_song():
    # Seeds of the shipped training set are < 100_003 (see training.synthetic); this one is not.
    track = make_track(seed=987_654_321, seconds=12.0)
    mix = torch.from_numpy(track["mixture"].T.copy())
    vocals = torch.from_numpy(track["vocals"].T.copy())
    return mix, vocals, mix - vocals


def test_default_dprnn_is_the_shipped_one_and_separates(unseen_song):
    sep = Separator.from_name("dprnn", device="cpu")
    assert sep.info.trained and str(ASSETS_DIR) in sep.info.origin
    mix, vocals, accompaniment = unseen_song
    with warnings.catch_warnings():
        warnings.simplefilter("error", UntrainedModelWarning)
        stems = sep.separate(mix, SR)
    floor = usdr(mix, vocals)
    assert usdr(stems["vocals"], vocals) > floor + 6.0
    assert usdr(stems["accompaniment"], accompaniment) > usdr(mix, accompaniment) + 4.0


def test_dprnn_beats_the_conv1d_baseline(unseen_song):
    mix, vocals, _ = unseen_song
    dprnn = Separator.from_name("dprnn", device="cpu").separate(mix, SR)
    conv = Separator.from_name("conv1d", device="cpu").separate(mix, SR)
    assert usdr(dprnn["vocals"], vocals) > usdr(conv["vocals"], vocals) + 3.0
