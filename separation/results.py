"""Evaluation summaries: what `eval` measured, in the form the rest of the project reads it.

`python -m eval` writes, beside each method's museval JSON files, `summary.json`:

    {"method": "dprnn", "weights": "<sha256 of the scored weights, or null for an oracle>",
     "data": "test subset of musdb18hq/", "backend": "fast", "tracks": ["A - Song", ...],
     "medians": {"vocals": {"SDR": 6.1, "SIR": ..., "ISR": ..., "SAR": ..., "SI-SDR": ...}, ...}}

(median over 1-s windows per track, then over tracks). `training export --scores` reads these to
put a checkpoint's scores in its model card, without importing the evaluation code: one small,
stable format between the two packages.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

from .errors import SeparationError
from .files import atomic_write_text

SUMMARY_NAME = "summary.json"


def json_safe(x):
    """`x` with NaN and infinities as None, in nested dicts and lists: JSON has no NaN."""
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    if isinstance(x, dict):
        return {k: json_safe(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [json_safe(v) for v in x]
    return x


def write_summary(folder: str | os.PathLike, summary: dict) -> Path:
    """Write a method folder's summary (NaN medians as null)."""
    return atomic_write_text(Path(folder) / SUMMARY_NAME, json.dumps(json_safe(summary), indent=2) + "\n")


def read_summaries(results: str | os.PathLike) -> dict[str, dict]:
    """{method folder name: summary} of a results folder (`python -m eval ... --out RESULTS`)."""
    results = Path(results)
    if not results.is_dir():
        raise SeparationError(f"{results}: no such results folder")
    summaries = {}
    for path in sorted(results.glob(f"*/{SUMMARY_NAME}")):
        try:
            summaries[path.parent.name] = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise SeparationError(f"{path}: not a summary ({e})") from None
    if not summaries:
        raise SeparationError(
            f"{results}: no {SUMMARY_NAME} in its method folders: run `python -m eval ... --out {results}` first"
        )
    return summaries
