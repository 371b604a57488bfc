"""Audio I/O: every format round-trips; every kind of bad input gets its own clear error."""

from __future__ import annotations

import math
import shutil
import struct
import subprocess

import numpy as np
import pytest
import soundfile as sf
import torch

from separation import audio
from separation.errors import (
    AudioError,
    AudioTooLargeError,
    AudioTooLongError,
    AudioWriteError,
    CorruptAudioError,
    EmptyAudioError,
    NonFiniteAudioError,
    NotAudioError,
)
from tests.helpers import SR, voice_and_band


def _clip(seconds=2.0, sr=SR):
    voice, band = voice_and_band(seconds, sr)
    return voice + band  # (2, T)


@pytest.mark.parametrize("fmt", ["wav", "flac", "ogg", "mp3"])
def test_soundfile_formats_round_trip(tmp_path, fmt):
    x = _clip()
    path = tmp_path / f"clip.{fmt}"
    sf.write(path, x.T, SR)
    wave, rate = audio.read_audio(path)
    assert rate == SR and wave.shape[0] == 2
    # Lossy codecs add encoder delay/padding; lengths agree to a frame, waveforms closely.
    assert abs(wave.shape[1] - x.shape[1]) <= (2048 if fmt in ("mp3", "ogg") else 0)
    if fmt in ("wav", "flac"):
        np.testing.assert_allclose(wave.numpy(), x, atol=1e-4)
    else:
        # Compare energies: codecs keep the level within 1 dB.
        ratio = float((wave**2).mean()) / float((x**2).mean())
        assert abs(10 * math.log10(ratio)) < 1.0


@pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="ffmpeg not installed")
@pytest.mark.parametrize("ext,codec", [("m4a", "aac"), ("aac", "aac"), ("mp4", "aac"), ("webm", "libopus")])
def test_ffmpeg_formats_round_trip(tmp_path, ext, codec):
    x = _clip()
    src = tmp_path / "src.wav"
    sf.write(src, x.T, SR, subtype="FLOAT")
    out = tmp_path / f"clip.{ext}"
    subprocess.run(["ffmpeg", "-v", "error", "-i", str(src), "-c:a", codec, "-b:a", "192k", str(out)], check=True)
    info = audio.probe(out)
    assert info.backend == "ffmpeg" and info.channels == 2
    wave = audio.load_audio(out)
    assert wave.shape[0] == 2
    assert abs(wave.shape[1] - x.shape[1]) < 0.05 * SR
    ratio = float((wave**2).mean()) / float((x**2).mean())
    assert abs(10 * math.log10(ratio)) < 1.0


def test_excerpt_reads_only_the_window(tmp_path):
    x = _clip(4.0)
    path = tmp_path / "clip.flac"
    sf.write(path, x.T, SR)
    wave, _ = audio.read_audio(path, offset=1.0, duration=0.5)
    np.testing.assert_allclose(wave.numpy(), x[:, SR : SR + SR // 2], atol=1e-4)
    with pytest.raises(audio.AudioError, match="starts at 9.0 s but the audio lasts 4.0 s"):
        audio.read_audio(path, offset=9.0)


def test_text_file_named_mp3(tmp_path):
    path = tmp_path / "song.mp3"
    path.write_text("this is not a song\n")
    with pytest.raises(NotAudioError, match="text file, not audio"):
        audio.read_audio(path)


def test_binary_junk_is_not_audio(tmp_path):
    path = tmp_path / "song.wav"
    path.write_bytes(bytes(range(256)) * 8)
    with pytest.raises(NotAudioError, match="not an audio file"):
        audio.read_audio(path)


def test_empty_file(tmp_path):
    path = tmp_path / "song.wav"
    path.touch()
    with pytest.raises(EmptyAudioError, match="empty"):
        audio.read_audio(path)


def test_header_without_samples(tmp_path):
    path = tmp_path / "song.wav"
    sf.write(path, np.zeros((0, 2), dtype=np.float32), SR)
    with pytest.raises(EmptyAudioError, match="no samples"):
        audio.read_audio(path)


def test_missing_file_and_folder(tmp_path):
    with pytest.raises(audio.AudioError, match="no such file"):
        audio.read_audio(tmp_path / "nope.wav")
    with pytest.raises(audio.AudioError, match="is a folder"):
        audio.read_audio(tmp_path)


@pytest.mark.parametrize("fmt", ["wav", "flac", "ogg", "mp3"])
def test_truncated_files(tmp_path, fmt):
    path = tmp_path / f"full.{fmt}"
    sf.write(path, _clip(3.0).T, SR, format=fmt.upper())
    data = path.read_bytes()
    cut = tmp_path / f"cut.{fmt}"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(CorruptAudioError, match="truncated|damaged"):
        audio.read_audio(cut)


def _sparse_wav(path, seconds, sr=8000):
    """A valid 16-bit mono WAV header promising `seconds` of audio, over a sparse file."""
    data_bytes = int(seconds * sr) * 2
    header = b"RIFF" + struct.pack("<I", 36 + data_bytes) + b"WAVE"
    header += b"fmt " + struct.pack("<IHHIIHH", 16, 1, 1, sr, sr * 2, 2, 16)
    header += b"data" + struct.pack("<I", data_bytes)
    with open(path, "wb") as f:
        f.write(header)
        f.truncate(len(header) + data_bytes)


def test_two_hour_file_is_refused_before_decoding(tmp_path):
    path = tmp_path / "long.wav"
    _sparse_wav(path, 2 * 3600)
    assert audio.probe(path).duration == pytest.approx(7200)
    with pytest.raises(AudioTooLongError, match=r"2:00:00, over the 10:00 limit"):
        audio.read_audio(path, max_seconds=600)
    # an excerpt of it is fine
    wave, rate = audio.read_audio(path, offset=3600, duration=2.0, max_seconds=600)
    assert rate == 8000 and wave.shape == (1, 16000)


def test_size_cap(tmp_path):
    path = tmp_path / "clip.wav"
    sf.write(path, _clip(1.0).T, SR)
    with pytest.raises(AudioTooLargeError, match=r"the file is 0\.\d MB, over the 0.001 MB limit"):
        audio.read_audio(path, max_bytes=1000)


def test_nan_samples(tmp_path):
    x = _clip(1.0)
    x[1, SR // 2] = np.nan
    path = tmp_path / "nan.wav"
    sf.write(path, x.T, SR, subtype="FLOAT")
    with pytest.raises(NonFiniteAudioError, match=r"1 samples are NaN or infinite \(the first at 0.50 s\)"):
        audio.read_audio(path)
    with pytest.raises(NonFiniteAudioError):
        audio.prepare(torch.tensor([[0.0, float("inf")]]), SR)


def test_8khz_mono_becomes_44k_stereo(tmp_path):
    sr = 8000
    t = np.arange(sr) / sr
    tone = (0.5 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    path = tmp_path / "phone.wav"
    sf.write(path, tone, sr)
    wave = audio.load_audio(path)
    assert wave.shape == (2, SR)
    assert torch.equal(wave[0], wave[1])
    # still a 440 Hz tone of the same level after resampling
    spectrum = torch.fft.rfft(wave[0]).abs()
    assert int(spectrum.argmax()) == 440
    assert float(wave[0, 1000:-1000].abs().max()) == pytest.approx(0.5, abs=0.01)


def test_six_channels_downmix_to_stereo(tmp_path):
    n = 1000
    x = np.zeros((6, n), dtype=np.float32)
    x[0] = 0.3  # front left
    x[2] = 0.5  # centre
    x[3] = 0.9  # LFE: dropped
    path = tmp_path / "surround.wav"
    sf.write(path, x.T, SR)
    wave = audio.load_audio(path)
    c = 1 / math.sqrt(2)
    norm = 1 + 2 * c
    np.testing.assert_allclose(wave[0].numpy(), (0.3 + c * 0.5) / norm, atol=1e-4)
    np.testing.assert_allclose(wave[1].numpy(), (c * 0.5) / norm, atol=1e-4)


def test_unusual_channel_count_alternates():
    x = torch.arange(7.0)[:, None].expand(7, 4)
    out = audio.to_stereo(x)
    assert out[0, 0] == pytest.approx((0 + 2 + 4 + 6) / 4)
    assert out[1, 0] == pytest.approx((1 + 3 + 5) / 3)


def test_waveform_shape_checks():
    with pytest.raises(audio.AudioError, match="looks like \\(samples, channels\\)"):
        audio.as_waveform(np.zeros((44100, 2)))
    with pytest.raises(EmptyAudioError):
        audio.as_waveform(np.zeros((2, 0)))
    assert audio.as_waveform(np.zeros(5)).shape == (1, 5)


@pytest.mark.parametrize(
    "fmt,bit_depth", [("wav", "16"), ("wav", "24"), ("wav", "float"), ("flac", "24"), ("mp3", "24")]
)
def test_save_round_trip(tmp_path, fmt, bit_depth):
    x = torch.from_numpy(_clip(1.0))
    path = audio.save_audio(tmp_path / f"out.{fmt}", x, SR, bit_depth=bit_depth)
    back, rate = audio.read_audio(path)
    assert rate == SR
    if fmt == "mp3":
        assert abs(back.shape[1] - x.shape[1]) <= 2048
    else:
        tol = {"16": 1e-4, "24": 1e-6, "float": 0}[bit_depth]
        np.testing.assert_allclose(back.numpy(), x.numpy(), atol=tol)
    assert not list(tmp_path.glob(".out-*")), "temporary file left behind"
    assert (path.stat().st_mode & 0o777) != 0o600


def test_limit_peaks_keeps_sum_and_reports():
    vocals = torch.tensor([[0.9, -0.2]])
    acc = torch.tensor([[0.6, 0.1]])
    mix = vocals + acc  # peak 1.5
    stems, msg = audio.limit_peaks({"vocals": vocals, "accompaniment": acc, "mix": mix}, "rescale")
    assert msg and "scaled all stems by" in msg
    gain = 0.999 / 1.5
    torch.testing.assert_close(stems["vocals"] + stems["accompaniment"], mix * gain)
    clamped, msg = audio.limit_peaks({"a": torch.tensor([[1.2, 0.5]])}, "clamp")
    assert clamped["a"].max() <= 0.999 and clamped["a"][0, 1] == 0.5 and "clipped 1 samples" in msg
    same, msg = audio.limit_peaks({"a": torch.tensor([[0.5]])}, "rescale")
    assert msg is None and same["a"].item() == 0.5


def test_check_writable(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(AudioWriteError, match="cannot write to"):
        audio.check_writable(blocker / "sub")
    with pytest.raises(AudioWriteError, match="FLAC has no float"):
        audio.check_writable(tmp_path, "flac", "float")
    assert audio.check_writable(tmp_path / "new", "mp3").is_dir()


# --------------------------------------------------------------------------- bounded decoding


@pytest.mark.parametrize("rate", [8000, 11025, 22050, 32000, 48000, 96000, 192000, 384000])
def test_block_resampling_equals_one_whole_call(rate):
    """The streaming resampler gives torchaudio's whole-signal result, whatever the blocks."""
    import torchaudio.functional as AF

    gen = torch.Generator().manual_seed(rate)
    x = torch.randn(2, int(rate * 2.3) + 7, generator=gen)
    whole = AF.resample(x, rate, SR)
    resampler = audio.Resampler(rate, SR, step_seconds=0.25)
    rng = np.random.default_rng(rate)
    out, a = [], 0
    while a < x.shape[-1]:
        b = a + int(rng.integers(1, rate // 3))
        out.append(resampler.push(x[:, a:b]))
        a = b
    out.append(resampler.finish())
    torch.testing.assert_close(torch.cat(out, dim=-1), whole, atol=0, rtol=0)
    torch.testing.assert_close(audio.resample(x, rate, SR), whole, atol=0, rtol=0)


def test_a_rate_whose_filter_would_take_gigabytes_is_refused(tmp_path):
    path = tmp_path / "odd.wav"
    sf.write(path, np.zeros((44101, 2), np.float32), 44101)  # 44100/44101 does not reduce: a 7.8 GB filter
    with pytest.raises(AudioError, match=r"odd.wav: 44101 Hz is not a sample rate this can convert"):
        audio.load_audio(path)


def test_load_audio_decodes_downmixes_and_resamples_a_block_at_a_time(tmp_path, monkeypatch):
    """Six channels at 96 kHz, decoded in small blocks: the same as decoding it whole and preparing."""
    monkeypatch.setattr(audio, "BLOCK_FRAMES", 5000)
    rng = np.random.default_rng(1)
    x = (0.1 * rng.standard_normal((6, int(96000 * 1.7)))).astype(np.float32)
    path = tmp_path / "surround.wav"
    sf.write(path, x.T, 96000, subtype="FLOAT")
    streamed = audio.load_audio(path)
    whole = audio.prepare(torch.from_numpy(x), 96000)
    assert streamed.shape == whole.shape == (2, math.ceil(1.7 * SR))
    torch.testing.assert_close(streamed, whole, atol=1e-6, rtol=0)


def test_many_channels_at_a_high_rate_are_refused_before_decoding(tmp_path):
    path = tmp_path / "eight.flac"
    with sf.SoundFile(path, "w", 384_000, 8, "PCM_16") as f:
        for _ in range(5):
            f.write(np.zeros((384_000, 8), np.float32))
    assert audio.decode_budget(60) == int(60.5 * 48_000 * 8)
    with pytest.raises(
        AudioTooLargeError, match=r"0:05 of 8 channels at 384 kHz, 15 million samples to decode, over the 12 million"
    ):
        audio.load_audio(path, max_seconds=30)
    assert audio.load_audio(path, max_seconds=60).shape == (2, 5 * SR)  # within a larger budget: decoded


@pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="needs ffmpeg")
def test_a_stream_without_a_duration_is_stopped_at_the_cap(tmp_path):
    path = tmp_path / "piped.webm"
    with open(path, "wb") as out:
        subprocess.run(
            [
                "ffmpeg",
                "-v",
                "error",
                "-f",
                "lavfi",
                "-i",
                "sine=frequency=440:duration=20",
                "-ac",
                "2",
                "-c:a",
                "libopus",
                "-f",
                "webm",
                "pipe:1",
            ],
            stdout=out,
            check=True,
        )
    assert audio.probe(path).frames == 0  # the header does not say how long it is
    with pytest.raises(AudioTooLongError, match=r"more than the 0:10 limit \(its header does not say"):
        audio.load_audio(path, max_seconds=10)
    wave = audio.load_audio(path, max_seconds=30)
    assert abs(wave.shape[-1] / SR - 20.0) < 0.05
    with pytest.raises(AudioError, match="after the end of the audio"):
        audio.load_audio(path, offset=25.0)


def test_nan_in_a_later_block_says_where(tmp_path, monkeypatch):
    monkeypatch.setattr(audio, "BLOCK_FRAMES", 4096)
    x = np.zeros((2, 3 * SR), np.float32)
    x[0, 2 * SR + 100] = np.inf
    path = tmp_path / "late.wav"
    sf.write(path, x.T, SR, subtype="FLOAT")
    with pytest.raises(NonFiniteAudioError, match=r"the first at 2.00 s"):
        audio.load_audio(path)


@pytest.mark.parametrize(
    "offset,duration,match",
    [
        (float("nan"), None, "start must be a number of seconds, not nan"),
        (-0.5, None, "must start at 0 s or later"),
        (0.0, 0.0, "must last more than 0 s"),
        (0.0, float("inf"), "length must be a number of seconds, not inf"),
        (9.0, 1.0, "starts at 9.0 s but the audio lasts 3.0 s"),
    ],
)
def test_excerpt_bounds(tmp_path, offset, duration, match):
    path = tmp_path / "three.wav"
    sf.write(path, np.zeros((3 * SR, 2), np.float32), SR)
    with pytest.raises(AudioError, match=match):
        audio.load_audio(path, offset=offset, duration=duration)
