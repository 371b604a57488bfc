"""Training throughput: examples/s of DPRNN and Open-Unmix at the same batch, and whether
data loading keeps up (time waiting on data per step), through the real Trainer.

    ./run.sh bench training_throughput [--steps 12] [--batch-size 8] [--seconds 6] [--device cpu] [--data world]
    ./run.sh bench training_throughput --precision --workers 0   # the trainer's precision vs float32

A small MUSDB-shaped set is generated into a temporary folder: synthetic (default) or rendered
from sampled sounds (`--data world`, with the random-EQ augmentation of the tuned defaults). The first steps are
warm-up and not counted. Prints examples/s of each model and the ratio dprnn / umx, and how
many examples/s the training loader makes alone (the trainer's own DataLoader, no model) with
the same workers: when a step waits on data although the loader alone outpaces the step, the
wait is in handing batches over (shared memory, pinning, the copy), not in making them.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import common  # noqa: F401  (puts the project on sys.path)
from songgen.synthetic import write_musdb_folder
from songgen.world.render import write_world
from training.data import DataConfig, epoch_batches
from training.loop import TrainConfig, Trainer, precision_name


def config(model: str, root: Path, out: Path, args, workers: int, amp: bool = True) -> TrainConfig:
    return TrainConfig(
        model=model,
        musdb_root=str(root),
        is_wav=True,
        out=str(out),
        data=DataConfig(seconds=args.seconds, samples_per_track=64, eq=0.5 if args.data == "world" else 0.0),
        batch_size=args.batch_size,
        max_steps=args.warmup,
        workers=workers,
        device=args.device,
        amp=amp,
    )


def measure(model: str, root: Path, out: Path, args, workers: int, amp: bool = True) -> dict:
    trainer = Trainer(config(model, root, out, args, workers, amp))
    trainer.run()  # warm-up steps
    trainer.timing = {"steps": 0, "data_wait": 0.0, "compute": 0.0}
    trainer.cfg.max_steps = args.warmup + args.steps
    t = trainer.run()["timing"]
    step = (t["data_wait"] + t["compute"]) / t["steps"]
    return {
        "examples_per_s": args.batch_size / step,
        "wait": t["data_wait"] / t["steps"],
        "step": step,
        "precision": precision_name(trainer.amp_dtype),
    }


def loader_alone(root: Path, out: Path, args, workers: int) -> tuple[float, float]:
    """(examples/s, MB a batch) of the trainer's DataLoader iterated with no model, after the
    same warm-up batches (which also start its workers)."""
    trainer = Trainer(config("dprnn", root, out, args, workers))
    batches = epoch_batches(len(trainer.dataset), args.batch_size, seed=0, epoch=0)
    it = iter(trainer.loader(batches[: args.warmup + args.steps]))
    for _ in range(args.warmup):
        next(it)
    start = time.perf_counter()
    for batch in it:
        size = batch.numel() * batch.element_size()
    return args.batch_size * args.steps / (time.perf_counter() - start), size / 1e6


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=12)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--seconds", type=float, default=6.0)
    p.add_argument("--device", default="cpu")
    p.add_argument("--workers", type=int, nargs="*", default=[0, 1])
    p.add_argument("--data", choices=["synthetic", "world"], default="synthetic")
    p.add_argument("--precision", action="store_true", help="also time float32 and print the ratio")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        if args.data == "world":
            root = Path(tmp) / "musdb"
            write_world(root, train=6, valid=1, test=0, seconds=12.0, jobs=2)
        else:
            root = write_musdb_folder(Path(tmp) / "musdb", train=6, valid=1, test=0, seconds=12.0)
        print(
            f"{args.data} data, batch {args.batch_size} x {args.seconds:.0f}-s stereo chunks on {args.device}, "
            f"{args.steps} steps after {args.warmup} warm-up"
        )
        for workers in args.workers:
            res = {m: measure(m, root, Path(tmp) / f"{m}-{workers}", args, workers) for m in ("dprnn", "umx")}
            for m, r in res.items():
                print(
                    f"  workers={workers} {m:6s} {r['examples_per_s']:6.2f} examples/s ({r['precision']}) "
                    f"step {r['step'] * 1000:6.0f} ms, "
                    f"waiting on data {r['wait'] * 1000:5.0f} ms/step ({100 * r['wait'] / r['step']:.0f}%)"
                )
            print(
                f"  workers={workers} ratio dprnn/umx examples/s = "
                f"{res['dprnn']['examples_per_s'] / res['umx']['examples_per_s']:.2f}"
            )
            if args.precision:
                for m in res:
                    fp32 = measure(m, root, Path(tmp) / f"{m}-{workers}-fp32", args, workers, amp=False)
                    print(
                        f"  workers={workers} {m:6s} {fp32['examples_per_s']:6.2f} examples/s in float32, "
                        f"step {fp32['step'] * 1000:6.0f} ms: ratio {res[m]['precision']}/float32 "
                        f"examples/s = {res[m]['examples_per_s'] / fp32['examples_per_s']:.2f}"
                    )
            rate, mb = loader_alone(root, Path(tmp) / f"loader-{workers}", args, workers)
            print(
                f"  workers={workers} the loader alone: {rate:6.2f} examples/s ({mb:.1f} MB a batch), "
                f"ratio to dprnn's training examples/s = {rate / res['dprnn']['examples_per_s']:.2f}"
            )


if __name__ == "__main__":
    main()
