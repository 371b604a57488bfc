"""One architecture per file; importing this package registers them all."""

from . import conv1d, dprnn, umx  # noqa: F401
from .base import MaskModel, ModelInfo, SeparationModel

__all__ = ["MaskModel", "ModelInfo", "SeparationModel"]
