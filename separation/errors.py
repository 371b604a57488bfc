"""User-facing errors.

Every error a user can cause (a bad file, an unknown model, a missing download) derives from
`SeparationError`. The CLI and the app catch exactly this class and show its message as one
line; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import re

# An absolute path (or ~/...) in a message: a server's folders are nobody else's business.
# Not inside URLs ("https://host/path": the slash follows a colon or a slash).
_PATH = re.compile(r"(?<![\w:/.~-])~?/(?:[^\s'\"`<>|:;,()/]+/)+([^\s'\"`<>|:;,()]*)")


def scrub_paths(text: str) -> str:
    """`text` with every absolute path cut to its last part: `/root/.cache/x/y.pth` -> `y.pth`."""
    return _PATH.sub(lambda m: m.group(1) or "(a folder)", text)


class SeparationError(Exception):
    """An error caused by input or environment, with a message meant for the user.

    `str(error)` is the full message, for a command line or a server log. `error.public` is
    what a public web page may show: by default the same without server paths; an error that
    knows better (a missing download) passes its own.
    """

    def __init__(self, message: str = "", *, public: str | None = None):
        super().__init__(message)
        self.public = public if public is not None else scrub_paths(message)


class AudioError(SeparationError):
    """The input audio cannot be used."""


class NotAudioError(AudioError):
    """The file is not audio at all (text, an image, an unknown container)."""


class EmptyAudioError(AudioError):
    """The file or array holds no samples."""


class CorruptAudioError(AudioError):
    """The file is audio but truncated or damaged."""


class AudioTooLongError(AudioError):
    """The audio is longer than the configured cap."""


class AudioTooLargeError(AudioError):
    """The file is larger (in bytes) than the configured cap."""


class NonFiniteAudioError(AudioError):
    """The samples contain NaN or infinity."""


class AudioWriteError(SeparationError):
    """An output file cannot be written (folder, permissions, encoder)."""


class ModelError(SeparationError):
    """A model name, checkpoint or configuration is not usable."""


class UnknownModelError(ModelError):
    """No model is registered under that name."""


class CheckpointError(ModelError):
    """A checkpoint is missing, malformed, or does not match its configuration."""


class WeightsUnavailableError(ModelError):
    """Pretrained weights are neither cached nor downloadable right now."""


class DeviceError(SeparationError):
    """The requested device is not available."""


class UntrainedModelWarning(UserWarning):
    """The model runs with random weights: its output is not a separation."""
