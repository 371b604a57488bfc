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
from collections.abc import Iterator
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
from .files import atomic_write

SAMPLE_RATE = 44100
MB = 1_000_000  # the unit of every size the project states (not MiB)
SOUNDFILE_SUFFIXES = {".wav", ".wave", ".flac", ".ogg", ".oga", ".mp3", ".aif", ".aiff"}
FFMPEG_SUFFIXES = {".m4a", ".aac", ".mp4", ".webm", ".opus", ".mka", ".mkv", ".wma"}
AUDIO_SUFFIXES = SOUNDFILE_SUFFIXES | FFMPEG_SUFFIXES
WRITE_FORMATS = ("wav", "flac", "mp3")
# Output sample encodings: 16/24-bit PCM, or 32-bit float which never clips.
BIT_DEPTHS = {"16": "PCM_16", "24": "PCM_24", "float": "FLOAT"}


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
        raise AudioTooLargeError(f"{path.name}: the file is {size / MB:.1f} MB, over the {max_bytes / MB:g} MB limit")
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

BLOCK_FRAMES = 1 << 16  # frames decoded, checked, downmixed and resampled at a time
# What may be decoded, in samples (frames x channels): the longest allowed input as 7.1
# surround at 48 kHz. A small file can hold far more (a 9 MB FLAC of 8 channels at 384 kHz
# is 369 M samples in two minutes): such a file is refused from its header, before decoding.
BUDGET_RATE, BUDGET_CHANNELS = 48_000, 8
# mp3 and AAC encoders pad the last frame: a "10:00" song decodes to 10:00.03
DURATION_GRACE_S = 0.5


def decode_budget(max_seconds: float | None) -> int | None:
    """Samples (frames x channels) that may be decoded for a cap of `max_seconds`."""
    return None if max_seconds is None else int((max_seconds + DURATION_GRACE_S) * BUDGET_RATE * BUDGET_CHANNELS)


def parse_seconds(value, what: str) -> float:
    """A finite number of seconds from an argument, a form field or an API call, or a clear error."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise AudioError(f"the {what} must be a number of seconds, not {str(value)[:20]!r}") from None
    if not math.isfinite(number):
        raise AudioError(f"the {what} must be a number of seconds, not {number}")
    return number


@dataclass(frozen=True)
class _Selection:
    """What to decode from a probed file, checked against the caps before any decoding."""

    info: AudioInfo
    start: int  # first frame
    frames: int  # frames wanted; -1: to the end
    max_seconds: float | None  # the duration cap, for files whose header has no length
    budget: int | None  # samples (frames x channels)

    @property
    def max_frames(self) -> int | None:
        return None if self.max_seconds is None else int((self.max_seconds + DURATION_GRACE_S) * self.info.sample_rate)


def _select(path: Path, *, offset, duration, max_seconds: float | None, max_bytes: int | None) -> _Selection:
    info = probe(path, max_bytes=max_bytes)
    offset = parse_seconds(offset, "excerpt's start")
    if offset < 0:
        raise AudioError(f"{path.name}: the excerpt must start at 0 s or later, not {offset:g} s")
    if duration is not None:
        duration = parse_seconds(duration, "excerpt's length")
        if duration <= 0:
            raise AudioError(f"{path.name}: the excerpt must last more than 0 s, not {duration:g} s")
    rate = info.sample_rate
    start = int(round(offset * rate))
    if info.frames and start >= info.frames:
        raise AudioError(f"{path.name}: the excerpt starts at {offset:.1f} s but the audio lasts {info.duration:.1f} s")
    frames = -1 if duration is None else int(round(duration * rate))
    wanted = (info.frames - start if frames < 0 else min(frames, info.frames - start)) if info.frames else frames
    what = "the excerpt" if duration is not None else "the audio"
    if max_seconds is not None and wanted != -1 and wanted > (max_seconds + DURATION_GRACE_S) * rate:
        raise AudioTooLongError(
            f"{path.name}: {what} lasts {_fmt_time(wanted / rate)}, over the {_fmt_time(max_seconds)} limit; "
            "choose an excerpt (start and duration) or raise the limit"
        )
    budget = decode_budget(max_seconds)
    if budget is not None and wanted != -1 and wanted * info.channels > budget:
        raise AudioTooLargeError(
            f"{path.name}: {what} is {_fmt_time(wanted / rate)} of {info.channels} channels at {rate / 1000:g} kHz, "
            f"{wanted * info.channels / 1e6:.0f} million samples to decode, over the {budget / 1e6:.0f} million this "
            f"decodes ({_fmt_time(max_seconds)} of {BUDGET_CHANNELS} channels at {BUDGET_RATE / 1000:g} kHz); "
            "convert it to stereo at 44.1 or 48 kHz first"
        )
    return _Selection(info, start, frames, max_seconds, budget)


def _soundfile_blocks(path: Path, sel: _Selection) -> Iterator[np.ndarray]:
    try:
        with sf.SoundFile(str(path)) as f:
            if sel.start:
                f.seek(sel.start)
            left = sel.frames
            while left != 0:
                n = BLOCK_FRAMES if left < 0 else min(BLOCK_FRAMES, left)
                data = f.read(n, dtype="float32", always_2d=True)
                if data.shape[0] == 0:
                    return
                yield data.T
                if left > 0:
                    left -= data.shape[0]
    except (sf.LibsndfileError, RuntimeError) as e:
        raise CorruptAudioError(f"{path.name}: the audio data is damaged or truncated ({e})") from None


def _ffmpeg_blocks(path: Path, sel: _Selection) -> Iterator[np.ndarray]:
    """Decode through an ffmpeg pipe, a block at a time: a file is never decoded whole first,
    so one whose header has no duration can be stopped at the cap."""
    if shutil.which("ffmpeg") is None:
        raise AudioError(f"{path.name}: decoding this format needs ffmpeg, which is not installed")
    info = sel.info
    cmd = ["ffmpeg", "-nostdin", "-v", "error"]
    if sel.start:
        cmd += ["-ss", f"{sel.start / info.sample_rate:.6f}"]  # input seeking: fast and exact for audio
    cmd += ["-i", str(path)]
    if sel.frames >= 0:
        cmd += ["-t", f"{sel.frames / info.sample_rate:.6f}"]
    cmd += ["-map", "0:a:0", "-f", "f32le", "-acodec", "pcm_f32le", "-"]
    frame_bytes = 4 * info.channels
    with tempfile.TemporaryFile() as errors:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=errors)
        try:
            while True:
                chunk = proc.stdout.read(BLOCK_FRAMES * frame_bytes)
                usable = len(chunk) - len(chunk) % frame_bytes
                if usable:
                    yield np.frombuffer(chunk[:usable], dtype="<f4").reshape(-1, info.channels).T.copy()
                if len(chunk) < BLOCK_FRAMES * frame_bytes:
                    break
            if proc.wait() != 0:
                errors.seek(0)
                lines = errors.read().decode("utf-8", "replace").strip().splitlines()
                raise CorruptAudioError(
                    f"{path.name}: ffmpeg could not decode it ({lines[-1] if lines else 'no detail'})"
                )
        finally:
            if proc.poll() is None:  # stopped early (the cap, a bad block): no orphan decoder
                proc.kill()
            proc.wait()
            proc.stdout.close()


def _decoded_blocks(path: Path, sel: _Selection) -> Iterator[np.ndarray]:
    """The selection's `(C, n)` float32 blocks, checked as they come: NaN/inf, the duration cap
    and the decode budget (which bind files whose header does not say how long they are),
    then, at the end, emptiness and truncation."""
    info = sel.info
    blocks = _soundfile_blocks if info.backend == "soundfile" else _ffmpeg_blocks
    done = 0
    for block in blocks(path, sel):
        check_finite(torch.from_numpy(block), info.sample_rate, name=path.name, offset=done)
        done += block.shape[-1]
        if sel.max_frames is not None and done > sel.max_frames:
            raise AudioTooLongError(
                f"{path.name}: the audio lasts more than the {_fmt_time(sel.max_seconds)} limit (its header does not "
                "say how long it is: decoding stopped there); choose an excerpt or raise the limit"
            )
        if sel.budget is not None and done * info.channels > sel.budget:
            raise AudioTooLargeError(
                f"{path.name}: more than {sel.budget / 1e6:.0f} million samples of {info.channels} channels at "
                f"{info.sample_rate / 1000:g} kHz, over what this decodes (decoding stopped there)"
            )
        yield block
    if done == 0:
        if sel.start:
            raise AudioError(
                f"{path.name}: the excerpt starts at {sel.start / info.sample_rate:.1f} s, after the end of the audio"
            )
        raise EmptyAudioError(f"{path.name}: the file decodes to no samples")
    if sel.start == 0 and sel.frames < 0:
        _check_complete(path, info, done)


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
    decoding when its header says how long it is, and decoding stops at the cap when it does
    not; so does a file with more samples to decode than `decode_budget(max_seconds)` (a few
    MB of FLAC can hold 8 channels at 384 kHz). A 2-hour upload costs a header read.
    """
    path = Path(path)
    sel = _select(path, offset=offset, duration=duration, max_seconds=max_seconds, max_bytes=max_bytes)
    blocks = list(_decoded_blocks(path, sel))
    wave = torch.from_numpy(np.concatenate(blocks, axis=-1) if len(blocks) > 1 else np.ascontiguousarray(blocks[0]))
    return wave, sel.info.sample_rate


def load_audio(
    path: str | os.PathLike,
    *,
    offset: float = 0.0,
    duration: float | None = None,
    max_seconds: float | None = None,
    max_bytes: int | None = None,
) -> torch.Tensor:
    """Decode a file into the project's format, `(2, samples)` float32 at 44.1 kHz.

    The same checks as `read_audio`, and the file is downmixed and resampled a block at a time
    as it is decoded: memory holds the 44.1-kHz stereo result and one block, whatever the
    file's rate and channel count (the same numbers as `prepare` on the whole signal).
    """
    path = Path(path)
    sel = _select(path, offset=offset, duration=duration, max_seconds=max_seconds, max_bytes=max_bytes)
    try:
        resampler = Resampler(sel.info.sample_rate, SAMPLE_RATE)
    except AudioError as e:
        raise AudioError(f"{path.name}: {e}") from None
    out = [resampler.push(to_stereo(torch.from_numpy(block))) for block in _decoded_blocks(path, sel)]
    out.append(resampler.finish())
    return torch.cat(out, dim=-1)


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


def check_finite(wave: torch.Tensor, sample_rate: int, *, name: str = "waveform", offset: int = 0) -> None:
    """Refuse NaN or infinite samples, saying where the first is (`offset`: frames before `wave`,
    when a file is checked a block at a time; the count is then the first bad block's)."""
    bad = ~torch.isfinite(wave)
    if bad.any():
        first = offset + int(bad.any(dim=0).nonzero()[0, 0])
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


MAX_KERNEL = 1 << 22  # resampling filter coefficients (16 MB); every common rate needs < 0.3 M


class Resampler:
    """`torchaudio.functional.resample` of a signal that arrives in blocks, holding one block and
    a margin: the output equals one call on the whole signal, up to float rounding.

    torchaudio's windowed-sinc resampler works in steps of `o = orig / gcd` input samples, each
    giving `n = new / gcd` outputs from the inputs within `width + o` of the step (its kernel
    spans `[-width, width + o)`, width = ceil(6 o / (0.99 min(o, n)))). So the signal is cut at
    multiples of `o`, each piece resampled with a margin of at least `width + o` samples on both
    sides (zeros beyond the signal's ends, as torchaudio pads), and the margin's output dropped.
    """

    def __init__(self, orig_rate: int, new_rate: int = SAMPLE_RATE, *, step_seconds: float = 2.0):
        if orig_rate <= 0 or new_rate <= 0:
            raise AudioError(f"invalid sample rate {orig_rate if orig_rate <= 0 else new_rate}")
        self.orig, self.new = int(orig_rate), int(new_rate)
        g = math.gcd(self.orig, self.new)
        self.o, self.n = self.orig // g, self.new // g
        width = math.ceil(6 * self.o / (0.99 * min(self.o, self.n)))
        if self.n * (2 * width + self.o) > MAX_KERNEL:
            # e.g. 44101 Hz: the ratio does not reduce and the filter bank would take gigabytes
            raise AudioError(
                f"{self.orig} Hz is not a sample rate this can convert to {self.new} Hz (the ratio "
                f"{self.n}/{self.o} needs a {self.n * (2 * width + self.o) * 4 / 1e6:.0f} MB filter): "
                "convert the file to 44.1 or 48 kHz first"
            )
        self.margin = -(-(width + self.o) // self.o) * self.o
        self.step = max(1, int(step_seconds * self.orig) // self.o) * self.o
        self.buffer: torch.Tensor | None = None
        self.base = 0  # signal index of buffer[..., 0]
        self.done = 0  # input samples whose output was returned (a multiple of o)

    def push(self, block: torch.Tensor) -> torch.Tensor:
        """Add `(C, n)` input; return the output that is now final, `(C, m)`."""
        if self.orig == self.new:
            return block
        self.buffer = block if self.buffer is None else torch.cat([self.buffer, block], dim=-1)
        out = []
        while self.base + self.buffer.shape[-1] >= self.done + self.step + self.margin:
            out.append(self._piece(self.done + self.step, final=False))
        return torch.cat(out, dim=-1) if out else self.buffer[..., :0]

    def finish(self) -> torch.Tensor:
        """The rest of the output, once the whole input has been pushed."""
        if self.orig == self.new or self.buffer is None:
            return torch.zeros(0) if self.buffer is None else self.buffer[..., :0]
        end = self.base + self.buffer.shape[-1]
        return self._piece(end, final=True) if end > self.done else self.buffer[..., :0]

    def _piece(self, stop: int, *, final: bool) -> torch.Tensor:
        first = max(0, self.done - self.margin)
        last = stop if final else stop + self.margin
        piece = AF.resample(self.buffer[..., first - self.base : last - self.base], self.orig, self.new)
        lead = (self.done - first) // self.o * self.n
        count = None if final else (stop - self.done) // self.o * self.n
        out = piece[..., lead:] if count is None else piece[..., lead : lead + count]
        self.done = stop
        keep = max(0, self.done - self.margin)
        self.buffer, self.base = self.buffer[..., keep - self.base :], keep
        return out


def resample(wave: torch.Tensor, orig_rate: int, new_rate: int = SAMPLE_RATE) -> torch.Tensor:
    """`(C, T)` at `orig_rate` -> `(C, T')` at `new_rate`, a few seconds at a time (bounded memory)."""
    if orig_rate == new_rate:
        return wave
    resampler = Resampler(orig_rate, new_rate)
    block = resampler.step
    out = [resampler.push(wave[..., a : a + block]) for a in range(0, wave.shape[-1], block)]
    out.append(resampler.finish())
    return torch.cat(out, dim=-1)


def prepare(waveform, sample_rate: int, *, name: str = "waveform") -> torch.Tensor:
    """Any `(C, T)` input at any rate -> checked `(2, T')` float32 at 44.1 kHz."""
    wave = as_waveform(waveform, name=name)
    check_finite(wave, sample_rate, name=name)
    # Downmix before resampling: half the work for surround input, same result (both linear).
    return resample(to_stereo(wave), sample_rate, SAMPLE_RATE).contiguous()


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
    path: str | os.PathLike,
    wave: torch.Tensor,
    sample_rate: int = SAMPLE_RATE,
    *,
    bit_depth: str = "24",
    mp3_kbps: int = 320,
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
        # libsndfile sets a constant MP3 bit rate from a compression level: 0 -> 320 kbit/s, linearly
        # down to 32 kbit/s, rounded by LAME to the nearest standard rate
        level = min(0.95, max(0.0, (320 - mp3_kbps) / (320 - 32)))
        kwargs = {"format": "MP3", "subtype": "MPEG_LAYER_III", "compression_level": level, "bitrate_mode": "CONSTANT"}
    else:
        kwargs = {"format": fmt.upper(), "subtype": BIT_DEPTHS[bit_depth]}
    try:
        atomic_write(path, lambda tmp: sf.write(tmp, data, sample_rate, **kwargs))
    except (sf.LibsndfileError, OSError, RuntimeError) as e:
        raise AudioWriteError(f"cannot write {path}: {e}") from None
    return path
