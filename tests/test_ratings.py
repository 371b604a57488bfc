"""Listener-rating statistics against numbers worked out by hand."""

from __future__ import annotations

import math

import pytest

from eval.ratings import mean_ci, mushra_screening, mushra_summary, preference, score_summary, summary, wilson_interval


def test_mean_ci_by_hand():
    # mean 70, sd 10, se 10/sqrt(3) = 5.7735; t(0.975, df=2) = 4.302653 -> half width 24.841
    ci = mean_ci([60, 70, 80])
    assert ci.n == 3 and ci.mean == 70
    assert ci.low == pytest.approx(70 - 24.8414, abs=1e-3)
    assert ci.high == pytest.approx(70 + 24.8414, abs=1e-3)
    one = mean_ci([42])
    assert one.mean == 42 and math.isnan(one.low) and math.isnan(one.high)
    assert mean_ci([]).n == 0


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
    # sd = sqrt(2), se = 1, t(0.975, 1) = 12.7062
    assert got[("dprnn", "vocals")]["high"] == pytest.approx(3 + 12.7062, abs=1e-3)


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
