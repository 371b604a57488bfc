"""The Gradio page: one builder per tab, and handlers that return named updates.

Each tab is built by its own function, which returns a small dataclass of its components;
each handler returns a dict `{component: new value}` (Gradio's named updates), so nothing
depends on the order of an outputs list written elsewhere. The logic lives in
`webapp.lab.LabApp`; this module only wires it to widgets and to the API endpoints.

    python app.py          # or ./run.sh app, or `separation-lab` once installed
"""

from __future__ import annotations

import html
import logging
import os
import time
from dataclasses import dataclass, fields, is_dataclass
from pathlib import Path

import gradio as gr

from eval.ratings import summary
from separation.audio import SAMPLE_RATE
from separation.errors import SeparationError
from separation.pretrained import offline
from separation.results import json_safe

from .config import AppConfig
from .lab import WORK_MAX_AGE_S, LabApp, TrialState, clip_excerpt, launch_options, new_listener_id, summary_public
from .service import SOURCES, Separation, karaoke, metrics_rows, public_message
from .store import RatingError

log = logging.getLogger("webapp")

MAX_TRIAL_SAMPLES = 6  # MUSHRA: hidden reference + anchor + up to 4 models
METRIC_HEADERS = ["model", "source", "SDR", "SIR", "ISR", "SAR", "SI-SDR"]
STAT_HEADERS = ["condition", "source", "n", "mean", "95% CI low", "95% CI high"]
INTRO = """# Separation lab: vocals and karaoke, DPRNN vs Open-Unmix
Upload a song (or record one), or pick a clip; each model splits it into **vocals** and
**accompaniment** (the karaoke track). With a clip whose true stems are known you also get
BSSEval v4 metrics. Then help compare the models in a **blind listening test**."""
NO_METRICS = "Metrics need the true stems: separate one of the example clips."


def components(tab) -> list:
    """Every Gradio component of a tab's dataclass (in lists, dicts and nested dataclasses too)."""
    out = []
    for f in fields(tab):
        value = getattr(tab, f.name)
        for item in value.values() if isinstance(value, dict) else value if isinstance(value, list) else [value]:
            out += components(item) if is_dataclass(item) else [item]
    return out


def error(exc: Exception) -> gr.Error:
    """The error a page or an API client sees: the public text (no server paths), HTML-escaped
    (it may quote a file name the client chose); a bug's text stays in the server log."""
    if isinstance(exc, (SeparationError, RatingError)):
        log.info("refused: %s", exc)
        return gr.Error(
            html.escape(public_message(exc) if isinstance(exc, SeparationError) else str(exc)), print_exception=False
        )
    log.exception("unexpected error")
    return gr.Error(f"something went wrong ({type(exc).__name__}); the app is still running, please try again")


# ---------------------------------------------------------------------------- Separate tab


@dataclass
class ModelColumn:
    header: gr.Markdown
    vocals: gr.Audio
    karaoke: gr.Audio
    download: gr.DownloadButton


@dataclass
class SeparateTab:
    upload: gr.Audio
    upload_btn: gr.Button
    clip: gr.Dropdown
    start: gr.Slider
    length: gr.Slider
    clip_btn: gr.Button
    guide: gr.Slider
    message: gr.Markdown
    columns: dict[str, ModelColumn]
    spec_vocals: gr.Plot
    spec_accompaniment: gr.Plot
    metrics: gr.Dataframe
    framewise: gr.Plot
    metrics_note: gr.Markdown

    def outputs(self) -> list:
        """What a separation updates: everything but the inputs (the download buttons included)."""
        inputs = {
            id(c) for c in (self.upload, self.upload_btn, self.clip, self.start, self.length, self.clip_btn, self.guide)
        }
        return [c for c in components(self) if id(c) not in inputs]


def build_separate_tab(lab: LabApp) -> SeparateTab:
    cfg, clip_ids = lab.config, list(lab.clips)
    first = lab.clips[clip_ids[0]]
    with gr.Row(equal_height=False):
        with gr.Column():
            with gr.Tab("Upload or record"):
                upload = gr.Audio(
                    sources=["upload", "microphone"], type="filepath", label="Your song (wav, flac, mp3, ogg, m4a)"
                )
                gr.Markdown(
                    f"From 1 s up to {cfg.max_minutes:g} minutes and {cfg.max_upload_mb:g} MB "
                    f"({cfg.max_upload_bytes:,} bytes)."
                )
                upload_btn = gr.Button("Separate my song", variant="primary")
            with gr.Tab("Example clips (with true stems)"):
                clip = gr.Dropdown(clip_ids, value=clip_ids[0], label="Clip")
                with gr.Row():
                    start = gr.Slider(0, max(0.0, first.duration - 1), value=0, step=1, label="Start (s)")
                    length = gr.Slider(
                        5,
                        min(first.duration, cfg.max_minutes * 60),
                        value=min(30.0, first.duration),
                        step=1,
                        label="Length (s)",
                    )
                clip_btn = gr.Button("Separate this clip", variant="primary")
        with gr.Column():
            guide = gr.Slider(
                0,
                100,
                value=0,
                step=5,
                label="Guide vocal in the karaoke track (%)",
                info="0 = pure accompaniment; raise it to keep a quiet guide vocal",
            )
            message = gr.Markdown()
    columns = {}
    with gr.Row():
        for name in cfg.models:
            with gr.Column():
                columns[name] = ModelColumn(
                    gr.Markdown(f"### {name}"),
                    gr.Audio(label=f"{name}: vocals", type="filepath", interactive=False, buttons=["download"]),
                    gr.Audio(
                        label=f"{name}: karaoke (accompaniment)",
                        type="filepath",
                        interactive=False,
                        buttons=["download"],
                    ),
                    gr.DownloadButton(f"Download {name} karaoke (WAV)", visible=False),
                )
    with gr.Tab("Spectrograms: vocals"):
        spec_vocals = gr.Plot(label="vocals")
    with gr.Tab("Spectrograms: accompaniment"):
        spec_accompaniment = gr.Plot(label="accompaniment")
    with gr.Tab("Metrics"):
        metrics = gr.Dataframe(
            headers=METRIC_HEADERS, label="BSSEval v4 and SI-SDR (dB, median over 1-s windows)", interactive=False
        )
        framewise = gr.Plot(label="SDR over time")
        metrics_note = gr.Markdown(NO_METRICS)
    return SeparateTab(
        upload,
        upload_btn,
        clip,
        start,
        length,
        clip_btn,
        guide,
        message,
        columns,
        spec_vocals,
        spec_accompaniment,
        metrics,
        framewise,
        metrics_note,
    )


def show_separation(lab: LabApp, tab: SeparateTab, sep: Separation, guide_pct: float) -> dict:
    """Named updates of the Separate tab for a finished separation."""
    updates = {tab.message: summary_line(sep)}
    for name, col in tab.columns.items():
        if name in sep.stems:
            kara = str(karaoke(sep, name, guide_pct / 100))
            updates |= {
                col.header: f"### {name}",
                col.vocals: str(sep.stems[name]["vocals"]),
                col.karaoke: kara,
                col.download: gr.DownloadButton(value=kara, visible=True),
            }
        else:
            reason = sep.errors.get(name, "not run")
            updates |= {
                col.header: f"### {name}\n⚠️ {reason}",
                col.vocals: None,
                col.karaoke: None,
                col.download: gr.DownloadButton(visible=False),
            }
    return updates | {
        tab.spec_vocals: sep.figures.get("vocals"),
        tab.spec_accompaniment: sep.figures.get("accompaniment"),
        tab.metrics: metrics_rows(sep) if sep.metrics else None,
        tab.framewise: sep.figures.get("framewise"),
        tab.metrics_note: "" if sep.metrics else NO_METRICS,
    }


def wire_separate_tab(lab: LabApp, tab: SeparateTab, result: gr.State, status: gr.Markdown) -> None:
    outputs = [result, status, *tab.outputs()]
    limits = {"concurrency_limit": lab.config.concurrency, "concurrency_id": "separate"}

    def finish(sep: Separation, guide_pct: float) -> dict:
        return {result: sep, status: lab.status_markdown(), **show_separation(lab, tab, sep, guide_pct)}

    def on_upload(path, guide_pct, progress=gr.Progress()):
        try:
            sep = lab.separate(lab.read_upload(path), None, Path(path).name, progress=lambda f, d: progress(f, desc=d))
        except Exception as exc:
            raise error(exc) from None
        return finish(sep, guide_pct)

    def on_clip(clip_id, start_s, length_s, guide_pct, progress=gr.Progress()):
        try:
            mix, refs, label = clip_excerpt(lab, clip_id, start_s, length_s)
            sep = lab.separate(mix, refs, label, progress=lambda f, d: progress(f, desc=d))
        except Exception as exc:
            raise error(exc) from None
        return finish(sep, guide_pct)

    def on_clip_change(clip_id):
        c = lab.clips.get(clip_id)
        if c is None:
            return {tab.start: gr.Slider(), tab.length: gr.Slider()}
        top = min(c.duration, lab.config.max_minutes * 60)
        return {
            tab.start: gr.Slider(maximum=max(0.0, c.duration - 1), value=0),
            tab.length: gr.Slider(maximum=top, value=min(30.0, top)),
        }

    def on_guide(sep, guide_pct):
        updates = {}
        for name, col in tab.columns.items():
            if sep is not None and name in sep.stems:
                path = str(karaoke(sep, name, guide_pct / 100))
                updates |= {col.karaoke: path, col.download: gr.DownloadButton(value=path, visible=True)}
        return updates

    tab.upload_btn.click(on_upload, [tab.upload, tab.guide], outputs, api_visibility="private", **limits)
    tab.clip_btn.click(
        on_clip, [tab.clip, tab.start, tab.length, tab.guide], outputs, api_visibility="private", **limits
    )
    tab.clip.change(on_clip_change, tab.clip, [tab.start, tab.length], api_visibility="private", queue=False)
    kara_outputs = [c for col in tab.columns.values() for c in (col.karaoke, col.download)]
    tab.guide.release(on_guide, [result, tab.guide], kara_outputs, api_visibility="private")


def summary_line(sep: Separation) -> str:
    done = ", ".join(f"{m} {sep.timings.get(f'separate {m}', 0):.1f} s" for m in sep.stems) or "no model"
    lines = [f"**{sep.clip}** ({sep.seconds:.1f} s): {done}; total {sep.timings.get('total', 0):.1f} s."]
    # models that are unavailable say so in their own column; here only what failed in this run
    lines += [f"⚠️ {name}: {reason}" for name, reason in sep.errors.items() if name not in sep.unavailable]
    return "  \n".join(lines)


# ---------------------------------------------------------------------------- Listen and rate tab


@dataclass
class RatingTab:
    start: gr.Button
    info: gr.Markdown
    reference: gr.Audio
    rows: list[gr.Row]
    samples: list[gr.Audio]
    sliders: list[gr.Slider]
    ab_group: gr.Group
    choice: gr.Radio
    mos_a: gr.Slider
    mos_b: gr.Slider
    submit: gr.Button
    submit_msg: gr.Markdown


def build_rating_tab() -> RatingTab:
    gr.Markdown(
        "Samples are labelled A, B, ...; which model made which is hidden and shuffled in every trial. "
        "With true stems: rate each sample from 0 (bad) to 100 (excellent) against the open **reference** "
        "(one sample is the hidden reference itself, another a low-pass anchor; MUSHRA, ITU-R BS.1534). "
        "Without: say which of A and B you prefer and score each from 1 to 5. Uses your last separation, "
        "or an example clip."
    )
    start = gr.Button("Start a blind trial", variant="primary")
    info = gr.Markdown()
    reference = gr.Audio(label="Reference (open)", type="filepath", interactive=False, visible=False)
    rows, samples, sliders = [], [], []
    for i in range(MAX_TRIAL_SAMPLES):
        with gr.Row(visible=False) as row:
            samples.append(gr.Audio(label=f"Sample {chr(65 + i)}", type="filepath", interactive=False, scale=2))
            sliders.append(gr.Slider(0, 100, value=50, step=1, label=f"Sample {chr(65 + i)}: score", scale=1))
        rows.append(row)
    with gr.Group(visible=False) as ab_group:
        choice = gr.Radio(["A", "B", "no preference"], label="Which sounds better?")
        with gr.Row():
            mos_a = gr.Slider(1, 5, value=3, step=1, label="A: overall quality (1 bad - 5 excellent)")
            mos_b = gr.Slider(1, 5, value=3, step=1, label="B: overall quality (1 bad - 5 excellent)")
    submit = gr.Button("Submit ratings", visible=False)
    submit_msg = gr.Markdown()
    return RatingTab(start, info, reference, rows, samples, sliders, ab_group, choice, mos_a, mos_b, submit, submit_msg)


def show_trial(tab: RatingTab, trial, sep: Separation) -> dict:
    """Named updates of the rating tab for a new trial."""
    mushra = trial.kind == "mushra"
    what = (
        f"MUSHRA trial on **{trial.source}** of *{sep.clip}*: rate every sample against the reference."
        if mushra
        else f"A/B trial on **{trial.source}** of *{sep.clip}*."
    )
    updates = {
        tab.info: what,
        tab.reference: gr.Audio(value=str(trial.reference) if trial.reference else None, visible=mushra),
    }
    for i, (row, audio, slider) in enumerate(zip(tab.rows, tab.samples, tab.sliders, strict=True)):
        label = trial.labels[i] if i < len(trial.labels) else None
        updates |= {
            row: gr.Row(visible=label is not None),
            audio: gr.Audio(value=str(trial.files[label]) if label else None),
            slider: gr.Slider(value=50, visible=mushra),
        }
    return updates | {
        tab.ab_group: gr.Group(visible=not mushra),
        tab.choice: gr.Radio(value=None),
        tab.mos_a: gr.Slider(value=3),
        tab.mos_b: gr.Slider(value=3),
        tab.submit: gr.Button(visible=True),
        tab.submit_msg: "",
    }


def wire_rating_tab(lab: LabApp, tab: RatingTab, result: gr.State, listener: gr.BrowserState, results_refresh) -> None:
    trial_state = gr.State(None)

    def on_trial(sep, listener_id):
        try:
            trial, sep = lab.trial_for(sep, listener_id or "")
        except Exception as exc:
            raise error(exc) from None
        return {trial_state: TrialState(trial.trial_id, trial.kind, trial.labels), **show_trial(tab, trial, sep)}

    def on_submit(state, listener_id, *values):
        scores, (pref, a, b) = values[:MAX_TRIAL_SAMPLES], values[MAX_TRIAL_SAMPLES:]
        if state is None:
            raise gr.Error("start a trial first", print_exception=False)
        try:
            if state.kind == "ab" and pref is None:
                raise RatingError("say which sample you prefer (or 'no preference')")
            answer = (
                {"scores": dict(zip(state.labels, scores, strict=False))}
                if state.kind == "mushra"
                else {"choice": None if pref == "no preference" else pref, "mos": {"A": a, "B": b}}
            )
            lab.answer(listener_id or "", state, answer)
        except Exception as exc:
            raise error(exc) from None
        return {
            trial_state: None,
            tab.submit_msg: "✅ Thank you! Saved. Start another trial whenever you like.",
            tab.submit: gr.Button(visible=False),
        }

    trial_outputs = [trial_state, *components(tab)]
    tab.start.click(
        on_trial,
        [result, listener],
        trial_outputs,
        api_visibility="private",
        concurrency_limit=lab.config.concurrency,
        concurrency_id="separate",
    )
    inputs = [trial_state, listener, *tab.sliders, tab.choice, tab.mos_a, tab.mos_b]
    results_refresh(
        tab.submit.click(on_submit, inputs, [trial_state, tab.submit_msg, tab.submit], api_visibility="private").then
    )


# ---------------------------------------------------------------------------- Results and About tabs


@dataclass
class ResultsTab:
    text: gr.Markdown
    mushra: gr.Dataframe
    preference: gr.Dataframe
    mos: gr.Dataframe
    refresh: gr.Button
    token: gr.Textbox
    export: gr.Button
    export_file: gr.File


def build_results_tab() -> ResultsTab:
    text = gr.Markdown()
    mushra = gr.Dataframe(
        headers=STAT_HEADERS, label="MUSHRA scores (0-100) of listeners who passed post-screening", interactive=False
    )
    preference = gr.Dataframe(
        headers=["x", "y", "x preferred", "y preferred", "no preference", "rate x", "95% CI", "p (binomial)"],
        label="A/B preference",
        interactive=False,
    )
    mos = gr.Dataframe(headers=STAT_HEADERS, label="Overall quality (1-5) in A/B trials", interactive=False)
    refresh = gr.Button("Refresh")
    with gr.Accordion("Admin: raw ratings (CSV)", open=False):
        token = gr.Textbox(label="Admin token", type="password")
        export = gr.Button("Export")
        export_file = gr.File(label="ratings.csv", interactive=False)
    return ResultsTab(text, mushra, preference, mos, refresh, token, export, export_file)


def results_view(lab: LabApp, tab: ResultsTab) -> dict:
    s = summary(lab.store.rows())
    mushra = s["mushra"]
    text = (
        f"**{s['ratings']} ratings** from **{s['listeners']} listeners** (updated {time.strftime('%H:%M:%S')}). "
        f"MUSHRA post-screening (reference rated below 90 in more than 15% of a listener's trials): "
        f"{len(mushra['dropped'])} of {mushra['listeners']} listeners excluded."
    )

    def r(x):
        return None if x is None or (isinstance(x, float) and x != x) else round(x, 2)

    def stats(rows):
        return [[x["condition"], x["source"], x["n"], r(x["mean"]), r(x["low"]), r(x["high"])] for x in rows]

    preference = [
        [
            p["x"],
            p["y"],
            p["wins_x"],
            p["wins_y"],
            p["ties"],
            r(p["rate_x"]),
            f"{r(p['low'])}-{r(p['high'])}",
            r(p["p"]),
        ]
        for p in s["preference"]
    ]
    return {tab.text: text, tab.mushra: stats(mushra["scores"]), tab.preference: preference, tab.mos: stats(s["mos"])}


def wire_results_tab(lab: LabApp, tab: ResultsTab, demo: gr.Blocks):
    outputs = [tab.text, tab.mushra, tab.preference, tab.mos]

    def on_results():
        return results_view(lab, tab)

    def on_export(token_value):
        try:
            return {tab.export_file: str(lab.export_ratings(token_value))}
        except Exception as exc:
            raise error(exc) from None

    timer = gr.Timer(15)
    for trigger in (tab.refresh.click, timer.tick, demo.load):
        trigger(on_results, None, outputs, api_visibility="private", queue=False)
    tab.export.click(on_export, tab.token, tab.export_file, api_visibility="private")
    return lambda then: then(on_results, None, outputs, api_visibility="private")


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
client = Client("{os.environ.get("SPACE_HOST", "http://127.0.0.1:7860/")}")
files, info = client.predict(handle_file("song.mp3"), "all", api_name="/separate")
```
`/separate_clip` (clip, start, length) also returns the metrics.

### Privacy
Ratings are stored with a random listener id kept in your browser, no name and no address.
Only aggregates are shown here; app version {lab.config.version}.
"""


# ---------------------------------------------------------------------------- API endpoints


def api_result(sep: Separation, wanted: list[str] | None) -> tuple[list[str], dict]:
    """The stem files and the JSON summary of the models asked for (None: all that ran)."""
    wanted = list(sep.stems) if wanted is None else wanted
    if not any(m in sep.stems for m in wanted):
        reasons = "; ".join(f"{k}: {v}" for k, v in sep.errors.items()) or "none is loaded"
        raise gr.Error(html.escape(f"no model could separate this: {reasons}"), print_exception=False)
    files, stems = [], {}
    for m in wanted:
        if m in sep.stems:
            stems[m] = {s: sep.stems[m][s].name for s in SOURCES}
            files += [str(sep.stems[m][s]) for s in SOURCES]
    info = {
        "clip": sep.clip,
        "seconds": round(sep.seconds, 3),
        "sample_rate": SAMPLE_RATE,
        "stems": stems,
        "versions": {m: sep.versions[m] for m in stems},
        "errors": sep.errors,
        "metrics": [r for r in sep.metrics if r["model"] in stems],
        "timings": {k: round(v, 3) for k, v in sep.timings.items()},
    }
    return files, json_safe(info)


def wire_api(lab: LabApp) -> None:
    """Hidden components behind the named endpoints `/separate`, `/separate_clip`, `/trial`,
    `/rate` and `/results` (what gradio_client calls; the page itself uses private events)."""
    with gr.Column(visible=False):
        file, models = gr.File(type="filepath", label="audio"), gr.Textbox(value="all", label="models")
        clip, start, length = (
            gr.Textbox(label="clip"),
            gr.Number(value=0, label="start"),
            gr.Number(value=30, label="length"),
        )
        files, info = gr.File(file_count="multiple", label="stems"), gr.JSON(label="info")
        listener, trial_id, answer = gr.Textbox(label="listener"), gr.Textbox(label="trial_id"), gr.JSON(label="answer")
        buttons = [gr.Button() for _ in range(5)]
    limits = {"concurrency_limit": lab.config.concurrency, "concurrency_id": "separate"}

    def api_separate(path, which):
        """Separate an audio file with the app's models; returns the stem files and a JSON summary."""
        try:
            wanted = lab.check_models(which)
            sep = lab.separate(lab.read_upload(path), None, Path(path).name, models=wanted)
        except Exception as exc:
            raise error(exc) from None
        return api_result(sep, wanted)

    def api_separate_clip(clip_id, start_s, length_s):
        """Separate an excerpt of a clip with known stems; the JSON summary includes the metrics."""
        try:
            mix, refs, label = clip_excerpt(
                lab, clip_id, 0 if start_s is None else start_s, 30 if length_s is None else length_s
            )
            sep = lab.separate(mix, refs, label)
        except Exception as exc:
            raise error(exc) from None
        return api_result(sep, None)

    def api_trial(listener_id):
        """A blind trial for a listener (from an example clip): its id, kind, labels and sample files."""
        try:
            trial, _ = lab.trial_for(None, listener_id or "")
        except Exception as exc:
            raise error(exc) from None
        paths = [str(trial.files[label]) for label in trial.labels] + (
            [str(trial.reference)] if trial.reference else []
        )
        return paths, {
            "trial_id": trial.trial_id,
            "kind": trial.kind,
            "source": trial.source,
            "labels": trial.labels,
            "files": [Path(f).name for f in paths],
        }

    def api_rate(listener_id, trial, answer_value):
        """Rate a trial: MUSHRA {"scores": {"A": 0-100, ...}};
        A/B {"choice": "A"|"B"|null, "mos": {"A": 1-5, "B": 1-5}}."""
        try:
            stored = lab.store.get_trial(str(trial))
            if stored is None:
                raise RatingError("unknown trial: start a new one")
            if not isinstance(answer_value, dict):
                raise RatingError("the answer must be a JSON object")
            written = lab.answer(
                listener_id or "", TrialState(stored.id, stored.kind, sorted(stored.conditions)), answer_value
            )
        except Exception as exc:
            raise error(exc) from None
        return {"saved": written}

    def api_results():
        """Aggregate listening-test statistics (no raw rows)."""
        return json_safe(summary_public(lab))

    b_sep, b_clip, b_trial, b_rate, b_results = buttons
    b_sep.click(api_separate, [file, models], [files, info], api_name="separate", **limits)
    b_clip.click(api_separate_clip, [clip, start, length], [files, info], api_name="separate_clip", **limits)
    b_trial.click(api_trial, listener, [files, info], api_name="trial", **limits)
    b_rate.click(api_rate, [listener, trial_id, answer], info, api_name="rate")
    b_results.click(api_results, None, info, api_name="results", queue=False)


# ---------------------------------------------------------------------------- the page


def build_ui(lab: LabApp) -> gr.Blocks:
    with gr.Blocks(title="Separation lab", delete_cache=(1800, WORK_MAX_AGE_S)) as demo:
        listener = gr.BrowserState(None, storage_key="separation-lab-listener")
        result = gr.State(None)  # the session's last Separation
        gr.Markdown(INTRO)
        status = gr.Markdown(lab.status_markdown())
        with gr.Tab("Separate"):
            separate = build_separate_tab(lab)
        with gr.Tab("Listen and rate (blind)"):
            rating = build_rating_tab()
        with gr.Tab("Results"):
            results = build_results_tab()
        with gr.Tab("About"):
            about = gr.Markdown(about_markdown(lab))
        wire_separate_tab(lab, separate, result, status)
        refresh_results = wire_results_tab(lab, results, demo)
        wire_rating_tab(lab, rating, result, listener, refresh_results)
        wire_api(lab)

        def on_load(listener_id):
            return {
                listener: listener_id or new_listener_id(),
                status: lab.status_markdown(),
                about: about_markdown(lab),
            }

        demo.load(on_load, listener, [listener, status, about], api_visibility="private", queue=False)
    return demo


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
