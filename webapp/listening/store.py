"""Listener ratings in SQLite: listeners, blind trials, validated ratings, a per-listener rate limit.

Concurrency: WAL journal (readers never block the writer), a 10-s busy timeout, and one
short transaction per submission (BEGIN IMMEDIATE: the write lock is taken up front, so two
writers never deadlock upgrading read locks). A connection per thread, as sqlite3 wants.

What is stored: an anonymous listener id (random, issued and signed by the server, kept in the
browser), a keyed hash of the address it was issued to (never the address), the listener's
headphone-check score, the trial (clip, source, excerpt, which hidden condition was behind
which label, how long the page played each sample, the files it was served as), the score, the
time, the app version and the checkpoints that made the audio. No name. Raw rows leave only
through `export_records` (streamed by the app as CSV to whoever has the admin token); the results tab
shows aggregates.

What is refused (`submit`): an answer sooner than the excerpt's length after the trial was
issued; from the page, one before every sample was heard for the minimum time and every slider
set; A/B without a choice; scores that are not numbers in range (a JSON `true` or `"50"` included).
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, fields
from pathlib import Path

SCHEMA = """
CREATE TABLE IF NOT EXISTS trials (
    id TEXT PRIMARY KEY,
    listener TEXT NOT NULL,
    kind TEXT NOT NULL CHECK (kind IN ('mushra', 'ab', 'gold')),
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
    kind TEXT NOT NULL CHECK (kind IN ('mushra', 'ab', 'mos', 'gold')),
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
CREATE TABLE IF NOT EXISTS listeners (
    id TEXT PRIMARY KEY,               -- the signed id the browser keeps
    client TEXT NOT NULL,              -- a keyed hash of the address it was issued to (never the address)
    created REAL NOT NULL,
    headphone_check TEXT,              -- JSON: the check's answers, kept until it is taken
    headphone_score INTEGER,           -- correct answers of the check (Woods et al. 2017), NULL: not taken
    headphone_at REAL
);
CREATE TABLE IF NOT EXISTS excerpt_metrics (
    excerpt TEXT NOT NULL,             -- clip, source and start of a MUSHRA excerpt
    condition TEXT NOT NULL,
    metric TEXT NOT NULL,              -- SDR, ISR, SAR, SI-SDR: median over 1-s windows of the excerpt
    value REAL,
    PRIMARY KEY (excerpt, condition, metric)
);
"""
# Columns added to `trials` after its first version: a database made before is migrated in place.
TRIAL_COLUMNS = {
    "seconds": "REAL NOT NULL DEFAULT 0",  # the excerpt's length: no rating is accepted sooner
    "excerpt": "TEXT",  # MUSHRA: the key of its metrics in excerpt_metrics
    "answer": "TEXT",  # gold trials: the label of the clean sample
    # JSON {label: seconds}: how long each sample sounded in the page's player (as the page reported
    # it with the answer; "reference" too). Databases made before it have "played"/"moved" columns
    # of the old players' marks, left as they are.
    "heard": "TEXT NOT NULL DEFAULT '{}'",
    "files": "TEXT NOT NULL DEFAULT '{}'",  # JSON {label: served file}: to show an open trial again
    # A campaign stimulus ("clip|source|pick", "|a,b" for an A/B pair): what the scheduler balances
    # and draws without replacement within a session. NULL: a trial on the listener's own separation.
    "stimulus": "TEXT",
    "own": "INTEGER NOT NULL DEFAULT 0",  # 1: made from the listener's own separation (nobody else rates it)
    "repeat_of": "TEXT",  # the earlier trial of this listener whose excerpt this one plays again
    "start_s": "REAL",  # where the excerpt starts in its clip (s)
    "offsets": "TEXT NOT NULL DEFAULT '{}'",  # JSON {label: dB}: the small level offset of each served file
}
# Columns added to `ratings` later, likewise. `via`: how the answer came, "page" (the listening
# page: every sample heard and every slider set first) or "api" (a script; no play records);
# rows written before the column existed say "unknown".
RATING_COLUMNS = {"via": "TEXT NOT NULL DEFAULT 'unknown'"}
VIAS = ("page", "api")
NO_PREFERENCE = "no preference"

FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


class RatingError(ValueError):
    """A submission that is refused (bad range, unknown trial, duplicate, too fast)."""


class IncompleteTrial(RatingError):
    """A page's answer before every sample was heard for `seconds` and every slider set (the page
    words it)."""

    def __init__(self, unheard: list[str], unset: list[str], seconds: float = 0.0):
        self.unheard, self.unset, self.seconds = unheard, unset, seconds
        super().__init__(
            f"not yet heard for {seconds:g} s: {', '.join(unheard) or 'none'}; "
            f"not yet rated: {', '.join(unset) or 'none'}"
        )


@dataclass(frozen=True)
class Trial:
    id: str
    listener: str
    kind: str  # mushra, ab, gold
    clip: str
    source: str
    conditions: dict[str, str]  # label -> hidden condition
    versions: dict[str, str]
    created: float = 0.0
    seconds: float = 0.0
    excerpt: str | None = None
    answer: str | None = None
    heard: dict[str, float] = field(default_factory=dict)
    files: dict[str, str] = field(default_factory=dict)
    stimulus: str | None = None
    own: int = 0
    repeat_of: str | None = None
    start_s: float | None = None
    offsets: dict[str, float] = field(default_factory=dict)


def safe_cell(value) -> str:
    """A CSV cell that a spreadsheet will not run as a formula (OWASP: prefix a quote to text that
    starts like one). Numbers stay numbers: -0.1 is no formula, and an analysis must read it."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
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
        clock: Callable[[], float] = time.time,
    ):
        """rate_limit: ratings submissions allowed per listener per `rate_window` seconds.
        on_write(rows): called after a committed submission (e.g. to sync a copy).
        clock: the time every row is stamped with and every wait is measured by (seconds since
        the epoch); tests pass one they can move forward instead of sleeping."""
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.app_version = app_version
        self.rate_limit = rate_limit
        self.rate_window = rate_window
        self.on_write = on_write
        self.clock = clock
        self._local = threading.local()
        with self._connect() as db:
            db.executescript(SCHEMA)
            for table, columns in (("trials", TRIAL_COLUMNS), ("ratings", RATING_COLUMNS)):
                have = {row["name"] for row in db.execute(f"PRAGMA table_info({table})")}
                for column, declaration in columns.items():
                    if column not in have:
                        db.execute(f"ALTER TABLE {table} ADD COLUMN {column} {declaration}")

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
        self,
        *,
        listener: str,
        kind: str,
        clip: str,
        source: str,
        conditions: dict[str, str],
        versions: dict[str, str],
        seconds: float = 0.0,
        excerpt: str | None = None,
        answer: str | None = None,
        files: dict[str, str] | None = None,
        stimulus: str | None = None,
        own: bool = False,
        repeat_of: str | None = None,
        start_s: float | None = None,
        offsets: dict[str, float] | None = None,
    ) -> Trial:
        _check_listener(listener)
        trial = Trial(
            uuid.uuid4().hex,
            listener,
            kind,
            clip,
            source,
            dict(conditions),
            dict(versions),
            self.clock(),
            seconds,
            excerpt,
            answer,
            files={k: str(v) for k, v in (files or {}).items()},
            stimulus=stimulus,
            own=int(bool(own)),
            repeat_of=repeat_of,
            start_s=start_s,
            offsets=dict(offsets or {}),
        )
        self._connect().execute(
            "INSERT INTO trials (id, listener, kind, clip, source, conditions, versions, created, seconds, excerpt,"
            " answer, files, stimulus, own, repeat_of, start_s, offsets)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                trial.id,
                listener,
                kind,
                clip,
                source,
                json.dumps(conditions),
                json.dumps(versions),
                trial.created,
                seconds,
                excerpt,
                answer,
                json.dumps(trial.files),
                stimulus,
                trial.own,
                repeat_of,
                start_s,
                json.dumps(trial.offsets),
            ),
        )
        return trial

    def get_trial(self, trial_id: str) -> Trial | None:
        row = self._connect().execute("SELECT * FROM trials WHERE id = ?", (str(trial_id),)).fetchone()
        if row is None:
            return None
        json_columns = {"conditions", "versions", "heard", "files", "offsets"}
        return Trial(
            **{f.name: json.loads(row[f.name]) if f.name in json_columns else row[f.name] for f in fields(Trial)}
        )

    def open_trial(self, listener: str, since: float) -> Trial | None:
        """The listener's latest trial issued after `since` and not yet answered, if any: a Start
        in mid-trial shows it again instead of issuing another."""
        row = (
            self._connect()
            .execute(
                "SELECT id FROM trials WHERE listener = ? AND created > ? AND NOT EXISTS "
                "(SELECT 1 FROM ratings WHERE ratings.trial = trials.id) ORDER BY created DESC LIMIT 1",
                (listener, since),
            )
            .fetchone()
        )
        return None if row is None else self.get_trial(row["id"])

    def answered(self, listener: str) -> list[dict]:
        """The listener's answered trials in the order they were answered: {"trial", "via", "own",
        "kind", "stimulus", "excerpt", "start_s", "seconds", "clip", "source"} each. Where a session
        stands, and what it has played, whatever the page remembers (a reload, another tab)."""
        query = (
            "SELECT ratings.trial, MIN(ratings.id) AS first, ratings.via, trials.own, trials.kind, trials.stimulus,"
            " trials.excerpt, trials.start_s, trials.seconds, trials.clip, trials.source FROM ratings"
            " JOIN trials ON ratings.trial = trials.id WHERE ratings.listener = ? GROUP BY ratings.trial ORDER BY first"
        )
        keys = ("trial", "via", "own", "kind", "stimulus", "excerpt", "start_s", "seconds", "clip", "source")
        return [{k: r[k] for k in keys} for r in self._connect().execute(query, (listener,))]

    # ------------------------------------------------------------------ listeners

    def add_listener(self, listener: str, client: str) -> None:
        _check_listener(listener)
        self._connect().execute(
            "INSERT INTO listeners (id, client, created) VALUES (?, ?, ?)", (listener, client, self.clock())
        )

    def known_listener(self, listener: str) -> bool:
        return self._connect().execute("SELECT 1 FROM listeners WHERE id = ?", (listener,)).fetchone() is not None

    def set_headphone_check(self, listener: str, answers: list[int]) -> None:
        self._connect().execute(
            "UPDATE listeners SET headphone_check = ? WHERE id = ?", (json.dumps(answers), listener)
        )

    def answer_headphone_check(self, listener: str, answers: list) -> int:
        """Score a listener's answers to their check; stored once. Returns the number correct."""
        row = (
            self._connect()
            .execute("SELECT headphone_check, headphone_score FROM listeners WHERE id = ?", (listener,))
            .fetchone()
        )
        if row is None or row["headphone_check"] is None:
            raise RatingError("no headphone check was started for this listener")
        if row["headphone_score"] is not None:
            raise RatingError("the headphone check is already done")
        truth = json.loads(row["headphone_check"])
        if (
            not isinstance(answers, list)
            or len(answers) != len(truth)
            or any(isinstance(a, bool) or not isinstance(a, int) for a in answers)
        ):
            raise RatingError(f"answer each of the {len(truth)} checks with 1, 2 or 3")
        score = sum(int(a == t) for a, t in zip(answers, truth, strict=True))
        # Stored only where no score is yet, in the same statement as the test: two answers sent
        # at once are not both scored (each score would tell its sender which answers were right).
        stored = self._connect().execute(
            "UPDATE listeners SET headphone_score = ?, headphone_at = ? WHERE id = ? AND headphone_score IS NULL",
            (score, self.clock(), listener),
        )
        if stored.rowcount != 1:
            raise RatingError("the headphone check is already done")
        return score

    def headphone_score(self, listener: str) -> int | None:
        row = self._connect().execute("SELECT headphone_score FROM listeners WHERE id = ?", (listener,)).fetchone()
        return None if row is None else row["headphone_score"]

    def headphone_scores(self) -> dict[str, int | None]:
        return {
            r["id"]: r["headphone_score"] for r in self._connect().execute("SELECT id, headphone_score FROM listeners")
        }

    # ------------------------------------------------------------------ excerpt metrics

    def set_excerpt_metrics(self, excerpt: str, values: dict[str, dict[str, float]]) -> None:
        """{condition: {metric: value}} of one MUSHRA excerpt (kept once: the excerpt does not change)."""
        db = self._connect()
        for condition, metrics in values.items():
            for metric, value in metrics.items():
                db.execute(
                    "INSERT OR IGNORE INTO excerpt_metrics VALUES (?, ?, ?, ?)",
                    (excerpt, condition, metric, None if value != value else float(value)),
                )

    def has_excerpt_metrics(self, excerpt: str) -> bool:
        db = self._connect()
        return db.execute("SELECT 1 FROM excerpt_metrics WHERE excerpt = ? LIMIT 1", (excerpt,)).fetchone() is not None

    def excerpt_metrics(self) -> dict[tuple[str, str], dict[str, float]]:
        out: dict[tuple[str, str], dict[str, float]] = {}
        for r in self._connect().execute("SELECT * FROM excerpt_metrics"):
            out.setdefault((r["excerpt"], r["condition"]), {})[r["metric"]] = r["value"]
        return out

    # ------------------------------------------------------------------ ratings

    def submit(
        self,
        listener: str,
        trial_id: str,
        *,
        scores: dict[str, float] | None = None,
        choice: str | None = None,
        mos: dict[str, float] | None = None,
        heard: dict[str, float] | None = None,
        rated: list[str] | None = None,
        min_heard: float | None = None,
        via: str = "api",
    ) -> int:
        """Store a listener's answer to a trial; returns the number of rows written.

        MUSHRA trials: `scores` {label: 0..100} for every label of the trial.
        A/B and gold trials: `choice`, a label or "no preference" (an answer must be given),
        and for A/B optionally `mos` {label: 1..5}.
        No answer is taken sooner than the excerpt's length after the trial was issued. With
        `min_heard` (the page), `heard` {label: seconds the player sounded it} must give every
        sample (and MUSHRA's open reference, "reference") that long, and `rated` name every
        MUSHRA slider the listener set; `heard` is kept with the trial (screening compares it
        with the time the answer took). Everything is checked before anything is written, and
        written in one transaction. `via` ("page" or "api") is stored with every row.
        """
        _check_listener(listener)
        if via not in VIAS:
            raise ValueError(f"via is one of {VIAS}, not {via!r}")
        trial = self.get_trial(trial_id)
        if trial is None:
            raise RatingError("unknown trial: start a new one")
        if trial.listener != listener:
            raise RatingError("this trial belongs to another listener")
        now = self.clock()
        if now - trial.created < trial.seconds:
            raise RatingError(
                f"too soon: the samples last {trial.seconds:g} s each; listen to them first "
                f"({trial.seconds - (now - trial.created):.0f} s left)"
            )
        listened = _listening(heard)
        if min_heard is not None:
            _check_heard(trial, listened, rated, needed_listening(min_heard, trial.seconds))
        rows = _answer_rows(trial, scores, choice, mos)
        db = self._connect()
        db.execute("BEGIN IMMEDIATE")  # before the try: "database is locked" is then what is raised
        try:
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
                    " app_version, checkpoint, via) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
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
                        json.dumps(trial.versions) if kind in ("ab", "gold") else trial.versions.get(condition, "-"),
                        via,
                    ),
                )
            if listened:
                db.execute("UPDATE trials SET heard = ? WHERE id = ?", (json.dumps(listened), trial.id))
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
        """All ratings as dicts in the shape `eval.ratings` expects, in the order they were written;
        `took` is the seconds from the trial's issue to its answer and `heard` the listening the
        page reported for the trial (its samples' seconds summed; 0 for API answers). Each row also
        says how it came (`via`), whether its trial was on the listener's own separation (`own`),
        its campaign `stimulus`, and the trial it repeats (`repeat_of`)."""
        out = []
        query = (
            "SELECT ratings.*, trials.excerpt, trials.heard AS heard, trials.created AS issued, trials.own,"
            " trials.stimulus, trials.repeat_of FROM ratings JOIN trials ON ratings.trial = trials.id"
            " ORDER BY ratings.id"
        )
        heard: dict[str, float] = {}
        for r in self._connect().execute(query):
            if r["trial"] not in heard:
                heard[r["trial"]] = float(sum(json.loads(r["heard"] or "{}").values()))
            row = {
                "listener": r["listener"],
                "trial": r["trial"],
                "kind": r["kind"],
                "source": r["source"],
                "clip": r["clip"],
                "score": r["score"],
                "excerpt": r["excerpt"],
                "via": r["via"],
                "own": bool(r["own"]),
                "stimulus": r["stimulus"],
                "repeat_of": r["repeat_of"],
                "took": r["created"] - r["issued"],
                "heard": heard[r["trial"]],
            }
            if r["kind"] in ("ab", "gold"):
                row["a"], row["b"] = r["condition"].split("|", 1)
                row["choice"] = r["choice"]
            else:
                row["condition"] = r["condition"]
            out.append(row)
        return out

    def origins(self) -> tuple[int, int]:
        """(rating rows that came over the API, rating rows of trials on a listener's own separation)."""
        query = (
            "SELECT COALESCE(SUM(ratings.via = 'api'), 0), COALESCE(SUM(trials.own), 0)"
            " FROM ratings JOIN trials ON ratings.trial = trials.id"
        )
        api, own = self._connect().execute(query).fetchone()
        return int(api), int(own)

    def export_records(self) -> Iterator[dict]:
        """Every rating with its trial, for the analysis export (`campaign.Campaign.export_lines`): one
        dict per rating, in the order they were written."""
        query = (
            "SELECT ratings.id AS rating_id, ratings.listener, ratings.trial, trials.kind AS trial_kind, ratings.kind,"
            " ratings.clip, ratings.source, trials.start_s, trials.seconds, ratings.condition, trials.conditions,"
            " ratings.score, ratings.choice, trials.heard, trials.offsets, trials.created AS issued,"
            " ratings.created AS answered, trials.repeat_of, trials.own, trials.stimulus, trials.excerpt, ratings.via,"
            " listeners.headphone_score, ratings.app_version, ratings.checkpoint FROM ratings"
            " JOIN trials ON ratings.trial = trials.id LEFT JOIN listeners ON ratings.listener = listeners.id"
            " ORDER BY ratings.id"
        )
        for r in self._connect().execute(query):
            yield dict(r)

    def version(self) -> tuple[int, int, int]:
        """What changes whenever anything the results depend on does: (ratings, their largest id,
        headphone checks answered). Cheap: two indexed aggregates."""
        db = self._connect()
        count, last = db.execute("SELECT COUNT(*), COALESCE(MAX(id), 0) FROM ratings").fetchone()
        checks = db.execute("SELECT COUNT(*) FROM listeners WHERE headphone_score IS NOT NULL").fetchone()[0]
        return int(count), int(last), int(checks)

    def close(self) -> None:
        db = getattr(self._local, "db", None)
        if db is not None:
            db.close()
            self._local.db = None


def _answer_rows(trial: Trial, scores, choice, mos) -> list[tuple]:
    """The rows `(kind, condition, score, choice)` of a valid answer, or a `RatingError`."""
    labels = sorted(trial.conditions)
    if trial.kind == "mushra":
        if not isinstance(scores, dict) or set(scores) != set(trial.conditions):
            raise RatingError(f"rate every sample ({', '.join(labels)})")
        return [("mushra", trial.conditions[label], _score(score, 0, 100), None) for label, score in scores.items()]
    if not isinstance(choice, str) or (choice not in trial.conditions and choice != NO_PREFERENCE):
        raise RatingError(f"say which sample you prefer: {', '.join(labels)} or '{NO_PREFERENCE}'")
    chosen = trial.conditions.get(choice)  # None: no preference
    pair = "|".join(sorted(trial.conditions.values()))
    # the quality scores are checked alike in gold trials (an error must not tell a gold trial
    # from an A/B one), but only an A/B trial's are kept
    if mos is not None and not isinstance(mos, dict):
        raise RatingError("the quality scores must be {label: 1-5}")
    quality = []
    for label, score in (mos or {}).items():
        if label not in trial.conditions:
            raise RatingError(f"unknown sample {str(label)[:20]!r}")
        quality.append(("mos", trial.conditions[label], _score(score, 1, 5), None))
    if trial.kind == "gold":
        return [("gold", pair, None, chosen)]
    return [("ab", pair, None, chosen), *quality]


def _listening(heard) -> dict[str, float]:
    """{label: seconds} as the page reported it, checked: numbers from 0 to a day."""
    if heard is None:
        return {}
    if not isinstance(heard, dict) or len(heard) > 16:
        raise RatingError("the listening times must be {label: seconds}")
    out = {}
    for label, seconds in heard.items():
        out[str(label)[:20]] = _score(seconds, 0, 86_400)
    return out


def needed_listening(min_heard: float, seconds: float) -> float:
    """Seconds each sample must be heard: the setting, but never more than the excerpt lasts (to
    the millisecond). One rule for the page's submit button and the server's check."""
    return round(min(float(min_heard), float(seconds)), 3)


def _check_heard(trial: Trial, heard: dict[str, float], rated, seconds: float) -> None:
    """The page's rule: a score counts once its sample was heard for `seconds` (the open
    reference too) and, in MUSHRA, its slider set."""
    needed = sorted(trial.conditions) + (["reference"] if trial.kind == "mushra" else [])
    unheard = [label for label in needed if heard.get(label, 0.0) + 1e-6 < seconds]
    rated = set(rated) if isinstance(rated, list) else set()
    unset = [label for label in sorted(trial.conditions) if label not in rated] if trial.kind == "mushra" else []
    if unheard or unset:
        raise IncompleteTrial(unheard, unset, seconds)


def _score(value, low: float, high: float) -> float:
    # a JSON true is not a score, nor is "50": numbers only (bool is an int subclass in Python)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        got = (
            "true/false"
            if isinstance(value, bool)
            else "text"
            if isinstance(value, str)
            else "nothing"
            if value is None
            else type(value).__name__
        )
        raise RatingError(f"a score must be a number from {low:g} to {high:g}, not {got}")
    x = float(value)
    if not (low <= x <= high):  # also refuses NaN
        raise RatingError(f"a score must be from {low:g} to {high:g}, not {x:g}")
    return x


def _check_listener(listener: str) -> None:
    if not isinstance(listener, str) or not (8 <= len(listener) <= 80) or not listener.replace(".", "").isalnum():
        raise RatingError("missing or malformed listener id: reload the page")
