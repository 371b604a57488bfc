"""Every architecture: config -> model -> save -> load -> identical output; bad checkpoints fail clearly.

Checkpoints are loaded from a local folder and from a pre-filled Hugging Face cache (offline),
through the same `load_checkpoint`.
"""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from separation import Separator
from separation.checkpoints import load_checkpoint, save_checkpoint
from separation.errors import CheckpointError, WeightsUnavailableError
from separation.models import ARCHITECTURES, build_model
from separation.models.dprnn import chunk_frames, merge_chunks
from separation.pretrained import NAMED_MODELS
from tests.helpers import HF_CACHE, SR, TINY_CONFIGS


def _model(arch, seed=0):
    torch.manual_seed(seed)
    model = build_model(arch, TINY_CONFIGS[arch]).eval()
    # make BatchNorm statistics non-trivial so that they have to survive the round trip
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm1d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    return model


def test_every_architecture_is_registered_and_tested():
    assert set(ARCHITECTURES) == set(TINY_CONFIGS)
    assert {"dprnn", "conv1d", "umxhq", "umxl"} <= set(NAMED_MODELS)


@pytest.mark.parametrize("arch", sorted(TINY_CONFIGS))
def test_round_trip_gives_identical_output(tmp_path, arch, mixture):
    model = _model(arch)
    x = mixture[None, :, : SR // 2]
    with torch.inference_mode():
        before = model(x)
    save_checkpoint(model, tmp_path / "ckpt", training={"data": "unit test"})
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == ["config.json", "model.safetensors"]
    loaded, info = load_checkpoint(tmp_path / "ckpt")
    assert type(loaded) is type(model) and loaded.config == model.config
    assert info.architecture == arch and info.trained and info.training == {"data": "unit test"}
    with torch.inference_mode():
        after = loaded(x)
    assert before.shape == (1, 2, 2, SR // 2)
    torch.testing.assert_close(after, before, atol=0, rtol=0)


def test_half_precision_checkpoint_is_smaller_and_close(tmp_path, mixture):
    model = _model("dprnn")
    full = save_checkpoint(model, tmp_path / "full")
    half = save_checkpoint(model, tmp_path / "half", half=True)
    size = lambda d: (d / "model.safetensors").stat().st_size  # noqa: E731
    assert size(half) < 0.6 * size(full)
    loaded, _ = load_checkpoint(half)
    assert all(p.dtype == torch.float32 for p in loaded.parameters())
    with torch.inference_mode():
        a, b = model(mixture[None]), loaded(mixture[None])
    assert float((a - b).abs().max()) < 1e-2 * float(a.abs().max())


def test_config_that_does_not_match_the_weights_is_refused(tmp_path):
    ckpt = save_checkpoint(_model("dprnn"), tmp_path / "ckpt")
    meta = json.loads((ckpt / "config.json").read_text())
    meta["config"]["hidden_size"] = 24
    (ckpt / "config.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match=r"do not match the config: shape mismatch: blocks\.0\.intra_rnn"):
        load_checkpoint(ckpt)
    meta["config"]["hidden_size"] = 16
    meta["config"]["num_blocks"] = 3
    (ckpt / "config.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match=r"missing \d+ tensor\(s\) \(blocks\.2\."):
        load_checkpoint(ckpt)


def test_weights_of_another_architecture_are_refused(tmp_path):
    save_checkpoint(_model("dprnn"), tmp_path / "dprnn")
    save_checkpoint(_model("umx"), tmp_path / "umx")
    shutil.copy(tmp_path / "umx" / "model.safetensors", tmp_path / "dprnn" / "model.safetensors")
    with pytest.raises(CheckpointError, match="unexpected tensor"):
        load_checkpoint(tmp_path / "dprnn")


@pytest.mark.parametrize(
    "corrupt,message",
    [
        (lambda d: (d / "config.json").write_text("{not json"), "not valid JSON"),
        (lambda d: (d / "config.json").unlink(), "no config.json"),
        (lambda d: (d / "model.safetensors").write_bytes(b"\x00" * 100), "damaged or not a safetensors file"),
        (lambda d: (d / "model.safetensors").unlink(), "no model.safetensors"),
        (lambda d: _edit(d, lambda m: m.update(architecture="transformer")), "unknown architecture 'transformer'"),
        (lambda d: _edit(d, lambda m: m["config"].update(heads=4)), "has no field\\(s\\) heads"),
        (lambda d: _edit(d, lambda m: m["config"].update(mask="relu")), "mask must be"),
        (lambda d: _edit(d, lambda m: m.update(format_version=99)), "newer than this code reads"),
    ],
)
def test_broken_checkpoints_fail_clearly(tmp_path, corrupt, message):
    ckpt = save_checkpoint(_model("dprnn"), tmp_path / "ckpt")
    corrupt(ckpt)
    with pytest.raises(CheckpointError, match=message):
        load_checkpoint(ckpt)


def _edit(directory, fn):
    meta = json.loads((directory / "config.json").read_text())
    fn(meta)
    (directory / "config.json").write_text(json.dumps(meta))


def test_checkpoint_is_not_pickle(tmp_path):
    ckpt = save_checkpoint(_model("conv1d"), tmp_path / "ckpt")
    head = (ckpt / "model.safetensors").read_bytes()[:8]
    assert not head.startswith(b"\x80") and not head.startswith(b"PK")  # neither pickle nor torch zip


def test_save_replaces_atomically(tmp_path):
    target = tmp_path / "ckpt"
    save_checkpoint(_model("conv1d", seed=1), target)
    save_checkpoint(_model("conv1d", seed=2), target)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]  # no temporary or old folders left
    loaded, _ = load_checkpoint(target)
    torch.testing.assert_close(
        loaded.state_dict()["net.0.weight"], _model("conv1d", seed=2).state_dict()["net.0.weight"]
    )


def _fill_hf_cache(repo_id, source, commit="0123456789abcdef0123456789abcdef01234567"):
    """Lay a checkpoint out as huggingface_hub's cache does (refs/main -> snapshots/<commit>)."""
    repo_dir = HF_CACHE / f"models--{repo_id.replace('/', '--')}"
    snap = repo_dir / "snapshots" / commit
    snap.mkdir(parents=True, exist_ok=True)
    for f in source.iterdir():
        shutil.copy(f, snap / f.name)
    (repo_dir / "refs").mkdir(exist_ok=True)
    (repo_dir / "refs" / "main").write_text(commit)
    return snap


def test_from_pretrained_hub_repo_from_the_offline_cache(tmp_path, mixture):
    model = _model("dprnn")
    ckpt = save_checkpoint(model, tmp_path / "ckpt")
    _fill_hf_cache("someone/dprnn-vocals", ckpt)
    sep = Separator.from_pretrained("someone/dprnn-vocals", device="cpu", wiener=0)
    assert sep.info.origin == "someone/dprnn-vocals@main" and sep.info.trained
    local = Separator.from_pretrained(ckpt, device="cpu", wiener=0)
    a, b = sep.separate(mixture, SR), local.separate(mixture, SR)
    torch.testing.assert_close(a["vocals"], b["vocals"], atol=0, rtol=0)


def test_uncached_hub_repo_offline_says_how_to_get_it():
    with pytest.raises(WeightsUnavailableError, match="not in the Hugging Face cache.*hf download nobody/nothing"):
        Separator.from_pretrained("nobody/nothing")


def test_not_a_path_nor_a_repo_id():
    with pytest.raises(CheckpointError, match="not a folder, and not a Hub repo id"):
        load_checkpoint("./no/such/folder/")


def test_named_model_uses_env_repo(tmp_path, monkeypatch, mixture):
    ckpt = save_checkpoint(_model("dprnn"), tmp_path / "ckpt")
    monkeypatch.setenv("DPRNN_REPO", str(ckpt))
    sep = Separator.from_name("dprnn", device="cpu")
    assert sep.info.trained and sep.info.origin == str(ckpt) and sep.name == "dprnn"


def test_dprnn_chunking_is_invertible():
    x = torch.randn(2, 5, 37)
    for size in (2, 8, 50):
        chunks = chunk_frames(x, size)
        assert chunks.shape[:3] == (2, 5, size)
        torch.testing.assert_close(merge_chunks(chunks, 37), x)


@torch.no_grad()
def test_dprnn_masks_partition_the_mixture(mixture):
    model = _model("dprnn")
    mag = model.stft(mixture[None]).abs()
    masks = model.masks(mag)
    assert masks.shape == (1, 2, 2, 257, mag.shape[-1])
    torch.testing.assert_close(masks.sum(dim=1), torch.ones_like(mag))
    sig = build_model("dprnn", {**TINY_CONFIGS["dprnn"].__dict__, "mask": "sigmoid"})
    m = sig.masks(mag)
    assert float(m.min()) >= 0 and float(m.max()) <= 1


@torch.no_grad()
def test_dprnn_is_non_causal_and_uses_long_context():
    """A change late in the input changes the mask early on: the inter-chunk RNN carries
    information across chunks in both directions."""
    model = _model("dprnn")
    mag = torch.rand(1, 2, 257, 80)
    base = model.masks(mag)
    late = mag.clone()
    late[..., 70:] *= 5
    early_change = (model.masks(late) - base)[..., :10].abs().max()
    assert early_change > 1e-4


@torch.no_grad()
def test_conv1d_stems_sum_to_the_mixture(mixture):
    model = _model("conv1d")
    out = model(mixture[None])
    torch.testing.assert_close(out.sum(dim=1), mixture[None], atol=1e-6, rtol=0)
