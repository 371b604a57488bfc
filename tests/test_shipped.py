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
    assert "test" in meta["training"], "held-out test scores belong in the checkpoint"
    assert (folder / "model.safetensors").stat().st_size <= 20 * 2**20
    card = (folder / "README.md").read_text()
    if name == "dprnn":  # trained on the rendered world, scored on its three test sets
        assert "training.world" in meta["training"]["data"]
        assert len(meta["training"]["more_tests"]) == 2
        assert "Trained on songs rendered from sampled instruments" in card and "MUSDB18-HQ" in card
        assert card.count("## Test (") == 3 and "unseen sounds" in card and "held-out sounds" in card
    else:
        assert meta["training"]["data"].startswith("synthetic")
        assert "Trained on synthetic data" in card


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


def test_shipped_dprnn_separates_songs_of_sounds_it_never_heard():
    """Songs rendered from the `unseen` sounds (FluidR3, espeak-ng voices, kits kept out of
    training): the shipped DPRNN, fine-tuned on the training sounds, gains a clear margin."""
    from training.world.render import render_song

    sep = Separator.from_name("dprnn", device="cpu")
    gains = []
    for seed in (901, 902, 903):  # seeds of the world's own splits are >= 100_000
        track, info = render_song(seed, "unseen", 20.0)
        assert info["voice"].startswith("espeak:") and info["soundfonts"] == ["FluidR3_GM.sf2"]
        mix = torch.from_numpy(track["mixture"].T.copy())
        vocals = torch.from_numpy(track["vocals"].T.copy())
        gains.append(usdr(sep.separate(mix, SR)["vocals"], vocals) - usdr(mix, vocals))
    assert min(gains) > 3.0 and sum(gains) / len(gains) > 5.0, gains
