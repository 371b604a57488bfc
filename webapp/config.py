"""App settings from the environment, with defaults that work offline on a laptop.

| variable | default | meaning |
|---|---|---|
| `APP_MODELS` | `dprnn,umxhq` | side-by-side models (names, checkpoint folders or Hub ids) |
| `DPRNN_REPO` | (shipped checkpoint) | Hub repo or folder of the DPRNN (read by `separation.pretrained`) |
| `MUSDB_PATH` | - | MUSDB18(-HQ) root: its test tracks become the clips |
| `APP_DATA_DIR` | see `_default_data_dir` | ratings database, secret, demo clips, kept separations |
| `RATINGS_DB` | `$APP_DATA_DIR/ratings.sqlite` | the SQLite file |
| `APP_MAX_UPLOAD_MB` | 50 | upload size cap, in MB of 1,000,000 bytes |
| `APP_MAX_MINUTES` | 10 | longest input separated (uploads and excerpts) |
| `APP_CONCURRENCY` | 1 | separations running at once (each takes ~2 GB RAM for a 10-minute song) |
| `APP_QUEUE_SIZE` | 200 | requests waiting beyond that get "queue full" (a burst of 60 listeners fits) |
| `APP_DEVICE` | `auto` | `cpu`, `cuda`, or `auto` |
| `APP_SHIFTS` | 1 | passes averaged per separation (1 to 8): N times the compute for a slightly cleaner split |
| `ADMIN_TOKEN` | - | enables the raw ratings CSV export for whoever has it |
| `APP_SECRET` | (a key in `$APP_DATA_DIR/secret.key`) | signs listener ids |
| `APP_TRIAL_SECONDS` | 10 | a blind trial's excerpt; no rating is accepted sooner |
| `APP_SESSION_TRIALS` | 8 | trials per listening session in the page (one of them repeats an earlier excerpt) |
| `APP_MIN_HEARD_S` | 3 | seconds each sample must sound in the page's player before its rating counts |
| `APP_PREPARE_STIMULI` | 1 | at start, separate the example clips and cut their excerpts in the background |
| `APP_WORK_MAX_MB` | 2000 | size cap of the app's work folder (stems, trial audio) |
| `APP_PROXY_HOPS` | 1 on a Space, else 0 | proxies in front adding to `X-Forwarded-For` (0: header ignored) |
| `APP_COUNT_API_RATINGS` | 0 | 1: count ratings sent over the API (scripts, no play records) in the results |
| `APP_COUNT_OWN_TRIALS` | 0 | 1: count trials on a listener's own separation (stimuli nobody else rates) |
| `APP_ALLOW_FAILED_HEADPHONES` | 0 | 1: let listeners who fail the headphone check go on (their ratings never count) |
| `APP_SEPARATE_CAMPAIGN_CLIPS` | 0 | 1: let the Separate tab separate the listening test's excerpts (unblinds them) |
| `APP_LIMIT_LISTENERS` | 60 | new listener ids per address and hour (a class or office shares one address) |
| `APP_LIMIT_TRIALS` | 600 | trials per address and hour (30 people behind one address, ~20 trials each) |
| `APP_LIMIT_RATINGS` | 600 | ratings submitted per address and hour |
| `APP_LIMIT_CHECKS` | 60 | headphone checks per address and hour |
| `RATINGS_REPO`, `HF_TOKEN` | - | with both: ratings also sync to that private Hub dataset repo |
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import platformdirs

from separation import __version__
from separation.errors import SeparationError
from separation.separator import MAX_SHIFTS, check_shifts

ROOT = Path(__file__).resolve().parents[1]


def _default_data_dir() -> Path:
    """Where the app keeps what it must not lose, when `APP_DATA_DIR` does not say: a Space's
    persistent storage; a source checkout's `out/app` (./run.sh app, a Space without storage);
    else, installed with pip, the user's data folder (`~/.local/share/separation-lab` on Linux),
    never the installation itself."""
    space_storage = Path("/data")  # Hugging Face Spaces' persistent storage, when enabled
    if os.environ.get("SPACE_ID") and space_storage.is_dir() and os.access(space_storage, os.W_OK):
        return space_storage / "separation-lab"
    if (ROOT / "pyproject.toml").is_file() and (ROOT / "app.py").is_file():
        return ROOT / "out" / "app"
    return Path(platformdirs.user_data_dir("separation-lab", appauthor=False))


TRIAL_SECONDS = 10.0  # a blind trial's excerpt: BS.1534 asks for short ones (listeners compare, then move on)
DEFAULT_LIMITS = {"listeners": 60, "trials": 600, "ratings": 600, "checks": 60}

# The settings read from the environment: (field, variable, type, what it must be, check).
SETTINGS = (
    ("musdb_path", "MUSDB_PATH", str, "a folder", None),
    ("data_dir", "APP_DATA_DIR", Path, "a folder", None),
    ("ratings_db", "RATINGS_DB", Path, "a file", None),
    ("max_upload_mb", "APP_MAX_UPLOAD_MB", float, "a number of MB above 0", lambda v: v > 0),
    ("max_minutes", "APP_MAX_MINUTES", float, "a number of minutes above 0", lambda v: v > 0),
    ("concurrency", "APP_CONCURRENCY", int, "a whole number of 1 or more", lambda v: v >= 1),
    ("queue_size", "APP_QUEUE_SIZE", int, "a whole number of 1 or more", lambda v: v >= 1),
    ("device", "APP_DEVICE", str, "auto, cpu or cuda", None),
    ("shifts", "APP_SHIFTS", int, f"a whole number from 1 to {MAX_SHIFTS}", None),  # the range: check_shifts
    ("admin_token", "ADMIN_TOKEN", str, "a token", None),
    ("ratings_repo", "RATINGS_REPO", str, "a Hub dataset repo id", None),
    ("hf_token", "HF_TOKEN", str, "a token", None),
    ("secret", "APP_SECRET", str, "a key", None),
    # <= 0 would switch off a trial's wait and the listening it asks for
    ("trial_seconds", "APP_TRIAL_SECONDS", float, "seconds above 0, at most 60", lambda v: 0 < v <= 60),
    ("session_trials", "APP_SESSION_TRIALS", int, "a whole number from 1 to 100", lambda v: 1 <= v <= 100),
    ("min_heard", "APP_MIN_HEARD_S", float, "seconds from 0 to 60", lambda v: 0 <= v <= 60),
    ("work_max_mb", "APP_WORK_MAX_MB", float, "a number of MB above 0", lambda v: v > 0),
    ("proxy_hops", "APP_PROXY_HOPS", int, "a whole number of 0 or more", lambda v: v >= 0),
)


@dataclass
class AppConfig:
    models: list[str] = field(default_factory=lambda: ["dprnn", "umxhq"])
    musdb_path: str | None = None
    data_dir: Path = field(default_factory=_default_data_dir)
    ratings_db: Path | None = None
    max_upload_mb: float = 50.0
    max_minutes: float = 10.0
    concurrency: int = 1
    queue_size: int = 200
    device: str = "auto"
    shifts: int = 1  # `Separator(shifts=...)`; ratings name it in the model version
    admin_token: str | None = None
    ratings_repo: str | None = None
    hf_token: str | None = None
    rate_limit: int = 30  # rated trials per listener per minute
    secret: str | None = None  # signs listener ids; default: a key made once in <data dir>/secret.key
    trial_seconds: float = TRIAL_SECONDS  # the excerpt of a blind trial; no rating is taken sooner
    session_trials: int = 8  # trials per listening session in the page ("3 of 8")
    min_heard: float = 3.0  # seconds each sample must sound in the page's player (at most the excerpt)
    prepare_stimuli: bool = True  # app.py: separate the example clips and cut their excerpts at start
    work_max_mb: float = 2000.0  # the app's work folder (stems, trial audio) is kept under this
    count_api_ratings: bool = False  # API ratings (no play records) are stored, not counted, unless set
    count_own_trials: bool = False  # trials on the listener's own separation: stored, not counted, unless set
    allow_failed_headphones: bool = False  # a failed headphone check ends the listener's part, unless set
    separate_campaign_clips: bool = False  # the Separate tab refuses the campaign's excerpts, unless set
    proxy_hops: int = 0  # see APP_PROXY_HOPS: how far to trust X-Forwarded-For (per-client limits)
    # per client (address, hashed) and hour: listener ids, trials, ratings, headphone checks. Sized
    # for a lab campaign where a class of ~30 shares one address; one scripted caller still gets
    # no more than a class would (and each listener is limited on its own: `rate_limit`).
    limits: dict = field(default_factory=lambda: dict(DEFAULT_LIMITS))

    def __post_init__(self):
        # A bad setting stops the start with one line naming it, not a request (or a session) later.
        check_shifts(self.shifts, "APP_SHIFTS")
        for key, name, _, must_be, allowed in SETTINGS:
            if allowed is not None and not allowed(getattr(self, key)):
                raise SeparationError(f"{name} must be {must_be}, not {getattr(self, key)!r}")
        self.data_dir = Path(self.data_dir)
        if self.ratings_db is None:
            self.ratings_db = self.data_dir / "ratings.sqlite"
        self.ratings_db = Path(self.ratings_db)

    @classmethod
    def from_env(cls, env: dict | None = None) -> AppConfig:
        env = os.environ if env is None else env
        kwargs = {}
        if env.get("APP_MODELS"):
            kwargs["models"] = [m.strip() for m in env["APP_MODELS"].split(",") if m.strip()]
        for key, name, kind, must_be, _ in SETTINGS:
            if env.get(name):
                try:
                    kwargs[key] = kind(env[name])
                except ValueError:
                    raise SeparationError(f"{name} must be {must_be}, not {env[name]!r}") from None
        for key, name in SWITCHES:
            if env.get(name):
                kwargs[key] = _switch(env[name], name)
        limits = dict(DEFAULT_LIMITS)
        for kind in limits:
            name = f"APP_LIMIT_{kind.upper()}"
            if env.get(name):
                limits[kind] = _positive_int(env[name], name)
        kwargs["limits"] = limits
        if "proxy_hops" not in kwargs and env.get("SPACE_ID"):
            kwargs["proxy_hops"] = 1  # the Space's proxy appends the caller's address
        return cls(**kwargs)

    @property
    def max_upload_bytes(self) -> int:
        """The upload cap in bytes. One unit everywhere: MB = 1,000,000 bytes (the page, Gradio's
        upload limit, the app's own check and the README all say and use it)."""
        return int(self.max_upload_mb * 1_000_000)

    @property
    def version(self) -> str:
        return __version__


SWITCHES = (
    ("count_api_ratings", "APP_COUNT_API_RATINGS"),
    ("count_own_trials", "APP_COUNT_OWN_TRIALS"),
    ("allow_failed_headphones", "APP_ALLOW_FAILED_HEADPHONES"),
    ("separate_campaign_clips", "APP_SEPARATE_CAMPAIGN_CLIPS"),
    ("prepare_stimuli", "APP_PREPARE_STIMULI"),
)


def _switch(text: str, name: str) -> bool:
    """An on/off setting: 1/true/yes or 0/false/no; anything else stops the start, naming it."""
    value = text.strip().lower()
    if value not in ("1", "true", "yes", "0", "false", "no"):
        raise SeparationError(f"{name} must be 1 or 0 (true/false, yes/no), not {text!r}")
    return value in ("1", "true", "yes")


def _positive_int(text: str, name: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise SeparationError(f"{name} must be a whole number of 1 or more, not {text!r}")
    return value
