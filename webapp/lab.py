"""The app's state and logic, shared by every session: models, clips, separations, trials.

`webapp.ui` wires it to Gradio components; nothing here imports Gradio, so the tests and the
benchmarks drive the same code without a browser.
"""

from __future__ import annotations

import contextlib
import contextvars
import hashlib
import json
import logging
import os
import random
import shutil
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch

from separation.audio import SAMPLE_RATE, load_audio
from separation.errors import SeparationError

from .clips import CAMPAIGN_SECONDS, MIN_SECONDS, Clip, check_excerpt, ensure_demo_clips, load_clip, musdb_clips
from .config import AppConfig
from .gpu import gpu_seconds, on_gpu, zero_gpu
from .listening.stimuli import prepare_excerpts
from .listening.study import Study
from .service import (
    ModelPool,
    Separation,
    cleanup,
    keep_separation,
    kept_clip,
    new_workdir,
    read_separation,
    run_separation,
)
from .sync import start_sync

log = logging.getLogger("webapp")

WORK_MAX_AGE_S = 3 * 3600  # request folders (stems, trials) older than this are deleted


class LabApp:
    """The app's state shared by all sessions: models, clips, separations (the example clips' shared
    ones too) and the listening study on them (`self.study`, `webapp.listening`)."""

    def __init__(self, config: AppConfig, *, pool: ModelPool | None = None):
        self.config = config
        self.data_dir = config.data_dir
        self.work_root = Path(tempfile.gettempdir()) / "separation-lab"
        self.work_root.mkdir(parents=True, exist_ok=True)
        self._last_cleanup = 0.0
        self.zero_gpu = zero_gpu()
        # On ZeroGPU there is no CUDA outside `spaces.GPU` functions: load on the CPU, move inside.
        self.pool = pool or ModelPool(
            config.models, device="cpu" if self.zero_gpu else config.device, shifts=config.shifts
        )
        self._separate_on_gpu = on_gpu(self._separate_now, duration=self._gpu_seconds)
        self.clips: dict[str, Clip] = {}
        self.clip_note = ""
        if config.musdb_path:
            try:
                self.clips = {c.id: c for c in musdb_clips(config.musdb_path)}
            except SeparationError as exc:
                self.clip_note = f"MUSDB not used: {exc}"
                log.warning(self.clip_note)
        if not self.clips:
            self.clips = {c.id: c for c in ensure_demo_clips(self.data_dir / "demo")}
        self._demo: dict[str, Separation] = {}
        # one lock per clip: a trial on one clip never waits while another clip is separated
        self._demo_locks = {clip_id: threading.Lock() for clip_id in self.clips}
        # Separations at once, whatever asks (the Separate tab's queue, a trial's example clip),
        # each on one of the same few threads: every thread that runs torch's parallel ops keeps
        # an OpenMP team, and with more teams' threads than cores libgomp stops spinning between
        # parallel regions, which made a separation on the server's ever-changing worker threads
        # 15-30% slower than on one thread (`bench/app_latency`).
        self._separating = ThreadPoolExecutor(
            max(1, config.concurrency), thread_name_prefix="separate", initializer=_mark_compute_thread
        )
        on_write = None
        if config.ratings_repo and config.hf_token:
            on_write = start_sync(self.data_dir / "sync", config.ratings_repo, config.hf_token)
        # the listening study on these clips and models (`webapp.listening`)
        self.study = Study(
            config,
            clips=list(self.clips),
            models=self.working_models,
            separation=self.demo_separation,
            work_root=self.work_root,
            tidy=self.tidy,
            open_for=WORK_MAX_AGE_S / 2,
            on_write=on_write,
        )

    # ------------------------------------------------------------------ inputs

    def read_upload(self, path: str | None):
        """An upload as `(2, T)` at 44.1 kHz, within the caps: bytes, minutes, samples to decode
        (all checked from the header before decoding where it says them, while decoding where it
        does not), and at least `MIN_SECONDS` long."""
        if not path:
            raise SeparationError("no audio: upload a file or record from the microphone first")
        mix = load_audio(path, max_seconds=self.config.max_minutes * 60, max_bytes=self.config.max_upload_bytes)
        if mix.shape[-1] < MIN_SECONDS * SAMPLE_RATE:
            lasts = f"{mix.shape[-1] / SAMPLE_RATE:.6f}".rstrip("0")  # 0.999977, not 1.00; 0.000023, not 2.3e-05
            raise SeparationError(
                f"{Path(path).name}: the audio lasts {lasts} s; the app separates {MIN_SECONDS:g} s or more"
            )
        return mix

    def check_models(self, which: str | None) -> list[str] | None:
        """The models an API call asks for, checked before any work (None: all of them)."""
        if which is None or str(which).strip() in ("", "all"):
            return None
        wanted = [m.strip() for m in str(which).split(",") if m.strip()]
        if not wanted or any(m not in self.pool.slots for m in wanted):
            raise SeparationError(f"unknown model name: choose from {', '.join(self.pool.slots)}, or all")
        return wanted

    def separate(self, mix, references, clip: str, progress=None, models: list[str] | None = None) -> Separation:
        # every request writes ~6 files of the input's length: old ones go (Gradio has copies of what it served)
        self.tidy()
        return self.on_compute_thread(self._separate_on_gpu, mix, references, clip, models, progress)

    def on_compute_thread(self, fn, *args):
        """`fn(*args)` on one of the separation threads (at most `concurrency` at once), waited
        for; at once where the caller is one. A request handler runs its whole audio work so:
        reading and cutting the input too, which also start torch's parallel ops."""
        if getattr(_thread, "computes", False):
            return fn(*args)
        # the caller's context goes along: Gradio finds the request a progress bar belongs to there
        return self._separating.submit(contextvars.copy_context().run, fn, *args).result()

    def tidy(self, *, now: bool = False) -> None:
        """Keep the work folder under its age and size caps (checked at most once a minute)."""
        if now or time.monotonic() - self._last_cleanup > 60:
            self._last_cleanup = time.monotonic()
            cleanup(
                self.work_root,
                max_age_s=WORK_MAX_AGE_S,
                max_bytes=int(self.config.work_max_mb * 1e6),
                locks=self.study.trial_files.folder_lock,
            )

    def _gpu_seconds(self, mix, references, clip, models=None, progress=None) -> int:
        """What to ask ZeroGPU for (called with the separation's own arguments)."""
        count = len(models) if models else max(1, len(self.pool.ready()))
        return gpu_seconds(mix.shape[-1] / SAMPLE_RATE, count * self.config.shifts)  # each pass is a model run

    def _separate_now(self, mix, references, clip, models=None, progress=None) -> Separation:
        """The separation and its metrics: on ZeroGPU this runs inside `spaces.GPU`, the only
        place CUDA exists, so the models (loaded on the CPU) are moved there for the call."""
        workdir = new_workdir(self.work_root)
        on = self.pool.on("cuda") if self.zero_gpu and torch.cuda.is_available() else contextlib.nullcontext()
        with on:
            return run_separation(
                mix, references, pool=self.pool, workdir=workdir, clip=clip, progress=progress, models=models
            )

    def demo_separation(self, clip_id: str | None = None) -> Separation:
        """A separated example clip with references (the one asked for, or a random one), shared
        by every session; made once per clip and models loaded."""
        clip = self.clips[clip_id] if clip_id in self.clips else random.choice(list(self.clips.values()))
        with self._demo_locks[clip.id]:
            versions = {s.name: s.version for s in self.pool.ready()}

            def current(sep: Separation | None) -> bool:
                return sep is not None and sep.mixture.exists() and sep.versions == versions

            cached = self._demo.get(clip.id)
            if not current(cached):
                # kept in the data folder by an earlier run (a restart need not separate it again)
                folder = self.demo_folder(clip.id, versions)
                cached = read_separation(folder)
                if not current(cached):
                    mix, refs = load_clip(clip, 0.0, min(clip.duration, CAMPAIGN_SECONDS))
                    cached = keep_separation(self.separate(mix, refs, clip.id), folder)
                self._demo[clip.id] = cached
            return cached

    def prepare(self) -> int:
        """The fixed stimulus set made ahead, as a planned listening test has it: every example
        clip separated (kept in the data folder) and its MUSHRA excerpts cut, matched and scored,
        so that no listener's trial waits for that (the real app runs it in the background at
        start, `APP_PREPARE_STIMULI`). Returns the excerpts written now."""
        self.pool.wait()
        if not self.pool.ready():
            return 0
        written = 0
        for clip_id in list(self.clips):
            try:
                sep = self.demo_separation(clip_id)
                written += prepare_excerpts(sep, self.study.store, self.study.trial_files, self.config.trial_seconds)
            except Exception:  # a clip that cannot be prepared is made on demand, or says why then
                log.exception("preparing the stimuli of %s", clip_id)
        log.info("stimuli ready: %d excerpts written", written)
        return written

    def demo_folder(self, clip_id: str, versions: dict[str, str]) -> Path:
        """Where a clip's shared separation by these models (by weights) is kept; one per clip:
        the folders of other models' separations of it are removed."""
        key = hashlib.sha256(json.dumps([clip_id, sorted(versions.items())]).encode()).hexdigest()[:24]
        root = self.data_dir / "demo-separations"
        for old in root.glob("*"):
            if old.name != key and kept_clip(old) == clip_id:
                shutil.rmtree(old, ignore_errors=True)
        return root / key

    def working_models(self) -> list[str]:
        """The models that run or may yet (loading): not those that could not load (umxhq's
        weights offline). What the page's title and its A/B parts are about."""
        return [slot.name for slot in self.pool.slots.values() if slot.state != "unavailable"]

    def status_markdown(self) -> str:
        # words, not emoji: a machine without an emoji font shows a box for each (Spaces' viewers too)
        lines = []
        for slot in self.pool.slots.values():
            said = {"ready": f"ready ({slot.message})", "loading": "loading...", "unavailable": slot.message}
            lines.append(f"**{slot.name}**: {said[slot.state]}")
        if self.clip_note:
            lines.append(f"Note: {self.clip_note}")
        return "  \n".join(lines)


_thread = threading.local()


def _mark_compute_thread() -> None:
    _thread.computes = True


def clip_excerpt(lab: LabApp, clip_id: str, start_s, length_s):
    clip = lab.clips.get(clip_id) if isinstance(clip_id, str) else None
    if clip is None:
        raise SeparationError(f"unknown clip: choose one of: {', '.join(lab.clips)}")
    start_s, length_s = check_excerpt(start_s, length_s, clip.duration, name=clip.id)  # before anything is read
    if start_s < CAMPAIGN_SECONDS and not lab.config.separate_campaign_clips:
        raise SeparationError(campaign_part(clip))
    if length_s > lab.config.max_minutes * 60:
        raise SeparationError(f"the excerpt is {length_s:.0f} s long, over the {lab.config.max_minutes:g}-minute limit")
    mix, refs = load_clip(clip, start_s, length_s)
    label = (
        clip.id
        if start_s == 0 and length_s >= clip.duration
        else f"{clip.id} [{start_s:.0f}-{start_s + mix.shape[-1] / SAMPLE_RATE:.0f} s]"
    )
    return mix, refs, label


def campaign_part(clip: Clip) -> str:
    """Why the Separate tab does not separate the start of a clip."""
    rest = (
        f"start at {CAMPAIGN_SECONDS:g} s or later"
        if clip.duration - CAMPAIGN_SECONDS >= MIN_SECONDS
        else "this clip has nothing after it"
    )
    return (
        f"the first {CAMPAIGN_SECONDS:g} s of {clip.id} are the blind listening test's material, and their "
        f"separation would show which blind sample is which model: {rest} (the campaign's owner can allow "
        "it: APP_SEPARATE_CAMPAIGN_CLIPS=1)"
    )


def separate_default(lab: LabApp, clip: Clip) -> tuple[float, float]:
    """(start, length) the Separate tab offers for a clip: 30 s after the campaign's part, where
    the clip has them (all of what it has after it, else), or from 0 where that is allowed."""
    start = 0.0 if lab.config.separate_campaign_clips else min(CAMPAIGN_SECONDS, clip.duration)
    top = min(clip.duration - start, lab.config.max_minutes * 60)
    return start, max(0.0, min(30.0, top))


def launch_options(lab: LabApp) -> dict:
    """What `launch` needs from the app's settings (the tests launch with the same).

    Only the trial folders are served as they are (random names, no content hash); anything else
    a handler returns goes through Gradio's cache, and the excerpts and references beside the
    trial folders are never served. And uvicorn, which Gradio starts, must not rewrite the client
    address from `X-Forwarded-For` (by default it believes any loopback peer, so a local proxy or
    tunnel passing the header on would let every caller name its own address): `APP_PROXY_HOPS`
    alone decides which hop to believe (`listeners.client_address`)."""
    os.environ["FORWARDED_ALLOW_IPS"] = ""  # read when uvicorn's Config is made, inside launch()
    return {
        "max_file_size": lab.config.max_upload_bytes,  # in bytes: Gradio's "50mb" would be MiB, the page says MB
        "allowed_paths": [str(lab.study.trial_files.served)],
    }
