"""The demo checkpoints that ship in assets/: small, self-describing, loaded by default, and
actually separating (on synthetic songs they were not trained on)."""

from __future__ import annotations

import json
import warnings

import pytest
import torch

from conftest import SR
from separation import Separator, UntrainedModelWarning
from separation.checkpoints import load_checkpoint
from separation.pretrained import ASSETS_DIR
from training.hub import model_card
from training.synthetic import make_track
from training.validation import usdr

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
        # its epoch was chosen on songs sung by voices it never trained on: named as validation, not training data
        assert "'valid' sounds" in meta["training"]["valid_data"] and "'valid'" not in meta["training"]["data"]
        assert len(meta["training"]["more_tests"]) == 2
        assert "Trained on songs rendered from sampled instruments" in card and "MUSDB18-HQ" in card
        assert card.count("## Test (") == 3 and "unseen sounds" in card and "held-out sounds" in card
        # the 7 GPU minutes in its chain are an averaged run: their budget stays on the card
        assert "the longest 7 min of training on cuda (NVIDIA H100 80GB HBM3)" in card
    else:
        assert meta["training"]["data"].startswith("synthetic")
        assert "Trained on synthetic data" in card
    model, info = load_checkpoint(folder)
    assert card == model_card(model, info.training), (
        "stale card: write it again from the config (training.hub.model_card)"
    )


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


def test_dprnn_beats_the_conv1d_baseline():
    """On synthetic songs neither was trained on (one song swings by a few dB either way: three,
    each won, and a clear margin on average; on the 12-song synthetic test set the shipped DPRNN
    leads by 4.3 dB BSSEval SDR)."""
    dprnn, conv = Separator.from_name("dprnn", device="cpu"), Separator.from_name("conv1d", device="cpu")
    margins = []
    for seed in (987_654_321, 987_654_322, 987_654_323):
        track = make_track(seed=seed, seconds=12.0)
        mix, vocals = (torch.from_numpy(track[k].T.copy()) for k in ("mixture", "vocals"))
        margins.append(usdr(dprnn.separate(mix, SR)["vocals"], vocals) - usdr(conv.separate(mix, SR)["vocals"], vocals))
    assert min(margins) > 0.0 and sum(margins) / len(margins) > 2.0, margins


def test_shipped_dprnn_separates_songs_of_sounds_it_never_heard():
    """Songs rendered from the `unseen` sounds (FluidR3, espeak-ng voices, kits kept out of
    training): the shipped DPRNN, fine-tuned on the training sounds, gains on every song and a
    clear margin on the median one (a song whose vocals sit 5 dB over the band leaves the mixture
    little to gain: 902 gains ~2 dB, the others 8-10)."""
    from training.world.render import render_song

    sep = Separator.from_name("dprnn", device="cpu")
    gains = []
    for seed in range(901, 906):  # seeds of the world's own splits are >= 100_000
        track, info = render_song(seed, "unseen", 20.0)
        assert info["voice"].startswith("espeak:") and info["soundfonts"] == ["FluidR3_GM.sf2"]
        mix = torch.from_numpy(track["mixture"].T.copy())
        vocals = torch.from_numpy(track["vocals"].T.copy())
        gains.append(usdr(sep.separate(mix, SR)["vocals"], vocals) - usdr(mix, vocals))
    assert min(gains) > 1.0 and sorted(gains)[2] > 5.0, gains


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_shipped_dprnn_separates_the_same_on_a_gpu(unseen_song):
    """cuDNN's LSTMs and cuFFT give the CPU's stems to float rounding (the app and `eval` use
    either device)."""
    mix, vocals, _ = unseen_song
    cpu = Separator.from_name("dprnn", device="cpu").separate(mix, SR)
    gpu = Separator.from_name("dprnn", device="cuda").separate(mix, SR)
    assert set(gpu) == set(cpu)
    for stem, audio in gpu.items():
        torch.testing.assert_close(audio.cpu(), cpu[stem], atol=1e-3, rtol=0)
    assert usdr(gpu["vocals"].cpu(), vocals) == pytest.approx(usdr(cpu["vocals"], vocals), abs=0.01)
