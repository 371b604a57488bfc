"""Files a page fetches, served without Gradio's per-request work: its front end from memory,
compressed once (`StaticCache`), and the trial files Gradio's players ask for read in one go
(`OneRead`).

A first visit fetches ~105 files of Gradio's front end (1.5 MB of JS and CSS), each through the
whole FastAPI stack and compressed afresh with brotli on every request: ~0.5 s of the app's CPU
per new visitor, so a class of 60 opening the page at once costs ~30 s of one core before anyone
listens. These files never change while the server runs (`/assets/` names carry a content hash),
so the first response of each (per encoding and origin) is kept and replayed; the hashed ones
are also marked immutable, so a reload or a second visit fetches nothing.

Outermost on the ASGI stack (`install`): a hit never reaches Gradio. Bounded: at most
`max_bytes` kept, responses over `max_entry` or not 200 are passed through, and only GET requests
without a Range header under `prefixes` are kept.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from urllib.parse import unquote

import anyio

IMMUTABLE = b"public, max-age=31536000, immutable"
SERVED_CACHE = b"private, max-age=3600"  # a served trial or check file: the browser's own cache only
PREFIXES = ("/assets/", "/static/")


class StaticCache:
    """ASGI middleware: the first 200 response to GET `path` (per Accept-Encoding's choice and
    Origin) under `prefixes`, kept in memory and replayed."""

    def __init__(self, app, prefixes=PREFIXES, *, max_bytes: int = 64 << 20, max_entry: int = 8 << 20):
        self.app = app
        self.prefixes = tuple(prefixes)
        self.max_bytes = max_bytes
        self.max_entry = max_entry
        self.entries: dict[tuple, tuple[int, list, bytes]] = {}
        self.size = 0
        self.hits = 0
        self._lock = threading.Lock()

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] != "GET" or not scope["path"].startswith(self.prefixes):
            return await self.app(scope, receive, send)
        headers = dict(scope["headers"])
        if b"range" in headers or scope.get("query_string"):
            return await self.app(scope, receive, send)
        key = (scope["path"], encoding(headers.get(b"accept-encoding", b"")), headers.get(b"origin", b""))
        entry = self.entries.get(key)
        if entry is not None:
            self.hits += 1
            status, response_headers, body = entry
            await send({"type": "http.response.start", "status": status, "headers": response_headers})
            await send({"type": "http.response.body", "body": body})
            return
        start, chunks = {}, []

        async def keep(message):
            if message["type"] == "http.response.start":
                start.update(message)
            elif message["type"] == "http.response.body":
                chunks.append(message.get("body", b""))
                if not message.get("more_body", False):
                    self._keep(key, start, b"".join(chunks))
            await send(message)

        await self.app(scope, receive, keep)

    def _keep(self, key: tuple, start: dict, body: bytes) -> None:
        if start.get("status") != 200 or len(body) > self.max_entry:
            return
        response_headers = [
            (k, v) for k, v in start.get("headers", []) if k.lower() not in (b"cache-control", b"date", b"set-cookie")
        ]
        if key[0].startswith("/assets/"):  # content-hashed names: a new build gets new names
            response_headers.append((b"cache-control", IMMUTABLE))
        with self._lock:
            if key in self.entries or self.size + len(body) > self.max_bytes:
                return
            self.entries[key] = (start["status"], response_headers, body)
            self.size += len(body)


def encoding(accept: bytes) -> bytes:
    """The content coding Gradio's compression picks for an Accept-Encoding (its test, as it is):
    br, else gzip, else none."""
    return b"br" if b"br" in accept else b"gzip" if b"gzip" in accept else b""


class OneRead:
    """ASGI middleware: GET `prefix` + a path that `read` knows (it returns the file's bytes, or
    None for any other path: passed on) answered with the whole file in one response. Gradio's
    file route reads in 64-kB chunks, each a trip through the server's thread pool that every
    other request waits on too (a class's headphone checks: 360 files at once). Requests for a
    range are passed on."""

    def __init__(self, app, prefix: str, read: Callable[[str], bytes | None], media_type: bytes = b"audio/wav"):
        self.app = app
        self.prefix = prefix
        self.read = read
        self.media_type = media_type

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and scope["method"] == "GET" and scope["path"].startswith(self.prefix):
            if b"range" not in dict(scope["headers"]):
                body = await anyio.to_thread.run_sync(self.read, unquote(scope["path"][len(self.prefix) :]))
                if body is not None:
                    headers = [
                        (b"content-type", self.media_type),
                        (b"content-length", str(len(body)).encode()),
                        (b"cache-control", SERVED_CACHE),
                    ]
                    await send({"type": "http.response.start", "status": 200, "headers": headers})
                    await send({"type": "http.response.body", "body": body})
                    return
        await self.app(scope, receive, send)


def install(app, **limits) -> StaticCache:
    """Put a `StaticCache` outermost on a started Starlette/FastAPI app (Gradio's, after `launch`):
    its middleware stack is built by then, so it is wrapped rather than added to."""
    return wrap(app, StaticCache, **limits)


def wrap(app, middleware, **kwargs):
    """`middleware` outermost on a started app's middleware stack (built by its first request)."""
    outer = middleware(app.middleware_stack or app.build_middleware_stack(), **kwargs)
    app.middleware_stack = outer
    return outer
