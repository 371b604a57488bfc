"""Weight averaging of checkpoints: `python -m training average DEST CKPT CKPT ...`.

The element-wise (weighted) mean of the weights of checkpoints that share one architecture and
config, e.g. the best and last epochs of a run and of a warm restart from it: a "uniform model
soup" (Wortsman et al., ICML 2022) or, along one run, stochastic weight averaging (Izmailov et
al., UAI 2018). Models fine-tuned from a common ancestor lie in one basin of the loss, where the
average of their weights is a model of its own, often flatter and better on data unlike the
training set, at no cost at inference: the result is one ordinary checkpoint.

Averaging models trained from different random starts gives noise, not a soup: the checkpoints
are required to share architecture, config and parameter names, and it is the user's evaluation
(`python -m eval`) that says whether an average is better than its ingredients.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch

from separation.checkpoints import load_checkpoint, read_config, resolve, weights_digest
from separation.errors import SeparationError
from separation.separator import select_device

from .hub import run_checkpoint, save_release
from .loop import lineage
from .losses import LossConfig
from .validation import ValidationSet, validate

log = logging.getLogger(__name__)


@dataclass
class Validation:
    """What an average is scored on: whole validation tracks through the chunker, with the
    training objective's loss (`training.validation.validate`). The defaults of `LossConfig`
    are the loss `python -m training` validates with, so the scores compare with the validation
    losses its checkpoints record when the tracks are the same."""

    tracks: ValidationSet
    loss: LossConfig = field(default_factory=LossConfig)
    device: str | torch.device = "auto"
    # the card's words for the tracks where the folder's own description says too little
    # (e.g. songs Vorbis-coded on the way), as `--valid-description` of a training run
    description: str | None = None

    def __post_init__(self) -> None:
        # resolved once, here: a device that is not there is refused before any checkpoint is loaded
        self.device = select_device(self.device)
        self.description = self.description or self.tracks.description

    def score(self, model) -> dict[str, float]:
        return validate(model.to(self.device), self.tracks, self.loss, self.device)[0]


def average_checkpoints(
    sources: list[str | os.PathLike],
    dest: str | os.PathLike,
    *,
    weights: list[float] | None = None,
    half: bool = False,
    validation: Validation | None = None,
) -> Path:
    """Write to `dest` a checkpoint whose every floating-point tensor is the weighted mean
    (uniform by default) of the same tensor in `sources`, computed in float64.

    Integer tensors (e.g. BatchNorm's `num_batches_tracked`) are counters, not weights: the
    first source's are kept. The config records the ingredients (folder, weight, SHA-256 of
    their weights, their lineage), so the average says exactly what it is made of; with
    `validation`, also the average's own validation scores.
    """
    shares = _normalised(weights, len(sources))
    folders = _ingredient_folders(sources, dest)
    # One checkpoint in memory at a time beside the float64 sums: averaging the 20 epoch
    # snapshots of a run costs the memory of four models (sums, first, current), not of twenty.
    model, sums, digests, trainings = None, {}, [], []
    for folder, share in zip(folders, shares, strict=True):
        loaded, training, state = _load_finite(folder)
        digests.append(weights_digest(loaded))
        trainings.append(training)
        _accumulate(sums, state, share)
        if model is None:
            model = loaded  # the first holds the result (and keeps its integer counters)
    _load_sums(model, sums)
    training = _training_record(folders, shares, digests, trainings)
    if validation is not None:
        training.update(valid=validation.score(model), valid_data=validation.description)
    return save_release(model, dest, training, half=half)


def greedy_soup(
    sources: list[str | os.PathLike], dest: str | os.PathLike, *, validation: Validation, half: bool = False
) -> Path:
    """Write to `dest` the greedy soup of `sources` (Wortsman et al., ICML 2022, recipe 2): each
    checkpoint is scored on `validation`; in order of that loss, best first, each is added to
    the soup (a uniform average) when the soup with it scores a validation loss no higher than
    the soup without it. The soup is never worse on the validation tracks than the best
    ingredient alone, which the uniform average does not promise. Costs 2N - 1 validation passes.

    The config records every candidate with its own loss, the soup's loss when it was tried and
    whether it was kept; the ingredients kept are recorded as by `average_checkpoints`."""
    folders = _ingredient_folders(sources, dest)
    records, digests, trainings = [], [], []
    for folder in folders:
        model, training, _ = _load_finite(folder)
        digests.append(weights_digest(model))
        records.append(validation.score(model))
        trainings.append(training)
        log.info("%s: validation loss %.4f", folder, records[-1]["valid_loss"])
    own = [r["valid_loss"] for r in records]
    order = sorted(range(len(folders)), key=lambda i: own[i])  # stable: ties keep the given order
    model, _, state = _load_finite(folders[order[0]])
    sums = _accumulate({}, state, 1.0)
    kept, record = [order[0]], records[order[0]]
    tried = {order[0]: record["valid_loss"]}
    for i in order[1:]:
        candidate = _accumulate(dict(sums), _load_finite(folders[i])[2], 1.0)
        _load_sums(model, {k: v / (len(kept) + 1) for k, v in candidate.items()})
        trial = validation.score(model)
        tried[i] = trial["valid_loss"]
        if trial["valid_loss"] <= record["valid_loss"]:
            sums, record = candidate, trial
            kept.append(i)
        log.info(
            "%s: soup of %d: %.4f (%s)", folders[i], len(kept), trial["valid_loss"], "kept" if i in kept else "left out"
        )
    _load_sums(model, {k: v / len(kept) for k, v in sums.items()})
    training = _training_record(
        [folders[i] for i in kept],
        [1 / len(kept)] * len(kept),
        [digests[i] for i in kept],
        [trainings[i] for i in kept],
    )
    training.update(valid=record, valid_data=validation.description)
    training["greedy"] = [
        {
            "checkpoint": str(folders[i]),
            "weights": digests[i],
            "valid_loss": own[i],
            "soup_valid_loss": tried[i],
            "kept": i in kept,
        }
        for i in order
    ]
    training["budget"] = (
        f"no training of its own: a greedy soup, the uniform average of the {len(kept)} of {len(folders)} "
        "checkpoints kept on the validation loss"
    )
    return save_release(model, dest, training, half=half)


def _ingredient_folders(sources: list[str | os.PathLike], dest: str | os.PathLike) -> list[Path]:
    """The checkpoint folders of `sources` (a run folder means its best/, a Hub repo id is
    downloaded), checked to be averageable, none of them in `dest` (which is replaced whole)."""
    if len(sources) < 2:
        raise SeparationError(f"averaging needs at least two checkpoints, got {len(sources)}")
    folders = [resolve(run_checkpoint(s)) for s in sources]
    target = Path(dest).resolve()
    for folder in folders:
        if folder.resolve() == target or target in folder.resolve().parents:
            raise SeparationError(
                f"{dest} holds {folder}, one of the checkpoints to average; writing the average there would "
                "replace it: write it elsewhere"
            )
    _check_compatible(folders)
    return folders


def _load_finite(folder: Path) -> tuple[torch.nn.Module, dict, dict]:
    """(model, its training record, its state dict), refusing non-finite weights."""
    model, info = load_checkpoint(folder)
    state = model.state_dict()
    bad = [k for k, t in state.items() if t.is_floating_point() and not torch.isfinite(t).all()]
    if bad:
        raise SeparationError(f"{folder}: non-finite weights in {', '.join(bad[:3])} (a diverged run?)")
    return model, info.training, state


def _accumulate(sums: dict, state: dict, share: float) -> dict:
    """`sums += share * state`, float64, floating-point tensors only."""
    for key, tensor in state.items():
        if tensor.is_floating_point():
            sums[key] = sums.get(key, 0) + share * tensor.double()
    return sums


def _load_sums(model, weights: dict) -> None:
    """Load float64 `weights` into `model` in its own dtypes; the tensors not in `weights`
    (integer counters) keep the model's."""
    reference = model.state_dict()
    model.load_state_dict({k: weights[k].to(v.dtype) if k in weights else v for k, v in reference.items()}, strict=True)


def _normalised(weights: list[float] | None, n: int) -> list[float]:
    if weights is None:
        return [1.0 / n] * n
    if len(weights) != n:
        raise SeparationError(f"{len(weights)} weights for {n} checkpoints: give one weight per checkpoint")
    if any(not w >= 0 for w in weights) or sum(weights) <= 0:  # `not >=` also refuses NaN
        raise SeparationError(f"weights must be >= 0 and not all 0, got {weights}")
    total = float(sum(weights))
    return [float(w) / total for w in weights]


def _check_compatible(folders: list[Path]) -> None:
    """The same architecture and the same config (every field) in every checkpoint, or a
    message naming the first checkpoint and the fields that differ."""
    metas = [read_config(f) for f in folders]
    first = metas[0]
    for folder, meta in zip(folders[1:], metas[1:], strict=True):
        if meta["architecture"] != first["architecture"]:
            raise SeparationError(
                f"{folder} is a {meta['architecture']!r} checkpoint and {folders[0]} a {first['architecture']!r} "
                "one: only checkpoints of one architecture can be averaged"
            )
        differ = sorted(
            k for k in set(meta["config"]) | set(first["config"]) if meta["config"].get(k) != first["config"].get(k)
        )
        if differ:
            shown = "; ".join(f"{k}: {first['config'].get(k)!r} vs {meta['config'].get(k)!r}" for k in differ[:4])
            raise SeparationError(
                f"{folder} and {folders[0]} have different model configs ({shown}): only checkpoints of one "
                "config, e.g. a run's epochs or fine-tunes of one model, can be averaged"
            )


def _training_record(folders: list[Path], shares: list[float], digests: list[str], trainings: list[dict]) -> dict:
    """What the averaged checkpoint was made of: the union of its ingredients' training data,
    their common validation data, and one entry per ingredient (its lineage, `training.loop.lineage`,
    and the validation loss it was saved with). Where every ingredient was fine-tuned from the same
    checkpoint (the epochs of one run), that shared ancestry is stated once, as the average's own."""
    parts: list[str] = []
    for t in trainings:
        for part in str(t.get("data", "")).split(" plus "):
            if part and part not in parts:
                parts.append(part)
    ingredients = [lineage(t) for t in trainings]
    shared = {json.dumps([i.get("init_from"), i.get("parent")], sort_keys=True) for i in ingredients}
    common = ingredients[0].get("init_from") is not None and len(shared) == 1
    record = {
        "data": " plus ".join(parts) or "?",
        **({"init_from": ingredients[0]["init_from"]} if common else {}),
        **({"parent": ingredients[0]["parent"]} if common and "parent" in ingredients[0] else {}),
        "averaged_from": [
            {
                **{k: v for k, v in ingredient.items() if not (common and k in ("init_from", "parent"))},
                **({"valid_loss": t["valid"]["valid_loss"]} if "valid_loss" in t.get("valid", {}) else {}),
                "checkpoint": str(folder),
                "weight": round(share, 6),
                "weights": digest,
            }
            for folder, share, digest, ingredient, t in zip(
                folders, shares, digests, ingredients, trainings, strict=True
            )
        ],
        "budget": f"no training of its own: the {'uniform' if len(set(shares)) == 1 else 'weighted'} "
        f"average of the weights of {len(folders)} checkpoints",
    }
    valid = {t.get("valid_data") for t in trainings}
    if len(valid) == 1 and None not in valid:
        record["valid_data"] = valid.pop()
    return record
