"""Model cards and the Hugging Face Hub upload of a checkpoint folder.

The card is written into `best/README.md` whenever `best/` is saved, so what is pushed is
exactly the folder that `Separator.from_pretrained` loads, card included.
"""

from __future__ import annotations

import json
from pathlib import Path

from separation.checkpoints import CARD_NAME, read_config
from separation.errors import SeparationError
from separation.models.base import count_parameters


def model_card(model, training: dict) -> str:
    valid = training.get("valid", {})
    test = training.get("test")
    test_rows = ""
    if test:
        test_rows = (
            f"\n## Test ({test['data']}; BSSEval v4 SDR, median over 1-s windows then tracks, dB)\n\n"
            "| method | vocals | accompaniment |\n|---|---|---|\n"
            + "\n".join(f"| {m} | {v['vocals']:.2f} | {v['accompaniment']:.2f} |" for m, v in test["medians"].items())
            + "\n"
        )
    scores = "\n".join(f"| {k.removeprefix('valid_')} | {v:.3f} |" for k, v in valid.items()) or "| - | - |"
    synthetic = training.get("data", "").startswith("synthetic")
    warning = (
        "\n> **Trained on synthetic data** (sung-like vowels over a synthetic band), to demonstrate the pipeline "
        "offline. It separates the synthetic songs well and real songs poorly: for real music, train on MUSDB18-HQ.\n"
        if synthetic
        else ""
    )
    return f"""---
library_name: pytorch
tags: [audio, music-source-separation, vocals, karaoke, {model.architecture}]
datasets: [{'synthetic' if synthetic else 'musdb18-hq'}]
---
# {model.architecture}: vocals / accompaniment separation
{warning}
- architecture: `{model.architecture}` ({count_parameters(model) / 1e6:.2f} M parameters), sources {', '.join(model.sources)}
- training data: {training.get('data', '?')}
- trained for {training.get('epochs', '?')} epochs ({training.get('steps', '?')} steps, batch {training.get('batch_size', '?')}, {training.get('chunk_seconds', '?')}-s chunks)

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


def push_to_hub(checkpoint: str | Path, repo_id: str, *, private: bool = False, token: str | None = None) -> str:
    """Upload a checkpoint folder (config.json, model.safetensors, README.md) to a model repo."""
    from huggingface_hub import HfApi
    from huggingface_hub import errors as hf_errors

    folder = Path(checkpoint)
    if (folder / "best").is_dir():  # a run folder: push its best checkpoint
        folder = folder / "best"
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


def export(source: str | Path, dest: str | Path, *, half: bool = True, scores: str | Path | None = None, method: str | None = None) -> Path:
    """Copy a run's best checkpoint (or any checkpoint) to `dest`, optionally in float16 and
    with held-out test scores (an `eval` results folder: `python -m eval ... --out DIR`) in
    its config and model card: SDR medians of the method and of `mixture`/`irm` if present."""
    from separation.checkpoints import load_checkpoint, save_checkpoint

    folder = Path(source)
    if (folder / "best").is_dir():
        folder = folder / "best"
    model, info = load_checkpoint(folder)
    training = dict(info.training)
    if scores:
        from eval.run import load_results, medians_table

        results = load_results(scores)
        name = method or model.architecture
        if name not in results:
            raise SeparationError(f"{scores} has no results of {name!r} (it has {', '.join(results)}): pass --method NAME")
        table = medians_table(results, sorted(results[name]))
        keep = [m for m in ("mixture", "irm", name) if m in table]
        medians = {m: {s: table[m][s]["SDR"] for s in ("vocals", "accompaniment") if s in table[m]} for m in keep}
        record = Path(scores) / name / "method.json"
        data = json.loads(record.read_text()).get("data") if record.exists() else None
        training["test"] = {
            "data": data or f"{Path(scores).resolve().name}/ (eval results)",
            "tracks": len(results[name]),
            "medians": medians,
        }
    return save_checkpoint(model, dest, training=training, half=half, card=model_card(model, training))
