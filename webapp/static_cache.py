"""Files a page fetches, served without Gradio's per-request work: the page itself and its front
end from memory, compressed once (`PageCache`, `StaticCache`), and the trial files Gradio's
players ask for read in one go (`OneRead`).

A first visit fetches ~105 files of Gradio's front end (1.5 MB of JS and CSS), each through the
whole FastAPI stack and compressed afresh with brotli on every request: ~0.5 s of the app's CPU
per new visitor, so a class of 60 opening the page at once costs ~30 s of one core before anyone
listens. These files never change while the server runs (`/assets/` names carry a content hash),
so the first response of each (per encoding and origin) is kept and replayed; the hashed ones
are also marked immutable, so a reload or a second visit fetches nothing.

Outermost on the ASGI stack (`install`, `wrap`): a hit never reaches Gradio. Bounded: at most
`max_bytes` kept, responses over `max_entry` or not 200 are passed through, and only GET requests
without a Range header (or a query, the page's theme aside) are kept.
"""

from __future__ import annotations

import gzip
import threading
from collections.abc import Callable
from urllib.parse import parse_qsl, unquote

import anyio
import brotli

IMMUTABLE = b"public, max-age=31536000, immutable"
SERVED_CACHE = b"private, max-age=3600"  # a served trial or check file: the browser's own cache only
PREFIXES = ("/assets/", "/static/")


class StaticCache:
    """ASGI middleware: the first 200 response to GET `path` (per Accept-Encoding's choice and
    Origin) under `prefixes`, kept in memory and replayed. Requests for a file that is being
    fetched wait for that answer (up to `wait` s) rather than all asking the app at once: a class
    opening the page together asks for each file 60 times in the same second."""

    def __init__(self, app, prefixes=PREFIXES, *, max_bytes: int = 64 << 20, max_entry: int = 8 << 20, wait=5.0):
        self.app = app
        self.prefixes = tuple(prefixes)
        self.max_bytes = max_bytes
        self.max_entry = max_entry
        self.wait = wait
        self.entries: dict[tuple, tuple[int, list, bytes]] = {}
        self.pending: dict[tuple, anyio.Event] = {}  # keys being fetched from the app now
        self.size = 0
        self.hits = 0
        self._lock = threading.Lock()

    def key(self, scope, headers: dict) -> tuple | None:
        """What a response depends on, or None for a request this cache leaves alone."""
        if scope.get("query_string") or not scope["path"].startswith(self.prefixes):
            return None
        return (scope["path"], encoding(headers.get(b"accept-encoding", b"")), headers.get(b"origin", b""))

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] != "GET":
            return await self.app(scope, receive, send)
        headers = dict(scope["headers"])
        key = None if b"range" in headers else self.key(scope, headers)
        if key is None:
            return await self.app(scope, receive, send)
        if key not in self.entries and key in self.pending:
            with anyio.move_on_after(self.wait):
                await self.pending[key].wait()
        entry = self.entries.get(key)
        if entry is not None:
            self.hits += 1
            status, response_headers, body = entry
            await send({"type": "http.response.start", "status": status, "headers": response_headers})
            await send({"type": "http.response.body", "body": body})
            return
        fetched = self.pending.setdefault(key, anyio.Event())
        start, chunks = {}, []

        async def keep(message):
            if message["type"] == "http.response.start":
                start.update(message)
            elif message["type"] == "http.response.body":
                chunks.append(message.get("body", b""))
                if not message.get("more_body", False):
                    self._keep(key, start, b"".join(chunks))
                    fetched.set()  # the waiters need not wait for this client to read it all
            await send(message)

        try:
            await self.app(scope, receive, keep)
        finally:
            if self.pending.get(key) is fetched:
                del self.pending[key]
            fetched.set()  # kept or not (an error, too big): the waiters go on

    def _keep(self, key: tuple, start: dict, body: bytes) -> None:
        if start.get("status") != 200 or len(body) > self.max_entry:
            return
        response_headers = [
            (k, v) for k, v in start.get("headers", []) if k.lower() not in (b"cache-control", b"date", b"set-cookie")
        ]
        response_headers, body = self.stored(key, response_headers, body)
        with self._lock:
            if key in self.entries or self.size + len(body) > self.max_bytes:
                return
            self.entries[key] = (start["status"], response_headers, body)
            self.size += len(body)

    def stored(self, key: tuple, headers: list, body: bytes) -> tuple[list, bytes]:
        """The headers and body to keep for `key` (the app's, without its date and caching)."""
        if key[0].startswith("/assets/"):  # content-hashed names: a new build gets new names
            headers.append((b"cache-control", IMMUTABLE))
        return headers, body


ROOT_HEADERS = (b"host", b"x-forwarded-host", b"x-forwarded-proto", b"x-gradio-server")
# what a page's query may hold and still be kept: read by the page's script only (an embed
# of a Space asks for `?__theme=light`); the page route itself reads `page`, `deep_link`, `all_endpoints`
PAGE_QUERY = ("__theme",)


class PageCache(StaticCache):
    """ASGI middleware: the page itself (GET `/`), kept per everything Gradio builds it from, and
    compressed once as the browser accepts it (Gradio sends it as it is: ~220 kB).

    Gradio renders the page per request (~20 ms of the one interpreter): a copy of the whole
    config, the public root URL written into every file reference in it, the API summary. What
    that depends on (`gradio.routes` `main`): the request's URL (scheme, server, root path, Host)
    and the headers `get_root_url` reads (`ROOT_HEADERS`); the query (`page`, `deep_link`,
    `all_endpoints`: a query with anything but `PAGE_QUERY` passes through, and the query is part
    of the key); the signed-in user (`enabled` says no login is configured); and the Blocks'
    config (`version`: a reload's new config is another key). At most `max_entries` keys (the Host
    is the client's to choose): past that, other pages are built as before."""

    def __init__(self, app, paths=("/",), *, enabled=lambda: True, version=lambda: 0, max_entries: int = 16):
        super().__init__(app, prefixes=(), max_bytes=max_entries << 20, max_entry=4 << 20)
        self.paths = tuple(paths)
        self.enabled = enabled
        self.version = version
        self.max_entries = max_entries

    def key(self, scope, headers: dict) -> tuple | None:
        query = scope.get("query_string", b"")
        if scope["path"] not in self.paths or not self.enabled():
            return None
        if any(name not in PAGE_QUERY for name, _ in parse_qsl(query.decode("latin-1"), keep_blank_values=True)):
            return None
        root = tuple((k, v) for k, v in scope["headers"] if k.lower() in ROOT_HEADERS)
        server = tuple(scope.get("server") or ())
        how = encoding(headers.get(b"accept-encoding", b""))
        key = (scope["path"], query, how, scope.get("scheme"), server, scope.get("root_path", ""), root, self.version())
        return key if key in self.entries or len(self.entries) < self.max_entries else None

    def stored(self, key: tuple, headers: list, body: bytes) -> tuple[list, bytes]:
        how = key[2]
        if not how or any(k.lower() == b"content-encoding" for k, _ in headers):
            return headers, body
        body = brotli.compress(body, quality=9) if how == b"br" else gzip.compress(body, 9, mtime=0)
        headers = [(k, v) for k, v in headers if k.lower() != b"content-length"]
        headers += [(b"content-length", str(len(body)).encode()), (b"content-encoding", how)]
        headers.append((b"vary", b"Accept-Encoding"))
        return headers, body


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


def install_page(app) -> PageCache:
    """A `PageCache` outermost on Gradio's started app: kept only while no login is configured, per
    Blocks config (`launch` and a reload set a new one)."""
    return wrap(
        app,
        PageCache,
        enabled=lambda: app.auth is None and app.auth_dependency is None,
        version=lambda: id(app.get_blocks().config),
    )


def wrap(app, middleware, **kwargs):
    """`middleware` outermost on a started app's middleware stack (built by its first request)."""
    outer = middleware(app.middleware_stack or app.build_middleware_stack(), **kwargs)
    app.middleware_stack = outer
    return outer
