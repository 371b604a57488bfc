"""What the page's parts share: collecting a tab's components, and the errors users see."""

from __future__ import annotations

import html
import logging
from dataclasses import fields, is_dataclass

import gradio as gr

from separation.errors import SeparationError

from .service import public_message
from .store import RatingError

log = logging.getLogger("webapp")


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
