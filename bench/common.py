"""Helpers shared by the benchmarks: test signals and the models to compare."""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from separation.audio import SAMPLE_RATE
from separation.models import build_model  # noqa: E402
from separation.separator import Separator  # noqa: E402

SR = SAMPLE_RATE  # the project's one sample rate

# What each benchmark compares: our DPRNN at its default config, the Conv1D baseline, and the
# umxhq architecture (random weights: speed and memory do not depend on the weights).
MODELS = {
    "dprnn": lambda: build_model("dprnn"),
    "conv1d": lambda: build_model("conv1d"),
    "umxhq": lambda: build_model("umx"),
}


def test_signal(seconds: float, seed: int = 0) -> torch.Tensor:
    """`(2, T)` noise shaped like music (1/f-ish, -20 dBFS): content does not change the cost."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(2, int(seconds * SR), generator=gen)
    x = torch.cumsum(x, dim=-1) * 0.01
    x = x - torch.nn.functional.avg_pool1d(x[None], 1025, stride=1, padding=512)[0]
    return (0.1 * x / x.std()).contiguous()


def separator(name: str, **kwargs) -> Separator:
    return Separator(MODELS[name]().eval(), device=kwargs.pop("device", "cpu"), **kwargs)
