"""Self-describing checkpoints: `config.json` + `model.safetensors` (+ an optional README.md).

No pickle anywhere: a checkpoint is data, so loading one from the Hub cannot run code, and a
PyTorch upgrade cannot break it (pickled classes broke demucs models when `torch.load`
changed its `weights_only` default). `config.json` holds everything needed to rebuild the
model (architecture name + config), plus what it was trained on and how well it did.

A local folder and a Hugging Face Hub repo go through the same `load_checkpoint`: a repo is
first resolved to a folder in the HF cache by `snapshot_download`, which honours `HF_HOME`,
`HF_HUB_CACHE` and `HF_HUB_OFFLINE`.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from .errors import CheckpointError, UnknownModelError, WeightsUnavailableError
from .files import dir_mode, file_mode
from .models import ModelInfo, SeparationModel, config_from_dict, get_architecture

FORMAT_VERSION = 1
CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
CARD_NAME = "README.md"
_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def save_checkpoint(
    model: SeparationModel,
    directory: str | os.PathLike,
    *,
    training: dict | None = None,
    half: bool = False,
    card: str | None = None,
    extra: dict[str, Callable[[Path], None]] | None = None,
) -> Path:
    """Write `directory/{config.json, model.safetensors[, README.md]}` atomically.

    The files are written into a temporary sibling folder which then replaces `directory`,
    so a crash mid-write leaves the previous checkpoint intact, never half of a new one.
    `half=True` stores float weights as float16 (half the size; loading casts back).
    `extra` maps more file names to functions that write them (a trainer's state), so that
    they are part of the same atomic replacement.
    """
    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    tensors = {}
    for key, value in model.state_dict().items():
        value = value.detach().to("cpu").contiguous()
        if half and value.is_floating_point():
            value = value.half()
        tensors[key] = value.clone()
    meta = {
        "format_version": FORMAT_VERSION,
        "architecture": model.architecture,
        "config": model.config_dict(),
        "sample_rate": model.sample_rate,
        "sources": list(model.sources),
        "trained": True,
        "training": training or {},
        "parameters": sum(t.numel() for t in tensors.values()),
        "dtype": "float16" if half else "float32",
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    tmp = Path(tempfile.mkdtemp(dir=directory.parent, prefix=f".{directory.name}-"))
    try:
        (tmp / CONFIG_NAME).write_text(json.dumps(meta, indent=2) + "\n")
        save_file(tensors, str(tmp / WEIGHTS_NAME), metadata={"format": "pt", "architecture": model.architecture})
        if card is not None:
            (tmp / CARD_NAME).write_text(card)
        for name, write in (extra or {}).items():
            write(tmp / name)
        # mkdtemp and safetensors create owner-only files; a checkpoint is an ordinary folder.
        tmp.chmod(dir_mode())
        for f in tmp.iterdir():
            f.chmod(file_mode())
        old = directory.with_name(f".{directory.name}-old")
        if directory.exists():
            shutil.rmtree(old, ignore_errors=True)
            directory.rename(old)
        tmp.rename(directory)
        shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return directory


def weights_digest(model: torch.nn.Module) -> str:
    """SHA-256 of a model's weights as loaded (float32 values, sorted names): what eval records
    with its scores and the app with every rating, so that a score or a rating always says
    exactly which weights it belongs to. The same for a checkpoint and its float32 reload."""
    digest = hashlib.sha256()
    for key, tensor in sorted(model.state_dict().items()):
        digest.update(key.encode())
        digest.update(tensor.detach().to("cpu").contiguous().numpy().tobytes())
    return digest.hexdigest()


def resolve(location: str | os.PathLike, *, revision: str | None = None) -> Path:
    """A checkpoint folder for a local path or a Hub repo id ("user/name")."""
    path = Path(location).expanduser()
    if path.exists():
        if not path.is_dir():
            raise CheckpointError(f"{path}: a checkpoint is a folder with {CONFIG_NAME} and {WEIGHTS_NAME}")
        return path
    location = str(location)
    if not _REPO_ID.match(location):
        raise CheckpointError(f"no checkpoint at {location!r}: not a folder, and not a Hub repo id (user/name)")
    # imported here, not at the top: local checkpoints (the app's default) never pay its import
    from huggingface_hub import errors as hf_errors
    from huggingface_hub import snapshot_download

    try:
        return Path(
            snapshot_download(location, revision=revision, allow_patterns=[CONFIG_NAME, WEIGHTS_NAME, CARD_NAME])
        )
    except hf_errors.LocalEntryNotFoundError:
        raise WeightsUnavailableError(
            f"{location} is not in the Hugging Face cache and the Hub cannot be reached "
            f"(offline, or HF_HUB_OFFLINE=1). Fetch it once online with "
            f"`hf download {location}`, or pass a local checkpoint folder"
        ) from None
    except (hf_errors.RepositoryNotFoundError, hf_errors.RevisionNotFoundError) as e:
        raise CheckpointError(f"{location}: no such Hub repo or revision ({type(e).__name__})") from None
    except (hf_errors.HfHubHTTPError, OSError) as e:
        raise WeightsUnavailableError(f"{location}: download from the Hub failed ({e})") from None


def read_config(directory: Path) -> dict[str, Any]:
    cfg_path = directory / CONFIG_NAME
    if not cfg_path.exists():
        raise CheckpointError(f"{directory}: no {CONFIG_NAME} (not a checkpoint of this project)")
    try:
        meta = json.loads(cfg_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{cfg_path}: not valid JSON ({e})") from None
    if not isinstance(meta, dict) or "architecture" not in meta or "config" not in meta:
        raise CheckpointError(f"{cfg_path}: lacks 'architecture' and 'config' (not a checkpoint of this project)")
    if int(meta.get("format_version", 1)) > FORMAT_VERSION:
        raise CheckpointError(
            f"{cfg_path}: format version {meta['format_version']} is newer than this code reads "
            f"({FORMAT_VERSION}); update"
        )
    return meta


def check_state_dict(model: torch.nn.Module, state: dict[str, torch.Tensor], where: str) -> None:
    """Refuse to load half a model: name every missing, unexpected or mis-shaped tensor."""
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    shapes = [
        f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)} in config"
        for k, v in expected.items()
        if k in state and state[k].shape != v.shape
    ]
    problems = []
    if missing:
        problems.append(
            f"missing {len(missing)} tensor(s) ({', '.join(missing[:3])}{'...' if len(missing) > 3 else ''})"
        )
    if unexpected:
        problems.append(
            f"{len(unexpected)} unexpected tensor(s) "
            f"({', '.join(unexpected[:3])}{'...' if len(unexpected) > 3 else ''})"
        )
    if shapes:
        problems.append(f"shape mismatch: {'; '.join(shapes[:3])}{'...' if len(shapes) > 3 else ''}")
    if problems:
        raise CheckpointError(f"{where}: the weights do not match the config: " + ", ".join(problems))


def load_checkpoint(
    location: str | os.PathLike, *, revision: str | None = None, name: str | None = None
) -> tuple[SeparationModel, ModelInfo]:
    """Folder or Hub repo -> (model in eval mode on CPU, where it came from)."""
    directory = resolve(location, revision=revision)
    meta = read_config(directory)
    try:
        arch = get_architecture(meta["architecture"])
    except UnknownModelError as e:
        raise CheckpointError(f"{directory / CONFIG_NAME}: {e}") from None
    model = arch(config_from_dict(arch.config_class, meta["config"]))
    weights = directory / WEIGHTS_NAME
    if not weights.exists():
        raise CheckpointError(f"{directory}: no {WEIGHTS_NAME}")
    try:
        state = load_file(str(weights))
    except (SafetensorError, OSError) as e:
        raise CheckpointError(f"{weights}: damaged or not a safetensors file ({e})") from None
    check_state_dict(model, state, str(weights))
    reference = model.state_dict()
    model.load_state_dict({k: v.to(reference[k].dtype) for k, v in state.items()}, strict=True)
    origin = str(directory) if Path(str(location)).expanduser().exists() else f"{location}@{revision or 'main'}"
    info = ModelInfo(
        name=name or str(location),
        architecture=meta["architecture"],
        trained=bool(meta.get("trained", True)),
        origin=origin,
        training=meta.get("training", {}),
    )
    return model.eval(), info
