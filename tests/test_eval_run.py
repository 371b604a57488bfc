"""`python -m eval` on a generated MUSDB18-HQ-shaped set: runs, resume, parallel jobs, CLI, report."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import museval
import numpy as np
import pytest
import soundfile as sf
import torch

from eval.__main__ import main as eval_main
from eval.report import holm, wilcoxon_tests, write_report
from eval.run import RunConfig, load_results, run, select_tracks
from eval.scores import TrackScores, score_track
from separation.checkpoints import read_config
from separation.errors import SeparationError
from separation.pretrained import WEIGHTS_DIR
from songgen.synthetic import write_musdb_folder

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def musdb_root(tmp_path_factory) -> Path:
    return write_musdb_folder(tmp_path_factory.mktemp("musdb"), train=0, valid=0, test=3, seconds=6.0, seed=5)


def quiet(*args, **kwargs):
    pass


@pytest.mark.slow
def test_oracles_and_the_shipped_model_rank_as_expected(musdb_root, tmp_path):
    cfg = RunConfig(
        methods=["mixture", "irm", "ibm", "dprnn"], musdb_root=str(musdb_root), is_wav=True, out=str(tmp_path)
    )
    table, errors = run(cfg, echo=quiet)
    assert errors == []
    sdr = {m: table[m]["vocals"]["SDR"] for m in table}
    assert sdr["irm"] > sdr["dprnn"] > sdr["mixture"]
    assert sdr["ibm"] > sdr["dprnn"]
    assert all(table[m]["tracks"] == 3 for m in table)
    # one museval JSON per method and track, readable by museval's own aggregation
    files = sorted(tmp_path.glob("*/test/*.json"))
    assert len(files) == 12
    store = museval.EvalStore()
    store.add_eval_dir(tmp_path / "irm")
    by_museval = store.agg_frames_tracks_scores()
    assert by_museval[("vocals", "SDR")] == pytest.approx(table["irm"]["vocals"]["SDR"], abs=1e-4)
    assert json.loads((tmp_path / "dprnn" / "method.json").read_text())["architecture"] == "dprnn"


@pytest.mark.slow
def test_default_backend_equals_museval_on_dual_mono_vocals(musdb_root, tmp_path):
    """The synthetic set has real data's traits: dual-mono vocals (singular BSSEval systems) and
    whole vocal-free seconds (NaN windows). Both backends finish, with the same medians."""
    dual_mono = [sf.read(f, dtype="float32")[0] for f in sorted((musdb_root / "test").glob("*/vocals.wav"))]
    assert any(np.array_equal(v[:, 0], v[:, 1]) for v in dual_mono)
    tables = {}
    for backend in ("fast", "museval"):
        cfg = RunConfig(
            methods=["mixture", "irm", "dprnn"],
            musdb_root=str(musdb_root),
            is_wav=True,
            out=str(tmp_path / backend),
            backend=backend,
        )
        tables[backend], errors = run(cfg, echo=quiet)
        assert errors == []
    for method in ("mixture", "irm", "dprnn"):
        for source in ("vocals", "accompaniment"):
            for metric in ("SDR", "SIR", "ISR", "SAR"):
                fast, slow = tables["fast"][method][source][metric], tables["museval"][method][source][metric]
                if fast > 100 and slow > 100:
                    continue  # round-off (the mixture's SAR: an exact sum of the references)
                assert fast == pytest.approx(slow, abs=0.01), (method, source, metric)
    frames = TrackScores.load(tmp_path / "fast" / "irm" / "test" / "Synthetic 000 - Test Song.json").frames
    assert np.isnan(frames["vocals"]["SDR"]).any() and np.isnan(frames["accompaniment"]["SDR"]).any()


@pytest.mark.slow
def test_musdb18_stem_mp4_through_eval(tmp_path):
    root = write_musdb_folder(tmp_path / "musdb18", train=0, valid=0, test=2, seconds=4.0, seed=3, stems_mp4=True)
    table, errors = run(
        RunConfig(methods=["mixture", "irm"], musdb_root=str(root), out=str(tmp_path / "res")), echo=quiet
    )
    assert errors == [] and table["irm"]["tracks"] == 2
    assert table["irm"]["vocals"]["SDR"] > table["mixture"]["vocals"]["SDR"] + 10
    # lossy streams: the mixture is no longer an exact sum of the references, as in MUSDB18
    assert 15 < table["mixture"]["vocals"]["SAR"] < 100


@pytest.mark.slow
def test_full_length_tracks_in_bounded_memory(tmp_path):
    """Two 7-minute songs (the longest in MUSDB run ~7 min), two jobs at once: the whole process
    tree stays within 6 GB (it took ~12 GB when the oracle masks and the metrics held whole-track
    spectrograms and float64 copies); peak measured from /proc every 20 ms."""
    from bench.procmem import run_measured
    from songgen.synthetic import make_track, write_track

    root = tmp_path / "full"
    for i, seed in enumerate((11, 12)):
        song = make_track(seed, 30.0)  # repeated to 7 minutes: the traits, and the length
        write_track(root / "test" / f"Full {i} - Seven Minutes", {k: np.tile(v, (14, 1)) for k, v in song.items()})
    cmd = [
        sys.executable,
        "-m",
        "eval",
        "--methods",
        "mixture,irm",
        "--musdb-root",
        str(root),
        "--is-wav",
        "--out",
        str(tmp_path / "res"),
        "--jobs",
        "2",
        "--max-memory",
        "8",
        "-q",
    ]
    peak, code = run_measured(cmd, cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT)), stdout=subprocess.DEVNULL)
    assert code == 0
    assert peak < 6 * 2**30, f"peak {peak / 2**30:.2f} GB"
    results = load_results(tmp_path / "res")
    assert len(results["irm"]) == 2 and results["irm"]["Full 0 - Seven Minutes"].frames["vocals"]["SDR"].size == 420


def test_parallel_jobs_are_limited_by_memory(musdb_root, capsys):
    from eval.run import affordable_jobs, open_tracks, track_memory

    seven_minutes = 7 * 60 * 44100
    assert 8 * 2**30 < track_memory(seven_minutes, "museval") < 12 * 2**30  # measured: 9.0 GB
    assert track_memory(seven_minutes, "fast") < 2.5 * 2**30  # measured: 1.4-2.0 GB
    cfg = RunConfig(methods=["irm"], musdb_root=str(musdb_root), is_wav=True, jobs=4, max_memory=2.0)
    assert affordable_jobs(cfg, open_tracks(cfg)) == 2  # ~0.8 GB each for 6-s tracks
    assert "--jobs 4: a job may need ~0.8 GB" in capsys.readouterr().out
    cfg = RunConfig(methods=["irm"], musdb_root=str(musdb_root), is_wav=True, jobs=2, max_memory=0.5, backend="museval")
    assert affordable_jobs(cfg, open_tracks(cfg)) == 1
    assert "more than the 0.5 GB budget; the fast backend needs far less" in capsys.readouterr().out


@pytest.mark.slow
def test_a_killed_run_resumes_to_the_same_table(musdb_root, tmp_path):
    straight = tmp_path / "straight"
    killed = tmp_path / "killed"
    cmd = [
        sys.executable,
        "-m",
        "eval",
        "--methods",
        "mixture,dprnn",
        "--musdb-root",
        str(musdb_root),
        "--is-wav",
        "-q",
    ]
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    subprocess.run(cmd + ["--out", str(straight)], check=True, cwd=ROOT, env=env, capture_output=True)
    proc = subprocess.Popen(
        cmd + ["--out", str(killed)], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    deadline = time.time() + 120
    while time.time() < deadline and len(list(killed.glob("*/test/*.json"))) < 2:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = len(list(killed.glob("*/test/*.json")))
    assert 2 <= done < 6, "the run should have been killed part-way"
    for path in killed.glob("*/test/*.json"):
        TrackScores.load(path)  # every finished file is whole
    resumed = subprocess.run(cmd[:-1] + ["--out", str(killed)], cwd=ROOT, env=env, capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    assert f"{done} already done" in resumed.stdout
    a, b = load_results(straight), load_results(killed)
    assert a.keys() == b.keys()
    for method in a:
        for track in a[method]:
            # the same to float round-off: once in four full-suite runs on a loaded 2-core machine the
            # resumed DPRNN scores differed from the straight run's by 2e-4 dB (CPU kernels)
            for source, row in a[method][track].medians().items():
                assert b[method][track].medians()[source] == pytest.approx(row, abs=1e-3, nan_ok=True)


@pytest.mark.slow
def test_parallel_jobs_give_the_same_files(musdb_root, tmp_path):
    one = RunConfig(methods=["irm"], musdb_root=str(musdb_root), is_wav=True, out=str(tmp_path / "one"))
    two = RunConfig(methods=["irm"], musdb_root=str(musdb_root), is_wav=True, out=str(tmp_path / "two"), jobs=2)
    run(one, echo=quiet)
    run(two, echo=quiet)
    for path in (tmp_path / "one").glob("irm/test/*.json"):
        assert path.read_text() == (tmp_path / "two" / path.relative_to(tmp_path / "one")).read_text()


def test_a_results_folder_of_another_setup_is_refused(musdb_root, tmp_path, capsys):
    args = [
        "--methods",
        "irm",
        "--musdb-root",
        str(musdb_root),
        "--is-wav",
        "--out",
        str(tmp_path),
        "--limit",
        "1",
        "-q",
    ]
    assert eval_main(args) == 0
    assert eval_main(args + ["--backend", "museval"]) == 2
    assert "different setup" in capsys.readouterr().err


def test_averaged_passes_are_recorded_and_kept_apart(musdb_root, tmp_path, capsys):
    args = ["--methods", "d=dprnn", "--musdb-root", str(musdb_root), "--is-wav", "--out", str(tmp_path), "--limit", "1"]
    assert eval_main(args + ["-q", "--shifts", "9"]) == 2  # refused before anything is written
    assert "--shifts must be a whole number from 1 to 8" in capsys.readouterr().err and not (tmp_path / "d").exists()
    assert eval_main(args + ["-q", "--shifts", "2"]) == 0
    record = json.loads((tmp_path / "d" / "method.json").read_text())
    assert record["shifts"] == 2
    assert eval_main(args + ["-q"]) == 2  # single-pass results would be mixed with averaged ones
    assert "shifts: 2 -> 1" in capsys.readouterr().err
    # a folder written before `shifts` was recorded holds single-pass results
    record.pop("shifts")
    (tmp_path / "d" / "method.json").write_text(json.dumps(record))
    assert eval_main(args + ["-q"]) == 0
    assert eval_main(args + ["-q", "--shifts", "2"]) == 2


def test_track_selection():
    class T:
        def __init__(self, name):
            self.name = name

    tracks = [T(f"song {i}") for i in range(50)]
    assert [t.name for t in select_tracks(tracks, limit=2)] == ["song 0", "song 1"]
    a = select_tracks(tracks, limit=25, seed=42)
    assert len(a) == 25 and [t.name for t in a] == [t.name for t in select_tracks(tracks, limit=25, seed=42)]
    assert [t.name for t in a] != [t.name for t in select_tracks(tracks, limit=25, seed=43)]
    assert [t.name for t in select_tracks(tracks, names=["song 7"])] == ["song 7"]


def test_cli_errors_are_one_line(musdb_root, tmp_path, capsys):
    base = ["--musdb-root", str(musdb_root), "--is-wav", "--out", str(tmp_path), "-q"]
    assert eval_main(["--methods", "irm", "--tracks", "No Such Song"] + base) == 2
    assert "no such track: No Such Song" in capsys.readouterr().err
    assert eval_main(["--methods", "irm", "--musdb-root", str(tmp_path / "nowhere"), "--out", str(tmp_path)]) == 2
    assert "no such folder" in capsys.readouterr().err
    assert eval_main(["--methods", str(tmp_path / "not-a-checkpoint")] + base) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and len(err.strip().splitlines()) == 1


# ---------------------------------------------------------------------------- metrics command


def write_stems(folder: Path, stems: dict[str, np.ndarray], rate: int = 44100) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, audio in stems.items():
        sf.write(folder / f"{name}.wav", audio.T, rate, subtype="FLOAT")
    return folder


def test_metrics_command_scores_folders_and_writes_museval_json(tmp_path, capsys):
    rng = np.random.default_rng(0)
    refs = {
        "vocals": rng.standard_normal((2, 3 * 44100)) * 0.1,
        "accompaniment": rng.standard_normal((2, 3 * 44100)) * 0.1,
    }
    ests = {k: v + 0.03 * rng.standard_normal(v.shape) for k, v in refs.items()}
    ref_dir = write_stems(tmp_path / "ref", refs)
    est_dir = write_stems(tmp_path / "est", {**ests, "drums": ests["vocals"]})  # no drums reference: skipped
    out = tmp_path / "scores.json"
    assert eval_main(["metrics", str(ref_dir), str(est_dir), "--json", str(out)]) == 0
    printed = capsys.readouterr()
    assert "vocals" in printed.out and "accompaniment" in printed.out and "drums.wav has no reference" in printed.err
    scores = TrackScores.load(out)
    expected = museval.evaluate(
        np.stack([refs["accompaniment"].T, refs["vocals"].T]).astype(np.float32),
        np.stack([ests["accompaniment"].T, ests["vocals"].T]).astype(np.float32),
    )
    np.testing.assert_allclose(scores.frames["vocals"]["SDR"], expected[0][1], atol=1e-4)
    line = next(x for x in printed.out.splitlines() if x.startswith("vocals"))
    assert float(line.split()[1]) == pytest.approx(np.median(expected[0][1]), abs=0.01)


def test_the_fast_backend_does_not_import_museval(tmp_path):
    """museval's import (pandas, jsonschema: ~2.7 s) once took half of a fast `eval metrics`; its
    version for the JSON comes from the package metadata."""
    rng = np.random.default_rng(3)
    folder = write_stems(
        tmp_path / "ref",
        {"vocals": 0.1 * rng.standard_normal((2, 44100)), "accompaniment": 0.1 * rng.standard_normal((2, 44100))},
    )
    code = (
        "import sys; from eval.__main__ import main; "
        f"assert main(['metrics', {str(folder)!r}, {str(folder)!r}, "
        f"'--json', {str(tmp_path / 's.json')!r}, '-q']) == 0; "
        "assert 'museval' not in sys.modules, 'museval was imported'"
    )
    res = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env=dict(os.environ, PYTHONPATH=str(ROOT)),
    )
    assert res.returncode == 0, res.stderr
    assert (
        json.loads((tmp_path / "s.json").read_text().replace("NaN", "null"))["museval_version"] == "0.4.1"
    )  # as pinned


def test_metrics_command_bad_inputs(tmp_path, capsys):
    rng = np.random.default_rng(1)
    ref_dir = write_stems(tmp_path / "ref", {"vocals": rng.standard_normal((2, 44100)) * 0.1})
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "vocals.wav").write_text("this is not audio\n")
    assert eval_main(["metrics", str(ref_dir), str(bad)]) == 2
    assert capsys.readouterr().err.startswith("error: vocals.wav")
    other_rate = write_stems(tmp_path / "rate", {"vocals": rng.standard_normal((2, 22050)) * 0.1}, rate=22050)
    assert eval_main(["metrics", str(ref_dir), str(other_rate)]) == 2
    assert "22050 Hz" in capsys.readouterr().err
    assert eval_main(["metrics", str(ref_dir), str(tmp_path / "nowhere")]) == 2
    assert "no such folder" in capsys.readouterr().err


def test_metrics_command_takes_a_musdb_track_folder_and_any_audio_format(musdb_root, tmp_path, capsys):
    """References straight from a MUSDB track folder (vocals, drums, bass, other, mixture):
    an accompaniment estimate is scored against drums + bass + other; a .flac estimate is
    matched to vocals.wav by its stem name."""
    track = sorted((musdb_root / "test").iterdir())[0]
    stems = {s: sf.read(track / f"{s}.wav", dtype="float32")[0].T for s in ("vocals", "drums", "bass", "other")}
    accompaniment = stems["drums"] + stems["bass"] + stems["other"]
    rng = np.random.default_rng(4)
    est = {
        "vocals": stems["vocals"] + 0.05 * accompaniment,
        "accompaniment": 0.95 * accompaniment + 0.01 * rng.standard_normal(accompaniment.shape),
    }
    est_dir = tmp_path / "est"
    est_dir.mkdir()
    sf.write(est_dir / "vocals.flac", est["vocals"].T, 44100, subtype="PCM_24")
    sf.write(est_dir / "accompaniment.wav", est["accompaniment"].T, 44100, subtype="FLOAT")
    out = tmp_path / "scores.json"
    assert eval_main(["metrics", str(track), str(est_dir), "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    scores = TrackScores.load(out)
    assert set(scores.frames) == {"vocals", "accompaniment"}
    flac_vocals = sf.read(est_dir / "vocals.flac", dtype="float32")[0].T
    expected = museval.evaluate(
        np.stack([stems["vocals"].T, accompaniment.T]), np.stack([flac_vocals.T, est["accompaniment"].T])
    )
    np.testing.assert_allclose(scores.frames["accompaniment"]["SDR"], expected[0][1], atol=1e-4, equal_nan=True)
    line = next(x for x in printed.splitlines() if x.startswith("accompaniment"))
    assert float(line.split()[1]) == pytest.approx(np.nanmedian(expected[0][1]), abs=0.01)


def test_metrics_command_refuses_an_estimate_of_another_length(tmp_path, capsys):
    rng = np.random.default_rng(2)
    refs = {
        "vocals": 0.1 * rng.standard_normal((2, 15 * 44100)),
        "accompaniment": 0.1 * rng.standard_normal((2, 15 * 44100)),
    }
    ref_dir = write_stems(tmp_path / "ref", refs)
    short = write_stems(tmp_path / "short", {k: v[:, : 5 * 44100] for k, v in refs.items()})
    assert eval_main(["metrics", str(ref_dir), str(short)]) == 2
    err = capsys.readouterr().err
    assert "lasts 5.00 s but its reference 15.00 s" in err and len(err.strip().splitlines()) == 1
    # half a second short: zero-padded as museval does, and said so
    near = write_stems(tmp_path / "near", {k: v[:, : 14 * 44100 + 22050] + 0.01 for k, v in refs.items()})
    out = tmp_path / "near.json"
    assert eval_main(["metrics", str(ref_dir), str(near), "--json", str(out)]) == 0
    assert "zero-padded as museval does" in capsys.readouterr().err
    padded = {k: np.pad(v[:, : 14 * 44100 + 22050] + 0.01, ((0, 0), (0, 22050))) for k, v in refs.items()}
    expected = score_track(refs, {k: v.astype(np.float32) for k, v in padded.items()})
    np.testing.assert_allclose(
        TrackScores.load(out).frames["vocals"]["SDR"], expected.frames["vocals"]["SDR"], atol=1e-4
    )


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a GPU")
@pytest.mark.parametrize("device", ["cuda", "gpu"])
def test_a_device_that_is_not_there_is_one_line_and_writes_nothing(musdb_root, tmp_path, capsys, device):
    ref_dir = write_stems(tmp_path / "ref", {"vocals": np.full((2, 44100), 0.1)})
    assert eval_main(["metrics", str(ref_dir), str(ref_dir), "--device", device]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and len(err.strip().splitlines()) == 1 and "device" in err.lower()
    out = tmp_path / "results"
    assert (
        eval_main(
            ["--methods", "irm", "--musdb-root", str(musdb_root), "--is-wav", "--out", str(out), "--device", device]
        )
        == 2
    )
    assert not out.exists()


def test_table_and_json_agree_on_infinite_scores(tmp_path):
    frames = {
        "vocals": {
            m: np.array([3.0, math.inf, 5.0, math.inf, math.nan]) for m in ("SDR", "SIR", "ISR", "SAR", "SI-SDR")
        }
    }
    scores = TrackScores("x", frames)
    again = TrackScores.load(scores.save(tmp_path / "x.json"))
    assert scores.medians() == again.medians() == {"vocals": {m: 4.0 for m in frames["vocals"]}}


# ---------------------------------------------------------------------------- report


def scores_of(track: str, sdr: float) -> TrackScores:
    frames = {"vocals": {m: np.array([sdr, sdr + 1.0]) for m in ("SDR", "SIR", "ISR", "SAR", "SI-SDR")}}
    return TrackScores(track, frames)


def test_wilcoxon_and_holm_by_hand():
    # a beats b by 1 dB on each of 6 tracks: exact two-sided p = 2 / 2**6
    tracks = {
        "a": {f"t{i}": scores_of(f"t{i}", 5.0 + i).medians() for i in range(6)},
        "b": {f"t{i}": scores_of(f"t{i}", 4.0 + i + 0.01 * i).medians() for i in range(6)},
    }
    (row,) = [r for r in wilcoxon_tests(tracks, ["vocals"]) if r["metric"] == "SDR"]
    assert row["tracks"] == 6 and row["p"] == pytest.approx(2 / 64)
    assert row["median_diff"] > 0.9
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])


@pytest.mark.slow
def test_report_writes_tables_plots_and_tests(musdb_root, tmp_path):
    run(RunConfig(methods=["mixture", "irm"], musdb_root=str(musdb_root), is_wav=True, out=str(tmp_path)), echo=quiet)
    out = write_report(tmp_path)  # PNGs through kaleido and Debian's chromium (installed by set-up)
    summary = (out / "summary.md").read_text()
    assert "| irm |" in summary and "Wilcoxon" in summary
    rows = (out / "summary.csv").read_text().splitlines()
    assert rows[0] == "method,source,metric,median_db,tracks" and len(rows) == 1 + 2 * 2 * 5
    assert len((out / "tracks.csv").read_text().splitlines()) == 1 + 2 * 3 * 2 * 5
    html = (out / "boxplots.html").read_text()
    assert html.count("plotly-graph-div") >= 2 and "SI-SDR" in html
    for source in ("vocals", "accompaniment"):
        assert (out / f"boxplot-{source}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow
def test_export_takes_only_the_scores_of_the_exported_weights(musdb_root, tmp_path):
    """Results of the shipped `dprnn` must not end up in the card of another DPRNN: export finds
    the results folder whose recorded weights are the checkpoint's, and refuses otherwise."""
    import dataclasses

    from separation.checkpoints import save_checkpoint, weights_digest
    from separation.models.dprnn import DPRNN
    from tests.helpers import TINY_CONFIGS
    from training.hub import export

    other = tmp_path / "other"
    torch.manual_seed(0)
    model = DPRNN(dataclasses.replace(TINY_CONFIGS["dprnn"], segment_seconds=2.0))
    save_checkpoint(model, other, training={"data": "synthetic test stand-in"})
    results = tmp_path / "results"
    run(
        RunConfig(methods=["mixture", "irm", "dprnn"], musdb_root=str(musdb_root), is_wav=True, out=str(results)),
        echo=quiet,
    )
    with pytest.raises(SeparationError, match="no results .* are of this checkpoint"):
        export(other, tmp_path / "x", scores=results)
    with pytest.raises(SeparationError, match="scores of other weights"):
        export(other, tmp_path / "x", scores=results, method="dprnn")
    assert not (tmp_path / "x").exists()
    table, _ = run(
        RunConfig(
            methods=[f"mine={other}", "mixture", "irm"], musdb_root=str(musdb_root), is_wav=True, out=str(results)
        ),
        echo=quiet,
    )
    dest = export(other, tmp_path / "x", scores=results)
    test = read_config(dest)["training"]["test"]
    assert test["method"] == "mine" and test["weights"] == weights_digest(model)
    assert test["medians"]["mine"]["vocals"] == pytest.approx(table["mine"]["vocals"]["SDR"])
    assert "dprnn" not in test["medians"]
    card = (dest / "README.md").read_text()
    gain = table["mine"]["vocals"]["SDR"] - table["mixture"]["vocals"]["SDR"]
    assert f"{gain:+.2f} dB over the mixture itself" in card
    assert "a clear separation" not in card  # random weights separate nothing: the card must not say otherwise


def test_card_verdicts_follow_the_measured_scores():
    from training.card import verdict

    def test(model, mixture=-4.0, irm=15.0):
        return {
            "data": "synthetic",
            "tracks": 3,
            "medians": {"mixture": {"vocals": mixture}, "irm": {"vocals": irm}, "m": {"vocals": model}},
        }

    assert "a clear separation" in verdict(test(9.0), "m") and "6.00 dB below the ideal ratio mask" in verdict(
        test(9.0), "m"
    )
    assert "a partial separation" in verdict(test(1.0), "m")
    assert "barely better than the unprocessed mixture" in verdict(test(-3.0), "m")
    assert "worse than the unprocessed mixture" in verdict(test(-6.0), "m")
    assert "has not been scored" in verdict(None)


@pytest.mark.slow
def test_export_puts_eval_scores_in_the_model_card(musdb_root, tmp_path):
    from training.hub import export

    results = tmp_path / "results"
    table, _ = run(
        RunConfig(methods=["mixture", "irm", "conv1d"], musdb_root=str(musdb_root), is_wav=True, out=str(results)),
        echo=quiet,
    )
    dest = export(WEIGHTS_DIR / "conv1d", tmp_path / "ckpt", scores=results)
    test = read_config(dest)["training"]["test"]
    assert test["tracks"] == 3
    assert test["medians"]["conv1d"]["vocals"] == pytest.approx(table["conv1d"]["vocals"]["SDR"])
    assert test["medians"]["irm"]["accompaniment"] == pytest.approx(table["irm"]["accompaniment"]["SDR"])
    card = (dest / "README.md").read_text()
    own = test["medians"]["conv1d"]
    assert f"| **{own['vocals']:.2f}** |" in card and f"| **{own['accompaniment']:.2f}** |" in card
    assert f'name: "vocals SDR (BSSEval v4, median)", value: {own["vocals"]:.2f}}}' in card  # Hub model-index


def _result_rows(card: str) -> list[str]:
    """The rows of a model card's evaluation table."""
    table = card.split("## Evaluation results")[1].split("\n## ")[0]
    return [line for line in table.splitlines() if line.startswith("| ") and not line.startswith("| test data")]


@pytest.mark.slow
def test_export_takes_several_test_sets_the_first_as_headline(musdb_root, tmp_path):
    from training.hub import export

    first, second = tmp_path / "first", tmp_path / "second"
    for out, tracks in ((first, None), (second, 2)):
        run(
            RunConfig(
                methods=["mixture", "conv1d"], musdb_root=str(musdb_root), is_wav=True, out=str(out), limit=tracks
            ),
            echo=quiet,
        )
    dest = export(WEIGHTS_DIR / "conv1d", tmp_path / "ckpt", scores=[first, second])
    training = read_config(dest)["training"]
    assert training["test"]["tracks"] == 3 and [t["tracks"] for t in training["more_tests"]] == [2]
    card = (dest / "README.md").read_text()
    assert [row.split(" | ")[1] for row in _result_rows(card)] == ["3", "2"]  # one row per test set, in order
    assert "On the " in card and ", 3 held-out tracks" in card  # the headline sentence is the first set's
