"""Listener-rating statistics against numbers worked out by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from eval.ratings import (
    anchor_above_reference,
    crowd_outliers,
    excluded_by,
    faster_than_the_audio,
    gold_failures,
    mean_ci,
    metric_agreement,
    mushra_screening,
    mushra_summary,
    preference,
    retest_inconsistency,
    score_summary,
    summary,
    wilson_interval,
)


def test_mean_ci_by_hand():
    # mean 70, sd 10, se 10/sqrt(3) = 5.7735; t(0.975, df=2) = 4.302653 -> half width 24.841
    ci = mean_ci([60, 70, 80])
    assert ci.n == 3 and ci.mean == 70
    assert ci.low == pytest.approx(70 - 24.8414, abs=1e-3)
    assert ci.high == pytest.approx(70 + 24.8414, abs=1e-3)
    one = mean_ci([42])
    assert one.mean == 42 and math.isnan(one.low) and math.isnan(one.high)
    assert mean_ci([]).n == 0


def test_a_ci_stays_on_the_rating_scale():
    """Few, spread ratings: the t interval passes the scale's ends; cut to the scale, it does not,
    and an interval inside the scale is untouched."""
    spread = [50, 100, 100]
    assert mean_ci(spread).high > 100 and mean_ci(spread, scale=(0, 100)).high == 100
    assert mean_ci(spread, scale=(0, 100)).low == pytest.approx(mean_ci(spread).low)
    assert mean_ci([1, 1, 3], scale=(1, 5)).low == 1
    rows = [
        {"listener": x, "trial": x, "kind": "mushra", "condition": "c", "source": "vocals", "score": v}
        for x, v in zip("abc", spread, strict=True)
    ]
    (row,) = score_summary(rows)
    assert 0 <= row["low"] <= row["high"] == 100


def test_score_summary_groups_by_condition_and_source():
    rows = [
        {"listener": "a", "trial": "1", "kind": "mos", "condition": "dprnn", "source": "vocals", "score": 4},
        {"listener": "b", "trial": "1", "kind": "mos", "condition": "dprnn", "source": "vocals", "score": 2},
        {"listener": "a", "trial": "1", "kind": "mos", "condition": "umxhq", "source": "vocals", "score": 5},
        {"listener": "a", "trial": "2", "kind": "mushra", "condition": "dprnn", "source": "vocals", "score": 90},
    ]
    got = {(r["condition"], r["source"]): r for r in score_summary(rows, kind="mos")}
    assert set(got) == {("dprnn", "vocals"), ("umxhq", "vocals")}
    assert got[("dprnn", "vocals")]["mean"] == 3 and got[("dprnn", "vocals")]["n"] == 2
    # sd = sqrt(2), se = 1, t(0.975, 1) = 12.7062: the t interval is 3 +- 12.7; on the 1-5 scale it is 1-5
    assert (got[("dprnn", "vocals")]["low"], got[("dprnn", "vocals")]["high"]) == (1.0, 5.0)
    assert mean_ci([4, 2]).high == pytest.approx(3 + 12.7062, abs=1e-3)


def mushra_trial(listener: str, trial: str, reference: float, dprnn: float = 60, anchor: float = 20) -> list[dict]:
    return [
        {"listener": listener, "trial": trial, "kind": "mushra", "condition": c, "source": "vocals", "score": s}
        for c, s in (("reference", reference), ("dprnn", dprnn), ("anchor", anchor))
    ]


def test_mushra_post_screening_rule():
    rows = []
    # listener "good": 10 trials, the reference below 90 once (10% <= 15%): kept
    for t in range(10):
        rows += mushra_trial("good", f"t{t}", 85 if t == 0 else 100, dprnn=70)
    # listener "bad": 10 trials, the reference below 90 twice (20% > 15%): dropped
    for t in range(10):
        rows += mushra_trial("bad", f"t{t}", 50 if t < 2 else 95, dprnn=10)
    kept, dropped = mushra_screening(rows)
    assert kept == {"good"}
    assert dropped == {"bad": pytest.approx(0.2)}
    result = mushra_summary(rows)
    dprnn = next(r for r in result["scores"] if r["condition"] == "dprnn")
    assert dprnn["n"] == 10 and dprnn["mean"] == 70  # only the kept listener's ratings
    assert result["listeners"] == 2 and result["dropped"] == {"bad": pytest.approx(0.2)}


def test_mushra_screening_boundary_is_strict():
    # exactly 15% (3 of 20) is not "more than 15%": kept; a score of exactly 90 is not "below 90"
    rows = []
    for t in range(20):
        rows += mushra_trial("edge", f"t{t}", 89 if t < 3 else 90)
    kept, dropped = mushra_screening(rows)
    assert kept == {"edge"} and dropped == {}


def test_preference_binomial_test_by_hand():
    rows = [
        {"listener": f"l{i}", "trial": f"t{i}", "kind": "ab", "a": "dprnn", "b": "umxhq", "choice": "dprnn"}
        for i in range(8)
    ]
    rows += [{"listener": "x", "trial": "u1", "kind": "ab", "a": "umxhq", "b": "dprnn", "choice": "umxhq"}]
    rows += [{"listener": "y", "trial": "u2", "kind": "ab", "a": "umxhq", "b": "dprnn", "choice": "umxhq"}]
    rows += [{"listener": "z", "trial": "u3", "kind": "ab", "a": "umxhq", "b": "dprnn", "choice": None}]
    (pair,) = preference(rows)
    assert (pair["x"], pair["y"]) == ("dprnn", "umxhq")
    assert (pair["wins_x"], pair["wins_y"], pair["ties"], pair["n"]) == (8, 2, 1, 10)
    assert pair["rate_x"] == 0.8
    # two-sided exact binomial: 2 * P(X >= 8 | n=10, p=.5) = 2 * (45 + 10 + 1) / 1024
    assert pair["p"] == pytest.approx(112 / 1024)
    low, high = wilson_interval(8, 10)
    # Wilson by hand: z = 1.959964; centre = (0.8 + z^2/20) / (1 + z^2/10) = 0.7167; half = 0.2265
    assert low == pytest.approx(0.4902, abs=1e-3) and high == pytest.approx(0.9433, abs=1e-3)
    assert (pair["low"], pair["high"]) == (low, high)


def test_summary_counts_everything():
    rows = mushra_trial("a", "t1", 100) + [
        {"listener": "b", "trial": "t2", "kind": "ab", "a": "p", "b": "q", "choice": "q"}
    ]
    s = summary(rows)
    assert s["ratings"] == 4 and s["listeners"] == 2
    assert s["preference"][0]["wins_y"] == 1


def test_screening_names_what_excludes_each_listener():
    rows = []
    for t in range(10):
        rows += mushra_trial("careful", f"c{t}", 100)
        rows += mushra_trial("anchor-lover", f"a{t}", 95, anchor=100 if t < 2 else 10)  # 20% > 15%
        rows += mushra_trial("speakers", f"s{t}", 100)
    gold = [("careful", "clean"), ("careful", "clean"), ("careful", "degraded"), ("careful", "clean")]  # 25%: kept
    gold += [("guesser", "degraded"), ("guesser", "clean"), ("guesser", None)]  # 2 of 3 wrong (no preference too)
    rows += [
        {"listener": who, "trial": f"g{i}", "kind": "gold", "a": "clean", "b": "degraded", "choice": c}
        for i, (who, c) in enumerate(gold)
    ]
    headphones = {"careful": 6, "anchor-lover": 5, "speakers": 1, "guesser": 6}
    flags = excluded_by(rows, headphones)
    assert flags == {"careful": [], "anchor-lover": ["anchor"], "speakers": ["headphones"], "guesser": ["gold"]}
    assert anchor_above_reference(rows) == {"anchor-lover": pytest.approx(0.2)}
    assert gold_failures(rows) == {"guesser": pytest.approx(2 / 3)}
    s = summary(rows, headphones)
    assert s["listeners"] == 4 and s["kept_listeners"] == 1
    assert s["ratings"] == len(rows) and s["kept_ratings"] == 30 + 4
    assert {c: (v["listeners"], v["ratings"]) for c, v in s["screening"].items()} == {
        "headphones": (1, 30),
        "reference": (0, 0),
        "anchor": (1, 30),
        "gold": (1, 3),
        "timing": (0, 0),
        "retest": (0, 0),
        "outlier": (0, 0),
    }
    # only the kept listener's scores make the statistics
    reference = next(r for r in s["mushra"]["scores"] if r["condition"] == "reference")
    assert reference["n"] == 10 and reference["mean"] == 100
    assert summary(rows)["screening"]["headphones"]["listeners"] == 0  # no record of checks: nobody excluded


def page_trial(who: str, trial: str, excerpt: str, scores: dict, took: float = 40.0, heard: float = 15.0):
    """The rows of one MUSHRA trial answered from the page: `took` seconds from issue to answer,
    `heard` seconds of listening reported (3 s of each of 4 samples and the reference: 15)."""
    return [
        {
            "listener": who,
            "trial": trial,
            "kind": "mushra",
            "excerpt": excerpt,
            "condition": c,
            "source": "vocals",
            "score": float(v),
            "took": took,
            "heard": heard,
            "via": "page",
        }
        for c, v in scores.items()
    ]


def campaign(seed: int = 0) -> list[dict]:
    """A MUSHRA campaign on 6 excerpts: five honest listeners (scores scattered around each
    excerpt's truth: dprnn 45-75, conv1d 25-55), each session with one excerpt played twice."""
    rng = np.random.default_rng(seed)
    truth = {f"x{e}": {"dprnn": 45 + 6 * e, "conv1d": 25 + 6 * e} for e in range(6)}
    rows = []
    for h in range(5):
        for n, excerpt in enumerate([*truth, "x0"]):  # the session's last trial repeats its first excerpt
            noisy = {c: np.clip(v + rng.normal(0, 8), 0, 100) for c, v in truth[excerpt].items()}
            scores = {"reference": 100, "anchor": 15 + rng.normal(0, 4), **noisy}
            rows += page_trial(f"honest{h}", f"honest{h}-{n}", excerpt, scores)
    return rows


def test_an_informed_cheater_passes_bs1534_but_not_the_crowd_rule():
    """The scripted cheater of the issue: knows the hidden reference (it differs from the open one
    by dither) and the anchor, rates them 100 and 0, and dprnn 95 whatever it sounds like."""
    rows = campaign()
    # each listener's first rating of an excerpt counts: the repeat (trial 6 of each session) does not
    honest = np.mean([r["score"] for r in rows if r["condition"] == "dprnn" and not r["trial"].endswith("-6")])
    for n, excerpt in enumerate(["x0", "x1", "x2", "x3", "x4", "x5", "x0"]):
        rows += page_trial("cheater", f"c{n}", excerpt, {"reference": 100, "anchor": 0, "dprnn": 95, "conv1d": 10})
    flags = excluded_by(rows, None)
    assert flags["cheater"] == ["outlier"]  # consistent (retest) and the rules of BS.1534 hold for them
    assert not any(flags[f"honest{h}"] for h in range(5))
    assert crowd_outliers(rows)["cheater"] > 30
    s = summary(rows)
    dprnn = next(r for r in s["mushra"]["scores"] if r["condition"] == "dprnn")
    assert dprnn["mean"] == pytest.approx(honest) and dprnn["n"] == 30  # the cheater's 7 rows are out
    assert s["screening"]["outlier"] == {"listeners": 1, "ratings": 28, "rule": s["screening"]["outlier"]["rule"]}
    # with too few others on a stimulus there is no crowd to compare with: nobody is flagged
    few = [r for r in rows if r["listener"] in ("honest0", "honest1", "cheater")]
    assert crowd_outliers(few) == {}


def test_a_random_clicker_fails_the_retest_and_a_fast_script_the_timing():
    rows = campaign(1)
    rng = np.random.default_rng(5)
    for n, excerpt in enumerate(["x0", "x1", "x2", "x0"]):  # references right, models at random
        scores = {"reference": 100, "anchor": 10, "dprnn": 100 * (n % 2), "conv1d": rng.uniform(0, 100)}
        rows += page_trial("clicker", f"k{n}", excerpt, scores, took=30.0)
    # a script that claims 15 s of listening and answers 11 s after the trial was issued
    rows += page_trial("script", "s0", "x3", {"reference": 100, "anchor": 20, "dprnn": 62, "conv1d": 40}, took=11.0)
    flags = excluded_by(rows, None)
    assert "retest" in flags["clicker"] and retest_inconsistency(rows)["clicker"] > 25
    assert flags["script"] == ["timing"] and faster_than_the_audio(rows) == {"script": 1}
    assert not any(flags[f"honest{h}"] for h in range(5))
    # API answers (no heard time) and older rows (no times at all) say nothing about timing
    assert faster_than_the_audio([{**r, "heard": 0.0} for r in rows]) == {}
    assert faster_than_the_audio([{k: v for k, v in r.items() if k != "took"} for r in rows]) == {}


def test_metric_agreement_is_kendall_tau_with_a_bootstrap_interval():
    metrics, rows = {}, []
    for e in range(4):
        for c, sdr in (("anchor", 2.0), ("conv1d", 5.0), ("dprnn", 9.0)):
            metrics[(f"e{e}", c)] = {"SDR": sdr + 0.1 * e, "SI-SDR": -(sdr + 0.1 * e)}  # SI-SDR reversed on purpose
            for who, offset in (("x", 0), ("y", 4)):
                rows.append(
                    {
                        "listener": who,
                        "trial": f"{who}{e}",
                        "kind": "mushra",
                        "condition": c,
                        "source": "vocals",
                        "score": 10 * sdr + 0.1 * e + offset,
                        "excerpt": f"e{e}",
                    }
                )
    got = metric_agreement(rows, metrics, boot=200)
    assert got["SDR"]["n"] == 12 and got["SDR"]["tau"] == pytest.approx(1.0)
    assert got["SI-SDR"]["tau"] == pytest.approx(-1.0)
    # perfectly ordered pairs stay perfectly ordered in every resample: the interval is the point
    assert got["SDR"]["low"] == pytest.approx(1.0) and got["SDR"]["high"] == pytest.approx(1.0)
    assert got["SI-SDR"]["low"] == pytest.approx(-1.0) and got["SI-SDR"]["high"] == pytest.approx(-1.0)
    # the points are (metric, mean score over listeners, condition)
    assert (2.0, 22.0, "anchor") in got["SDR"]["points"]
    few = metric_agreement(rows[:4], metrics)  # two (excerpt, condition) pairs
    assert math.isnan(few["SDR"]["tau"])  # fewer than 3 points: no correlation claimed


def test_the_agreement_interval_covers_its_estimate_and_narrows_with_more_stimuli():
    """On noisy scores the bootstrap interval is a real interval around tau, inside (-1, 1), and
    four times the stimuli give a narrower one; the same seed gives the same interval."""
    rng = np.random.default_rng(3)

    def noisy(n: int):
        metrics, rows = {}, []
        for e in range(n):
            sdr = float(rng.uniform(0, 10))
            metrics[(f"e{e}", "dprnn")] = {"SDR": sdr}
            rows.append(
                {
                    "listener": "x",
                    "trial": f"t{e}",
                    "kind": "mushra",
                    "condition": "dprnn",
                    "score": 5 * sdr + float(rng.normal(0, 15)),
                    "excerpt": f"e{e}",
                }
            )
        return metric_agreement(rows, metrics, boot=400)["SDR"]

    small, large = noisy(15), noisy(60)
    for got in (small, large):
        assert -1 < got["low"] < got["tau"] < got["high"] < 1, got
    assert large["high"] - large["low"] < small["high"] - small["low"]


def test_scores_on_two_scales_are_never_averaged_together():
    """A MUSHRA 80 and a MOS 2 of the same condition are two statistics, not a mean of 41."""
    rows = [
        {"listener": "a", "trial": "t1", "kind": "mushra", "condition": "dprnn", "source": "vocals", "score": 80},
        {"listener": "a", "trial": "t2", "kind": "mos", "condition": "dprnn", "source": "vocals", "score": 2},
    ]
    assert [r["mean"] for r in score_summary(rows)] == [80]  # MUSHRA unless told
    assert [r["mean"] for r in score_summary(rows, kind="mos")] == [2]
    with pytest.raises(ValueError, match="never averaged"):
        score_summary(rows, kind=None)


def test_the_batched_tau_is_scipys_kendall_tau_b_on_every_resample():
    """The bootstrap's batched Kendall tau-b equals scipy's on resamples full of ties (rating data:
    repeated points, equal scores, a constant column, where both say NaN)."""
    from scipy import stats

    from eval.ratings import kendall_tau_b

    rng = np.random.default_rng(0)
    xs, ys, want = [], [], []
    for _ in range(300):
        x = rng.integers(0, 5, 12).astype(float)
        y = x + rng.integers(0, 4, 12) if rng.random() < 0.9 else np.full(12, 3.0)
        idx = rng.integers(0, 12, 12)
        xs.append(x[idx])
        ys.append(y[idx])
        want.append(stats.kendalltau(x[idx], y[idx]).statistic)
    got = kendall_tau_b(np.array(xs), np.array(ys))
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-12)
    assert np.isnan(got).any()  # the constant columns


def test_resamples_without_a_tau_are_left_out_quietly():
    """Three stimuli: many resamples repeat one point three times (no tau). They are left out of
    the interval, and nothing warns (the results are computed on a thread where a warning would
    only be noise in the server's log)."""
    import warnings

    metrics = {(f"e{e}", "dprnn"): {"SDR": float(e)} for e in range(3)}
    rows = [
        {
            "listener": "x",
            "trial": f"t{e}",
            "kind": "mushra",
            "condition": "dprnn",
            "score": 10.0 * e,
            "excerpt": f"e{e}",
        }
        for e in range(3)
    ]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got = metric_agreement(rows, metrics, boot=500)["SDR"]
    assert got["tau"] == pytest.approx(1.0) and got["low"] == pytest.approx(1.0) and got["high"] == pytest.approx(1.0)
