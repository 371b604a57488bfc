"""What every separation model is to the rest of the project.

A model maps a batch of stereo mixture segments to one waveform per source:
`(B, C, T) -> (B, S, C, T)`. That single contract is what lets one `Separator` (and one
overlap-add chunker) drive a time-domain Conv1D, a spectrogram DPRNN and Open-Unmix alike.

Time-frequency models subclass `MaskModel`, which owns the STFT, the iSTFT and the optional
Wiener/EM refinement, so an architecture only has to say how it estimates magnitudes.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, ClassVar

from torch import Tensor, nn

from ..audio import SAMPLE_RATE
from ..spectral import STFT, wiener_filter


class SeparationModel(nn.Module):
    """Base class: a frozen config dataclass in, `(B, C, T) -> (B, S, C, T)` out.

    Subclasses name their `architecture` (what checkpoints record) and `config_class`; the
    table of architectures is built in `separation.models` from the classes themselves.
    Training calls the hooks below, never looks inside a model.
    """

    architecture: ClassVar[str]
    config_class: ClassVar[type]
    sample_rate: ClassVar[int] = SAMPLE_RATE
    supports_wiener: ClassVar[bool] = False

    def __init__(self, config: Any):
        super().__init__()
        if not isinstance(config, self.config_class):
            raise TypeError(f"{type(self).__name__} needs a {self.config_class.__name__}, got {type(config).__name__}")
        self.config = config
        self.wiener_iterations = 0

    @property
    def sources(self) -> tuple[str, ...]:
        return tuple(self.config.sources)

    @property
    def segment_seconds(self) -> float:
        """Preferred length of the segments the chunker feeds this model."""
        return float(self.config.segment_seconds)

    @property
    def min_samples(self) -> int:
        """Shortest input the model accepts (segments are zero-padded up to it)."""
        return 1

    def config_dict(self) -> dict:
        return dataclasses.asdict(self.config)

    def forward(self, mix: Tensor) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    # ------------------------------------------------------------------ training hooks

    def init_from_data(self, mix: Tensor) -> None:
        """Set data-dependent parameters from a batch of training mixtures `(B, C, T)` before
        training (input normalisation); nothing by default."""


class MaskModel(SeparationModel):
    """A time-frequency model: STFT -> magnitude estimates -> (Wiener) -> iSTFT.

    Subclasses implement `estimate(mag)`: `(B, C, F, N)` mixture magnitude ->
    `(B, S, C, F, N)` source magnitudes. Their config has `n_fft`, `hop` and
    `wiener_iterations` (the default number of EM steps; the Separator may override it).
    """

    supports_wiener: ClassVar[bool] = True
    # True: `estimate` returns all sources but the last, which is the complex residual.
    residual: ClassVar[bool] = False

    def __init__(self, config: Any):
        super().__init__(config)
        self.stft = STFT(config.n_fft, config.hop)
        self.wiener_iterations = int(config.wiener_iterations)

    @property
    def min_samples(self) -> int:
        return self.config.n_fft

    def estimate(self, mag: Tensor) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def init_from_data(self, mix: Tensor) -> None:
        self.set_input_statistics(self.stft(mix).abs())

    def set_input_statistics(self, mag: Tensor) -> None:
        """Input normalisation from training mixture magnitudes `(B, C, F, N)`; nothing by default."""

    def training_magnitudes(self, mag: Tensor, augment: Callable[[Tensor], Tensor] | None = None) -> Tensor:
        """The magnitudes the training objective scores: `(B, C, F, N)` -> `(B, S', C, F, N)`.
        `augment` (SpecAugment) is for models that can use it on their input; by default the
        model's plain estimate."""
        return self.estimate(mag)

    def forward(self, mix: Tensor) -> Tensor:
        """`(B, C, T)` mixture -> `(B, S, C, T)` source waveforms."""
        spec = self.stft(mix)
        mag = spec.abs()
        stems = wiener_filter(
            self.estimate(mag), spec, self.wiener_iterations, residual=self.residual, mix_magnitude=mag
        )
        return self.stft.inverse(stems, mix.shape[-1])


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@dataclasses.dataclass(frozen=True)
class ModelInfo:
    """Where a loaded model came from, for logs, the app and result files."""

    name: str  # what the user asked for: "dprnn", "umxhq", "user/repo", "runs/x/best"
    architecture: str
    trained: bool  # False: random weights, the output is not a separation
    origin: str  # checkpoint folder, Hub repo@revision, upstream URL, or "random init"
    training: dict = dataclasses.field(default_factory=dict)  # data, steps, scores (from config.json)
