"""Training on a generated MUSDB18-HQ-shaped set, read through `musdb`: data, loop, resume,
early stopping, checkpoints, Hub upload, CLI and DDP."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shlex
import shutil
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf
import torch
from safetensors.torch import load_file
from scipy.signal import welch

from separation import Separator
from separation.checkpoints import load_checkpoint
from separation.errors import CheckpointError, SeparationError
from separation.tracks import ACCOMPANIMENT, accompaniment, load_track, open_musdb
from songgen.synthetic import SOURCES, Traits, make_track, vocal_free_share, write_musdb_folder, write_track
from tests.helpers import HF_CACHE, ROOT, SR, TINY_CONFIGS, tiny_train_config
from training.data import ChunkDataset, DataConfig, epoch_batches, mixture_of, random_eq, random_reverb, varispeed
from training.loop import TrainConfig, Trainer, load_run, resume_config
from training.sweep import main as sweep_main


def _cfg(root, out, **kw) -> TrainConfig:
    return tiny_train_config(root, out, **kw)


# --------------------------------------------------------------------------- synthetic data


def test_synthetic_set_is_musdb_shaped(musdb_root):
    train = open_musdb(musdb_root, is_wav=True, subset="train", split="train")
    valid = open_musdb(musdb_root, is_wav=True, subset="train", split="valid")
    test = open_musdb(musdb_root, is_wav=True, subset="test")
    assert (len(train), len(valid), len(test)) == (3, 1, 1)
    assert valid[0].name == "Actions - One Minute Smile"  # musdb's own validation list decides
    folder = musdb_root / "test" / test[0].name
    stems = {s: sf.read(folder / f"{s}.wav", dtype="float32")[0] for s in (*SOURCES, "mixture")}
    assert stems["mixture"].shape == (4 * SR, 2)
    np.testing.assert_array_equal(stems["mixture"], sum(stems[s] for s in SOURCES))  # exact, as 16-bit files
    # musdb reads it too, through its own (ffmpeg) decoder
    np.testing.assert_allclose(test[0].targets["vocals"].audio, stems["vocals"], atol=1e-4)


@pytest.mark.slow
def test_synthetic_tracks_are_deterministic_and_not_trivial():
    a, b, c = make_track(5, 6.0), make_track(5, 6.0), make_track(6, 6.0)
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert not np.array_equal(a["vocals"], c["vocals"])
    scores = []
    for seed in range(4):
        t = make_track(seed, 8.0)
        v, acc = t["vocals"], t["mixture"] - t["vocals"]
        sung = np.abs(v).max(axis=1) > 1e-3  # while singing: SDR of the mixture as vocals estimate
        scores.append(10 * np.log10((v[sung] ** 2).sum() / (acc[sung] ** 2).sum()))
        frames = np.sqrt((v.reshape(-1, 2205, 2) ** 2).mean(axis=(1, 2)))  # 50-ms frames
        silent = (frames < 1e-3 * frames.max()).mean()
        assert 0.3 <= silent <= 0.7, "vocal-free intro, break, outro and pauses: 30-70 % of a track"
    assert -4 < np.median(scores) < 4


@pytest.mark.slow
def test_synthetic_tracks_carry_real_datas_traits_at_musdb_like_rates():
    tracks = [make_track(seed, 6.0) for seed in range(20)]
    dual_mono = [np.array_equal(t["vocals"][:, 0], t["vocals"][:, 1]) for t in tracks]
    assert 10 <= sum(dual_mono) <= 19  # most vocals are exactly left == right, not all
    assert 5 <= sum(np.array_equal(t["bass"][:, 0], t["bass"][:, 1]) for t in tracks) <= 18
    hard = [bool((t["other"] == 0).all(axis=0).any()) for t in tracks]  # one channel exactly zero
    assert 1 <= sum(hard) <= 10
    for t in tracks:
        share = vocal_free_share(t["vocals"])
        assert 0.3 <= share <= 0.7
        # the vocal stem is exactly zero in whole seconds of the track (an intro, a break, an outro)
        seconds = np.abs(t["vocals"][: 6 * SR].reshape(6, SR, 2)).max(axis=(1, 2))
        assert (seconds == 0).any() or share < 0.45
        np.testing.assert_array_equal(t["mixture"], sum(t[s] for s in SOURCES))


def test_traits_can_be_turned_off_without_changing_the_music():
    real, plain = make_track(3, 6.0), make_track(3, 6.0, Traits.none())
    assert not np.array_equal(plain["vocals"][:, 0], plain["vocals"][:, 1])
    assert not (plain["other"] == 0).all(axis=0).any()
    assert vocal_free_share(plain["vocals"]) < vocal_free_share(real["vocals"])
    # the notes are the same: drums, untouched by every trait, differ only by the final level
    a, b = real["drums"][:, 0].astype(np.float64), plain["drums"][:, 0].astype(np.float64)
    assert np.corrcoef(a, b)[0, 1] > 0.999
    silent = make_track(3, 6.0, silent_drums=True)
    assert not silent["drums"].any() and silent["vocals"].any()


def test_synthetic_voice_overlaps_the_band_in_frequency():
    t = make_track(2, 8.0)

    def spectrum(x):
        return np.abs(np.fft.rfft(x[:, 0])) ** 2

    f = np.fft.rfftfreq(t["vocals"].shape[0], 1 / SR)
    band = (f > 200) & (f < 3000)
    voice_share = spectrum(t["vocals"])[band].sum() / spectrum(t["vocals"]).sum()
    other_share = spectrum(t["other"])[band].sum() / spectrum(t["other"]).sum()
    assert voice_share > 0.5 and other_share > 0.3


# --------------------------------------------------------------------------- chunks


def test_chunks_shape_sum_and_determinism(musdb_root):
    tracks = open_musdb(musdb_root, is_wav=True, subset="train", split="train")
    ds = ChunkDataset(tracks, DataConfig(seconds=1.5, samples_per_track=4), seed=7)
    assert len(ds) == 12
    targets = ds[5]
    assert targets.shape == (2, 2, int(1.5 * SR)) and targets.dtype == torch.float32
    batch = torch.stack([ds[4], targets])
    mix = mixture_of(batch)  # what the trainer makes of a batch: the exact sum, per example
    assert mix.shape == (2, 2, int(1.5 * SR))
    torch.testing.assert_close(mix[1], targets[0] + targets[1], atol=0, rtol=0)
    again = ds[5]
    ds.epoch = 1
    other_epoch = ds[5]
    assert torch.equal(targets, again) and not torch.equal(targets, other_epoch)


def test_silent_vocal_rate(musdb_root):
    tracks = open_musdb(musdb_root, is_wav=True, subset="train", split="train")
    muted = ChunkDataset(tracks, DataConfig(seconds=0.5, samples_per_track=8, silent_vocals=1.0))
    assert all(float(muted[i][0].abs().max()) == 0 for i in range(6))
    sung = ChunkDataset(tracks, DataConfig(seconds=0.5, samples_per_track=8, silent_vocals=0.0))
    rms = [float(sung[i][0].square().mean().sqrt()) for i in range(12)]
    assert min(rms) > 10 ** (-40 / 20)


def test_no_augmentation_reads_the_track_as_is(musdb_root):
    tracks = open_musdb(musdb_root, is_wav=True, subset="train", split="train")
    ds = ChunkDataset(
        tracks, DataConfig(seconds=4.0, samples_per_track=1, remix=False, gain=(1.0, 1.0), channel_swap=False, eq=0.0)
    )
    targets = ds[0]
    full_mix, full_targets = load_track(tracks[0])
    torch.testing.assert_close(mixture_of(targets), full_mix[:, : targets.shape[-1]])  # the file's own mixture
    torch.testing.assert_close(targets, full_targets[..., : targets.shape[-1]])


@pytest.mark.slow
def test_musdb18_stem_mp4_is_read_by_the_training_loader(tmp_path):
    """MUSDB18 (not HQ): one AAC .stem.mp4 per track, decoded through musdb/stempeg/ffmpeg."""
    root = write_musdb_folder(tmp_path / "musdb18", train=2, valid=1, test=0, seconds=3.0, seed=2, stems_mp4=True)
    assert sorted(p.name for p in (root / "train").iterdir())[0].endswith(".stem.mp4")
    tracks = open_musdb(root, is_wav=False, subset="train", split="train")
    assert len(tracks) == 2 and not tracks[0].is_wav
    ds = ChunkDataset(tracks, DataConfig(seconds=1.0, samples_per_track=2), seed=1)
    targets = ds[1]
    assert targets.shape == (2, 2, SR)  # exactly the chunk, whatever AAC's padding
    full_mix, full_targets = load_track(tracks[0])
    reference = make_track(2 * 100_003, 3.0)["vocals"].T  # what was encoded
    decoded = full_targets[0, :, : reference.shape[-1]].numpy()
    snr = 10 * np.log10((reference**2).sum() / ((reference - decoded) ** 2).sum())
    assert snr > 25  # AAC at 256 kbit/s, aligned (no decoder delay left in)
    run = Trainer(_cfg(root, tmp_path / "run", is_wav=False, max_steps=1)).run()
    assert run["step"] == 1 and (tmp_path / "run" / "last" / "trainer.pt").exists()


@pytest.mark.slow
def test_training_on_full_length_tracks_in_bounded_memory(tmp_path):
    """A 7-minute training track and a 7-minute validation track: chunks are read a few seconds
    at a time and validation goes a segment at a time, so a step and a validation of a tiny
    model stay within 3 GB (it took ~7.7 GB when validation held whole-track spectrograms)."""
    from bench.procmem import run_measured

    root = tmp_path / "full"
    for name, seed in (("Full - Train Song", 21), ("Actions - One Minute Smile", 22)):
        song = make_track(seed, 30.0)
        write_track(root / "train" / name, {k: np.tile(v, (14, 1)) for k, v in song.items()})
    (root / "test").mkdir()
    cmd = [
        sys.executable,
        "-m",
        "training",
        "--musdb-root",
        str(root),
        "--is-wav",
        "--out",
        str(tmp_path / "run"),
        "--epochs",
        "1",
        "--samples-per-track",
        "2",
        "--batch-size",
        "2",
        "--seconds",
        "2",
        "--set",
        "hidden_size=16",
        "feature_dim=16",
        "num_blocks=1",
    ]
    peak, code = run_measured(
        cmd,
        cwd=ROOT,
        env=dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    assert code == 0
    assert peak < 3 * 2**30, f"peak {peak / 2**30:.2f} GB"
    state = load_run(tmp_path / "run")[1]
    assert state["step"] == 1 and state["history"][0]["valid_loss"] > 0  # a step and a whole-track validation
    assert len(state["history"]) == 1 and set(state["history"][0]) >= {"valid_usdr_vocals", "valid_usdr_accompaniment"}


def test_epoch_batches_partition_across_ranks():
    single = epoch_batches(10, 2, seed=0, epoch=3)
    assert sorted(i for b in single for i in b) == list(range(10))
    r0, r1 = (epoch_batches(10, 2, seed=0, epoch=3, rank=r, world_size=2) for r in (0, 1))
    assert len(r0) == len(r1) == 2 and not set(sum(r0, [])) & set(sum(r1, []))
    assert epoch_batches(10, 2, seed=0, epoch=4) != single


# --------------------------------------------------------------------------- the loop


@pytest.mark.slow
def test_tiny_run_learns_and_its_checkpoint_separates(musdb_root, tmp_path):
    cfg = _cfg(musdb_root, tmp_path / "run", epochs=4, data=DataConfig(seconds=1.0, samples_per_track=4))
    result = Trainer(cfg).run()
    losses = [h["valid_loss"] for h in result["history"]]
    assert result["status"] == "finished" and len(losses) == 4
    assert losses[-1] < losses[0]
    assert (tmp_path / "run" / "tensorboard").is_dir()
    sep = Separator.from_pretrained(tmp_path / "run" / "best", device="cpu")
    assert sep.info.trained and "synthetic" in sep.info.training["data"]
    # The budget names what its minutes ran on: a GPU's minute is worth many of a CPU's.
    gpu = torch.cuda.is_available()
    hardware = f"on cuda ({torch.cuda.get_device_name()})" if gpu else f"on cpu ({torch.get_num_threads()} CPU threads)"
    assert f"min of training {hardware}, " in sep.info.training["budget"]
    mix, _ = load_track(open_musdb(musdb_root, is_wav=True, subset="test")[0])
    stems = sep.separate(mix, SR)
    assert stems["vocals"].shape == mix.shape
    card = (tmp_path / "run" / "best" / "README.md").read_text()
    assert "Trained on synthetic data" in card and "Separator.from_pretrained" in card


@pytest.mark.parametrize("arch", ["conv1d", "umx"])
@pytest.mark.slow
def test_baselines_train_on_the_same_data(musdb_root, tmp_path, arch):
    cfg = _cfg(musdb_root, tmp_path / arch, model=arch, model_config=dataclasses.asdict(TINY_CONFIGS[arch]), epochs=2)
    trainer = Trainer(cfg)
    initial = {k: v.detach().cpu().clone() for k, v in trainer.model.state_dict().items()}  # on a GPU too
    result = trainer.run()
    assert result["status"] == "finished" and result["step"] == 6  # 3 steps per epoch
    model, _ = load_run(tmp_path / arch)
    assert model.architecture == arch
    changed = [k for k, v in model.state_dict().items() if not torch.equal(v, initial[k])]
    assert changed, "training changed no weight"
    # the recorded validation loss is the saved model's: validating it again gives the same number
    again = Trainer(resume_config(tmp_path / arch), resume=True).validate()["valid_loss"]
    assert again == pytest.approx(result["history"][-1]["valid_loss"], rel=1e-5)
    # both baselines estimate the last source as the residual: the stems add up to the mixture (before Wiener EM)
    mix, _ = load_track(open_musdb(musdb_root, is_wav=True, subset="test")[0])
    stems = Separator(model, device="cpu", wiener=0 if model.supports_wiener else None).separate(mix, SR)
    torch.testing.assert_close(stems["vocals"] + stems["accompaniment"], mix, atol=1e-4, rtol=0)


def _weights(run):
    return load_file(str(run / "last" / "model.safetensors"))


@pytest.mark.slow
def test_resume_equals_a_straight_run(musdb_root, tmp_path):
    straight = _cfg(musdb_root, tmp_path / "a", max_steps=6, epochs=3)
    Trainer(straight).run()
    interrupted = _cfg(musdb_root, tmp_path / "b", max_steps=4, epochs=3)  # stops in the middle of epoch 2
    assert Trainer(interrupted).run()["status"] == "max_steps"
    state = load_run(tmp_path / "b")[1]
    assert (state["epoch"], state["batch"], state["step"]) == (1, 1, 4)
    resumed = Trainer(resume_config(tmp_path / "b", max_steps=6), resume=True).run()
    assert resumed["step"] == 6
    a, b = _weights(tmp_path / "a"), _weights(tmp_path / "b")
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=1e-6)
    timing = {"data_wait_per_step", "compute_per_step", "elapsed"}
    scores = [
        [{k: v for k, v in h.items() if k not in timing} for h in load_run(tmp_path / r)[1]["history"]] for r in "ab"
    ]
    assert scores[0] == scores[1]


# stopped after epoch 0's last step (before its validation), and in the middle of epoch 1
@pytest.mark.parametrize("stop_at,epoch,batch", [(3, 0, 3), (4, 1, 1)])
@pytest.mark.slow
def test_epoch_means_after_a_resume_cover_the_whole_epoch(musdb_root, tmp_path, stop_at, epoch, batch, caplog):
    straight = Trainer(_cfg(musdb_root, tmp_path / "a", epochs=2)).run()
    assert Trainer(_cfg(musdb_root, tmp_path / "b", epochs=2, max_steps=stop_at)).run()["status"] == "max_steps"
    caplog.set_level("INFO", logger="training.loop")
    resumed = Trainer(resume_config(tmp_path / "b", max_steps=100), resume=True).run()
    assert f"from epoch {epoch}, step {stop_at} (batch {batch} of the epoch)" in caplog.text
    assert resumed["status"] == "finished" and resumed["step"] == 6
    for a, b in zip(straight["history"], resumed["history"], strict=True):
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-5)
        assert a["valid_loss"] == pytest.approx(b["valid_loss"], rel=1e-5)


@pytest.mark.slow
def test_a_finished_run_says_so_on_resume_and_trains_nothing(musdb_root, tmp_path, caplog):
    run = tmp_path / "run"
    Trainer(_cfg(musdb_root, run, max_steps=3)).run()
    before = _weights(run)
    caplog.set_level("INFO", logger="training.loop")
    for _ in range(2):  # resuming again and again stays at step 3
        result = Trainer(resume_config(run), resume=True).run()
        assert result["status"] == "max_steps" and result["step"] == 3
    assert "reached --max-steps 3 (step 3); raise --max-steps to go on" in caplog.text
    after = _weights(run)
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert Trainer(resume_config(run, max_steps=5), resume=True).run()["step"] == 5  # a raised limit goes on
    flat = tmp_path / "flat"
    Trainer(_cfg(musdb_root, flat, lr=0.0, epochs=10, patience=1)).run()
    again = Trainer(resume_config(flat), resume=True).run()
    assert again["status"] == "early_stopped" and again["epoch"] == 2
    assert "without a better validation loss (--patience 1); raise --patience" in caplog.text
    done = tmp_path / "done"
    Trainer(_cfg(musdb_root, done, epochs=1)).run()
    assert Trainer(resume_config(done), resume=True).run()["step"] == 3
    assert "trained all 1 epochs; raise --epochs" in caplog.text


def test_early_stopping_on_a_flat_validation_curve(musdb_root, tmp_path):
    cfg = _cfg(musdb_root, tmp_path / "flat", lr=0.0, epochs=10, patience=2)
    result = Trainer(cfg).run()
    assert result["status"] == "early_stopped" and result["epoch"] == 3
    assert len({h["valid_loss"] for h in result["history"]}) == 1


def test_partial_and_corrupt_checkpoints_are_detected(musdb_root, tmp_path):
    run = tmp_path / "run"
    Trainer(_cfg(musdb_root, run, max_steps=1)).run()
    backup = tmp_path / "backup"
    shutil.copytree(run / "last", backup)
    (run / "last" / "trainer.pt").unlink()
    with pytest.raises(CheckpointError, match="incomplete \\(missing trainer.pt\\)"):
        load_run(run)
    data = (backup / "trainer.pt").read_bytes()
    (run / "last" / "trainer.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="trainer.pt is corrupt"):
        load_run(run)
    shutil.copy(backup / "trainer.pt", run / "last" / "trainer.pt")
    weights = (backup / "model.safetensors").read_bytes()
    (run / "last" / "model.safetensors").write_bytes(weights[:-100])
    with pytest.raises(CheckpointError, match="damaged"):
        load_run(run)
    with pytest.raises(CheckpointError, match="nothing to resume"):
        load_run(tmp_path / "never-ran")


def test_push_to_hub_uploads_a_loadable_checkpoint(musdb_root, tmp_path, monkeypatch):
    from huggingface_hub import HfApi

    from training.hub import push_to_hub

    Trainer(_cfg(musdb_root, tmp_path / "run", epochs=1)).run()
    calls = {}

    def create_repo(self, repo_id, **kw):
        calls["create"] = repo_id

    def upload_folder(self, *, folder_path, repo_id, allow_patterns, **kw):
        # What the Hub would serve afterwards, laid out as huggingface_hub's cache does.
        snap = HF_CACHE / f"models--{repo_id.replace('/', '--')}" / "snapshots" / ("f" * 40)
        snap.mkdir(parents=True)
        for name in allow_patterns:
            shutil.copy(f"{folder_path}/{name}", snap / name)
        (snap.parents[1] / "refs").mkdir()
        (snap.parents[1] / "refs" / "main").write_text("f" * 40)
        calls["upload"] = folder_path

    monkeypatch.setattr(HfApi, "create_repo", create_repo)
    monkeypatch.setattr(HfApi, "upload_folder", upload_folder)
    push_to_hub(tmp_path / "run", "tester/tiny-dprnn")
    assert calls == {"create": "tester/tiny-dprnn", "upload": str(tmp_path / "run" / "best")}
    sep = Separator.from_pretrained("tester/tiny-dprnn", device="cpu")
    assert sep.info.trained and sep.info.origin == "tester/tiny-dprnn@main"
    with pytest.raises(SeparationError, match="not a checkpoint|no config.json"):
        push_to_hub(tmp_path, "tester/nothing")


# --------------------------------------------------------------------------- command line


@pytest.mark.slow
def test_cli_trains_resumes_and_refuses_to_overwrite(musdb_root, tmp_path):
    from training.__main__ import main

    args = [
        "--model",
        "conv1d",
        "--set",
        "hidden=[4,4,4]",
        "--musdb-root",
        str(musdb_root),
        "--is-wav",
        "--out",
        str(tmp_path / "run"),
        "--seconds",
        "0.5",
        "--samples-per-track",
        "2",
        "--batch-size",
        "2",
        "--epochs",
        "1",
    ]
    assert main(args) == 0
    assert main(args) == 2  # the run exists: refuse, point to --resume
    assert main(["--resume", str(tmp_path / "run"), "--epochs", "2"]) == 0
    assert load_run(tmp_path / "run")[1]["epoch"] == 2
    # argparse takes an unambiguous prefix: `--epoch 3` raises the limit as `--epochs 3` does, and
    # `--patience` abbreviated too; a resume without them keeps the run's own (2 epochs: nothing to do)
    assert main(["--resume", str(tmp_path / "run")]) == 0 and load_run(tmp_path / "run")[1]["epoch"] == 2
    assert main(["--resume", str(tmp_path / "run"), "--epoch", "3", "--pati", "5"]) == 0
    assert load_run(tmp_path / "run")[1]["epoch"] == 3 and load_run(tmp_path / "run")[1]["config"]["patience"] == 5
    assert main(["--model", "dprnn", "--out", str(tmp_path / "x")]) == 2  # no --musdb-root
    assert main(["--musdb-root", str(tmp_path / "nowhere"), "--out", str(tmp_path / "y")]) == 2


def test_the_card_says_what_the_data_were_when_told(musdb_root, tmp_path):
    """Data changed on the way (excerpts coded for a transfer, decoded into folders without their
    metadata) are described by hand: the words reach the checkpoint's record and its card."""
    from training.__main__ import main

    args = ["--model", "conv1d", "--set", "hidden=[4,4,4]", "--musdb-root", str(musdb_root), "--is-wav"]
    args += ["--seconds", "0.5", "--samples-per-track", "1", "--batch-size", "2", "--epochs", "1"]
    told = ["--data-description", "8-s excerpts,\n  Vorbis-coded", "--valid-description", "2 songs, coded likewise"]
    assert main([*args, "--out", str(tmp_path / "run"), *told]) == 0
    info = load_checkpoint(tmp_path / "run" / "best")[1].training
    assert (info["data"], info["valid_data"]) == ("8-s excerpts, Vorbis-coded", "2 songs, coded likewise")
    card = (tmp_path / "run" / "best" / "README.md").read_text()
    assert "| training data | 8-s excerpts, Vorbis-coded |" in card
    assert "| validation data (chose the best epoch) | 2 songs, coded likewise |" in card
    assert main([*args, "--out", str(tmp_path / "plain")]) == 0  # untold: the folders' metadata speak
    assert "synthetic" in load_checkpoint(tmp_path / "plain" / "best")[1].training["data"]
    assert main([*args, "--out", str(tmp_path / "empty"), "--data-description", " "]) == 2
    assert not (tmp_path / "empty").exists()


@pytest.mark.slow
def test_torchrun_ddp_on_cpu(musdb_root, tmp_path):
    torchrun = shutil.which("torchrun", path=str(ROOT / ".venv" / "bin")) or shutil.which("torchrun")
    if torchrun is None:
        pytest.skip("torchrun not found")
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc-per-node",
        "2",
        "-m",
        "training",
        "--model",
        "conv1d",
        "--set",
        "hidden=[4,4,4]",
        "--musdb-root",
        str(musdb_root),
        "--is-wav",
        "--out",
        str(tmp_path / "ddp"),
        "--seconds",
        "0.5",
        "--samples-per-track",
        "4",
        "--batch-size",
        "2",
        "--epochs",
        "1",
    ]
    res = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    state = load_run(tmp_path / "ddp")[1]
    # 12 chunks, batch 2 per rank, 2 ranks: 3 steps per rank per epoch
    assert state["step"] == 3 and state["epoch"] == 1


def _validation_signals(seconds: float = 30.0):
    """A track with the traits of real ones, and an imperfect estimate of its two targets."""
    track = make_track(77, seconds)
    targets = torch.from_numpy(np.stack([track["vocals"].T, accompaniment(track[s] for s in ACCOMPANIMENT).T]))
    gen = torch.Generator().manual_seed(0)
    est = targets + 0.05 * torch.randn(targets.shape, generator=gen)
    return est, targets, mixture_of(targets)


@pytest.mark.slow
def test_whole_track_validation_loss_equals_the_loss_of_the_whole_spectrogram():
    """Validation takes a long track's spectral loss a segment of STFT frames at a time (bounded
    memory); the number is the one of the whole spectrogram at once."""
    from separation.spectral import STFT
    from training.losses import LossConfig, spectral_loss, whole_track_spectral_loss

    est, targets, mix = _validation_signals()
    stft, cfg = STFT(4096, 1024), LossConfig()
    whole = spectral_loss(stft(est)[None], stft(targets)[None], stft(mix)[None], cfg)[0]
    # 1024-frame segments: a 30-s track (1292 frames) is two segments, the second one short
    assert whole_track_spectral_loss(est, targets, mix, stft, cfg) == pytest.approx(float(whole), rel=1e-5)


@pytest.mark.gpu
def test_validation_loss_on_the_gpu_equals_the_cpu_one():
    """On a GPU the validation loss runs where the model is (segments moved from the CPU one
    at a time), with the CPU's number."""
    from separation.spectral import STFT
    from training.losses import LossConfig, whole_track_spectral_loss

    est, targets, mix = _validation_signals()
    cpu = whole_track_spectral_loss(est, targets, mix, STFT(4096, 1024), LossConfig())
    gpu = whole_track_spectral_loss(est, targets, mix, STFT(4096, 1024).to("cuda"), LossConfig())
    assert gpu == pytest.approx(cpu, rel=1e-5) and est.device.type == "cpu"


def test_training_loss_of_masked_magnitudes_is_the_complex_loss_with_its_gradient():
    """DPRNN trains on `masked_spectral_loss`: real arithmetic and a closed-form gradient for the
    loss of `mags * exp(i angle(X))`. Its value and gradient are those of `spectral_loss` on that
    complex estimate, with the traits of real data: a silent vocal target and digital silence
    (X = 0 bins) in the mixture."""
    from separation.spectral import unit_phase
    from training.losses import LossConfig, masked_spectral_loss, spectral_loss

    gen = torch.Generator().manual_seed(0)
    shape = (3, 2, 2, 33, 20)  # B, S, C, F, N

    def spectrum(*size):
        return torch.complex(
            torch.randn(size, generator=gen, dtype=torch.float64), torch.randn(size, generator=gen, dtype=torch.float64)
        )

    targets = spectrum(*shape)
    targets[1, 0] = 0  # a vocal-free chunk
    targets[2, :, :, :, :6] = 0  # digital silence: no source, so no mixture
    mix = targets.sum(1)
    logits = torch.randn(shape, generator=gen, dtype=torch.float64, requires_grad=True)
    cfg = LossConfig()

    def both(loss_fn):
        mags = logits.softmax(dim=1) * mix.abs().unsqueeze(1)
        loss, parts = loss_fn(mags)
        return loss, parts, torch.autograd.grad(loss, logits)[0]

    fast = both(lambda m: masked_spectral_loss(m, mix, targets, cfg))
    reference = both(lambda m: spectral_loss(m * unit_phase(mix).unsqueeze(1), targets, mix, cfg))
    assert fast[0].item() == pytest.approx(reference[0].item(), rel=1e-12)
    assert fast[1] == pytest.approx(reference[1], rel=1e-12)
    torch.testing.assert_close(fast[2], reference[2], rtol=1e-10, atol=1e-14)
    assert fast[2].abs().max() > 0  # a gradient to compare
    # the caller's |X| is only a shortcut
    mags = logits.detach().softmax(dim=1) * mix.abs().unsqueeze(1)
    assert float(masked_spectral_loss(mags, mix, targets, cfg, mix_mag=mix.abs())[0]) == pytest.approx(fast[0].item())


@pytest.mark.slow
def test_cpu_training_runs_in_bf16_where_the_cpu_computes_it_and_a_resume_keeps_its_precision(
    musdb_root, tmp_path, monkeypatch
):
    """bf16 autocast on CPUs with bf16 instructions (float32 elsewhere, or with --no-amp); the
    precision is in the trainer state and the card, and a resumed run keeps the one it ran in,
    on whatever CPU it resumes (a run from before CPU bf16 resumes in float32)."""
    import training.loop as loop

    cpu = torch.device("cpu")
    assert loop.autocast_dtype(cpu, amp=False) is None
    monkeypatch.setattr(loop, "cpu_computes_bf16", lambda: False)
    assert loop.autocast_dtype(cpu, amp=True) is None
    monkeypatch.setattr(loop, "cpu_computes_bf16", lambda: True)
    assert loop.autocast_dtype(cpu, amp=True) is torch.bfloat16

    run = tmp_path / "bf16"
    result = Trainer(_cfg(musdb_root, run, epochs=1, device="cpu")).run()  # the CPU, also where a GPU is
    assert result["status"] == "finished" and math.isfinite(result["history"][0]["train_loss"])
    state = load_run(run)[1]
    assert state["precision"] == {"device": "cpu", "dtype": "bfloat16"}
    assert "CPU threads), bfloat16 |" in (run / "best" / "README.md").read_text()  # the card names it

    monkeypatch.setattr(loop, "cpu_computes_bf16", lambda: False)  # resumed on another CPU
    assert Trainer(resume_config(run, epochs=2), resume=True).amp_dtype is torch.bfloat16
    float32 = tmp_path / "float32"  # started on a CPU without bf16 instructions
    Trainer(_cfg(musdb_root, float32, epochs=1, device="cpu")).run()
    assert load_run(float32)[1]["precision"] == {"device": "cpu", "dtype": None}
    monkeypatch.setattr(loop, "cpu_computes_bf16", lambda: True)
    assert Trainer(resume_config(float32, epochs=2), resume=True).amp_dtype is None

    # a trainer state written before CPU bf16 has no precision: it ran in float32, and resumes so
    state.pop("precision")
    torch.save(state, run / "last" / loop.TRAINER_STATE)
    assert Trainer(resume_config(run, epochs=2), resume=True).amp_dtype is None


@pytest.mark.slow
def test_a_run_with_loader_workers_trains_the_same_weights_as_one_without(musdb_root, tmp_path):
    """Chunks are drawn from (seed, epoch, index) wherever they are made: worker processes (which
    the loader starts afresh each epoch, after the epoch is set) change nothing but the speed."""
    with_workers = Trainer(_cfg(musdb_root, tmp_path / "a", workers=2, epochs=2)).run()
    without = Trainer(_cfg(musdb_root, tmp_path / "b", workers=0, epochs=2)).run()
    assert with_workers["step"] == without["step"] == 6
    assert [h["train_loss"] for h in with_workers["history"]] == pytest.approx(
        [h["train_loss"] for h in without["history"]], rel=1e-5
    )
    a, b = _weights(tmp_path / "a"), _weights(tmp_path / "b")
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=1e-6)


# ---------------------------------------------------- options: augmentations, time limits, the sweep, defaults


def test_random_eq_augmentation_is_a_bounded_filter(musdb_root):
    rng = np.random.default_rng(0)
    noise = rng.standard_normal((2, SR)).astype(np.float32)
    out = random_eq(noise, np.random.default_rng(1))
    assert out.shape == noise.shape and out.dtype == np.float32 and np.isfinite(out).all()
    f, before = welch(noise[0], SR, nperseg=2048)
    _, after = welch(out[0], SR, nperseg=2048)
    gain_db = 10 * np.log10(after[5:-5] / before[5:-5])
    assert np.abs(gain_db).max() < 18 + 3  # two filters of at most 9 dB each (+ estimation noise)
    assert np.abs(gain_db).max() > 1  # and it does change the timbre
    tracks = open_musdb(musdb_root, is_wav=True, subset="train", split="train")
    equalised = ChunkDataset(tracks, DataConfig(seconds=1.0, samples_per_track=1, eq=1.0))[0]
    plain = ChunkDataset(tracks, DataConfig(seconds=1.0, samples_per_track=1, eq=0.0))[0]
    assert equalised.shape == plain.shape and not torch.allclose(equalised, plain)  # the loader applies it


def test_repitch_augmentation_plays_sources_at_another_speed(musdb_root):
    # varispeed: a 440-Hz tone two semitones up is a 494-Hz tone, the chunk exactly as long
    t = np.arange(int(3.5 * SR)) / SR
    tone = np.stack([np.sin(2 * np.pi * 440 * t), np.zeros_like(t)]).astype(np.float32)
    for semitones in (2.0, -2.0, 0.7):
        speed = 2 ** (semitones / 12)
        out = varispeed(tone, speed, 3 * SR)
        assert out.shape == (2, 3 * SR) and out.dtype == np.float32 and not out[1].any()
        f, power = welch(out[0], SR, nperseg=1 << 15)
        assert abs(f[np.argmax(power)] - 440 * speed) < 3, (semitones, f[np.argmax(power)])
        assert abs(np.sqrt(np.mean(out[0] ** 2)) - np.sqrt(0.5)) < 0.01  # same level
    # through the loader: on a share of sources, deterministic per (seed, epoch, index); off by default
    tracks = open_musdb(musdb_root, is_wav=True, subset="train", split="train")
    plain = ChunkDataset(tracks, DataConfig(seconds=1.0, samples_per_track=2, eq=0.0))
    assert DataConfig().repitch == 0.0
    shifted = ChunkDataset(tracks, DataConfig(seconds=1.0, samples_per_track=2, eq=0.0, repitch=1.0))
    for i in range(len(plain)):
        a, b = plain[i], shifted[i]
        assert a.shape == b.shape == (2, 2, SR) and torch.isfinite(b).all()
        assert not torch.equal(a, b) and torch.equal(b, shifted[i])
    # a track no longer than a chunk plays at the fastest speed it allows, never past its end
    exact = ChunkDataset(tracks, DataConfig(seconds=4.0, samples_per_track=1, eq=0.0, repitch=1.0))
    assert all(torch.isfinite(exact[i]).all() for i in range(len(exact)))
    with pytest.raises(SeparationError, match="repitch augmentation is a share"):
        DataConfig(repitch=1.5)
    from training.__main__ import build_parser, config_from_args

    args = build_parser().parse_args(["--musdb-root", "w", "--repitch-augment", "0.3", "--repitch-semitones", "3"])
    assert (config_from_args(args).data.repitch, config_from_args(args).data.repitch_semitones) == (0.3, 3.0)


def test_random_reverb_adds_a_decaying_stereo_tail_to_its_sources_target(musdb_root):
    # A dual-mono click train: what comes out must keep the dry signal, gain a tail that decays
    # after each click, and be stereo (independent tails per channel), as a mix's reverb is.
    clicks = np.zeros((2, SR), dtype=np.float32)
    clicks[:, :: SR // 2] = 1.0  # clicks at 0 and 0.5 s
    rng = np.random.default_rng(3)
    out = random_reverb(clicks, rng)
    assert out.shape == clicks.shape and out.dtype == np.float32 and np.isfinite(out).all()
    assert np.allclose(out[:, 0], 1.0, atol=0.05)  # the dry click is kept (pre-delay >= 0)
    tail = out - clicks
    assert not np.allclose(tail[0], tail[1])  # the reverb of a dual-mono source is stereo
    early = np.sum(tail[:, 200:4000] ** 2)
    late = np.sum(tail[:, 16000:19800] ** 2)  # same length, later after the first click
    assert early > 3 * late > 0  # it decays
    wet_db = 10 * np.log10(np.sum(tail.astype(np.float64) ** 2) / np.sum(clicks.astype(np.float64) ** 2))
    assert -21 < wet_db < -5  # 6-20 dB below the dry signal
    silence = np.zeros((2, 1000), dtype=np.float32)
    assert np.array_equal(random_reverb(silence, rng), silence)  # silence stays silent, no NaN
    tracks = open_musdb(musdb_root, is_wav=True, subset="train", split="train")
    wet = ChunkDataset(tracks, DataConfig(seconds=1.0, samples_per_track=1, reverb=1.0))[0]
    dry = ChunkDataset(tracks, DataConfig(seconds=1.0, samples_per_track=1, reverb=0.0))[0]
    # the wet signal is in each source's target (so in the mixture, their sum), as a mix's returns are
    for source in range(2):
        assert not torch.allclose(wet[source], dry[source])


@pytest.mark.parametrize(
    "field, value, message",
    [("reverb", 1.5, "share of chunks, 0 to 1"), ("eq", -0.1, "share of chunks"), ("gain", (1.0, 0.5), "0 < LO <= HI")],
)
def test_augmentation_settings_out_of_range_are_refused(field, value, message):
    with pytest.raises(SeparationError, match=message):
        DataConfig(**{field: value})


@pytest.mark.slow
def test_max_minutes_stops_after_whole_epochs_and_counts_across_resumes(musdb_root, tmp_path, caplog):
    out = tmp_path / "run"
    result = Trainer(_cfg(musdb_root, out, epochs=5, max_minutes=1e-4)).run()
    assert result["status"] == "max_minutes" and result["epoch"] == 1  # the first epoch that ends past it
    assert result["history"][-1]["elapsed"] > 0
    again = Trainer(resume_config(out, max_minutes=1e-4), resume=True)
    assert again.run()["status"] == "max_minutes" and again.epoch == 1  # nothing more to train
    assert "raise --max-minutes to go on" in caplog.text
    more = Trainer(resume_config(out, max_minutes=60.0), resume=True).run()
    assert more["epoch"] == 5 and more["status"] == "finished"
    assert more["history"][-1]["elapsed"] > result["history"][-1]["elapsed"]  # it counts the first process too


@pytest.mark.slow
def test_sweep_trains_each_setting_for_the_same_time_and_tables_them(musdb_root, tmp_path):
    tiny = [
        f"{k}={json.dumps(list(v) if isinstance(v, tuple) else v)}"
        for k, v in dataclasses.asdict(TINY_CONFIGS["dprnn"]).items()
    ]
    common = "--is-wav --samples-per-track 2 --seconds 1 --batch-size 2 --epochs 2 --set " + " ".join(
        shlex.quote(t) for t in tiny
    )
    argv = ["--musdb-root", str(musdb_root), "--minutes", "10", "--out", str(tmp_path), "--common", common]
    assert sweep_main([*argv, "base:", "fast:", "--lr", "3e-3"]) == 0
    rows = {r["name"]: r for r in json.loads((tmp_path / "sweep.json").read_text())}
    assert set(rows) == {"base", "fast"} and rows["fast"]["args"] == "--lr 3e-3"
    assert all(r["epochs"] == 2 and np.isfinite(r["valid_usdr_vocals"]) for r in rows.values())
    table = (tmp_path / "sweep.md").read_text()
    assert table.count("\n") == 4 and "| fast | --lr 3e-3 | dprnn |" in table
    mtime = (tmp_path / "base" / "summary.json").stat().st_mtime
    assert sweep_main([*argv, "base:"]) == 0  # a finished run is read, not trained again
    assert (tmp_path / "base" / "summary.json").stat().st_mtime == mtime


def test_training_defaults_are_the_sweeps_winners():
    from training.__main__ import build_parser, config_from_args

    scratch = config_from_args(build_parser().parse_args(["--musdb-root", "x"]))
    tuned = config_from_args(
        build_parser().parse_args(["--musdb-root", "x", "--init-from", "separation/weights/dprnn"])
    )
    assert (scratch.lr, tuned.lr) == (1e-3, 3e-4)
    assert scratch.data.seconds == 3.0 and scratch.data.eq == 0.5
    assert (
        tuned.data.seconds == 6.0
    )  # a fine-tune's chunks: measured better than 3 s (docs/experiments.md, "Longer chunks")
    chosen = config_from_args(
        build_parser().parse_args(["--musdb-root", "x", "--lr", "0.01", "--seconds", "4", "--init-from", "y"])
    )
    assert (chosen.lr, chosen.data.seconds) == (0.01, 4.0)
    flags = ["--musdb-root", "x", "--gain", "1", "1", "--reverb-augment", "0.3"]
    augmented = config_from_args(build_parser().parse_args(flags)).data
    assert augmented.gain == (1.0, 1.0) and augmented.reverb == 0.3
