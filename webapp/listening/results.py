"""The campaign's results, computed once per change of the ratings and shared by every page.

A page never computes them: the Results tab shows the latest `Snapshot` (`ResultsBoard.latest`),
made on the board's own thread when ratings or headphone checks changed, at most once every
`every` seconds while they keep changing (under a crowd they change several times a second, and
the metric agreement's bootstrap alone takes ~0.6 s). An open Results tab asks every 15 s and
gets nothing back when the snapshot is the one it shows. The API's `/results` waits (a bounded
time) for the snapshot of the ratings as they are, so a script sees its own ratings counted.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

log = logging.getLogger("webapp")


@dataclass(frozen=True)
class Snapshot:
    version: tuple  # `RatingsStore.version()` the results were computed from
    made: float  # time.time() when computed
    summary: dict  # `LabApp.summary()`
    agreement: dict  # `LabApp.agreement()`
    seconds: float  # what computing it took


class ResultsBoard:
    def __init__(
        self,
        version: Callable[[], tuple],
        compute: Callable[[], tuple[dict, dict]],
        *,
        every: float = 10.0,
        poll: float = 5.0,
    ):
        """version(): what changes with the ratings (cheap); compute(): (summary, agreement).
        every: the least seconds between two computations; poll: how often the thread looks for
        changes nobody announced (another process writing the same database)."""
        self._version = version
        self._compute = compute
        self.every = every
        self.poll = poll
        self._snapshot: Snapshot | None = None
        self._wake = threading.Event()
        self._made = threading.Condition()
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()
        self.computations = 0  # for the tests and the load bench: how often it really computed

    def start(self) -> None:
        with self._start_lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="results", daemon=True)
                self._thread.start()

    def changed(self) -> None:
        """Ratings or a headphone check were written: compute again (when `every` allows)."""
        self.start()
        self._wake.set()

    def latest(self) -> Snapshot | None:
        """The newest snapshot (None before the first is made); never waits for a computation."""
        self.start()
        return self._snapshot

    def current(self, timeout: float = 30.0) -> Snapshot | None:
        """The snapshot of the ratings as they are now: the latest if nothing changed since it was
        made, else one made after this call, waiting up to `timeout` s for it (made on the board's
        thread: callers at once share one computation)."""
        self.start()
        asked = time.time()
        want = self._version()
        deadline = time.monotonic() + timeout
        with self._made:
            while self._snapshot is None or (self._snapshot.version != want and self._snapshot.made < asked):
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._wake.set()
                self._made.wait(min(left, 1.0))
        return self._snapshot

    def _run(self) -> None:
        while True:
            try:
                version = self._version()
                if self._snapshot is None or self._snapshot.version != version:
                    self._make(version)
            except Exception:  # a bad row must not stop the board: log, and try again later
                log.exception("computing the results")
            # wait for news, then until `every` s after the last computation
            self._wake.wait(self.poll)
            self._wake.clear()
            if self._snapshot is not None:
                time.sleep(max(0.0, self.every - (time.time() - self._snapshot.made)))

    def _make(self, version: tuple) -> None:
        started = time.perf_counter()
        summary, agreement = self._compute()
        snapshot = Snapshot(version, time.time(), summary, agreement, time.perf_counter() - started)
        with self._made:
            self._snapshot = snapshot
            self.computations += 1
            self._made.notify_all()
