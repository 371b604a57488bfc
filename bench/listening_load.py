"""A listening campaign under load: N listeners at once, and M pages open, against the real app.

    ./run.sh bench listening_load [--listeners 10 30 60] [--pages 60] [--browsers 3] [--trials 5]
                                  [--total 1000]

Starts `python app.py` (its defaults: the shipped DPRNN, umxhq where its weights are cached,
the demo clips) in a fresh data folder and work folder, behind `APP_PROXY_HOPS=1`.

Listeners: each is a gradio_client of its own with its own forwarded address, and does what a
listener's page does: a listener id, the headphone check (its six files downloaded), its answers,
then `--trials` blind trials, each trial's files all downloaded over HTTP (the page's player
fetches every sample: ~7 MB per 10-s MUSHRA trial), answered once the server allows it (one
excerpt length after it was issued). They start at once, as a class told to start does.

Pages: `--pages` open pages that do what the page's script does, through the same HTTP calls:
the page and its config fetched, the load event run, the Results tab selected (its select event),
then its 15-s timer's ticks for as long as the level lasts. `--browsers` real Chromium pages
(Debian's chromium, headless) beside them open the app and the Results tab, and report how long
the results took to appear there.

Warm-up first: the app prepares its stimuli in the background at start (`APP_PREPARE_STIMULI`),
then one listener takes 3 trials. Then, per level: p50/p95 per call, the errors a listener or
page saw (any refused or failed call: nothing is retried), the app's CPU (seconds of CPU per
minute of wall time, its process tree, from /proc), peak resident memory, the work folder's size
on disk, and the rows expected against the rows in the database. Last, listeners keep rating
until `--total` trials in all, and the work folder's size is checked against its cap.

Targets on a 2-core machine: 60 listeners at once with 60 pages open: 0 errors, rows exact,
/trial p95 <= 2 s, results (as a page saw them) p95 <= 1 s; the work folder under its cap after
1,000 trials.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections import defaultdict
from pathlib import Path

import numpy as np
from gradio_client import Client

import common  # noqa: F401  (puts the project on sys.path)
from procmem import process_tree, tree_rss
from webapp.listening.player import file_url
from webapp.service import disk_bytes

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class App:
    """`python app.py` in its own data and work folders; its memory sampled while it runs."""

    def __init__(self, folder: Path, trial_seconds: float, work_max_mb: float):
        self.data = folder / "data"
        self.tmp = folder / "tmp"
        self.tmp.mkdir(parents=True)
        self.port = free_port()
        env = {
            **os.environ,
            "APP_DATA_DIR": str(self.data),
            "APP_PROXY_HOPS": "1",
            "APP_TRIAL_SECONDS": str(trial_seconds),
            "APP_WORK_MAX_MB": str(work_max_mb),
            # the simulated listeners answer over the API: counted, as the page's answers are, so the
            # results are computed over all of them (sessions, screening, the agreement's bootstrap)
            "APP_COUNT_API_RATINGS": "1",
            "GRADIO_SERVER_PORT": str(self.port),
            "TMPDIR": str(self.tmp),  # the app's work folder is $TMPDIR/separation-lab
            "GRADIO_ANALYTICS_ENABLED": "False",
        }
        self.log = open(folder / "app.log", "w")  # noqa: SIM115 (open for the app's life)
        self.proc = subprocess.Popen([sys.executable, "app.py"], cwd=ROOT, env=env, stdout=self.log, stderr=self.log)
        self.url = f"http://127.0.0.1:{self.port}/"
        self.peak = 0
        self._stop = threading.Event()
        threading.Thread(target=self._sample, daemon=True).start()

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, tree_rss(self.proc.pid))
            time.sleep(0.05)

    def wait_up(self, timeout: float = 180.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise SystemExit(f"the app exited ({self.proc.returncode}): see {self.log.name}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    return
            except OSError:
                time.sleep(0.5)
        raise SystemExit(f"the app did not start in {timeout:.0f} s")

    def wait_prepared(self, timeout: float = 900.0) -> None:
        """Until the app has prepared its stimuli in the background (`APP_PREPARE_STIMULI`)."""
        deadline = time.monotonic() + timeout
        while "stimuli ready" not in Path(self.log.name).read_text():
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise SystemExit(f"the app did not prepare its stimuli: see {self.log.name}")
            time.sleep(0.5)

    def cpu_seconds(self) -> float:
        """CPU seconds (user + system) the app's process tree has used so far."""
        return tree_cpu_seconds(self.proc.pid)

    def work_bytes(self) -> int:
        return disk_bytes(self.tmp / "separation-lab")

    def check_answers(self, listener: str) -> list[int]:
        """The right answers of a listener's headphone check (what a listener on headphones hears)."""
        with sqlite3.connect(self.data / "ratings.sqlite") as db:
            (answers,) = db.execute("SELECT headphone_check FROM listeners WHERE id = ?", (listener,)).fetchone()
        return json.loads(answers)

    def conditions(self, trial: str) -> dict[str, str]:
        """{label: hidden condition} of a trial (what the bench's listeners hear and the server hides)."""
        with sqlite3.connect(self.data / "ratings.sqlite") as db:
            (conditions,) = db.execute("SELECT conditions FROM trials WHERE id = ?", (trial,)).fetchone()
        return json.loads(conditions)

    def rows(self) -> tuple[int, int]:
        """(rating rows, rated trials) in the app's database."""
        with sqlite3.connect(self.data / "ratings.sqlite") as db:
            return db.execute("SELECT COUNT(*), COUNT(DISTINCT trial) FROM ratings").fetchone()

    def close(self) -> None:
        self._stop.set()
        self.proc.terminate()
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()


def tree_cpu_seconds(pid: int, skip: int | None = None) -> float:
    """CPU seconds (user + system) a process tree has used so far (`skip`: a subtree left out)."""
    left_out = set(process_tree(skip)) if skip else set()
    total = 0
    for p in process_tree(pid):
        if p in left_out:
            continue
        try:
            with open(f"/proc/{p}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime (after the name)
        except (OSError, IndexError, ValueError):
            continue
    return total / os.sysconf("SC_CLK_TCK")


def machine_busy() -> tuple[float, float]:
    """(busy, total) CPU time of the whole machine so far, from /proc/stat (jiffies)."""
    with open("/proc/stat") as f:
        values = [int(v) for v in f.readline().split()[1:]]
    idle = values[3] + values[4]  # idle, iowait
    return float(sum(values) - idle), float(sum(values))


class CallFailed(Exception):
    """A call a listener saw fail (already counted)."""


class Tally:
    """Latencies per endpoint, errors, and the rows each accepted answer wrote."""

    def __init__(self):
        self.lock = threading.Lock()
        self.times: dict[str, list[float]] = defaultdict(list)
        self.errors: list[str] = []
        self.rows = 0
        self.trials = 0
        self.stopped = 0  # listeners who gave up at their first failed call

    def call(self, client: Client, endpoint: str, *args):
        """An API call, counted under its endpoint."""
        return self.timed(endpoint, lambda: client.predict(*args, api_name=endpoint))

    def timed(self, what: str, fn, *args):
        """`fn(*args)` counted under `what` (a failure is an error a user saw)."""
        start = time.perf_counter()
        try:
            out = fn(*args)
        except Exception as exc:
            with self.lock:
                self.errors.append(f"{what}: {str(exc)[:120]}")
            raise CallFailed from exc
        with self.lock:
            self.times[what].append(time.perf_counter() - start)
        return out


def download(url: str, address: str) -> int:
    """GET `url` as a page's fetch does, to the end; returns the bytes read."""
    request = urllib.request.Request(url, headers={"X-Forwarded-For": address})
    with urllib.request.urlopen(request, timeout=120) as response:
        return len(response.read())


_addresses = (f"10.{i // 62500}.{i // 250 % 250}.{i % 250 + 1}" for i in range(10**6))
_address_lock = threading.Lock()


def next_address() -> str:
    with _address_lock:
        return next(_addresses)


def new_client(url: str) -> Client:
    address = next_address()
    # download_files=False: the files are fetched as the page fetches them (`fetch_all`)
    client = Client(url, verbose=False, download_files=False, headers={"X-Forwarded-For": address})
    client.address = address
    return client


def fetch_all(url: str, client: Client, files, tally: Tally, *, player: bool = False) -> None:
    """Every file of a trial or check, fetched at once as the page fetches them: a trial's from the
    player's URLs (`webapp.listening.player.file_url`), a check's from Gradio's file route (the
    page plays them in Gradio's audio players)."""
    paths = [f["path"] if isinstance(f, dict) else f for f in files]
    threads = []
    for path in paths:
        target = f"{url}{file_url(path)}" if player else f"{url}gradio_api/file={path}"
        t = threading.Thread(target=_fetch, args=(target, client.address, tally))
        t.start()
        threads.append(t)
    for t in threads:
        t.join()


def _fetch(url: str, address: str, tally: Tally) -> None:
    try:
        tally.timed("file download", download, url, address)
    except CallFailed:
        pass


def listener_run(url: str, trials: int, tally: Tally, app, start: threading.Barrier | None = None) -> None:
    """One listener: the page open (a client connected), then, when all are (`start`), an id, the
    headphone check (answered right, as headphones hear it: `app.check_answers`), `trials` trials,
    each one's files fetched, rated as soon as allowed as an attentive listener would
    (`attentive`), so that the screening keeps them and the results have something to compute."""
    try:
        client = new_client(url)
    except Exception as exc:
        client = exc
    if start is not None:
        start.wait()
    try:
        if isinstance(client, Exception):
            raise client
        me = tally.call(client, "/listener")
        checks, _ = tally.call(client, "/headphone_check", me)
        fetch_all(url, client, checks, tally)
        tally.call(client, "/headphone_answer", me, app.check_answers(me))
        for _ in range(trials):
            files, trial = tally.call(client, "/trial", me, "mushra")
            started = time.perf_counter()
            fetch_all(url, client, files, tally, player=True)
            # the server takes no answer sooner than the excerpt's length after the trial
            time.sleep(max(0.0, trial["seconds"] + 0.05 - (time.perf_counter() - started)))
            answer = {"scores": attentive(app.conditions(trial["trial_id"]))}
            saved = tally.call(client, "/rate", me, trial["trial_id"], answer)
            with tally.lock:
                tally.rows += int(saved["saved"])
                tally.trials += 1
    except Exception as exc:  # a failed call (counted by `call`), or the client could not connect
        with tally.lock:
            tally.stopped += 1
            if not isinstance(exc, CallFailed):
                tally.errors.append(f"connecting: {str(exc)[:120]}")


def attentive(conditions: dict[str, str]) -> dict[str, float]:
    """{label: score} as an attentive listener gives them: the hidden reference 100, the anchor about
    20, each model about its own level, with some spread."""
    level = {"reference": 100.0, "anchor": 20.0}
    out = {}
    for label, condition in conditions.items():
        mean = level.get(condition, 40.0 + sum(map(ord, condition)) % 30)  # a fixed level per model
        out[label] = float(np.clip(mean + random.gauss(0, 0 if condition == "reference" else 6), 0, 100))
    return out


class PageEvents:
    """The page's own events, as its script calls them (POST gradio_api/run/predict with the event's
    fn_index and a session of its own): found in the app's config by what they are attached to."""

    def __init__(self, url: str):
        with urllib.request.urlopen(f"{url}config", timeout=60) as response:
            config = json.loads(response.read())
        by_id = {c["id"]: c for c in config["components"]}

        def event(kind: str, test) -> tuple[int, int]:
            for dep in config["dependencies"]:
                for target, name in dep["targets"]:
                    if name == kind and test(by_id.get(target, {})):
                        return dep["id"], target
            raise SystemExit(f"the page has no {kind} event as expected")

        self.load = event("load", lambda c: True)
        self.show_results = event("select", lambda c: c.get("props", {}).get("label") == "Results")
        self.tick = event("tick", lambda c: c.get("type") == "timer")
        self.url = url

    def run(self, which: tuple[int, int], session: str, address: str, inputs: int = 1) -> dict:
        fn, target = which
        body = json.dumps(
            {"data": [None] * inputs, "fn_index": fn, "trigger_id": target, "session_hash": session, "event_data": None}
        ).encode()
        request = urllib.request.Request(
            f"{self.url}gradio_api/run/predict",
            data=body,
            headers={"Content-Type": "application/json", "X-Forwarded-For": address},
        )
        with urllib.request.urlopen(request, timeout=120) as response:
            out = json.loads(response.read())
        if "error" in out and out["error"]:
            raise RuntimeError(str(out["error"])[:120])
        return out


def page_run(events: PageEvents, tally: Tally, stop: threading.Event, every: float = 15.0) -> None:
    """One open page on the Results tab: fetched, its load event, the tab selected, then a timer
    tick every `every` s until `stop` (the first tick at a random phase, as pages opened at
    different times have)."""
    address, session = next_address(), os.urandom(6).hex()
    try:
        tally.timed("page", download, events.url, address)
        tally.timed("page config", download, f"{events.url}config", address)
        tally.timed("load event", events.run, events.load, session, address)
        tally.timed("results (select)", events.run, events.show_results, session, address)
        if stop.wait(random.uniform(0, every)):
            return
        while True:
            tally.timed("results (tick)", events.run, events.tick, session, address)
            if stop.wait(every):
                return
    except CallFailed:
        with tally.lock:
            tally.stopped += 1


def browsers_run(url: str, count: int, tally: Tally, stop: threading.Event) -> None:
    """`count` real pages in one Debian Chromium (one browser, a context each, as that many people's
    tabs): each opened, its Results tab clicked, the time until its results are on screen counted;
    then left open (their timers ticking) until `stop`."""
    from playwright.sync_api import sync_playwright

    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
            for _ in range(count):
                page = browser.new_context().new_page()
                tally.timed(
                    "browser: page loaded", lambda page=page: page.goto(url, wait_until="load", timeout=120_000)
                )
                started = time.perf_counter()
                page.get_by_role("tab", name="Results").click(timeout=120_000)
                page.get_by_text("kept after screening").first.wait_for(timeout=120_000)
                with tally.lock:
                    tally.times["browser: results shown"].append(time.perf_counter() - started)
            stop.wait()
            browser.close()
    except Exception as exc:
        with tally.lock:
            tally.errors.append(f"browser: {str(exc)[:120]}")


def run_level(url: str, listeners: int, trials: int, app, pages: int = 0, browsers: int = 0) -> tuple[Tally, float]:
    tally = Tally()
    stop = threading.Event()
    events = PageEvents(url) if pages else None
    watchers = [threading.Thread(target=page_run, args=(events, tally, stop)) for _ in range(pages)]
    if browsers:
        watchers.append(threading.Thread(target=browsers_run, args=(url, browsers, tally, stop)))
    for t in watchers:
        t.start()
    time.sleep(2.0 if watchers else 0.0)  # the pages are open when the class starts
    barrier = threading.Barrier(listeners)
    threads = [threading.Thread(target=listener_run, args=(url, trials, tally, app, barrier)) for _ in range(listeners)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    stop.set()
    for t in watchers:
        t.join()
    return tally, wall


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--listeners", type=int, nargs="+", default=[10, 30, 60], help="listeners at once, per level")
    p.add_argument("--trials", type=int, default=5, help="trials per listener in each level")
    p.add_argument("--pages", type=int, default=60, help="simulated pages open on the Results tab, per level")
    p.add_argument("--browsers", type=int, default=3, help="real Chromium pages (one browser) on the Results tab")
    p.add_argument(
        "--nice",
        type=int,
        default=0,
        help="run the clients and browsers at this lower CPU priority once the app is up (the app keeps its own):"
        " on one machine, as clients on their own machines would not take the app's cores",
    )
    p.add_argument("--total", type=int, default=1000, help="trials in all before the work folder is checked")
    p.add_argument("--trial-seconds", type=float, default=10.0, help="APP_TRIAL_SECONDS (10: the app's default)")
    p.add_argument("--work-max-mb", type=float, default=2000.0, help="APP_WORK_MAX_MB (2000: the app's default)")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        app = App(Path(tmp), args.trial_seconds, args.work_max_mb)
        try:
            started = time.perf_counter()
            app.wait_up()
            print(f"app up in {time.perf_counter() - started:.1f} s (peak RSS so far {app.peak / 2**20:.0f} MiB)")
            if args.nice:
                os.nice(args.nice)  # this thread, and every client thread and browser started from it
                print(f"clients and browsers at nice {args.nice}; the app at 0")
            warm = Tally()
            started = time.perf_counter()
            app.wait_prepared()
            prepared = time.perf_counter() - started
            listener_run(app.url, 3, warm, app)
            if warm.errors:
                raise SystemExit(f"warm-up failed: {warm.errors[:3]}")
            print(
                f"stimuli prepared by the app (every demo clip separated, its excerpts cut) {prepared:.1f} s"
                f" after start; warm-up: {warm.trials} trials in {time.perf_counter() - started - prepared:.1f} s\n"
            )
            done_trials = warm.trials
            expected_rows = warm.rows
            header = f"{'listeners':>9} {'call':>22} {'calls':>6} {'p50 s':>7} {'p95 s':>7} {'max s':>7}"
            for n in args.listeners:
                before = app.work_bytes()
                cpu, clients, machine = app.cpu_seconds(), tree_cpu_seconds(os.getpid(), app.proc.pid), machine_busy()
                tally, wall = run_level(app.url, n, args.trials, app, args.pages, args.browsers)
                cpu_per_min = (app.cpu_seconds() - cpu) / wall * 60
                clients_per_min = (tree_cpu_seconds(os.getpid(), app.proc.pid) - clients) / wall * 60
                busy, total = (b - a for a, b in zip(machine, machine_busy(), strict=True))
                done_trials += tally.trials
                expected_rows += tally.rows
                rows, rated = app.rows()
                print(header)
                for endpoint, times in tally.times.items():
                    print(
                        f"{n:9d} {endpoint:>22} {len(times):6d} {pct(times, 50):7.2f} {pct(times, 95):7.2f}"
                        f" {max(times):7.2f}"
                    )
                first = f" (first: {tally.errors[0]})" if tally.errors else ""
                print(
                    f"  {n} listeners x {args.trials} trials, {args.pages} pages and {args.browsers} browsers open,"
                    f" in {wall:.0f} s: errors seen {len(tally.errors)}{first}; who could not go on {tally.stopped}"
                )
                print(
                    f"  app CPU {cpu_per_min:.1f} s per minute ({cpu_per_min / 60:.2f} of a core); the bench's"
                    f" clients and browsers {clients_per_min:.1f} s per minute; the machine"
                    f" {100 * busy / total:.0f} % busy ({os.cpu_count()} cores)"
                )
                print(
                    f"  rows: expected {expected_rows}, found {rows} ({rated} trials rated)"
                    f" {'exact' if rows == expected_rows else 'MISMATCH'}"
                )
                print(
                    f"  app peak RSS {app.peak / 2**20:.0f} MiB; work folder on disk {app.work_bytes() / 1e6:.1f} MB"
                    f" (+{(app.work_bytes() - before) / 1e6:.1f} MB)\n"
                )
            # the rest of the way to --total trials, 60 listeners at a time (or the largest level)
            errors = 0
            while done_trials < args.total:
                n = max(args.listeners)
                per = max(1, min(args.trials, -(-(args.total - done_trials) // n)))
                tally, _ = run_level(app.url, n, per, app)
                done_trials += tally.trials
                expected_rows += tally.rows
                errors += len(tally.errors)
            rows, _ = app.rows()
            used = app.work_bytes()
            print(
                f"after {done_trials} trials: work folder {used / 1e6:.1f} MB on disk, cap {args.work_max_mb:.0f} MB"
                f" ({'under' if used <= args.work_max_mb * 1e6 else 'OVER'}); rows expected {expected_rows},"
                f" found {rows}; errors in the fill {errors}; app peak RSS {app.peak / 2**20:.0f} MiB"
            )
            summary = {"trials": done_trials, "work_bytes": used, "rows": rows, "expected_rows": expected_rows}
            print(json.dumps(summary))
        finally:
            app.close()


if __name__ == "__main__":
    main()
