"""Who is rating: listener ids the server signs, clients it can tell apart, and limits per client.

A listener id is issued by the server (`Signer.issue`) and kept in the browser; a rating or a
trial request carries it back and the server checks the signature, so a client cannot invent
ids (a new id per request once bypassed every per-listener limit). Clients are told apart by a
keyed hash of their address (`client_key`): the address itself is never stored. Limits count
events per client in a sliding window, in memory (one app process serves a Space).
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import threading
import time
from collections import defaultdict, deque
from collections.abc import Callable
from pathlib import Path

from separation.files import atomic_write_text

from .store import RatingError

ID_BYTES = 16  # 128 random bits per listener
SIG_HEX = 32  # 128 bits of HMAC-SHA256


class Signer:
    """Signs and checks listener ids with the app's secret key.

    The key comes from `APP_SECRET`, or is made once and kept in `<data dir>/secret.key` (mode
    0600), so that ids stay valid across restarts of a Space with persistent storage.
    """

    def __init__(self, secret: str | bytes | None = None, *, key_file: Path | None = None):
        if secret is None and key_file is not None:
            if not key_file.exists():
                atomic_write_text(key_file, secrets.token_hex(32))
                os.chmod(key_file, 0o600)
            secret = key_file.read_text().strip()
        if not secret:
            raise ValueError("a Signer needs a secret (APP_SECRET) or a key file")
        self._key = secret.encode() if isinstance(secret, str) else secret

    def _sign(self, text: str) -> str:
        return hmac.new(self._key, text.encode(), hashlib.sha256).hexdigest()[:SIG_HEX]

    def derived_key(self, purpose: str) -> str:
        """A key for another use (`purpose`), derived from this one: what the page's stored
        listener id is sealed with, so that a restart (a Space waking up, redeployed) reads it."""
        return hmac.new(self._key, f"derived:{purpose}".encode(), hashlib.sha256).hexdigest()

    def issue(self) -> str:
        """A new listener id: `<32 hex>.<32 hex signature>`."""
        ident = secrets.token_hex(ID_BYTES)
        return f"{ident}.{self._sign(ident)}"

    def valid(self, token) -> bool:
        if not isinstance(token, str) or token.count(".") != 1:
            return False
        ident, sig = token.split(".")
        if len(ident) != 2 * ID_BYTES or len(sig) != SIG_HEX:
            return False
        return hmac.compare_digest(sig, self._sign(ident))

    def check(self, token) -> str:
        """The token if the server issued it; a `RatingError` otherwise."""
        if not self.valid(token):
            raise RatingError("unknown or forged listener id: reload the page (API: ask /listener for one)")
        return token

    def client_key(self, address: str) -> str:
        """A keyed hash of a client's address: the same client gets the same key, nobody can undo it."""
        return self._sign(f"client:{address}")[:16]


def client_address(request, proxy_hops: int = 0) -> str:
    """The address a request comes from.

    With `proxy_hops=0` it is the connection's peer and `X-Forwarded-For` is ignored: a client
    can write anything in that header. Behind N proxies that each append the address they got
    the request from (a Hugging Face Space's proxy does), the client is the N-th entry from the
    right: entries left of it are the client's own writing, and trusting the first one would let
    a script be a new client per request.
    """
    if request is None:
        return "local"
    headers = getattr(request, "headers", None)
    forwarded = headers.get("x-forwarded-for", "") if headers is not None else ""
    hops = [h.strip() for h in forwarded.split(",") if h.strip()]
    if proxy_hops > 0 and hops:
        return hops[max(0, len(hops) - proxy_hops)]
    client = getattr(request, "client", None)
    return getattr(client, "host", None) or "unknown"


class RateLimited(RatingError):
    """A limit per client reached; `wait`: seconds until the oldest counted event leaves the window."""

    def __init__(self, message: str, *, wait: float):
        super().__init__(message)
        self.wait = wait


class RateLimiter:
    """At most `limit` events of a kind per key in any `window` seconds; thread-safe."""

    def __init__(self, limits: dict[str, tuple[int, float]], clock: Callable[[], float] = time.monotonic):
        self.limits = limits  # kind -> (count, window seconds)
        self.clock = clock  # seconds; tests pass one they can move forward
        self._events: dict[tuple[str, str], deque] = defaultdict(deque)
        self._lock = threading.Lock()

    def allow(self, kind: str, key: str, what: str) -> None:
        """Count one event, or raise `RatingError` saying how long to wait."""
        limit, window = self.limits[kind]
        now = self.clock()
        with self._lock:
            events = self._events[(kind, key)]
            while events and now - events[0] > window:
                events.popleft()
            if len(events) >= limit:
                wait = window - (now - events[0])
                raise RateLimited(
                    f"too many {what} from this connection: at most {limit} per "
                    f"{_span(window)}; try again in {_span(wait)}",
                    wait=wait,
                )
            events.append(now)

    def failures(self, kind: str, key: str) -> int:
        limit, window = self.limits[kind]
        now = self.clock()
        with self._lock:
            return sum(1 for t in self._events[(kind, key)] if now - t <= window)


def _span(seconds: float) -> str:
    seconds = max(1, int(seconds))
    if seconds >= 3600:
        return f"{seconds / 3600:.0f} h"
    return f"{seconds // 60} min" if seconds >= 120 else f"{seconds} s"
