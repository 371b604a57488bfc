"""Export and Hugging Face Hub upload of a checkpoint folder (the card itself: `training.card`).

The card is written into `best/README.md` whenever `best/` is saved, so what is pushed is
exactly the folder that `Separator.from_pretrained` loads, card included.
"""

from __future__ import annotations

import logging
from pathlib import Path

from separation.checkpoints import CARD_NAME, load_checkpoint, read_config, save_checkpoint, weights_digest
from separation.errors import SeparationError
from separation.results import read_summaries

from .card import model_card, portable

log = logging.getLogger(__name__)


def run_checkpoint(location: str | Path) -> Path:
    """A run folder (`python -m training --out RUN`) means its `best/`; anything else is taken
    as given (a checkpoint folder, or a Hub repo id for the commands that load one)."""
    folder = Path(location)
    return folder / "best" if (folder / "best").is_dir() else folder


def push_to_hub(checkpoint: str | Path, repo_id: str, *, private: bool = False, token: str | None = None) -> str:
    """Upload a checkpoint folder (config.json, model.safetensors, README.md) to a model repo."""
    from huggingface_hub import HfApi
    from huggingface_hub import errors as hf_errors

    folder = run_checkpoint(checkpoint)
    read_config(folder)  # refuse to upload something that is not a checkpoint
    if not (folder / CARD_NAME).exists():
        raise SeparationError(f"{folder}: no {CARD_NAME} model card")
    api = HfApi(token=token)
    try:
        api.create_repo(repo_id, repo_type="model", private=private, exist_ok=True)
        info = api.upload_folder(
            folder_path=str(folder),
            repo_id=repo_id,
            allow_patterns=["config.json", "model.safetensors", CARD_NAME],
            commit_message=f"Upload {folder.name} checkpoint",
        )
    except (hf_errors.HfHubHTTPError, OSError, ValueError) as e:
        raise SeparationError(f"pushing {folder} to {repo_id} failed: {e}") from None
    return str(getattr(info, "commit_url", repo_id))


def export(
    source: str | Path,
    dest: str | Path,
    *,
    half: bool = True,
    scores: str | Path | None = None,
    method: str | None = None,
) -> Path:
    """Copy a run's best checkpoint (or any checkpoint) to `dest`, optionally in float16 and
    with held-out test scores in its config and model card.

    `scores` is an `eval` results folder (`python -m eval ... --out DIR`). The scores taken are
    those of the method whose recorded weights (`weights` in its method.json, a SHA-256 of the
    state dict) are this checkpoint's: scores of another model are refused, not copied into the
    card. `method` names the folder to use when several hold these weights.
    """

    model, info = load_checkpoint(run_checkpoint(source))
    training = dict(info.training)
    if scores:
        digest = weights_digest(model)
        records = [
            _test_record(Path(s), digest, method) for s in ([scores] if isinstance(scores, (str, Path)) else scores)
        ]
        training["test"] = records[0]
        if records[1:]:
            training["more_tests"] = records[1:]
    return save_release(model, dest, training, half=half)


def save_release(model, dest: str | Path, training: dict, *, half: bool) -> Path:
    """Save a checkpoint meant to leave this machine (an export, an average): its record without
    local folders (`card.portable`), and the card written from that record."""
    training = portable(training)
    return save_checkpoint(model, dest, training=training, half=half, card=model_card(model, training))


def _test_record(scores: Path, digest: str, method: str | None) -> dict:
    """The test scores of these weights in one eval results folder, with the mixture and IRM
    scored on the same tracks as reference points."""
    summaries = read_summaries(scores)
    name = _scored_method(scores, summaries, digest, method)
    own = summaries[name]
    medians = {}
    for m in ("mixture", "irm", name):
        if m in summaries and summaries[m].get("tracks") == own["tracks"]:
            medians[m] = {
                s: row["SDR"] for s, row in summaries[m]["medians"].items() if s in ("vocals", "accompaniment")
            }
    return {
        "data": own.get("data") or f"{scores.resolve().name}/ (eval results)",
        "tracks": len(own["tracks"]),
        "method": name,
        "weights": digest,
        "backend": own.get("backend"),
        "medians": medians,
    }


def _scored_method(scores: Path, summaries: dict, digest: str, method: str | None) -> str:
    """The results folder whose summary records these weights."""
    recorded = {name: summary.get("weights") for name, summary in summaries.items()}
    if method is not None:
        if method not in summaries:
            raise SeparationError(f"{scores} has no results of {method!r} (it has {', '.join(summaries) or 'none'})")
        if recorded[method] != digest:
            what = (
                f"weights {recorded[method][:12]}..." if recorded[method] else "no record of its weights (re-run eval)"
            )
            raise SeparationError(
                f"{scores / method} holds scores of other weights ({what}), not of this checkpoint "
                f"({digest[:12]}...): evaluate this checkpoint, e.g. --methods NAME=<checkpoint>"
            )
        return method
    matching = [name for name, d in recorded.items() if d == digest]
    if not matching:
        known = ", ".join(f"{n} ({(d or 'unrecorded')[:12]})" for n, d in recorded.items()) or "none"
        raise SeparationError(
            f"no results in {scores} are of this checkpoint (weights {digest[:12]}...; there: {known}): "
            "evaluate it first, e.g. `python -m eval --methods mine=<checkpoint>,mixture,irm ... --out "
            f"{scores}`"
        )
    if len(matching) > 1:
        log.info(
            "results of these weights in %s: %s; using %s (choose with --method)",
            scores,
            ", ".join(matching),
            matching[0],
        )
    return matching[0]
