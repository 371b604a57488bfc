"""Open-Unmix (Stöter et al. 2019) through the `openunmix` package: umxhq, umxl, or trained here.

The spectrogram network is upstream's `openunmix.model.OpenUnmix`, unchanged, so upstream
weights load into it as they are. One network per predicted source (vocals); the last source
(accompaniment) is the complex residual mixture - vocals, refined by multichannel Wiener EM
exactly as upstream's `Separator(residual=True, niter=1, wiener_win_len=300)`.

Upstream weights are fetched from Zenodo through the torch hub cache
(`$TORCH_HOME/hub/checkpoints/`, default `~/.cache/torch/hub/checkpoints/`) and read with
`torch.load(weights_only=True)`: a tampered download can hold tensors, never code.
"""

from __future__ import annotations

import logging
import os
import pickle
import urllib.error
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import torch
from openunmix.model import OpenUnmix
from torch import Tensor, nn

from ..errors import CheckpointError, WeightsUnavailableError
from ..registry import register_architecture
from .base import MaskModel, ModelInfo

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class UMXConfig:
    # Every source but the last gets its own network; the last is the residual.
    sources: tuple[str, ...] = ("vocals", "accompaniment")
    channels: int = 2
    n_fft: int = 4096
    hop: int = 1024
    hidden_size: int = 512
    nb_layers: int = 3
    max_bin: int = 1487  # 16 kHz bandwidth, upstream's bandwidth_to_max_bin(44100, 4096, 16000)
    wiener_iterations: int = 1  # upstream's default niter
    segment_seconds: float = 30.0


@register_architecture("umx", UMXConfig)
class UMX(MaskModel):
    config_class = UMXConfig
    residual: ClassVar[bool] = True

    def __init__(self, config: UMXConfig = UMXConfig()):
        super().__init__(config)
        c = config
        self.targets = nn.ModuleDict(
            {
                name: OpenUnmix(
                    nb_bins=c.n_fft // 2 + 1,
                    nb_channels=c.channels,
                    hidden_size=c.hidden_size,
                    nb_layers=c.nb_layers,
                    max_bin=c.max_bin,
                )
                for name in c.sources[:-1]
            }
        )

    def estimate(self, mag: Tensor) -> Tensor:
        """`(B, C, F, N)` -> `(B, S-1, C, F, N)` magnitudes of the predicted sources."""
        return torch.stack([net(mag) for net in self.targets.values()], dim=1)


# Upstream's release files (openunmix/__init__.py, umxhq_spec / umxl_spec): vocals target only.
UPSTREAM = {
    "umxhq": {"hidden_size": 512, "url": "https://zenodo.org/records/3370489/files/vocals-b62c91ce.pth"},
    "umxl": {"hidden_size": 1024, "url": "https://zenodo.org/records/5069601/files/vocals-bccbd9aa.pth"},
}


def upstream_cache_path(variant: str) -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints" / UPSTREAM[variant]["url"].rsplit("/", 1)[-1]


def offline() -> bool:
    """`HF_HUB_OFFLINE=1` (huggingface_hub's switch) means no download of any weights at all."""
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def fetch_upstream(variant: str, *, progress: bool = False) -> dict[str, Tensor]:
    """The upstream vocals state dict, from the torch hub cache or downloaded into it."""
    url = UPSTREAM[variant]["url"]
    cached = upstream_cache_path(variant)
    public = f"{variant} weights are not available offline (run `python -m separation download {variant}` where there is internet)"
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
        raise CheckpointError(f"{cached} is damaged or not an Open-Unmix state dict ({e}); delete it and retry") from None


def load_upstream(variant: str) -> tuple[UMX, ModelInfo]:
    spec = UPSTREAM[variant]
    model = UMX(UMXConfig(hidden_size=spec["hidden_size"]))
    state = fetch_upstream(variant)
    net = model.targets["vocals"]
    expected = net.state_dict()
    # Older upstream releases also stored their STFT window; that is the only extra allowed.
    unexpected = [k for k in state if k not in expected and not k.endswith("window")]
    missing = [k for k in expected if k not in state]
    shapes = [k for k in expected if k in state and state[k].shape != expected[k].shape]
    if unexpected or missing or shapes:
        raise CheckpointError(
            f"{upstream_cache_path(variant)} does not fit {variant} (hidden_size {spec['hidden_size']}): "
            f"missing {missing[:3]}, unexpected {unexpected[:3]}, wrong shape {shapes[:3]}"
        )
    net.load_state_dict({k: state[k] for k in expected})
    info = ModelInfo(variant, "umx", trained=True, origin=spec["url"], training={"data": "MUSDB18-HQ" if variant == "umxhq" else "MUSDB18-HQ + extra (non-commercial)"})
    return model.eval(), info
