"""Model cards and the Hugging Face Hub upload of a checkpoint folder.

The card is written into `best/README.md` whenever `best/` is saved, so what is pushed is
exactly the folder that `Separator.from_pretrained` loads, card included.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from separation.checkpoints import CARD_NAME, load_checkpoint, read_config, save_checkpoint, weights_digest
from separation.errors import SeparationError
from separation.models.base import count_parameters
from separation.results import read_summaries

log = logging.getLogger(__name__)


def verdict(test: dict | None, name: str | None = None) -> str:
    """One sentence on how well the model separates, from the measured test scores only."""
    if not test:
        return (
            "It has not been scored on held-out songs yet: "
            "`python -m eval --methods NAME=<this folder>,mixture,irm ...` then "
            "`python -m training export ... --scores RESULTS` puts the measured scores here."
        )
    medians = test["medians"]
    own = medians.get(name) if name else None
    if own is None:  # the model's row is the one that is neither an oracle nor the mixture
        own = next((v for k, v in medians.items() if k not in ("mixture", "irm", "ibm")), None)
    if own is None or "vocals" not in own:
        return "Its test results hold no vocals score."
    vocals = own["vocals"]
    sentence = (
        f"On the {test.get('data', '?')}, {test.get('tracks', '?')} held-out tracks, "
        f"it scores {vocals:.2f} dB vocals SDR"
    )
    quality = None
    if "mixture" in medians and "vocals" in medians["mixture"]:
        gain = vocals - medians["mixture"]["vocals"]
        quality = (
            "a clear separation"
            if gain >= 8
            else "a partial separation"
            if gain >= 3
            else "barely better than the unprocessed mixture"
            if gain >= 0
            else "worse than the unprocessed mixture"
        )
        sentence += f", {gain:+.2f} dB over the mixture itself"
    if "irm" in medians and "vocals" in medians["irm"]:
        sentence += f" and {medians['irm']['vocals'] - vocals:.2f} dB below the ideal ratio mask"
    return sentence + (f": {quality}." if quality else ".")


def _trained_line(training: dict) -> str:
    if training.get("greedy"):
        return (
            f"- weights: a greedy soup, the average of the {len(training['averaged_from'])} of "
            f"{len(training['greedy'])} checkpoints tried (best validation loss first) that did not raise the "
            "soup's validation loss; no training of its own:"
        )
    if training.get("averaged_from"):
        return f"- weights: the average of {len(training['averaged_from'])} checkpoints, no training of its own:"
    return (
        f"- trained for {training.get('epochs', '?')} epochs ({training.get('steps', '?')} steps, "
        f"batch {training.get('batch_size', '?')}, {training.get('chunk_seconds', '?')}-s chunks)"
    )


def _fine_tuned_from(training: dict) -> str:
    """The card's words for a fine-tune's start: its --init-from path and, where recorded (runs
    since 2026-11-28), the SHA-256 of the weights it started from, since the same path may have
    held other weights before or since."""
    digest = (training.get("parent") or {}).get("weights")
    return f"fine-tuned from `{training['init_from']}`" + (f" (sha256 `{digest[:12]}...`)" if digest else "")


def _ingredients(training: dict) -> str:
    """One line per checkpoint an averaged checkpoint was made of (`training.average`)."""
    lines = ""
    for part in training.get("averaged_from", []):
        lines += (
            f"\n  - weight {part['weight']:.3g}: `{part['checkpoint']}` (sha256 `{part['weights'][:12]}...`), "
            + (
                f"trained on {part.get('data', '?')} for "
                if part.get("data") != training.get("data")
                else "trained for "
            )
            + f"{part.get('steps', '?')} steps{_shape(part.get('batch_size'), part.get('chunk_seconds'))}, "
            f"{part.get('budget', 'budget not recorded')}"
            + (f", {_fine_tuned_from(part)}" if part.get("init_from") else "")
            + (f"; validation loss {part['valid_loss']:.3f}" if "valid_loss" in part else "")
        )
    return lines


def _shape(batch: int | None, chunk: float | None) -> str:
    """' (batch 8, 3.0-s chunks)' from what is recorded, '' when neither is."""
    shape = ", ".join([*([f"batch {batch}"] if batch else []), *([f"{chunk}-s chunks"] if chunk else [])])
    return f" ({shape})" if shape else ""


def _averaged_runs(parts: list[dict], indent: str) -> str:
    """How the checkpoints of an average further up the chain were trained, one line per kind
    (data, batch, chunk length, validation data; the epochs of one run are one kind), so that the
    budget of a step that was averaged (e.g. a GPU run's epochs) stays on the card."""
    kinds: dict[tuple, list[dict]] = {}
    for part in parts:
        key = tuple(part.get(k) for k in ("data", "batch_size", "chunk_seconds", "valid_data"))
        kinds.setdefault(key, []).append(part)
    lines = ""
    for (data, batch, chunk, valid), group in kinds.items():
        steps = sorted(p["steps"] for p in group if isinstance(p.get("steps"), int))
        first, last = (steps[0], steps[-1]) if steps else ("?", "?")
        span = f"{first} steps" if first == last else f"{first}-{last} steps"
        longest = max(group, key=lambda p: p.get("steps") if isinstance(p.get("steps"), int) else -1)
        lines += (
            f"\n{indent}- {len(group)} of them trained on {data or '?'} for {span}{_shape(batch, chunk)}"
            + f", the longest {longest.get('budget', 'budget not recorded')}"
            + (f"; validated on {valid}" if valid else "")
        )
    return lines


def model_card(model, training: dict) -> str:
    valid = training.get("valid", {})
    test = training.get("test")
    test_rows = ""
    for t in [test, *training.get("more_tests", [])] if test else []:
        test_rows += (
            f"\n## Test ({t['data']}, {t['tracks']} tracks; "
            "BSSEval v4 SDR, median over 1-s windows then tracks, dB)\n\n"
            "| method | vocals | accompaniment |\n|---|---|---|\n"
            + "\n".join(f"| {m} | {v['vocals']:.2f} | {v['accompaniment']:.2f} |" for m, v in t["medians"].items())
            + "\n"
        )
    if test and test.get("weights"):
        test_rows += f"\nScored weights: sha256 `{test['weights'][:16]}...` (float32, as evaluated).\n"
    scores = "\n".join(f"| {k.removeprefix('valid_')} | {v:.3f} |" for k, v in valid.items()) or "| - | - |"
    synthetic = training.get("data", "").startswith("synthetic")
    world = "training.world" in training.get("data", "")
    summary = verdict(test, test.get("method") if test else None)
    if world:
        summary = (
            "**Trained on songs rendered from sampled instruments, drum kits and synthetic singing** "
            f"(`python -m training.world`), offline, on the budget below. {summary} It is a demo: "
            "real music needs a model trained on MUSDB18-HQ (see the README's recipe)."
        )
    elif synthetic:
        summary = (
            "**Trained on synthetic data** (sung-like vowels over a synthetic band), to demonstrate the pipeline "
            f"offline. {summary} Real music needs a model trained on MUSDB18-HQ."
        )
    budget, node, depth = "", training, 0
    while node:  # this checkpoint, then the chain of checkpoints it was fine-tuned from
        indent = "  " * depth
        if depth == 0:
            # an average's budget is its ingredients', listed by `_ingredients`
            budget += f"\n- budget: {node['budget']}" if node.get("budget") and not node.get("averaged_from") else ""
        elif node.get("averaged_from"):
            budget += (
                f"\n{indent}- the average of {len(node['averaged_from'])} checkpoints (`python -m training average`)"
                + _averaged_runs(node["averaged_from"], indent + "  ")
            )
        else:
            budget += (
                f"\n{indent}- trained on {node.get('data', '?')} for {node.get('steps', '?')} steps"
                f"{_shape(node.get('batch_size'), node.get('chunk_seconds'))}, "
                f"{node.get('budget', 'budget not recorded')}"
                + (f"; validated on {node['valid_data']}" if node.get("valid_data") else "")
            )
        if node.get("init_from"):
            budget += f"\n{indent}- {_fine_tuned_from(node)}" + (":" if node.get("parent") else "")
        node, depth = node.get("parent"), depth + 1
    # the best epoch was chosen on these songs (older checkpoints do not record them)
    valid_line = ""
    if training.get("valid_data"):
        chose = "of the validation losses below" if training.get("averaged_from") else "chose the best epoch"
        valid_line = f"\n- validation data ({chose}): {training['valid_data']}"
    # `datasets` names the datasets trained on; songs generated offline are none
    datasets = "\ndatasets: [musdb18-hq]" if "MUSDB18" in training.get("data", "") else ""
    return f"""---
library_name: pytorch
tags: [audio, music-source-separation, vocals, karaoke, {model.architecture}]{datasets}
---
# {model.architecture}: vocals / accompaniment separation

> {summary}

- architecture: `{model.architecture}` ({count_parameters(model) / 1e6:.2f} M parameters), \
sources {", ".join(model.sources)}
- training data: {training.get("data", "?")}{valid_line}
{_trained_line(training)}{_ingredients(training)}{budget}

## Validation (when this checkpoint was saved; uSDR in dB, loss of the training objective)

| metric | value |
|---|---|
{scores}
{test_rows}
## Use

```python
from separation import Separator

sep = Separator.from_pretrained("<this repo or folder>")
stems = sep.separate(waveform, sample_rate)  # {{"vocals": (2, T), "accompaniment": (2, T)}}
```
or `python -m separation song.mp3 --model <this repo or folder>`.

## Config

```json
{json.dumps(model.config_dict(), indent=2)}
```
"""


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
