"""Command line for training.

python -m training --model dprnn --musdb-root ~/data/musdb18hq --is-wav --out runs/dprnn
python -m training --resume runs/dprnn                       # continue where it stopped
python -m training --model dprnn ... --push-to-hub user/dprnn-vocals
python -m training push runs/dprnn user/dprnn-vocals         # push an existing run's best/
python -m training export runs/dprnn separation/weights/dprnn --scores results/  # ship it (float16)
python -m training average runs/soup runs/a runs/b/best runs/b/last   # average weights (a model soup)
python -m training average runs/soup runs/a/epochs/* --greedy --validate-on data/musdb18hq --is-wav
torchrun --nproc-per-node 4 -m training --model dprnn ...    # data-parallel on 4 GPUs
python -m songgen.synthetic data/synthetic                  # an offline stand-in for MUSDB18-HQ
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from separation import __version__
from separation.cli import HelpFormatter, dispatch, exit_now
from separation.errors import SeparationError

from .average import Validation, average_checkpoints, greedy_soup
from .data import DataConfig
from .hub import export, push_to_hub
from .loop import FINE_TUNE_LR, FINE_TUNE_SECONDS, TrainConfig, Trainer, resume_config
from .losses import LossConfig
from .validation import ValidationSet


def _set_value(text: str):
    """The value of a `--set KEY=VALUE`: JSON where it parses (numbers, lists, true), else the text."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def add_data_arguments(g) -> None:
    """The chunks, their augmentations and the loss: an argument group of `build_parser`."""
    d = DataConfig()
    g.add_argument(
        "--seconds",
        type=float,
        help=f"training chunk length, in seconds (default: {d.seconds:g}, or {FINE_TUNE_SECONDS:g} with --init-from)",
    )
    g.add_argument("--samples-per-track", type=int, default=d.samples_per_track, help="chunks per track per epoch")
    g.add_argument("--silent-vocals", type=float, help="share of chunks with muted vocals (default: as drawn)")
    g.add_argument("--no-remix", action="store_true", help="take all sources of a chunk from the same track")
    g.add_argument("--eq-augment", type=float, default=d.eq, help="share of source chunks given a random EQ")
    g.add_argument(
        "--reverb-augment", type=float, default=d.reverb, help="share of source chunks given a random reverb"
    )
    g.add_argument("--repitch-augment", type=float, default=d.repitch, help="share of source chunks sped up or down")
    g.add_argument(
        "--repitch-semitones", type=float, default=d.repitch_semitones, help="how far, up or down, in semitones"
    )
    g.add_argument(
        "--gain",
        type=float,
        nargs=2,
        metavar=("LO", "HI"),
        default=d.gain,
        help="random gain range per source chunk (1 1: none)",
    )
    g.add_argument("--no-spec-augment", action="store_true", help="no SpecAugment masks on the input spectrogram")
    g.add_argument(
        "--log-weight", type=float, default=LossConfig().log_weight, help="weight of the log-magnitude L2 term"
    )
    g.add_argument(
        "--phase-weight",
        type=float,
        default=LossConfig().phase_weight,
        help="weight of the complex-STFT term (share of the mixture's energy misattributed)",
    )


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m training",
        description="Train a separator on MUSDB18(-HQ).\n"
        "Other commands:\n"
        "  python -m training export RUN DEST [--scores RESULTS]   ship a checkpoint (float16, with a model card)\n"
        "  python -m training push RUN user/repo                   upload a checkpoint to the Hugging Face Hub\n"
        "  python -m training average DEST CKPT CKPT...            average the weights of checkpoints of one model\n"
        "  python -m songgen.synthetic FOLDER                     write a MUSDB18-HQ-shaped synthetic set",
        formatter_class=HelpFormatter,
    )
    p.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    p.add_argument("--model", default="dprnn", help="architecture: dprnn, conv1d or umx")
    p.add_argument(
        "--set", nargs="*", default=[], metavar="KEY=VALUE", help="model config overrides, e.g. hidden_size=64"
    )
    p.add_argument("--musdb-root", type=Path, help="MUSDB18 or MUSDB18-HQ folder (train/ and test/)")
    p.add_argument(
        "--extra-train",
        type=Path,
        action="append",
        default=[],
        metavar="ROOT",
        help="one more MUSDB-shaped folder whose train/ tracks are all training data (repeatable)",
    )
    p.add_argument("--is-wav", action="store_true", help="MUSDB18-HQ (wav folders) instead of .stem.mp4")
    p.add_argument("--out", type=Path, default=Path("runs/dprnn"), help="run folder (best/, last/, tensorboard/)")
    p.add_argument("--resume", type=Path, metavar="RUN", help="continue the run in this folder (its last/)")
    p.add_argument(
        "--init-from",
        metavar="CHECKPOINT",
        help="fine-tune: start from this checkpoint's weights (a folder, e.g. separation/weights/dprnn, or a Hub repo)",
    )
    p.add_argument("--push-to-hub", metavar="REPO", help="upload best/ with its model card when training ends")
    p.add_argument("--private", action="store_true", help="create the Hub repo as private")
    t = TrainConfig()
    # --epochs and --patience default to None so that "given on the command line" is known from the
    # parsed value (a --resume keeps the run's own limits unless they are given), abbreviations included.
    p.add_argument("--epochs", type=int, help=f"epochs at most; early stopping may end sooner (default: {t.epochs})")
    p.add_argument("--max-steps", type=int, help="stop after this many steps in all (saving last/)")
    p.add_argument(
        "--max-minutes",
        type=float,
        help="stop after the first epoch that ends past this many minutes of training in all, resumes included "
        "(equal-time comparisons; raise it on --resume to go on)",
    )
    p.add_argument("--batch-size", type=int, default=t.batch_size, help="chunks per step (per GPU with torchrun)")
    p.add_argument(
        "--lr", type=float, help=f"Adam learning rate (default: {t.lr:g}, or {FINE_TUNE_LR:g} with --init-from)"
    )
    p.add_argument("--patience", type=int, help=f"early stopping patience in epochs (default: {t.patience})")
    p.add_argument(
        "--lr-decay-patience",
        type=int,
        default=t.lr_decay_patience,
        help="epochs without improvement before the LR drops",
    )
    add_data_arguments(p.add_argument_group("data, augmentation and loss"))
    p.add_argument("--valid-tracks", type=int, help="validate on the first N validation tracks only")
    p.add_argument(
        "--keep-epochs",
        action="store_true",
        help="also save every epoch's weights in RUN/epochs/epoch-NNN/ (~15 MB each), to average them "
        "afterwards (stochastic weight averaging: python -m training average)",
    )
    p.add_argument(
        "--data-description",
        metavar="TEXT",
        help="what the model card says the training data were, instead of what the folders' metadata say "
        "(for data changed on the way, e.g. excerpts coded to fit a transfer and decoded elsewhere)",
    )
    p.add_argument("--valid-description", metavar="TEXT", help="the same for the validation data")
    p.add_argument("--workers", type=int, default=t.workers, help="data loading processes")
    p.add_argument("--device", default=t.device, help="auto (a GPU if there is one), cpu or cuda")
    p.add_argument(
        "--no-amp",
        action="store_true",
        help="float32 throughout (default: bf16 autocast on CUDA and on CPUs with bf16 instructions)",
    )
    p.add_argument(
        "--seed", type=int, default=t.seed, help="seed of the data order, the chunks and the initial weights"
    )
    return p


def config_from_args(args) -> TrainConfig:
    if args.musdb_root is None:
        raise SeparationError("--musdb-root is required (or --resume RUN)")
    overrides = {}
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep:
            raise SeparationError(f"--set {item!r}: expected KEY=VALUE")
        overrides[key] = _set_value(value)
    return TrainConfig(
        model=args.model,
        model_config=overrides,
        musdb_root=str(args.musdb_root),
        extra_train=tuple(str(root) for root in args.extra_train),
        is_wav=args.is_wav,
        out=str(args.out),
        data=DataConfig(
            seconds=args.seconds
            if args.seconds is not None
            else FINE_TUNE_SECONDS
            if args.init_from
            else DataConfig.seconds,
            samples_per_track=args.samples_per_track,
            remix=not args.no_remix,
            eq=args.eq_augment,
            reverb=args.reverb_augment,
            repitch=args.repitch_augment,
            repitch_semitones=args.repitch_semitones,
            gain=tuple(args.gain),
            silent_vocals=args.silent_vocals,
        ),
        loss=LossConfig(
            log_weight=args.log_weight, phase_weight=args.phase_weight, spec_augment=not args.no_spec_augment
        ),
        batch_size=args.batch_size,
        epochs=args.epochs if args.epochs is not None else TrainConfig.epochs,
        patience=args.patience if args.patience is not None else TrainConfig.patience,
        lr_decay_patience=args.lr_decay_patience,
        lr=args.lr if args.lr is not None else FINE_TUNE_LR if args.init_from else TrainConfig.lr,
        seed=args.seed,
        workers=args.workers,
        device=args.device,
        amp=not args.no_amp,
        max_steps=args.max_steps,
        valid_tracks=args.valid_tracks,
        keep_epochs=args.keep_epochs,
        init_from=args.init_from,
        max_minutes=args.max_minutes,
        data_description=_description(args.data_description, "--data-description"),
        valid_description=_description(args.valid_description, "--valid-description"),
    )


def _description(text: str | None, option: str) -> str | None:
    """A card's description as given, or a one-line error: it is one line of the card."""
    if text is None:
        return None
    text = " ".join(text.split())
    if not text:
        raise SeparationError(f"{option} is empty")
    return text


def run_export(argv: list[str]) -> int:
    p = argparse.ArgumentParser(
        prog="python -m training export",
        formatter_class=HelpFormatter,
        description="Copy a checkpoint (a run's best/ or a checkpoint folder) with its model card, e.g. into "
        "separation/weights/ (what ships).",
    )
    p.add_argument("checkpoint", type=Path, help="a run folder (its best/) or a checkpoint folder")
    p.add_argument("dest", type=Path, help="the checkpoint folder to write")
    p.add_argument("--full-precision", action="store_true", help="keep float32 weights (default: float16)")
    p.add_argument(
        "--scores",
        type=Path,
        action="append",
        help="an eval results folder (python -m eval ... --out DIR) with its test scores; repeat it for more "
        "test sets (the first is the card's headline)",
    )
    p.add_argument(
        "--method",
        help="the results folder in --scores to take (default: the one whose recorded weights are this "
        "checkpoint's; other weights are refused)",
    )
    a = p.parse_args(argv)
    print(export(a.checkpoint, a.dest, half=not a.full_precision, scores=a.scores, method=a.method))
    return 0


def run_average(argv: list[str]) -> int:
    p = argparse.ArgumentParser(
        prog="python -m training average",
        formatter_class=HelpFormatter,
        description="Write the (weighted) average of the weights of checkpoints of one architecture and config, "
        "e.g. a run's best/ and last/ and a fine-tune of it (a model soup), or a run's --keep-epochs snapshots "
        "(stochastic weight averaging). With --validate-on the average is scored on validation songs, and "
        "--greedy keeps only the checkpoints that do not raise the soup's validation loss. Score it with "
        "`python -m eval` before using it: an average is not always better than its ingredients.",
    )
    p.add_argument("dest", type=Path, help="the checkpoint folder to write")
    p.add_argument("checkpoints", nargs="+", help="run folders (their best/) or checkpoint folders, two or more")
    p.add_argument("--weights", type=float, nargs="+", help="one weight per checkpoint (default: equal)")
    p.add_argument("--half", action="store_true", help="store float16 weights (default: float32)")
    v = p.add_argument_group("validation")
    v.add_argument(
        "--validate-on",
        metavar="ROOT",
        help="a MUSDB-shaped folder whose validation tracks score the average (the training default loss)",
    )
    v.add_argument("--is-wav", action="store_true", help="ROOT holds wav stems (MUSDB18-HQ)")
    v.add_argument("--valid-tracks", type=int, help="its first N validation tracks only")
    v.add_argument(
        "--valid-description",
        metavar="TEXT",
        help="the model card's words for the validation data (default: the folder's own description)",
    )
    v.add_argument(
        "--greedy",
        action="store_true",
        help="a greedy soup: in order of validation loss, keep each checkpoint that does not raise the soup's "
        "(2N - 1 validation passes; needs --validate-on)",
    )
    v.add_argument("--device", default="auto", help="where to validate: auto, cpu or cuda[:N]")
    a = p.parse_args(argv)
    if a.greedy and (a.weights or not a.validate_on):
        p.error("--greedy needs --validate-on and weighs its ingredients equally (no --weights)")
    if a.valid_tracks is not None and a.valid_tracks < 1:
        p.error("--valid-tracks must be at least 1")
    if a.valid_description is not None and not a.validate_on:
        p.error("--valid-description describes the --validate-on songs: give both")
    described = _description(a.valid_description, "--valid-description")  # an empty one before any loading
    validation = None
    if a.validate_on:
        # musdb's validation split of ROOT; a folder without one is refused with its name
        validation = Validation(
            ValidationSet.from_musdb(a.validate_on, is_wav=a.is_wav, limit=a.valid_tracks),
            device=a.device,
            description=described,
        )
    if a.greedy:
        print(greedy_soup(a.checkpoints, a.dest, validation=validation, half=a.half))
    else:
        print(average_checkpoints(a.checkpoints, a.dest, weights=a.weights, half=a.half, validation=validation))
    return 0


def run_push(argv: list[str]) -> int:
    p = argparse.ArgumentParser(
        prog="python -m training push",
        formatter_class=HelpFormatter,
        description="Upload a checkpoint folder (config, weights, card) to a Hub model repo.",
    )
    p.add_argument("checkpoint", type=Path, help="a run folder (its best/) or a checkpoint folder")
    p.add_argument("repo", help="user/name of the model repo (created if needed)")
    p.add_argument("--private", action="store_true", help="create the repo as private")
    a = p.parse_args(argv)
    print(push_to_hub(a.checkpoint, a.repo, private=a.private))
    return 0


def run_train(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    if args.resume:
        given = {name: getattr(args, name) for name in ("epochs", "patience") if getattr(args, name) is not None}
        cfg = resume_config(args.resume, max_steps=args.max_steps, max_minutes=args.max_minutes, **given)
        result = Trainer(cfg, resume=True).run()
    else:
        cfg = config_from_args(args)
        if (Path(cfg.out) / "last").exists():
            raise SeparationError(
                f"{cfg.out} already holds a run: --resume {cfg.out} to continue it, or choose another --out"
            )
        result = Trainer(cfg).run()
    print(
        f"{result['status']} after {result['epoch']} epochs, {result['step']} steps; "
        f"best validation loss {result['best_valid_loss']:.4f}; checkpoints in {cfg.out}/best and {cfg.out}/last"
    )
    if args.push_to_hub and result["status"] in ("finished", "early_stopped", "max_steps", "max_minutes"):
        print(push_to_hub(cfg.out, args.push_to_hub, private=args.private))
    return 0


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    return dispatch(
        argv,
        {"export": run_export, "push": run_push, "average": run_average},
        run_train,
        "last/ holds the state of the last finished step: --resume RUN continues from it",
    )


if __name__ == "__main__":
    exit_now(main())
