"""Separation lab: DPRNN vs Open-Unmix side by side, metrics, karaoke, and blind listening tests.

    python app.py                     # http://127.0.0.1:7860 (also what a Hugging Face Space runs)

Works offline with no configuration: the shipped DPRNN checkpoint, demo clips generated on
first start, ratings in a local SQLite file. Settings come from the environment (see
`webapp/config.py`): DPRNN_REPO, MUSDB_PATH, ADMIN_TOKEN, ... The separation is also an API:

    from gradio_client import Client, handle_file
    client = Client("http://127.0.0.1:7860/")
    files, info = client.predict(handle_file("song.mp3"), "all", api_name="/separate")
"""

from __future__ import annotations

import contextlib
import hmac
import html
import logging
import math
import os
import random
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import gradio as gr
import torch

from eval.ratings import summary
from separation.audio import SAMPLE_RATE, load_audio
from separation.errors import SeparationError
from separation.models.umx import offline
from webapp.clips import MIN_SECONDS, Clip, check_excerpt, ensure_demo_clips, load_clip, musdb_clips
from webapp.config import AppConfig
from webapp.gpu import gpu_seconds, on_gpu, zero_gpu
from webapp.service import (
    SOURCES,
    ModelPool,
    Separation,
    cleanup,
    karaoke,
    make_trial,
    metrics_rows,
    new_workdir,
    public_message,
    run_separation,
)
from webapp.store import RatingError, RatingsStore

log = logging.getLogger("webapp")

WORK_MAX_AGE_S = 3 * 3600  # request folders (stems, trials) older than this are deleted
MAX_TRIAL_SAMPLES = 6  # MUSHRA: hidden reference + anchor + up to 4 models
METRIC_HEADERS = ["model", "source", "SDR", "SIR", "ISR", "SAR", "SI-SDR"]
INTRO = """# Separation lab: vocals and karaoke, DPRNN vs Open-Unmix
Upload a song (or record one), or pick a clip; each model splits it into **vocals** and
**accompaniment** (the karaoke track). With a clip whose true stems are known you also get
BSSEval v4 metrics. Then help compare the models in a **blind listening test**."""


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
            from webapp.sync import start_sync

            on_write = start_sync(self.data_dir / "sync", config.ratings_repo, config.hf_token)
        self.store = RatingsStore(config.ratings_db, app_version=config.version, rate_limit=config.rate_limit, on_write=on_write)
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
            raise SeparationError(f"{Path(path).name}: the audio lasts {lasts} s; "
                                  f"the app separates {MIN_SECONDS:g} s or more")
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
            return run_separation(mix, references, pool=self.pool, workdir=workdir, clip=clip, progress=progress,
                                  models=models)

    def demo_separation(self) -> Separation:
        """A separated clip with references, shared by sessions that rate before separating."""
        with self._demo_lock:
            clip = random.choice(list(self.clips.values()))
            cached = self._demo.get(clip.id)
            if cached is None or not cached.mixture.exists() or set(cached.stems) != {s.name for s in self.pool.ready()}:
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


# ---------------------------------------------------------------------------- UI


def _error(exc: Exception) -> gr.Error:
    """The error a page or an API client sees: the public text (no server paths), HTML-escaped
    (it may quote a file name the client chose); a bug's text stays in the server log."""
    if isinstance(exc, (SeparationError, RatingError)):
        log.info("refused: %s", exc)
        return gr.Error(html.escape(public_message(exc) if isinstance(exc, SeparationError) else str(exc)),
                        print_exception=False)
    log.exception("unexpected error")
    return gr.Error(f"something went wrong ({type(exc).__name__}); the app is still running, please try again")


def build_ui(lab: LabApp) -> gr.Blocks:
    cfg = lab.config
    models = list(cfg.models)
    clip_ids = list(lab.clips)
    first = lab.clips[clip_ids[0]]

    with gr.Blocks(title="Separation lab", delete_cache=(1800, WORK_MAX_AGE_S)) as demo:
        listener = gr.BrowserState(None, storage_key="separation-lab-listener")
        result = gr.State(None)  # the session's last Separation
        trial_state = gr.State(None)
        gr.Markdown(INTRO)
        status = gr.Markdown(lab.status_markdown())

        with gr.Tab("Separate"):
            with gr.Row(equal_height=False):
                with gr.Column():
                    with gr.Tab("Upload or record"):
                        upload = gr.Audio(sources=["upload", "microphone"], type="filepath", label="Your song (wav, flac, mp3, ogg, m4a)")
                        gr.Markdown(f"From {MIN_SECONDS:g} s up to {cfg.max_minutes:g} minutes and {cfg.max_upload_mb:g} MB "
                                    f"({cfg.max_upload_bytes:,} bytes).")
                        upload_btn = gr.Button("Separate my song", variant="primary")
                    with gr.Tab("Example clips (with true stems)"):
                        clip = gr.Dropdown(clip_ids, value=clip_ids[0], label="Clip")
                        with gr.Row():
                            start = gr.Slider(0, max(0.0, first.duration - 1), value=0, step=1, label="Start (s)")
                            length = gr.Slider(5, min(first.duration, cfg.max_minutes * 60), value=min(30.0, first.duration),
                                               step=1, label="Length (s)")
                        clip_btn = gr.Button("Separate this clip", variant="primary")
                with gr.Column():
                    guide = gr.Slider(0, 100, value=0, step=5, label="Guide vocal in the karaoke track (%)",
                                      info="0 = pure accompaniment; raise it to keep a quiet guide vocal")
                    message = gr.Markdown()
            columns = {}
            with gr.Row():
                for name in models:
                    with gr.Column():
                        header = gr.Markdown(f"### {name}")
                        vocals = gr.Audio(label=f"{name}: vocals", type="filepath", interactive=False, buttons=["download"])
                        kara = gr.Audio(label=f"{name}: karaoke (accompaniment)", type="filepath", interactive=False,
                                        buttons=["download"])
                        download = gr.DownloadButton(f"Download {name} karaoke (WAV)", visible=False)
                        columns[name] = (header, vocals, kara, download)
            with gr.Tab("Spectrograms: vocals"):
                spec_vocals = gr.Plot(label="vocals")
            with gr.Tab("Spectrograms: accompaniment"):
                spec_acc = gr.Plot(label="accompaniment")
            with gr.Tab("Metrics"):
                metrics = gr.Dataframe(headers=METRIC_HEADERS, label="BSSEval v4 and SI-SDR (dB, median over 1-s windows)",
                                       interactive=False)
                framewise = gr.Plot(label="SDR over time")
                metrics_note = gr.Markdown("Metrics need the true stems: separate one of the example clips.")

        with gr.Tab("Listen and rate (blind)"):
            gr.Markdown(
                "Samples are labelled A, B, ...; which model made which is hidden and shuffled in every trial. "
                "With true stems: rate each sample from 0 (bad) to 100 (excellent) against the open **reference** "
                "(one sample is the hidden reference itself, another a low-pass anchor; MUSHRA, ITU-R BS.1534). "
                "Without: say which of A and B you prefer and score each from 1 to 5. Uses your last separation, "
                "or an example clip."
            )
            trial_btn = gr.Button("Start a blind trial", variant="primary")
            trial_info = gr.Markdown()
            trial_reference = gr.Audio(label="Reference (open)", type="filepath", interactive=False, visible=False)
            samples, sliders = [], []
            for i in range(MAX_TRIAL_SAMPLES):
                with gr.Row(visible=False) as row:
                    audio = gr.Audio(label=f"Sample {chr(65 + i)}", type="filepath", interactive=False, scale=2)
                    slider = gr.Slider(0, 100, value=50, step=1, label=f"Sample {chr(65 + i)}: score", scale=1)
                samples.append((row, audio))
                sliders.append(slider)
            with gr.Group(visible=False) as ab_group:
                choice = gr.Radio(["A", "B", "no preference"], label="Which sounds better?")
                with gr.Row():
                    mos_a = gr.Slider(1, 5, value=3, step=1, label="A: overall quality (1 bad - 5 excellent)")
                    mos_b = gr.Slider(1, 5, value=3, step=1, label="B: overall quality (1 bad - 5 excellent)")
            submit = gr.Button("Submit ratings", visible=False)
            submit_msg = gr.Markdown()

        with gr.Tab("Results"):
            results_md = gr.Markdown()
            mushra_table = gr.Dataframe(headers=["condition", "source", "n", "mean", "95% CI low", "95% CI high"],
                                        label="MUSHRA scores (0-100) of listeners who passed post-screening", interactive=False)
            pref_table = gr.Dataframe(headers=["x", "y", "x preferred", "y preferred", "no preference", "rate x", "95% CI",
                                               "p (binomial)"], label="A/B preference", interactive=False)
            mos_table = gr.Dataframe(headers=["condition", "source", "n", "mean", "95% CI low", "95% CI high"],
                                     label="Overall quality (1-5) in A/B trials", interactive=False)
            refresh = gr.Button("Refresh")
            timer = gr.Timer(15)
            with gr.Accordion("Admin: raw ratings (CSV)", open=False):
                token = gr.Textbox(label="Admin token", type="password")
                export_btn = gr.Button("Export")
                export_file = gr.File(label="ratings.csv", interactive=False)

        with gr.Tab("About"):
            about = gr.Markdown(about_markdown(lab))

        # hidden components of the API endpoints
        with gr.Column(visible=False):
            api_file = gr.File(type="filepath", label="audio")
            api_models = gr.Textbox(value="all", label="models")
            api_clip = gr.Textbox(label="clip")
            api_start = gr.Number(value=0, label="start")
            api_length = gr.Number(value=30, label="length")
            api_files = gr.File(file_count="multiple", label="stems")
            api_info = gr.JSON(label="info")
            api_listener = gr.Textbox(label="listener")
            api_trial_id = gr.Textbox(label="trial_id")
            api_answer = gr.JSON(label="answer")
            api_btn = gr.Button()
            api_clip_btn = gr.Button()
            api_trial_btn = gr.Button()
            api_rate_btn = gr.Button()
            api_results_btn = gr.Button()

        # ------------------------------------------------------------------ handlers

        column_outputs = [c for name in models for c in columns[name]]
        separate_outputs = [result, message, status, *column_outputs, spec_vocals, spec_acc, metrics, framewise, metrics_note]

        def show(sep: Separation, guide_pct: float) -> list:
            values = [sep, summary_line(sep), lab.status_markdown()]
            for name in models:
                if name in sep.stems:
                    kara_path = str(karaoke(sep, name, guide_pct / 100))
                    values += [f"### {name}", str(sep.stems[name]["vocals"]), kara_path,
                               gr.DownloadButton(value=kara_path, visible=True)]
                else:
                    reason = sep.errors.get(name, "not run")
                    values += [f"### {name}\n⚠️ {reason}", None, None, gr.DownloadButton(visible=False)]
            values += [sep.figures.get("vocals"), sep.figures.get("accompaniment"),
                       metrics_rows(sep) if sep.metrics else None, sep.figures.get("framewise"),
                       "" if sep.metrics else "Metrics need the true stems: separate one of the example clips."]
            return values

        def on_upload(path, guide_pct, progress=gr.Progress()):
            try:
                mix = lab.read_upload(path)
                sep = lab.separate(mix, None, Path(path).name, progress=lambda f, d: progress(f, desc=d))
            except Exception as exc:
                raise _error(exc) from None
            return show(sep, guide_pct)

        def on_clip(clip_id, start_s, length_s, guide_pct, progress=gr.Progress()):
            try:
                mix, refs, label = clip_excerpt(lab, clip_id, start_s, length_s)
                sep = lab.separate(mix, refs, label, progress=lambda f, d: progress(f, desc=d))
            except Exception as exc:
                raise _error(exc) from None
            return show(sep, guide_pct)

        def on_clip_change(clip_id):
            c = lab.clips.get(clip_id)
            if c is None:
                return gr.Slider(), gr.Slider()
            top = min(c.duration, cfg.max_minutes * 60)
            return gr.Slider(maximum=max(0.0, c.duration - 1), value=0), gr.Slider(maximum=top, value=min(30.0, top))

        def on_guide(sep, guide_pct):
            values = []
            for name in models:
                if sep is not None and name in sep.stems:
                    path = str(karaoke(sep, name, guide_pct / 100))
                    values += [path, gr.DownloadButton(value=path, visible=True)]
                else:
                    values += [gr.Audio(), gr.DownloadButton()]
            return values

        def on_load(listener_id):
            if not listener_id:
                listener_id = new_listener_id()
            return listener_id, lab.status_markdown(), about_markdown(lab)

        def on_trial(sep, listener_id):
            try:
                trial, sep = lab.trial_for(sep, listener_id or "")
            except Exception as exc:
                raise _error(exc) from None
            mushra = trial.kind == "mushra"
            updates = [TrialState(trial.trial_id, trial.kind, trial.labels)]
            what = (f"MUSHRA trial on **{trial.source}** of *{sep.clip}*: rate every sample against the reference."
                    if mushra else f"A/B trial on **{trial.source}** of *{sep.clip}*.")
            updates += [what, gr.Audio(value=str(trial.reference) if trial.reference else None, visible=mushra)]
            for i, (row, audio) in enumerate(samples):
                label = trial.labels[i] if i < len(trial.labels) else None
                updates += [gr.Row(visible=label is not None), gr.Audio(value=str(trial.files[label]) if label else None)]
            updates += [gr.Slider(value=50, visible=mushra) for _ in sliders]
            updates += [gr.Group(visible=not mushra), gr.Radio(value=None), gr.Slider(value=3), gr.Slider(value=3),
                        gr.Button(visible=True), ""]
            return updates

        def on_submit(state, listener_id, *values):
            scores, (pref, a, b) = values[:MAX_TRIAL_SAMPLES], values[MAX_TRIAL_SAMPLES:]
            if state is None:
                raise gr.Error("start a trial first", print_exception=False)
            try:
                if state.kind == "ab" and pref is None:
                    raise RatingError("say which sample you prefer (or 'no preference')")
                answer = ({"scores": dict(zip(state.labels, scores))} if state.kind == "mushra"
                          else {"choice": None if pref == "no preference" else pref, "mos": {"A": a, "B": b}})
                lab.answer(listener_id or "", state, answer)
            except Exception as exc:
                raise _error(exc) from None
            return None, "✅ Thank you! Saved. Start another trial whenever you like.", gr.Button(visible=False)

        def on_results():
            return results_view(lab)

        def on_export(token_value):
            try:
                return str(lab.export_ratings(token_value))
            except Exception as exc:
                raise _error(exc) from None

        def api_trial(listener_id):
            """A blind trial for a listener (from an example clip): its id, kind, labels and sample files."""
            try:
                trial, _ = lab.trial_for(None, listener_id or "")
            except Exception as exc:
                raise _error(exc) from None
            files = [str(trial.files[label]) for label in trial.labels] + ([str(trial.reference)] if trial.reference else [])
            info = {"trial_id": trial.trial_id, "kind": trial.kind, "source": trial.source, "labels": trial.labels,
                    "files": [Path(f).name for f in files]}
            return files, info

        def api_rate(listener_id, trial_id, answer):
            """Rate a trial: MUSHRA {"scores": {"A": 0-100, ...}}; A/B {"choice": "A"|"B"|null, "mos": {"A": 1-5, "B": 1-5}}."""
            try:
                trial = lab.store.get_trial(str(trial_id))
                if trial is None:
                    raise RatingError("unknown trial: start a new one")
                if not isinstance(answer, dict):
                    raise RatingError("the answer must be a JSON object")
                written = lab.answer(listener_id or "", TrialState(trial.id, trial.kind, sorted(trial.conditions)), answer)
            except Exception as exc:
                raise _error(exc) from None
            return {"saved": written}

        def api_results():
            """Aggregate listening-test statistics (no raw rows)."""
            return _finite(summary_public(lab))

        def api_separate(path, which):
            """Separate an audio file with the app's models; returns the stem files and a JSON summary."""
            try:
                wanted = lab.check_models(which)
                mix = lab.read_upload(path)
                sep = lab.separate(mix, None, Path(path).name, models=wanted)
            except Exception as exc:
                raise _error(exc) from None
            return api_result(sep, wanted)

        def api_separate_clip(clip_id, start_s, length_s):
            """Separate an excerpt of a clip with known stems; the JSON summary includes the metrics."""
            try:
                mix, refs, label = clip_excerpt(lab, clip_id, 0 if start_s is None else start_s,
                                                30 if length_s is None else length_s)
                sep = lab.separate(mix, refs, label)
            except Exception as exc:
                raise _error(exc) from None
            return api_result(sep, None)

        sep_limits = {"concurrency_limit": cfg.concurrency, "concurrency_id": "separate"}
        upload_btn.click(on_upload, [upload, guide], separate_outputs, api_visibility="private", **sep_limits)
        clip_btn.click(on_clip, [clip, start, length, guide], separate_outputs, api_visibility="private", **sep_limits)
        clip.change(on_clip_change, clip, [start, length], api_visibility="private", queue=False)
        guide.release(on_guide, [result, guide], [c for name in models for c in columns[name][2:]], api_visibility="private")
        demo.load(on_load, listener, [listener, status, about], api_visibility="private", queue=False)
        trial_outputs = [trial_state, trial_info, trial_reference, *[c for s in samples for c in s], *sliders,
                         ab_group, choice, mos_a, mos_b, submit, submit_msg]
        trial_btn.click(on_trial, [result, listener], trial_outputs, api_visibility="private", **sep_limits)
        submit.click(on_submit, [trial_state, listener, *sliders, choice, mos_a, mos_b], [trial_state, submit_msg, submit],
                     api_visibility="private").then(on_results, None, [results_md, mushra_table, pref_table, mos_table],
                                                    api_visibility="private")
        for trigger in (refresh.click, timer.tick, demo.load):
            trigger(on_results, None, [results_md, mushra_table, pref_table, mos_table], api_visibility="private", queue=False)
        export_btn.click(on_export, token, export_file, api_visibility="private")
        api_btn.click(api_separate, [api_file, api_models], [api_files, api_info], api_name="separate", **sep_limits)
        api_clip_btn.click(api_separate_clip, [api_clip, api_start, api_length], [api_files, api_info], api_name="separate_clip",
                           **sep_limits)
        api_trial_btn.click(api_trial, api_listener, [api_files, api_info], api_name="trial", **sep_limits)
        api_rate_btn.click(api_rate, [api_listener, api_trial_id, api_answer], api_info, api_name="rate")
        api_results_btn.click(api_results, None, api_info, api_name="results", queue=False)
    return demo


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
    label = clip.id if start_s == 0 and length_s >= clip.duration else f"{clip.id} [{start_s:.0f}-{start_s + mix.shape[-1] / 44100:.0f} s]"
    return mix, refs, label


def summary_line(sep: Separation) -> str:
    done = ", ".join(f"{m} {sep.timings.get(f'separate {m}', 0):.1f} s" for m in sep.stems) or "no model"
    lines = [f"**{sep.clip}** ({sep.seconds:.1f} s): {done}; total {sep.timings.get('total', 0):.1f} s."]
    # models that are unavailable say so in their own column; here only what failed in this run
    lines += [f"⚠️ {name}: {reason}" for name, reason in sep.errors.items() if name not in sep.unavailable]
    return "  \n".join(lines)


def api_result(sep: Separation, wanted: list[str] | None) -> tuple[list[str], dict]:
    """The stem files and the JSON summary of the models asked for (None: all that ran)."""
    wanted = list(sep.stems) if wanted is None else wanted
    if not any(m in sep.stems for m in wanted):
        raise gr.Error(html.escape("no model could separate this: " + ("; ".join(f"{k}: {v}" for k, v in sep.errors.items())
                                                                         or "none is loaded")), print_exception=False)
    files, stems = [], {}
    for m in wanted:
        if m in sep.stems:
            stems[m] = {s: sep.stems[m][s].name for s in SOURCES}
            files += [str(sep.stems[m][s]) for s in SOURCES]
    info = {
        "clip": sep.clip, "seconds": round(sep.seconds, 3), "sample_rate": 44100, "stems": stems,
        "versions": {m: sep.versions[m] for m in stems}, "errors": sep.errors,
        "metrics": [r for r in sep.metrics if r["model"] in stems],
        "timings": {k: round(v, 3) for k, v in sep.timings.items()},
    }
    return files, _finite(info)


def _finite(x):
    """JSON has no NaN: None instead."""
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    if isinstance(x, dict):
        return {k: _finite(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_finite(v) for v in x]
    return x


def results_view(lab: LabApp) -> list:
    rows = lab.store.rows()
    s = summary(rows)
    mushra = s["mushra"]
    dropped = mushra["dropped"]
    text = (f"**{s['ratings']} ratings** from **{s['listeners']} listeners** (updated {time.strftime('%H:%M:%S')}). "
            f"MUSHRA post-screening (reference rated below 90 in more than 15% of a listener's trials): "
            f"{len(dropped)} of {mushra['listeners']} listeners excluded.")

    def r(x):
        return None if x is None or (isinstance(x, float) and math.isnan(x)) else round(x, 2)

    mushra_rows = [[x["condition"], x["source"], x["n"], r(x["mean"]), r(x["low"]), r(x["high"])] for x in mushra["scores"]]
    pref_rows = [[p["x"], p["y"], p["wins_x"], p["wins_y"], p["ties"], r(p["rate_x"]), f"{r(p['low'])}-{r(p['high'])}",
                  r(p["p"])] for p in s["preference"]]
    mos_rows = [[x["condition"], x["source"], x["n"], r(x["mean"]), r(x["low"]), r(x["high"])] for x in s["mos"]]
    return [text, mushra_rows, pref_rows, mos_rows]


def about_markdown(lab: LabApp) -> str:
    return f"""
### Models
{lab.status_markdown()}

- **dprnn**: a Dual-Path RNN on spectrograms (this project); `DPRNN_REPO` selects a Hub checkpoint,
  otherwise the shipped demo checkpoint, trained on synthetic songs only: it works on the demo
  clips, not on real music.
- **umxhq**: Open-Unmix trained on MUSDB18-HQ (Stöter et al. 2019), its upstream weights.

### Metrics
BSSEval v4 (SiSEC 2018): SDR, SIR (interference), ISR (spatial image), SAR (artifacts), plus
SI-SDR, each the median over 1-s windows; windows where a stem is silent are skipped.

### API
```python
from gradio_client import Client, handle_file
client = Client("{os.environ.get('SPACE_HOST', 'http://127.0.0.1:7860/')}")
files, info = client.predict(handle_file("song.mp3"), "all", api_name="/separate")
```
`/separate_clip` (clip, start, length) also returns the metrics.

### Privacy
Ratings are stored with a random listener id kept in your browser, no name and no address.
Only aggregates are shown here; app version {lab.config.version}.
"""


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    for noisy in ("httpx", "httpcore", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    config = AppConfig.from_env()
    if offline():  # offline means no request at all: Gradio's usage statistics and version check included
        os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
    lab = LabApp(config)
    demo = build_ui(lab)
    demo.queue(default_concurrency_limit=4, max_size=config.queue_size)
    demo.launch(
        server_name=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"),
        server_port=int(os.environ.get("GRADIO_SERVER_PORT", "7860")),
        theme=gr.themes.Soft(),
        **launch_options(lab),
    )


def launch_options(lab: LabApp) -> dict:
    """What `launch` needs from the app's settings (the tests launch with the same)."""
    return {
        "max_file_size": lab.config.max_upload_bytes,  # in bytes: Gradio's "50mb" would be MiB, the page says MB
        "allowed_paths": [str(lab.work_root)],
    }


if __name__ == "__main__":
    main()
