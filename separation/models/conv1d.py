"""A time-domain baseline: four 1-D convolutions on the raw stereo waveform.

    mix (B, C, T) -> Conv1d(C->32, k15) ReLU -> Conv1d(32->64, k15) ReLU
                  -> Conv1d(64->32, k15) ReLU -> Conv1d(32->C, k15) -> vocals (B, C, T)
    accompaniment = mix - vocals

A reference point for the results table, not a separator anyone should use: its receptive
field is 57 samples (1.3 ms), far too short to tell a voice from a guitar.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from .base import SeparationModel


@dataclass(frozen=True)
class Conv1DConfig:
    # The network predicts every source but the last; the last is the mixture minus the others.
    sources: tuple[str, ...] = ("vocals", "accompaniment")
    channels: int = 2
    hidden: tuple[int, ...] = (32, 64, 32)
    kernel_size: int = 15
    segment_seconds: float = 6.0

    def __post_init__(self):
        if self.kernel_size % 2 != 1:
            raise ValueError(f"kernel_size must be odd (same-length output), not {self.kernel_size}")
        if len(self.sources) < 2:
            raise ValueError("conv1d needs at least two sources (the last one is the residual)")


class Conv1D(SeparationModel):
    architecture = "conv1d"
    config_class = Conv1DConfig

    def __init__(self, config: Conv1DConfig = Conv1DConfig()):
        super().__init__(config)
        c = config
        predicted = len(c.sources) - 1
        widths = [c.channels, *c.hidden, c.channels * predicted]
        layers: list[nn.Module] = []
        for i, (w_in, w_out) in enumerate(zip(widths[:-1], widths[1:], strict=True)):
            layers.append(nn.Conv1d(w_in, w_out, c.kernel_size, padding=c.kernel_size // 2))
            if i < len(widths) - 2:
                layers.append(nn.ReLU())
        self.net = nn.Sequential(*layers)

    def forward(self, mix: Tensor) -> Tensor:
        """`(B, C, T)` -> `(B, S, C, T)`; the stems add up to the mixture exactly."""
        batch, channels, length = mix.shape
        predicted = self.net(mix).reshape(batch, -1, channels, length)
        residual = mix - predicted.sum(dim=1)
        return torch.cat([predicted, residual.unsqueeze(1)], dim=1)
