"""A listening campaign under load: N listeners at once against the real app.

    ./run.sh bench listening_load [--listeners 10 30 60] [--trials 5] [--total 1000]

Starts `python app.py` (its defaults: the shipped DPRNN, umxhq where its weights are cached,
the demo clips) in a fresh data folder and work folder, behind `APP_PROXY_HOPS=1`. Each
simulated listener is a gradio_client of its own with its own forwarded address, and goes
through what a listener does: a listener id, the headphone check and its answers, then
`--trials` blind trials, each answered once the server allows it (one excerpt length after it
was issued). The listeners of a level have the page open (their clients connected), then all
start at once, as a class told to start does.

Warm-up first: the app prepares its stimuli in the background at start (every demo clip
separated, its MUSHRA excerpts cut, matched and scored: `APP_PREPARE_STIMULI`), then one
listener takes 3 trials. Then, per level: p50/p95 per endpoint, the errors a
listener saw (any refused or failed call: nothing is retried), the app's peak resident memory
(its process tree), the work folder's real size on disk (inodes once) and the rows expected
against the rows in the database. Last, listeners keep rating until `--total` trials in all, and
the work folder's size is checked against its cap (`APP_WORK_MAX_MB`).

Targets on a 2-core machine: 60 listeners, 0 errors, /trial p95 <= 2 s after warm-up, rows
exact, the work folder under its cap after 1,000 trials.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
from gradio_client import Client

import common  # noqa: F401  (puts the project on sys.path)
from procmem import tree_rss
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

    def work_bytes(self) -> int:
        return disk_bytes(self.tmp / "separation-lab")

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
        start = time.perf_counter()
        try:
            out = client.predict(*args, api_name=endpoint)
        except Exception as exc:
            with self.lock:
                self.errors.append(f"{endpoint}: {str(exc)[:120]}")
            raise CallFailed from exc
        with self.lock:
            self.times[endpoint].append(time.perf_counter() - start)
        return out


_addresses = (f"10.{i // 62500}.{i // 250 % 250}.{i % 250 + 1}" for i in range(10**6))
_address_lock = threading.Lock()


def new_client(url: str) -> Client:
    with _address_lock:
        address = next(_addresses)
    # download_files=False: a listener's browser fetches the audio; here only the JSON matters
    return Client(url, verbose=False, download_files=False, headers={"X-Forwarded-For": address})


def listener_run(url: str, trials: int, tally: Tally, start: threading.Barrier | None = None) -> None:
    """One listener: the page open (a client connected), then, when all are (`start`), an id, the
    headphone check, `trials` trials rated as soon as allowed."""
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
        tally.call(client, "/headphone_check", me)
        tally.call(client, "/headphone_answer", me, [1, 2, 3, 1, 2, 3])
        for _ in range(trials):
            _, trial = tally.call(client, "/trial", me, "mushra")
            time.sleep(trial["seconds"] + 0.05)  # the server takes no answer sooner
            answer = {"scores": {label: 50 for label in trial["labels"]}}
            saved = tally.call(client, "/rate", me, trial["trial_id"], answer)
            with tally.lock:
                tally.rows += int(saved["saved"])
                tally.trials += 1
    except Exception as exc:  # a failed call (counted by `call`), or the client could not connect
        with tally.lock:
            tally.stopped += 1
            if not isinstance(exc, CallFailed):
                tally.errors.append(f"connecting: {str(exc)[:120]}")


def run_level(url: str, listeners: int, trials: int) -> tuple[Tally, float]:
    tally = Tally()
    barrier = threading.Barrier(listeners)
    threads = [threading.Thread(target=listener_run, args=(url, trials, tally, barrier)) for _ in range(listeners)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return tally, time.perf_counter() - start


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--listeners", type=int, nargs="+", default=[10, 30, 60], help="listeners at once, per level")
    p.add_argument("--trials", type=int, default=5, help="trials per listener in each level")
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
            warm = Tally()
            started = time.perf_counter()
            app.wait_prepared()
            prepared = time.perf_counter() - started
            listener_run(app.url, 3, warm)
            if warm.errors:
                raise SystemExit(f"warm-up failed: {warm.errors[:3]}")
            print(
                f"stimuli prepared by the app (every demo clip separated, its excerpts cut) {prepared:.1f} s"
                f" after start; warm-up: {warm.trials} trials in {time.perf_counter() - started - prepared:.1f} s\n"
            )
            done_trials = warm.trials
            expected_rows = warm.rows
            header = f"{'listeners':>9} {'endpoint':>18} {'calls':>6} {'p50 s':>7} {'p95 s':>7} {'max s':>7}"
            for n in args.listeners:
                before = app.work_bytes()
                tally, wall = run_level(app.url, n, args.trials)
                done_trials += tally.trials
                expected_rows += tally.rows
                rows, rated = app.rows()
                print(header)
                for endpoint, times in tally.times.items():
                    print(
                        f"{n:9d} {endpoint:>18} {len(times):6d} {pct(times, 50):7.2f} {pct(times, 95):7.2f}"
                        f" {max(times):7.2f}"
                    )
                first = f" (first: {tally.errors[0]})" if tally.errors else ""
                print(f"  {n} listeners x {args.trials} trials in {wall:.0f} s: errors seen by a listener ", end="")
                print(f"{len(tally.errors)}{first}; listeners who could not go on {tally.stopped}")
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
                tally, _ = run_level(app.url, n, per)
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
