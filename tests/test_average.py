"""`python -m training average`: the weight average of checkpoints of one model (a model soup)."""

from __future__ import annotations

import dataclasses
import json
import math
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from separation import Separator
from separation.checkpoints import load_checkpoint, save_checkpoint, weights_digest
from separation.errors import SeparationError
from separation.models import DPRNN, UMX
from tests.helpers import SR, TINY_CONFIGS, tiny_train_config
from training.__main__ import main as training_main
from training.average import Validation, average_checkpoints, greedy_soup
from training.loop import Trainer, resume_config
from training.validation import ValidationSet


def _portable(path) -> str:
    """How a saved average names a checkpoint folder outside the working folder: its last three parts."""
    return "/".join(Path(path).parts[-3:])


def _checkpoint(path, seed: int, config=TINY_CONFIGS["dprnn"], arch=DPRNN, **training):
    torch.manual_seed(seed)
    record = {"data": f"set {seed}", "steps": 10 * seed, "valid_data": "valid songs", **training}
    return save_checkpoint(arch(config), path, training=record)


def test_the_average_holds_the_weighted_mean_of_every_tensor_and_separates(tmp_path):
    a, b = _checkpoint(tmp_path / "run-a" / "best", 1), _checkpoint(tmp_path / "b", 2, data="set 1 plus set 2")
    wa, wb = load_file(str(a / "model.safetensors")), load_file(str(b / "model.safetensors"))

    uniform = average_checkpoints([tmp_path / "run-a", b], tmp_path / "soup")  # a run folder means its best/
    got = load_file(str(uniform / "model.safetensors"))
    assert set(got) == set(wa)
    for key in wa:
        torch.testing.assert_close(got[key], (wa[key] + wb[key]) / 2, rtol=0, atol=1e-6)

    weighted = average_checkpoints([a, b], tmp_path / "w", weights=[3, 1])
    got = load_file(str(weighted / "model.safetensors"))
    for key in wa:
        torch.testing.assert_close(got[key], 0.75 * wa[key] + 0.25 * wb[key], rtol=0, atol=1e-6)

    meta = json.loads((uniform / "config.json").read_text())
    parts = meta["training"]["averaged_from"]
    # ingredients named without the machine's folders (tmp_path is outside the working folder)
    assert [p["checkpoint"] for p in parts] == [_portable(a), _portable(b)] and [p["weight"] for p in parts] == [
        0.5,
        0.5,
    ]
    assert [p["weights"] for p in parts] == [weights_digest(load_checkpoint(f)[0]) for f in (a, b)]
    assert meta["training"]["data"] == "set 1 plus set 2"  # the union, each set once
    assert meta["training"]["valid_data"] == "valid songs"
    card = (uniform / "README.md").read_text()
    assert "| 0 | this checkpoint | average of 2 checkpoints, 2 runs (up to 20 steps) |" in card
    assert str(tmp_path) not in card and str(tmp_path) not in (uniform / "config.json").read_text()
    assert "weights 0.75, 0.25" in (weighted / "README.md").read_text()

    sep = Separator.from_pretrained(str(uniform), device="cpu")
    mix = torch.randn(2, SR).mul(0.1)
    stems = sep.separate(mix, SR)
    assert set(stems) == {"vocals", "accompaniment"} and all(torch.isfinite(s).all() for s in stems.values())


@pytest.mark.slow
def test_a_fine_tune_of_an_average_keeps_its_ingredients_in_its_card(musdb_root, tmp_path):
    gpu = {"data": "excerpts", "batch_size": 16, "chunk_seconds": 3.0, "valid_data": "4 songs"}
    a = _checkpoint(tmp_path / "a", 1, budget="1 min of training on cuda (GPU X), bfloat16 autocast", **gpu)
    b = _checkpoint(tmp_path / "b", 2, budget="2 min of training on cuda (GPU X), bfloat16 autocast", **gpu)
    c = _checkpoint(tmp_path / "c", 3, budget="5 min of training on cpu")
    soup = average_checkpoints([a, b, c], tmp_path / "soup")
    Trainer(tiny_train_config(musdb_root, tmp_path / "tuned", epochs=1, init_from=str(soup))).run()
    training = json.loads((tmp_path / "tuned" / "best" / "config.json").read_text())["training"]
    parent = training["parent"]
    assert training["init_from"] == str(soup)
    assert [p["weights"] for p in parent["averaged_from"]] == [weights_digest(load_checkpoint(f)[0]) for f in (a, b, c)]
    card = (tmp_path / "tuned" / "best" / "README.md").read_text()
    # the weights started from, by SHA-256: the path alone may hold other weights later
    assert parent["weights"] == weights_digest(load_checkpoint(soup)[0])
    # the lineage names the average by that hash, with what its runs were and their compute (the
    # longest checkpoint of each run: a GPU step's minutes stay on the card)
    assert (
        f"| 1 | `{parent['weights'][:12]}` | average of 3 checkpoints, 2 runs (up to 30 steps) | excerpts + set 3 | "
        "2.0 min on GPU X, bfloat16; 5.0 min on CPU |"
    ) in card
    assert "| compute, all 2 steps of the lineage |" in card


def test_averaging_a_checkpoint_with_itself_changes_nothing(tmp_path):
    a = _checkpoint(tmp_path / "a", 1)
    soup = average_checkpoints([a, a, a], tmp_path / "soup")
    assert weights_digest(load_checkpoint(soup)[0]) == weights_digest(load_checkpoint(a)[0])


def test_checkpoints_that_cannot_be_averaged_are_refused_and_nothing_is_written(tmp_path):
    a, b = _checkpoint(tmp_path / "a", 1), _checkpoint(tmp_path / "b", 2)
    wider = _checkpoint(tmp_path / "wider", 3, config=dataclasses.replace(TINY_CONFIGS["dprnn"], hidden_size=24))
    umx = _checkpoint(tmp_path / "umx", 4, config=TINY_CONFIGS["umx"], arch=UMX)
    dest = _checkpoint(tmp_path / "dest", 5)  # an earlier average: must survive every refusal
    before = (dest / "model.safetensors").read_bytes()
    cases = [
        ([a, wider], {}, "different model configs (hidden_size: 16 vs 24)"),
        ([a, umx], {}, "only checkpoints of one architecture"),
        ([a], {}, "at least two checkpoints"),
        ([a, b], {"weights": [1.0]}, "1 weights for 2 checkpoints"),
        ([a, b], {"weights": [1.0, -1.0]}, "weights must be >= 0"),
        ([a, b], {"weights": [0.0, 0.0]}, "not all 0"),
        ([a, b], {"weights": [float("nan"), 1.0]}, "weights must be >= 0"),
        ([a, tmp_path / "missing"], {}, "missing"),
    ]
    for sources, kw, message in cases:
        with pytest.raises(SeparationError, match=message.replace("(", r"\(").replace(")", r"\)")):
            average_checkpoints(sources, dest, **kw)
    state = load_file(str(b / "model.safetensors"))
    state[next(iter(state))][0] = float("nan")  # a diverged run's checkpoint
    save_file(state, str(b / "model.safetensors"))
    with pytest.raises(SeparationError, match="non-finite"):
        average_checkpoints([a, b], dest)
    assert (dest / "model.safetensors").read_bytes() == before


def test_cli_averages_and_refuses_to_overwrite_an_ingredient(tmp_path, capsys):
    a, b = _checkpoint(tmp_path / "run" / "best", 1), _checkpoint(tmp_path / "b", 2)
    assert training_main(["average", str(tmp_path / "soup"), str(tmp_path / "run"), str(b), "--half"]) == 0
    meta = json.loads((tmp_path / "soup" / "config.json").read_text())
    assert meta["dtype"] == "float16" and len(meta["training"]["averaged_from"]) == 2
    before = (a / "model.safetensors").read_bytes()
    for dest in (a, tmp_path / "run", tmp_path):  # the ingredient itself, or a folder that holds it
        assert training_main(["average", str(dest), str(tmp_path / "run"), str(b)]) == 2
        assert "one of the checkpoints to average" in capsys.readouterr().err
        assert (a / "model.safetensors").read_bytes() == before
    assert training_main(["average", str(tmp_path / "x"), str(a), str(tmp_path / "umx-missing")]) == 2
    assert "error:" in capsys.readouterr().err and not (tmp_path / "x").exists()


@pytest.mark.slow
def test_keep_epochs_saves_every_epoch_for_weight_averaging(musdb_root, tmp_path):
    """Stochastic weight averaging: `--keep-epochs` snapshots, then `average` of them."""
    run, start = tmp_path / "run", _checkpoint(tmp_path / "start", 7)
    Trainer(tiny_train_config(musdb_root, run, epochs=2, keep_epochs=True, init_from=str(start))).run()
    snapshots = sorted((run / "epochs").iterdir())
    assert [p.name for p in snapshots] == ["epoch-000", "epoch-001"]
    digests = [weights_digest(load_checkpoint(p)[0]) for p in snapshots]
    assert digests[1] == weights_digest(load_checkpoint(run / "last")[0]) != digests[0]
    assert json.loads((snapshots[0] / "config.json").read_text())["training"]["epochs"] == 1
    swa = average_checkpoints(snapshots, tmp_path / "swa")
    training = json.loads((swa / "config.json").read_text())["training"]
    parts = training["averaged_from"]
    assert [p["weights"] for p in parts] == digests and [p["epochs"] for p in parts] == [1, 2]
    assert all(isinstance(p["valid_loss"], float) for p in parts)
    # The run's ancestry is stated once, as the average's, not once per snapshot.
    assert training["init_from"] == _portable(start) and not any("init_from" in p for p in parts)
    card = (swa / "README.md").read_text()
    assert "| 0 | this checkpoint | average of 2 checkpoints, the epochs of one run" in card
    assert card.count(f"| 1 | `{weights_digest(load_checkpoint(start)[0])[:12]}` | trained from scratch") == 1
    # A resumed run keeps saving them.
    Trainer(resume_config(run, epochs=3), resume=True).run()
    assert (run / "epochs" / "epoch-002").is_dir()


def _valid(musdb_root) -> Validation:
    return Validation(ValidationSet.from_musdb(str(musdb_root), is_wav=True), device="cpu")


def _noisy_copy(source, dest, scale: float) -> None:
    """`source`'s weights plus Gaussian noise: a checkpoint of the same model that validates worse."""
    model, info = load_checkpoint(source)
    torch.manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * scale * (p.abs().mean() + 1e-3))
    save_checkpoint(model, dest, training=info.training)


@pytest.mark.slow
def test_a_validated_average_scores_as_the_training_loop_does(musdb_root, tmp_path):
    """An average's own validation record; scoring a run's snapshot in `average` reproduces the
    validation loss the training loop recorded for it (same tracks, same loss, same chunker)."""
    run = tmp_path / "run"
    # on the CPU, where `average` validates: a GPU's cuDNN would differ in the 5th digit
    Trainer(tiny_train_config(musdb_root, run, epochs=2, keep_epochs=True, device="cpu")).run()
    snapshots = sorted((run / "epochs").iterdir())
    recorded = json.loads((snapshots[1] / "config.json").read_text())["training"]["valid"]
    again = _valid(musdb_root).score(load_checkpoint(snapshots[1])[0])
    assert again == pytest.approx(recorded, rel=1e-5)

    swa = average_checkpoints(snapshots, tmp_path / "swa", validation=_valid(musdb_root))
    training = json.loads((swa / "config.json").read_text())["training"]
    assert set(training["valid"]) == set(recorded) and all(map(math.isfinite, training["valid"].values()))
    assert training["valid"] == pytest.approx(_valid(musdb_root).score(load_checkpoint(swa)[0]), rel=1e-5)
    assert "1 validation track" in training["valid_data"]
    card = (swa / "README.md").read_text()
    assert f"| validation when saved | loss {training['valid']['valid_loss']:.3f}, " in card


@pytest.mark.slow
def test_the_greedy_soup_keeps_only_what_does_not_raise_the_validation_loss(musdb_root, tmp_path):
    run = tmp_path / "run"
    Trainer(tiny_train_config(musdb_root, run, epochs=2)).run()
    good, twin = run / "best", tmp_path / "twin"
    shutil.copytree(good, twin)  # an identical ingredient: the soup's loss is unchanged, so it is kept
    _noisy_copy(good, tmp_path / "noisy", scale=2.0)
    validation = _valid(musdb_root)
    soup = greedy_soup([tmp_path / "noisy", good, twin], tmp_path / "soup", validation=validation)

    training = json.loads((soup / "config.json").read_text())["training"]
    tried = training["greedy"]
    assert [t["checkpoint"] for t in tried] == [_portable(p) for p in (good, twin, tmp_path / "noisy")]  # best first
    assert [t["kept"] for t in tried] == [True, True, False]
    assert tried[2]["soup_valid_loss"] > tried[0]["valid_loss"]  # the noisy one raised it
    assert [p["checkpoint"] for p in training["averaged_from"]] == [_portable(good), _portable(twin)]
    # the soup is the good checkpoint (twice): its weights, and never a worse validation loss
    assert weights_digest(load_checkpoint(soup)[0]) == weights_digest(load_checkpoint(good)[0])
    assert training["valid"]["valid_loss"] <= min(t["valid_loss"] for t in tried)
    card = (soup / "README.md").read_text()
    assert "greedy soup of 2 of 3 checkpoints tried" in card
    assert "2 of 3 checkpoints kept on the validation loss" in training["budget"]


def test_cli_greedy_soup_and_its_refusals(musdb_root, tmp_path, capsys):
    a, b = _checkpoint(tmp_path / "a", 1), _checkpoint(tmp_path / "b", 2)
    root = str(musdb_root)
    args = ["average", str(tmp_path / "soup"), str(a), str(b), "--validate-on", root, "--is-wav"]
    usage_errors = {
        "--greedy needs --validate-on": ["average", str(tmp_path / "soup"), str(a), str(b), "--greedy"],
        "no --weights": [*args, "--greedy", "--weights", "1", "2"],
        "--valid-tracks must be at least 1": [*args, "--valid-tracks", "0"],
        "give both": ["average", str(tmp_path / "soup"), str(a), str(b), "--valid-description", "2 songs"],
    }
    for message, argv in usage_errors.items():
        with pytest.raises(SystemExit) as exit_:  # argparse's usage error: status 2, before any work
            training_main(argv)
        assert exit_.value.code == 2 and message in capsys.readouterr().err
    assert not (tmp_path / "soup").exists()
    # a folder with no validation songs: refused by name, nothing written
    assert training_main(["average", str(tmp_path / "x"), str(a), str(b), "--validate-on", str(tmp_path / "a")]) == 2
    assert str(tmp_path / "a") in capsys.readouterr().err and not (tmp_path / "x").exists()
    # a device that cannot be used: refused by name, nothing written
    assert training_main([*args, "--greedy", "--device", "tpu"]) == 2
    assert "'tpu'" in capsys.readouterr().err and not (tmp_path / "soup").exists()
    # an empty description of the validation songs: refused, nothing written
    assert training_main([*args, "--valid-description", " \n"]) == 2
    assert "--valid-description is empty" in capsys.readouterr().err and not (tmp_path / "soup").exists()
    assert training_main([*args, "--greedy", "--device", "cpu"]) == 0
    training = json.loads((tmp_path / "soup" / "config.json").read_text())["training"]
    assert len(training["greedy"]) == 2 and training["greedy"][0]["kept"]
    assert training["valid_data"] == _valid(musdb_root).tracks.description  # the folder's own words by default
    # the card's words for the validation songs, given: on the config and on the card (whitespace collapsed)
    told = ["average", str(tmp_path / "told"), str(a), str(b), "--validate-on", root, "--is-wav", "--device", "cpu"]
    assert training_main([*told, "--valid-description", "2 songs,\n  Vorbis-coded"]) == 0
    training = json.loads((tmp_path / "told" / "config.json").read_text())["training"]
    assert training["valid_data"] == "2 songs, Vorbis-coded"
    assert "2 songs, Vorbis-coded" in (tmp_path / "told" / "README.md").read_text()
