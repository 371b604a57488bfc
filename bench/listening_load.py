"""A listening campaign under load: N listeners at once, and M pages open, against the real app.

    ./run.sh bench listening_load [--listeners 10 30 60] [--pages 60] [--browsers 3] [--trials 5]
                                  [--total 1000] [--timeline]

Starts `python app.py` (its defaults: the shipped DPRNN, umxhq where its weights are cached,
the demo clips) in a fresh data folder and work folder, behind `APP_PROXY_HOPS=1`.

Listeners: each is a browser-like HTTP client of its own (its own forwarded address, up to six
connections, as a browser has) that opens the page and does what a listener's page does, through
the API's named endpoints on Gradio's queue (`gradio_api/call/<name>`): a listener id, the
headphone check (its six files downloaded), its answers, then `--trials` blind trials, each
trial's files all downloaded over HTTP (the page's player fetches every sample: ~7 MB per 10-s
MUSHRA trial), answered once the server allows it (one excerpt length after it was issued). They
start at once, as a class told to start does.

Pages: `--pages` open pages that do what the page's script does, through the same HTTP calls:
the page opened as one recorded in Chromium opens (`record_opening`: the page, its front-end
files, the events its script runs), the Results tab selected (its select event), then its 15-s
timer's ticks for as long as the level lasts. `--browsers` real Chromium pages
(Debian's chromium, headless) beside them open the app and the Results tab, and report how long
the results took to appear there. All pages open at once (their rows: page ... results (select),
and the time until the last shows results); once all are open, the listeners start. It prints when
the listeners' pages start opening and when the class starts (to point a profiler at that window).
One more Results page runs in a process of its own from then on (`probe_run`, a tick every 0.5 s):
its row, results (own process), is what an independent client saw, free of the lag of the
bench's own event loop, which drives everything else. Every file (a page's, a check's, a
trial's) is fetched and timed by curl, as a browser's network stack in C fetches it.

Warm-up first: the app prepares its stimuli in the background at start (`APP_PREPARE_STIMULI`),
then one listener takes 3 trials. Then, per level: p50/p95 per call, the errors a listener or
page saw (any refused or failed call: nothing is retried), the app's CPU (seconds of CPU per
minute of wall time, its process tree, from /proc), the bench's own CPU and the machine's, peak
resident memory, the work folder's size on disk, and the rows expected against the rows in the
database. Last, listeners keep rating until `--total` trials in all, and the work folder's size
is checked against its cap.

Targets on a 2-core machine: 60 listeners at once with 60 pages open: 0 errors, rows exact,
/trial p95 <= 2 s, results (as a page saw them) p95 <= 1 s; the work folder under its cap after
1,000 trials.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing
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
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np

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
        self.lock = threading.Lock()  # the browsers' thread writes here too
        self.times: dict[str, list[float]] = defaultdict(list)
        self.ends: dict[str, list[float]] = defaultdict(list)  # when each call ended (perf_counter)
        self.errors: list[str] = []
        self.rows = 0
        self.trials = 0
        self.stopped = 0  # listeners who gave up at their first failed call
        self.opened = time.perf_counter()  # when the level's first page opened
        self.pages_open = 0  # simulated pages that have shown their results (or failed)
        self.listeners_open = 0  # listeners whose page is open (or failed to open)
        self.pages_opened_in = 0.0  # s from the first page opening to the last showing results

    def took(self, what: str, seconds: float, ended: float | None = None) -> None:
        with self.lock:
            self.times[what].append(seconds)
            self.ends[what].append(time.perf_counter() if ended is None else ended)

    def timeline(self, calls: tuple[str, ...], every: float = 10.0) -> str:
        """p95 of `calls` per `every` s of the level since it opened (by when each ended): where
        the slow ones are."""
        start = self.opened
        lines = [f"  {'from s':>6} " + " ".join(f"{c:>24}" for c in calls)]
        last = max((max(v) for v in self.ends.values() if v), default=start)
        for t0 in np.arange(start, last, every):
            cells = []
            for c in calls:
                inside = [d for d, e in zip(self.times[c], self.ends[c], strict=True) if t0 <= e < t0 + every]
                cells.append(f"{len(inside):4d} calls p95 {pct(inside, 95):6.2f} s" if inside else "-")
            lines.append(f"  {t0 - start:6.0f} " + " ".join(f"{cell:>24}" for cell in cells))
        return "\n".join(lines)

    def failed(self, what: str, exc: BaseException) -> None:
        with self.lock:
            self.errors.append(f"{what}: {str(exc)[:120] or type(exc).__name__}")

    async def timed(self, what: str, call):
        """`await call` counted under `what` (a failure is an error a user saw)."""
        start = time.perf_counter()
        try:
            out = await call
        except Exception as exc:
            self.failed(what, exc)
            raise CallFailed from exc
        self.took(what, time.perf_counter() - start)
        return out


_addresses = (f"10.{i // 62500}.{i // 250 % 250}.{i % 250 + 1}" for i in range(10**6))


def browser_like(url: str) -> httpx.AsyncClient:
    """One person's browser: its own forwarded address (`APP_PROXY_HOPS=1`) and, as a browser
    has, up to six connections to the app, kept alive."""
    return httpx.AsyncClient(
        base_url=url,
        headers={"X-Forwarded-For": next(_addresses)},
        limits=httpx.Limits(max_connections=6, max_keepalive_connections=6),
        timeout=httpx.Timeout(120.0),
    )


async def call(http: httpx.AsyncClient, session: str, endpoint: str, *args):
    """A named API endpoint through Gradio's queue, as any HTTP client calls it: POST
    `gradio_api/call/<name>` for an event id, then read that event's server-sent events until its
    result (the same queue and handler as gradio_client's and the page's own calls). `session`:
    one per listener, as a page (and gradio_client) has one for all its calls."""
    joined = await http.post(f"gradio_api/call{endpoint}", json={"data": list(args), "session_hash": session})
    joined.raise_for_status()
    event = joined.json()["event_id"]
    kind = None
    async with http.stream("GET", f"gradio_api/call{endpoint}/{event}") as stream:
        stream.raise_for_status()
        async for line in stream.aiter_lines():
            if line.startswith("event:"):
                kind = line[6:].strip()
            elif line.startswith("data:") and kind in ("complete", "error"):
                data = json.loads(line[5:])
                if kind == "error":
                    raise RuntimeError(str(data))
                return data[0] if len(data) == 1 else data
    raise RuntimeError(f"{endpoint}: the event stream ended without a result")


async def download(http: httpx.AsyncClient, url: str) -> int:
    """GET `url` as a page's fetch does, to the end; returns the bytes read."""
    response = await http.get(url)
    response.raise_for_status()
    return len(response.content)


async def fetch_all(http: httpx.AsyncClient, files, tally: Tally, *, player: bool = False) -> None:
    """Every file of a trial or check, fetched at once as the page fetches them: a trial's from the
    player's URLs (`webapp.listening.player.file_url`), a check's from Gradio's file route (the
    page plays them in Gradio's audio players), each download timed by curl (`curl_get`); a
    failed one is counted, not fatal."""
    paths = [f["path"] if isinstance(f, dict) else f for f in files]
    targets = [file_url(p) if player else f"gradio_api/file={p}" for p in paths]
    try:
        fetched = await curl_get(http, targets)
    except RuntimeError as exc:
        tally.failed("file download", exc)
        return
    for code, seconds in fetched:
        if code == 200:
            tally.took("file download", seconds)
        else:
            tally.failed("file download", RuntimeError(f"HTTP {code}"))


async def listener_run(
    url: str, trials: int, tally: Tally, app, events: PageEvents | None = None, start: asyncio.Event | None = None
) -> None:
    """One listener: the page opened as a new visitor's browser opens it (`PageEvents.open`), then,
    when the class starts (`start`), an id, the headphone check (answered right, as headphones hear
    it: `app.check_answers`), `trials` trials, each one's files fetched, rated as soon as allowed
    as an attentive listener would (`attentive`), so that the screening keeps them and the results
    have something to compute."""
    session = os.urandom(6).hex()
    async with browser_like(url) as http:
        try:
            if events is not None:
                await events.open(http, session, tally)
        except CallFailed:
            tally.stopped += 1
            return
        finally:
            tally.listeners_open += 1
        if start is not None:
            await start.wait()
        try:
            me = await tally.timed("/listener", call(http, session, "/listener"))
            checks, _ = await tally.timed("/headphone_check", call(http, session, "/headphone_check", me))
            await fetch_all(http, checks, tally)
            answers = await asyncio.to_thread(app.check_answers, me)
            await tally.timed("/headphone_answer", call(http, session, "/headphone_answer", me, answers))
            for _ in range(trials):
                files, trial = await tally.timed("/trial", call(http, session, "/trial", me, "mushra"))
                started = time.perf_counter()
                await fetch_all(http, files, tally, player=True)
                # the server takes no answer sooner than the excerpt's length after the trial
                await asyncio.sleep(max(0.0, trial["seconds"] + 0.05 - (time.perf_counter() - started)))
                answer = {"scores": attentive(await asyncio.to_thread(app.conditions, trial["trial_id"]))}
                saved = await tally.timed("/rate", call(http, session, "/rate", me, trial["trial_id"], answer))
                tally.rows += int(saved["saved"])
                tally.trials += 1
        except CallFailed:
            tally.stopped += 1


def attentive(conditions: dict[str, str]) -> dict[str, float]:
    """{label: score} as an attentive listener gives them: the hidden reference 100, the anchor about
    20, each model about its own level, with some spread."""
    level = {"reference": 100.0, "anchor": 20.0}
    out = {}
    for label, condition in conditions.items():
        mean = level.get(condition, 40.0 + sum(map(ord, condition)) % 30)  # a fixed level per model
        out[label] = float(np.clip(mean + random.gauss(0, 0 if condition == "reference" else 6), 0, 100))
    return out


BROWSER_ENCODINGS = "gzip, deflate, br, zstd"  # what Chromium accepts


@dataclass
class Opening:
    """What a page does as it opens, recorded from a real one: the files it fetches from the app
    (paths; the page itself and API calls aside) and the events its script runs (their bodies)."""

    files: list[str]
    events: list[dict]


def record_opening(url: str) -> Opening:
    """One page opened in Debian's Chromium, its requests to the app recorded."""
    from playwright.sync_api import sync_playwright

    files, events = [], []

    def seen(request) -> None:
        if not request.url.startswith(url):
            return
        path = request.url[len(url) :]
        if request.method == "GET" and path and not path.startswith("gradio_api/"):
            files.append(path)
        elif request.method == "POST" and path == "gradio_api/run/predict":
            body = json.loads(request.post_data)
            events.append({k: v for k, v in body.items() if k != "session_hash"})

    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        page = browser.new_page()
        page.on("request", seen)
        page.goto(url, wait_until="load", timeout=120_000)
        page.wait_for_timeout(2000)  # the events the page's script runs once it is up
        browser.close()
    if not files or not events:
        raise SystemExit(f"a page opened in Chromium fetched {len(files)} files and ran {len(events)} events")
    return Opening(files, events)


async def curl_get(http: httpx.AsyncClient, paths: list[str]) -> list[tuple[int, float]]:
    """GET every path as a browser's network stack does: six connections kept alive, compressed
    as Chromium accepts, each read to its end; returns (status, seconds) per path, in order. By
    curl (`--parallel`), in C as a browser's is: through a Python client in the bench's one event
    loop, 120 pages x 108 files, and a class's first checks and trials (750 MB in ~10 s), made the
    bench's own loop what the calls it times waited on (an independent client saw results p95
    0.11 s where the bench's pages saw 1.0 s)."""
    config = "".join(f'url = "{http.base_url}{path}"\noutput = "/dev/null"\n' for path in paths)
    proc = await asyncio.create_subprocess_exec(
        *("curl", "--silent", "--show-error", "--parallel", "--parallel-max", "6"),
        *("-H", f"X-Forwarded-For: {http.headers['X-Forwarded-For']}", "-H", f"Accept-Encoding: {BROWSER_ENCODINGS}"),
        *("--write-out", "%{url} %{http_code} %{time_total}\\n", "--config", "-"),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await proc.communicate(config.encode())
    done = {}
    for line in out.decode().splitlines():
        url, code, seconds = line.rsplit(" ", 2)
        done[url] = (int(code), float(seconds))
    if len(done) != len(set(paths)):
        raise RuntimeError(f"curl exit {proc.returncode}: {err.decode(errors='replace').strip()[:120]}")
    return [done[f"{http.base_url}{path}"] for path in paths]


async def fetch_files(http: httpx.AsyncClient, paths: list[str]) -> None:
    """A page's files (`curl_get`), every one answered 200."""
    failed = [code for code, _ in await curl_get(http, paths) if code != 200]
    if failed:
        raise RuntimeError(f"{len(failed)} of {len(paths)} files not served (HTTP {failed[0]})")


class PageEvents:
    """The page's own events, as its script calls them (POST gradio_api/run/predict with the event's
    fn_index and a session of its own): found in the app's config by what they are attached to;
    and what a page fetches and runs as it opens (`Opening`)."""

    def __init__(self, url: str, opening: Opening):
        config = httpx.get(f"{url}config", timeout=60).json()
        by_id = {c["id"]: c for c in config["components"]}

        def event(kind: str, test) -> tuple[int, int]:
            for dep in config["dependencies"]:
                for target, name in dep["targets"]:
                    if name == kind and test(by_id.get(target, {})):
                        return dep["id"], target
            raise SystemExit(f"the page has no {kind} event as expected")

        self.show_results = event("select", lambda c: c.get("props", {}).get("label") == "Results")
        self.tick = event("tick", lambda c: c.get("type") == "timer")
        self.opening = opening

    async def open(self, http: httpx.AsyncClient, session: str, tally: Tally) -> None:
        """The page fetched, then its files (as a new visitor's browser fetches them, six at a time,
        compressed as a browser accepts them), then the events its script runs as it opens."""
        await tally.timed("page", download(http, ""))
        await tally.timed("page's files", fetch_files(http, self.opening.files))
        for body in self.opening.events:
            await tally.timed("opening events", self.replay(http, body, session))

    @staticmethod
    async def replay(http: httpx.AsyncClient, body: dict, session: str) -> dict:
        response = await http.post("gradio_api/run/predict", json={**body, "session_hash": session})
        response.raise_for_status()
        out = response.json()
        if out.get("error"):
            raise RuntimeError(str(out["error"])[:120])
        return out

    @staticmethod
    async def run(http: httpx.AsyncClient, which: tuple[int, int], session: str, inputs: int = 1) -> dict:
        fn, target = which
        body = {"data": [None] * inputs, "fn_index": fn, "trigger_id": target, "event_data": None}
        return await PageEvents.replay(http, body, session)


async def page_run(url: str, events: PageEvents, tally: Tally, stop: asyncio.Event, every: float = 15.0) -> None:
    """One open page on the Results tab: opened (`PageEvents.open`), the tab selected, then a timer
    tick every `every` s until `stop` (the first tick at a random phase, as pages opened at
    different times have)."""
    session = os.urandom(6).hex()

    async def stopped(after: float) -> bool:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), after)
        return stop.is_set()

    async with browser_like(url) as http:
        try:
            await events.open(http, session, tally)
            await tally.timed("results (select)", events.run(http, events.show_results, session))
        except CallFailed:
            tally.stopped += 1
            return
        finally:
            tally.pages_open += 1  # showing results, or as open as it will get
        try:
            if await stopped(random.uniform(0, every)):
                return
            while True:
                await tally.timed("results (tick)", events.run(http, events.tick, session))
                if await stopped(every):
                    return
        except CallFailed:
            tally.stopped += 1


PROBE = "results (own process)"


def probe_run(
    url: str, select: tuple[int, int], tick: tuple[int, int], ready, go, stop, out, every: float = 0.5
) -> None:
    """A Results page's refresh as an independent client sees it: a process of its own (none of the
    bench's event loop, which drives 120 pages and their downloads), its own session; `ready` once
    its imports are done; once `go`, the tab selected, then a tick every `every` s until `stop` or
    a failed call; sends ([(ended, seconds)] (wall clock), the failure or None) to `out`. What the
    bench's own pages see includes their loop's lag; this does not."""
    session, times, failure = os.urandom(6).hex(), [], None
    ready.set()
    go.wait()
    with httpx.Client(base_url=url, headers={"X-Forwarded-For": "10.250.250.250"}, timeout=120) as http:

        def run(which: tuple[int, int]) -> float:
            fn, target = which
            body = {"data": [None], "fn_index": fn, "trigger_id": target, "event_data": None, "session_hash": session}
            started = time.perf_counter()
            http.post("gradio_api/run/predict", json=body).raise_for_status()
            return time.perf_counter() - started

        try:
            run(select)
            while not stop.wait(every):
                seconds = run(tick)
                times.append((time.time(), seconds))
        except httpx.HTTPError as exc:
            failure = str(exc)[:120] or type(exc).__name__
    out.send((times, failure))


class Probe:
    """`probe_run` in a process of its own (spawned: none of this process's threads or loop),
    ready once its imports are done; ticking once `go` is set; `finish` stops it and counts its
    times (under `PROBE`) and its failure in a tally."""

    def __init__(self, url: str, events: PageEvents):
        spawn = multiprocessing.get_context("spawn")
        self.ready, self.go, self.stop = spawn.Event(), spawn.Event(), spawn.Event()
        self.out, child_end = spawn.Pipe(duplex=False)
        which = (events.show_results, events.tick)
        args = (url, *which, self.ready, self.go, self.stop, child_end)
        self.process = spawn.Process(target=probe_run, args=args, daemon=True)
        self.process.start()
        child_end.close()  # the child's now: a child that dies ends `finish`'s wait
        self.ready.wait(120)

    def finish(self, tally: Tally) -> None:
        self.stop.set()
        offset = time.time() - time.perf_counter()
        try:
            times, failure = self.out.recv()
        except EOFError:
            times, failure = [], "the process ended without a word"
        for ended, seconds in times:
            tally.took(PROBE, seconds, ended - offset)
        if failure:
            tally.failed(PROBE, RuntimeError(failure))
        self.process.join()


def browsers_run(url: str, count: int, tally: Tally, stop: threading.Event, ready: threading.Event) -> None:
    """`count` real pages in one Debian Chromium (one browser, a context each, as that many people's
    tabs): each opened, its Results tab clicked, the time until its results are on screen counted
    (`ready` set once all are); then left open (their timers ticking) until `stop`."""
    from playwright.sync_api import sync_playwright

    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
            for _ in range(count):
                page = browser.new_context().new_page()
                started = time.perf_counter()
                page.goto(url, wait_until="load", timeout=120_000)
                tally.took("browser: page loaded", time.perf_counter() - started)
                started = time.perf_counter()
                page.get_by_role("tab", name="Results").click(timeout=120_000)
                page.get_by_text("kept after screening").first.wait_for(timeout=120_000)
                tally.took("browser: results shown", time.perf_counter() - started)
            ready.set()
            stop.wait()
            browser.close()
    except Exception as exc:
        tally.failed("browser", exc)
    ready.set()


def run_level(
    url: str, listeners: int, trials: int, app, opening: Opening | None, pages: int = 0, browsers: int = 0
) -> tuple[Tally, float]:
    """One level: `pages` simulated pages and `browsers` real ones opened at once on the Results
    tab; once all show their results, `listeners` listeners open the page at once; once all have,
    they start at once (the class). Returns the tally and the class's wall time. The clients run
    in one event loop (one thread): a thread per client under one interpreter lock would add the
    bench's own waits to every time it measures. The browsers run in a thread of their own, one
    more page (`Probe`) in a process of its own, ticking from the listeners' opening on."""
    events = PageEvents(url, opening) if opening else None
    probe = Probe(url, events) if events else None  # its imports done before the level opens
    tally = Tally()  # the level opens now
    browser_stop, browsers_ready = threading.Event(), threading.Event()
    watcher = None
    if browsers:
        watcher = threading.Thread(target=browsers_run, args=(url, browsers, tally, browser_stop, browsers_ready))
        watcher.start()
    else:
        browsers_ready.set()

    async def until(done, limit: float = 600.0) -> None:
        deadline = time.monotonic() + limit
        while not done() and time.monotonic() < deadline:
            await asyncio.sleep(0.1)

    async def level() -> float:
        stop, start = asyncio.Event(), asyncio.Event()
        watching = [asyncio.create_task(page_run(url, events, tally, stop)) for _ in range(pages)]
        # "60 listeners at once with 60 pages open": the pages are open (how long they took to
        # open, all at once, is in their rows: page ... results (select)), then the listeners'
        # pages open, then the class starts
        await until(lambda: tally.pages_open >= pages and browsers_ready.is_set())
        tally.pages_opened_in = time.perf_counter() - tally.opened
        print(f"  {pages + browsers} pages open; {listeners} listeners' pages opening", flush=True)
        if probe:
            probe.go.set()
        starting = [asyncio.create_task(listener_run(url, trials, tally, app, events, start)) for _ in range(listeners)]
        await until(lambda: tally.listeners_open >= listeners)
        started = time.perf_counter()
        print(f"  the class starts ({time.perf_counter() - tally.opened:.0f} s into the level)", flush=True)
        start.set()
        await asyncio.gather(*starting)
        wall = time.perf_counter() - started
        stop.set()
        await asyncio.gather(*watching)
        if probe:
            await asyncio.to_thread(probe.finish, tally)
        return wall

    wall = asyncio.run(level())
    browser_stop.set()
    if watcher:
        watcher.join()
    return tally, wall


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def measure_level(app: App, n: int, opening: Opening, args, expected_before: int) -> Tally:
    """One level run and reported: the calls' p50/p95, when the slow ones were (`--timeline`),
    errors, CPU (the app's, the bench's, the machine's), rows, memory and disk."""
    before = app.work_bytes()
    cpu, clients, machine = app.cpu_seconds(), tree_cpu_seconds(os.getpid(), app.proc.pid), machine_busy()
    level_started = time.perf_counter()
    tally, wall = run_level(app.url, n, args.trials, app, opening, args.pages, args.browsers)
    level_wall = time.perf_counter() - level_started  # the pages' opening and the class
    cpu_per_min = (app.cpu_seconds() - cpu) / level_wall * 60
    clients_per_min = (tree_cpu_seconds(os.getpid(), app.proc.pid) - clients) / level_wall * 60
    busy, total = (b - a for a, b in zip(machine, machine_busy(), strict=True))
    expected_rows = expected_before + tally.rows
    rows, rated = app.rows()
    print(f"{'listeners':>9} {'call':>22} {'calls':>6} {'p50 s':>7} {'p95 s':>7} {'max s':>7}")
    for endpoint, times in tally.times.items():
        print(f"{n:9d} {endpoint:>22} {len(times):6d} {pct(times, 50):7.2f} {pct(times, 95):7.2f} {max(times):7.2f}")
    if args.timeline:
        print(tally.timeline(("/trial", "results (tick)", PROBE, "file download")))
    first = f" (first: {tally.errors[0]})" if tally.errors else ""
    print(
        f"  {args.pages} pages and {args.browsers} browsers opened at once, all showing results in"
        f" {tally.pages_opened_in:.1f} s; then {n} listeners x {args.trials} trials in {wall:.0f} s:"
        f" errors seen {len(tally.errors)}{first}; who could not go on {tally.stopped}"
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
    return tally


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
    p.add_argument(
        "--timeline", action="store_true", help="also the p95 of trials, results and downloads per 10 s of each level"
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
            asyncio.run(listener_run(app.url, 3, warm, app))
            if warm.errors:
                raise SystemExit(f"warm-up failed: {warm.errors[:3]}")
            opening = record_opening(app.url)
            print(
                f"stimuli prepared by the app (every demo clip separated, its excerpts cut) {prepared:.1f} s"
                f" after start; warm-up: {warm.trials} trials in {time.perf_counter() - started - prepared:.1f} s;"
                f" a page opened in Chromium fetches {len(opening.files)} files and runs"
                f" {len(opening.events)} events as it opens\n"
            )
            done_trials = warm.trials
            expected_rows = warm.rows
            for n in args.listeners:
                tally = measure_level(app, n, opening, args, expected_rows)
                done_trials += tally.trials
                expected_rows += tally.rows
            # the rest of the way to --total trials, 60 listeners at a time (or the largest level)
            errors = 0
            while done_trials < args.total:
                n = max(args.listeners)
                per = max(1, min(args.trials, -(-(args.total - done_trials) // n)))
                tally, _ = run_level(app.url, n, per, app, opening)
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
