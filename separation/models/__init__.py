"""The architectures: one file each, collected here into the table checkpoints name them by.

    model = build_model("dprnn", {"hidden_size": 64})      # random weights, from a config
    arch = get_architecture("umx")                          # the class (and its config class)

The table is built from the classes, which declare their `architecture` name and
`config_class`: a model file never imports this table back.
"""

from __future__ import annotations

import dataclasses
import typing
from typing import Any

from ..errors import CheckpointError, UnknownModelError
from .base import MaskModel, ModelInfo, SeparationModel, count_parameters
from .conv1d import Conv1D
from .dprnn import DPRNN
from .umx import UMX

ARCHITECTURES: dict[str, type[SeparationModel]] = {cls.architecture: cls for cls in (DPRNN, Conv1D, UMX)}


def get_architecture(name: str) -> type[SeparationModel]:
    if name not in ARCHITECTURES:
        raise UnknownModelError(f"unknown architecture {name!r}: known are {', '.join(sorted(ARCHITECTURES))}")
    return ARCHITECTURES[name]


def config_from_dict(config_class: type, data: dict[str, Any]) -> Any:
    """Rebuild a frozen config from JSON. Unknown keys are an error (a newer or foreign
    checkpoint); missing keys take the dataclass default; JSON lists become tuples."""
    fields = {f.name: f for f in dataclasses.fields(config_class)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise CheckpointError(f"{config_class.__name__} has no field(s) {', '.join(unknown)}")
    hints = typing.get_type_hints(config_class)
    values = {}
    for key, value in data.items():
        if isinstance(value, list) and "tuple" in str(hints.get(key, "")):
            value = tuple(value)
        values[key] = value
    try:
        return config_class(**values)
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"invalid {config_class.__name__}: {e}") from None


def build_model(architecture: str, config: Any = None) -> SeparationModel:
    """A fresh, randomly initialised model from an architecture name and a config (dict or dataclass)."""
    cls = get_architecture(architecture)
    if config is None:
        config = cls.config_class()
    elif isinstance(config, dict):
        config = config_from_dict(cls.config_class, config)
    return cls(config)


__all__ = [
    "ARCHITECTURES",
    "Conv1D",
    "DPRNN",
    "MaskModel",
    "ModelInfo",
    "SeparationModel",
    "UMX",
    "build_model",
    "config_from_dict",
    "count_parameters",
    "get_architecture",
]
