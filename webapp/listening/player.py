"""The trial page's player: one Web Audio transport over a blind trial's samples.

The browser side is `static/player.js` (see its header: sample-synchronous switching at the same
position, one sample sounding at a time, a loop region, keys, BS.1534's five bands, time heard per
sample). Here: the component, the trial it is given (JSON: ids, labels, file URLs, the minimum
listening) and the answer it sends back.
"""

from __future__ import annotations

import json
from pathlib import Path

import gradio as gr

from .stimuli import TrialAudio
from .store import RatingError, needed_listening

STATIC = Path(__file__).resolve().parent / "static"
EMPTY = '<div class="lab-trial" data-state="empty"></div>'


def trial_player() -> gr.HTML:
    """The player; its value is `trial_value(...)` (a trial to show) or "" (none)."""
    return gr.HTML(
        "",
        # the template never changes with the value, so Gradio never redraws what the script drew
        html_template=EMPTY,
        css_template=(STATIC / "player.css").read_text(),
        js_on_load=(STATIC / "player.js").read_text(),
        apply_default_css=False,
        elem_id="trial-player",
    )


def file_url(path: Path | str) -> str:
    """The page-relative URL of a served trial file (`webapp.ui.register_routes`): its random
    folder and name only, nothing of where the server keeps it."""
    path = Path(path)
    return f"trial-audio/{path.parent.name}/{path.name}"


def trial_value(trial: TrialAudio, min_heard: float) -> str:
    """What the player needs to show a trial (nothing that names a condition)."""
    urls = {label: file_url(trial.files[label]) for label in trial.labels}
    if trial.reference is not None:
        urls["reference"] = file_url(trial.reference)
    return json.dumps(
        {
            "trial_id": trial.trial_id,
            "kind": "mushra" if trial.kind == "mushra" else "ab",  # a gold trial looks like any A/B one
            "labels": trial.labels,
            "seconds": round(trial.seconds, 3),
            "min_heard": needed_listening(min_heard, trial.seconds),
            "urls": urls,
        }
    )


def read_answer(value, trial_id: str) -> dict:
    """The answer the player sent for `trial_id`: MUSHRA {"scores", "heard", "rated"}; A/B
    {"choice", "mos", "heard"}. A `RatingError` if it is not one (the store checks the rest)."""
    try:
        sent = json.loads(value) if isinstance(value, str) else value
    except ValueError:
        sent = None
    if not isinstance(sent, dict) or sent.get("trial_id") != trial_id or not isinstance(sent.get("answer"), dict):
        raise RatingError("the page sent no answer for this trial: reload the page and start it again")
    return sent["answer"]
