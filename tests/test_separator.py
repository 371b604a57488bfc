"""The overlap-add chunker and the Separator API around it."""

from __future__ import annotations

import itertools
import subprocess
import sys
import warnings

import pytest
import torch

from separation import Separator, UntrainedModelWarning
from separation.audio import prepare
from separation.errors import DeviceError, SeparationError
from separation.models import build_model
from separation.separator import (
    MAX_SHIFTS,
    SHIFT_SPAN_SECONDS,
    overlap_add,
    segment_offsets,
    select_device,
    triangular_weight,
    variant_settings,
)
from tests.helpers import ROOT, SR, TINY_CONFIGS


def identity(batch: torch.Tensor) -> torch.Tensor:
    """(B, C, L) -> (B, 1, C, L)."""
    return batch.unsqueeze(1)


@pytest.mark.parametrize("length", [1, 999, 1000, 1001, 4321, 10_000, 10_007])
@pytest.mark.parametrize("overlap", [0.0, 0.25, 0.5])
@pytest.mark.parametrize("batch_size", [1, 3])
def test_identity_model_reproduces_input(length, overlap, batch_size):
    x = torch.randn(2, length)
    y = overlap_add(identity, x, segment=1000, overlap=overlap, batch_size=batch_size)
    assert y.shape == (1, 2, length)
    torch.testing.assert_close(y[0], x, atol=1e-5, rtol=0)


def test_short_input_is_padded_to_the_models_minimum():
    seen = []

    def fn(batch):
        seen.append(batch.shape[-1])
        return batch.unsqueeze(1)

    x = torch.randn(2, 100)
    y = overlap_add(fn, x, segment=1000, min_length=512)
    assert seen == [512]
    torch.testing.assert_close(y[0], x)


def test_segments_cover_the_signal_and_are_blended():
    offsets = segment_offsets(10_007, 1000, 0.25)
    assert offsets[0] == 0 and offsets[-1] == 10_007 - 1000
    assert all(b - a <= 750 for a, b in itertools.pairwise(offsets))
    w = triangular_weight(1000)
    assert float(w.min()) > 0 and float(w.max()) == 1.0
    # a model whose output depends on the segment (adds the segment's mean) is blended smoothly:
    x = torch.zeros(1, 5000)
    y = overlap_add(
        lambda b: (b + torch.arange(b.shape[0]).float()[:, None, None]).unsqueeze(1), x, segment=1000, batch_size=8
    )
    assert float(y.diff(dim=-1).abs().max()) < 0.01  # no seams: the jumps between segments are crossfaded


def test_progress_reports_every_batch():
    calls = []
    overlap_add(identity, torch.randn(1, 5000), segment=1000, batch_size=2, progress=lambda d, t: calls.append((d, t)))
    total = len(segment_offsets(5000, 1000, 0.25))
    assert calls[-1] == (total, total) and len(calls) == -(-total // 2)


def test_cuda_request_without_gpu_is_an_error():
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    with pytest.raises(DeviceError, match="CUDA was requested"):
        select_device("cuda")
    with pytest.raises(DeviceError, match="unknown device"):
        select_device("gpu-please")
    assert select_device("auto").type == "cpu"


@pytest.fixture
def tiny_dprnn():
    torch.manual_seed(0)
    return build_model("dprnn", TINY_CONFIGS["dprnn"])


def test_separate_returns_stems_of_the_input_duration(tiny_dprnn, mixture):
    sep = Separator(tiny_dprnn, device="cpu", wiener=0)
    stems = sep.separate(mixture, SR)
    assert set(stems) == {"vocals", "accompaniment"}
    for s in stems.values():
        assert s.shape == mixture.shape and s.dtype == torch.float32
    # softmax masks with mixture phase: the stems add up to the mixture
    torch.testing.assert_close(stems["vocals"] + stems["accompaniment"], mixture, atol=1e-4, rtol=0)


def test_separate_resamples_and_upmixes(tiny_dprnn):
    mono_8k = torch.randn(8000) * 0.1  # 1 s
    stems = Separator(tiny_dprnn, device="cpu", wiener=0).separate(mono_8k, 8000)
    assert stems["vocals"].shape == (2, SR)
    mix = prepare(mono_8k, 8000)  # the 44.1-kHz stereo signal the model saw: mono on both sides
    torch.testing.assert_close(mix[0], mix[1], atol=0, rtol=0)
    torch.testing.assert_close(stems["vocals"] + stems["accompaniment"], mix, atol=1e-4, rtol=0)


def test_long_input_uses_many_segments_and_matches_length(tiny_dprnn):
    x = torch.randn(2, int(3.3 * SR)) * 0.1
    calls = []
    stems = Separator(tiny_dprnn, device="cpu", segment=1.0, batch_size=2).separate(
        x, SR, progress=lambda d, t: calls.append(t)
    )
    assert calls[0] == len(segment_offsets(x.shape[-1], SR, 0.25)) > 3
    assert stems["accompaniment"].shape == x.shape
    # softmax masks sum to one in every segment, and the cross-fade weights sum to one: the mixture comes back
    torch.testing.assert_close(stems["vocals"] + stems["accompaniment"], x, atol=1e-4, rtol=0)


def test_silence_gives_silence(tiny_dprnn, caplog):
    stems = Separator(tiny_dprnn, device="cpu").separate(torch.zeros(2, SR), SR)
    assert all(float(s.abs().max()) == 0 for s in stems.values())
    assert "digital silence" in caplog.text


def test_untrained_model_warns_on_every_call(mixture, no_shipped_checkpoints):
    sep = Separator.from_name("conv1d", device="cpu")
    assert not sep.info.trained
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("default")  # Python's own action: once per place, unless the warning says otherwise
        for _ in range(3):
            sep.separate(mixture, SR)
    untrained = [w for w in caught if issubclass(w.category, UntrainedModelWarning)]
    assert len(untrained) == 3 and "RANDOM weights" in str(untrained[0].message)
    assert untrained[0].filename == __file__  # it points at the caller's line


def test_importing_the_package_changes_no_global_state():
    # (torch, scipy and others add warning filters of their own when imported; ours add none)
    code = (
        "import os, warnings; mask = os.umask(0o022); os.umask(mask); "
        "import separation, eval.scores, training.loop, webapp.service; "
        "ours = [f for f in warnings.filters "
        "if f[2].__module__.split('.')[0] in ('separation', 'eval', 'training', 'webapp')]; "
        "assert not ours, ours; "
        "now = os.umask(0); os.umask(now); assert now == mask, 'umask changed'"
    )
    res = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr


def test_trained_model_does_not_warn(tiny_dprnn, mixture):
    sep = Separator(tiny_dprnn, device="cpu")
    with warnings.catch_warnings():
        warnings.simplefilter("error", UntrainedModelWarning)
        sep.separate(mixture, SR)


def test_wiener_option_validation():
    with pytest.raises(SeparationError, match="time-domain model"):
        Separator(build_model("conv1d", TINY_CONFIGS["conv1d"]), device="cpu", wiener=1)
    with pytest.raises(SeparationError, match=">= 0"):
        Separator(build_model("dprnn", TINY_CONFIGS["dprnn"]), device="cpu", wiener=-1)


@pytest.mark.slow
def test_shifts_average_realigned_passes(tiny_dprnn):
    """Pass 2 of 2 is the plain separation of the input delayed by 0.25 s with left and right
    swapped, cut back into place and swapped back; the result is the mean of the two passes."""
    x = torch.randn(2, int(2.5 * SR)) * 0.1
    x[1] *= 0.3  # left and right differ: a pass whose channels were not swapped back would show
    plain = Separator(tiny_dprnn, device="cpu", segment=1.0)
    two = Separator(tiny_dprnn, device="cpu", segment=1.0, shifts=2)
    delay = int(SHIFT_SPAN_SECONDS * SR) // 2
    moved = plain.separate(torch.nn.functional.pad(x.flip(0), (delay, 0)), SR)
    calls = []
    stems = two.separate(x, SR, progress=lambda d, t: calls.append((d, t)))
    for name in ("vocals", "accompaniment"):
        expected = (plain.separate(x, SR)[name] + moved[name][:, delay:].flip(0)) / 2
        torch.testing.assert_close(stems[name], expected, atol=1e-6, rtol=0)
    assert not torch.allclose(stems["vocals"], plain.separate(x, SR)["vocals"], atol=1e-4)  # a second view, not a copy
    # every pass keeps the stems aligned with the input: they still add up to the mixture
    torch.testing.assert_close(stems["vocals"] + stems["accompaniment"], x, atol=1e-4, rtol=0)
    assert two.separate(x, SR)["vocals"].equal(stems["vocals"])  # deterministic: no random shifts
    # progress counts the segments of both passes, in order, to the end
    assert [d for d, _ in calls] == sorted(d for d, _ in calls) and calls[-1][0] == calls[-1][1] == calls[0][1]
    assert calls[-1][1] == len(segment_offsets(x.shape[-1], SR, 0.25)) + len(
        segment_offsets(x.shape[-1] + delay, SR, 0.25)
    )


def test_shifts_on_short_mono_and_silent_inputs(tiny_dprnn):
    sep = Separator(tiny_dprnn, device="cpu", shifts=MAX_SHIFTS)
    mono = torch.randn(SR // 10) * 0.1  # shorter than the delays: each pass is still the input's length
    stems = sep.separate(mono, SR)
    assert stems["vocals"].shape == (2, SR // 10)
    torch.testing.assert_close(stems["vocals"] + stems["accompaniment"], mono.expand(2, -1), atol=1e-4, rtol=0)
    assert all(float(s.abs().max()) == 0 for s in sep.separate(torch.zeros(2, SR), SR).values())


@pytest.mark.parametrize("shifts", [0, -1, MAX_SHIFTS + 1, 1.5, True, "2"])
def test_shifts_option_validation(tiny_dprnn, shifts):
    with pytest.raises(SeparationError, match=f"^shifts must be a whole number from 1 to {MAX_SHIFTS}"):
        Separator(tiny_dprnn, device="cpu", shifts=shifts)


def test_a_variant_keeps_every_setting_it_does_not_change(tiny_dprnn):
    sep = Separator(tiny_dprnn, device="cpu", segment=3.0, overlap=0.5, batch_size=4, shifts=3)
    small = sep.variant(segment=1.5, batch_size=1)
    assert (small.segment, small.batch_size) == (1.5, 1)
    assert (small.overlap, small.shifts, small.device, small.info, small.model) == (
        0.5,
        3,
        sep.device,
        sep.info,
        sep.model,
    )
    with pytest.raises(TypeError, match="unknown settings: wiener"):
        sep.variant(wiener=2)


def test_variant_settings_are_the_constructors_keyword_options(tiny_dprnn):
    """A setting added to the constructor is kept by `variant` without being listed again: every
    keyword-only parameter but the model's own (`wiener`) must be stored under its own name."""
    assert "shifts" in variant_settings() and "wiener" not in variant_settings()
    sep = Separator(tiny_dprnn, device="cpu", segment=2.0, overlap=0.5, batch_size=3, shifts=2, wiener=0)
    same = sep.variant()
    for name in variant_settings():
        assert getattr(same, name) == getattr(sep, name), name
    assert same.model.wiener_iterations == 0  # travels with the model


def test_unknown_model_name():
    with pytest.raises(SeparationError, match="unknown model 'spleeter'|no checkpoint at 'spleeter'"):
        Separator.load("spleeter")
    with pytest.raises(SeparationError, match="unknown model"):
        Separator.from_name("spleeter")


def test_bad_waveform_errors(tiny_dprnn):
    sep = Separator(tiny_dprnn, device="cpu")
    with pytest.raises(SeparationError, match="NaN"):
        sep.separate(torch.full((2, 1000), float("nan")), SR)
    with pytest.raises(SeparationError, match="no samples"):
        sep.separate(torch.zeros(2, 0), SR)
