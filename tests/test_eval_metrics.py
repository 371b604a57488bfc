"""The fast BSSEval backend against museval itself, SI-SDR, and the museval JSON format."""

from __future__ import annotations

import json
import math
import os

import museval
import numpy as np
import pytest
import torch

from eval import bsseval
from eval.scores import METRICS, TrackScores, framewise, score_track
from separation.audio import SAMPLE_RATE
from separation.errors import SeparationError
from songgen.synthetic import Traits, make_track

SR = SAMPLE_RATE  # the project's one sample rate
TOL_DB = 0.01


def museval_scores(refs: np.ndarray, ests: np.ndarray, window=SR, hop=SR) -> dict[str, np.ndarray]:
    """museval's own path, (S, C, T) in."""
    sdr, isr, sir, sar = museval.evaluate(refs.transpose(0, 2, 1), ests.transpose(0, 2, 1), win=window, hop=hop)
    return {"SDR": sdr, "ISR": isr, "SIR": sir, "SAR": sar}


def assert_same(expected: dict, got: dict, tol: float = TOL_DB, floor: float | None = None) -> float:
    """Same NaN and inf frames, finite values within `tol` dB. Above `floor` (when given), both
    values must be round-off (a term that is exactly zero in exact arithmetic), not compared."""
    worst = 0.0
    for m in ("SDR", "ISR", "SIR", "SAR"):
        a, b = np.asarray(expected[m]), np.asarray(got[m])
        assert a.shape == b.shape, m
        np.testing.assert_array_equal(np.isnan(a), np.isnan(b), err_msg=f"{m}: NaN frames differ")
        np.testing.assert_array_equal(np.isinf(a), np.isinf(b), err_msg=f"{m}: inf frames differ")
        finite = np.isfinite(a)
        if floor is not None:
            np.testing.assert_array_equal(a[finite] > floor, b[finite] > floor, err_msg=f"{m}: round-off frames differ")
            finite &= a < floor
        if finite.any():
            diff = np.abs(a[finite] - b[finite]).max()
            assert diff < tol, f"{m}: max difference {diff:.3g} dB"
            worst = max(worst, diff)
    return worst


@pytest.mark.parametrize(
    "sources,channels,seconds",
    [(2, 2, 3.0), (3, 2, 2.5), (2, 1, 2.2), (4, 2, 1.3), (2, 2, 0.7)],  # 0.7 s: one window, the whole signal
)
@pytest.mark.slow
def test_fast_matches_museval_on_random_signals(sources, channels, seconds):
    rng = np.random.default_rng(sources * 10 + channels)
    n = int(seconds * SR)
    refs = rng.standard_normal((sources, channels, n))
    # estimates: leakage from the other sources, a filtered copy (spatial distortion), noise
    leak = 0.3 * np.roll(refs, 1, axis=0)
    filtered = np.stack([[np.convolve(x, [0.6, 0.3, 0.1], mode="same") for x in src] for src in refs])
    ests = filtered + leak + 0.2 * rng.standard_normal(refs.shape)
    assert_same(museval_scores(refs, ests), bsseval.bss_eval(refs, ests))


def test_fast_matches_museval_on_a_synthetic_song_with_silences():
    song = make_track(7, seconds=5.0)  # the voice pauses: some vocal windows are silent
    refs = np.stack([song["vocals"].T, (song["drums"] + song["bass"] + song["other"]).T]).astype(np.float64)
    refs[0, :, SR : 2 * SR] = 0.0  # a whole silent reference window -> NaN for every source
    rng = np.random.default_rng(0)
    ests = 0.8 * refs + 0.15 * refs[::-1] + 0.01 * rng.standard_normal(refs.shape)
    ests[1, :, 3 * SR : 4 * SR] = 0.0  # a silent estimate window -> NaN too
    expected = museval_scores(refs, ests)
    got = bsseval.bss_eval(refs, ests)
    assert_same(expected, got)
    assert np.isnan(got["SDR"][:, 1]).all() and np.isnan(got["SDR"][:, 3]).all()
    assert np.isfinite(got["SDR"]).any()  # (the voice pauses too: other windows can be silent)


def test_channel_sum_zero_counts_as_silent_like_museval():
    # museval's "silent" test sums the channels: a window with L == -R is silent to it
    rng = np.random.default_rng(3)
    refs = rng.standard_normal((2, 2, 3 * SR))
    refs[0, 1, SR : 2 * SR] = -refs[0, 0, SR : 2 * SR]
    ests = refs + 0.1 * rng.standard_normal(refs.shape)
    got = bsseval.bss_eval(refs, ests)
    assert_same(museval_scores(refs, ests), got)
    assert np.isnan(got["SDR"][:, 1]).all()


def test_fast_matches_museval_on_nearly_perfect_estimates():
    rng = np.random.default_rng(1)
    refs = rng.standard_normal((2, 2, 3 * SR))
    ests = refs + 1e-4 * rng.standard_normal(refs.shape)
    got = bsseval.bss_eval(refs, ests)
    assert np.nanmin(got["SDR"]) > 70  # really nearly perfect
    assert_same(museval_scores(refs, ests), got)


def test_estimates_are_cut_or_padded_like_museval():
    rng = np.random.default_rng(2)
    refs = rng.standard_normal((2, 2, 3 * SR))
    longer = np.concatenate([refs + 0.3 * rng.standard_normal(refs.shape), rng.standard_normal((2, 2, 999))], axis=-1)
    shorter = (refs + 0.3 * rng.standard_normal(refs.shape))[..., : 3 * SR - 5000]
    for ests in (longer, shorter):
        expected = museval.evaluate(refs.transpose(0, 2, 1), ests.transpose(0, 2, 1), win=SR, hop=SR)
        assert_same(dict(zip(("SDR", "ISR", "SIR", "SAR"), expected, strict=True)), bsseval.bss_eval(refs, ests))


def test_overlapping_windows_and_other_hops():
    rng = np.random.default_rng(4)
    refs = rng.standard_normal((2, 2, 3 * SR))
    ests = refs + 0.5 * rng.standard_normal(refs.shape)
    window, hop = SR // 2, SR // 3
    assert_same(museval_scores(refs, ests, window, hop), bsseval.bss_eval(refs, ests, window=window, hop=hop))


def test_all_zero_source_is_refused_like_museval():
    rng = np.random.default_rng(5)
    refs = rng.standard_normal((2, 2, SR))
    refs[1] = 0.0
    with pytest.raises(ValueError):
        museval_scores(refs, refs + 0.1)
    with pytest.raises(ValueError, match="all zeros"):
        bsseval.bss_eval(refs, refs + 0.1)
    with pytest.raises(SeparationError, match="all zeros"):
        score_track({"vocals": refs[0], "accompaniment": refs[1]}, {"vocals": refs[0], "accompaniment": refs[0]})


def test_museval_backend_and_fast_backend_give_the_same_track_scores():
    song = make_track(11, seconds=3.0)
    rng = np.random.default_rng(11)
    refs = {"vocals": song["vocals"].T, "accompaniment": (song["mixture"] - song["vocals"]).T}
    ests = {k: 0.9 * v + 0.1 * song["mixture"].T + 0.003 * rng.standard_normal(v.shape) for k, v in refs.items()}
    fast = score_track(refs, ests, backend="fast")
    slow = score_track(refs, ests, backend="museval")
    for source in refs:
        assert_same(slow.frames[source], fast.frames[source])
        np.testing.assert_allclose(fast.frames[source]["SI-SDR"], slow.frames[source]["SI-SDR"])


def test_round_off_floor_of_exact_linear_combinations():
    """An estimate that is exactly a mix of the references has no artifacts at all: SAR is
    then set by float64 round-off (~140 dB) in museval and here alike, and the two round-offs
    differ. Both backends agree that it is far above anything a separator reaches."""
    song = make_track(11, seconds=3.0)
    refs = {"vocals": song["vocals"].T, "accompaniment": (song["mixture"] - song["vocals"]).T}
    ests = {k: 0.9 * v + 0.1 * song["mixture"].T for k, v in refs.items()}
    fast = score_track(refs, ests, backend="fast")
    slow = score_track(refs, ests, backend="museval")
    for source in refs:
        for scores in (fast, slow):
            sar = scores.frames[source]["SAR"]
            assert (sar[~np.isnan(sar)] > 120).all()
        for metric in ("SDR", "SIR", "ISR"):  # the rest is not at the floor: equal
            np.testing.assert_allclose(fast.frames[source][metric], slow.frames[source][metric], atol=TOL_DB)


# ---------------------------------------------------------------------------- rank-deficient systems
# Real stems make BSSEval's least-squares systems singular or nearly so. museval solves
# (G + eps I) x = d with numpy and falls back to least squares when LU meets an exact zero.


def song_references(seed: int = 3, seconds: float = 6.0) -> np.ndarray:
    """`(2, 2, T)` vocals and accompaniment of a synthetic song, 16-bit values, as on disk."""
    song = make_track(seed, seconds, Traits.none())
    return np.stack([song["vocals"].T, (song["mixture"] - song["vocals"]).T]).astype(np.float64)


def imperfect(refs: np.ndarray, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return 0.8 * refs + 0.15 * refs[::-1] + 0.01 * rng.standard_normal(refs.shape)


@pytest.mark.slow
def test_dual_mono_reference_matches_museval():
    refs = song_references()
    refs[0, 1] = refs[0, 0]  # vocals exactly left == right: G has two identical block rows
    g, _ = bsseval._correlations(torch.from_numpy(refs), torch.from_numpy(refs), 512)
    assert int(torch.linalg.lu_factor_ex(g).info) > 0  # an exactly zero pivot: plain LU cannot solve it
    ests = imperfect(refs)
    got = bsseval.bss_eval(refs, ests)
    assert_same(museval_scores(refs, ests), got)
    assert np.isfinite(got["SDR"]).all() and np.nanmedian(got["SDR"][0]) > 5


def test_every_reference_dual_mono_matches_museval():
    refs = song_references(4)
    refs[:, 1] = refs[:, 0]
    ests = imperfect(refs, 1)
    assert_same(museval_scores(refs, ests), bsseval.bss_eval(refs, ests))


def test_a_silent_channel_matches_museval():
    refs = song_references(5)
    refs[1, 0] = 0.0  # accompaniment hard-panned right: its left channel is exactly zero
    ests = imperfect(refs, 2)
    assert_same(museval_scores(refs, ests), bsseval.bss_eval(refs, ests))


def test_a_source_silent_for_the_whole_track_is_refused_like_museval():
    refs = song_references(6)
    refs[0] = 0.0
    with pytest.raises(ValueError, match="all 0s"):
        museval_scores(refs, imperfect(refs))
    with pytest.raises(ValueError, match="all zeros"):
        bsseval.bss_eval(refs, imperfect(refs))
    ests = imperfect(song_references(6))
    ests[1] = 0.0  # a silent estimate: refused by both as well
    with pytest.raises(ValueError, match="all 0s"):
        museval_scores(song_references(6), ests)
    with pytest.raises(ValueError, match="all zeros"):
        bsseval.bss_eval(song_references(6), ests)


@pytest.mark.parametrize("quantised", [False, True])
@pytest.mark.slow
def test_a_band_limited_source_matches_museval(quantised):
    t = np.arange(4 * SR) / SR
    bass = sum(np.sin(2 * np.pi * f * t + k) / k for k, f in enumerate((55.0, 110.0, 165.0), 1))  # all below 200 Hz
    rng = np.random.default_rng(8)
    refs = np.stack([np.stack([bass, 0.7 * bass]) * 0.3, 0.1 * rng.standard_normal((2, t.size))])
    if quantised:
        refs = np.round(refs * 32768) / 32768
    ests = refs + 0.02 * rng.standard_normal(refs.shape) + 0.1 * refs[::-1]
    assert_same(museval_scores(refs, ests), bsseval.bss_eval(refs, ests))


def test_two_sources_with_identical_content_match_museval():
    rng = np.random.default_rng(9)
    same = 0.1 * rng.standard_normal((2, 3 * SR))
    refs = np.stack([same, same.copy()])
    ests = refs + 0.02 * rng.standard_normal(refs.shape)
    got = bsseval.bss_eval(refs, ests)
    # the interference of each is exactly zero (the other reference is itself): SIR is round-off
    assert_same(museval_scores(refs, ests), got, floor=100.0)
    assert (got["SIR"] > 100).all() and np.isfinite(got["SDR"]).all()


@pytest.mark.parametrize(
    "samples", [4096, 5000, int(0.3 * SR), SR + 123]
)  # the shortest scored, one window, one and a bit
@pytest.mark.slow
def test_very_short_tracks_match_museval(samples):
    rng = np.random.default_rng(samples)
    refs = 0.1 * rng.standard_normal((2, 2, samples))
    refs[0, 1] = refs[0, 0]  # dual-mono too
    ests = refs + 0.03 * rng.standard_normal(refs.shape)
    assert_same(museval_scores(refs, ests), bsseval.bss_eval(refs, ests))


@pytest.mark.parametrize("backend", ["fast", "museval"])
def test_tracks_shorter_than_the_filters_can_fit_are_refused(backend):
    """With 2 sources x 2 channels x 512 taps, 700 samples fit any estimate almost exactly:
    museval returns round-off (its SAR and ours differ by ~50 dB there), so both backends refuse."""
    assert bsseval.min_samples(2, 2) == 4096
    rng = np.random.default_rng(0)
    refs = {"vocals": 0.1 * rng.standard_normal((2, 700)), "accompaniment": 0.1 * rng.standard_normal((2, 700))}
    with pytest.raises(SeparationError, match="700 samples are too short .* at least 4096"):
        score_track(refs, refs, backend=backend)


@pytest.mark.slow
def test_the_singular_fallback_is_museval_least_squares(monkeypatch):
    """Where LU meets an exact zero, both take numpy's minimum-norm `lstsq(G, D)`: force museval
    onto that path and compare (museval's own fallback needs the numpy-2 alias in `eval.scores`)."""
    refs = song_references(7, 3.0)
    refs[0, 1] = refs[0, 0]
    ests = imperfect(refs, 3)

    def singular(*args, **kwargs):
        raise np.linalg.LinAlgError("Singular matrix")

    sources = ("vocals", "accompaniment")
    references, estimates = dict(zip(sources, refs, strict=True)), dict(zip(sources, ests, strict=True))
    fast = score_track(references, estimates)
    monkeypatch.setattr(np.linalg, "solve", singular)
    slow = score_track(references, estimates, backend="museval")
    for source in ("vocals", "accompaniment"):
        assert_same(slow.frames[source], fast.frames[source], tol=1e-4)
    g = torch.tensor([[2.0, 2.0, 0.0], [2.0, 2.0, 0.0], [0.0, 0.0, 1.0]], dtype=torch.float64)
    d = torch.tensor([[1.0], [1.0], [3.0]], dtype=torch.float64)
    np.testing.assert_allclose(bsseval.solve_like_museval(g, d).numpy(), [[0.25], [0.25], [3.0]], atol=1e-12)


@pytest.mark.gpu
def test_fast_backend_on_gpu_matches_museval():
    rng = np.random.default_rng(6)
    refs = rng.standard_normal((2, 2, 3 * SR))
    ests = refs + 0.4 * rng.standard_normal(refs.shape)
    assert_same(museval_scores(refs, ests), bsseval.bss_eval(refs, ests, device="cuda"))


# ---------------------------------------------------------------------------- SI-SDR


def test_si_sdr_by_hand():
    rng = np.random.default_rng(7)
    ref = rng.standard_normal((1, 2, 2 * SR))
    noise = rng.standard_normal(ref.shape)
    for w in range(2):  # make the noise orthogonal to the reference in each window, 10 dB below it
        r = ref[0, :, w * SR : (w + 1) * SR]
        n = noise[0, :, w * SR : (w + 1) * SR]
        n -= (n * r).sum() / (r * r).sum() * r
        n *= math.sqrt((r * r).sum() / (n * n).sum() / 10)
    est = ref + noise
    np.testing.assert_allclose(bsseval.si_sdr(ref, est), 10.0, atol=1e-9)
    np.testing.assert_allclose(bsseval.bss_eval(ref, est)["SI-SDR"], 10.0, atol=1e-9)  # the fast path's own
    # scale invariant: a louder or quieter estimate scores the same
    np.testing.assert_allclose(bsseval.si_sdr(ref, 3.0 * est), bsseval.si_sdr(ref, est), atol=1e-9)
    assert np.isinf(bsseval.si_sdr(ref, 0.5 * ref)).all()  # a scaled reference is perfect


# ---------------------------------------------------------------------------- JSON


def test_json_is_museval_format_and_loads_with_museval(tmp_path):
    import jsonschema

    song = make_track(12, seconds=4.0)
    refs = {"vocals": song["vocals"].T, "accompaniment": (song["mixture"] - song["vocals"]).T}
    ests = {k: 0.7 * v + 0.3 * song["mixture"].T for k, v in refs.items()}
    scores = score_track(refs, ests, track="Song A")
    path = scores.save(tmp_path / "m" / "test" / "Song A.json")
    data = json.loads(path.read_text())
    schema = json.loads(open(os.path.join(museval.__path__[0], "musdb.schema.json")).read())
    jsonschema.validate(data, schema)
    assert set(data["targets"][0]["frames"][0]["metrics"]) == set(METRICS)
    # museval's own loader and aggregation give our medians
    store = museval.EvalStore()
    store.add_eval_dir(tmp_path / "m")
    agg = store.agg_frames_scores()
    medians = scores.medians()
    for source in refs:
        for metric in ("SDR", "SIR", "ISR", "SAR"):
            assert abs(agg[("Song A", source, metric)] - medians[source][metric]) < 1e-4
    # and our loader reads it back
    again = TrackScores.load(path)
    for source in refs:
        for metric in METRICS:
            np.testing.assert_allclose(again.frames[source][metric], scores.frames[source][metric], atol=1e-5)


def test_infinite_scores_are_stored_as_nan_like_museval(tmp_path):
    frames = {"vocals": {m: np.array([1.0, math.inf, math.nan]) for m in METRICS}}
    path = TrackScores("x", frames).save(tmp_path / "x.json")
    again = TrackScores.load(path)
    assert np.isnan(again.frames["vocals"]["SDR"][1:]).all()
    assert again.medians()["vocals"]["SDR"] == 1.0


def test_framewise_rejects_an_unknown_backend():
    x = np.ones((1, 1, 100))
    with pytest.raises(SeparationError, match="unknown metrics backend"):
        framewise(x, x, backend="matlab")


def test_bad_inputs_get_clear_errors():
    good = np.random.default_rng(0).standard_normal((2, SR))
    with pytest.raises(SeparationError, match="no source in common"):
        score_track({"vocals": good}, {"drums": good})
    with pytest.raises(SeparationError, match="same number of channels"):
        score_track({"vocals": good}, {"vocals": good[:1]})
    bad = good.copy()
    bad[0, 10] = np.nan
    with pytest.raises(SeparationError, match="NaN"):
        score_track({"vocals": good}, {"vocals": bad})
