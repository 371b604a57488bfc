"""A small sweep at equal wall-clock: every setting trains for the same minutes on the same data,
one at a time, and the table ranks them by validation vocals uSDR at their best epoch.

    python -m training.sweep --musdb-root data/world --minutes 5 --out runs/sweep \\
        base: \\
        lr3e-3: --lr 3e-3 \\
        batch16: --batch-size 16 \\
        umx: --model umx

Each `NAME: ARGS...` is a run of `python -m training` with the common arguments plus ARGS.
Writes `OUT/sweep.md` (the table) and `OUT/sweep.json`; a run whose folder already holds a
finished run is read, not trained again, so an interrupted sweep continues where it stopped.
"""

from __future__ import annotations

import argparse
import json
import shlex
from pathlib import Path

from separation.cli import HelpFormatter, exit_now

from .__main__ import build_parser, config_from_args
from .loop import Trainer


def parse_runs(items: list[str]) -> dict[str, list[str]]:
    """["base:", "lr:", "--lr", "3e-3"] -> {"base": [], "lr": ["--lr", "3e-3"]}."""
    runs: dict[str, list[str]] = {}
    name = None
    for item in items:
        if item.endswith(":") and not item.startswith("-"):
            name = item[:-1]
            runs[name] = []
        elif name is None:
            raise SystemExit(f"sweep: {item!r} comes before any NAME:")
        else:
            runs[name].append(item)
    return runs


def run_one(name: str, args: list[str], common: list[str], out: Path) -> dict:
    folder = out / name
    summary = folder / "summary.json"
    if summary.exists():
        return json.loads(summary.read_text())
    cfg = config_from_args(build_parser().parse_args([*common, *args, "--out", str(folder)]))
    result = Trainer(cfg).run()
    best = min(result["history"], key=lambda r: r["valid_loss"])
    row = {
        "name": name,
        "args": shlex.join(args),
        "model": cfg.model,
        "epochs": result["epoch"],
        "steps": result["step"],
        "minutes": round(result["history"][-1]["elapsed"] / 60, 1),
        "best_epoch": best["epoch"],
        "valid_loss": round(best["valid_loss"], 4),
        "valid_usdr_vocals": round(best["valid_usdr_vocals"], 2),
        "valid_usdr_accompaniment": round(best["valid_usdr_accompaniment"], 2),
        "step_seconds": round(result["history"][-1]["compute_per_step"], 3),
    }
    summary.write_text(json.dumps(row) + "\n")
    return row


def table(rows: list[dict]) -> str:
    head = "| run | settings | model | epochs | steps | min | best epoch | valid loss | vocals uSDR | accomp. uSDR |"
    lines = [head, "|" + "---|" * 10]
    for r in sorted(rows, key=lambda r: -r["valid_usdr_vocals"]):
        lines.append(
            f"| {r['name']} | {r['args'] or '(defaults)'} | {r['model']} | {r['epochs']} | {r['steps']} | "
            f"{r['minutes']} | {r['best_epoch']} | {r['valid_loss']} | {r['valid_usdr_vocals']} | "
            f"{r['valid_usdr_accompaniment']} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m training.sweep", description=__doc__, formatter_class=HelpFormatter)
    p.add_argument("--musdb-root", required=True, help="the data every run trains on")
    p.add_argument("--minutes", type=float, required=True, help="training time of every run")
    p.add_argument("--out", type=Path, default=Path("runs/sweep"))
    p.add_argument("--common", default="--is-wav", help="arguments every run shares, as one string")
    p.add_argument("runs", nargs=argparse.REMAINDER, help="NAME: ARGS... for each run")
    a = p.parse_args(argv)
    common = ["--musdb-root", a.musdb_root, "--max-minutes", str(a.minutes), *shlex.split(a.common)]
    rows = [run_one(name, args, common, a.out) for name, args in parse_runs(a.runs).items()]
    a.out.mkdir(parents=True, exist_ok=True)
    (a.out / "sweep.json").write_text(json.dumps(rows, indent=1) + "\n")
    (a.out / "sweep.md").write_text(table(rows))
    print(table(rows))
    return 0


if __name__ == "__main__":
    import logging

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    exit_now(main())
