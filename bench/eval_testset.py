"""Wall time of a whole test-set evaluation (`python -m eval`), once per metrics backend.

    ./run.sh bench eval_testset [--musdb-root DIR --is-wav] [--methods mixture,irm,dprnn] [--jobs 1]

Without --musdb-root, a synthetic MUSDB18-HQ-shaped test set (12 songs x 15 s) is generated
in a temporary folder first. Each backend gets a fresh results folder, so both runs separate
and score everything; prints both wall times, their ratio, and the largest difference between
the two median tables (they should agree to < 0.01 dB).
"""

from __future__ import annotations

import argparse
import math
import tempfile
import time
from pathlib import Path

import common  # noqa: F401  (puts the project on sys.path)
from eval.run import RunConfig, format_table, run
from songgen.synthetic import write_musdb_folder


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--musdb-root")
    p.add_argument("--is-wav", action="store_true")
    p.add_argument("--methods", default="mixture,irm,dprnn")
    p.add_argument("--jobs", type=int, default=1)
    p.add_argument("--limit", type=int)
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root, is_wav = args.musdb_root, args.is_wav
        if root is None:
            start = time.perf_counter()
            root, is_wav = str(write_musdb_folder(Path(tmp) / "musdb", train=0, valid=0, test=12, seconds=15.0)), True
            print(f"generated 12 synthetic test songs x 15 s in {time.perf_counter() - start:.1f} s")
        tables, times = {}, {}
        for backend in ("fast", "museval"):
            cfg = RunConfig(
                methods=args.methods.split(","),
                musdb_root=root,
                is_wav=is_wav,
                out=str(Path(tmp) / backend),
                backend=backend,
                jobs=args.jobs,
                limit=args.limit,
            )
            start = time.perf_counter()
            tables[backend], errors = run(cfg, echo=lambda *a, **k: None)
            times[backend] = time.perf_counter() - start
            if errors:
                print(*errors, sep="\n")
    tracks = tables["fast"][cfg.method_names[0]]["tracks"]
    print(f"{tracks} tracks, methods {args.methods}, {args.jobs} job(s):")
    print(f"  fast backend     {times['fast']:7.1f} s")
    print(f"  museval backend  {times['museval']:7.1f} s")
    print(f"  ratio museval / fast = {times['museval'] / times['fast']:.1f}x (separation included in both)")
    # values above 100 dB are float64 round-off in both backends (e.g. the mixture's SAR: it is an
    # exact sum of the references, without artifacts) and are not expected to agree
    pairs = [
        (tables["fast"][m][s][k], tables["museval"][m][s][k])
        for m in tables["fast"]
        for s in ("vocals", "accompaniment")
        for k in ("SDR", "SIR", "ISR", "SAR")
    ]
    diff = max(abs(a - b) for a, b in pairs if not math.isnan(a) and max(a, b) < 100)
    floor = [(a, b) for a, b in pairs if max(a, b) >= 100]
    print(
        f"  largest difference between the two median tables: {diff:.2e} dB"
        + (
            f" ({len(floor)} round-off-floor values > 100 dB left out, e.g. {floor[0][0]:.1f} vs {floor[0][1]:.1f})"
            if floor
            else ""
        )
    )
    print(format_table(tables["fast"]), end="")


if __name__ == "__main__":
    main()
