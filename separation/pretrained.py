"""Named models -> their weights: what `Separator.from_name` and the CLI's `--model` accept.

    dprnn, conv1d   a checkpoint folder or Hub repo from `$DPRNN_REPO` / `$CONV1D_REPO`, else
                    the one shipped inside the package (`separation/weights/`), else random
                    weights (said loudly)
    umxhq, umxl     Open-Unmix's own release files (Zenodo), through the torch hub cache

Each name resolves through a small resolver object (as Demucs' `pretrained.py` does), above
the checkpoint code: `load()` gives (model, ModelInfo), `local()` says whether the weights are
on this machine now (no network).

Upstream Open-Unmix weights are read with `torch.load(weights_only=True)`: a tampered download
can hold tensors, never code. `HF_HUB_OFFLINE=1` (huggingface_hub's switch) means no download
of any weights at all.
"""

from __future__ import annotations

import logging
import os
import pickle
import urllib.error
import zipfile
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from .checkpoints import CONFIG_NAME, check_state_dict, load_checkpoint
from .errors import CheckpointError, UnknownModelError, WeightsUnavailableError
from .models import ModelInfo, SeparationModel, build_model
from .models.umx import UMX, UMXConfig

log = logging.getLogger(__name__)

# The demo checkpoints travel with the package (package data), so that an installed copy finds
# them wherever it is installed; `SEPARATION_WEIGHTS` points elsewhere (tests: an empty folder).
WEIGHTS_DIR = Path(os.environ.get("SEPARATION_WEIGHTS", Path(__file__).resolve().parent / "weights"))

# Upstream's release files (openunmix/__init__.py, umxhq_spec / umxl_spec): vocals target only.
UPSTREAM = {
    "umxhq": {"hidden_size": 512, "url": "https://zenodo.org/records/3370489/files/vocals-b62c91ce.pth"},
    "umxl": {"hidden_size": 1024, "url": "https://zenodo.org/records/5069601/files/vocals-bccbd9aa.pth"},
}


def offline() -> bool:
    """`HF_HUB_OFFLINE=1` means no download of any weights at all."""
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


# --------------------------------------------------------------------------- resolvers


@dataclass(frozen=True)
class ShippedCheckpoint:
    """A Hub repo or folder from `$env`, else the checkpoint shipped in the package, else random weights."""

    name: str
    architecture: str
    env: str  # the variable naming a Hub repo or folder that overrides the shipped weights

    @property
    def shipped(self) -> Path:
        return WEIGHTS_DIR / self.name

    def load(self) -> tuple[SeparationModel, ModelInfo]:
        location = os.environ.get(self.env)
        if location:
            return load_checkpoint(location, name=self.name)
        if (self.shipped / CONFIG_NAME).exists():
            return load_checkpoint(self.shipped, name=self.name)
        log.warning(
            "%s: no trained checkpoint (set %s or add %s); using RANDOM weights", self.name, self.env, self.shipped
        )
        model = build_model(self.architecture)
        return model.eval(), ModelInfo(self.name, self.architecture, trained=False, origin="random init")

    def local(self) -> str:
        location = os.environ.get(self.env)
        if location:
            return f"${self.env} = {location}" + (
                "" if Path(location).expanduser().exists() else " (Hub repo: cached or not)"
            )
        return "shipped checkpoint" if (self.shipped / CONFIG_NAME).exists() else "none (random init)"


@dataclass(frozen=True)
class UpstreamUMX:
    """Open-Unmix's release weights, fetched once into the torch hub cache."""

    name: str  # umxhq or umxl

    @property
    def architecture(self) -> str:
        return UMX.architecture

    @property
    def env(self) -> None:
        return None

    def load(self) -> tuple[SeparationModel, ModelInfo]:
        return load_upstream(self.name)

    def local(self) -> str:
        return "in the torch hub cache" if upstream_cache_path(self.name).exists() else "not downloaded"


@dataclass(frozen=True)
class NamedModel:
    name: str
    description: str
    resolver: ShippedCheckpoint | UpstreamUMX

    @property
    def architecture(self) -> str:
        return self.resolver.architecture

    @property
    def env(self) -> str | None:
        return self.resolver.env

    def load(self) -> tuple[SeparationModel, ModelInfo]:
        return self.resolver.load()


NAMED_MODELS: dict[str, NamedModel] = {
    m.name: m
    for m in [
        NamedModel(
            "dprnn",
            "Dual-Path RNN, stereo log-magnitude masks (Luo et al. 2020, trained here)",
            ShippedCheckpoint("dprnn", "dprnn", "DPRNN_REPO"),
        ),
        NamedModel(
            "conv1d",
            "time-domain Conv1D baseline (4 layers, 1.3-ms receptive field)",
            ShippedCheckpoint("conv1d", "conv1d", "CONV1D_REPO"),
        ),
        NamedModel("umxhq", "Open-Unmix umxhq (MUSDB18-HQ), vocals + residual", UpstreamUMX("umxhq")),
        NamedModel("umxl", "Open-Unmix umxl (extra data, non-commercial), vocals + residual", UpstreamUMX("umxl")),
    ]
}


def get_named_model(name: str) -> NamedModel:
    if name not in NAMED_MODELS:
        raise UnknownModelError(
            f"unknown model {name!r}: choose one of {', '.join(NAMED_MODELS)}, or a checkpoint folder or Hub repo id"
        )
    return NAMED_MODELS[name]


# --------------------------------------------------------------------------- Open-Unmix release files


def upstream_cache_path(variant: str) -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints" / UPSTREAM[variant]["url"].rsplit("/", 1)[-1]


def fetch_upstream(variant: str, *, progress: bool = False) -> dict[str, Tensor]:
    """The upstream vocals state dict, from the torch hub cache or downloaded into it."""
    url = UPSTREAM[variant]["url"]
    cached = upstream_cache_path(variant)
    public = (
        f"{variant} weights are not available offline "
        f"(run `python -m separation download {variant}` where there is internet)"
    )
    if not cached.exists() and offline():
        raise WeightsUnavailableError(
            f"{variant} weights are not cached at {cached}, and HF_HUB_OFFLINE is set: no download was tried. "
            f"Run `python -m separation download {variant}` where there is internet, or put the file there by hand",
            public=public,
        )
    if not cached.exists():
        log.info("downloading %s weights from %s to %s", variant, url, cached)
        cached.parent.mkdir(parents=True, exist_ok=True)
        try:
            # Downloads to a temporary file and renames it when complete, so an interrupted
            # download never poses as a cached file.
            torch.hub.download_url_to_file(url, str(cached), progress=progress)
        except (urllib.error.URLError, ConnectionError, TimeoutError, OSError) as e:
            reason = getattr(e, "reason", e)
            raise WeightsUnavailableError(
                f"{variant} weights are not cached at {cached} and could not be downloaded from {url} ({reason}). "
                f"Run `python -m separation download {variant}` where there is internet, or put the file there by hand",
                public=public,
            ) from None
    try:
        return torch.load(cached, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, zipfile.BadZipFile, ValueError) as e:
        raise CheckpointError(
            f"{cached} is damaged or not an Open-Unmix state dict ({e}); delete it and retry"
        ) from None


def load_upstream(variant: str) -> tuple[UMX, ModelInfo]:
    spec = UPSTREAM[variant]
    model = UMX(UMXConfig(hidden_size=spec["hidden_size"]))
    net = model.targets["vocals"]
    # Older upstream releases also stored their STFT window; that is the only extra allowed.
    state = {
        k: v for k, v in fetch_upstream(variant).items() if not (k.endswith("window") and k not in net.state_dict())
    }
    check_state_dict(
        net, state, f"{upstream_cache_path(variant)} does not fit {variant} (hidden_size {spec['hidden_size']})"
    )
    net.load_state_dict(state)
    data = "MUSDB18-HQ" if variant == "umxhq" else "MUSDB18-HQ + extra (non-commercial)"
    return model.eval(), ModelInfo(variant, UMX.architecture, trained=True, origin=spec["url"], training={"data": data})
