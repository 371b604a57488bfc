"""What the app does, without the UI: models, separation with fallbacks, metrics, figures, trials.

Everything here is plain Python called by `app.py` (and by the benchmark and the tests), so
the pipeline is tested without a browser. Shapes: waveforms are `(2, T)` float32 at 44.1 kHz.
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import os
import shutil
import stat as stat_module
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from eval.scores import METRICS, score_track
from separation import Separator, save_audio
from separation.audio import SAMPLE_RATE
from separation.checkpoints import weights_digest
from separation.errors import SeparationError
from separation.files import atomic_write_text
from separation.separator import OutOfMemory

from .figures import band_power, framewise_figure, spectrogram_figure

log = logging.getLogger("webapp")

SOURCES = ("vocals", "accompaniment")

Progress = Callable[[float, str], None]


# ---------------------------------------------------------------------------- models


@dataclass
class ModelSlot:
    name: str
    state: str = "loading"  # loading | ready | unavailable
    message: str = "loading..."  # public: shown in the page and the API
    separator: Separator | None = None
    version: str = ""  # `name#sha` of the weights, stored with every rating
    detail: str = ""  # the whole error message: the server log only (it names server paths)

    @property
    def ready(self) -> bool:
        return self.state == "ready"


def one_line(text: str, limit: int = 160) -> str:
    """A reason short enough for a column header: the first line, cut at a word."""
    text = text.splitlines()[0] if text else ""
    if len(text) <= limit:
        return text
    return text[:limit].rsplit(" ", 1)[0] + " ..."


def public_message(exc: BaseException) -> str:
    """What a public page may say about an error: a `SeparationError`'s public text (no server
    paths), nothing of anything else (a bug: its text stays in the server log)."""
    if isinstance(exc, SeparationError):
        return exc.public
    return f"an internal error ({type(exc).__name__}); the details are in the server log"


def model_version(sep: Separator) -> str:
    """`name#sha` of the weights (the first 12 hex digits of `weights_digest`): ratings and API
    answers say exactly which checkpoint made the audio, without saying where it is stored.
    Averaged passes give other audio from the same weights: `name#sha+shifts2`."""
    version = f"{sep.info.name}#{weights_digest(sep.model)[:12]}"
    return version + (f"+shifts{sep.shifts}" if sep.shifts > 1 else "")


class ModelPool:
    """The app's models, loaded in background threads so the UI is up at once; a model that
    cannot load (no weights offline, a broken checkpoint) is `unavailable` with a one-line
    public reason (the full one goes to the server log), and the others work."""

    def __init__(
        self,
        names: list[str],
        *,
        device: str = "auto",
        shifts: int = 1,
        loader: Callable[[str], Separator] | None = None,
        background: bool = True,
    ):
        self.device = device
        self.loader = loader or (lambda name: Separator.load(name, device=device, shifts=shifts))
        self.slots = {name: ModelSlot(name) for name in names}
        self._threads = [threading.Thread(target=self._load, args=(n,), daemon=True, name=f"load-{n}") for n in names]
        for t in self._threads:
            t.start() if background else t.run()

    def _load(self, name: str) -> None:
        slot = self.slots[name]
        try:
            sep = self.loader(name)
            slot.version = model_version(sep)
            slot.separator = sep
            slot.message = (
                f"{sep.info.architecture}, {'trained' if sep.info.trained else 'RANDOM WEIGHTS'}, on {sep.device.type}"
                + (f", {sep.shifts} passes averaged" if sep.shifts > 1 else "")
            )
            slot.state = "ready"
            log.info("%s: %s from %s on %s", name, slot.version, sep.info.origin, sep.device)
        except Exception as exc:  # one model failing must not take the app down
            slot.detail = str(exc) or type(exc).__name__
            slot.message = "unavailable: " + one_line(public_message(exc))
            slot.state = "unavailable"
            log.warning("%s is unavailable: %s", name, slot.detail)

    def wait(self, timeout: float | None = None) -> None:
        for t in self._threads:
            if t.ident is not None:  # loaded in the foreground (`background=False`): nothing to wait for
                t.join(timeout)

    def ready(self) -> list[ModelSlot]:
        return [s for s in self.slots.values() if s.ready]

    @contextlib.contextmanager
    def on(self, device: torch.device | str):
        """The ready models moved to `device` for the duration (ZeroGPU: CUDA exists only inside
        the `spaces.GPU` function), and back to where they were after."""
        device = torch.device(device)
        moved = []
        for slot in self.ready():
            sep = slot.separator
            if sep is not None and sep.device != device:
                moved.append((slot, sep))
                slot.separator = sep.variant(sep.model.to(device), device=device)
        try:
            yield
        finally:
            for slot, sep in moved:
                sep.model.to(sep.device)
                slot.separator = sep


def separate_with_fallback(
    slot: ModelSlot, mix: torch.Tensor, progress: Callable[[int, int], None] | None = None
) -> dict[str, torch.Tensor]:
    """Separate; on out-of-memory retry with half-length segments, then on the CPU."""
    sep = slot.separator
    assert sep is not None
    try:
        return sep.separate(mix, SAMPLE_RATE, progress=progress)
    except OutOfMemory:
        log.warning(
            "%s: out of memory with %.1f-s segments on %s; retrying with %.1f-s segments",
            slot.name,
            sep.segment,
            sep.device,
            sep.segment / 2,
        )
    if sep.device.type == "cuda":
        torch.cuda.empty_cache()
    try:
        smaller = sep.variant(segment=sep.segment / 2, batch_size=1)
        return smaller.separate(mix, SAMPLE_RATE, progress=progress)
    except OutOfMemory:
        if sep.device.type == "cpu":
            raise OutOfMemory(
                f"{slot.name}: not enough memory for this input even in short segments; try a shorter excerpt"
            ) from None
        log.warning("%s: out of memory on %s again; retrying on the CPU", slot.name, sep.device)
    cpu = sep.variant(copy.deepcopy(sep.model).cpu(), device="cpu", segment=sep.segment / 2, batch_size=1)
    return cpu.separate(mix, SAMPLE_RATE, progress=progress)


# ---------------------------------------------------------------------------- separation


@dataclass
class Separation:
    """One separation of one input by every ready model, with files on disk."""

    id: str
    workdir: Path
    clip: str
    seconds: float
    mixture: Path
    references: dict[str, Path] | None
    stems: dict[str, dict[str, Path]] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)
    unavailable: set[str] = field(default_factory=set)  # models that were not loaded (errors says why)
    metrics: list[dict] = field(default_factory=list)  # rows: model, source, SDR, SIR, ISR, SAR, SI-SDR
    framewise: dict[str, dict[str, list[float]]] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    figures: dict = field(default_factory=dict)  # "vocals", "accompaniment", "framewise" -> plotly figures


RECORD_NAME = "separation.json"


def keep_separation(sep: Separation, folder: Path) -> Separation:
    """Move a separation's files to `folder` (outside the work folder's clean-up) with a record of
    it, so that a later process reads it back (`read_separation`) instead of separating again.
    Figures are not kept: they are made for the page that asked, not for trials."""

    def relative(path: Path) -> str:
        return str(Path(path).relative_to(sep.workdir))

    record = {
        "id": sep.id,
        "clip": sep.clip,
        "seconds": sep.seconds,
        "mixture": relative(sep.mixture),
        "references": {k: relative(v) for k, v in sep.references.items()} if sep.references else None,
        "stems": {m: {k: relative(v) for k, v in st.items()} for m, st in sep.stems.items()},
        "versions": sep.versions,
        "errors": sep.errors,
        "unavailable": sorted(sep.unavailable),
        "metrics": sep.metrics,
        "framewise": sep.framewise,
        "timings": sep.timings,
    }
    atomic_write_text(sep.workdir / RECORD_NAME, json.dumps(record))
    if folder.exists():
        shutil.rmtree(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(str(sep.workdir), str(folder))
    kept = read_separation(folder)  # the one reader of the record, here as after a restart
    if kept is None:
        raise SeparationError(f"the separation kept in {folder.name} cannot be read back")
    return kept


def kept_clip(folder: Path) -> str | None:
    """The clip a kept separation is of (None: no readable record)."""
    try:
        return json.loads((folder / RECORD_NAME).read_text())["clip"]
    except (OSError, ValueError, KeyError, TypeError):
        return None


def read_separation(folder: Path) -> Separation | None:
    """A separation kept by `keep_separation`, or None where there is none or a file is missing."""
    try:
        r = json.loads((folder / RECORD_NAME).read_text())
        sep = Separation(
            id=r["id"],
            workdir=folder,
            clip=r["clip"],
            seconds=r["seconds"],
            mixture=folder / r["mixture"],
            references={k: folder / v for k, v in r["references"].items()} if r["references"] else None,
            stems={m: {k: folder / v for k, v in st.items()} for m, st in r["stems"].items()},
            versions=r["versions"],
            errors=r["errors"],
            unavailable=set(r["unavailable"]),
            metrics=r["metrics"],
            framewise=r["framewise"],
            timings=r["timings"],
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None
    files = [sep.mixture, *(sep.references or {}).values(), *(p for st in sep.stems.values() for p in st.values())]
    return sep if all(f.exists() for f in files) else None


def write_wav(path: Path, wave: torch.Tensor | np.ndarray) -> Path:
    """16-bit wav, what every browser plays; peaks above full scale are clipped, not wrapped."""
    return save_audio(path, torch.as_tensor(wave).clamp(-1.0, 1.0), SAMPLE_RATE, bit_depth="16")


def new_workdir(root: Path) -> Path:
    d = root / time.strftime("%Y%m%d") / uuid.uuid4().hex[:12]
    d.mkdir(parents=True)
    return d


def cleanup(root: Path, max_age_s: float = 24 * 3600, max_bytes: int | None = None, locks=None) -> None:
    """Delete work folders older than `max_age_s`, then the oldest others while the work folder
    is over `max_bytes`: request folders (`<day>/<id>`), trial excerpts and served trial files.
    (Gradio keeps its own copies of what it served; hard links keep a served file alive.)

    Sizes are real disk use: a trial's files are hard links of its excerpt's, so each file is
    counted once however many names it has, and deleting a folder frees only the files that have
    no other name left. (What a cache points to lives outside this folder: the shared demo
    separations are kept in the data folder, `keep_separation`.)

    `locks(name)`, where given, is the lock of the trial excerpt folder `name`
    (`TrialFiles.folder_lock`): an excerpt is deleted holding it, and only if it was not touched
    since it was looked at (a trial that touched it goes on reading it)."""
    for legacy in root.glob("ratings-*"):  # raw exports the app once wrote where it serves files
        shutil.rmtree(legacy, ignore_errors=True)
    folders = [d for day in root.glob("[0-9]" * 8) for d in day.iterdir() if d.is_dir()]
    folders += [d for part in ("excerpts", "served") for d in (root / "trials" / part).glob("*") if d.is_dir()]
    now, aged = time.time(), []
    for d in folders:
        try:
            stat = d.stat()
        except OSError:
            continue
        if now - stat.st_mtime > max_age_s:
            _remove(d, stat.st_mtime, locks)
        else:
            aged.append((stat.st_mtime, d))
    if max_bytes is None:
        return
    total = disk_bytes(root)
    for mtime, d in sorted(aged):
        if total <= max_bytes:
            break
        freed = sum(st.st_size for st in _file_stats(d) if st.st_nlink == 1)  # no other name keeps it
        if _remove(d, mtime, locks):
            total -= freed


def _remove(folder: Path, mtime: float, locks) -> bool:
    """Delete `folder` if it still has the modification time it was judged by; an excerpt folder
    only holding its lock (see `cleanup`). Returns whether it was deleted."""
    lock = locks(folder.name) if locks is not None and folder.parent.name == "excerpts" else contextlib.nullcontext()
    with lock:
        try:
            if folder.stat().st_mtime != mtime:
                return False  # touched meanwhile: in use
        except OSError:
            return False
        shutil.rmtree(folder, ignore_errors=True)
    return True


def disk_bytes(root: Path) -> int:
    """The bytes the files under `root` take, each file once however many hard links it has."""
    return sum({(st.st_dev, st.st_ino): st.st_size for st in _file_stats(root)}.values())


def _file_stats(root: Path) -> Iterator[os.stat_result]:
    for f in root.rglob("*"):
        try:
            st = f.lstat()
        except OSError:  # deleted meanwhile
            continue
        if stat_module.S_ISREG(st.st_mode):
            yield st


class _Timer:
    """Adds each stage's wall time to `timings` (stages that recur, per model, accumulate)."""

    def __init__(self, timings: dict[str, float]):
        self.timings = timings

    @contextlib.contextmanager
    def __call__(self, stage: str):
        start = time.perf_counter()
        try:
            yield
        finally:
            self.timings[stage] = self.timings.get(stage, 0.0) + time.perf_counter() - start


def run_separation(
    mix: torch.Tensor,
    references: dict[str, torch.Tensor] | None,
    *,
    pool: ModelPool,
    workdir: Path,
    clip: str,
    progress: Progress | None = None,
    figures: bool = True,
    models: list[str] | None = None,
) -> Separation:
    """Separate `mix` with every ready model (or those in `models`); score against `references`.

    Each model's stems are written, scored and reduced to their spectrogram panels as soon as
    they exist, then let go: memory holds the mixture, the references and one model's stems,
    not every model's (a 10-minute upload is 0.2 GB per stereo signal).
    """
    t0 = time.perf_counter()
    wanted = [name for name in pool.slots if models is None or name in models]
    slots = [pool.slots[name] for name in wanted if pool.slots[name].ready]
    mixture = write_wav(workdir / "mixture.wav", mix)
    result = Separation(uuid.uuid4().hex, workdir, clip, mix.shape[-1] / SAMPLE_RATE, mixture, None)
    timed = _Timer(result.timings)
    if references:
        result.references = {s: write_wav(workdir / f"reference-{s}.wav", references[s]) for s in SOURCES}
    for name in wanted:
        slot = pool.slots[name]
        if not slot.ready:
            loading = "still loading, try again in a moment"
            result.errors[name] = slot.message if slot.state == "unavailable" else loading
            result.unavailable.add(name)
    result.timings["write inputs"] = time.perf_counter() - t0
    panels = _Panels(mix, references) if figures else None
    if panels is not None:
        with timed("spectrograms"):
            panels.add_inputs()
    for i, slot in enumerate(slots):

        def step(done: int, total: int, i=i, slot=slot) -> None:
            if progress is not None:
                progress((i + done / total) / max(1, len(slots)), f"{slot.name}: segment {done}/{total}")

        try:
            with timed(f"separate {slot.name}"):
                stems = separate_with_fallback(slot, mix, step)
                result.stems[slot.name] = {s: write_wav(workdir / f"{slot.name}-{s}.wav", stems[s]) for s in SOURCES}
        except SeparationError as exc:
            result.errors[slot.name] = exc.public
            log.warning("%s failed on %s: %s", slot.name, clip, exc)
            continue
        result.versions[slot.name] = slot.version
        if references:
            with timed("metrics"):
                _score(result, slot.name, references, stems)
        if panels is not None:
            with timed("spectrograms"):
                panels.add_model(slot.name, stems)
        del stems
    if progress is not None:
        progress(1.0, "figures")
    if panels is not None:
        with timed("spectrograms"):
            result.figures.update(panels.figures())
        if result.framewise:
            with timed("framewise plot"):
                result.figures["framewise"] = framewise_figure(result.framewise)
    result.timings["total"] = time.perf_counter() - t0
    return result


def _score(result: Separation, model: str, references: dict[str, torch.Tensor], stems: dict[str, torch.Tensor]) -> None:
    """A model's BSSEval medians and SDR over time into `result` (or why they are undefined)."""
    try:
        scores = score_track(references, stems, track=result.clip)
    except SeparationError as exc:  # e.g. a silent reference excerpt: BSSEval is undefined
        result.errors[f"{model} metrics"] = exc.public
        return
    medians = scores.medians()
    for source in SOURCES:
        result.metrics.append({"model": model, "source": source, **{m: medians[source][m] for m in METRICS}})
    result.framewise[model] = {s: scores.frames[s]["SDR"].tolist() for s in SOURCES}


class _Panels:
    """The spectrogram panels of a separation, as band powers: reduced as each signal comes."""

    def __init__(self, mix: torch.Tensor, references: dict[str, torch.Tensor] | None):
        self.mix, self.references = mix, references
        self.signals: dict[str, dict[str, tuple]] = {source: {} for source in SOURCES}  # in display order
        self.errors: dict[str, dict[str, tuple]] = {source: {} for source in SOURCES}

    def add_inputs(self) -> None:
        mixture = band_power(self.mix)
        for source in SOURCES:
            self.signals[source]["mixture"] = mixture
            if self.references:
                self.signals[source][f"reference {source}"] = band_power(self.references[source])

    def add_model(self, name: str, stems: dict[str, torch.Tensor]) -> None:
        for source in SOURCES:
            self.signals[source][f"{name} {source}"] = band_power(stems[source])
            if self.references:
                self.errors[source][f"{name} error"] = band_power(stems[source] - self.references[source])

    def figures(self) -> dict:
        title = "{}: dB re the mixture's peak; zoom one, all follow"
        return {s: spectrogram_figure({**self.signals[s], **self.errors[s]}, title=title.format(s)) for s in SOURCES}


def karaoke(separation: Separation, model: str, guide: float) -> Path:
    """The accompaniment with `guide` (0..1) of the vocals mixed back in: a guide vocal."""
    stems = separation.stems[model]
    if guide <= 0:
        return stems["accompaniment"]
    path = separation.workdir / f"{model}-karaoke-guide{int(round(guide * 100)):03d}.wav"
    if not path.exists():
        acc, _ = sf.read(stems["accompaniment"], dtype="float32", always_2d=True)
        voc, _ = sf.read(stems["vocals"], dtype="float32", always_2d=True)
        write_wav(path, (acc + guide * voc).T)
    return path


def metrics_rows(separation: Separation) -> list[list]:
    """The metrics table as rows for a Dataframe (2 decimals)."""
    return [
        [r["model"], r["source"], *[None if np.isnan(r[m]) else round(r[m], 2) for m in METRICS]]
        for r in separation.metrics
    ]
