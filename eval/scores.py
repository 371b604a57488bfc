"""Scores of one track: framewise BSSEval v4 + SI-SDR, their medians, and museval's JSON.

    scores = score_track({"vocals": v_ref, "accompaniment": a_ref}, {"vocals": v_est, ...})
    scores.medians()["vocals"]["SDR"]     # median over 1-s windows (NaN windows skipped)
    scores.save("results/dprnn/test/Song.json")   # loads with museval.aggregate tools

Backends: "fast" (`eval.bsseval`, torch, CPU or GPU) and "museval" (the reference
implementation, `museval.evaluate`). Both give the same numbers (see tests/test_eval_metrics.py).
"""

from __future__ import annotations

import importlib.metadata
import json
import math
import os
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path

import numpy as np
import torch

from separation.audio import SAMPLE_RATE
from separation.errors import SeparationError
from separation.files import atomic_write_text

from . import bsseval

BSS_METRICS = ("SDR", "SIR", "ISR", "SAR")
METRICS = (*BSS_METRICS, "SI-SDR")
BACKENDS = ("fast", "museval")


def _bss_museval(references: np.ndarray, estimates: np.ndarray, window: int, hop: int) -> dict[str, np.ndarray]:
    import museval

    # museval catches `np.linalg.linalg.LinAlgError` to fall back to least squares on a singular
    # system; numpy 2 removed that module path, so the fallback itself raised AttributeError.
    # The alias restores museval's intended behaviour (the same exception class).
    if not hasattr(np.linalg, "linalg"):
        np.linalg.linalg = np.linalg

    sdr, isr, sir, sar = museval.evaluate(
        np.moveaxis(references, 1, 2), np.moveaxis(estimates, 1, 2), win=window, hop=hop, mode="v4"
    )
    return {"SDR": sdr, "ISR": isr, "SIR": sir, "SAR": sar}


def framewise(
    references: np.ndarray | torch.Tensor,
    estimates: np.ndarray | torch.Tensor,
    *,
    backend: str = "fast",
    device: str | torch.device = "cpu",
    window: int = SAMPLE_RATE,
    hop: int = SAMPLE_RATE,
) -> dict[str, np.ndarray]:
    """All metrics per source and window: {metric: `(S, N)`}; inputs `(S, C, T)`.

    The fast backend takes the signals as they are (float32 audio stays float32: it converts
    blocks to float64 itself); museval gets float64 copies, as it makes itself.
    """
    if backend not in BACKENDS:
        raise SeparationError(f"unknown metrics backend {backend!r}: choose one of {', '.join(BACKENDS)}")
    # museval does not refuse too-short signals; its numbers there are round-off noise
    bsseval.check_length(*references.shape)
    if backend == "fast":
        values = bsseval.bss_eval(references, estimates, window=window, hop=hop, device=device)  # SI-SDR included
    else:
        refs, ests = (
            np.asarray(x.cpu() if isinstance(x, torch.Tensor) else x, dtype=np.float64) for x in (references, estimates)
        )
        values = _bss_museval(refs, ests, window, hop)
        values["SI-SDR"] = bsseval.si_sdr(refs, ests, window=window, hop=hop)
    return {m: np.asarray(values[m], dtype=np.float64) for m in METRICS}


@dataclass
class TrackScores:
    """Framewise scores of one track: `frames[source][metric]` is a `(N,)` array (dB, NaN allowed)."""

    track: str
    frames: dict[str, dict[str, np.ndarray]]
    window: float = 1.0  # seconds
    hop: float = 1.0
    info: dict = field(default_factory=dict)  # method, backend, ... (extra keys in the JSON)

    @property
    def sources(self) -> list[str]:
        return list(self.frames)

    def medians(self) -> dict[str, dict[str, float]]:
        """Median over windows, skipping NaN windows (museval's `np.nanmedian`); NaN if none.

        Infinite values (a zero error term) are skipped too: museval's JSON stores them as NaN,
        so this is what its aggregation of the saved file gives, and what the table shows."""
        out = {}
        for source, metrics in self.frames.items():
            out[source] = {}
            for m, v in metrics.items():
                finite = v[np.isfinite(v)]
                out[source][m] = float(np.median(finite)) if finite.size else math.nan
        return out

    # ------------------------------------------------------------------ museval JSON

    def to_json(self) -> str:
        """museval's format (`targets` -> `frames` -> `metrics`), SI-SDR as an extra metric.

        Values are quantised to 1e-5 dB and +-inf is stored as NaN, exactly as museval's
        `TrackStore` does, so the two backends' files are interchangeable.
        """

        def q(x: float):
            if not math.isfinite(x):
                return None  # becomes NaN below
            return float(Decimal(repr(float(x))).quantize(Decimal(".00001")))

        targets = []
        for source, metrics in self.frames.items():
            count = len(next(iter(metrics.values())))
            frames = [
                {
                    "time": i * self.hop,
                    "duration": self.window,
                    "metrics": {m: q(metrics[m][i]) for m in metrics},
                }
                for i in range(count)
            ]
            targets.append({"name": source, "frames": frames})
        data = {"targets": targets, "museval_version": _museval_version(), "track": self.track, **self.info}
        text = json.dumps(data, indent=2, allow_nan=True)
        return text.replace(": null", ": NaN")

    @classmethod
    def from_json(cls, text: str, track: str | None = None) -> TrackScores:
        data = json.loads(text)
        frames: dict[str, dict[str, np.ndarray]] = {}
        window = hop = 1.0
        for target in data["targets"]:
            rows = target["frames"]
            names = list(rows[0]["metrics"]) if rows else list(BSS_METRICS)
            frames[target["name"]] = {
                m: np.array([math.nan if r["metrics"].get(m) is None else float(r["metrics"][m]) for r in rows])
                for m in names
            }
            if rows:
                window = float(rows[0]["duration"])
                hop = float(rows[1]["time"] - rows[0]["time"]) if len(rows) > 1 else window
        info = {k: v for k, v in data.items() if k not in ("targets", "museval_version", "track")}
        return cls(track or data.get("track", "?"), frames, window, hop, info)

    def save(self, path: str | os.PathLike) -> Path:
        """Atomic write: a killed run leaves either the whole file or none."""
        return atomic_write_text(path, self.to_json())

    @classmethod
    def load(cls, path: str | os.PathLike) -> TrackScores:
        path = Path(path)
        try:
            return cls.from_json(path.read_text(), track=path.stem)
        except (OSError, ValueError, KeyError, TypeError, IndexError) as exc:
            raise SeparationError(f"{path}: not a museval scores file ({exc})") from exc


def _museval_version() -> str:
    """museval's version for the JSON's `museval_version`, from the package metadata: importing
    museval (2-3 s, for its pandas and jsonschema) only to read it would dominate a fast run."""
    try:
        return importlib.metadata.version("museval")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def score_track(
    references: dict[str, torch.Tensor | np.ndarray], estimates: dict[str, torch.Tensor | np.ndarray], **options
) -> TrackScores:
    """Score the estimates of the sources they share with the references, jointly.

    references/estimates: {source: `(C, T)`} at `sample_rate`. Like museval's
    `eval_mus_track`, all sources are evaluated together (interference is measured against
    the other references), and estimates are cut or zero-padded to the references' length.
    `options` are those of `score_stacked` (track, backend, device, window, hop, sample_rate, info).
    """
    sources = [s for s in references if s in estimates]
    if not sources:
        raise SeparationError(
            f"no source in common: references have {', '.join(references) or 'none'}, "
            f"estimates have {', '.join(estimates) or 'none'}"
        )
    refs = [
        torch.as_tensor(np.asarray(references[s]) if not isinstance(references[s], torch.Tensor) else references[s])
        for s in sources
    ]
    ests = [
        torch.as_tensor(np.asarray(estimates[s]) if not isinstance(estimates[s], torch.Tensor) else estimates[s])
        for s in sources
    ]
    for s, r, e in zip(sources, refs, ests, strict=True):
        if r.ndim != 2 or e.ndim != 2 or r.shape[0] != e.shape[0]:
            raise SeparationError(
                f"{s}: reference {tuple(r.shape)} and estimate {tuple(e.shape)} must be (channels, samples) "
                "with the same number of channels"
            )
    length = min(r.shape[-1] for r in refs)
    if any(r.shape[-1] != length for r in refs):
        raise SeparationError(f"the references differ in length: {[r.shape[-1] for r in refs]} samples")
    ref = torch.stack(refs)
    est = torch.stack([bsseval.pad_or_truncate(ref[0], e) for e in ests])
    return score_stacked(ref, est, sources, **options)


def score_stacked(
    references: torch.Tensor,
    estimates: torch.Tensor,
    sources: list[str],
    *,
    track: str = "track",
    backend: str = "fast",
    device: str | torch.device = "cpu",
    window: float = 1.0,
    hop: float = 1.0,
    sample_rate: int = SAMPLE_RATE,
    info: dict | None = None,
) -> TrackScores:
    """`score_track` for signals already stacked as `(S, C, T)` in `sources` order: no copies
    of whole tracks (a 7-minute stereo pair of sources is 0.3 GB per copy in float32)."""
    for i, s in enumerate(sources):
        if not (torch.isfinite(references[i]).all() and torch.isfinite(estimates[i]).all()):
            raise SeparationError(f"{s}: the reference or the estimate contains NaN or infinite samples")
    ref, est = references, bsseval.pad_or_truncate(references, estimates)
    if ref.dtype != est.dtype:  # float32 audio stays float32 (bss_eval computes in float64 per block)
        ref, est = ref.double(), est.double()
    try:
        values = framewise(
            ref, est, backend=backend, device=device, window=int(window * sample_rate), hop=int(hop * sample_rate)
        )
    except ValueError as exc:  # an all-zero source, or too short: BSSEval is undefined
        raise SeparationError(f"{track}: {exc}") from exc
    frames = {s: {m: values[m][i] for m in METRICS} for i, s in enumerate(sources)}
    return TrackScores(track, frames, window, hop, dict(info or {}, backend=backend))
