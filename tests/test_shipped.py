"""The demo checkpoints that ship in assets/: small, self-describing, loaded by default, and
actually separating (on synthetic songs they were not trained on)."""

from __future__ import annotations

import json
import re
import warnings

import pytest
import torch
import yaml

from separation import Separator, UntrainedModelWarning
from separation.checkpoints import load_checkpoint
from separation.pretrained import WEIGHTS_DIR
from songgen.synthetic import make_track
from tests.helpers import SR
from training.card import model_card, portable
from training.validation import usdr

SHIPPED = ["dprnn", "conv1d"]


# An absolute folder of some machine: /home/..., /tmp/..., C:\\..., ~/...
LOCAL_PATH = re.compile(r"(?:^|[\s`'\"(=])(?:/(?:[\w.-]+/)+[\w.-]*|~/[\w.-]+|[A-Za-z]:\\\\)")


def _front_matter(card: str) -> dict:
    assert card.startswith("---\n"), "a Hub card starts with YAML metadata"
    return yaml.safe_load(card.split("---\n")[1])


def _strings(value):
    if isinstance(value, dict):
        for v in value.values():
            yield from _strings(v)
    elif isinstance(value, list):
        for v in value:
            yield from _strings(v)
    elif isinstance(value, str):
        yield value


@pytest.mark.parametrize("name", SHIPPED)
def test_checkpoint_is_small_and_describes_itself(name):
    """What the Hub shows: metadata whose `model-index` holds the config's test scores, the
    sections of a model card in order, the results table with the same numbers, and a card that
    is the one `model_card` writes from the config (so shipping a new model needs no test edit)."""
    folder = WEIGHTS_DIR / name
    meta = json.loads((folder / "config.json").read_text())
    training = meta["training"]
    assert meta["architecture"] == name and meta["trained"]
    assert "test" in training, "held-out test scores belong in the checkpoint"
    assert (folder / "model.safetensors").stat().st_size <= 20 * 2**20
    card = (folder / "README.md").read_text()
    model, info = load_checkpoint(folder)
    assert card == model_card(model, info.training), (
        "stale card: write it again from the config (training.card.model_card)"
    )

    headings = [line for line in card.splitlines() if line.startswith("## ")]
    expected = ["Intended use and limits", "How to use", "Training data and compute", "Evaluation results"]
    assert headings[:4] == [f"## {h}" for h in expected] and headings[-1] == "## Config"

    tests = [training["test"], *training.get("more_tests", [])]
    front = _front_matter(card)
    assert front["library_name"] == "pytorch" and name in front["tags"]
    results = front["model-index"][0]["results"]
    assert len(results) == len(tests)
    rows = [line for line in card.split("## Evaluation results")[1].split("\n## ")[0].splitlines()]
    rows = [r for r in rows if r.startswith("| ") and not r.startswith("| test data")]
    assert len(rows) == len(tests)
    for result, test, row in zip(results, tests, rows, strict=True):
        own = test["medians"][test["method"]]
        values = {m["name"].split()[0]: m["value"] for m in result["metrics"]}
        assert values == {s: round(own[s], 2) for s in ("vocals", "accompaniment")}
        assert result["dataset"]["name"] == test["data"] and row.startswith(f"| {test['data']} | {test['tracks']} |")
        cells = [c.strip("* ") for c in row.strip("|").split("|")]
        mixture, irm = test["medians"]["mixture"], test["medians"]["irm"]
        assert cells[2:] == [
            f"{v:.2f}"
            for v in (mixture["vocals"], irm["vocals"], own["vocals"])
            + (mixture["accompaniment"], irm["accompaniment"], own["accompaniment"])
        ]

    # generated training songs: the card says so where a reader looks first
    assert "songgen" in training["data"] or training["data"].startswith("synthetic")
    assert "**Not trained on real music.**" in card and "datasets:" not in card
    # one lineage row per step, each named by its weights where recorded
    chain, node = [], training
    while node:
        chain.append(node)
        node = node.get("parent")
    if len(chain) > 1:
        lineage = card.split("## Lineage")[1].split("\n## ")[0]
        steps = [r for r in lineage.splitlines() if r[:2] == "| " and r.split(" | ")[0][2:].isdigit()]
        assert len(steps) == len(chain)
        for row, node in zip(steps[1:], chain[1:], strict=True):
            assert row.split(" | ")[1] == (f"`{node['weights'][:12]}`" if node.get("weights") else "not recorded")


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_card_and_config_name_no_folder_of_a_machine(name):
    """A Hub page must not show the folders of the machine a model was trained on."""
    folder = WEIGHTS_DIR / name
    meta = json.loads((folder / "config.json").read_text())
    local = [s for s in _strings(meta) if LOCAL_PATH.search(s)]
    assert not local, local[:3]
    card = (folder / "README.md").read_text()
    assert not LOCAL_PATH.search(card), LOCAL_PATH.search(card)


def test_a_local_folder_is_found_and_made_portable():
    """The two checks above can fail: the pattern finds what export strips, and `portable` strips it."""
    record = {"init_from": "/work/runs/L/best", "averaged_from": [{"checkpoint": "/tmp/H/epochs/epoch-002"}]}
    assert all(LOCAL_PATH.search(s) for s in _strings(record))
    assert not any(LOCAL_PATH.search(s) for s in _strings(portable(record)))
    assert portable(record)["averaged_from"][0]["checkpoint"] == "H/epochs/epoch-002"
    assert portable({"init_from": "assets/checkpoints/dprnn"}) == {"init_from": "assets/checkpoints/dprnn"}
    assert not LOCAL_PATH.search("test subset of w2-heldout/ (songgen.world, held-out sounds, seed 0)")


@pytest.fixture(scope="module")
def unseen_song():
    # Seeds of the shipped training set are < 100_003 (see songgen.synthetic); this one is not.
    track = make_track(seed=987_654_321, seconds=12.0)
    mix = torch.from_numpy(track["mixture"].T.copy())
    vocals = torch.from_numpy(track["vocals"].T.copy())
    return mix, vocals, mix - vocals


def test_default_dprnn_is_the_shipped_one_and_separates(unseen_song):
    sep = Separator.from_name("dprnn", device="cpu")
    assert sep.info.trained and str(WEIGHTS_DIR) in sep.info.origin
    mix, vocals, accompaniment = unseen_song
    with warnings.catch_warnings():
        warnings.simplefilter("error", UntrainedModelWarning)
        stems = sep.separate(mix, SR)
    floor = usdr(mix, vocals)
    assert usdr(stems["vocals"], vocals) > floor + 6.0
    assert usdr(stems["accompaniment"], accompaniment) > usdr(mix, accompaniment) + 4.0


@pytest.mark.slow
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


@pytest.mark.world
def test_shipped_dprnn_separates_songs_of_sounds_it_never_heard():
    """Songs rendered from the `unseen` sounds (FluidR3, espeak-ng voices, kits kept out of
    training): the shipped DPRNN, fine-tuned on the training sounds, gains on every song and a
    clear margin on the median one (a song whose vocals sit 5 dB over the band leaves the mixture
    little to gain: 902 gains ~2 dB, the others 8-10)."""
    from songgen.world.render import render_song

    sep = Separator.from_name("dprnn", device="cpu")
    gains = []
    for seed in range(901, 906):  # seeds of the world's own splits are >= 100_000
        track, info = render_song(seed, "unseen", 20.0)
        assert info["voice"].startswith("espeak:") and info["soundfonts"] == ["FluidR3_GM.sf2"]
        mix = torch.from_numpy(track["mixture"].T.copy())
        vocals = torch.from_numpy(track["vocals"].T.copy())
        gains.append(usdr(sep.separate(mix, SR)["vocals"], vocals) - usdr(mix, vocals))
    assert min(gains) > 1.0 and sorted(gains)[2] > 5.0, gains


@pytest.mark.gpu
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
