"""The listening campaign's rules: which answers count, what a session plays, one screening for
the results, the completion codes and the export, and the analysis export itself.

One predicate decides what counts (`Campaign.counts`): answers from the listening page (API
answers only with `APP_COUNT_API_RATINGS`), on the campaign's stimuli (a listener's own
separation only with `APP_COUNT_OWN_TRIALS`). The same counted answers make a listener's
sessions, their completion codes, the statistics and the screening flags that the export writes
beside each rating, so a payment is checked against the flags the statistics used.

A session (`APP_SESSION_TRIALS` counted answers) draws its stimuli without replacement: no
excerpt twice in a session, the excerpts the listener never rated first, then the ones with the
fewest kept ratings. Its last trial (sessions of 3 or more) plays one of the session's earlier
MUSHRA excerpts again, blind; the statistics count each stimulus once per listener, the first
time (`eval.ratings.first_presentations`), and the repeat serves the test-retest screening.
"""

from __future__ import annotations

import csv
import hashlib
import hmac
import io
import json
import random
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime

from eval.ratings import RULES, excluded_by, first_presentations

from .store import RatingsStore, safe_cell

# Crockford's base 32: no I, L, O or U, so a code read aloud or copied by hand is not misread
CODE_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
HEADPHONE_PASS = RULES.headphone_pass


@dataclass
class Session:
    """Where a listener stands: session `number` (1, 2, ...), `done` of its trials answered, the
    counted answers of this session so far (oldest first), and every counted answer."""

    number: int
    done: int
    current: list[dict] = field(default_factory=list)
    answered: list[dict] = field(default_factory=list)


def completion_text(digest: bytes) -> str:
    """8 characters of `CODE_ALPHABET` from a digest, as XXXX-XXXX."""
    value = int.from_bytes(digest[:5], "big")  # 40 bits: 8 characters of 5 bits
    chars = [CODE_ALPHABET[(value >> (5 * i)) & 31] for i in reversed(range(8))]
    return "".join(chars[:4]) + "-" + "".join(chars[4:])


def utc(seconds: float | None) -> str:
    """ISO 8601 in UTC, to the millisecond: 2026-12-06T17:02:03.456Z."""
    if seconds is None:
        return ""
    return datetime.fromtimestamp(float(seconds), UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class Campaign:
    def __init__(self, store: RatingsStore, config, completion_key: bytes):
        self.store = store
        self.config = config
        self._code_key = completion_key
        self._screened: tuple[tuple, list[dict], dict] | None = None
        self._screened_at = 0.0
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ what counts

    def counts(self, answer: dict) -> bool:
        """Whether an answer (a rating row, or an entry of `store.answered`) counts: in the
        statistics, in the screening, towards a session and its completion code."""
        if answer.get("via") == "api" and not self.config.count_api_ratings:
            return False
        return not (answer.get("own") and not self.config.count_own_trials)

    def version(self) -> tuple:
        """What the counted ratings and their screening depend on: the store's version and the
        settings that decide what counts."""
        return (*self.store.version(), bool(self.config.count_api_ratings), bool(self.config.count_own_trials))

    def session(self, listener: str) -> Session:
        answered = [a for a in self.store.answered(listener) if self.counts(a)]
        n = self.config.session_trials
        done = len(answered) % n
        return Session(len(answered) // n + 1, done, answered[len(answered) - done :], answered)

    # ------------------------------------------------------------------ what a session plays

    def repeat_due(self, listener: str, rng: random.Random | None = None) -> dict | None:
        """The earlier answer of this session whose excerpt the next trial plays again, if the next
        is the session's last (of 3 or more): one of the session's MUSHRA trials on a campaign
        stimulus, at random. None otherwise."""
        n = self.config.session_trials
        session = self.session(listener)
        if n < 3 or session.done != n - 1:
            return None
        earlier = [a for a in session.current if a["kind"] == "mushra" and a["stimulus"] and not a.get("repeat_of")]
        return (rng or random).choice(earlier) if earlier else None

    def choose(self, listener: str, stimuli: dict[str, int], rng: random.Random | None = None) -> str:
        """The stimulus to play next from `stimuli` ({stimulus: kept trials so far}): one this
        session has not played (without replacement), the listener never rated before others,
        then the fewest kept trials; ties at random."""
        session = self.session(listener)
        played = {a["stimulus"] for a in session.current}
        ever = {a["stimulus"] for a in session.answered}
        fresh = [s for s in stimuli if s not in played] or list(stimuli)  # a session longer than the set

        def rank(s: str) -> tuple[int, int]:
            return (s in ever, stimuli[s])

        best = min(rank(s) for s in fresh)
        return (rng or random).choice(sorted(s for s in fresh if rank(s) == best))

    # ------------------------------------------------------------------ the one screening

    def screened(self, max_age: float = 0.0) -> tuple[list[dict], dict[str, list[str]]]:
        """The counted rating rows and the screening criteria excluding each of their listeners:
        what the statistics, the stimulus balance and the export all use. Recomputed only when the
        ratings or headphone checks changed since the last call, and, with `max_age`, not before
        that many seconds (every trial asks, to balance: it needs no exact count)."""
        with self._lock:
            now = time.monotonic()
            if self._screened is not None and now - self._screened_at < max_age:
                return self._screened[1], self._screened[2]
            key = self.version()
            if self._screened is None or self._screened[0] != key:
                rows = [r for r in self.store.rows() if self.counts(r)]
                self._screened = (key, rows, excluded_by(rows, self.store.headphone_scores()))
            self._screened_at = now
            return self._screened[1], self._screened[2]

    # ------------------------------------------------------------------ completion codes

    def completion_code(self, listener: str, session: int) -> str:
        """The code a listener is shown at the end of their session number `session` (1, 2, ...),
        to paste where a paid campaign asks for one (Prolific, MTurk). The admin export gives each
        counted rating its session's code beside the listener's screening flags, so a payment is
        checked against the ratings. Keyed with the app's secret: it cannot be made without it,
        and a restart gives the same code."""
        digest = hmac.new(self._code_key, f"{listener}:{session}".encode(), hashlib.sha256).digest()
        return completion_text(digest)

    def completed_codes(self, listener: str) -> list[str]:
        """The codes of the listener's completed sessions, first to last."""
        return [self.completion_code(listener, k + 1) for k in range(self.session(listener).number - 1)]

    # ------------------------------------------------------------------ the analysis export

    def export_lines(self) -> Iterator[str]:
        """Every rating as a CSV line (formula-safe), with what an analysis needs beside it: the
        label-to-condition mapping, each sample's heard time, the excerpt's start, the repeat, the
        headphone score, whether it counts and which criteria exclude its listener (the one
        screening: `screened`), its session and that session's completion code. Columns are
        documented in docs/listening-tests.md."""
        rows, flags = self.screened()
        counted_trials = {r["trial"] for r in rows}
        firsts = {r["trial"] for r in first_presentations(rows)}
        sessions: dict[str, tuple[int, str]] = {}  # trial -> (session, code or "")
        by_listener: dict[str, list[str]] = {}
        for r in rows:
            trials = by_listener.setdefault(r["listener"], [])
            if not trials or trials[-1] != r["trial"]:
                trials.append(r["trial"])
        n = self.config.session_trials
        for listener, trials in by_listener.items():
            for i, trial in enumerate(trials):
                number = i // n + 1
                complete = len(trials) >= number * n
                sessions[trial] = (number, self.completion_code(listener, number) if complete else "")
        buffer = io.StringIO()
        writer = csv.writer(buffer)

        def line(cells) -> str:
            buffer.seek(0)
            buffer.truncate()
            writer.writerow([safe_cell(c) for c in cells])
            return buffer.getvalue()

        yield line(EXPORT_COLUMNS)
        for rec in self.store.export_records():
            counted = rec["trial"] in counted_trials
            yield line(_export_cells(rec, counted, rec["trial"] in firsts, flags, sessions.get(rec["trial"])))


EXPORT_COLUMNS = [
    "rating_id",
    "listener",
    "session",
    "trial",
    "trial_kind",
    "kind",
    "clip",
    "source",
    "excerpt_start_s",
    "excerpt_s",
    "label",
    "condition",
    "score",
    "choice",
    "labels",
    "heard_s",
    "reference_heard_s",
    "level_offset_db",
    "took_s",
    "issued_utc",
    "answered_utc",
    "repeat_of",
    "counts_in_means",
    "own_separation",
    "via",
    "counted",
    "headphone_score",
    "excluded_by",
    "completion_code",
    "app_version",
    "checkpoint",
]


def _export_cells(rec: dict, counted: bool, first: bool, flags: dict, session: tuple[int, str] | None) -> list:
    conditions = json.loads(rec["conditions"] or "{}")
    heard = json.loads(rec["heard"] or "{}")
    offsets = json.loads(rec["offsets"] or "{}")
    if rec["kind"] in ("mushra", "mos"):
        label = next((lab for lab, c in conditions.items() if c == rec["condition"]), "")
    else:  # a preference row: the label chosen ("" for no preference)
        label = next((lab for lab, c in conditions.items() if c == rec["choice"]), "")
    number, code = session if session else ("", "")
    cells = {
        **rec,
        "session": number,
        "excerpt_start_s": rec["start_s"],
        "excerpt_s": rec["seconds"],
        "label": label,
        "labels": json.dumps(conditions, sort_keys=True),
        "heard_s": heard.get(label, "") if label else "",
        "reference_heard_s": heard.get("reference", ""),
        "level_offset_db": offsets.get(label, "") if label else "",
        "took_s": round(rec["answered"] - rec["issued"], 3),
        "issued_utc": utc(rec["issued"]),
        "answered_utc": utc(rec["answered"]),
        "repeat_of": rec["repeat_of"] or "",
        "counts_in_means": int(counted and first and not flags.get(rec["listener"])),
        "own_separation": int(bool(rec["own"])),
        "counted": int(counted),
        "excluded_by": ";".join(flags.get(rec["listener"], [])) if counted else "",
        "completion_code": code,
    }
    return [cells.get(c, "") for c in EXPORT_COLUMNS]
