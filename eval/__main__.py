"""Command line of the evaluation.

    python -m eval --methods dprnn,umxhq,irm,mixture --musdb-root ~/data/musdb18hq --is-wav --out results/
    python -m eval report results/
    python -m eval metrics REF_DIR EST_DIR [--backend fast|museval] [--json scores.json]

The first separates and scores every track (resumable: run it again to continue), then
prints the medians table. A user error prints one `error:` line and exits with status 2; a
run where some tracks failed still writes the others and exits with status 1.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

import torch

from separation import __version__
from separation.audio import AUDIO_SUFFIXES, read_audio
from separation.cli import HelpFormatter, dispatch, exit_now, setup_logging
from separation.errors import SeparationError
from separation.separator import check_shifts, select_device
from separation.tracks import ACCOMPANIMENT, accompaniment

from .scores import BACKENDS, METRICS, score_track

MAX_LENGTH_DIFFERENCE = 1.0  # seconds between an estimate and its reference before it is refused


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--backend", choices=BACKENDS, default="fast", help="BSSEval implementation (default: fast; identical numbers)"
    )
    p.add_argument("--device", default="cpu", help="torch device for separation and the fast metrics (cpu, cuda)")
    p.add_argument("-q", "--quiet", action="store_true")
    p.add_argument("-v", "--verbose", action="store_true")


def build_run_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m eval",
        description="Separate and score MUSDB tracks (BSSEval v4 + SI-SDR).\n"
        "Other commands:\n"
        "  python -m eval report RESULTS            tables, box plots and Wilcoxon tests of a results folder\n"
        "  python -m eval metrics REF_DIR EST_DIR   score any estimates against references",
        formatter_class=HelpFormatter,
    )
    p.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    p.add_argument(
        "--methods",
        required=True,
        help="comma-separated: mixture, irm, ibm, dprnn, conv1d, umxhq, umxl, a checkpoint folder, "
        "a Hub repo id, or NAME=LOCATION to choose the results folder name",
    )
    p.add_argument("--musdb-root", required=True, help="MUSDB18 (stems) or MUSDB18-HQ (with --is-wav) folder")
    p.add_argument("--is-wav", action="store_true", help="MUSDB18-HQ layout (one wav per source)")
    p.add_argument("--subset", default="test", choices=["train", "test"])
    p.add_argument("--split", choices=["train", "valid"], help="with --subset train: musdb's train/valid split")
    p.add_argument("--out", default="results", help="results folder (default: results/)")
    p.add_argument("--tracks", help="comma-separated track names (default: all of the subset)")
    p.add_argument("--limit", type=int, help="the first N tracks, or N random ones with --seed")
    p.add_argument("--seed", type=int, help="draw --limit tracks at random with this seed")
    p.add_argument(
        "--jobs",
        type=int,
        default=1,
        help="tracks in parallel, one process each (default: 1); fewer "
        "run when that many would not fit in --max-memory",
    )
    p.add_argument(
        "--max-memory",
        type=float,
        metavar="GB",
        help="memory that parallel jobs may take together (default: 80%% of what is free now)",
    )
    p.add_argument("--wiener", type=int, help="EM iterations for mask models (default: each model's own)")
    p.add_argument(
        "--shifts",
        type=int,
        default=1,
        help="passes averaged per model, each delayed and every other one channel-swapped (default: 1, plain)",
    )
    p.add_argument("--window", type=float, default=1.0, help="BSSEval window in seconds (default: 1, SiSEC)")
    p.add_argument("--hop", type=float, default=1.0, help="BSSEval hop in seconds (default: 1, SiSEC)")
    _add_common(p)
    return p


def run_eval(argv: list[str]) -> int:
    from .run import RunConfig, format_table, run  # per subcommand: `eval metrics` needs neither musdb nor this

    args = build_run_parser().parse_args(argv)
    setup_logging(args.quiet, args.verbose)
    select_device(args.device)  # before any folder is made: "cuda" without a GPU is one line
    if args.jobs < 1:
        raise SeparationError(f"--jobs must be >= 1, not {args.jobs}")
    check_shifts(args.shifts, "--shifts")
    if args.window <= 0 or args.hop <= 0:
        raise SeparationError("--window and --hop must be > 0 seconds")
    cfg = RunConfig(
        methods=[m.strip() for m in args.methods.split(",") if m.strip()],
        musdb_root=args.musdb_root,
        out=args.out,
        is_wav=args.is_wav,
        subset=args.subset,
        split=args.split,
        tracks=[t.strip() for t in args.tracks.split(",")] if args.tracks else None,
        limit=args.limit,
        seed=args.seed,
        backend=args.backend,
        device=args.device,
        jobs=args.jobs,
        wiener=args.wiener,
        shifts=args.shifts,
        window=args.window,
        hop=args.hop,
        max_memory=args.max_memory,
    )
    if not cfg.methods:
        raise SeparationError("--methods is empty")
    start = time.perf_counter()
    echo = (lambda *a, **k: None) if args.quiet else print
    table, errors = run(cfg, echo=echo)
    print(f"\nmedian over 1-s windows, then over tracks (dB); {time.perf_counter() - start:.1f} s")
    print(format_table(table), end="")
    if errors:
        print(f"{len(errors)} track(s) failed:", *errors, sep="\n  ", file=sys.stderr)
        return 1
    return 0


def run_report(argv: list[str]) -> int:
    from .report import write_report  # per subcommand: plotly and kaleido only for reports

    p = argparse.ArgumentParser(
        prog="python -m eval report", description="Tables, box plots and Wilcoxon tests of a results folder."
    )
    p.add_argument("results", type=Path)
    p.add_argument("--to", type=Path, help="output folder (default: RESULTS/report)")
    p.add_argument("--subset", default="test")
    p.add_argument("--no-png", action="store_true", help="skip the PNG box plots (they need Chrome/Chromium)")
    args = p.parse_args(argv)
    setup_logging(False, False)
    out = write_report(args.results, args.to, subset=args.subset, png=not args.no_png)
    print((out / "summary.md").read_text(), end="")
    print(f"\nwritten to {out}/")
    return 0


def stem_files(folder: Path) -> dict[str, Path]:
    """`{stem: file}` of the audio files in a folder, whatever their format (vocals.wav and
    vocals.flac are both "vocals"; both in one folder is ambiguous and refused)."""
    if not folder.is_dir():
        raise SeparationError(f"{folder}: no such folder")
    files: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        if not path.is_file() or path.suffix.lower() not in AUDIO_SUFFIXES:
            continue
        stem = path.name[: -len(path.suffix)]
        if stem in files:
            raise SeparationError(f"{folder}: both {files[stem].name} and {path.name} are {stem!r}: keep one")
        files[stem] = path
    return files


def run_metrics(argv: list[str]) -> int:
    p = argparse.ArgumentParser(
        prog="python -m eval metrics",
        description="Score the estimates in EST_DIR (<source>.wav, .flac, ...) against the references of the same "
        "name in REF_DIR. A MUSDB track folder (vocals, drums, bass, other) also serves as references for an "
        "accompaniment estimate (drums + bass + other).",
        formatter_class=HelpFormatter,
    )
    p.add_argument("references", type=Path, help="folder of reference stems, e.g. vocals.wav, accompaniment.wav")
    p.add_argument("estimates", type=Path, help="folder of estimates with the same stem names (any audio format)")
    p.add_argument("--json", type=Path, help="write the framewise scores here (museval's JSON format)")
    p.add_argument("--window", type=float, default=1.0, help="BSSEval window in seconds")
    p.add_argument("--hop", type=float, default=1.0, help="BSSEval hop in seconds")
    p.add_argument(
        "--max-length-difference",
        type=float,
        default=MAX_LENGTH_DIFFERENCE,
        metavar="SECONDS",
        help="refuse estimates whose length differs more than this from the references' "
        "(shorter differences are cut or zero-padded, as museval does)",
    )
    _add_common(p)
    args = p.parse_args(argv)
    setup_logging(args.quiet, args.verbose)
    select_device(args.device)  # before any work: "cuda" without a GPU is one line, not a traceback
    log = logging.getLogger("separation")
    ref_files, est_files = stem_files(args.references), stem_files(args.estimates)
    wanted = [s for s in est_files if s in ref_files or (s == "accompaniment" and set(ACCOMPANIMENT) <= set(ref_files))]
    if not wanted:
        raise SeparationError(
            f"no estimate in {args.estimates} has a reference of the same name in {args.references} "
            f"(estimates: {', '.join(est_files) or 'none'}; references: {', '.join(ref_files) or 'none'})"
        )
    for stem in sorted(set(est_files) - set(wanted)):
        log.warning("%s has no reference in %s: skipped", est_files[stem].name, args.references)
    refs, ests, rate = {}, {}, None
    for stem in wanted:
        parts = [ref_files[stem]] if stem in ref_files else [ref_files[s] for s in ACCOMPANIMENT]
        decoded = [read_audio(path) for path in parts]
        ref_rate = decoded[0][1]
        if any(r != ref_rate for _, r in decoded):
            raise SeparationError(f"{stem}: the reference stems have different sample rates")
        reference = decoded[0][0] if len(decoded) == 1 else _sum_stems([w for w, _ in decoded])
        est, est_rate = read_audio(est_files[stem])
        if ref_rate != est_rate:
            raise SeparationError(
                f"{est_files[stem].name}: the reference is at {ref_rate} Hz, the estimate at {est_rate} Hz"
            )
        if rate is not None and ref_rate != rate:
            raise SeparationError(f"{stem}: the references have different sample rates ({rate} and {ref_rate} Hz)")
        rate = ref_rate
        refs[stem], ests[stem] = reference, est
        if stem not in ref_files:
            log.info("accompaniment reference: %s", " + ".join(p.name for p in parts))
    lengths = {s: r.shape[-1] for s, r in refs.items()}
    if len(set(lengths.values())) > 1:
        shortest = min(lengths.values())
        log.warning("references differ in length %s: all cut to %d samples", lengths, shortest)
        refs = {s: r[:, :shortest] for s, r in refs.items()}
    for stem in wanted:
        have, want = ests[stem].shape[-1], refs[stem].shape[-1]
        if abs(have - want) > args.max_length_difference * rate:
            raise SeparationError(
                f"{est_files[stem].name} lasts {have / rate:.2f} s but its reference {want / rate:.2f} s: "
                f"more than {args.max_length_difference:g} s apart, so it is not an estimate of that recording "
                "(cut or pad it yourself, or raise --max-length-difference)"
            )
        if have != want:
            log.warning(
                "%s: %d samples %s than the reference, %s as museval does",
                est_files[stem].name,
                abs(have - want),
                "longer" if have > want else "shorter",
                "cut" if have > want else "zero-padded",
            )
    scores = score_track(
        refs,
        ests,
        track=args.estimates.name,
        backend=args.backend,
        device=args.device,
        window=args.window,
        hop=args.hop,
        sample_rate=rate,
    )
    medians = scores.medians()
    width = max(len(s) for s in medians) + 2
    print(
        f"{'source':<{width}}" + " ".join(f"{m:>7}" for m in METRICS) + f"   median over {args.window:g}-s windows (dB)"
    )
    for source, row in medians.items():
        print(f"{source:<{width}}" + " ".join(f"{row[m]:7.2f}" for m in METRICS))
    if args.json:
        scores.save(args.json)
        print(f"framewise scores: {args.json}")
    return 0


def _sum_stems(waves: list[torch.Tensor]) -> torch.Tensor:
    length = min(w.shape[-1] for w in waves)
    return accompaniment(w[:, :length] for w in waves)


def main(argv: list[str] | None = None) -> int:
    return dispatch(
        argv,
        {"report": run_report, "metrics": run_metrics, "run": run_eval},
        run_eval,
        "finished tracks are saved; run the same command again to resume",
    )


if __name__ == "__main__":
    exit_now(main())
