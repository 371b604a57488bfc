"""Listener ratings in SQLite: blind trials, validated ratings, a per-listener rate limit.

Concurrency: WAL journal (readers never block the writer), a 10-s busy timeout, and one
short transaction per submission (BEGIN IMMEDIATE: the write lock is taken up front, so two
writers never deadlock upgrading read locks). A connection per thread, as sqlite3 wants.

What is stored: an anonymous listener id (random, from the browser), the trial (clip, source,
which hidden condition was behind which label), the score, the time, the app version and the
checkpoints that made the audio. No IP address, no name. Raw rows leave only through
`export_csv` (the app asks for the admin token first); the results tab shows aggregates.
"""

from __future__ import annotations

import csv
import json
import os
import sqlite3
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from separation.files import atomic_write

SCHEMA = """
CREATE TABLE IF NOT EXISTS trials (
    id TEXT PRIMARY KEY,
    listener TEXT NOT NULL,
    kind TEXT NOT NULL CHECK (kind IN ('mushra', 'ab')),
    clip TEXT NOT NULL,
    source TEXT NOT NULL,
    conditions TEXT NOT NULL,          -- JSON: {label: condition}
    versions TEXT NOT NULL,            -- JSON: {condition: checkpoint id}
    created REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS ratings (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    listener TEXT NOT NULL,
    trial TEXT NOT NULL REFERENCES trials(id),
    kind TEXT NOT NULL CHECK (kind IN ('mushra', 'ab', 'mos')),
    clip TEXT NOT NULL,
    source TEXT NOT NULL,
    condition TEXT NOT NULL,           -- the hidden condition (model, 'reference', 'anchor'), or 'a|b' for a preference
    score REAL,                        -- 0-100 (mushra), 1-5 (mos); NULL for a preference
    choice TEXT,                       -- preference: the preferred condition, or NULL for none
    created REAL NOT NULL,
    app_version TEXT NOT NULL,
    checkpoint TEXT NOT NULL,
    UNIQUE (listener, trial, kind, condition)
);
CREATE INDEX IF NOT EXISTS ratings_listener_time ON ratings (listener, created);
"""

FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


class RatingError(ValueError):
    """A submission that is refused (bad range, unknown trial, duplicate, too fast)."""


@dataclass(frozen=True)
class Trial:
    id: str
    listener: str
    kind: str
    clip: str
    source: str
    conditions: dict[str, str]  # label -> hidden condition
    versions: dict[str, str]


def safe_cell(value) -> str:
    """A CSV cell that a spreadsheet will not run as a formula (OWASP: prefix a quote)."""
    text = "" if value is None else str(value)
    return "'" + text if text.startswith(FORMULA_START) else text


class RatingsStore:
    def __init__(
        self,
        path: str | os.PathLike,
        *,
        app_version: str = "dev",
        rate_limit: int = 30,
        rate_window: float = 60.0,
        on_write=None,
    ):
        """rate_limit: ratings submissions allowed per listener per `rate_window` seconds.
        on_write(rows): called after a committed submission (e.g. to sync a copy)."""
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.app_version = app_version
        self.rate_limit = rate_limit
        self.rate_window = rate_window
        self.on_write = on_write
        self._local = threading.local()
        with self._connect() as db:
            db.executescript(SCHEMA)

    def _connect(self) -> sqlite3.Connection:
        db = getattr(self._local, "db", None)
        if db is None:
            db = sqlite3.connect(self.path, timeout=10.0, isolation_level=None, check_same_thread=False)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: durable across app crashes
            db.execute("PRAGMA busy_timeout=10000")
            db.execute("PRAGMA foreign_keys=ON")
            db.row_factory = sqlite3.Row
            self._local.db = db
        return db

    # ------------------------------------------------------------------ trials

    def create_trial(
        self, *, listener: str, kind: str, clip: str, source: str, conditions: dict[str, str], versions: dict[str, str]
    ) -> Trial:
        _check_listener(listener)
        trial = Trial(uuid.uuid4().hex, listener, kind, clip, source, dict(conditions), dict(versions))
        db = self._connect()
        db.execute(
            "INSERT INTO trials (id, listener, kind, clip, source, conditions, versions, created)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (trial.id, listener, kind, clip, source, json.dumps(conditions), json.dumps(versions), time.time()),
        )
        return trial

    def get_trial(self, trial_id: str) -> Trial | None:
        row = self._connect().execute("SELECT * FROM trials WHERE id = ?", (str(trial_id),)).fetchone()
        if row is None:
            return None
        return Trial(
            row["id"],
            row["listener"],
            row["kind"],
            row["clip"],
            row["source"],
            json.loads(row["conditions"]),
            json.loads(row["versions"]),
        )

    # ------------------------------------------------------------------ ratings

    def submit(
        self,
        listener: str,
        trial_id: str,
        *,
        scores: dict[str, float] | None = None,
        choice: str | None = None,
        mos: dict[str, float] | None = None,
    ) -> int:
        """Store a listener's answer to a trial; returns the number of rows written.

        MUSHRA trials: `scores` {label: 0..100} for every label of the trial.
        A/B trials: `choice` (a label, or None for no preference) and `mos` {label: 1..5}.
        Everything is checked before anything is written, and written in one transaction.
        """
        _check_listener(listener)
        trial = self.get_trial(trial_id)
        if trial is None:
            raise RatingError("unknown trial: start a new one")
        if trial.listener != listener:
            raise RatingError("this trial belongs to another listener")
        now = time.time()
        rows = []
        if trial.kind == "mushra":
            if not scores or set(scores) != set(trial.conditions):
                raise RatingError(f"rate every sample ({', '.join(sorted(trial.conditions))})")
            for label, score in scores.items():
                rows.append(("mushra", trial.conditions[label], _score(score, 0, 100), None))
        else:
            if choice is not None and choice not in trial.conditions:
                raise RatingError(f"choose one of {', '.join(sorted(trial.conditions))} or no preference")
            pair = "|".join(sorted(trial.conditions.values()))
            rows.append(("ab", pair, None, trial.conditions[choice] if choice else None))
            for label, score in (mos or {}).items():
                if label not in trial.conditions:
                    raise RatingError(f"unknown sample {label!r}")
                rows.append(("mos", trial.conditions[label], _score(score, 1, 5), None))
        db = self._connect()
        try:
            db.execute("BEGIN IMMEDIATE")
            recent = db.execute(
                "SELECT COUNT(DISTINCT trial) FROM ratings WHERE listener = ? AND created > ?",
                (listener, now - self.rate_window),
            ).fetchone()[0]
            if recent >= self.rate_limit:
                raise RatingError(
                    f"too many ratings in a short time: at most {self.rate_limit} trials per "
                    f"{self.rate_window:.0f} s; please wait a little"
                )
            if db.execute(
                "SELECT 1 FROM ratings WHERE listener = ? AND trial = ? LIMIT 1", (listener, trial.id)
            ).fetchone():
                raise RatingError("this trial is already rated: start a new one")
            for kind, condition, score, chosen in rows:
                db.execute(
                    "INSERT INTO ratings (listener, trial, kind, clip, source, condition, score, choice, created,"
                    " app_version, checkpoint) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        listener,
                        trial.id,
                        kind,
                        trial.clip,
                        trial.source,
                        condition,
                        score,
                        chosen,
                        now,
                        self.app_version,
                        json.dumps(trial.versions) if kind == "ab" else trial.versions.get(condition, "-"),
                    ),
                )
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        if self.on_write is not None:
            self.on_write(
                [
                    dict(
                        zip(("kind", "condition", "score", "choice"), r, strict=False),
                        listener=listener,
                        trial=trial.id,
                        clip=trial.clip,
                        source=trial.source,
                        created=now,
                    )
                    for r in rows
                ]
            )
        return len(rows)

    def count(self) -> int:
        return self._connect().execute("SELECT COUNT(*) FROM ratings").fetchone()[0]

    def rows(self) -> list[dict]:
        """All ratings as dicts in the shape `eval.ratings` expects."""
        out = []
        for r in self._connect().execute("SELECT * FROM ratings ORDER BY id"):
            row = {
                "listener": r["listener"],
                "trial": r["trial"],
                "kind": r["kind"],
                "source": r["source"],
                "clip": r["clip"],
                "score": r["score"],
            }
            if r["kind"] == "ab":
                row["a"], row["b"] = r["condition"].split("|", 1)
                row["choice"] = r["choice"]
            else:
                row["condition"] = r["condition"]
            out.append(row)
        return out

    def export_csv(self, path: str | os.PathLike) -> Path:
        """Every rating row, formula-safe, for the admin."""
        cur = self._connect().execute("SELECT * FROM ratings ORDER BY id")
        names = [d[0] for d in cur.description]

        def write(tmp: Path) -> None:
            with open(tmp, "w", newline="") as f:
                w = csv.writer(f)
                w.writerow(names)
                for row in cur:
                    w.writerow([safe_cell(v) for v in row])

        return atomic_write(path, write)

    def close(self) -> None:
        db = getattr(self._local, "db", None)
        if db is not None:
            db.close()
            self._local.db = None


def _score(value, low: float, high: float) -> float:
    try:
        x = float(value)
    except (TypeError, ValueError):
        raise RatingError(f"a score must be a number from {low:g} to {high:g}, not {value!r}") from None
    if not (low <= x <= high):  # also refuses NaN
        raise RatingError(f"a score must be from {low:g} to {high:g}, not {x:g}")
    return x


def _check_listener(listener: str) -> None:
    if not isinstance(listener, str) or not (8 <= len(listener) <= 64) or not listener.replace("-", "").isalnum():
        raise RatingError("missing or malformed listener id: reload the page")
