"""The app's API: named endpoints that gradio_client (or any HTTP client) calls.

    /listener              a signed listener id (keep it: every other call needs it)
    /headphone_check       the listener's headphone check: six files of three tones
    /headphone_answer      the answers (1, 2 or 3 each): the score, and whether it passed
    /trial                 a blind trial ("mushra" or "ab"): its files, labels and kind
    /rate                  an answer to a trial, one excerpt length or more after it was issued
    /results               the statistics (no raw rows)
    /export_link           admins: a one-time link (60 s) that streams the raw ratings CSV
    /separate              separate an audio file with the app's models
    /separate_clip         separate an excerpt of an example clip, with metrics

The page itself uses private events; these are the same functions of `webapp.lab.LabApp` and its
`webapp.listening.study.Study`.
"""

from __future__ import annotations

import inspect
from pathlib import Path

import gradio as gr

from separation.audio import SAMPLE_RATE
from separation.results import json_safe

from .lab import LabApp, clip_excerpt
from .listening.study import summary_public
from .service import SOURCES, Separation
from .ui_common import error, page_text


def api_result(sep: Separation, wanted: list[str] | None) -> tuple[list[str], dict]:
    """The stem files and the JSON summary of the models asked for (None: all that ran)."""
    wanted = list(sep.stems) if wanted is None else wanted
    if not any(m in sep.stems for m in wanted):
        reasons = "; ".join(f"{k}: {v}" for k, v in sep.errors.items()) or "none is loaded"
        raise gr.Error(page_text(f"no model could separate this: {reasons}"), print_exception=False)
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


def guarded(lab: LabApp, fn):
    """`fn(*inputs, client=...)` as Gradio calls it, `(*inputs, request)`; a refusal becomes the error
    the client sees (public text only). Gradio finds the request by the annotation of a
    positional parameter, so the wrapper's signature says it."""

    def run(*args):
        *inputs, request = args
        try:
            return fn(*inputs, client=lab.study.client_key(request))
        except Exception as exc:
            raise error(exc) from None

    names = [p for p in inspect.signature(fn).parameters.values() if p.kind == p.POSITIONAL_OR_KEYWORD]
    request = inspect.Parameter("request", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=gr.Request)
    run.__signature__ = inspect.Signature([*names, request])
    run.__annotations__ = {"request": gr.Request}
    run.__name__, run.__doc__ = fn.__name__, fn.__doc__
    return run


def wire_api(lab: LabApp) -> None:
    """Hidden components behind the named endpoints (see the module's docstring)."""
    with gr.Column(visible=False):
        file, models = gr.File(type="filepath", label="audio"), gr.Textbox(value="all", label="models")
        clip, start = gr.Textbox(label="clip"), gr.Number(value=0, label="start")
        length = gr.Number(value=30, label="length")
        files, info = gr.File(file_count="multiple", label="files"), gr.JSON(label="info")
        listener, trial_id, answer = gr.Textbox(label="listener"), gr.Textbox(label="trial_id"), gr.JSON(label="answer")
        token, kind = gr.Textbox(label="listener id"), gr.Textbox(value="mushra", label="kind")
        admin, link = gr.Textbox(label="admin token"), gr.Textbox(label="link")
        buttons = [gr.Button() for _ in range(9)]
    limits = {"concurrency_limit": lab.config.concurrency, "concurrency_id": "separate"}

    def api_listener(*, client):
        """A new listener id, signed by this server: keep it, every other call needs it."""
        return lab.study.new_listener(client)

    def api_headphone_check(listener_id, *, client):
        """The listener's headphone check: six files of three tones; answer which tone of each is softest."""
        paths = [str(p) for p in lab.study.headphone_check(listener_id, client)]
        return paths, {"files": len(paths), "answer": "/headphone_answer with a list of 1, 2 or 3 per file"}

    def api_headphone_answer(listener_id, answers, *, client):
        """Answers to the headphone check (a JSON list of 1, 2 or 3): the score and whether it passed."""
        score, passed = lab.study.answer_headphone_check(listener_id, answers)
        return {"score": score, "passed": passed}

    def api_trial(listener_id, trial_kind, *, client):
        """A blind trial on an example clip, "mushra" (default) or "ab": its id, kind, labels, seconds
        and sample files."""
        trial, _ = lab.study.trial_for(None, listener_id, client, kind=(trial_kind or "mushra").strip().lower())
        paths = [str(trial.files[label]) for label in trial.labels] + (
            [str(trial.reference)] if trial.reference else []
        )
        return paths, {
            "trial_id": trial.trial_id,
            "kind": "ab" if trial.kind == "gold" else trial.kind,  # a gold trial looks like any A/B trial
            "source": trial.source,
            "labels": trial.labels,
            "seconds": trial.seconds,
            "files": [Path(f).name for f in paths],
            "reference": Path(trial.reference).name if trial.reference else None,
        }

    def api_rate(listener_id, trial, answer_value, *, client):
        """Rate a trial, one excerpt length or more after it was issued: MUSHRA {"scores": {"A": 0-100, ...}};
        A/B {"choice": "A", "B" or "no preference", "mos": {"A": 1-5, "B": 1-5}}."""
        return {"saved": lab.study.answer(listener_id, str(trial), answer_value, client)}

    def api_results(*, client):
        """Aggregate listening-test statistics after screening (no raw rows, no listener ids)."""
        return json_safe(summary_public(lab.study))

    def api_export_link(admin_token, *, client):
        """For the admin (ADMIN_TOKEN): a path on this server that streams the raw ratings CSV once,
        within 60 s. Wrong tokens are throttled per client."""
        return lab.study.export_link(admin_token, client)

    def api_separate(path, which, *, client):
        """Separate an audio file with the app's models; returns the stem files and a JSON summary."""
        wanted = lab.check_models(which)
        sep = lab.on_compute_thread(lambda: lab.separate(lab.read_upload(path), None, Path(path).name, models=wanted))
        return api_result(sep, wanted)

    def api_separate_clip(clip_id, start_s, length_s, *, client):
        """Separate an excerpt of a clip with known stems; the JSON summary includes the metrics."""

        def work():
            mix, refs, label = clip_excerpt(
                lab, clip_id, 0 if start_s is None else start_s, 30 if length_s is None else length_s
            )
            return lab.separate(mix, refs, label)

        return api_result(lab.on_compute_thread(work), None)

    def guard(fn):
        return guarded(lab, fn)

    b = iter(buttons)
    next(b).click(guard(api_separate), [file, models], [files, info], api_name="separate", **limits)
    next(b).click(guard(api_separate_clip), [clip, start, length], [files, info], api_name="separate_clip", **limits)
    next(b).click(guard(api_listener), None, token, api_name="listener", queue=False)
    next(b).click(guard(api_headphone_check), listener, [files, info], api_name="headphone_check")
    next(b).click(guard(api_headphone_answer), [listener, answer], info, api_name="headphone_answer")
    # a trial links files of an excerpt (made once); the separations it may need are bounded in LabApp
    trials = {"concurrency_limit": 4, "concurrency_id": "trials"}
    next(b).click(guard(api_trial), [listener, kind], [files, info], api_name="trial", **trials)
    next(b).click(guard(api_rate), [listener, trial_id, answer], info, api_name="rate", queue=False)
    next(b).click(guard(api_results), None, info, api_name="results", queue=False)
    next(b).click(guard(api_export_link), admin, link, api_name="export_link")
