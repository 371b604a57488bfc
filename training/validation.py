"""Whole-track validation: the score that chooses a run's best epoch (`training.loop`) and the
ingredients of a greedy model soup (`training.average`).

    valid = ValidationSet.from_musdb("data/musdb18hq", is_wav=True)
    record, _ = validate(model, valid, LossConfig(), torch.device("cpu"))
    record["valid_loss"], record["valid_usdr_vocals"]

Each validation track goes whole through the inference chunker (`overlap_add`), as a user's
song would, without Wiener EM: the training objective's own estimate. The loss is the
training loss (`whole_track_spectral_loss`), summed a segment of STFT frames at a time.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np
import torch

from separation.errors import SeparationError
from separation.models.base import MaskModel
from separation.separator import overlap_add
from separation.tracks import TARGETS, load_track, open_musdb
from songgen.describe import describe_generated

from .losses import LossConfig, whole_track_spectral_loss

VALID_CACHE_BYTES = 1 << 30  # whole validation tracks kept in memory between passes


def usdr(estimate: torch.Tensor, reference: torch.Tensor, block: int = 1 << 20) -> float:
    """Utterance-level SDR in dB (the MDX challenge's "SDR"): one number per track, fast.
    Reported as validation progress; BSSEval v4 medians come from `eval`. Summed in float64
    a block of samples at a time (no float64 copy of a whole track)."""
    num = den = 1e-9
    for a in range(0, reference.shape[-1], block):
        ref = reference[..., a : a + block].double()
        num += float(ref.square().sum())
        den += float((ref - estimate[..., a : a + block].double()).square().sum())
    return 10 * math.log10(num / den)


class ValidationSet:
    """The validation tracks of a MUSDB-shaped folder, `(name, mixture (C, T), targets (S, C, T))`
    one at a time. Tracks stay in memory between passes up to `cache_bytes` in all; the others
    are read again each pass (musdb's 14 validation tracks of MUSDB18-HQ are ~2 GB as float32,
    a 7-minute one ~0.45 GB), so memory is bounded whatever the folder holds."""

    def __init__(self, tracks: list, description: str, cache_bytes: int = VALID_CACHE_BYTES):
        self.tracks, self.description, self.cache_bytes = tracks, description, cache_bytes
        self._cache: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        self._cached_bytes = 0

    @classmethod
    def from_musdb(cls, root: str, *, is_wav: bool, limit: int | None = None) -> ValidationSet:
        """musdb's validation split of `root` (its first `limit` tracks)."""
        tracks = open_musdb(root, is_wav=is_wav, subset="train", split="valid")
        if limit:
            tracks = tracks[:limit]
        described = describe_generated(root, tracks=len(tracks), kind="validation")
        return cls(tracks, described or f"{len(tracks)} of musdb's validation tracks of {musdb_name(is_wav)}")

    def __len__(self) -> int:
        return len(self.tracks)

    def __iter__(self) -> Iterator[tuple[str, torch.Tensor, torch.Tensor]]:
        for track in self.tracks:
            cached = self._cache.get(track.name)
            if cached is not None:
                yield (track.name, *cached)
                continue
            mix, targets = load_track(track)
            size = (mix.numel() + targets.numel()) * 4
            if self._cached_bytes + size <= self.cache_bytes:
                self._cache[track.name] = (mix, targets)
                self._cached_bytes += size
            yield track.name, mix, targets
            del mix, targets


@torch.no_grad()
def validate(
    model, tracks, loss: LossConfig, device: torch.device, keep_samples: int = 0
) -> tuple[dict[str, float], tuple | None]:
    """`({"valid_loss", "valid_usdr_<source>"...}, examples)` of `model` on `tracks` (an iterable
    of `(name, mixture, targets)`, e.g. a `ValidationSet`): the mean loss over tracks and the
    median uSDR per source. `examples` is `(mix, estimate, targets)` of the first `keep_samples`
    samples of the first track (what TensorBoard shows), or None. The model's mode and Wiener
    iterations are restored."""
    was_training, em = model.training, getattr(model, "wiener_iterations", 0)
    model.eval()
    model.wiener_iterations = 0
    losses, sdrs, examples = [], {s: [] for s in TARGETS}, None
    try:
        for _, mix, targets in tracks:
            est = overlap_add(
                model,
                mix,
                segment=int(model.segment_seconds * model.sample_rate),
                device=device,
                min_length=model.min_samples,
            )
            if isinstance(model, MaskModel):  # a segment at a time, with the model's STFT (on its device)
                losses.append(whole_track_spectral_loss(est, targets, mix, model.stft, loss))
            else:
                losses.append(float((est - targets).square().mean()))
            for i, s in enumerate(TARGETS):
                sdrs[s].append(usdr(est[i], targets[i]))
            if examples is None and keep_samples:
                examples = tuple(x[..., :keep_samples].clone() for x in (mix, est, targets))
            del est
    finally:
        model.wiener_iterations = em
        model.train(was_training)
    if not losses:
        raise SeparationError("no validation tracks to validate on")
    out = {"valid_loss": float(np.mean(losses))}
    out.update({f"valid_usdr_{s}": float(np.median(v)) for s, v in sdrs.items()})
    return out, examples


def musdb_name(is_wav: bool) -> str:
    return "MUSDB18-HQ" if is_wav else "MUSDB18"
