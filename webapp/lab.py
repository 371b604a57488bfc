"""The app's state and logic, shared by every session: models, clips, separations, trials.

`webapp.ui` wires it to Gradio components; nothing here imports Gradio, so the tests and the
benchmarks drive the same code without a browser.
"""

from __future__ import annotations

import contextlib
import hmac
import logging
import random
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import torch

from eval.ratings import summary
from separation.audio import SAMPLE_RATE, load_audio
from separation.errors import SeparationError

from .clips import MIN_SECONDS, Clip, check_excerpt, ensure_demo_clips, load_clip, musdb_clips
from .config import AppConfig
from .gpu import gpu_seconds, on_gpu, zero_gpu
from .service import ModelPool, Separation, cleanup, make_trial, new_workdir, run_separation
from .store import RatingError, RatingsStore
from .sync import start_sync

log = logging.getLogger("webapp")

WORK_MAX_AGE_S = 3 * 3600  # request folders (stems, trials) older than this are deleted


@dataclass
class TrialState:
    trial_id: str
    kind: str
    labels: list[str]


class LabApp:
    """The app's state shared by all sessions: models, clips, ratings store, demo separations."""

    def __init__(self, config: AppConfig, *, pool: ModelPool | None = None):
        self.config = config
        self.data_dir = config.data_dir
        self.work_root = Path(tempfile.gettempdir()) / "separation-lab"
        self.work_root.mkdir(parents=True, exist_ok=True)
        cleanup(self.work_root, max_age_s=WORK_MAX_AGE_S)
        self._last_cleanup = time.monotonic()
        self.zero_gpu = zero_gpu()
        # On ZeroGPU there is no CUDA outside `spaces.GPU` functions: load on the CPU, move inside.
        self.pool = pool or ModelPool(config.models, device="cpu" if self.zero_gpu else config.device)
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
        on_write = None
        if config.ratings_repo and config.hf_token:
            on_write = start_sync(self.data_dir / "sync", config.ratings_repo, config.hf_token)
        self.store = RatingsStore(
            config.ratings_db, app_version=config.version, rate_limit=config.rate_limit, on_write=on_write
        )
        self._demo: dict[str, Separation] = {}
        self._demo_lock = threading.Lock()

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
        if time.monotonic() - self._last_cleanup > 600:
            self._last_cleanup = time.monotonic()
            cleanup(self.work_root, max_age_s=WORK_MAX_AGE_S)
        return self._separate_on_gpu(mix, references, clip, models, progress)

    def _gpu_seconds(self, mix, references, clip, models=None, progress=None) -> int:
        """What to ask ZeroGPU for (called with the separation's own arguments)."""
        count = len(models) if models else max(1, len(self.pool.ready()))
        return gpu_seconds(mix.shape[-1] / SAMPLE_RATE, count)

    def _separate_now(self, mix, references, clip, models=None, progress=None) -> Separation:
        """The separation and its metrics: on ZeroGPU this runs inside `spaces.GPU`, the only
        place CUDA exists, so the models (loaded on the CPU) are moved there for the call."""
        workdir = new_workdir(self.work_root)
        on = self.pool.on("cuda") if self.zero_gpu and torch.cuda.is_available() else contextlib.nullcontext()
        with on:
            return run_separation(
                mix, references, pool=self.pool, workdir=workdir, clip=clip, progress=progress, models=models
            )

    def demo_separation(self) -> Separation:
        """A separated clip with references, shared by sessions that rate before separating."""
        with self._demo_lock:
            clip = random.choice(list(self.clips.values()))
            cached = self._demo.get(clip.id)
            if (
                cached is None
                or not cached.mixture.exists()
                or set(cached.stems) != {s.name for s in self.pool.ready()}
            ):
                mix, refs = load_clip(clip, 0.0, min(clip.duration, 30.0))
                self._demo[clip.id] = self.separate(mix, refs, clip.id)
            return self._demo[clip.id]

    def trial_for(self, sep: Separation | None, listener: str):
        """A blind trial on the session's last separation when it can make one (true stems, or
        two models' outputs for A/B), otherwise on an example clip. Returns (trial, separation)."""
        usable = sep is not None and bool(sep.stems) and (bool(sep.references) or len(sep.stems) >= 2)
        if not usable:
            sep = self.demo_separation()
        return make_trial(sep, self.store, listener), sep

    def export_ratings(self, token: str | None) -> Path:
        """The raw ratings CSV, for whoever holds ADMIN_TOKEN (compared in constant time)."""
        if not self.config.admin_token:
            raise RatingError("export is disabled: set ADMIN_TOKEN in the app's environment")
        if not token or not hmac.compare_digest(token.encode(), self.config.admin_token.encode()):
            raise RatingError("wrong admin token")
        path = Path(tempfile.mkdtemp(prefix="ratings-", dir=self.work_root)) / "ratings.csv"
        return self.store.export_csv(path)

    def answer(self, listener: str, state: TrialState, answer: dict) -> int:
        """Store a trial's answer: MUSHRA {"scores": {label: 0-100}}, A/B {"choice": label|None, "mos": {...}}."""
        if state.kind == "mushra":
            return self.store.submit(listener, state.trial_id, scores=answer.get("scores"))
        return self.store.submit(listener, state.trial_id, choice=answer.get("choice"), mos=answer.get("mos"))

    def status_markdown(self) -> str:
        lines = []
        for slot in self.pool.slots.values():
            icon = {"ready": "✅", "loading": "⏳", "unavailable": "⚠️"}[slot.state]
            lines.append(f"{icon} **{slot.name}**: {slot.message}")
        if self.clip_note:
            lines.append(f"⚠️ {self.clip_note}")
        return "  \n".join(lines)


def summary_public(lab: LabApp) -> dict:
    """The statistics without listener ids (the kept/dropped lists become counts)."""
    s = summary(lab.store.rows())
    mushra = dict(s["mushra"])
    mushra["kept"] = len(mushra["kept"])
    mushra["dropped"] = len(mushra["dropped"])
    return {**s, "mushra": mushra}


def new_listener_id() -> str:
    return uuid.uuid4().hex


def clip_excerpt(lab: LabApp, clip_id: str, start_s, length_s):
    clip = lab.clips.get(clip_id) if isinstance(clip_id, str) else None
    if clip is None:
        raise SeparationError(f"unknown clip: choose one of: {', '.join(lab.clips)}")
    start_s, length_s = check_excerpt(start_s, length_s, clip.duration, name=clip.id)  # before anything is read
    if length_s > lab.config.max_minutes * 60:
        raise SeparationError(f"the excerpt is {length_s:.0f} s long, over the {lab.config.max_minutes:g}-minute limit")
    mix, refs = load_clip(clip, start_s, length_s)
    label = (
        clip.id
        if start_s == 0 and length_s >= clip.duration
        else f"{clip.id} [{start_s:.0f}-{start_s + mix.shape[-1] / SAMPLE_RATE:.0f} s]"
    )
    return mix, refs, label


def launch_options(lab: LabApp) -> dict:
    """What `launch` needs from the app's settings (the tests launch with the same)."""
    return {
        "max_file_size": lab.config.max_upload_bytes,  # in bytes: Gradio's "50mb" would be MiB, the page says MB
        "allowed_paths": [str(lab.work_root)],
    }
