"""A new page session of the app: time and memory, lean (`webapp.sessions`) against Gradio's own.

    ./run.sh bench page_sessions [--sessions 200]

Builds the app's page (`webapp.ui.build_ui`: the shipped DPRNN, the demo clips; no stimuli
prepared), then makes `--sessions` sessions each way: Gradio's `SessionState` constructor (the
config of every component, made up front) and the lean one the app installs (each config made
when an event first asks for it). Prints the time per session (best of 3 rounds), the memory a
session holds (tracemalloc, allocated and still held), and each as a ratio lean / Gradio's. A
lean session grows by the configs its events touch (an input's or output's, once each).
"""

from __future__ import annotations

import argparse
import tempfile
import time
import tracemalloc
from pathlib import Path

from gradio.state_holder import SessionState

import common  # noqa: F401  (puts the project on sys.path)
from webapp import sessions
from webapp.config import AppConfig
from webapp.lab import LabApp
from webapp.ui import build_ui


def gradios_own(blocks) -> SessionState:
    state = SessionState.__new__(SessionState)
    sessions.GRADIO_SESSION_INIT(state, blocks)
    return state


def per_session(make, n: int) -> tuple[float, float]:
    """(seconds, bytes held) per session of `make()`."""
    best = float("inf")
    for _ in range(3):
        started = time.perf_counter()
        for _ in range(n):
            make()
        best = min(best, (time.perf_counter() - started) / n)
    tracemalloc.start()
    before = tracemalloc.take_snapshot()
    held = [make() for _ in range(n)]
    after = tracemalloc.take_snapshot()
    tracemalloc.stop()
    grown = sum(d.size_diff for d in after.compare_to(before, "filename"))
    del held
    return best, grown / n


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sessions", type=int, default=200, help="sessions made each way, per round")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        lab = LabApp(AppConfig(data_dir=Path(tmp) / "data", models=("dprnn",), prepare_stimuli=False))
        demo = build_ui(lab)  # installs the lean constructor
        if SessionState.__init__ is not sessions.lean_init:
            raise SystemExit("this Gradio's session constructor is not the one webapp.sessions knows")
        components = len(gradios_own(demo).config_values)
        gradio_s, gradio_b = per_session(lambda: gradios_own(demo), args.sessions)
        lean_s, lean_b = per_session(lambda: SessionState(demo), args.sessions)
        print(f"the app's page: {components} components; {args.sessions} sessions each way")
        print(f"{'':10} {'ms a session':>13} {'kB held':>9}")
        print(f"{'gradio':10} {gradio_s * 1e3:13.3f} {gradio_b / 1e3:9.1f}")
        print(f"{'lean':10} {lean_s * 1e3:13.3f} {lean_b / 1e3:9.1f}")
        print(f"lean / gradio: time {lean_s / gradio_s:.4f}, memory {lean_b / gradio_b:.3f}")


if __name__ == "__main__":
    main()
