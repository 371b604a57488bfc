"""Name -> model. The only place that knows which models exist.

Two tables:
- *architectures* (`dprnn`, `conv1d`, `umx`): a model class and its config dataclass,
  registered by the model files with `@register_architecture`. Checkpoints name one of these.
- *named models* (`dprnn`, `conv1d`, `umxhq`, `umxl`): what `Separator.from_name` and the
  CLI's `--model` accept, each with a way to get its weights.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from .errors import CheckpointError, UnknownModelError

log = logging.getLogger(__name__)

ASSETS_DIR = Path(os.environ.get("SEPARATION_ASSETS", Path(__file__).resolve().parents[1] / "assets"))


# --------------------------------------------------------------------------- architectures


@dataclass(frozen=True)
class Architecture:
    name: str
    model_class: type
    config_class: type


_ARCHITECTURES: dict[str, Architecture] = {}


def register_architecture(name: str, config_class: type) -> Callable[[type], type]:
    def decorate(model_class: type) -> type:
        _ARCHITECTURES[name] = Architecture(name, model_class, config_class)
        model_class.architecture = name
        return model_class

    return decorate


def architectures() -> dict[str, Architecture]:
    from . import models  # noqa: F401  (importing the package registers every architecture)

    return dict(_ARCHITECTURES)


def get_architecture(name: str) -> Architecture:
    archs = architectures()
    if name not in archs:
        raise UnknownModelError(f"unknown architecture {name!r}: known are {', '.join(sorted(archs))}")
    return archs[name]


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


def build_model(architecture: str, config: Any = None):
    """A fresh, randomly initialised model from an architecture name and a config (dict or dataclass)."""
    arch = get_architecture(architecture)
    if config is None:
        config = arch.config_class()
    elif isinstance(config, dict):
        config = config_from_dict(arch.config_class, config)
    return arch.model_class(config)


# --------------------------------------------------------------------------- named models


@dataclass(frozen=True)
class NamedModel:
    name: str
    architecture: str
    description: str
    load: Callable[[], tuple[Any, Any]]  # () -> (model, ModelInfo)
    env: str | None = None  # variable naming a Hub repo or folder that overrides the shipped weights


def _default_checkpoint(name: str, architecture: str, env: str) -> Callable[[], tuple[Any, Any]]:
    """Hub repo or folder from `$env`, else the checkpoint shipped in assets/, else random weights."""

    def load():
        from .checkpoints import load_checkpoint
        from .models.base import ModelInfo

        location = os.environ.get(env)
        if location:
            return load_checkpoint(location, name=name)
        shipped = ASSETS_DIR / "checkpoints" / name
        if (shipped / "config.json").exists():
            return load_checkpoint(shipped, name=name)
        log.warning("%s: no trained checkpoint (set %s or add %s); using RANDOM weights", name, env, shipped)
        model = build_model(architecture)
        return model.eval(), ModelInfo(name, architecture, trained=False, origin="random init")

    return load


def _upstream_umx(variant: str) -> Callable[[], tuple[Any, Any]]:
    def load():
        from .models.umx import load_upstream

        return load_upstream(variant)

    return load


NAMED_MODELS: dict[str, NamedModel] = {
    m.name: m
    for m in [
        NamedModel(
            "dprnn",
            "dprnn",
            "Dual-Path RNN, stereo log-magnitude masks (this project)",
            _default_checkpoint("dprnn", "dprnn", "DPRNN_REPO"),
            "DPRNN_REPO",
        ),
        NamedModel(
            "conv1d",
            "conv1d",
            "the seed's time-domain Conv1D baseline",
            _default_checkpoint("conv1d", "conv1d", "CONV1D_REPO"),
            "CONV1D_REPO",
        ),
        NamedModel("umxhq", "umx", "Open-Unmix umxhq (MUSDB18-HQ), vocals + residual", _upstream_umx("umxhq")),
        NamedModel("umxl", "umx", "Open-Unmix umxl (extra data, non-commercial), vocals + residual", _upstream_umx("umxl")),
    ]
}


def get_named_model(name: str) -> NamedModel:
    if name not in NAMED_MODELS:
        raise UnknownModelError(
            f"unknown model {name!r}: choose one of {', '.join(NAMED_MODELS)}, or a checkpoint folder or Hub repo id"
        )
    return NAMED_MODELS[name]
