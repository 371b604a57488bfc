"""The training loop: plain PyTorch, readable in one sitting (after nanoGPT's train.py).

    Trainer(TrainConfig(...)).run()

Per epoch: seeded batches of random chunks -> objective -> Adam step (gradient clipping, AMP
on CUDA) -> full-track validation -> LR schedule on the validation loss -> `best/` when it
improves -> `last/` always -> early stop after `patience` epochs without improvement.

`last/` holds the model (config.json + model.safetensors) and `trainer.pt` (optimizer,
scheduler, AMP scaler, epoch, position in the epoch, step, best score, early-stopping
counter, RNG state, history), written atomically. `Trainer(..., resume=True)` continues from
it exactly: the data of every step is a function of (seed, epoch, index), so a resumed run
takes the same steps a straight run would have taken. Ctrl-C (or SIGTERM) finishes the
current step, saves `last/` and stops.

With `torchrun --nproc-per-node N -m training ...` every rank trains on its own share of the
batches (DistributedDataParallel); rank 0 validates, logs and saves.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader
from tqdm import tqdm

from separation.checkpoints import WEIGHTS_NAME, load_checkpoint, save_checkpoint, weights_digest
from separation.errors import CheckpointError
from separation.models import build_model, get_architecture
from separation.models.base import MaskModel
from separation.separator import select_device
from separation.tracks import TARGETS, open_musdb
from songgen.describe import describe_generated

from .card import model_card
from .data import ChunkDataset, DataConfig, epoch_batches, mixture_of
from .losses import LossConfig, TrainingObjective
from .validation import ValidationSet, musdb_name, validate

log = logging.getLogger(__name__)
TRAINER_STATE = "trainer.pt"
FINE_TUNE_LR = 3e-4  # the sweep's best fine-tuning rate (1e-3 and 3e-3 did worse in the same time)
# A fine-tune's chunk length: from the same model, 55 minutes, 6-s chunks (half the steps) beat
# 3-s ones on unheard sounds, +0.29 dB vocals per song over 20 songs (p 0.024): the DPRNN's
# inter-chunk LSTM sees more context per example. From scratch the 3-s default stays (the
# sweep's 5-minute runs favoured their steps). Measurements: docs/experiments.md.
FINE_TUNE_SECONDS = 6.0


@dataclass
class TrainConfig:
    model: str = "dprnn"
    model_config: dict = field(default_factory=dict)  # overrides of the architecture's defaults
    musdb_root: str = ""
    is_wav: bool = False
    # More MUSDB-shaped folders whose every train/ track is training data (validation stays
    # musdb_root's): e.g. the rendered world plus the synthetic set, or MUSDB18-HQ plus own stems.
    extra_train: tuple[str, ...] = ()
    out: str = "runs/dprnn"
    data: DataConfig = field(default_factory=DataConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    batch_size: int = 8
    epochs: int = 1000
    patience: int = 20  # early stopping: epochs without a better validation loss
    lr: float = 1e-3  # from scratch; the CLI's default with --init-from is FINE_TUNE_LR
    weight_decay: float = 1e-5
    lr_decay_patience: int = 8
    lr_decay_gamma: float = 0.3
    clip_grad: float = 5.0
    seed: int = 42
    workers: int = 0
    device: str = "auto"
    amp: bool = True  # mixed precision where the device computes it natively (see autocast_dtype)
    max_steps: int | None = None  # stop (saving last/) after this many steps in all
    max_minutes: float | None = None  # stop after the first epoch that ends past this training time (in all)
    init_from: str | None = None  # start from this checkpoint's weights (fine-tuning), not at random
    valid_tracks: int | None = None  # validate on the first N validation tracks only
    keep_epochs: bool = False  # also save every epoch's weights in epochs/epoch-NNN/ (to average them)
    # The card's words for the training and validation data, replacing what the folders' metadata
    # (world.json, synthetic.json) say: for data changed on the way, e.g. excerpts coded as Ogg
    # Vorbis to fit a transfer limit and decoded into folders without that metadata.
    data_description: str | None = None
    valid_description: str | None = None
    log_audio_seconds: float = 10.0

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> TrainConfig:
        d = dict(d)
        d["data"] = DataConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.get("data", {}).items()})
        d["loss"] = LossConfig(**d.get("loss", {}))
        d["extra_train"] = tuple(d.get("extra_train", ()))
        return cls(**d)


def cpu_computes_bf16() -> bool:
    """Whether this CPU has bf16 instructions (AVX512-BF16 or AMX), with which oneDNN runs the
    matrix products, convolutions and LSTMs of a bf16 autocast natively: a DPRNN training step
    of 8 x 3 s took 458 ms instead of 623 (float32) on a 2-core AVX512-BF16 CPU (`./run.sh bench
    training_throughput --precision`). Without them bf16 is emulated and slower than float32."""
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")  # private, hence getattr
    return any(getattr(torch.cpu, name, lambda: False)() for name in checks)


def autocast_dtype(device: torch.device, amp: bool) -> torch.dtype | None:
    """The mixed precision a run trains in (None: float32): bf16 on CUDA where supported (else
    fp16 with a grad scaler) and on CPUs that compute bf16 natively."""
    if not amp:
        return None
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device.type == "cpu" and cpu_computes_bf16():
        return torch.bfloat16
    return None


def dtype_name(dtype: torch.dtype) -> str:
    """`torch.bfloat16` -> "bfloat16" (`getattr(torch, name)` is the dtype again)."""
    return str(dtype).removeprefix("torch.")


def precision_name(dtype: torch.dtype | None) -> str:
    return "float32" if dtype is None else f"{dtype_name(dtype)} autocast"


def initial_weights(cfg: TrainConfig) -> tuple[MaskModel, dict]:
    """The model of checkpoint `cfg.init_from` (a folder or Hub repo), to fine-tune, and how it
    was trained (`lineage`): it must be `cfg.model`, and `--set` overrides may only change what
    does not shape the weights."""
    model, info = load_checkpoint(cfg.init_from)
    if info.architecture != cfg.model:
        raise CheckpointError(f"--init-from {cfg.init_from} is a {info.architecture} checkpoint, not {cfg.model}")
    have = dataclasses.asdict(model.config)
    changed = {k: v for k, v in cfg.model_config.items() if have.get(k) != (tuple(v) if isinstance(v, list) else v)}
    if changed:
        weights = model.state_dict()
        model = build_model(cfg.model, {**have, **changed})
        try:
            model.load_state_dict(weights, strict=True)
        except RuntimeError as e:
            raise CheckpointError(
                f"--init-from {cfg.init_from}: --set {', '.join(changed)} changes the weights' shapes ({e})"
            ) from None
    # The SHA-256 of the weights started from: a path such as separation/weights/dprnn holds
    # different weights over time, so the path alone does not say which model was fine-tuned.
    return model.train(), {**lineage(info.training), "weights": weights_digest(model)}


LINEAGE_KEYS = (
    "data",
    "valid_data",
    "epochs",
    "steps",
    "batch_size",
    "chunk_seconds",
    "lr",
    "budget",
    "init_from",
    "weights",  # of a parent: the SHA-256 of the weights a fine-tune started from
)


def lineage(training: dict | None) -> dict:
    """What a model card needs of how a checkpoint was trained, its own ancestors included (a
    fine-tune of a fine-tune keeps the whole chain, so its card states the whole budget)."""
    training = training or {}
    out = {k: training[k] for k in LINEAGE_KEYS if training.get(k) is not None}
    if training.get("parent"):
        out["parent"] = lineage(training["parent"])
    if training.get("averaged_from"):  # an average (`training.average`): each ingredient's chain
        out["averaged_from"] = [
            {**lineage(part), **{k: part[k] for k in ("checkpoint", "weight", "weights", "valid_loss") if k in part}}
            for part in training["averaged_from"]
        ]
    return out


class Trainer:
    def __init__(self, cfg: TrainConfig, *, resume: bool = False):
        """A run from `cfg` (or, with `resume`, the run in `cfg.out` where it stopped): the
        distribution and device, the data, the model, the optimizer and the precision, in that order."""
        self.cfg = cfg
        self.out = Path(cfg.out)
        self._set_up_distribution()
        self.dataset, self.valid_set, self.data_name = self._get_datasets()
        self.valid_name = cfg.valid_description or self.valid_set.description

        self.epoch = self.batch = self.step = self.bad_epochs = 0
        self.trained_before, self._started = 0.0, None  # seconds trained by earlier processes of this run
        self.best = math.inf
        self.history: list[dict] = []
        self.epoch_sums = _empty_sums()  # train loss and timings of the current epoch so far
        torch.manual_seed(cfg.seed)
        self.model, self.parent, state = self._get_model(resume)
        self.objective, self.train_module = self._get_objective()
        self.optimizer, self.scheduler = self._get_optimizer()
        self.amp_dtype, self.scaler = self._get_precision(state)
        if self.is_main:
            log.info("training on %s in %s", self.device, precision_name(self.amp_dtype))
        if state is not None:
            self._restore(state)
            log.info(
                "resuming %s from epoch %d, step %d (batch %d of the epoch)",
                self.out,
                self.epoch,
                self.step,
                self.batch,
            )
        self.stop_requested = False
        self.timing = {"steps": 0, "data_wait": 0.0, "compute": 0.0}  # this process, for benchmarks
        self.writer = None

    # ------------------------------------------------------------------ set-up

    def _set_up_distribution(self) -> None:
        """Rank and number of processes (torchrun sets them; 1 otherwise) and this process's device."""
        self.rank, self.world_size, local_rank = _init_distributed()
        if self.world_size > 1 and torch.cuda.is_available():
            self.device = torch.device("cuda", local_rank)
            torch.cuda.set_device(self.device)
        else:
            self.device = select_device(self.cfg.device)
        self.is_main = self.rank == 0

    def _get_datasets(self) -> tuple[ChunkDataset, ValidationSet, str]:
        """Training chunks from --musdb-root's train split and every --extra-train folder,
        validation tracks from --musdb-root, and the words the card uses for the training data."""
        cfg = self.cfg
        # With --extra-train, --musdb-root may hold validation songs alone (e.g. sung by voices
        # kept out of training: `python -m songgen.world --sounds valid`).
        train_tracks = open_musdb(
            cfg.musdb_root, is_wav=cfg.is_wav, subset="train", split="train", required=not cfg.extra_train
        )
        counts = [len(train_tracks)]  # per folder, for the card
        for root in cfg.extra_train:
            extra = open_musdb(root, is_wav=cfg.is_wav, subset="train")
            train_tracks += extra
            counts.append(len(extra))
        valid_set = ValidationSet.from_musdb(cfg.musdb_root, is_wav=cfg.is_wav, limit=cfg.valid_tracks)
        dataset = ChunkDataset(train_tracks, cfg.data, seed=cfg.seed)
        return dataset, valid_set, cfg.data_description or _describe_data(cfg, counts)

    def _get_model(self, resume: bool) -> tuple[MaskModel, dict | None, dict | None]:
        """(model on the device, how an --init-from checkpoint was trained, the saved trainer
        state of a resumed run): the run's own weights, a checkpoint's, or new ones."""
        cfg, parent, state = self.cfg, None, None
        if resume:
            model, state = load_run(self.out)
        elif cfg.init_from:
            model, parent = initial_weights(cfg)
        else:
            arch = get_architecture(cfg.model)
            base = dataclasses.asdict(arch.config_class())
            model = build_model(cfg.model, {**base, **cfg.model_config})
            init_input_statistics(model, self.dataset)
        return model.to(self.device), parent, state

    def _get_objective(self) -> tuple[TrainingObjective, torch.nn.Module]:
        """The model with its loss, and what a step calls: the same, wrapped in DDP on several processes."""
        objective = TrainingObjective(self.model, self.cfg.loss)
        if self.world_size == 1:
            return objective, objective
        ids = [self.device.index] if self.device.type == "cuda" else None
        return objective, torch.nn.parallel.DistributedDataParallel(objective, device_ids=ids)

    def _get_optimizer(self) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.ReduceLROnPlateau]:
        cfg = self.cfg
        optimizer = torch.optim.Adam(self.model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer, factor=cfg.lr_decay_gamma, patience=cfg.lr_decay_patience
        )
        return optimizer, scheduler

    def _get_precision(self, state: dict | None) -> tuple[torch.dtype | None, torch.amp.GradScaler]:
        """The autocast dtype (None: float32) and the gradient scaler float16 needs."""
        amp_dtype = autocast_dtype(self.device, self.cfg.amp)
        if state is not None:
            # A resumed run keeps the precision it ran in (runs from before CPU bf16 ran in float32).
            saved = state.get("precision", {"device": "cpu", "dtype": None})
            if saved["device"] == self.device.type:
                amp_dtype = getattr(torch, saved["dtype"]) if saved["dtype"] else None
        return amp_dtype, torch.amp.GradScaler("cuda", enabled=amp_dtype == torch.float16)

    # ------------------------------------------------------------------ state

    def _state(self) -> dict:
        return {
            "config": self.cfg.to_dict(),
            "epoch": self.epoch,
            "batch": self.batch,
            "step": self.step,
            "best": self.best,
            "bad_epochs": self.bad_epochs,
            "history": self.history,
            "trained_seconds": self.elapsed(),
            "epoch_sums": dict(self.epoch_sums),
            "parent": self.parent,
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "precision": {
                "device": self.device.type,
                "dtype": dtype_name(self.amp_dtype) if self.amp_dtype else None,
            },
            "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        }

    def _restore(self, state: dict) -> None:
        self.epoch, self.batch, self.step = state["epoch"], state["batch"], state["step"]
        self.best, self.bad_epochs, self.history = state["best"], state["bad_epochs"], state["history"]
        self.trained_before = state.get("trained_seconds", (state["history"] or [{}])[-1].get("elapsed", 0.0))
        self.epoch_sums = {**_empty_sums(), **state.get("epoch_sums", {})}
        self.parent = state.get("parent")
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        torch.set_rng_state(state["torch_rng"])
        if state["cuda_rng"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda_rng"])

    def _training_info(self) -> dict:
        last = self.history[-1] if self.history else {}
        return {
            "data": self.data_name,
            "valid_data": self.valid_name,
            "epochs": self.epoch,
            "steps": self.step,
            "batch_size": self.cfg.batch_size * self.world_size,
            "chunk_seconds": self.cfg.data.seconds,
            "lr": self.cfg.lr,
            "init_from": self.cfg.init_from,
            **({"parent": self.parent} if self.parent else {}),
            "budget": f"{last.get('elapsed', 0) / 60:.0f} min of training on {self.device.type}"
            + self._hardware()
            + f", {precision_name(self.amp_dtype)}",
            "valid": {k: v for k, v in last.items() if k.startswith("valid")},
            "best_valid_loss": self.best,
        }

    def _hardware(self) -> str:
        """' (what the budget's minutes were spent on)': the GPU's name, since an H100's minute
        trained DPRNN on 15-30 times the examples of a 2-core CPU's (docs/training.md), or the CPU threads;
        nothing for other devices."""
        if self.device.type == "cuda":
            gpus = f"{self.world_size} x " if self.world_size > 1 else ""
            return f" ({gpus}{torch.cuda.get_device_name(self.device)})"
        if self.device.type == "cpu":
            return f" ({torch.get_num_threads()} CPU threads)"
        return ""

    def save_last(self) -> None:
        if not self.is_main:
            return
        state = self._state()
        save_checkpoint(
            self.model,
            self.out / "last",
            training=self._training_info(),
            extra={TRAINER_STATE: lambda p: torch.save(state, p)},
        )

    def save_epoch(self, epoch: int) -> None:
        """This epoch's weights as a checkpoint of their own, `epochs/epoch-NNN/` (weights and
        config, ~15 MB for the default DPRNN): snapshots for stochastic weight averaging
        (Izmailov et al. 2018) with `python -m training average`."""
        save_checkpoint(self.model, self.out / "epochs" / f"epoch-{epoch:03d}", training=self._training_info())

    def save_best(self) -> None:
        info = self._training_info()
        save_checkpoint(self.model, self.out / "best", training=info, card=model_card(self.model, info))

    # ------------------------------------------------------------------ loop

    def run(self) -> dict:
        cfg = self.cfg
        if self.is_main:
            self.out.mkdir(parents=True, exist_ok=True)
            (self.out / "train_config.json").write_text(json.dumps(cfg.to_dict(), indent=2) + "\n")
            from torch.utils.tensorboard import SummaryWriter  # heavy (~1 s): only when training starts

            self.writer = SummaryWriter(str(self.out / "tensorboard"))
        previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
        for s in previous:
            signal.signal(s, self._request_stop)
        try:
            return self._run()
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)
            if self.writer is not None:
                self.writer.close()

    def _request_stop(self, signum, frame) -> None:
        if self.stop_requested:  # second Ctrl-C: stop now, last/ is from the previous save
            raise KeyboardInterrupt
        self.stop_requested = True
        log.warning("stopping after this step (Ctrl-C again to stop at once)")

    def finished(self) -> str | None:
        """Why this run has nothing left to train (a resumed finished run), or None."""
        cfg = self.cfg
        if cfg.max_steps is not None and self.step >= cfg.max_steps:
            return "max_steps"
        if cfg.max_minutes is not None and self.trained_before >= 60 * cfg.max_minutes:
            return "max_minutes"
        if self.bad_epochs >= cfg.patience:
            return "early_stopped"
        if self.epoch >= cfg.epochs:
            return "finished"
        return None

    def _run(self) -> dict:
        cfg = self.cfg
        done = self.finished()
        if done is not None:
            why = {
                "max_steps": f"it reached --max-steps {cfg.max_steps} (step {self.step}); raise --max-steps to go on",
                "early_stopped": f"it stopped early after {self.bad_epochs} epochs without a better validation loss "
                f"(--patience {cfg.patience}); raise --patience to go on",
                "finished": f"it trained all {cfg.epochs} epochs; raise --epochs to go on",
                "max_minutes": f"it trained {self.trained_before / 60:.1f} min (--max-minutes {cfg.max_minutes}); "
                "raise --max-minutes to go on",
            }[done]
            log.warning("%s: nothing to train: %s", self.out, why)
            return self._summary(done)
        status = "finished"
        self._started = time.perf_counter()
        while self.epoch < cfg.epochs:
            batches = epoch_batches(
                len(self.dataset),
                cfg.batch_size,
                seed=cfg.seed,
                epoch=self.epoch,
                rank=self.rank,
                world_size=self.world_size,
            )
            loader = self.loader(batches[self.batch :])
            self.model.train()
            bar = tqdm(
                total=len(batches),
                initial=self.batch,
                desc=f"epoch {self.epoch}",
                disable=not self.is_main,
                leave=False,
            )
            sums = self.epoch_sums  # the whole epoch's, also across a resume in its middle
            tick = time.perf_counter()
            for targets in loader:
                got = time.perf_counter()
                loss, parts = self._train_step(targets)
                finished_at = time.perf_counter()
                wait, compute, tick = got - tick, finished_at - got, finished_at
                self.timing["steps"] += 1
                self.timing["data_wait"] += wait
                self.timing["compute"] += compute
                sums["loss"] += loss
                sums["steps"] += 1
                sums["data_wait"] += wait
                sums["compute"] += compute
                self.batch += 1
                self.step += 1
                bar.update()
                bar.set_postfix(loss=f"{loss:.4f}")
                if self.writer is not None and self.step % 10 == 0:
                    self.writer.add_scalar("train/loss_step", loss, self.step)
                if (cfg.max_steps is not None and self.step >= cfg.max_steps) or self.stop_requested:
                    bar.close()
                    self.save_last()
                    return self._summary("stopped" if self.stop_requested else "max_steps")
            bar.close()
            self.batch = 0
            steps = max(1, sums["steps"])
            record = {"epoch": self.epoch, "train_loss": sums["loss"] / steps if sums["steps"] else float("nan")}
            record["data_wait_per_step"] = sums["data_wait"] / steps
            record["compute_per_step"] = sums["compute"] / steps
            self.epoch_sums = _empty_sums()
            record.update(self.validate())
            self.scheduler.step(record["valid_loss"])
            record["lr"] = self.optimizer.param_groups[0]["lr"]
            record["elapsed"] = self.elapsed()
            improved = record["valid_loss"] < self.best
            if improved:
                self.best, self.bad_epochs = record["valid_loss"], 0
            else:
                self.bad_epochs += 1
            self.history.append(record)
            self.epoch += 1
            if self.is_main:
                self._log_epoch(record)
                if improved:
                    self.save_best()
                if cfg.keep_epochs:
                    self.save_epoch(record["epoch"])
            self.save_last()
            if self.bad_epochs >= cfg.patience:
                status = "early_stopped"
                log.info("early stop: no better validation loss for %d epochs", self.bad_epochs)
                break
            if cfg.max_minutes is not None and self.elapsed() >= 60 * cfg.max_minutes:
                status = "max_minutes"  # equal wall-clock comparisons: whole epochs, validated
                log.info("time limit: %.1f min of training (--max-minutes %g)", self.elapsed() / 60, cfg.max_minutes)
                break
        return self._summary(status)

    def loader(self, batches: list[list[int]]) -> DataLoader:
        """This epoch's batches of training targets, made by `cfg.workers` processes (and pinned
        for the copy to a GPU)."""
        self.dataset.epoch = self.epoch
        return DataLoader(
            self.dataset, batch_sampler=batches, num_workers=self.cfg.workers, pin_memory=self.device.type == "cuda"
        )

    def elapsed(self) -> float:
        """Seconds this run has trained (steps and validation), resumes included (`history` has it
        per epoch; `--max-minutes` counts it)."""
        return self.trained_before + (time.perf_counter() - self._started if self._started is not None else 0.0)

    def _summary(self, status: str) -> dict:
        return {
            "status": status,
            "epoch": self.epoch,
            "step": self.step,
            "best_valid_loss": self.best,
            "history": self.history,
            "timing": dict(self.timing),
        }

    def _train_step(self, targets: torch.Tensor) -> tuple[float, dict]:
        """One optimiser step on a batch of targets `(B, 2 sources, 2, T)`: their mixture is summed
        here, on the training device (the same float32 sum as on the CPU), not shipped with them."""
        cfg = self.cfg
        targets = targets.to(self.device, non_blocking=True)
        mix = mixture_of(targets)
        # SpecAugment's randomness, like the data's, is a function of the step: resumable.
        gen = torch.Generator().manual_seed(cfg.seed * 7919 + self.step * 31 + self.rank)
        with torch.autocast(
            self.device.type, dtype=self.amp_dtype or torch.float32, enabled=self.amp_dtype is not None
        ):
            loss, parts = self.train_module(mix, targets, gen)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.unscale_(self.optimizer)
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.clip_grad)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        return float(loss.detach()), parts

    # ------------------------------------------------------------------ validation

    @torch.no_grad()
    def validate(self) -> dict:
        """Whole validation tracks through the inference chunker (no Wiener EM, the training
        objective's own estimate): loss and uSDR per source. Rank 0 computes, all ranks get it."""
        result = [None]
        if self.is_main:
            result[0] = self._validate()
        if self.world_size > 1:
            dist.broadcast_object_list(result, src=0)
        return result[0]

    def _validate(self) -> dict:
        keep = int(self.cfg.log_audio_seconds * self.model.sample_rate)
        record, self._examples = validate(self.model, self.valid_set, self.cfg.loss, self.device, keep)
        return record

    def _log_epoch(self, record: dict) -> None:
        w = self.writer
        for key, value in record.items():
            if key != "epoch":
                w.add_scalar(key.replace("valid_", "valid/").replace("train_", "train/"), value, self.epoch)
        tqdm.write(
            f"epoch {record['epoch']}: train {record['train_loss']:.4f}  valid {record['valid_loss']:.4f}  "
            + "  ".join(f"uSDR {s} {record[f'valid_usdr_{s}']:.2f} dB" for s in TARGETS)
            + f"  lr {record['lr']:.1e}  data wait {record['data_wait_per_step'] * 1000:.0f} ms/step"
        )
        if self._examples is None:
            return
        mix, est, targets = self._examples  # the first `log_audio_seconds` of the first validation track
        sr = self.model.sample_rate
        if self.epoch == 1:
            w.add_audio("example/mixture", mix.mean(0), self.epoch, sample_rate=sr)
        for i, s in enumerate(TARGETS):
            w.add_audio(f"example/{s}", est[i].mean(0).clamp(-1, 1), self.epoch, sample_rate=sr)
        w.add_image("example/vocals_estimate_vs_reference", _spectrogram_image(est[0], targets[0]), self.epoch)


def _empty_sums() -> dict:
    return {"loss": 0.0, "steps": 0, "data_wait": 0.0, "compute": 0.0}


def _spectrogram_image(estimate: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """`(1, H, W)` grey image: estimate's log spectrogram above the reference's (low bins)."""
    window = torch.hann_window(2048)
    rows = []
    for x in (estimate, reference):
        spec = torch.stft(x.mean(0), 2048, 512, window=window, return_complex=True).abs()[:512]
        db = 20 * torch.log10(spec + 1e-6)
        rows.append(((db - db.max() + 80).clamp(0, 80) / 80).flip(0))
    return torch.cat(rows, dim=0)[None]


def init_input_statistics(model, dataset: ChunkDataset, chunks: int = 16) -> None:
    """Let the model set its input normalisation from some training mixtures, as Open-Unmix
    does before training (`SeparationModel.init_from_data`)."""
    gen = np.random.default_rng(0)
    idx = gen.choice(len(dataset), size=min(chunks, len(dataset)), replace=False)
    with torch.no_grad():
        model.init_from_data(torch.stack([mixture_of(dataset[int(i)]) for i in idx]))


def load_run(out: Path) -> tuple:
    """The model and trainer state of `out/last/`, or a clear error if it is partial or corrupt."""
    last = out / "last"
    if not last.is_dir():
        raise CheckpointError(f"--resume {out}: no {last} (nothing to resume)")
    missing = [n for n in ("config.json", WEIGHTS_NAME, TRAINER_STATE) if not (last / n).exists()]
    if missing:
        raise CheckpointError(f"{last} is incomplete (missing {', '.join(missing)}): restart the run or restore a copy")
    model, _ = load_checkpoint(last)
    try:
        state = torch.load(last / TRAINER_STATE, map_location="cpu", weights_only=True)
    except Exception as e:  # truncated zip, unpickling refusal, ...: all mean "cannot trust it"
        raise CheckpointError(f"{last / TRAINER_STATE} is corrupt ({type(e).__name__}: {e}); restart the run") from None
    needed = {"epoch", "batch", "step", "best", "bad_epochs", "optimizer", "scheduler", "scaler", "torch_rng", "config"}
    if not isinstance(state, dict) or needed - set(state):
        raise CheckpointError(f"{last / TRAINER_STATE} lacks {sorted(needed - set(state or {}))}: not a trainer state")
    return model, state


def resume_config(out: Path, **overrides) -> TrainConfig:
    """The run's own config (from its trainer state), with the given fields changed."""
    _, state = load_run(Path(out))
    cfg = TrainConfig.from_dict(state["config"])
    return dataclasses.replace(cfg, out=str(out), **{k: v for k, v in overrides.items() if v is not None})


def _describe_data(cfg: TrainConfig, counts: list[int]) -> str:
    """The training data, from the number of tracks each folder gave (`counts`: --musdb-root's
    training split, then each --extra-train folder's train/). A --musdb-root that gave none (it
    holds validation songs alone) is not training data and is not named here."""
    main = [describe_generated(cfg.musdb_root, tracks=counts[0], kind="train")] if counts[0] else []
    if main and main[0] is None:
        main = [f"{musdb_name(cfg.is_wav)} train split ({counts[0]} tracks), musdb's 14 validation tracks held out"]
    extras = [
        describe_generated(root, tracks=n, kind="train") or f"the {n} train/ tracks of {Path(root).name}"
        for root, n in zip(cfg.extra_train, counts[1:], strict=True)
    ]
    return " plus ".join([*main, *extras])


def _init_distributed() -> tuple[int, int, int]:
    """(rank, world size, local rank) under torchrun, (0, 1, 0) in a plain process."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return 0, 1, 0
    if not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return dist.get_rank(), world_size, int(os.environ.get("LOCAL_RANK", "0"))
