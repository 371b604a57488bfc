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
import os
from pathlib import Path

import torch

from separation.checkpoints import load_checkpoint, read_config, resolve, save_checkpoint, weights_digest
from separation.errors import SeparationError

from .hub import model_card, run_checkpoint
from .loop import lineage


def average_checkpoints(
    sources: list[str | os.PathLike],
    dest: str | os.PathLike,
    *,
    weights: list[float] | None = None,
    half: bool = False,
) -> Path:
    """Write to `dest` a checkpoint whose every floating-point tensor is the weighted mean
    (uniform by default) of the same tensor in `sources`, computed in float64.

    Integer tensors (e.g. BatchNorm's `num_batches_tracked`) are counters, not weights: the
    first source's are kept. The config records the ingredients (folder, weight, SHA-256 of
    their weights, their lineage), so the average says exactly what it is made of.
    """
    if len(sources) < 2:
        raise SeparationError(f"averaging needs at least two checkpoints, got {len(sources)}")
    shares = _normalised(weights, len(sources))
    folders = [resolve(run_checkpoint(s)) for s in sources]  # a Hub repo id: downloaded here
    target = Path(dest).resolve()
    for folder in folders:  # `dest` is replaced whole: it must not be, or hold, an ingredient
        if folder.resolve() == target or target in folder.resolve().parents:
            raise SeparationError(
                f"{dest} holds {folder}, one of the checkpoints to average; writing the average there would "
                "replace it: write it elsewhere"
            )
    _check_compatible(folders)
    # One checkpoint in memory at a time beside the float64 sums: averaging the 20 epoch
    # snapshots of a run costs the memory of four models (sums, first, current), not of twenty.
    model, sums, digests, trainings = None, {}, [], []
    for folder, share in zip(folders, shares, strict=True):
        loaded, info = load_checkpoint(folder)
        state = loaded.state_dict()
        bad = [k for k, t in state.items() if t.is_floating_point() and not torch.isfinite(t).all()]
        if bad:
            raise SeparationError(f"{folder}: non-finite weights in {', '.join(bad[:3])} (a diverged run?)")
        digests.append(weights_digest(loaded))
        trainings.append(info.training)
        for key, tensor in state.items():
            if tensor.is_floating_point():
                sums[key] = sums.get(key, 0) + share * tensor.double()
        if model is None:
            model = loaded  # the first holds the result (and keeps its integer counters)
    reference = model.state_dict()
    model.load_state_dict({k: sums[k].to(v.dtype) if k in sums else v for k, v in reference.items()}, strict=True)
    training = _training_record(folders, shares, digests, trainings)
    return save_checkpoint(model, dest, training=training, half=half, card=model_card(model, training))


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
