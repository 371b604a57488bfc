"""The app's state and logic, shared by every session: models, clips, separations, trials.

`webapp.ui` wires it to Gradio components; nothing here imports Gradio, so the tests and the
benchmarks drive the same code without a browser.
"""

from __future__ import annotations

import contextlib
import contextvars
import hashlib
import hmac
import json
import logging
import os
import random
import secrets
import shutil
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch

from eval.ratings import metric_agreement, summary
from separation.audio import SAMPLE_RATE, load_audio
from separation.errors import SeparationError

from .campaign import HEADPHONE_PASS, Campaign
from .clips import CAMPAIGN_SECONDS, MIN_SECONDS, Clip, check_excerpt, ensure_demo_clips, load_clip, musdb_clips
from .config import AppConfig
from .gpu import gpu_seconds, on_gpu, zero_gpu
from .listeners import RateLimiter, Signer, client_address
from .results import ResultsBoard
from .service import (
    SOURCES,
    ModelPool,
    Separation,
    cleanup,
    keep_separation,
    kept_clip,
    new_workdir,
    read_separation,
    run_separation,
)
from .store import RatingError, RatingsStore
from .sync import start_sync
from .trials import (
    EXCERPTS_PER_SOURCE,
    TrialAudio,
    TrialFiles,
    headphone_check,
    make_trial,
    prepare_excerpts,
    stimulus_id,
    trial_audio,
)

log = logging.getLogger("webapp")

WORK_MAX_AGE_S = 3 * 3600  # request folders (stems, trials) older than this are deleted
FAILED_CHECK = (
    "Thank you for your time. The headphone check was not passed, and this study needs headphones "
    "(over loudspeakers the tones cannot be told apart), so it cannot use ratings from this browser."
)


class LabApp:
    """The app's state shared by all sessions: models, clips, ratings store, demo separations."""

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
        on_write = None
        if config.ratings_repo and config.hf_token:
            on_write = start_sync(self.data_dir / "sync", config.ratings_repo, config.hf_token)
        self.store = RatingsStore(
            config.ratings_db, app_version=config.version, rate_limit=config.rate_limit, on_write=on_write
        )
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
        self.signer = Signer(config.secret, key_file=self.data_dir / "secret.key")
        hour = 3600.0
        self.limiter = RateLimiter({**{k: (v, hour) for k, v in config.limits.items()}, "admin": (5, 900.0)})
        self.trial_files = TrialFiles(self.work_root / "trials")
        self._exports: dict[str, float] = {}  # one-time export links -> expiry
        self.campaign = Campaign(self.store, config, self.signer.derived_key("completion").encode())
        # the results every page shows: computed on a thread of their own when ratings change
        self.results = ResultsBoard(self.campaign.version, lambda: (self.summary(), self.agreement()))

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
                locks=self.trial_files.folder_lock,
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
                written += prepare_excerpts(sep, self.store, self.trial_files, self.config.trial_seconds)
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

    # ------------------------------------------------------------------ listeners

    def client_key(self, request) -> str:
        """Who a request comes from, for per-client limits: a keyed hash of its address (never stored
        as such), found as `APP_PROXY_HOPS` says (`webapp.listeners.client_address`)."""
        return self.signer.client_key(client_address(request, self.config.proxy_hops))

    def new_listener(self, client: str) -> str:
        """A listener id signed by this server (kept in the browser), at most
        `limits["listeners"]` per client and hour."""
        self.limiter.allow("listeners", client, "new listener ids")
        listener = self.signer.issue()
        self.store.add_listener(listener, client)
        return listener

    def listener(self, token) -> str:
        """`token` if this server issued it and knows it; a `RatingError` otherwise."""
        listener = self.signer.check(token)
        if not self.store.known_listener(listener):
            raise RatingError("unknown listener id: reload the page (API: ask /listener for one)")
        return listener

    def headphone_check(self, token, client: str) -> list[Path]:
        """The listener's headphone check (Woods et al. 2017): six files of three tones each; the
        answers stay on the server."""
        listener = self.listener(token)
        if self.store.headphone_score(listener) is not None:
            raise RatingError("the headphone check is already done")
        self.limiter.allow("checks", client, "headphone checks")
        files, answers = headphone_check(self.trial_files, np.random.default_rng())
        self.store.set_headphone_check(listener, answers)
        return files

    def answer_headphone_check(self, token, answers) -> tuple[int, bool]:
        score = self.store.answer_headphone_check(self.listener(token), answers)
        self.results.changed()
        return score, score >= HEADPHONE_PASS

    # ------------------------------------------------------------------ trials

    def trial_for(self, sep: Separation | None, token, client: str = "local", *, kind: str | None = None):
        """A blind trial on the session's last separation when it can make one (true stems, or
        two models' outputs for A/B; the listener's own: not counted unless
        `APP_COUNT_OWN_TRIALS`), otherwise on the campaign's next stimulus for this listener
        (`Campaign.choose`; the session's last trial repeats an earlier excerpt). `kind="ab"`
        asks for an A/B trial even where the true stems are known. Returns (trial audio,
        separation)."""
        if kind not in (None, "mushra", "ab"):
            raise RatingError("the kind of trial is 'mushra' or 'ab'")
        listener = self.listener(token)
        score = self.store.headphone_score(listener)
        if score is None:
            raise RatingError("take the headphone check first (six short questions)")
        if score < HEADPHONE_PASS and not self.config.allow_failed_headphones:
            raise RatingError(FAILED_CHECK)
        self.limiter.allow("trials", client, "trials")
        self.tidy()
        usable = sep is not None and bool(sep.stems) and (bool(sep.references) or len(sep.stems) >= 2)
        if usable and kind is not None:
            usable = len(sep.stems) >= 2 if kind == "ab" else bool(sep.references)
        common = {"seconds": self.config.trial_seconds, "kind": kind}
        if usable:
            return make_trial(sep, self.store, listener, self.trial_files, own=True, **common), sep
        repeat = self.campaign.repeat_due(listener) if kind != "ab" else None
        if repeat is not None:
            sep_id, source, start = json.loads(repeat["excerpt"])[:3]
            sep = self.demo_separation(repeat["clip"])
            if sep.id == sep_id:  # the models are the same as when it was rated
                pick = int(repeat["stimulus"].rsplit("|", 1)[1])
                trial = make_trial(
                    sep,
                    self.store,
                    listener,
                    self.trial_files,
                    source=source,
                    pick=pick,
                    start=int(start),
                    repeat_of=repeat["trial"],
                    **common,
                )
                return trial, sep
        stimuli = self.stimuli("ab" if kind == "ab" else "mushra")
        clip_id, source, pick, pair = stimuli[self.campaign.choose(listener, self.stimulus_counts(stimuli))]
        sep = self.demo_separation(clip_id)
        trial = make_trial(sep, self.store, listener, self.trial_files, source=source, pick=pick, pair=pair, **common)
        return trial, sep

    def stimuli(self, kind: str = "mushra") -> dict[str, tuple[str, str, int, tuple[str, str] | None]]:
        """The campaign's stimuli of a kind: {stimulus id: (clip, source, excerpt pick, A/B pair)}."""
        models = sorted(self.pool.slots)
        pairs = [(a, b) for i, a in enumerate(models) for b in models[i + 1 :]] if kind == "ab" else [None]
        return {
            stimulus_id(c, s, k, p): (c, s, k, p)
            for c in self.clips
            for s in SOURCES
            for k in range(EXCERPTS_PER_SOURCE)
            for p in pairs
        }

    def stimulus_counts(self, stimuli: dict) -> dict[str, int]:
        """{stimulus: trials of it kept after screening} (a few seconds stale at most: balancing
        needs no exact count, and under a crowd the ratings change between any two trials)."""
        rows, flags = self.campaign.screened(max_age=5.0)
        counts = dict.fromkeys(stimuli, 0)
        one_row = {"mushra": "reference"}  # one row of each MUSHRA trial; A/B and gold rows: one per trial
        for r in rows:
            if r.get("stimulus") in counts and not flags[r["listener"]]:
                if r["kind"] in ("ab", "gold") or r.get("condition") == one_row.get(r["kind"]):
                    counts[r["stimulus"]] += 1
        return counts

    def open_trial(self, token) -> TrialAudio | None:
        """The listener's trial issued and not answered (a Start in mid-trial, a reload), if its
        files are still there: shown again rather than replaced by a new one."""
        listener = self.listener(token)
        trial = self.store.open_trial(listener, since=self.store.clock() - WORK_MAX_AGE_S / 2)
        if trial is None or not trial.files or not all(Path(f).exists() for f in trial.files.values()):
            return None
        return trial_audio(trial)

    def answer(self, token, trial_id: str, answer: dict, client: str = "local", *, page: bool = False) -> int:
        """Store a trial's answer: MUSHRA {"scores": {label: 0-100}}; A/B and gold {"choice": label or
        "no preference", "mos": {label: 1-5}}. From the page, the answer also says how long each
        sample sounded ("heard": {label: seconds}, the reference too) and which sliders were set
        ("rated"): every sample must have been heard `APP_MIN_HEARD_S` and every slider set."""
        listener = self.listener(token)
        if not isinstance(answer, dict):
            raise RatingError("the answer must be a JSON object")
        self.limiter.allow("ratings", client, "ratings")
        saved = self.store.submit(
            listener,
            trial_id,
            scores=answer.get("scores"),
            choice=answer.get("choice"),
            mos=answer.get("mos"),
            heard=answer.get("heard") if page else None,
            rated=answer.get("rated") if page else None,
            min_heard=self.config.min_heard if page else None,
            via="page" if page else "api",
        )
        self.results.changed()
        return saved

    # ------------------------------------------------------------------ results

    def summary(self) -> dict:
        """The statistics of the counted ratings after the one screening (`Campaign.screened`), and
        how many ratings were stored but not counted (API, own separations)."""
        rows, flags = self.campaign.screened()
        everything = self.store.rows()
        api = sum(1 for r in everything if r.get("via") == "api")
        own = sum(1 for r in everything if r.get("own"))
        out = summary(rows, flags=flags)
        return {
            **out,
            "api_ratings": {"rows": api, "counted": bool(self.config.count_api_ratings)},
            "own_ratings": {"rows": own, "counted": bool(self.config.count_own_trials)},
        }

    def agreement(self) -> dict:
        """Kendall's tau of each metric with the kept MUSHRA scores (`eval.ratings.metric_agreement`)."""
        rows, flags = self.campaign.screened()
        kept = [r for r in rows if not flags[r["listener"]]]
        return metric_agreement(kept, self.store.excerpt_metrics())

    def export_link(self, token: str | None, client: str) -> str:
        """A one-time path (valid 60 s) that streams the raw ratings CSV: for whoever holds
        ADMIN_TOKEN (compared in constant time; 5 wrong tries per client and 15 minutes). No file
        is written anywhere the app serves."""
        if not self.config.admin_token:
            raise RatingError("export is disabled: set ADMIN_TOKEN in the app's environment")
        if self.limiter.failures("admin", client) >= self.limiter.limits["admin"][0]:
            raise RatingError("too many wrong admin tokens from this connection: try again in 15 min")
        if not token or not hmac.compare_digest(str(token).encode(), self.config.admin_token.encode()):
            self.limiter.allow("admin", client, "wrong admin tokens")
            raise RatingError("wrong admin token")
        link = secrets.token_urlsafe(24)
        now = time.monotonic()
        self._exports = {k: t for k, t in self._exports.items() if t > now}
        self._exports[link] = now + 60
        return f"/ratings-export/{link}"

    def export_stream(self, link: str):
        """The CSV lines of a valid one-time link (it is used up), or None."""
        expiry = self._exports.pop(link, None)
        if expiry is None or expiry < time.monotonic():
            return None
        return self.campaign.export_lines()

    def completion_code(self, listener: str, session: int) -> str:
        return self.campaign.completion_code(listener, session)

    def status_markdown(self) -> str:
        # words, not emoji: a machine without an emoji font shows a box for each (Spaces' viewers too)
        lines = []
        for slot in self.pool.slots.values():
            said = {"ready": f"ready ({slot.message})", "loading": "loading...", "unavailable": slot.message}
            lines.append(f"**{slot.name}**: {said[slot.state]}")
        if self.clip_note:
            lines.append(f"Note: {self.clip_note}")
        return "  \n".join(lines)


def summary_public(lab: LabApp) -> dict:
    """The statistics of the ratings as they are (`ResultsBoard.current`), without listener ids
    (the kept/dropped lists become counts)."""
    snapshot = lab.results.current()
    if snapshot is None:
        raise RatingError("the results are being computed: ask again in a minute")
    s = snapshot.summary
    mushra = dict(s["mushra"])
    mushra["kept"] = len(mushra["kept"])
    mushra["dropped"] = len(mushra["dropped"])
    return {**s, "mushra": mushra}


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
        "allowed_paths": [str(lab.trial_files.served)],
    }
