"""What `--methods` accepts: reference points computed from the true stems, or any separator.

- `mixture`: the mixture as the estimate of every source (the floor).
- `irm`: oracle ideal ratio mask |S_j| / sum_k |S_k| on the mixture STFT (SiSEC 2018's IRM1,
  n_fft 4096, hop 1024): the ceiling of magnitude masking with the mixture phase.
- `ibm`: oracle ideal binary mask, each time-frequency bin to the loudest source.
- anything else: `separation.Separator.load(...)`, i.e. `dprnn`, `conv1d`, `umxhq`, `umxl`,
  a checkpoint folder or a Hugging Face Hub repo id.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from separation import Separator
from separation.audio import SAMPLE_RATE
from separation.checkpoints import weights_digest
from separation.errors import SeparationError
from separation.spectral import STFT

ORACLES = ("mixture", "irm", "ibm")


def oracle_masks(mix: Tensor, targets: Tensor, kind: str, *, segment_seconds: float = 30.0) -> Tensor:
    """`(C, T)` mixture, `(S, C, T)` true sources -> `(S, C, T)` oracle-masked estimates.

    A 7-minute track's complex spectrograms would take ~6 GB at once, so the track goes through
    in segments whose STFT frames lie on the whole track's frame grid, each with a margin of
    one window on both sides: every output sample sees exactly the frames it would see in a
    single whole-track STFT (and the track's own edges get the same padding), so the result
    equals the whole-track computation up to float rounding, in bounded memory.
    """
    n_fft, hop = 4096, 1024
    stft = STFT(n_fft, hop)
    length = mix.shape[-1]
    step = max(hop, int(segment_seconds * SAMPLE_RATE) // hop * hop)
    out = torch.empty((targets.shape[0], *mix.shape), dtype=mix.dtype)
    for start in range(0, length, step):
        stop = min(length, start + step)
        a, b = max(0, start - n_fft), min(length, stop + n_fft)  # a is a multiple of hop: same frame grid
        mags = stft(targets[..., a:b]).abs()
        if kind == "irm":
            masks = mags / mags.sum(dim=0, keepdim=True).clamp_min(1e-12)
        elif kind == "ibm":
            masks = torch.nn.functional.one_hot(mags.argmax(dim=0), targets.shape[0]).movedim(-1, 0).to(mags.dtype)
        else:
            raise ValueError(kind)
        est = stft.inverse(masks * stft(mix[..., a:b])[None], b - a)
        out[..., start:stop] = est[..., start - a : stop - a]
    return out


@dataclass
class Method:
    """A named way to produce estimates: `estimate(mix (C,T), targets (S,C,T)) -> (S,C,T)`."""

    name: str
    spec: str  # what the user typed
    description: dict
    estimate: Callable[[Tensor, Tensor], Tensor]


def slug(spec: str) -> str:
    """A folder name for a method: `dprnn`, `runs/x/best` -> `runs-x-best`, `user/repo` -> `user-repo`."""
    return re.sub(r"[^A-Za-z0-9_.+=-]+", "-", str(spec).strip("/")).strip("-") or "method"


def split_spec(spec: str) -> tuple[str, str]:
    """A `--methods` entry -> (results folder name, location): `NAME=LOCATION`, or the slug."""
    name, sep, location = spec.partition("=")
    return (name, location) if sep else (slug(spec), spec)


def load_method(
    spec: str, sources: tuple[str, ...], *, device: str = "cpu", wiener: int | None = None, shifts: int = 1
) -> Method:
    """Resolve a `--methods` entry; a name=location pair names the results folder. `shifts`
    applies to models only: an oracle is computed from the true stems, once."""
    name, location = split_spec(spec)
    if location in ORACLES:
        kind = location

        def estimate(mix: Tensor, targets: Tensor) -> Tensor:
            if kind == "mixture":
                return mix.expand_as(targets).clone()
            return oracle_masks(mix, targets, kind)

        return Method(name, spec, {"method": location, "kind": "oracle"}, estimate)

    separator = Separator.load(location, device=device, wiener=wiener, shifts=shifts)
    missing = [s for s in sources if s not in separator.sources]
    if missing:
        raise SeparationError(f"{location} separates {', '.join(separator.sources)}, not {', '.join(missing)}")

    def estimate(mix: Tensor, targets: Tensor) -> Tensor:
        stems = separator.separate(mix, SAMPLE_RATE)
        return torch.stack([stems[s] for s in sources])

    info = separator.info
    description = {
        "method": location,
        "kind": "model",
        "model": info.name,
        "architecture": info.architecture,
        "trained": info.trained,
        "origin": info.origin,
        "wiener": getattr(separator.model, "wiener_iterations", None),
        "shifts": separator.shifts,
        "weights": weights_digest(separator.model),  # `training export --scores` matches checkpoints by it
    }
    if Path(location).exists():
        description["method"] = str(Path(location).resolve())
    return Method(name, spec, description, estimate)
