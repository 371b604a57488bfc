"""Command line: `python -m separation song.mp3 --model dprnn -o out/`.

    python -m separation song.mp3 other.flac music/ --model umxhq -o out/ --format flac
    python -m separation download umxhq        # fetch weights now, for offline use later
    python -m separation models                # what --model accepts

Writes `out/<track>/vocals.wav` and `out/<track>/accompaniment.wav` (the karaoke track).
A user error prints one line on stderr and exits with status 2; when some of several files
fail, the others are still written and the status is 1.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from pathlib import Path

from tqdm import tqdm

from . import __version__, audio
from .checkpoints import resolve
from .errors import SeparationError
from .models import ARCHITECTURES
from .pretrained import NAMED_MODELS, fetch_upstream, upstream_cache_path
from .separator import Separator, check_shifts

log = logging.getLogger("separation")

DEFAULT_TEMPLATE = "{track}/{stem}.{ext}"
DEFAULT_MAX_MINUTES = 30.0
STEM_ALIASES = {"karaoke": "accompaniment", "instrumental": "accompaniment", "vocal": "vocals"}
MP3_BITRATES = (96, 128, 160, 192, 224, 256, 320)


def parse_time(text: str) -> float:
    """Seconds from `90`, `1.5`, `1:30` or `1:02:03.5` (an argparse type)."""
    try:
        parts = [float(p) for p in str(text).strip().split(":")]
    except ValueError:
        parts = []
    if not 1 <= len(parts) <= 3 or any(p < 0 or p != p for p in parts) or any(p >= 60 for p in parts[1:]):
        raise argparse.ArgumentTypeError(f"{text!r} is not a time: use seconds (90, 1.5) or M:SS / H:MM:SS (1:30)")
    total = 0.0
    for part in parts:
        total = total * 60 + part
    return total


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Defaults shown in every option's help; the description's own line breaks kept. An option
    whose default is None ("not given") says its default in its own help, or has none to say."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default is None:
            return action.help
        return super()._get_help_string(action)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m separation",
        description="Separate songs into vocals and accompaniment (karaoke).\n"
        "Other commands: `python -m separation download MODEL`, `python -m separation models`.",
        formatter_class=HelpFormatter,
    )
    p.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    p.add_argument("inputs", nargs="+", type=Path, help="audio files or folders (searched recursively)")
    p.add_argument(
        "-m", "--model", default="dprnn", help="dprnn, conv1d, umxhq, umxl, a checkpoint folder or a Hub repo id"
    )
    p.add_argument("--revision", help="Hub revision (branch, tag or commit) for a repo id")
    p.add_argument("-o", "--out", type=Path, default=Path("separated"), help="output folder")
    p.add_argument(
        "--filename",
        default=DEFAULT_TEMPLATE,
        help="output path under --out; fields {track} (file name without extension), {parent} (the name of "
        "its folder: MUSDB tracks are all 'mixture'), {stem}, {ext}, {model}",
    )
    p.add_argument("--stems", help="comma-separated stems to write (default: all); 'karaoke' means accompaniment")
    p.add_argument("--format", choices=audio.WRITE_FORMATS, default="wav", help="output format")
    p.add_argument("--bit-depth", choices=list(audio.BIT_DEPTHS), default="24", help="wav/flac sample format")
    p.add_argument(
        "--mp3-bitrate",
        type=int,
        choices=MP3_BITRATES,
        default=320,
        metavar="KBPS",
        help=f"constant bit rate of --format mp3, in kbit/s ({', '.join(map(str, MP3_BITRATES))})",
    )
    p.add_argument(
        "--clip",
        choices=["rescale", "clamp", "none"],
        default="rescale",
        help="peaks above 0 dBFS: one gain for all stems (keeps their sum), hard clip, or keep (float wav only)",
    )
    p.add_argument("-d", "--device", default="auto", help="auto (a GPU if there is one), cpu, cuda or cuda:N")
    p.add_argument("--wiener", type=int, help="Wiener EM iterations for spectrogram models (default: the model's)")
    p.add_argument(
        "--segment",
        type=float,
        metavar="SECONDS",
        help="length of the segments the model sees, in seconds (default: the model's); lower it on a small GPU",
    )
    p.add_argument("--overlap", type=float, default=0.25, help="share of each segment overlapping the next (0 to <1)")
    p.add_argument("--batch-size", type=int, default=2, help="segments per forward pass")
    p.add_argument(
        "--shifts",
        type=int,
        default=1,
        help="passes averaged, each delayed and every other one with left/right swapped: "
        "N times the time for a slightly cleaner split (1 to 8; default 1)",
    )
    p.add_argument(
        "--offset",
        type=parse_time,
        default=0.0,
        metavar="TIME",
        help="start of the excerpt to separate: seconds or M:SS",
    )
    p.add_argument(
        "--duration",
        type=parse_time,
        metavar="TIME",
        help="length of the excerpt: seconds or M:SS (default: to the end)",
    )
    p.add_argument(
        "--max-minutes",
        type=float,
        default=DEFAULT_MAX_MINUTES,
        help="refuse longer inputs, in minutes (0 = no limit); also sets how much may be decoded",
    )
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars or info lines")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    return p


def expand_inputs(inputs: list[Path]) -> list[Path]:
    """Files as given; folders -> their audio files, recursively, sorted."""
    files: list[Path] = []
    for item in inputs:
        if item.is_dir():
            found = sorted(p for p in item.rglob("*") if p.is_file() and p.suffix.lower() in audio.AUDIO_SUFFIXES)
            if not found:
                raise SeparationError(
                    f"{item}: the folder holds no audio files ({', '.join(sorted(audio.AUDIO_SUFFIXES))})"
                )
            files.extend(found)
        elif item.exists():
            files.append(item)
        else:
            raise SeparationError(f"{item}: no such file or folder")
    return files


def plan_outputs(files: list[Path], args, model_name: str, stems: list[str]) -> dict[Path, dict[str, Path]]:
    """Output path of every stem of every file, checked for collisions before any work."""
    plan: dict[Path, dict[str, Path]] = {}
    seen: dict[Path, Path] = {}
    safe_model = Path(model_name).name.replace("/", "_")
    for f in files:
        plan[f] = {}
        for stem in stems:
            fields = {
                "track": f.stem,
                "parent": f.resolve().parent.name,
                "stem": stem,
                "ext": args.format,
                "model": safe_model,
            }
            try:
                rel = args.filename.format(**fields)
            except (KeyError, IndexError, ValueError) as e:
                raise SeparationError(
                    f"--filename {args.filename!r}: unknown field {e}; use {', '.join('{' + k + '}' for k in fields)}"
                ) from None
            target = args.out / rel
            if target in seen:
                hint = (
                    ' (several files of one name in different folders: --filename "{parent}/{track}/{stem}.{ext}")'
                    if "{parent}" not in args.filename
                    else ""
                )
                raise SeparationError(f"{f} and {seen[target]} would both write {target}{hint}")
            seen[target] = f
            plan[f][stem] = target
    return plan


def separate_one(sep, path: Path, targets: dict[str, Path], args) -> None:
    max_seconds = args.max_minutes * 60 if args.max_minutes else None
    mix = audio.load_audio(path, offset=args.offset, duration=args.duration, max_seconds=max_seconds)
    seconds = mix.shape[-1] / audio.SAMPLE_RATE
    bar = tqdm(total=round(seconds, 1), unit="s", desc=path.name[:30], disable=args.quiet, leave=False)

    def progress(done: int, total: int) -> None:
        bar.n = round(seconds * done / total, 1)
        bar.refresh()

    start = time.perf_counter()
    stems = sep.separate(mix, audio.SAMPLE_RATE, progress=progress)
    bar.close()
    stems = {k: v for k, v in stems.items() if k in targets}
    if args.bit_depth != "float" or args.format != "wav":
        stems, message = audio.limit_peaks(stems, args.clip if args.clip != "none" else "clamp")
        if message:
            log.warning("%s: %s", path.name, message)
    for stem, target in targets.items():
        audio.save_audio(target, stems[stem], audio.SAMPLE_RATE, bit_depth=args.bit_depth, mp3_kbps=args.mp3_bitrate)
    elapsed = time.perf_counter() - start
    log.info(
        "%s: %.1f s of audio in %.1f s (%.1fx real time) -> %s",
        path.name,
        seconds,
        elapsed,
        seconds / elapsed,
        targets[next(iter(targets))].parent,
    )


def run_separate(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.quiet, args.verbose)
    check_shifts(args.shifts, "--shifts")  # before any file is looked at or any model loaded
    files = expand_inputs(args.inputs)
    audio.check_writable(args.out, args.format, args.bit_depth)
    if args.clip == "none" and not (args.format == "wav" and args.bit_depth == "float"):
        raise SeparationError(
            "--clip none needs float output (--format wav --bit-depth float): integers cannot hold peaks above 0 dBFS"
        )
    sep = Separator.load(
        args.model,
        revision=args.revision,
        device=args.device,
        wiener=args.wiener,
        segment=args.segment,
        overlap=args.overlap,
        batch_size=args.batch_size,
        shifts=args.shifts,
    )
    stems = list(sep.sources)
    if args.stems:
        wanted = list(dict.fromkeys(STEM_ALIASES.get(s.strip(), s.strip()) for s in args.stems.split(",") if s.strip()))
        unknown = [s for s in wanted if s not in stems]
        if unknown:
            raise SeparationError(
                f"--stems: {', '.join(unknown)} not produced by {sep.name} (it gives {', '.join(stems)})"
            )
        stems = wanted
    plan = plan_outputs(files, args, sep.name, stems)
    failed = 0
    for path, targets in plan.items():
        try:
            separate_one(sep, path, targets, args)
        except SeparationError as e:
            failed += 1
            print(f"error: {e}", file=sys.stderr)
    if failed:
        print(f"error: {failed} of {len(plan)} file(s) failed", file=sys.stderr)
        return 1
    return 0


def run_download(argv: list[str]) -> int:
    p = argparse.ArgumentParser(
        prog="python -m separation download",
        formatter_class=HelpFormatter,
        description="Fetch weights now, for offline use later (HF_HUB_OFFLINE=1 forbids it).",
    )
    p.add_argument("models", nargs="+", help="umxhq, umxl, dprnn (its DPRNN_REPO), or a Hub repo id")
    p.add_argument("--revision", help="Hub revision (branch, tag or commit) for a repo id")
    args = p.parse_args(argv)
    setup_logging(False, False)
    for name in args.models:
        named = NAMED_MODELS.get(name)
        if named is None:  # a Hub repo id
            print(f"{name}: {resolve(name, revision=args.revision)}")
        elif named.env is None:  # upstream weights (umxhq, umxl)
            fetch_upstream(name, progress=True)
            print(f"{name}: {upstream_cache_path(name)}")
        elif os.environ.get(named.env):
            print(f"{name}: {resolve(os.environ[named.env], revision=args.revision)}")
        else:
            print(f"{name}: ships with the package ({named.shipped}); set {named.env} to fetch another")
    return 0


def run_models(argv: list[str]) -> int:
    argparse.ArgumentParser(
        prog="python -m separation models",
        formatter_class=HelpFormatter,
        description="The models --model accepts, and whether their weights are here.",
    ).parse_args(argv)
    for m in NAMED_MODELS.values():
        print(f"{m.name:8s} {m.description}\n         weights: {m.resolver.local()}")
    print(f"checkpoint architectures: {', '.join(sorted(ARCHITECTURES))}")
    return 0


class _OneLine(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        msg = record.getMessage()
        if record.name == "py.warnings":  # "file:line: Category: message\n  source" -> "message"
            msg = msg.split(": ", 2)[-1].splitlines()[0]
        level = "" if record.levelno == logging.INFO else f"{record.levelname.lower()}: "
        return level + msg


def setup_logging(quiet: bool, verbose: bool) -> None:
    """One-line messages on stderr for this package's logs and Python warnings (the
    untrained-model warning among them). Leaves the root logger alone, so embedding
    `main()` in another program (or a test) does not steal its handlers."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_OneLine())
    for name in ("separation", "py.warnings"):
        logger = logging.getLogger(name)
        logger.handlers[:] = [handler]
        logger.setLevel(logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO)
    logging.captureWarnings(True)


def dispatch(argv: list[str] | None, commands: dict, default, interrupted: str) -> int:
    """Run `commands[argv[0]]` (unless a file of that name exists) or `default`, turning a
    user error into one `error:` line (status 2) and Ctrl-C into `interrupted` (status 130).
    Shared by `python -m separation` and `python -m eval`."""
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        if argv and argv[0] in commands and not Path(argv[0]).exists():
            return commands[argv[0]](argv[1:])
        return default(argv)
    except SeparationError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"interrupted: {interrupted}", file=sys.stderr)
        return 130


def main(argv: list[str] | None = None) -> int:
    return dispatch(
        argv,
        {"download": run_download, "models": run_models},
        run_separate,
        "stems already written are complete; the current one was not written",
    )


def exit_now(code: int) -> None:
    """End a finished command without the interpreter's teardown: with torch loaded, tearing the
    modules down takes ~0.35 s, a third of a short `eval metrics`. Everything the command wrote
    is closed by then (files are written atomically, pools joined); streams and log handlers are
    flushed here."""
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    exit_now(main())
