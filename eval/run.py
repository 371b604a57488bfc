"""Evaluate methods on MUSDB tracks: one museval JSON per method and track, resumable.

Layout of `--out` (museval's own, so `museval.EvalStore().add_eval_dir(out / method)` reads it):

    out/<method>/method.json            what the method is (checkpoint, Wiener, backend, ...)
    out/<method>/<subset>/<track>.json  framewise SDR/SIR/ISR/SAR/SI-SDR of vocals, accompaniment

A file is written atomically when its track is done, so a killed run resumes where it
stopped; a method folder made with different settings (another checkpoint under the same
name, another backend or window) is refused rather than mixed.
"""

from __future__ import annotations

import json
import math
import os
import random
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path

import numpy as np
import torch

from separation.audio import SAMPLE_RATE
from separation.errors import SeparationError
from separation.files import atomic_write_text
from separation.results import write_summary
from separation.separator import select_device
from separation.tracks import TARGETS, load_targets, open_musdb, read_mixture, track_frames
from songgen.describe import describe_scored

from .methods import load_method, split_spec
from .scores import METRICS, TrackScores, score_stacked


@dataclass
class RunConfig:
    methods: list[str]
    musdb_root: str
    out: str = "results"
    is_wav: bool = False
    subset: str = "test"
    split: str | None = None
    tracks: list[str] | None = None
    limit: int | None = None
    seed: int | None = None
    backend: str = "fast"
    device: str = "cpu"
    jobs: int = 1
    wiener: int | None = None
    shifts: int = 1  # passes averaged per model (`Separator(shifts=...)`)
    window: float = 1.0
    hop: float = 1.0
    targets: tuple[str, ...] = TARGETS
    max_memory: float | None = None  # GB that parallel jobs may take together (default: 80 % of what is free)

    @property
    def method_names(self) -> list[str]:
        """The results folder of each method, in `methods` order."""
        return [split_spec(m)[0] for m in self.methods]

    def __post_init__(self):
        dupes = {n for n in self.method_names if self.method_names.count(n) > 1}
        if dupes:
            raise SeparationError(
                f"two methods would share the results folder {', '.join(sorted(dupes))}: name them NAME=LOCATION"
            )


# ---------------------------------------------------------------------------- tracks


def open_tracks(cfg: RunConfig) -> list:
    """The musdb tracks to evaluate, in musdb's order (sorted names)."""
    tracks = open_musdb(cfg.musdb_root, is_wav=cfg.is_wav, subset=cfg.subset, split=cfg.split)
    return select_tracks(tracks, names=cfg.tracks, limit=cfg.limit, seed=cfg.seed)


def select_tracks(
    tracks: list, *, names: list[str] | None = None, limit: int | None = None, seed: int | None = None
) -> list:
    """`names` picks by name; `seed` draws `limit` tracks at random (e.g. 25 of the 50 test tracks);
    otherwise the first `limit`."""
    if names:
        by_name = {t.name: t for t in tracks}
        unknown = [n for n in names if n not in by_name]
        if unknown:
            raise SeparationError(f"no such track: {', '.join(unknown)} (e.g. {', '.join(list(by_name)[:3])})")
        tracks = [by_name[n] for n in names]
    if limit is not None and limit < 1:
        raise SeparationError(f"--limit must be >= 1, not {limit}")
    if seed is not None:
        count = min(limit or len(tracks), len(tracks))
        chosen = set(random.Random(seed).sample(range(len(tracks)), count))
        return [t for i, t in enumerate(tracks) if i in chosen]
    return tracks[:limit]


def load_eval_track(track, targets: tuple[str, ...] = TARGETS) -> tuple[torch.Tensor, torch.Tensor]:
    """`(mixture (C, T), references (S, C, T))` float32 of a musdb track.

    The mixture is the track's own mixture file (what a user would separate), the references
    its stems with accompaniment = drums + bass + other; all cut to the shortest.
    """
    refs = load_targets(track)
    mix = torch.from_numpy(np.ascontiguousarray(read_mixture(track)))
    length = min(mix.shape[-1], refs.shape[-1])
    if tuple(targets) != TARGETS:  # a subset or another order: a copy (the default is a view)
        refs = refs[[TARGETS.index(t) for t in targets]]
    return mix[:, :length], refs[..., :length]


# ---------------------------------------------------------------------------- results


def result_path(out: str | os.PathLike, method: str, subset: str, track: str) -> Path:
    return Path(out) / method / subset / f"{track}.json"


def _method_record(cfg: RunConfig, description: dict) -> dict:
    return {
        **description,
        "backend": cfg.backend,
        "window": cfg.window,
        "hop": cfg.hop,
        "targets": list(cfg.targets),
        "data": describe_scored(cfg.musdb_root, cfg.subset),
    }


def check_method_folder(folder: Path, record: dict) -> None:
    """Write `method.json`, or refuse if the folder holds results of something else."""
    path = folder / "method.json"
    if path.exists():
        old = json.loads(path.read_text())
        keys = ("method", "backend", "window", "hop", "wiener", "shifts", "targets", "model", "architecture")
        # A model's folder written before `shifts` was recorded holds single-pass results.
        if record.get("kind") == "model":
            old.setdefault("shifts", 1)
        diff = [k for k in keys if old.get(k) != record.get(k)]
        if "weights" in old and old["weights"] != record.get(
            "weights"
        ):  # folders written before weights were recorded lack it
            diff.append("weights")
        if diff:
            changes = "; ".join(f"{k}: {old.get(k)!r} -> {record.get(k)!r}" for k in diff)
            raise SeparationError(
                f"{folder} holds results of a different setup ({changes}): "
                "use another --out, or name the method NAME=LOCATION"
            )
        return
    atomic_write_text(path, json.dumps(record, indent=2) + "\n")


def load_results(out: str | os.PathLike, subset: str = "test") -> dict[str, dict[str, TrackScores]]:
    """{method: {track: TrackScores}} of every method folder under `out`."""
    results: dict[str, dict[str, TrackScores]] = {}
    out = Path(out)
    if not out.is_dir():
        raise SeparationError(f"{out}: no such results folder")
    for folder in sorted(p for p in out.iterdir() if p.is_dir() and (p / subset).is_dir()):
        tracks = {}
        for path in sorted((folder / subset).glob("*.json")):
            tracks[path.stem] = TrackScores.load(path)
        if tracks:
            results[folder.name] = tracks
    if not results:
        raise SeparationError(f"{out}: no results (expected {out}/<method>/{subset}/<track>.json)")
    return results


def medians_table(results: dict[str, dict[str, TrackScores]], tracks: list[str] | None = None) -> dict:
    """{method: {source: {metric: median over tracks of the per-track medians}}} + counts.

    The SiSEC convention: median over windows per track, then median over tracks; a track
    whose every window is NaN for a metric is left out of that metric's median.
    """
    table = {}
    for method, by_track in results.items():
        chosen = [by_track[t] for t in (tracks or by_track) if t in by_track]
        per_track = [s.medians() for s in chosen]
        sources = list(dict.fromkeys(src for m in per_track for src in m))
        table[method] = {"tracks": len(chosen)}
        for src in sources:
            table[method][src] = {}
            for metric in METRICS:
                values = [m[src].get(metric, math.nan) for m in per_track if src in m]
                values = [v for v in values if not math.isnan(v)]
                table[method][src][metric] = float(np.median(values)) if values else math.nan
    return table


def format_table(table: dict, targets: tuple[str, ...] = TARGETS) -> str:
    lines = []
    width = max([len(m) + 2 for m in table] + [len(t) for t in targets])
    for src in targets:
        lines.append(f"{src:<{width}} " + " ".join(f"{m:>7}" for m in METRICS) + "  tracks")
        for method, row in table.items():
            if src not in row:
                continue
            cells = " ".join(f"{row[src][m]:7.2f}" for m in METRICS)
            lines.append(f"  {method:<{width - 2}} {cells}  {row['tracks']:>6}")
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"


# ---------------------------------------------------------------------------- memory


def track_memory(samples: int, backend: str) -> int:
    """Peak bytes one job needs to separate and score a track of `samples` per channel.

    Measured with `bench/eval_memory.py` on a 7-minute track: ~2 GB with the fast backend
    (DPRNN separation included), 9 GB with museval, whose whole-track FFTs of the next power of
    two samples dominate; the figures below are those with some headroom.
    """
    base = 800 << 20  # the interpreter, torch, a model and its segment buffers
    if backend == "museval":
        return base + 300 * 2 ** math.ceil(math.log2(samples + 511))
    return base + 80 * samples


def available_memory() -> int:
    """Bytes the kernel says can be allocated without swapping (`MemAvailable`)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")


def affordable_jobs(cfg: RunConfig, tracks: list, echo=print) -> int:
    """`cfg.jobs`, or fewer when that many jobs on the longest track would not fit in memory."""
    longest = max(tracks, key=track_frames)
    samples = track_frames(longest)
    need = track_memory(samples, cfg.backend)
    budget = cfg.max_memory * 2**30 if cfg.max_memory else 0.8 * available_memory()
    fit = max(1, int(budget // need))
    gb = 2**30
    if fit < cfg.jobs:
        echo(
            f"--jobs {cfg.jobs}: a job may need ~{need / gb:.1f} GB ({cfg.backend} metrics, {longest.name}: "
            f"{samples / SAMPLE_RATE / 60:.1f} min) and {budget / gb:.1f} GB allow {fit}: running {fit} at a time"
        )
    if need > budget:
        echo(
            f"warning: {longest.name} may need ~{need / gb:.1f} GB ({cfg.backend} metrics), more than the "
            f"{budget / gb:.1f} GB budget" + ("; the fast backend needs far less" if cfg.backend == "museval" else "")
        )
    return min(cfg.jobs, fit)


# ---------------------------------------------------------------------------- running

_WORKER: dict = {}


def _worker_init(threads: int) -> None:
    torch.set_num_threads(threads)


def _methods(cfg: RunConfig) -> dict:
    """Methods loaded once per process."""
    key = (tuple(cfg.methods), cfg.device, cfg.wiener, cfg.shifts, cfg.targets)
    if _WORKER.get("methods_key") != key:
        _WORKER["methods_key"] = key
        _WORKER["methods"] = {}
    cache = _WORKER["methods"]
    for spec, name in zip(cfg.methods, cfg.method_names, strict=True):
        if name not in cache:
            cache[name] = load_method(spec, cfg.targets, device=cfg.device, wiener=cfg.wiener, shifts=cfg.shifts)
    return cache


def evaluate_track(cfg: RunConfig, track, todo: list[str]) -> list[tuple[str, str, float, str | None]]:
    """Separate and score one track with the methods in `todo`; returns (method, track, seconds, error)."""
    methods = _methods(cfg)
    mix, refs = load_eval_track(track, cfg.targets)
    done = []
    for name in todo:
        method = methods[name]
        start = time.perf_counter()
        try:
            est = method.estimate(mix, refs)
            scores = score_stacked(
                refs,
                est,
                list(cfg.targets),
                track=track.name,
                backend=cfg.backend,
                device=cfg.device,
                window=cfg.window,
                hop=cfg.hop,
                info={"method": name},
            )
            scores.save(result_path(cfg.out, name, cfg.subset, track.name))
            done.append((name, track.name, time.perf_counter() - start, None))
        except SeparationError as exc:
            done.append((name, track.name, time.perf_counter() - start, str(exc)))
    return done


def _evaluate_track_by_name(cfg: RunConfig, name: str, todo: list[str]):
    track = {t.name: t for t in _tracks_cached(cfg)}[name]
    return evaluate_track(cfg, track, todo)


def _tracks_cached(cfg: RunConfig) -> list:
    key = (cfg.musdb_root, cfg.is_wav, cfg.subset, cfg.split)
    if _WORKER.get("tracks_key") != key:
        _WORKER["tracks_key"] = key
        _WORKER["tracks"] = open_tracks(cfg)
    return _WORKER["tracks"]


def run(cfg: RunConfig, *, echo=print) -> tuple[dict, list[str]]:
    """Evaluate every (method, track) not yet on disk. Returns (medians table, errors)."""
    select_device(cfg.device)  # refuse a device that is not there before anything is written
    tracks = open_tracks(cfg)
    methods = _methods(cfg)  # load everything before the first track: fail fast on a bad name
    for name, method in methods.items():
        check_method_folder(Path(cfg.out) / name, _method_record(cfg, method.description))
    plan = {}
    for track in tracks:
        todo = []
        for name in cfg.method_names:
            path = result_path(cfg.out, name, cfg.subset, track.name)
            try:
                TrackScores.load(path)
            except SeparationError:
                todo.append(name)  # missing (or unreadable: recompute it)
        if todo:
            plan[track.name] = (track, todo)
    skipped = len(tracks) * len(methods) - sum(len(t) for _, t in plan.values())
    echo(
        f"{len(tracks)} {cfg.subset} tracks x {len(methods)} methods: {skipped} already done, "
        f"{sum(len(t) for _, t in plan.values())} to do ({cfg.backend} metrics, {cfg.jobs} job(s))"
    )
    errors: list[str] = []

    def report(rows):
        for method, track, seconds, error in rows:
            if error:
                errors.append(f"{method} / {track}: {error}")
                echo(f"  FAILED {method:12s} {track}: {error}")
            else:
                echo(f"  {method:12s} {track} ({seconds:.1f} s)")

    jobs = affordable_jobs(cfg, [t for t, _ in plan.values()], echo) if plan else 1
    if jobs <= 1 or len(plan) <= 1:
        for track, todo in plan.values():
            report(evaluate_track(cfg, track, todo))
    else:
        threads = max(1, (os.cpu_count() or 1) // jobs)
        with ProcessPoolExecutor(
            jobs, mp_context=get_context("spawn"), initializer=_worker_init, initargs=(threads,)
        ) as pool:
            futures = [pool.submit(_evaluate_track_by_name, cfg, name, todo) for name, (_, todo) in plan.items()]
            for future in as_completed(futures):
                report(future.result())
    results = load_results(cfg.out, cfg.subset)
    chosen = {m: results.get(m, {}) for m in cfg.method_names}
    for name in cfg.method_names:
        if chosen[name]:
            write_method_summary(Path(cfg.out) / name, chosen[name])
    return medians_table(chosen, [t.name for t in tracks]), errors


def write_method_summary(folder: Path, tracks: dict[str, TrackScores]) -> Path:
    """`summary.json` of a method folder: its record and the medians over all its tracks (what
    a model card quotes; see `separation.results`)."""
    record = json.loads((folder / "method.json").read_text())
    table = medians_table({folder.name: tracks})[folder.name]
    return write_summary(
        folder,
        {
            "method": folder.name,
            "weights": record.get("weights"),
            "data": record.get("data"),
            "backend": record.get("backend"),
            "tracks": sorted(tracks),
            "medians": {source: row for source, row in table.items() if source != "tracks"},
        },
    )


__all__ = ["RunConfig", "run", "load_results", "medians_table", "format_table", "select_tracks"]
