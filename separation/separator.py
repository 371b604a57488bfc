"""`Separator`: the one inference API that the CLI, the app and `eval` all call.

    sep = Separator.from_name("dprnn")                  # or "umxhq", "conv1d", "umxl"
    sep = Separator.from_pretrained("user/dprnn-vocals")  # or a local checkpoint folder
    stems = sep.separate(waveform, sample_rate)          # {"vocals": (2, T), "accompaniment": (2, T)}

Long tracks go through `overlap_add`: the track stays on the CPU, fixed-length segments are
cut with overlap, batched, moved to the device, and blended back with triangular weights
divided by their sum (demucs `apply_model`). Memory is bounded by the segment, not the
track: Open-Unmix run on a whole track needed > 64 GB on CPU (open-unmix-pytorch #113).
"""

from __future__ import annotations

import inspect
import logging
import math
import sys
import warnings
from collections.abc import Callable
from pathlib import Path

import torch
from torch import Tensor

from .audio import SAMPLE_RATE, load_audio, prepare
from .checkpoints import load_checkpoint
from .errors import DeviceError, SeparationError, UntrainedModelWarning
from .models import ModelInfo, SeparationModel
from .pretrained import NAMED_MODELS, get_named_model

log = logging.getLogger(__name__)

ProgressFn = Callable[[int, int], None]  # (segments done, segments in all)


def warn_every_call(message: str, category: type[Warning], stacklevel: int = 2) -> None:
    """`warnings.warn`, shown on every call rather than once per place: a model with random
    weights must say so each time it is used. A fresh registry does it without touching the
    process's warning filters (which `simplefilter` at import would change for everyone)."""
    frame = sys._getframe(stacklevel)
    warnings.warn_explicit(
        message,
        category,
        frame.f_code.co_filename,
        frame.f_lineno,
        module=frame.f_globals.get("__name__"),
        registry={},
        module_globals=frame.f_globals,
    )


def select_device(device: str | torch.device = "auto") -> torch.device:
    """`auto` picks CUDA when present. Asking for CUDA without one is an error, never a quiet
    CPU fallback (python-audio-separator #137)."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise DeviceError(f"unknown device {device!r}: use auto, cpu or cuda[:N]") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise DeviceError(
                f"device {str(device)!r}: CUDA was requested but no GPU is usable here "
                "(torch.cuda.is_available() is False); use cpu"
            )
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise DeviceError(f"{dev} requested but only {torch.cuda.device_count()} GPU(s) are present")
    elif dev.type != "cpu":
        raise DeviceError(f"unsupported device {device!r}: use auto, cpu or cuda[:N]")
    return dev


def triangular_weight(length: int) -> Tensor:
    """`(length,)` weights rising to 1 in the middle; all strictly positive, so the summed
    weights can be divided by anywhere (edge samples with one segment included)."""
    half = torch.arange(1, length // 2 + 1, dtype=torch.float32)
    rest = torch.arange(length - length // 2, 0, -1, dtype=torch.float32)
    weight = torch.cat([half, rest])
    return weight / weight.max()


def segment_offsets(length: int, segment: int, overlap: float) -> list[int]:
    """Start of each segment; the last one is aligned to the end so no segment needs padding."""
    if length <= segment:
        return [0]
    stride = max(1, segment - int(round(overlap * segment)))
    offsets = list(range(0, length - segment, stride))
    offsets.append(length - segment)
    return offsets


# Test-time augmentation (`shifts`): the passes' delays spread over this span, as Demucs's
# shift trick (whose random shifts reach 0.5 s); at most MAX_SHIFTS passes, so that the time a
# request may cost stays a bound this code chooses.
SHIFT_SPAN_SECONDS = 0.5
MAX_SHIFTS = 8


def check_shifts(shifts, name: str = "shifts") -> int:
    """`shifts` as an int, or a one-line error naming the setting as the user wrote it
    (`--shifts`, `APP_SHIFTS`): the CLIs and the app check before any work starts."""
    if isinstance(shifts, bool) or not isinstance(shifts, int) or not 1 <= shifts <= MAX_SHIFTS:
        raise SeparationError(f"{name} must be a whole number from 1 to {MAX_SHIFTS}, not {shifts!r}")
    return shifts


class OutOfMemory(SeparationError):
    """The device ran out of memory even one segment at a time."""


@torch.inference_mode()
def overlap_add(
    fn: Callable[[Tensor], Tensor],
    mix: Tensor,
    *,
    segment: int,
    overlap: float = 0.25,
    batch_size: int = 2,
    device: torch.device | str = "cpu",
    min_length: int = 1,
    progress: ProgressFn | None = None,
) -> Tensor:
    """Weighted overlap-add: run `fn` over overlapping segments of a long signal.

    Args:
        fn: `(B, C, L) -> (B, S, C, L)`, e.g. a model's forward.
        mix: `(C, T)` signal, kept on the CPU.
        segment: segment length L in samples. A signal shorter than that is one segment
            (zero-padded up to `min_length` if it is shorter still).
        overlap: fraction of a segment shared with the next one.
        batch_size: segments per call to `fn`; halved on a CUDA out-of-memory error.
        device: where `fn` runs; only the current batch of segments is moved there.
        progress: called with (segments done, total) after each batch.
    Returns:
        `(S, C, T)` on the CPU: `sum_k w_k * y_k / sum_k w_k` with triangular weights `w_k`,
        so an identity `fn` returns `mix` unchanged (to float rounding).
    """
    if not 0 <= overlap < 1:
        raise ValueError(f"overlap must be in [0, 1), not {overlap}")
    channels, length = mix.shape
    segment = min(segment, length)
    seg_len = max(segment, min_length)
    offsets = segment_offsets(length, segment, overlap)
    weight = triangular_weight(segment)
    out: Tensor | None = None
    total_weight = torch.zeros(length)
    done = 0
    while done < len(offsets):
        batch_offsets = offsets[done : done + batch_size]
        batch = torch.stack([mix[:, o : o + segment] for o in batch_offsets])
        if seg_len > segment:
            batch = torch.nn.functional.pad(batch, (0, seg_len - segment))
        try:
            est = fn(batch.to(device)).to("cpu", torch.float32)[..., :segment]
        except torch.OutOfMemoryError:
            if batch_size == 1:
                raise OutOfMemory(
                    f"{device} ran out of memory on one {segment / SAMPLE_RATE:.1f}-s segment: "
                    "use a shorter --segment or --device cpu"
                ) from None
            batch_size = max(1, batch_size // 2)
            log.warning("out of memory on %s: retrying with %d segment(s) per batch", device, batch_size)
            torch.cuda.empty_cache()
            continue
        if out is None:
            out = torch.zeros(est.shape[1], channels, length)
        for o, y in zip(batch_offsets, est, strict=True):
            out[..., o : o + segment] += y * weight
            total_weight[o : o + segment] += weight
        done += len(batch_offsets)
        if progress is not None:
            progress(done, len(offsets))
    assert out is not None
    return out.div_(total_weight)  # in place: a 10-minute track's stems are 0.4 GB per copy


class Separator:
    """A model on a device, with the chunking that makes any track length fit in memory."""

    def __init__(
        self,
        model: SeparationModel,
        info: ModelInfo | None = None,
        *,
        device: str | torch.device = "auto",
        segment: float | None = None,
        overlap: float = 0.25,
        batch_size: int = 2,
        wiener: int | None = None,
        shifts: int = 1,
    ):
        """
        Args:
            segment: seconds per segment (default: the model's own preference).
            overlap: fraction of each segment shared with the next.
            wiener: EM iterations for mask models (default: the model's config); refused by
                models that have no spectrogram stage (conv1d).
            shifts: passes averaged (test-time augmentation, see `_separate_prepared`):
                1 is one plain pass; N costs N times as long. At most `MAX_SHIFTS`.
        """
        self.info = info or ModelInfo(type(model).__name__, model.architecture, True, "in memory")
        self.device = select_device(device)
        self.model = model.to(self.device).eval()
        if wiener is not None:
            if not model.supports_wiener:
                raise SeparationError(f"{self.info.name} is a time-domain model: Wiener/EM refinement does not apply")
            if wiener < 0:
                raise SeparationError(f"--wiener must be >= 0, not {wiener}")
            self.model.wiener_iterations = int(wiener)
        self.segment = float(segment if segment is not None else model.segment_seconds)
        if self.segment <= 0:
            raise SeparationError(f"segment must be > 0 seconds, not {self.segment}")
        self.overlap = overlap
        self.batch_size = batch_size
        self.shifts = check_shifts(shifts)
        log.info(
            "%s (%s, %s) on %s, %.1f-s segments%s",
            self.info.name,
            self.info.architecture,
            "trained" if self.info.trained else "RANDOM WEIGHTS",
            self.device,
            self.segment,
            f", {self.shifts} passes averaged" if self.shifts > 1 else "",
        )

    # ------------------------------------------------------------------ construction

    def variant(self, model: SeparationModel | None = None, **changes) -> Separator:
        """The same separator with some settings changed (device, segment, overlap, batch_size,
        shifts), e.g. shorter segments after an out-of-memory error: whatever is not named is
        kept, so a retry never quietly drops a setting the user chose. The settings are read from
        the constructor's signature (see `variant_settings`), so a new one is not listed twice."""
        settings = {name: getattr(self, name) for name in variant_settings()}
        unknown = set(changes) - set(settings)
        if unknown:
            raise TypeError(f"variant() got unknown settings: {', '.join(sorted(unknown))}")
        return Separator(model if model is not None else self.model, self.info, **(settings | changes))

    @classmethod
    def from_name(cls, name: str, **kwargs) -> Separator:
        """A named model: `dprnn`, `conv1d`, `umxhq`, `umxl` (see `separation.pretrained`)."""
        model, info = get_named_model(name).load()
        return cls(model, info, **kwargs)

    @classmethod
    def from_pretrained(cls, location: str | Path, *, revision: str | None = None, **kwargs) -> Separator:
        """A checkpoint folder or a Hugging Face Hub repo id (`user/name`), same code path."""
        model, info = load_checkpoint(location, revision=revision)
        return cls(model, info, **kwargs)

    @classmethod
    def load(cls, name_or_location: str | Path, *, revision: str | None = None, **kwargs) -> Separator:
        """`from_name` for a registered name, else `from_pretrained`."""
        if str(name_or_location) in NAMED_MODELS:
            if revision:
                raise SeparationError(f"a revision applies to Hub repos, not to the named model {name_or_location!r}")
            return cls.from_name(str(name_or_location), **kwargs)
        return cls.from_pretrained(name_or_location, revision=revision, **kwargs)

    # ------------------------------------------------------------------ properties

    @property
    def sources(self) -> tuple[str, ...]:
        return self.model.sources

    @property
    def sample_rate(self) -> int:
        return SAMPLE_RATE

    @property
    def name(self) -> str:
        return self.info.name

    @property
    def segment_samples(self) -> int:
        return int(math.ceil(self.segment * SAMPLE_RATE))

    # ------------------------------------------------------------------ separation

    def separate(self, waveform, sample_rate: int, *, progress: ProgressFn | None = None) -> dict[str, Tensor]:
        """Split a mixture into its sources.

        Args:
            waveform: `(channels, samples)` or `(samples,)` tensor or array, any rate, any
                channel count (mono is duplicated, surround downmixed).
            sample_rate: rate of `waveform` in Hz.
            progress: called with (segments done, total).
        Returns:
            `{source: (2, T')}` float32 CPU tensors at 44.1 kHz, `T'` the input's duration
            at 44.1 kHz; e.g. `{"vocals": ..., "accompaniment": ...}`.
        """
        mix = prepare(waveform, sample_rate)
        return self._separate_prepared(mix, progress)

    def separate_file(
        self, path: str | Path, *, progress: ProgressFn | None = None, **read_kwargs
    ) -> dict[str, Tensor]:
        """Decode (see `audio.load_audio` for offset/duration/max_seconds/max_bytes) and separate."""
        return self._separate_prepared(load_audio(path, **read_kwargs), progress)

    def _separate_prepared(self, mix: Tensor, progress: ProgressFn | None) -> dict[str, Tensor]:
        if not self.info.trained:
            warn_every_call(
                f"{self.info.name} has RANDOM weights (no trained checkpoint): its output is not a separation",
                UntrainedModelWarning,
                stacklevel=3,
            )
        if float(mix.abs().max()) == 0.0:
            log.warning("the input is digital silence: every stem is silence too")
            if progress is not None:
                progress(1, 1)
            return {name: torch.zeros_like(mix) for name in self.sources}
        passes = self._passes()
        # The delayed passes are longer and may take one segment more: one total for them all,
        # counted by the chunker's own `segment_offsets`.
        length = mix.shape[-1]
        counts = [len(segment_offsets(length + delay, self.segment_samples, self.overlap)) for delay, _ in passes]
        total = sum(counts)
        stems: Tensor | None = None
        with torch.inference_mode():  # the passes' stems are inference tensors, summed in place
            for i, (delay, swap) in enumerate(passes):
                before = sum(counts[:i])
                step = None if progress is None else (lambda n, _total, b=before: progress(b + n, total))
                est = self._one_pass(mix, delay, swap, step)
                stems = est if stems is None else stems.add_(est)  # pass 0 is plain: its own tensor
            assert stems is not None
            if len(passes) > 1:
                stems.div_(len(passes))
        return {name: stems[i] for i, name in enumerate(self.sources)}

    def _passes(self) -> list[tuple[int, bool]]:
        """(delay in samples, swap left and right) of each pass.

        Pass i delays the input by i/N of `SHIFT_SPAN_SECONDS` and odd passes swap the
        channels: the STFT frames, the model's chunk grid and the segment edges all fall
        elsewhere, and left/right see each other's side (training swaps channels too), so the
        passes' errors differ and partly cancel when averaged. Deterministic, unlike Demucs's
        random shifts, so the same file gives the same stems on every run.
        """
        span = int(SHIFT_SPAN_SECONDS * SAMPLE_RATE)
        return [(i * span // self.shifts, i % 2 == 1) for i in range(self.shifts)]

    def _one_pass(self, mix: Tensor, delay: int, swap: bool, progress: ProgressFn | None) -> Tensor:
        """`(C, T)` -> `(S, C, T)`: the model on `mix` delayed by `delay` zeros (and with its
        channels reversed), realigned and restored to the input's channel order. The flipped
        copy did not raise the peak: a 10-minute track peaked at 2.54 GiB with two passes both
        with it and with the odd pass summed channel by channel without it (measured)."""
        if swap:
            mix = mix.flip(0)
        if delay:
            mix = torch.nn.functional.pad(mix, (delay, 0))
        est = overlap_add(
            self.model,
            mix,
            segment=self.segment_samples,
            overlap=self.overlap,
            batch_size=self.batch_size,
            device=self.device,
            min_length=self.model.min_samples,
            progress=progress,
        )
        est = est[..., delay:]  # a view: summed into the average without another copy
        return est.flip(1) if swap else est


# `wiener` lives on the model (`wiener_iterations`) and travels with it into a variant.
MODEL_SETTINGS = ("wiener",)


def variant_settings() -> tuple[str, ...]:
    """The settings `Separator.variant` keeps: the constructor's keyword-only parameters, each
    stored on the separator under its own name, but for those the model carries."""
    params = inspect.signature(Separator.__init__).parameters.values()
    return tuple(p.name for p in params if p.kind is p.KEYWORD_ONLY and p.name not in MODEL_SETTINGS)
