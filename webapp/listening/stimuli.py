"""Blind listening trials: excerpts, conditions, files a browser can learn nothing from.

A trial is a short excerpt (`TRIAL_SECONDS`) of one source of a separation, rated blind:
- MUSHRA (ITU-R BS.1534) when the true stems are known: an open reference, a hidden reference,
  a 3.5 kHz low-pass anchor and every model; 0-100 scores;
- A/B between two models otherwise, with a 1-5 quality score each; now and then (`GOLD_RATE`)
  a gold A/B trial of a model's output against a clearly degraded copy of it, whose answer is
  known (ITU-T P.808's "trapping questions").

What a browser sees identifies no condition:
- every condition, the anchor included, is loudness-matched to the reference (ITU-R BS.1770
  integrated loudness, pyloudnorm), then all are lowered together if that would clip, so no
  condition wins by being louder;
- every served file is written for its trial: the excerpt's file with a level offset of its own
  (uniform within +-`LEVEL_JITTER_DB`, far inside the loudness tolerance) and fresh TPDF dither
  (1 LSB at 16 bits, inaudible). No two served files are byte-identical, whichever trial or
  listener they go to, so one person's identification of a file (its hash, its size) is no
  lookup table for anyone else; the hidden reference is never the open one either. The offsets
  are kept with the trial (the export has them);
- each trial's files get new random names in new random folders, served from a static path
  (no content hash in the URL, unlike Gradio's cache, which gave the hidden reference away);
- all samples of a trial have the same length and format, and the page plays them in plain
  players (no waveform picture: the hidden reference's picture was the reference's).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import itertools
import json
import os
import random
import secrets
import struct
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyloudnorm
import soundfile as sf
from scipy import signal

from eval.ratings import RULES
from eval.scores import score_track
from separation.audio import SAMPLE_RATE
from separation.errors import SeparationError
from separation.files import atomic_write

from ..config import TRIAL_SECONDS
from ..service import SOURCES, Separation

ANCHOR_HZ = 3500.0  # BS.1534's low-pass anchor
GOLD_RATE = 0.2  # share of A/B trials that are gold (a degraded copy against the clean one)
EXCERPTS_PER_SOURCE = 3  # a fixed stimulus set: each source of a clip offers this many excerpts
PEAK = 10 ** (-1 / 20)  # -1 dBFS: loudness matching never pushes a sample above it
LEVEL_JITTER_DB = 0.2  # each served file's own level offset, +- this (a level JND is ~0.5-1 dB)
EXCERPT_METRICS = ("SDR", "ISR", "SAR", "SI-SDR")


@dataclass
class TrialAudio:
    trial_id: str
    kind: str  # mushra | ab | gold
    source: str
    labels: list[str]  # in display order
    files: dict[str, Path]  # label -> audio (random names: nothing in them reveals the condition)
    reference: Path | None  # the open reference (MUSHRA)
    seconds: float
    clip: str  # what the excerpt is from (the page names it)
    own: bool = False  # on the listener's own separation (outside the campaign's sessions)


# ---------------------------------------------------------------------------- signals


def lowpass(wave: np.ndarray, cutoff: float = ANCHOR_HZ) -> np.ndarray:
    """Zero-phase low-pass `(C, T)`: BS.1534's anchor (a 3.5 kHz low-passed reference)."""
    # a symmetric FIR applied centred ("same") has no phase shift at all: one FFT convolution
    # instead of filtfilt's two passes in the time domain (~50 ms per 10-s excerpt)
    taps = signal.firwin(1023, cutoff, fs=SAMPLE_RATE)
    return signal.fftconvolve(wave, taps[None, :], mode="same", axes=-1).astype(np.float32)


def degrade(wave: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A clearly worse copy for gold trials: 2 kHz low-pass and noise 10 dB below the signal."""
    dull = lowpass(wave, 2000.0)
    power = float(np.mean(dull**2)) or 1e-8
    return dull + rng.standard_normal(dull.shape).astype(np.float32) * np.sqrt(power / 10)


def fade_edges(wave: np.ndarray, seconds: float = 0.02) -> np.ndarray:
    """`(C, T)` with raised-cosine fades of `seconds` at both ends (the same for every condition):
    an excerpt is cut out of running music, and an abrupt edge is a click whose high frequencies
    would leak through the anchor's low-pass."""
    n = min(int(seconds * SAMPLE_RATE), wave.shape[-1] // 2)
    if n == 0:
        return wave
    ramp = (np.sin(np.linspace(0.0, np.pi / 2, n)) ** 2).astype(wave.dtype)
    out = wave.copy()
    out[..., :n] *= ramp
    out[..., -n:] *= ramp[::-1]
    return out


def loudness(wave: np.ndarray) -> float:
    """ITU-R BS.1770-4 integrated loudness of `(C, T)` in LUFS (-inf for silence)."""
    return float(pyloudnorm.Meter(SAMPLE_RATE).integrated_loudness(np.ascontiguousarray(wave.T, dtype=np.float64)))


def match_loudness(signals: dict[str, np.ndarray], target: str) -> tuple[dict[str, np.ndarray], dict[str, float]]:
    """Every signal at the integrated loudness of `signals[target]`, then all lowered by one gain
    if a peak would pass -1 dBFS (matched, not clipped). Returns the signals and their LUFS."""
    aim = loudness(signals[target])
    out = {}
    for name, wave in signals.items():
        level = loudness(wave)
        gain = 10 ** ((aim - level) / 20) if np.isfinite(level) and np.isfinite(aim) else 1.0
        out[name] = wave * np.float32(gain)
    peak = max(float(np.abs(w).max()) for w in out.values())
    if peak > PEAK:
        out = {name: w * np.float32(PEAK / peak) for name, w in out.items()}
    return out, {name: loudness(w) for name, w in out.items()}


def write_dithered(
    path: Path, wave: np.ndarray, rng: np.random.Generator, gain_db: float = 0.0, *, table: bool = False
) -> Path:
    """16-bit wav of `wave` (`(C, T)`: floats at full scale 1.0, or 16-bit samples) raised by
    `gain_db`, with TPDF dither of its own (1 LSB peak each side): two files of the same signal
    differ in their bytes. `table`: the dither is a stretch of this process's dither table at a
    random place (`_dither_table`), not drawn afresh: what every served file takes, on the
    request's path (a trial writes ~9 MB).

    Quantised and written here, in one pass each over the samples and one write: libsndfile's
    float-to-int conversion and a torch copy took 3/4 of a trial request's CPU under a crowd."""
    full_scale = 1 if wave.dtype == np.int16 else 32768
    out = np.array(wave.T, dtype=np.float32, order="C")  # (T, C): a wav's interleaved order
    out *= np.float32(full_scale * 10 ** (gain_db / 20))
    out += _tpdf(out.size, rng, table).reshape(out.shape)
    np.rint(out, out=out)
    np.clip(out, -32768, 32767, out=out)
    pcm = out.astype("<i2").tobytes()
    channels = out.shape[1]
    header = struct.pack(
        "<4sI4s4sIHHIIHH4sI",
        *(b"RIFF", 36 + len(pcm), b"WAVE", b"fmt ", 16, 1, channels, SAMPLE_RATE),
        *(SAMPLE_RATE * channels * 2, channels * 2, 16, b"data", len(pcm)),
    )
    return atomic_write(path, lambda tmp: _write_chunks(tmp, header, pcm))


def _write_chunks(path: Path, *chunks: bytes) -> None:
    with open(path, "wb") as f:
        for chunk in chunks:
            f.write(chunk)


DITHER_TABLE = 1 << 22  # samples (16 MB): a 10-s stereo trial file takes 0.9 M of it at a random place


@functools.cache
def _dither_table() -> np.ndarray:
    """TPDF noise in LSBs, drawn once per process from fresh entropy (no one can know it)."""
    rng = np.random.default_rng()
    return rng.random(DITHER_TABLE, dtype=np.float32) - rng.random(DITHER_TABLE, dtype=np.float32)


def _tpdf(n: int, rng: np.random.Generator, table: bool) -> np.ndarray:
    """`n` samples of TPDF dither in LSBs: from the table where asked and long enough."""
    if table and n <= DITHER_TABLE // 2:
        start = int(rng.integers(0, DITHER_TABLE - n + 1))
        return _dither_table()[start : start + n]
    return rng.random(n, dtype=np.float32) - rng.random(n, dtype=np.float32)


def _read(path: Path, start: int, frames: int) -> np.ndarray:
    return sf.read(path, start=start, frames=frames, dtype="float32", always_2d=True)[0].T


def audible_excerpt(paths: list[Path], frames: int, rng: random.Random, min_active: float = 0.6) -> int:
    """Start of a random `frames`-long excerpt, on a whole second, in which the source is audible
    most of the time.

    Real songs have long vocal-free stretches (intros, breaks, outros: 30-70 % of a track); a
    vocals trial drawn from one would ask listeners to rate silence. Each second counts as
    active when its energy (summed over `paths`, e.g. the reference) is within 40 dB of the
    loudest second; starts whose excerpt is at least `min_active` active are drawn from, else
    the most active excerpt is taken. Read a block at a time: uploads can be 10 minutes long.
    """
    energy = None
    for path in paths:
        blocks = sf.blocks(str(path), blocksize=SAMPLE_RATE, dtype="float32")
        per_second = np.array([float(np.square(b).sum()) for b in blocks])
        energy = per_second if energy is None else energy[: len(per_second)] + per_second[: len(energy)]
    total = int(sf.info(str(paths[0])).frames) if paths else frames
    if energy is None or total <= frames or energy.max() <= 0:
        return min(rng.randrange(0, max(0, total - frames) + 1) // SAMPLE_RATE * SAMPLE_RATE, max(0, total - frames))
    active = (energy > energy.max() * 1e-4).astype(float)  # -40 dB
    window = max(1, frames // SAMPLE_RATE)
    starts = np.arange(0, max(1, len(active) - window + 1))
    share = np.array([active[s : s + window].mean() for s in starts])
    good = starts[share >= min(min_active, share.max())]
    second = int(good[rng.randrange(len(good))])
    return min(second * SAMPLE_RATE, total - frames)


@functools.lru_cache(maxsize=4096)
def _fixed_start(separation_id: str, heard: tuple[Path, ...], frames: int, pick: int) -> int:
    """The start of excerpt `pick` of a separation's source: the same on every call (a separation's
    files never change), so read once."""
    return audible_excerpt(list(heard), frames, random.Random(f"{separation_id}|{heard[0].name}|{pick}"))


# ---------------------------------------------------------------------------- files


# Every served trial file carries this modification time. HTTP's ETag and Last-Modified are made
# from a file's mtime and size: with one mtime for all, and one length and format, they are equal
# for every sample of a trial.
SERVED_MTIME = 946_684_800  # 2000-01-01T00:00:00Z


class TrialFiles:
    """Where trial audio lives: `excerpts/` (made once per excerpt) and `served/` (per trial,
    random names, each file written for its trial; the only folder the app serves files from)."""

    def __init__(self, root: Path):
        self.root = root
        self.excerpts = root / "excerpts"
        self.served = root / "served"
        self.served.mkdir(parents=True, exist_ok=True)
        self._locks: dict[str, threading.Lock] = {}
        self._locks_lock = threading.Lock()

    def excerpt(self, key: str) -> Path:
        return self.excerpts / hashlib.sha256(key.encode()).hexdigest()[:24]

    def lock(self, key: str) -> threading.Lock:
        """The lock of one excerpt (made on first use; a few dozen excerpts in a campaign)."""
        return self.folder_lock(self.excerpt(key).name)

    def folder_lock(self, name: str) -> threading.Lock:
        """The lock of the excerpt folder `name`: what the work folder's clean-up takes before it
        deletes one, so that it never deletes an excerpt a trial has just touched or reads."""
        with self._locks_lock:
            return self._locks.setdefault(name, threading.Lock())

    def discard(self, files) -> None:
        """Delete served files (a trial answered, a check taken) and their folders once empty: the
        page has fetched and decoded them, and a trial's files are written for it alone. Only
        files in the served folder are touched."""
        for path in map(Path, files):
            if path.parent.parent != self.served:
                continue
            path.unlink(missing_ok=True)
            with contextlib.suppress(OSError):
                path.parent.rmdir()  # the last one out takes the folder

    def publish(self, files: dict[str, Path], rng: np.random.Generator | None = None) -> tuple[dict, dict]:
        """{name: file} -> ({name: a new random path of the same audio, served by the app},
        {name: its level offset in dB}): each written anew with a level offset of its own and fresh
        dither, so no served file equals any other byte for byte."""
        rng = rng or np.random.default_rng()
        folder = self.served / secrets.token_hex(16)
        folder.mkdir(parents=True)
        out, offsets = {}, {}
        for name, path in files.items():
            target = folder / f"{secrets.token_hex(12)}.wav"
            offsets[name] = round(float(rng.uniform(-LEVEL_JITTER_DB, LEVEL_JITTER_DB)), 4)
            pcm = sf.read(path, dtype="int16", always_2d=True)[0].T  # as written: no float conversion
            write_dithered(target, pcm, rng, offsets[name], table=True)
            os.utime(target, (SERVED_MTIME, SERVED_MTIME))  # no file's time tells when its excerpt was cut
            out[name] = target
        return out, offsets


# ---------------------------------------------------------------------------- trials


def make_trial(
    separation: Separation,
    store,
    listener: str,
    files: TrialFiles,
    *,
    rng: random.Random | None = None,
    seconds: float = TRIAL_SECONDS,
    source: str | None = None,
    kind: str | None = None,
    pair: tuple[str, str] | None = None,
    pick: int | None = None,
    start: int | None = None,
    own: bool = False,
    repeat_of: str | None = None,
) -> TrialAudio:
    """A blind trial from a separation: MUSHRA when the references are known (unless `kind="ab"`),
    otherwise A/B between two models (`pair`, or two at random), or, at `GOLD_RATE`, a gold
    trial. Labels are shuffled per trial. `pick` names one of the source's fixed excerpts (random
    where not given); `start` (a sample) and `repeat_of` (a trial id) repeat an excerpt already
    rated. `own`: the separation is the listener's own (an upload: nobody else rates it)."""
    rng = rng or random.Random()
    models = list(separation.stems)
    source = source or rng.choice(SOURCES)
    mushra = bool(separation.references) and kind != "ab"
    if mushra and not models:
        raise SeparationError("no model separated this clip: nothing to rate")
    if not mushra and len(models) < 2:
        raise SeparationError(
            "an A/B trial needs two models' separations (only "
            f"{', '.join(models) or 'none'} worked); pick a clip with references for a MUSHRA trial"
        )
    total = int(separation.seconds * SAMPLE_RATE)
    frames = min(total, int(seconds * SAMPLE_RATE))
    heard = [separation.references[source]] if mushra else [separation.stems[m][source] for m in models]
    # The excerpts of a (separation, source) are a fixed set, as in a planned listening test:
    # listeners' scores pile up on the same stimuli (a mean per excerpt and condition, which the
    # metric agreement needs), and every trial reuses the excerpt's files instead of cutting more.
    pick = rng.randrange(EXCERPTS_PER_SOURCE) if pick is None else pick
    if start is None:
        start = _fixed_start(separation.id, tuple(heard), frames, pick)
    if mushra:
        kind, conditions = "mushra", ["reference", "anchor", *models]
    elif rng.random() < GOLD_RATE:
        kind, conditions = "gold", ["clean", "degraded"]
        models = [rng.choice(models)]
    else:
        kind, conditions = "ab", list(pair) if pair and set(pair) <= set(models) else rng.sample(models, 2)
        models = list(conditions)
    key, excerpt, _ = ensure_excerpt(files, store, separation, source, start, frames, kind, models)
    rng.shuffle(conditions)
    labels = [chr(ord("A") + i) for i in range(len(conditions))]
    by_label = dict(zip(labels, conditions, strict=True))
    versions = {c: separation.versions.get(c, c) for c in conditions}
    if kind == "gold":
        versions = {c: separation.versions.get(models[0], models[0]) for c in conditions}
    answer = next((label for label, c in by_label.items() if c == "clean"), None)
    sources = {label: excerpt / f"{c}.wav" for label, c in by_label.items()}
    if kind == "mushra":
        sources["reference"] = excerpt / "open-reference.wav"
    with files.lock(key):  # the clean-up takes the same lock: the excerpt stays while it is read
        served, offsets = files.publish(sources)
    stimulus = None if own else stimulus_id(separation.clip, source, pick, models if kind == "ab" else None)
    if stimulus and kind == "gold":
        stimulus += "|gold"  # not the MUSHRA stimulus of the same excerpt: a check, balanced apart
    trial = store.create_trial(
        listener=listener,
        kind=kind,
        clip=separation.clip,
        source=source,
        conditions=by_label,
        versions=versions,
        seconds=frames / SAMPLE_RATE,
        excerpt=key,
        answer=answer,
        files=served,
        stimulus=stimulus,
        own=own,
        repeat_of=repeat_of,
        start_s=round(start / SAMPLE_RATE, 3),
        offsets=offsets,
    )
    return trial_audio(trial)


def stimulus_id(clip: str, source: str, pick: int, pair=None) -> str:
    """A campaign stimulus: excerpt `pick` of a clip's source (and, for A/B, the pair of models)."""
    return "|".join([clip, source, str(pick), *([",".join(sorted(pair))] if pair else [])])


def prepare_excerpts(separation: Separation, store, files: TrialFiles, seconds: float = TRIAL_SECONDS) -> int:
    """Write every MUSHRA excerpt of a separation with references (each source's fixed set, all
    its models), as a planned test prepares its stimuli: no trial then waits for one to be cut,
    matched and scored. Returns how many were written now."""
    if not separation.references or not separation.stems:
        return 0
    written = 0
    frames = min(int(separation.seconds * SAMPLE_RATE), int(seconds * SAMPLE_RATE))
    models = list(separation.stems)
    for source in SOURCES:
        heard = (separation.references[source],)
        for pick in range(EXCERPTS_PER_SOURCE):
            start = _fixed_start(separation.id, heard, frames, pick)
            written += ensure_excerpt(files, store, separation, source, start, frames, "mushra", models)[2]
    return written


def ensure_excerpt(files: TrialFiles, store, separation: Separation, source, start, frames, kind, models):
    """An excerpt's folder, written unless it is there: (key, folder, written now). Two trials, or a
    trial and the preparation, on a new excerpt write it once."""
    key = json.dumps([separation.id, source, start, frames, kind, sorted(models)])
    folder = files.excerpt(key)
    with files.lock(key):
        if (folder / "done").exists():
            os.utime(folder)  # in use: the work folder's clean-up removes excerpts by age
            return key, folder, False
        _write_excerpt(folder, separation, source, start, frames, kind, models, store, key)
    return key, folder, True


def trial_audio(trial) -> TrialAudio:
    """The audio of a stored trial (`store.Trial`) as it was served: labels in display order."""
    files = {label: Path(path) for label, path in trial.files.items()}
    reference = files.pop("reference", None)
    labels = sorted(trial.conditions)
    return TrialAudio(
        trial.id, trial.kind, trial.source, labels, files, reference, trial.seconds, trial.clip, bool(trial.own)
    )


def _write_excerpt(
    folder: Path,
    separation: Separation,
    source: str,
    start: int,
    frames: int,
    kind: str,
    models: list[str],
    store,
    key: str,
) -> None:
    """The excerpt's condition files, loudness-matched, faded and dithered, and (MUSHRA) the
    metrics of each condition on it. Written once; `done` marks it complete."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(int(hashlib.sha256(key.encode()).hexdigest()[:8], 16))
    if kind == "mushra":
        reference = _read(separation.references[source], start, frames)
        signals = {"reference": reference, "anchor": lowpass(reference)}
        signals |= {m: _read(separation.stems[m][source], start, frames) for m in models}
    elif kind == "gold":
        clean = _read(separation.stems[models[0]][source], start, frames)
        signals = {"clean": clean, "degraded": degrade(clean, rng)}
    else:
        signals = {m: _read(separation.stems[m][source], start, frames) for m in models}
    target = "reference" if kind == "mushra" else "clean" if kind == "gold" else models[0]
    signals, levels = match_loudness({c: fade_edges(x) for c, x in signals.items()}, target)
    for condition, wave in signals.items():
        write_dithered(folder / f"{condition}.wav", wave, rng)
    if kind == "mushra":
        write_dithered(folder / "open-reference.wav", signals["reference"], rng)  # its own dither
        if not store.has_excerpt_metrics(key):
            store.set_excerpt_metrics(key, excerpt_metrics(signals))
    (folder / "loudness.json").write_text(json.dumps(levels))
    (folder / "done").write_text("")


def excerpt_metrics(signals: dict[str, np.ndarray]) -> dict[str, dict[str, float]]:
    """BSSEval v4 (one source: SDR, ISR, SAR) and SI-SDR of each condition against the reference,
    as the listeners hear them (the same excerpt, matched in loudness): medians over 1-s windows.
    The hidden reference is the reference: its scores are not defined (perfect), so none."""
    reference = signals["reference"]
    out = {}
    for condition, wave in signals.items():
        if condition == "reference":
            continue
        try:
            scores = score_track({"x": reference}, {"x": wave}, track=condition).medians()["x"]
        except SeparationError:  # too short or silent: no metrics for this excerpt
            scores = {}
        out[condition] = {m: scores.get(m, float("nan")) for m in EXCERPT_METRICS}
    return out


# ---------------------------------------------------------------------------- headphone check


HEADPHONE_TRIALS = RULES.headphone_trials  # what the screening's pass mark is out of


# The three tones of a check trial in every order: six files, written once; every check serves
# its own copies of them (`TrialFiles.publish`).
HEADPHONE_ORDERS = tuple(itertools.permutations(("normal", "soft", "antiphase")))


def headphone_variants(folder: Path) -> list[Path]:
    """Woods et al. (2017), "Headphone screening to facilitate web-based auditory experiments":
    each trial is three 1-s 200-Hz tones; one is 6 dB softer, one is in antiphase between the
    left and right channels. Asked which is softest, a listener on headphones hears the -6 dB
    tone; over loudspeakers the antiphase tone cancels in the air and sounds softest. The files of
    the six orders (`HEADPHONE_ORDERS`), made once in `folder`."""
    files = [folder / f"order-{i}.wav" for i in range(len(HEADPHONE_ORDERS))]
    if (folder / "done").exists():
        return files
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)  # the dither: any fixed draw will do
    t = np.arange(SAMPLE_RATE) / SAMPLE_RATE
    tone = fade_edges(np.sin(2 * np.pi * 200 * t).astype(np.float32)[None] * 0.3, 0.1)[0]
    gap = np.zeros(SAMPLE_RATE // 2, np.float32)
    for path, order in zip(files, HEADPHONE_ORDERS, strict=True):
        parts = []
        for kind in order:
            left = tone * (10 ** (-6 / 20) if kind == "soft" else 1.0)
            right = -left if kind == "antiphase" else left
            parts += [np.stack([left, right]), np.stack([gap, gap])]
        write_dithered(path, np.concatenate(parts[:-1], axis=1), rng)
    (folder / "done").write_text("")
    return files


def headphone_check(files: TrialFiles, rng: np.random.Generator) -> tuple[list[Path], list[int]]:
    """A listener's check: `HEADPHONE_TRIALS` orders drawn at random, served under new random names
    (each written anew from the fixed files, with a level offset and dither of its own: no file of
    one check equals one of another); returns the served files and the right answers (1, 2 or 3)."""
    variants = headphone_variants(files.root / "headphones")
    picks = [int(rng.integers(len(HEADPHONE_ORDERS))) for _ in range(HEADPHONE_TRIALS)]
    served, _ = files.publish({str(i): variants[p] for i, p in enumerate(picks)}, rng)
    answers = [HEADPHONE_ORDERS[p].index("soft") + 1 for p in picks]
    return [served[str(i)] for i in range(HEADPHONE_TRIALS)], answers
