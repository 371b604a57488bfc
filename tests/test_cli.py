"""`python -m separation`: stems written with the right length and rate; user errors are one line."""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf

from separation.cli import main
from tests.helpers import ROOT, SR, voice_and_band

# Without the shipped weights, conv1d runs on random weights: its (expected) untrained warning
# is asserted on, not shown; the shipped checkpoints have their own tests.
pytestmark = [
    pytest.mark.filterwarnings("ignore::separation.UntrainedModelWarning"),
    pytest.mark.usefixtures("no_shipped_checkpoints"),
]


@pytest.fixture
def clip(tmp_path):
    """1.5 s of 22.05 kHz mono: the CLI must return 44.1 kHz stereo of the same duration."""
    voice, band = voice_and_band(1.5, sr=22050)
    path = tmp_path / "in" / "song.wav"
    path.parent.mkdir()
    sf.write(path, (voice + band)[0], 22050)
    return path


def test_entry_point_writes_both_stems(tmp_path, clip):
    out = tmp_path / "out"
    res = subprocess.run(
        [sys.executable, "-m", "separation", str(clip), "--model", "conv1d", "-o", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert res.returncode == 0, res.stderr
    assert "RANDOM weights" in res.stderr  # an untrained model says so
    assert "on cpu" in res.stderr  # the device used is logged
    for stem in ("vocals", "accompaniment"):
        info = sf.info(out / "song" / f"{stem}.wav")
        assert info.samplerate == SR and info.channels == 2 and info.frames == int(1.5 * SR)
        assert info.subtype == "PCM_24"
    # conv1d's stems add up to the mixture (upsampled, upmixed)
    v, _ = sf.read(out / "song" / "vocals.wav")
    a, _ = sf.read(out / "song" / "accompaniment.wav")
    mix, _ = sf.read(clip)
    assert np.abs((v + a)[:, 0] - (v + a)[:, 1]).max() < 1e-5
    assert abs(np.abs(v + a).max() - np.abs(mix).max()) < 0.01


def test_user_error_is_one_line_without_traceback(tmp_path):
    res = subprocess.run(
        [sys.executable, "-m", "separation", str(tmp_path / "missing.mp3"), "-o", str(tmp_path / "o")],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert res.returncode == 2
    assert res.stderr.strip().splitlines() == [f"error: {tmp_path / 'missing.mp3'}: no such file or folder"]


@pytest.mark.parametrize(
    "args,message,code",
    [  # 2: the command could not start; 1: it ran, and the file failed
        (["--model", "spleeter"], "no checkpoint at 'spleeter': not a folder, and not a Hub repo id", 2),
        (["--device", "cuda"], "CUDA was requested", 2),
        (["--wiener", "2", "--model", "conv1d"], "time-domain model", 2),
        (["--shifts", "0"], "--shifts must be a whole number from 1 to 8, not 0", 2),
        (["--stems", "drums"], "drums not produced", 2),
        (["--filename", "{song}/{stem}.{ext}"], "unknown field 'song'", 2),
        (["--clip", "none"], "needs float output", 2),
        (["--max-minutes", "0.01"], "over the 0:01 limit", 1),
    ],
)
def test_option_errors(tmp_path, clip, capsys, args, message, code):
    if "cuda" in args:
        pytest.importorskip("torch")
        import torch

        if torch.cuda.is_available():
            pytest.skip("a GPU is present")
    assert main([str(clip), "-o", str(tmp_path / "out"), "-q", *args]) == code
    err = capsys.readouterr().err
    assert any(line.startswith("error:") for line in err.splitlines())
    import re

    assert re.search(message, err), err
    assert "Traceback" not in err


def test_folder_with_a_bad_file_keeps_the_good_ones(tmp_path, clip, capsys):
    (clip.parent / "notes.mp3").write_text("lyrics, not audio")
    sf.write(clip.parent / "second.flac", np.zeros((SR // 2, 2), dtype=np.float32) + 0.1, SR)
    out = tmp_path / "out"
    code = main(
        [str(clip.parent), "--model", "conv1d", "-o", str(out), "-q", "--format", "flac", "--stems", "accompaniment"]
    )
    err = capsys.readouterr().err
    assert code == 1
    assert "notes.mp3: this is a text file, not audio" in err and "1 of 3 file(s) failed" in err
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*.flac")) == [
        "second/accompaniment.flac",
        "song/accompaniment.flac",
    ]


def test_filename_template_and_float_output(tmp_path, clip):
    out = tmp_path / "out"
    code = main(
        [
            str(clip),
            "--model",
            "conv1d",
            "-o",
            str(out),
            "-q",
            "--filename",
            "{model}-{track}-{stem}.{ext}",
            "--bit-depth",
            "float",
            "--clip",
            "none",
        ]
    )
    assert code == 0
    info = sf.info(out / "conv1d-song-vocals.wav")
    assert info.subtype == "FLOAT"


def test_excerpt_options(tmp_path, clip):
    out = tmp_path / "out"
    assert main([str(clip), "--model", "conv1d", "-o", str(out), "-q", "--offset", "0.5", "--duration", "0.5"]) == 0
    assert sf.info(out / "song" / "vocals.wav").frames == SR // 2


def test_separate_file_api_reads_an_excerpt(clip):
    from separation import Separator

    stems = Separator.from_name("conv1d", device="cpu").separate_file(clip, offset=0.25, duration=1.0)
    assert stems["vocals"].shape == (2, SR)


def test_models_command(capsys):
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    assert "umxhq" in out and "dprnn" in out


def test_a_file_with_too_much_to_decode_is_one_line_and_the_others_are_separated(tmp_path, clip, capsys):
    """8 channels at 384 kHz for 10 s: 31 M samples, over what a 0.5-minute cap lets decode (12 M);
    refused from the header, and the rest of the batch goes on."""
    big = tmp_path / "batch" / "eight-channels.flac"
    big.parent.mkdir()
    with sf.SoundFile(big, "w", 384_000, 8, "PCM_16") as f:
        for _ in range(10):
            f.write(np.zeros((384_000, 8), np.float32))
    shutil.copy(clip, big.parent / "song.wav")
    out = tmp_path / "out"
    code = main([str(big.parent), "--model", "conv1d", "-o", str(out), "-q", "--max-minutes", "0.5"])
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert code == 1
    assert err[0].startswith(
        "error: eight-channels.flac: the audio is 0:10 of 8 channels at 384 kHz, 31 million samples"
    )
    assert err[1] == "error: 1 of 2 file(s) failed"
    assert (out / "song" / "vocals.wav").exists() and not (out / "eight-channels").exists()


def test_cli_conventions(tmp_path, capsys):
    """What users of demucs or audio-separator expect: times as M:SS, a karaoke alias, {parent} in
    --filename for folders of same-named files, an mp3 bit rate, and which weights are here."""
    from separation.cli import parse_time

    assert [parse_time(t) for t in ("90", "1.5", "1:30", "1:02:03.5")] == [90.0, 1.5, 90.0, 3723.5]
    for bad in ("1:75", "-3", "abc", "1:2:3:4"):
        with pytest.raises(argparse.ArgumentTypeError, match="is not a time"):
            parse_time(bad)
    songs = tmp_path / "musdb"
    for name in ("Song A", "Song B"):  # MUSDB-like: every track folder holds a mixture.wav
        (songs / name).mkdir(parents=True)
        sf.write(songs / name / "mixture.wav", np.full((SR * 3, 2), 0.1, np.float32), SR)
    out = tmp_path / "out"
    args = [str(songs), "--model", "conv1d", "-o", str(out), "-q", "--stems", "karaoke", "--format", "mp3"]
    assert main(args) == 2  # both would write out/mixture/accompaniment.mp3
    assert '--filename "{parent}/{track}/{stem}.{ext}"' in capsys.readouterr().err
    args += ["--filename", "{parent}/{stem}.{ext}", "--offset", "0:01", "--duration", "0:01.5", "--mp3-bitrate", "128"]
    assert main(args) == 0
    written = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.mp3"))
    assert written == ["Song A/accompaniment.mp3", "Song B/accompaniment.mp3"]
    info = sf.info(out / "Song A" / "accompaniment.mp3")
    assert abs(info.duration - 1.5) < 0.1
    kbps = (out / "Song A" / "accompaniment.mp3").stat().st_size * 8 / info.duration / 1000
    assert 100 < kbps < 160  # 128 kbit/s, constant
    assert main(["models"]) == 0
    listing = capsys.readouterr().out
    # (this module runs without the shipped weights, as an install without them would)
    assert "weights: none (random init)" in listing and "weights: not downloaded" in listing
