"""Command line for training.

python -m training --model dprnn --musdb-root ~/data/musdb18hq --is-wav --out runs/dprnn
python -m training --resume runs/dprnn                       # continue where it stopped
python -m training --model dprnn ... --push-to-hub user/dprnn-vocals
python -m training push runs/dprnn user/dprnn-vocals         # push an existing run's best/
python -m training export runs/dprnn assets/checkpoints/dprnn --scores results/  # ship it (float16)
torchrun --nproc-per-node 4 -m training --model dprnn ...    # data-parallel on 4 GPUs
python -m training.synthetic data/synthetic                  # an offline stand-in for MUSDB18-HQ
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from separation.errors import SeparationError

from .data import DataConfig
from .hub import export, push_to_hub
from .loop import TrainConfig, Trainer, resume_config
from .losses import LossConfig


def _value(text: str):
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m training", description="Train a separator on MUSDB18(-HQ).")
    p.add_argument("--model", default="dprnn", help="architecture: dprnn, conv1d or umx")
    p.add_argument(
        "--set", nargs="*", default=[], metavar="KEY=VALUE", help="model config overrides, e.g. hidden_size=64"
    )
    p.add_argument("--musdb-root", type=Path, help="MUSDB18 or MUSDB18-HQ folder (train/ and test/)")
    p.add_argument("--is-wav", action="store_true", help="MUSDB18-HQ (wav folders) instead of .stem.mp4")
    p.add_argument("--out", type=Path, default=Path("runs/dprnn"))
    p.add_argument("--resume", type=Path, metavar="RUN", help="continue the run in this folder (its last/)")
    p.add_argument("--push-to-hub", metavar="REPO", help="upload best/ with its model card when training ends")
    p.add_argument("--private", action="store_true", help="create the Hub repo as private")
    d, t = DataConfig(), TrainConfig()
    p.add_argument("--epochs", type=int, default=t.epochs)
    p.add_argument("--max-steps", type=int, help="stop after this many steps in all (saving last/)")
    p.add_argument("--batch-size", type=int, default=t.batch_size)
    p.add_argument("--lr", type=float, default=t.lr)
    p.add_argument("--patience", type=int, default=t.patience, help="early stopping patience in epochs")
    p.add_argument(
        "--lr-decay-patience",
        type=int,
        default=t.lr_decay_patience,
        help="epochs without improvement before the LR drops",
    )
    p.add_argument("--seconds", type=float, default=d.seconds, help="training chunk length")
    p.add_argument("--samples-per-track", type=int, default=d.samples_per_track, help="chunks per track per epoch")
    p.add_argument("--silent-vocals", type=float, help="share of chunks with muted vocals (default: as drawn)")
    p.add_argument("--no-remix", action="store_true", help="take all sources of a chunk from the same track")
    p.add_argument("--no-spec-augment", action="store_true")
    p.add_argument("--log-weight", type=float, default=LossConfig().log_weight)
    p.add_argument("--phase-weight", type=float, default=LossConfig().phase_weight)
    p.add_argument("--valid-tracks", type=int, help="validate on the first N validation tracks only")
    p.add_argument("--workers", type=int, default=t.workers, help="data loading processes")
    p.add_argument("--device", default=t.device)
    p.add_argument("--no-amp", action="store_true", help="no mixed precision on CUDA")
    p.add_argument("--seed", type=int, default=t.seed)
    return p


def config_from_args(args) -> TrainConfig:
    if args.musdb_root is None:
        raise SeparationError("--musdb-root is required (or --resume RUN)")
    overrides = {}
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep:
            raise SeparationError(f"--set {item!r}: expected KEY=VALUE")
        overrides[key] = _value(value)
    return TrainConfig(
        model=args.model,
        model_config=overrides,
        musdb_root=str(args.musdb_root),
        is_wav=args.is_wav,
        out=str(args.out),
        data=DataConfig(
            seconds=args.seconds,
            samples_per_track=args.samples_per_track,
            remix=not args.no_remix,
            silent_vocals=args.silent_vocals,
        ),
        loss=LossConfig(
            log_weight=args.log_weight, phase_weight=args.phase_weight, spec_augment=not args.no_spec_augment
        ),
        batch_size=args.batch_size,
        epochs=args.epochs,
        patience=args.patience,
        lr_decay_patience=args.lr_decay_patience,
        lr=args.lr,
        seed=args.seed,
        workers=args.workers,
        device=args.device,
        amp=not args.no_amp,
        max_steps=args.max_steps,
        valid_tracks=args.valid_tracks,
    )


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        if argv[:1] == ["export"]:
            p = argparse.ArgumentParser(
                prog="python -m training export", description="Copy a checkpoint, e.g. into assets/."
            )
            p.add_argument("checkpoint", type=Path, help="a run folder (its best/) or a checkpoint folder")
            p.add_argument("dest", type=Path)
            p.add_argument("--full-precision", action="store_true", help="keep float32 weights (default: float16)")
            p.add_argument(
                "--scores",
                type=Path,
                help="an eval results folder (python -m eval ... --out DIR) with this model's test scores",
            )
            p.add_argument(
                "--method",
                help="the results folder in --scores to take (default: the one whose recorded "
                "weights are this checkpoint's; other weights are refused)",
            )
            a = p.parse_args(argv[1:])
            print(export(a.checkpoint, a.dest, half=not a.full_precision, scores=a.scores, method=a.method))
            return 0
        if argv[:1] == ["push"]:
            p = argparse.ArgumentParser(prog="python -m training push")
            p.add_argument("checkpoint", type=Path, help="a run folder (its best/) or a checkpoint folder")
            p.add_argument("repo")
            p.add_argument("--private", action="store_true")
            a = p.parse_args(argv[1:])
            print(push_to_hub(a.checkpoint, a.repo, private=a.private))
            return 0
        args = build_parser().parse_args(argv)
        if args.resume:
            given = {
                name: getattr(args, name)
                for name in ("epochs", "patience")
                if f"--{name}" in argv or any(a.startswith(f"--{name}=") for a in argv)
            }
            cfg = resume_config(args.resume, max_steps=args.max_steps, **given)
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
        if args.push_to_hub and result["status"] in ("finished", "early_stopped", "max_steps"):
            print(push_to_hub(cfg.out, args.push_to_hub, private=args.private))
        return 0
    except SeparationError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
