"""App latency: from submitting a 30-s clip to both separations, spectrograms and metrics shown.

    ./run.sh bench app_latency [--seconds 30]

Launches the real app (`app.py`) on localhost with DPRNN (shipped checkpoint) and umxhq's
architecture (random weights unless its upstream weights are in the torch hub cache: the
cost does not depend on the weights), then calls the `/separate_clip` endpoint with
gradio_client, as the UI's button does, after one warm-up call. Prints the end-to-end time,
the server-side split by stage, and the size in bytes of each Plotly figure as sent (target:
under 10 s in all on this CPU; figures small enough to send).
"""

from __future__ import annotations

import argparse
import tempfile
import time
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


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=30.0)
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        pool = ModelPool(["dprnn", "umxhq"], loader=load, background=False)
        lab = lab_module.LabApp(AppConfig(data_dir=Path(tmp)), pool=pool)
        demo = ui_module.build_ui(lab)
        demo.queue()
        _, url, _ = demo.launch(prevent_thread_lock=True, quiet=True, allowed_paths=[str(lab.work_root)])
        client = Client(url, verbose=False)
        clip = next(iter(lab.clips))
        client.predict(clip, 0, 5, api_name="/separate_clip")  # warm-up
        start = time.perf_counter()
        files, info = client.predict(clip, 0, args.seconds, api_name="/separate_clip")
        total = time.perf_counter() - start
        # the figures of that same request, as the UI sends them
        mix, refs, label = lab_module.clip_excerpt(lab, clip, 0, args.seconds)
        sep = lab.separate(mix, refs, label)
        demo.close()
    print(f"{args.seconds:.0f}-s clip, models dprnn + umxhq, CPU ({info['seconds']:.0f} s of audio):")
    print(f"  end to end (gradio_client call, incl. file transfer): {total:6.2f} s   (target < 10 s)")
    for stage, seconds in info["timings"].items():
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
