"""App latency: from submitting a 30-s clip to its separations, spectrograms and metrics shown.

    ./run.sh bench app_latency [--seconds 30] [--models dprnn,umxhq] [--repeats 5]

Launches the real app (`app.py`) on localhost with DPRNN (shipped checkpoint) and umxhq's
architecture (random weights unless its upstream weights are in the torch hub cache: the
cost does not depend on the weights), or only the models named, then calls the
`/separate_clip` endpoint with gradio_client, as the UI's button does, `--repeats` times after
one warm-up call. Prints the request of median app time (end to end, the server-side split by
stage) and the size in bytes of each Plotly figure as sent (targets on this CPU: under 10 s in
all with both models; with `--models dprnn`, the page a Space without umxhq's weights shows,
<= 1.5 s of app time). The client runs in a process of its own and the models load on threads of
their own, as in the app.
"""

from __future__ import annotations

import argparse
import multiprocessing
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from gradio_client import Client

import common  # noqa: F401  (puts the project on sys.path)
from separation import Separator
from separation.errors import SeparationError
from separation.models import build_model
from webapp import lab as lab_module
from webapp import ui as ui_module
from webapp.config import AppConfig
from webapp.figures import figure_bytes
from webapp.service import ModelPool


def load(name: str) -> Separator:
    try:
        return Separator.load(name, device="cpu")
    except SeparationError:  # umxhq offline: its architecture with random weights
        return Separator(build_model("umx"), device="cpu")


def requests(url: str, clip: str, seconds: float, repeats: int) -> tuple[list, dict]:
    """`repeats` requests after a warm-up: (end to end s, the app's timings) each, and the last answer's info."""
    client = Client(url, verbose=False)
    client.predict(clip, 0, 5, api_name="/separate_clip")  # warm-up
    runs = []
    for _ in range(repeats):
        start = time.perf_counter()
        _, info = client.predict(clip, 0, seconds, api_name="/separate_clip")
        runs.append((time.perf_counter() - start, info["timings"]))
    return runs, info


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=30.0)
    p.add_argument("--models", default="dprnn,umxhq", help="the app's models (--models dprnn: the one-model page)")
    p.add_argument("--repeats", type=int, default=5, help="timed requests (after one warm-up)")
    args = p.parse_args()
    models = args.models.split(",")
    with tempfile.TemporaryDirectory() as tmp:
        # loaded on threads of their own, as the app loads them: this thread runs no torch work
        pool = ModelPool(models, loader=load, background=True)
        pool.wait()
        lab = lab_module.LabApp(AppConfig(data_dir=Path(tmp)), pool=pool)
        demo = ui_module.build_ui(lab)
        demo.queue()
        _, url, _ = demo.launch(prevent_thread_lock=True, quiet=True, allowed_paths=[str(lab.work_root)])
        clip = next(iter(lab.clips))
        # The client in a process of its own, as a browser is: in this one, its polling and
        # decoding would take the interpreter's lock from the handler it times.
        with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as client:
            runs, info = client.submit(requests, url, clip, args.seconds, args.repeats).result()
        # the figures of that same request, as the UI sends them
        mix, refs, label = lab_module.clip_excerpt(lab, clip, 0, args.seconds)
        sep = lab.separate(mix, refs, label)
        demo.close()
    runs.sort(key=lambda run: run[1]["total"])
    total, timings = runs[len(runs) // 2]  # the request of median app time
    print(
        f"{args.seconds:.0f}-s clip, models {' + '.join(models)}, CPU ({info['seconds']:.0f} s of audio), "
        f"the median of {args.repeats} requests by app time (best {runs[0][1]['total']:.2f} s):"
    )
    print(f"  end to end (gradio_client call, incl. file transfer): {total:6.2f} s   (target < 10 s)")
    for stage, seconds in timings.items():
        print(f"    {stage:22s} {seconds:6.2f} s")
    start = time.perf_counter()
    sizes = {name: figure_bytes(fig) for name, fig in sep.figures.items()}
    encode = time.perf_counter() - start
    print(f"  + encoding the figures for the browser (the UI path; the API sends none): {encode:.2f} s")
    print(f"  = {total + encode:.2f} s to everything shown, before the browser draws it")
    print("  figure sizes as sent (fig.to_json()):")
    for name, size in sizes.items():
        print(f"    {name:22s} {size:9,d} bytes")


if __name__ == "__main__":
    main()
