"""Dual-Path RNN mask estimator on stereo log-magnitude spectrograms.

After Luo, Chen & Yoshioka, "Dual-path RNN: efficient long sequence modeling for time-domain
single-channel speech separation" (ICASSP 2020, arXiv:1910.06379), on the STFT as Open-Unmix
(Stoeter et al. 2019) rather than on learned time-domain bases:

    |X| (B, C, F, N)
      -> log, per-bin affine, crop to `max_bin`      (B, N, C*Fb)
      -> linear encoder + LayerNorm                   (B, D, N)
      -> overlapping chunks of K frames, hop K/2      (B, D, K, S)
      -> `num_blocks` x DualPathBlock:
           intra-chunk BiLSTM over K (local patterns) + residual,
           inter-chunk BiLSTM over S (long-range structure) + residual
      -> overlap-add back to frames                    (B, D, N)
      -> conv head: PReLU, Conv1d(k=3), ReLU, Conv1d(k=1) -> one mask per source, channel, bin
      -> masks (softmax over sources, or sigmoid) * |X| (B, S, C, F, N)

Legend: B batch, C audio channels, F frequency bins, Fb bins fed to the network, N frames,
D feature size, K chunk length in frames, S number of chunks, S' sources.

Non-causal: every frame sees the whole segment in both directions.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .base import MaskModel


@dataclass(frozen=True)
class DPRNNConfig:
    sources: tuple[str, ...] = ("vocals", "accompaniment")
    channels: int = 2
    n_fft: int = 4096
    hop: int = 1024
    # Bins fed to the network: 1487 of 2049 is 16 kHz at n_fft 4096, Open-Unmix's bandwidth.
    # Masks are still predicted for every bin, so nothing above 16 kHz is thrown away.
    max_bin: int = 1487
    feature_dim: int = 128
    hidden_size: int = 128  # per LSTM direction
    num_blocks: int = 4
    chunk_size: int = 50  # frames per chunk: ~1.2 s at hop 1024
    head_kernel: int = 3
    mask: str = "softmax"  # "softmax": masks sum to 1, so the stems add up to the mixture
    dropout: float = 0.0
    wiener_iterations: int = 1  # EM steps after masking, as Open-Unmix's default
    segment_seconds: float = 20.0  # chunker segment at inference

    def __post_init__(self):
        if self.mask not in ("softmax", "sigmoid"):
            raise ValueError(f"mask must be 'softmax' or 'sigmoid', not {self.mask!r}")
        if self.mask == "softmax" and len(self.sources) < 2:
            raise ValueError("a softmax mask needs at least two sources")
        if self.chunk_size < 2 or self.chunk_size % 2:
            raise ValueError(f"chunk_size must be an even number >= 2, not {self.chunk_size}")
        if not 0 < self.max_bin <= self.n_fft // 2 + 1:
            raise ValueError(f"max_bin must be in 1..{self.n_fft // 2 + 1}, not {self.max_bin}")


def chunk_frames(x: Tensor, size: int) -> Tensor:
    """`(B, D, N)` -> `(B, D, K, S)`: 50%-overlapping chunks, zero-padded by K at both ends
    so that every frame lies in exactly two chunks."""
    batch, dim, _ = x.shape
    chunks = F.unfold(x.unsqueeze(-1), kernel_size=(size, 1), padding=(size, 0), stride=(size // 2, 1))
    return chunks.reshape(batch, dim, size, -1)


def merge_chunks(x: Tensor, frames: int) -> Tensor:
    """Inverse of `chunk_frames`: `(B, D, K, S)` -> `(B, D, N)`, averaging the two copies."""
    batch, dim, size, n_chunks = x.shape
    out = F.fold(
        x.reshape(batch, dim * size, n_chunks),
        output_size=(frames, 1),
        kernel_size=(size, 1),
        padding=(size, 0),
        stride=(size // 2, 1),
    )
    return out.squeeze(-1) * 0.5


class DualPathBlock(nn.Module):
    """Intra-chunk then inter-chunk BiLSTM, each projected back to D, normalised, residual.

    LayerNorm over features (per frame) rather than the paper's global LayerNorm over the
    whole segment: with gLN a frame's output depends on the statistics of the segment it
    happened to be cut into, which differs between 6-s training crops and 20-s inference
    segments (and the zero padding of a track's last segment).
    """

    def __init__(self, dim: int, *, hidden_size: int, dropout: float = 0.0):
        super().__init__()
        self.intra_rnn = nn.LSTM(dim, hidden_size, batch_first=True, bidirectional=True)
        self.intra_proj = nn.Linear(2 * hidden_size, dim)
        self.intra_norm = nn.LayerNorm(dim)
        self.inter_rnn = nn.LSTM(dim, hidden_size, batch_first=True, bidirectional=True)
        self.inter_proj = nn.Linear(2 * hidden_size, dim)
        self.inter_norm = nn.LayerNorm(dim)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        """`(B, D, K, S)` -> `(B, D, K, S)`."""
        batch, dim, size, n_chunks = x.shape
        # Intra-chunk: the K frames of each chunk are one sequence; B*S sequences.
        y = x.permute(0, 3, 2, 1).reshape(batch * n_chunks, size, dim)
        y = self.intra_norm(self.intra_proj(self.dropout(self.intra_rnn(y)[0])))
        x = x + y.reshape(batch, n_chunks, size, dim).permute(0, 3, 2, 1)
        # Inter-chunk: position k across all S chunks is one sequence; B*K sequences.
        y = x.permute(0, 2, 3, 1).reshape(batch * size, n_chunks, dim)
        y = self.inter_norm(self.inter_proj(self.dropout(self.inter_rnn(y)[0])))
        return x + y.reshape(batch, size, n_chunks, dim).permute(0, 3, 1, 2)


class DPRNN(MaskModel):
    """Dual-path RNN that predicts one magnitude mask per source."""

    architecture = "dprnn"
    config_class = DPRNNConfig

    def __init__(self, config: DPRNNConfig = DPRNNConfig()):
        super().__init__(config)
        c = config
        bins = c.n_fft // 2 + 1
        in_features = c.channels * c.max_bin
        # Per-(channel, bin) affine on the log-magnitude, as Open-Unmix's input_mean/scale;
        # training initialises them from data statistics.
        self.input_mean = nn.Parameter(torch.zeros(c.channels, c.max_bin, 1))
        self.input_scale = nn.Parameter(torch.ones(c.channels, c.max_bin, 1))
        self.encoder = nn.Sequential(nn.Linear(in_features, c.feature_dim), nn.LayerNorm(c.feature_dim))
        self.blocks = nn.ModuleList(
            DualPathBlock(c.feature_dim, hidden_size=c.hidden_size, dropout=c.dropout) for _ in range(c.num_blocks)
        )
        self.head = nn.Sequential(
            nn.PReLU(),
            nn.Conv1d(c.feature_dim, c.feature_dim, c.head_kernel, padding=c.head_kernel // 2),
            nn.ReLU(),
            nn.Conv1d(c.feature_dim, len(c.sources) * c.channels * bins, 1),
        )

    def features(self, mag: Tensor) -> Tensor:
        """`(B, C, F, N)` -> `(B, C, max_bin, N)` log-magnitude, before the per-bin affine."""
        return torch.log(mag[:, :, : self.config.max_bin] + 1e-4)

    def set_input_statistics(self, mag: Tensor) -> None:
        """Per (channel, bin) mean and std of the log-magnitude of training mixtures `(B, C, F, N)`."""
        x = self.features(mag)
        self.input_mean.copy_(-x.mean(dim=(0, 3))[..., None])
        self.input_scale.copy_(1.0 / (x.std(dim=(0, 3))[..., None] + 1e-5))

    def training_magnitudes(self, mag: Tensor, augment: Callable[[Tensor], Tensor] | None = None) -> Tensor:
        """The masks see the augmented input (SpecAugment), and mask the clean mixture."""
        return self.masks(augment(mag) if augment is not None else mag) * mag.unsqueeze(1)

    def encode(self, mag: Tensor) -> Tensor:
        """`(B, C, F, N)` mixture magnitude -> `(B, D, N)`: the dual-path network's features of
        each frame, what the head turns into masks."""
        c = self.config
        batch, channels, _, frames = mag.shape
        x = (self.features(mag) + self.input_mean) * self.input_scale
        x = self.encoder(x.reshape(batch, channels * c.max_bin, frames).transpose(1, 2))
        x = chunk_frames(x.transpose(1, 2), c.chunk_size)
        for block in self.blocks:
            x = block(x)
        return merge_chunks(x, frames)

    def masks(self, mag: Tensor) -> Tensor:
        """`(B, C, F, N)` mixture magnitude -> `(B, S', C, F, N)` masks in [0, 1]; the softmax
        masks of `head` over `encode`, computed as below."""
        c = self.config
        _, channels, bins, _ = mag.shape
        *hidden, last = self.head
        x = nn.Sequential(*hidden)(self.encode(mag)).transpose(1, 2)  # (B, N, D)
        # The last 1x1 convolution as a linear layer over frames: the masks come out frames-major,
        # `(B, N, S', C, F)` in memory, the layout of the STFT they multiply and of what follows.
        weight, bias = last.weight.squeeze(-1), last.bias
        if c.mask == "softmax" and len(c.sources) == 2:
            # A softmax over two logits is the sigmoid of their difference, and the difference
            # of the layer's two halves of outputs is one layer with the difference of their
            # weights: half of the head's largest product, and no softmax over a strided axis.
            weight, bias = weight.unflatten(0, (2, -1)), bias.unflatten(0, (2, -1))
            first = F.linear(x, weight[0] - weight[1], bias[0] - bias[1]).sigmoid_()
            masks = torch.stack([first, 1.0 - first], dim=2)  # (B, N, 2, C * F)
        else:
            logits = F.linear(x, weight, bias).unflatten(2, (len(c.sources), -1))
            masks = logits.softmax(dim=2) if c.mask == "softmax" else logits.sigmoid()
        return masks.unflatten(3, (channels, bins)).permute(0, 2, 3, 4, 1)

    def estimate(self, mag: Tensor) -> Tensor:
        """`(B, C, F, N)` -> `(B, S', C, F, N)` source magnitudes."""
        return self.masks(mag) * mag.unsqueeze(1)
