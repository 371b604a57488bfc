"""The Gradio page: one builder per tab, and handlers that return named updates.

Each tab is built by its own function, which returns a small dataclass of its components;
each handler returns a dict `{component: new value}` (Gradio's named updates), so nothing
depends on the order of an outputs list written elsewhere. The logic lives in
`webapp.lab.LabApp`; this module only wires it to widgets and to the API endpoints.

    python app.py          # or ./run.sh app, or `separation-lab` once installed
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import threading
from dataclasses import dataclass
from pathlib import Path

import gradio as gr
from fastapi.responses import PlainTextResponse, Response, StreamingResponse

from separation import __version__
from separation.errors import SeparationError
from separation.pretrained import offline

from . import sessions, static_cache
from .api import wire_api
from .clips import CAMPAIGN_SECONDS
from .config import AppConfig
from .lab import WORK_MAX_AGE_S, LabApp, clip_excerpt, launch_options, separate_default
from .listening.page import (
    build_rating_tab,
    build_results_tab,
    client_of,
    completion_panel,
    intro_text,
    no_listener_text,
    resume_trial,
    wire_rating_tab,
    wire_results_tab,
)
from .listening.store import RatingError
from .service import Separation, karaoke, metrics_rows
from .ui_common import components, error

log = logging.getLogger("webapp")

METRIC_HEADERS = ["model", "source", "SDR", "SIR", "ISR", "SAR", "SI-SDR"]
INTRO = """# Separation lab: vocals and karaoke, {models}
Upload a song (or record one), or pick a clip; each model splits it into **vocals** and
**accompaniment** (the karaoke track). With a clip whose true stems are known you also get
BSSEval v4 metrics. Then help compare the models in a **blind listening test**."""
MODEL_TITLES = {"dprnn": "DPRNN", "umxhq": "Open-Unmix", "umxl": "Open-Unmix (UMX-L)", "conv1d": "Conv1D"}
TRIAL_FOLDER = re.compile(r"[0-9a-f]{32}")  # `TrialFiles.publish`'s random names
TRIAL_FILE = re.compile(r"[0-9a-f]{24}\.wav")
NO_METRICS = "Metrics need the true stems: separate one of the example clips."


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
                offered, offered_length = separate_default(lab, first)
                with gr.Row():
                    start = gr.Slider(0, max(0.0, first.duration - 1), value=offered, step=1, label="Start (s)")
                    length = gr.Slider(
                        5,
                        min(first.duration, cfg.max_minutes * 60),
                        value=max(5.0, offered_length),
                        step=1,
                        label="Length (s)",
                    )
                if not cfg.separate_campaign_clips:
                    gr.Markdown(
                        f"The first {CAMPAIGN_SECONDS:g} s of each clip are the blind listening test's material: "
                        "they are not separated here."
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
                col.header: f"### {name}\nNot run: {reason}",
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
        def work():
            mix = lab.read_upload(path)
            return finish(
                lab.separate(mix, None, Path(path).name, progress=lambda f, d: progress(f, desc=d)), guide_pct
            )

        try:
            return lab.on_compute_thread(work)
        except Exception as exc:
            raise error(exc) from None

    def on_clip(clip_id, start_s, length_s, guide_pct, progress=gr.Progress()):
        def work():
            mix, refs, label = clip_excerpt(lab, clip_id, start_s, length_s)
            return finish(lab.separate(mix, refs, label, progress=lambda f, d: progress(f, desc=d)), guide_pct)

        try:
            return lab.on_compute_thread(work)
        except Exception as exc:
            raise error(exc) from None

    def on_clip_change(clip_id):
        c = lab.clips.get(clip_id)
        if c is None:
            return {tab.start: gr.Slider(), tab.length: gr.Slider()}
        top = min(c.duration, lab.config.max_minutes * 60)
        start, length = separate_default(lab, c)
        return {
            tab.start: gr.Slider(maximum=max(0.0, c.duration - 1), value=start),
            tab.length: gr.Slider(maximum=top, value=length),
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
    # `change`, not `release`: arrow keys move the slider too (no mouse release), and the karaoke
    # must follow them; always_last: a drag's many values make one mix, of where it stopped
    tab.guide.change(on_guide, [result, tab.guide], kara_outputs, api_visibility="private", trigger_mode="always_last")


def summary_line(sep: Separation) -> str:
    done = ", ".join(f"{m} {sep.timings.get(f'separate {m}', 0):.1f} s" for m in sep.stems) or "no model"
    lines = [f"**{sep.clip}** ({sep.seconds:.1f} s): {done}; total {sep.timings.get('total', 0):.1f} s."]
    # models that are unavailable say so in their own column; here only what failed in this run
    lines += [f"{name} failed: {reason}" for name, reason in sep.errors.items() if name not in sep.unavailable]
    return "  \n".join(lines)


# ---------------------------------------------------------------------------- About tab


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
`/separate_clip` (clip, start, length) also returns the metrics. Listening tests over the API:
`/listener` (an id to keep), `/headphone_check` and `/headphone_answer`, then `/trial` and `/rate`
(no sooner than one excerpt length after the trial was issued).

### Listening tests
Blind: every sample has a new random file name, is loudness-matched (ITU-R BS.1770) and is
written for its trial with its own small level offset and inaudible dither, so no file's bytes,
name or size tell the conditions apart (the sound itself can be analysed: the models are public).
A rating counts once the page reports each sample heard for {lab.config.min_heard:g} s; listeners who fail the headphone
check (Woods et al. 2017), rate the hidden reference below 90 too often (BS.1534), rate the anchor
above the reference, miss gold A/B trials, answer faster than the audio, disagree with themselves
on a repeated excerpt or score far from the other listeners are excluded from the results, which
say how many each rule excluded.

### Privacy
Ratings are stored with an id this server issues to your browser (kept there), no name and no
address (only a keyed hash of it, for rate limits). Only aggregates are shown here; app version
{lab.config.version}.
"""


# ---------------------------------------------------------------------------- the page


def build_ui(lab: LabApp) -> gr.Blocks:
    # a new page session makes its components' configs as its events need them (`webapp.sessions`)
    if not sessions.lean_sessions():
        log.warning("a Gradio session constructor webapp.sessions does not know: sessions made as Gradio makes them")
    # trial audio is served from its random paths as it is: no copy into Gradio's cache, whose
    # folders are named by a hash of the content (which gave the hidden reference away)
    gr.set_static_paths([str(lab.study.trial_files.served)])
    with gr.Blocks(title="Separation lab", delete_cache=(1800, WORK_MAX_AGE_S)) as demo:
        # sealed with a key derived from the app's secret, not a random one per process: a returning
        # listener stays the same listener across restarts (no second headphone check)
        listener = gr.BrowserState(
            None, storage_key="separation-lab-listener", secret=lab.study.signer.derived_key("browser-state")
        )
        result = gr.State(None)  # the session's last Separation
        title = gr.Markdown(title_markdown(lab))
        status = gr.Markdown(lab.status_markdown())
        # the session-complete panel (its completion codes), above the tabs: shown on any visit
        done = gr.Markdown(visible=False, elem_id="session-complete")
        # "wrap": on a phone every tab stays in sight (in a "..." menu the listening tab was hidden)
        with gr.Tabs(overflow_behavior="wrap") as tabs:
            with gr.Tab("Separate", id="separate") as separate_tab:
                separate = build_separate_tab(lab)
            with gr.Tab("Listen and rate (blind)", id="listen") as rating_tab:
                rating = build_rating_tab(lab, done)
            with gr.Tab("Results", id="results") as results_tab:
                results = build_results_tab(lab)
            with gr.Tab("About", id="about") as about_tab:
                about = gr.Markdown(about_markdown(lab))
        wire_separate_tab(lab, separate, result, status)
        wire_results_tab(lab, results, results_tab, [separate_tab, rating_tab, about_tab])
        trial_state = wire_rating_tab(lab, rating, result, listener)
        wire_api(lab)

        # set by a returning listener's page load (hidden): its change shows their open trial again. Apart
        # from the load, whose outputs are the few every visitor's page gets: in Gradio each output
        # an event leaves alone is still rebuilt as a component for the page's session (~1 ms each,
        # 20 of them), on every new visitor's load
        returning = gr.Textbox(visible=False)

        def on_load(token, request: gr.Request):
            """A signed listener id for a new browser (or one whose id this server did not issue).
            Where none can be issued, the rating tab says why and until when (a warning toast would
            never show: a load outside the queue cannot raise one)."""
            # the models as they are now: one that could not load is in neither the title nor the
            # rating tab's words (the Results tab shows or hides its A/B parts as it shows them)
            out = {status: lab.status_markdown(), about: about_markdown(lab), title: title_markdown(lab)}
            out |= {rating.intro: intro_text(lab)}
            try:
                known = lab.study.listener(token)
            except RatingError:
                known = None
            if known is not None:
                return out | {listener: known, rating.done: completion_panel(lab, known), returning: token}
            try:
                return {**out, listener: lab.study.new_listener(client_of(lab, request))}
            except RatingError as exc:
                return {**out, listener: None, rating.info: no_listener_text(exc)}

        demo.load(
            on_load,
            listener,
            [listener, status, about, title, returning, rating.intro, rating.done, rating.info],
            api_visibility="private",
            queue=False,
        )
        # a listener in mid-trial (a reload, the page reloading itself after a restart) comes back to
        # the listening tab and the same trial; the page restores its listening
        returning.change(
            lambda token: resume_trial(lab, rating, trial_state, tabs, token),
            returning,
            [tabs, trial_state, *components(rating)],
            api_visibility="private",
            queue=False,
        )
    return demo


def title_markdown(lab: LabApp) -> str:
    """The page's title and introduction, naming the models that run."""
    return INTRO.format(models=" vs ".join(MODEL_TITLES.get(m, m) for m in lab.working_models()))


def register_routes(app, lab: LabApp) -> None:
    """Routes beside Gradio's: the one-time, streamed ratings export (no file on disk), the trial
    audio; the page and Gradio's front-end files served from memory and the check's files in one
    read (`webapp.static_cache`)."""
    static_cache.install(app)
    static_cache.install_page(app)

    def export(link: str):
        lines = lab.study.export_stream(link)
        if lines is None:
            return PlainTextResponse("this link is used up or expired: get a new one in the Results tab", 404)
        headers = {"Content-Disposition": 'attachment; filename="ratings.csv"', "Cache-Control": "no-store"}
        return StreamingResponse(lines, media_type="text/csv", headers=headers)

    app.add_api_route("/ratings-export/{link}", export, methods=["GET"])

    served = lab.study.trial_files.served

    def read_served(folder: str, name: str) -> bytes | None:
        """A served trial file's bytes by its random folder and name (None for anything else, or
        once answered: its files are gone)."""
        if not (TRIAL_FOLDER.fullmatch(folder) and TRIAL_FILE.fullmatch(name)):
            return None
        try:
            return (served / folder / name).read_bytes()
        except OSError:
            return None

    def trial_audio(folder: str, name: str):
        """A served trial file by its random folder and name (`webapp.listening.player.file_url`),
        read in one go (~1.8 MB a 10-s sample): a file response would read it in 64-kB chunks,
        each a trip through the server's thread pool that every other request waits on too (a
        crowd's trials are thousands of files). The headers are the same for every sample: a
        length (equal within a trial), a type and no-store-elsewhere caching; no time, no tag."""
        content = read_served(folder, name)
        if content is None:
            return PlainTextResponse("no such file", 404)
        return Response(content, media_type="audio/wav", headers={"Cache-Control": static_cache.SERVED_CACHE.decode()})

    def gradio_file(path: str) -> bytes | None:
        """Gradio's file route for a served file (the headphone check's players ask there): the same."""
        where = Path(path)
        return read_served(where.parent.name, where.name) if where.parent.parent == served else None

    # the headphone check's files, as Gradio's players fetch them, in one read each as the trial
    # files are (Gradio's own file route answers everything else, and ranges)
    static_cache.wrap(app, static_cache.OneRead, prefix="/gradio_api/file=", read=gradio_file)
    app.add_api_route("/trial-audio/{folder}/{name}", trial_audio, methods=["GET"])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="separation-lab",
        description="The separation lab's web app (http://127.0.0.1:7860 by default). Its settings come from "
        "the environment: APP_DATA_DIR, APP_MODELS, GRADIO_SERVER_PORT, ... (webapp/config.py, docs/app.md).",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    for noisy in ("httpx", "httpcore", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        config = AppConfig.from_env()
    except SeparationError as exc:  # a setting out of range: one line naming it
        parser.exit(2, f"separation-lab: error: {exc}\n")
    log.info("data (ratings, secret, demo clips) in %s", config.data_dir)
    if offline():  # offline means no request at all: Gradio's usage statistics and version check included
        os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
    lab = LabApp(config)
    if config.prepare_stimuli:  # the example clips' separations and excerpts, while the page is up
        threading.Thread(target=lab.prepare, daemon=True, name="prepare-stimuli").start()
    demo = build_ui(lab)
    # Gradio's queue rebuilds its monitoring summary (a pandas frame of its last 10,000 events) after
    # every event by default: work that grows with the campaign, on every trial of every listener.
    # Every 200 events over the last 2,000 still feeds its /monitoring page.
    os.environ.setdefault("GRADIO_ANALYTICS_CACHE_FREQUENCY", "200")
    os.environ.setdefault("GRADIO_ANALYTICS_MAX_EVENTS", "2000")
    demo.queue(default_concurrency_limit=4, max_size=config.queue_size)
    app, _, _ = demo.launch(
        server_name=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"),
        server_port=int(os.environ.get("GRADIO_SERVER_PORT", "7860")),
        theme=gr.themes.Soft(),
        prevent_thread_lock=True,
        **launch_options(lab),
    )
    register_routes(app, lab)
    demo.block_thread()
