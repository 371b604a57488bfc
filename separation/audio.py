"""Audio in and out: decode anything a user is likely to have, check it, write stems.

Everything inside the project is `(channels, samples)` float32 in [-1, 1] at 44.1 kHz
stereo (`SAMPLE_RATE`). This module is the only place that turns files into that and back.

Decoding goes through libsndfile (`soundfile`: wav, flac, ogg, mp3, aiff) and falls back to
`ffmpeg` for containers libsndfile cannot open (m4a, aac, mp4, webm, opus). Every failure
becomes one `AudioError` subclass whose message names the file and says what is wrong,
because "Error opening 'x.mp3': File does not exist" (libsndfile on a text file) helps nobody.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import struct
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
import torchaudio.functional as AF

from .errors import (
    AudioError,
    AudioTooLargeError,
    AudioTooLongError,
    AudioWriteError,
    CorruptAudioError,
    EmptyAudioError,
    NonFiniteAudioError,
    NotAudioError,
)

SAMPLE_RATE = 44100
SOUNDFILE_SUFFIXES = {".wav", ".wave", ".flac", ".ogg", ".oga", ".mp3", ".aif", ".aiff"}
FFMPEG_SUFFIXES = {".m4a", ".aac", ".mp4", ".webm", ".opus", ".mka", ".mkv", ".wma"}
AUDIO_SUFFIXES = SOUNDFILE_SUFFIXES | FFMPEG_SUFFIXES
WRITE_FORMATS = ("wav", "flac", "mp3")
# Output sample encodings: 16/24-bit PCM, or 32-bit float which never clips.
BIT_DEPTHS = {"16": "PCM_16", "24": "PCM_24", "float": "FLOAT"}
# Permissions of ordinary new files and folders under the process umask, read once at import:
# os.umask can only be read by setting it, which must not race with other threads later.
_umask = os.umask(0)
os.umask(_umask)
FILE_MODE, DIR_MODE = 0o666 & ~_umask, 0o777 & ~_umask


@dataclass(frozen=True)
class AudioInfo:
    """What a file holds, read from its header without decoding it."""

    path: Path
    sample_rate: int
    channels: int
    frames: int  # 0 when the container does not say
    backend: str  # "soundfile" or "ffmpeg"
    format: str

    @property
    def duration(self) -> float:
        return self.frames / self.sample_rate if self.sample_rate else 0.0


# --------------------------------------------------------------------------- probing


def _sniff(path: Path, max_bytes: int | None) -> bytes:
    """Existence, size and "is this text?" checks that libsndfile gets wrong."""
    if not path.exists():
        raise AudioError(f"{path}: no such file")
    if path.is_dir():
        raise AudioError(f"{path}: is a folder, not an audio file")
    size = path.stat().st_size
    if size == 0:
        raise EmptyAudioError(f"{path.name}: the file is empty (0 bytes)")
    if max_bytes is not None and size > max_bytes:
        raise AudioTooLargeError(
            f"{path.name}: the file is {size / 2**20:.1f} MB, over the {max_bytes / 2**20:.0f} MB limit"
        )
    with open(path, "rb") as f:
        head = f.read(4096)
    if _looks_like_text(head):
        preview = head[:40].decode("utf-8", "replace").strip().splitlines()[0] if head.strip() else ""
        raise NotAudioError(f"{path.name}: this is a text file, not audio (it starts with {preview!r})")
    return head


def _looks_like_text(head: bytes) -> bool:
    if b"\x00" in head:
        return False
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        return False
    printable = sum(ch.isprintable() or ch in "\r\n\t" for ch in text)
    return printable >= 0.95 * max(len(text), 1)


def _ffprobe(path: Path) -> AudioInfo | None:
    if shutil.which("ffprobe") is None:
        return None
    cmd = ["ffprobe", "-v", "error", "-print_format", "json", "-show_format", "-show_streams", str(path)]
    res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode != 0:
        return None
    meta = json.loads(res.stdout or "{}")
    streams = [s for s in meta.get("streams", []) if s.get("codec_type") == "audio"]
    if not streams:
        return None
    stream = streams[0]
    rate = int(stream.get("sample_rate", 0) or 0)
    duration = float(stream.get("duration") or meta.get("format", {}).get("duration") or 0.0)
    return AudioInfo(
        path=path,
        sample_rate=rate,
        channels=int(stream.get("channels", 0) or 0),
        frames=int(round(duration * rate)),
        backend="ffmpeg",
        format=meta.get("format", {}).get("format_name", stream.get("codec_name", "?")),
    )


def probe(path: str | os.PathLike, *, max_bytes: int | None = None) -> AudioInfo:
    """Read a file's header: rate, channels, length. Raises a specific `AudioError`."""
    path = Path(path)
    _sniff(path, max_bytes)
    try:
        info = sf.info(str(path))
        if info.frames == 0:
            raise EmptyAudioError(f"{path.name}: the file has an audio header but no samples")
        return AudioInfo(path, info.samplerate, info.channels, info.frames, "soundfile", info.format)
    except sf.LibsndfileError:
        pass  # not a libsndfile format: ask ffmpeg
    info = _ffprobe(path)
    if info is None:
        if shutil.which("ffprobe") is None and path.suffix.lower() in FFMPEG_SUFFIXES:
            raise AudioError(f"{path.name}: decoding {path.suffix} needs ffmpeg, which is not installed")
        raise NotAudioError(f"{path.name}: not an audio file that libsndfile or ffmpeg can read")
    if info.channels == 0 or info.sample_rate == 0:
        raise CorruptAudioError(f"{path.name}: the audio stream has no channels or no sample rate")
    return info


# --------------------------------------------------------------------------- truncation checks


def _wav_declared_frames(path: Path, info: AudioInfo) -> int | None:
    """Frames promised by a WAV header's `data` chunk (None if not a plain RIFF/WAVE)."""
    with open(path, "rb") as f:
        head = f.read(12)
        if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
            return None
        block_align = None
        while True:
            chunk = f.read(8)
            if len(chunk) < 8:
                return None
            cid, size = chunk[:4], struct.unpack("<I", chunk[4:])[0]
            if cid == b"fmt ":
                fmt = f.read(size + (size & 1))
                block_align = struct.unpack("<H", fmt[12:14])[0]
                continue
            if cid == b"data":
                # 0 and 0xFFFFFFFF are "unknown length" placeholders of streaming writers.
                if size in (0, 0xFFFFFFFF) or not block_align:
                    return None
                return size // block_align
            f.seek(size + (size & 1), os.SEEK_CUR)


def _ogg_is_complete(path: Path) -> bool:
    """An Ogg stream ends with a page whose header type has the end-of-stream bit (0x04)."""
    with open(path, "rb") as f:
        f.seek(0, os.SEEK_END)
        size = f.tell()
        f.seek(max(0, size - 65536))
        tail = f.read()
    last = tail.rfind(b"OggS")
    if last < 0 or last + 6 > len(tail):
        return False
    return bool(tail[last + 5] & 0x04)


def _check_complete(path: Path, info: AudioInfo, decoded_frames: int) -> None:
    declared = info.frames
    if info.backend == "soundfile" and "WAV" in info.format.upper():
        declared = _wav_declared_frames(path, info) or declared
    if info.backend == "soundfile" and info.format.upper() == "OGG" and not _ogg_is_complete(path):
        raise CorruptAudioError(f"{path.name}: the Ogg stream is truncated (no end-of-stream page)")
    # mp3 decoders drop up to a couple of frames of padding; anything more is missing data.
    tolerance = max(4096, int(0.005 * declared))
    if declared and decoded_frames + tolerance < declared:
        raise CorruptAudioError(
            f"{path.name}: the file is truncated: its header promises "
            f"{declared / info.sample_rate:.1f} s but only {decoded_frames / info.sample_rate:.1f} s are there"
        )


# --------------------------------------------------------------------------- decoding


def _decode_soundfile(path: Path, info: AudioInfo, start: int, frames: int) -> np.ndarray:
    try:
        data, _ = sf.read(str(path), start=start, frames=frames, dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError) as e:
        raise CorruptAudioError(f"{path.name}: the audio data is damaged or truncated ({e})") from None
    return data.T


def _decode_ffmpeg(path: Path, info: AudioInfo, start: int, frames: int) -> np.ndarray:
    if shutil.which("ffmpeg") is None:
        raise AudioError(f"{path.name}: decoding this format needs ffmpeg, which is not installed")
    cmd = ["ffmpeg", "-nostdin", "-v", "error", "-i", str(path)]
    if start:
        cmd[4:4] = ["-ss", f"{start / info.sample_rate:.6f}"]  # input seeking: fast and exact for audio
    if frames >= 0:
        cmd += ["-t", f"{frames / info.sample_rate:.6f}"]
    cmd += ["-map", "0:a:0", "-f", "f32le", "-acodec", "pcm_f32le", "-"]
    res = subprocess.run(cmd, capture_output=True)
    if res.returncode != 0:
        msg = res.stderr.decode("utf-8", "replace").strip().splitlines()
        raise CorruptAudioError(f"{path.name}: ffmpeg could not decode it ({msg[-1] if msg else 'no detail'})")
    data = np.frombuffer(res.stdout, dtype="<f4")
    return data[: data.size - data.size % info.channels].reshape(-1, info.channels).T.copy()


def read_audio(
    path: str | os.PathLike,
    *,
    offset: float = 0.0,
    duration: float | None = None,
    max_seconds: float | None = None,
    max_bytes: int | None = None,
) -> tuple[torch.Tensor, int]:
    """Decode a file as it is: `(channels, samples)` float32 at its own rate.

    `offset`/`duration` (seconds) select an excerpt, decoded without reading the rest.
    `max_seconds` caps what may be decoded: a longer file (or excerpt) is refused *before*
    decoding, so a 2-hour upload costs a header read, not 2.5 GB of memory.
    """
    path = Path(path)
    info = probe(path, max_bytes=max_bytes)
    if offset < 0 or (duration is not None and duration <= 0):
        raise AudioError(f"{path.name}: the excerpt must start at >= 0 s and last > 0 s")
    start = int(round(offset * info.sample_rate))
    if info.frames and start >= info.frames:
        raise AudioError(f"{path.name}: the excerpt starts at {offset:.1f} s but the audio lasts {info.duration:.1f} s")
    frames = -1 if duration is None else int(round(duration * info.sample_rate))
    wanted = (info.frames - start if frames < 0 else min(frames, info.frames - start)) if info.frames else frames
    if max_seconds is not None and wanted != -1 and wanted > max_seconds * info.sample_rate:
        what = "the excerpt" if duration is not None else "the audio"
        raise AudioTooLongError(
            f"{path.name}: {what} lasts {_fmt_time(wanted / info.sample_rate)}, over the "
            f"{_fmt_time(max_seconds)} limit; choose an excerpt (start and duration) or raise the limit"
        )
    decode = _decode_soundfile if info.backend == "soundfile" else _decode_ffmpeg
    data = decode(path, info, start, frames)
    if data.shape[-1] == 0:
        raise EmptyAudioError(f"{path.name}: the file decodes to no samples")
    if start == 0 and frames < 0:
        _check_complete(path, info, data.shape[-1])
    if max_seconds is not None and data.shape[-1] > max_seconds * info.sample_rate:
        raise AudioTooLongError(
            f"{path.name}: the audio lasts {_fmt_time(data.shape[-1] / info.sample_rate)}, "
            f"over the {_fmt_time(max_seconds)} limit"
        )
    wave = torch.from_numpy(np.ascontiguousarray(data, dtype=np.float32))
    check_finite(wave, info.sample_rate, name=path.name)
    return wave, info.sample_rate


def load_audio(path: str | os.PathLike, **kwargs) -> torch.Tensor:
    """Decode a file and bring it to the project's format: `(2, samples)` at 44.1 kHz."""
    wave, rate = read_audio(path, **kwargs)
    return prepare(wave, rate)


def _fmt_time(seconds: float) -> str:
    seconds = int(math.ceil(seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


# --------------------------------------------------------------------------- conversion


def as_waveform(waveform, *, name: str = "waveform") -> torch.Tensor:
    """Accept a `(channels, samples)` or `(samples,)` tensor or array; return float32 CPU tensor."""
    wave = torch.as_tensor(np.asarray(waveform) if not isinstance(waveform, torch.Tensor) else waveform)
    wave = wave.detach().to("cpu", torch.float32)
    if wave.ndim == 1:
        wave = wave[None]
    if wave.ndim != 2:
        raise AudioError(f"{name}: expected (channels, samples), got shape {tuple(wave.shape)}")
    channels, samples = wave.shape
    if channels > 16 and samples <= 16:
        # soundfile and librosa return (samples, channels): a silent mix-up would "separate"
        # 441000 channels of one sample each.
        raise AudioError(f"{name}: shape {tuple(wave.shape)} looks like (samples, channels); pass waveform.T")
    if samples == 0 or channels == 0:
        raise EmptyAudioError(f"{name}: no samples (shape {tuple(wave.shape)})")
    return wave


def check_finite(wave: torch.Tensor, sample_rate: int, *, name: str = "waveform") -> None:
    bad = ~torch.isfinite(wave)
    if bad.any():
        first = int(bad.any(dim=0).nonzero()[0, 0])
        raise NonFiniteAudioError(
            f"{name}: {int(bad.sum())} samples are NaN or infinite (the first at {first / sample_rate:.2f} s)"
        )


# ITU-R BS.775 downmix coefficients for the usual WAV/ffmpeg channel orders; rows are
# normalised to sum to 1 so the downmix cannot clip. The LFE channel is dropped, as players do.
_C = 1 / math.sqrt(2)
_DOWNMIX = {
    3: [[1, 0, _C], [0, 1, _C]],  # FL FR FC
    4: [[1, 0, 1, 0], [0, 1, 0, 1]],  # FL FR BL BR
    5: [[1, 0, _C, _C, 0], [0, 1, _C, 0, _C]],  # FL FR FC BL BR
    6: [[1, 0, _C, 0, _C, 0], [0, 1, _C, 0, 0, _C]],  # FL FR FC LFE BL BR (5.1)
    8: [[1, 0, _C, 0, _C, 0, _C, 0], [0, 1, _C, 0, 0, _C, 0, _C]],  # 7.1
}


def to_stereo(wave: torch.Tensor) -> torch.Tensor:
    """`(C, T)` -> `(2, T)`: mono is duplicated, surround is downmixed (BS.775)."""
    channels = wave.shape[0]
    if channels == 2:
        return wave
    if channels == 1:
        return wave.expand(2, -1).clone()
    if channels in _DOWNMIX:
        matrix = torch.tensor(_DOWNMIX[channels], dtype=wave.dtype)
    else:  # unknown layout: alternate channels to left and right
        matrix = torch.zeros(2, channels, dtype=wave.dtype)
        matrix[0, 0::2] = 1
        matrix[1, 1::2] = 1
    matrix = matrix / matrix.sum(dim=1, keepdim=True)
    return matrix @ wave


def resample(wave: torch.Tensor, orig_rate: int, new_rate: int = SAMPLE_RATE) -> torch.Tensor:
    if orig_rate == new_rate:
        return wave
    if orig_rate <= 0:
        raise AudioError(f"invalid sample rate {orig_rate}")
    return AF.resample(wave, int(orig_rate), int(new_rate))


def prepare(waveform, sample_rate: int, *, name: str = "waveform") -> torch.Tensor:
    """Any `(C, T)` input at any rate -> checked `(2, T')` float32 at 44.1 kHz."""
    wave = as_waveform(waveform, name=name)
    check_finite(wave, sample_rate, name=name)
    # Downmix before resampling: half the work for surround input, same result (both linear).
    return resample(to_stereo(wave), sample_rate, SAMPLE_RATE).contiguous()


def resampled_length(samples: int, orig_rate: int, new_rate: int = SAMPLE_RATE) -> int:
    return int(math.ceil(samples * new_rate / orig_rate))


# --------------------------------------------------------------------------- writing


def limit_peaks(
    stems: dict[str, torch.Tensor], mode: str = "rescale", ceiling: float = 0.999
) -> tuple[dict[str, torch.Tensor], str | None]:
    """Keep integer output from clipping; say what was done.

    `rescale` applies ONE gain to all stems of a track, so that their relative levels, and
    vocals + accompaniment == mixture, survive (per-stem normalisation broke both: demucs #605).
    `clamp` hard-clips only the offending samples. `none` leaves samples as they are (only
    sensible with float output). Returns the stems and a message, or None when nothing changed.
    """
    peak = max(float(s.abs().max()) for s in stems.values()) if stems else 0.0
    if peak <= ceiling or mode == "none":
        return stems, None
    if mode == "rescale":
        gain = ceiling / peak
        return (
            {k: v * gain for k, v in stems.items()},
            f"peak {peak:.3f} > 1: scaled all stems by {20 * math.log10(gain):.2f} dB to avoid clipping",
        )
    if mode == "clamp":
        n = sum(int((s.abs() > ceiling).sum()) for s in stems.values())
        return {k: v.clamp(-ceiling, ceiling) for k, v in stems.items()}, f"clipped {n} samples above 0 dBFS"
    raise ValueError(f"unknown clip mode {mode!r}: use rescale, clamp or none")


def check_writable(folder: str | os.PathLike, fmt: str = "wav", bit_depth: str = "24") -> Path:
    """Fail before a long separation, not after it (demucs #558): folder, permissions, encoder."""
    if fmt not in WRITE_FORMATS:
        raise AudioWriteError(f"unknown output format {fmt!r}: choose one of {', '.join(WRITE_FORMATS)}")
    if bit_depth not in BIT_DEPTHS:
        raise AudioWriteError(f"unknown bit depth {bit_depth!r}: choose one of {', '.join(BIT_DEPTHS)}")
    if fmt == "mp3" and "MP3" not in sf.available_formats():
        raise AudioWriteError("this libsndfile cannot encode mp3: choose --format wav or flac")
    if fmt == "flac" and bit_depth == "float":
        raise AudioWriteError("FLAC has no float samples: use --bit-depth 16 or 24, or --format wav")
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".write-test-"):
            pass
    except OSError as e:
        raise AudioWriteError(f"cannot write to {folder}: {e.strerror or e}") from None
    return folder


def save_audio(
    path: str | os.PathLike, wave: torch.Tensor, sample_rate: int = SAMPLE_RATE, *, bit_depth: str = "24"
) -> Path:
    """Write `(C, T)` to wav/flac/mp3 (format from the suffix), atomically.

    The file appears complete or not at all: it is written beside its final name and renamed,
    so an interrupted run never leaves a half-written stem that looks finished.
    Integer formats need samples in [-1, 1]: call `limit_peaks` first.
    """
    path = Path(path)
    fmt = path.suffix.lower().lstrip(".")
    if fmt not in WRITE_FORMATS:
        raise AudioWriteError(f"{path.name}: unknown output format {fmt!r}; use .wav, .flac or .mp3")
    data = wave.detach().to("cpu", torch.float32).numpy().T
    if fmt == "mp3":
        kwargs = {"format": "MP3", "subtype": "MPEG_LAYER_III", "compression_level": 0.0}  # ~320 kbit/s
    else:
        kwargs = {"format": fmt.upper(), "subtype": BIT_DEPTHS[bit_depth]}
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}-", suffix=path.suffix)
    os.close(fd)
    try:
        sf.write(tmp, data, sample_rate, **kwargs)
        os.chmod(tmp, FILE_MODE)  # mkstemp makes 0600 files; stems are ordinary files
        os.replace(tmp, path)
    except (sf.LibsndfileError, OSError, RuntimeError) as e:
        Path(tmp).unlink(missing_ok=True)
        raise AudioWriteError(f"cannot write {path}: {e}") from None
    return path
