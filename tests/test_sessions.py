"""Gradio's session state made lean (`webapp.sessions`): a new session makes no component config
until an event needs one, yet holds, lists and updates the same configs as Gradio's own."""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path

import gradio as gr
import httpx
import pytest
from gradio.state_holder import SessionState

from webapp import sessions
from webapp.config import AppConfig
from webapp.lab import LabApp
from webapp.ui import build_ui


def gradios_own(blocks) -> SessionState:
    """A session as Gradio's constructor makes it (every config up front)."""
    state = SessionState.__new__(SessionState)
    sessions.GRADIO_SESSION_INIT(state, blocks)
    return state


def listed(state: SessionState) -> str:
    return json.dumps(list(state.components), default=str)


@pytest.mark.slow
def test_the_apps_page_sessions_are_lean_and_list_gradios_configs(tmp_path):
    lab = LabApp(AppConfig(data_dir=tmp_path / "data", models=("dprnn",), prepare_stimuli=False))
    demo = build_ui(lab)  # installs it
    assert SessionState.__init__ is sessions.lean_init
    lean, eager = SessionState(demo), gradios_own(demo)
    assert lean.config_values.made() == 0 and eager.config_values  # nothing made up front
    assert len(lean.config_values) == len(eager.config_values) > 100
    assert listed(lean) == listed(eager)  # the same configs, the same order (a deep link's content)
    assert vars(lean).keys() == vars(eager).keys()


def test_updates_by_events_give_the_same_configs_as_gradios_session():
    with gr.Blocks() as demo:
        box = gr.Textbox(label="a box")
        other = gr.Number(label="a number")
        gr.Markdown("text")
    lean, eager = SessionState(demo), gradios_own(demo)
    for state in (lean, eager):  # what `Blocks.process_api` does for an input and an updated output
        state._update_value_in_config(box._id, "typed")
        state[other._id] = gr.Number(label="renamed", render=False)
        state._update_value_in_config(other._id, 7)
    assert lean.config_values.made() == 2  # only the two the events touched
    assert lean.config_values[box._id]["props"]["value"] == "typed"
    assert listed(lean) == listed(eager)


def test_an_unknown_constructor_is_left_as_it_is():
    class Elsewhere:
        def __init__(self, blocks):
            self.config_values = {"made": "up front"}

    before = Elsewhere.__init__
    assert not sessions.lean_sessions(Elsewhere) and Elsewhere.__init__ is before


def test_a_running_page_makes_only_what_its_events_touch_and_deep_links_still_work():
    """Through Gradio's own routes: an event from a new session, then that session's deep link
    (the one route that lists every config) holds the value the event set."""
    sessions.lean_sessions()
    with gr.Blocks() as demo:
        name = gr.Textbox(label="name")
        greeting = gr.Textbox(label="greeting")
        for n in range(20):
            gr.Number(label=f"untouched {n}")
        gr.Button("go").click(lambda s: f"hello {s}", name, greeting, queue=False)
    _, url, _ = demo.launch(prevent_thread_lock=True, server_name="127.0.0.1", quiet=True)
    try:
        event = next(d for d in demo.config["dependencies"] if d["targets"][0][1] == "click")
        body = {"data": ["Ada"], "fn_index": event["id"], "session_hash": "s1", "event_data": None}
        reply = httpx.post(f"{url}gradio_api/run/predict", json=body, timeout=60).json()
        assert reply["data"] == ["hello Ada"]
        state = demo.state_holder.session_data["s1"]
        assert isinstance(state.config_values, sessions.LazyConfigs) and state.config_values.made() == 2
        link = json.loads(urllib.request.urlopen(f"{url}gradio_api/deep_link?session_hash=s1", timeout=60).read())
        saved = json.loads((Path(demo.app.uploaded_file_dir) / "deep_links" / link / "state.json").read_text())
        assert len(saved) == len(demo.blocks) and {"hello Ada", "Ada"} <= {c["props"].get("value") for c in saved}
    finally:
        demo.close()
