"""torch.hub entries: a ready `Separator` for each of the project's named models.

    import torch
    sep = torch.hub.load("OWNER/REPO", "dprnn")                      # this repository on GitHub
    sep = torch.hub.load("path/to/checkout", "dprnn", source="local")
    stems = sep.separate(waveform, sample_rate)  # {"vocals": (2, T), "accompaniment": (2, T)}

`dprnn` and `conv1d` are the demo checkpoints in `separation/weights/` (or `$DPRNN_REPO` /
`$CONV1D_REPO`); `umxhq` and `umxl` are Open-Unmix's own release files, fetched into the torch
hub cache through the project's loader (`torch.load(weights_only=True)`). Keyword arguments go
to `Separator` (`device`, `segment`, `wiener`, `shifts`, ...). The project's dependencies must be
installed (`pip install -r requirements.txt`); torch.hub checks those listed below.
"""

dependencies = ["torch", "torchaudio", "numpy", "soundfile", "safetensors", "huggingface_hub", "openunmix"]

from separation import Separator  # noqa: E402


def dprnn(**kwargs) -> Separator:
    """The Dual-Path RNN, vocals and accompaniment."""
    return Separator.from_name("dprnn", **kwargs)


def conv1d(**kwargs) -> Separator:
    """The seed's time-domain Conv1D baseline."""
    return Separator.from_name("conv1d", **kwargs)


def umxhq(**kwargs) -> Separator:
    """Open-Unmix umxhq (vocals network; accompaniment as the residual), upstream's weights."""
    return Separator.from_name("umxhq", **kwargs)


def umxl(**kwargs) -> Separator:
    """Open-Unmix umxl, upstream's weights."""
    return Separator.from_name("umxl", **kwargs)
