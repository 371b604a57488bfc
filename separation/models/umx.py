"""Open-Unmix (Stöter et al. 2019) through the `openunmix` package: umxhq, umxl, or trained here.

The spectrogram network is upstream's `openunmix.model.OpenUnmix`, unchanged, so upstream
weights load into it as they are (`separation.pretrained` fetches them). One network per
predicted source (vocals); the last source (accompaniment) is the complex residual mixture -
vocals, refined by multichannel Wiener EM exactly as upstream's
`Separator(residual=True, niter=1, wiener_win_len=300)`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from openunmix.model import OpenUnmix
from torch import Tensor, nn

from .base import MaskModel


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


class UMX(MaskModel):
    architecture = "umx"
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

    def set_input_statistics(self, mag: Tensor) -> None:
        """Per-bin mean and std of the channel-mean magnitude, as upstream's training does."""
        c = self.config
        x = mag.mean(dim=1)[:, : c.max_bin].transpose(1, 2).reshape(-1, c.max_bin)
        for net in self.targets.values():
            net.input_mean.copy_(-x.mean(dim=0))
            net.input_scale.copy_(1.0 / (x.std(dim=0) + 1e-5))
