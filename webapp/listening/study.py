"""The listening study: its listeners, their trials and answers, the results and the export, on
one ratings store. What `LabApp` (models, clips, separations) offers it: the example clips'
shared separations, the names of its clips and models, and its work folder's clean-up.

The rooms: `listeners` (signed ids, per-client limits), `stimuli` (excerpts, conditions, the
files a browser gets, the headphone check), `store` (SQLite), `campaign` (what counts, sessions,
screening, completion codes, the export's rows), `results` (computed once per change), `player`
and `page` (the Gradio page on top).
"""

from __future__ import annotations

import hmac
import json
import secrets
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from eval.ratings import metric_agreement, summary

from ..config import AppConfig
from ..service import SOURCES, Separation
from .campaign import HEADPHONE_PASS, Campaign
from .listeners import RateLimiter, Signer, client_address
from .results import ResultsBoard
from .stimuli import (
    EXCERPTS_PER_SOURCE,
    TrialAudio,
    TrialFiles,
    headphone_check,
    make_trial,
    stimulus_id,
    trial_audio,
)
from .store import RatingError, RatingsStore

FAILED_CHECK = (
    "Thank you for your time. The headphone check was not passed, and this study needs headphones "
    "(over loudspeakers the tones cannot be told apart), so it cannot use ratings from this browser."
)


class Study:
    def __init__(
        self,
        config: AppConfig,
        *,
        clips: list[str],
        models: list[str] | Callable[[], list[str]],
        separation: Callable[[str], Separation],
        work_root: Path,
        tidy: Callable[[], None] = lambda: None,
        open_for: float = 1.5 * 3600,
        on_write=None,
    ):
        """clips, models: the example clips' and the models' names (the campaign's stimuli; models
        may be a function: the models that run now, one that failed to load makes no A/B pair);
        separation(clip): that clip's shared separation; tidy(): the work folder's clean-up;
        open_for: how long an unanswered trial is shown again; on_write: called with each
        committed answer's rows (a synced copy)."""
        self.config = config
        self.clips = list(clips)
        self._models = models if callable(models) else (lambda: list(models))
        self._separation = separation
        self._tidy = tidy
        self.open_for = open_for
        self.store = RatingsStore(
            config.ratings_db, app_version=config.version, rate_limit=config.rate_limit, on_write=on_write
        )
        self.signer = Signer(config.secret, key_file=config.data_dir / "secret.key")
        hour = 3600.0
        self.limiter = RateLimiter({**{k: (v, hour) for k, v in config.limits.items()}, "admin": (5, 900.0)})
        self.trial_files = TrialFiles(work_root / "trials")
        self._exports: dict[str, float] = {}  # one-time export links -> expiry
        # served headphone checks not yet answered: their files go once they are (4.2 MB a check)
        self._checks: dict[str, list[Path]] = {}
        self._checks_lock = threading.Lock()
        self.campaign = Campaign(self.store, config, self.signer.derived_key("completion").encode())
        # the results every page shows: computed on a thread of their own when ratings change
        self.results = ResultsBoard(self.campaign.version, lambda: (self.summary(), self.agreement()))
        self.results.start()  # the first snapshot is made now, before any page asks

    # ------------------------------------------------------------------ listeners

    def client_key(self, request) -> str:
        """Who a request comes from, for per-client limits: a keyed hash of its address (never stored
        as such), found as `APP_PROXY_HOPS` says (`listeners.client_address`)."""
        return self.signer.client_key(client_address(request, self.config.proxy_hops))

    def new_listener(self, client: str) -> str:
        """A listener id signed by this server (kept in the browser), at most
        `limits["listeners"]` per client and hour."""
        self.limiter.allow("listeners", client, "new listener ids")
        listener = self.signer.issue()
        self.store.add_listener(listener, client)
        return listener

    def listener(self, token) -> str:
        """`token` if this server issued it and knows it; a `RatingError` otherwise."""
        listener = self.signer.check(token)
        if not self.store.known_listener(listener):
            raise RatingError("unknown listener id: reload the page (API: ask /listener for one)")
        return listener

    def headphone_check(self, token, client: str) -> list[Path]:
        """The listener's headphone check (Woods et al. 2017): six files of three tones each; the
        answers stay on the server."""
        listener = self.listener(token)
        if self.store.headphone_score(listener) is not None:
            raise RatingError("the headphone check is already done")
        self.limiter.allow("checks", client, "headphone checks")
        files, answers = headphone_check(self.trial_files, np.random.default_rng())
        self.store.set_headphone_check(listener, answers)
        with self._checks_lock:
            self._checks[listener] = files
        return files

    def answer_headphone_check(self, token, answers) -> tuple[int, bool]:
        listener = self.listener(token)
        score = self.store.answer_headphone_check(listener, answers)
        self.results.changed()
        with self._checks_lock:
            self.trial_files.discard(self._checks.pop(listener, []))
        return score, score >= HEADPHONE_PASS

    # ------------------------------------------------------------------ trials

    def trial_for(self, sep: Separation | None, token, client: str = "local", *, kind: str | None = None):
        """A blind trial on the session's last separation when it can make one (true stems, or
        two models' outputs for A/B; the listener's own: not counted unless
        `APP_COUNT_OWN_TRIALS`), otherwise on the campaign's next stimulus for this listener
        (`Campaign.choose`; the session's last trial repeats an earlier excerpt). `kind="ab"`
        asks for an A/B trial even where the true stems are known. Returns (trial audio,
        separation)."""
        if kind not in (None, "mushra", "ab"):
            raise RatingError("the kind of trial is 'mushra' or 'ab'")
        listener = self.listener(token)
        score = self.store.headphone_score(listener)
        if score is None:
            raise RatingError("take the headphone check first (six short questions)")
        if score < HEADPHONE_PASS and not self.config.allow_failed_headphones:
            raise RatingError(FAILED_CHECK)
        self.limiter.allow("trials", client, "trials")
        self._tidy()
        usable = sep is not None and bool(sep.stems) and (bool(sep.references) or len(sep.stems) >= 2)
        if usable and kind is not None:
            usable = len(sep.stems) >= 2 if kind == "ab" else bool(sep.references)
        common = {"seconds": self.config.trial_seconds, "kind": kind}
        if usable:
            return make_trial(sep, self.store, listener, self.trial_files, own=True, **common), sep
        repeat = self.campaign.repeat_due(listener) if kind != "ab" else None
        if repeat is not None:
            sep_id, source, start = json.loads(repeat["excerpt"])[:3]
            sep = self._separation(repeat["clip"])
            if sep.id == sep_id:  # the models are the same as when it was rated
                pick = int(repeat["stimulus"].rsplit("|", 1)[1])
                trial = make_trial(
                    sep,
                    self.store,
                    listener,
                    self.trial_files,
                    source=source,
                    pick=pick,
                    start=int(start),
                    repeat_of=repeat["trial"],
                    **common,
                )
                return trial, sep
        stimuli = self.stimuli("ab" if kind == "ab" else "mushra")
        if not stimuli:
            raise RatingError("an A/B trial needs two models, and this app runs one: ask for a MUSHRA trial")
        clip_id, source, pick, pair = stimuli[self.campaign.choose(listener, self.stimulus_counts(stimuli))]
        sep = self._separation(clip_id)
        trial = make_trial(sep, self.store, listener, self.trial_files, source=source, pick=pick, pair=pair, **common)
        return trial, sep

    def stimuli(self, kind: str = "mushra") -> dict[str, tuple[str, str, int, tuple[str, str] | None]]:
        """The campaign's stimuli of a kind: {stimulus id: (clip, source, excerpt pick, A/B pair)}."""
        models = sorted(self._models())
        pairs = [(a, b) for i, a in enumerate(models) for b in models[i + 1 :]] if kind == "ab" else [None]
        return {
            stimulus_id(c, s, k, p): (c, s, k, p)
            for c in self.clips
            for s in SOURCES
            for k in range(EXCERPTS_PER_SOURCE)
            for p in pairs
        }

    def stimulus_counts(self, stimuli: dict) -> dict[str, int]:
        """{stimulus: trials of it kept after screening} (a few seconds stale at most: balancing
        needs no exact count, and under a crowd the ratings change between any two trials)."""
        rows, flags = self.campaign.screened(max_age=5.0)
        counts = dict.fromkeys(stimuli, 0)
        one_row = {"mushra": "reference"}  # one row of each MUSHRA trial; A/B and gold rows: one per trial
        for r in rows:
            if r.get("stimulus") in counts and not flags[r["listener"]]:
                if r["kind"] in ("ab", "gold") or r.get("condition") == one_row.get(r["kind"]):
                    counts[r["stimulus"]] += 1
        return counts

    def open_trial(self, token) -> TrialAudio | None:
        """The listener's trial issued and not answered (a Start in mid-trial, a reload), if its
        files are still there: shown again rather than replaced by a new one."""
        listener = self.listener(token)
        trial = self.store.open_trial(listener, since=self.store.clock() - self.open_for)
        if trial is None or not trial.files or not all(Path(f).exists() for f in trial.files.values()):
            return None
        return trial_audio(trial)

    def answer(self, token, trial_id: str, answer: dict, client: str = "local", *, page: bool = False) -> int:
        """Store a trial's answer: MUSHRA {"scores": {label: 0-100}}; A/B and gold {"choice": label or
        "no preference", "mos": {label: 1-5}}. From the page, the answer also says how long each
        sample sounded ("heard": {label: seconds}, the reference too) and which sliders were set
        ("rated"): every sample must have been heard `APP_MIN_HEARD_S` and every slider set."""
        listener = self.listener(token)
        if not isinstance(answer, dict):
            raise RatingError("the answer must be a JSON object")
        self.limiter.allow("ratings", client, "ratings")
        saved = self.store.submit(
            listener,
            trial_id,
            scores=answer.get("scores"),
            choice=answer.get("choice"),
            mos=answer.get("mos"),
            heard=answer.get("heard") if page else None,
            rated=answer.get("rated") if page else None,
            min_heard=self.config.min_heard if page else None,
            via="page" if page else "api",
        )
        self.results.changed()
        trial = self.store.get_trial(trial_id)
        self.trial_files.discard(trial.files.values())  # fetched and heard: ~9 MB a trial no one needs
        return saved

    # ------------------------------------------------------------------ results

    def summary(self) -> dict:
        """The statistics of the counted ratings after the one screening (`Campaign.screened`), and
        how many ratings were stored but not counted (API, own separations)."""
        rows, flags = self.campaign.screened()
        api, own = self.store.origins()  # all rows stored, counted or not: one aggregate, not a second read
        out = summary(rows, flags=flags)
        return {
            **out,
            "api_ratings": {"rows": api, "counted": bool(self.config.count_api_ratings)},
            "own_ratings": {"rows": own, "counted": bool(self.config.count_own_trials)},
        }

    def agreement(self) -> dict:
        """Kendall's tau of each metric with the kept MUSHRA scores (`eval.ratings.metric_agreement`)."""
        rows, flags = self.campaign.screened()
        kept = [r for r in rows if not flags[r["listener"]]]
        return metric_agreement(kept, self.store.excerpt_metrics())

    def export_link(self, token: str | None, client: str) -> str:
        """A one-time path (valid 60 s) that streams the raw ratings CSV: for whoever holds
        ADMIN_TOKEN (compared in constant time; 5 wrong tries per client and 15 minutes). No file
        is written anywhere the app serves."""
        if not self.config.admin_token:
            raise RatingError("export is disabled: set ADMIN_TOKEN in the app's environment")
        if self.limiter.failures("admin", client) >= self.limiter.limits["admin"][0]:
            raise RatingError("too many wrong admin tokens from this connection: try again in 15 min")
        if not token or not hmac.compare_digest(str(token).encode(), self.config.admin_token.encode()):
            self.limiter.allow("admin", client, "wrong admin tokens")
            raise RatingError("wrong admin token")
        link = secrets.token_urlsafe(24)
        now = time.monotonic()
        self._exports = {k: t for k, t in self._exports.items() if t > now}
        self._exports[link] = now + 60
        return f"/ratings-export/{link}"

    def export_stream(self, link: str):
        """The CSV lines of a valid one-time link (it is used up), or None."""
        expiry = self._exports.pop(link, None)
        if expiry is None or expiry < time.monotonic():
            return None
        return self.campaign.export_lines()

    def completion_code(self, listener: str, session: int) -> str:
        return self.campaign.completion_code(listener, session)


def summary_public(study: Study) -> dict:
    """The statistics of the ratings as they are (`ResultsBoard.current`), without listener ids
    (the kept/dropped lists become counts)."""
    snapshot = study.results.current()
    if snapshot is None:
        raise RatingError("the results are being computed: ask again in a minute")
    s = snapshot.summary
    mushra = dict(s["mushra"])
    mushra["kept"] = len(mushra["kept"])
    mushra["dropped"] = len(mushra["dropped"])
    return {**s, "mushra": mushra}
