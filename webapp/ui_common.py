"""What the page's parts share: collecting a tab's components, and the errors users see."""

from __future__ import annotations

import html
import logging
from dataclasses import fields, is_dataclass

import gradio as gr

from separation.errors import SeparationError

from .listening.store import RatingError
from .service import public_message

log = logging.getLogger("webapp")


def components(tab) -> list:
    """Every Gradio component of a tab's dataclass (in lists, dicts and nested dataclasses too)."""
    out = []
    for f in fields(tab):
        value = getattr(tab, f.name)
        for item in value.values() if isinstance(value, dict) else value if isinstance(value, list) else [value]:
            out += components(item) if is_dataclass(item) else [item]
    return out


def counted(n: int, noun: str) -> str:
    """'1 listener', '2 listeners', '0 ratings' (nouns here take an s)."""
    return f"{n} {noun}{'' if n == 1 else 's'}"


def page_text(message: str) -> str:
    """An error's text, safe in the page's toast (which renders HTML) and plain in the API's JSON:
    only `<`, `>` and `&` are escaped (a file name the client chose may hold them); quotes are
    harmless in text and stay as they are (`the app's`, not `the app&#x27;s`)."""
    return html.escape(message, quote=False)


def error(exc: Exception) -> gr.Error:
    """The error a page or an API client sees: the public text (no server paths), HTML-escaped
    (it may quote a file name the client chose); a bug's text stays in the server log."""
    if isinstance(exc, (SeparationError, RatingError)):
        log.info("refused: %s", exc)
        text = public_message(exc) if isinstance(exc, SeparationError) else str(exc)
        return gr.Error(page_text(text), print_exception=False)
    log.exception("unexpected error")
    return gr.Error(f"something went wrong ({type(exc).__name__}); the app is still running, please try again")
