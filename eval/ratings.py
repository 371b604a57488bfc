"""Statistics of listener ratings: pure functions over rows (dicts), used by the app's results tab.

A row is one rating, e.g. from the app's SQLite store:

    {"listener": "a1b2", "trial": "t17", "kind": "mushra", "condition": "dprnn",
     "source": "vocals", "score": 72.0}
    {"listener": "a1b2", "trial": "t18", "kind": "ab", "a": "dprnn", "b": "umxhq",
     "choice": "umxhq", "source": "accompaniment"}          # choice: a condition, or None (no preference)
    {"listener": "a1b2", "trial": "t18", "kind": "mos", "condition": "umxhq", "score": 4}

- `mean_ci`: mean with a Student-t 95% confidence interval.
- `score_summary`: that per condition (model) and source.
- `mushra_screening`: ITU-R BS.1534-3 post-screening: a listener who rates the hidden
  reference below 90 in more than 15% of their MUSHRA trials is excluded.
- `preference`: A/B preference rate per pair of conditions with an exact two-sided binomial
  test against 50% (ties excluded, reported) and a Wilson 95% interval.
- `screening`/`summary`: listeners excluded by the headphone check, BS.1534 post-screening,
  anchor-above-reference, gold A/B trials, answers faster than the reported listening,
  test-retest on repeated excerpts and distance from the crowd, and the statistics of the others.
- `metric_agreement`: Kendall's tau between objective metrics and listener scores.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import asdict, dataclass

import numpy as np
from scipy import stats

REFERENCE = "reference"
ANCHOR = "anchor"


@dataclass(frozen=True)
class MeanCI:
    n: int
    mean: float
    low: float
    high: float

    def as_dict(self) -> dict:
        return asdict(self)


def mean_ci(values: Iterable[float], confidence: float = 0.95, scale: tuple[float, float] | None = None) -> MeanCI:
    """Mean and Student-t confidence interval; NaN bounds with fewer than 2 values. With `scale`
    (the rating scale's ends), the interval is cut to it: with few and spread ratings the t
    interval passes the ends (28-134 on a 0-100 scale), where no mean of such ratings can be."""
    x = [float(v) for v in values]
    n = len(x)
    if n == 0:
        return MeanCI(0, math.nan, math.nan, math.nan)
    mean = sum(x) / n
    if n < 2:
        return MeanCI(n, mean, math.nan, math.nan)
    sd = math.sqrt(sum((v - mean) ** 2 for v in x) / (n - 1))
    half = stats.t.ppf(0.5 + confidence / 2, n - 1) * sd / math.sqrt(n)
    low, high = mean - half, mean + half
    if scale is not None:
        low, high = max(low, scale[0]), min(high, scale[1])
    return MeanCI(n, mean, low, high)


SCALES = {"mushra": (0.0, 100.0), "mos": (1.0, 5.0)}  # the sliders' ends


def score_summary(rows: Iterable[dict], kind: str | None = None, confidence: float = 0.95) -> list[dict]:
    """Mean score with CI per (condition, source); rows with a `score`, optionally of one kind
    (MUSHRA when none is named); the CI is cut to that kind's scale."""
    groups: dict[tuple[str, str], list[float]] = defaultdict(list)
    for r in rows:
        if r.get("score") is None or (kind and r.get("kind") != kind):
            continue
        groups[(r["condition"], r.get("source") or "")].append(float(r["score"]))
    out = []
    for (condition, source), values in sorted(groups.items()):
        scale = SCALES.get(kind or "mushra")
        out.append({"condition": condition, "source": source, **mean_ci(values, confidence, scale).as_dict()})
    return out


def mushra_screening(
    rows: Iterable[dict], *, threshold: float = 90.0, max_fraction: float = 0.15, reference: str = REFERENCE
) -> tuple[set[str], dict[str, float]]:
    """Listeners kept, and {excluded listener: fraction of trials with the reference < threshold}.

    Only MUSHRA rows of the hidden reference count; a listener with no such row is kept (there
    is nothing to screen them on).
    """
    trials: dict[str, dict[str, bool]] = defaultdict(dict)
    listeners = set()
    for r in rows:
        if r.get("kind", "mushra") != "mushra":
            continue
        listeners.add(r["listener"])
        if r.get("condition") == reference and r.get("score") is not None:
            low = float(r["score"]) < threshold
            # a trial counts as failed if the reference was rated low in it
            trials[r["listener"]][r["trial"]] = trials[r["listener"]].get(r["trial"], False) or low
    dropped = {}
    for listener, by_trial in trials.items():
        fraction = sum(by_trial.values()) / len(by_trial)
        if fraction > max_fraction:
            dropped[listener] = fraction
    return listeners - set(dropped), dropped


def mushra_summary(rows: list[dict], **screening) -> dict:
    """Screened MUSHRA scores per condition and source, plus who was screened out."""
    mushra = [r for r in rows if r.get("kind") == "mushra"]
    kept, dropped = mushra_screening(mushra, **screening)
    return {
        "scores": score_summary([r for r in mushra if r["listener"] in kept]),
        "listeners": len(kept) + len(dropped),
        "kept": sorted(kept),
        "dropped": dropped,
    }


def wilson_interval(successes: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    if n == 0:
        return math.nan, math.nan
    z = stats.norm.ppf(0.5 + confidence / 2)
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return centre - half, centre + half


def preference(rows: Iterable[dict], confidence: float = 0.95) -> list[dict]:
    """Per unordered pair of conditions (x, y), x before y alphabetically: how often x won.

    `rate` = wins_x / (wins_x + wins_y); `p` = exact two-sided binomial test of rate = 0.5.
    """
    counts: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0, 0])  # x wins, y wins, ties
    for r in rows:
        if r.get("kind") != "ab":
            continue
        x, y = sorted((r["a"], r["b"]))
        choice = r.get("choice")
        c = counts[(x, y)]
        if choice == x:
            c[0] += 1
        elif choice == y:
            c[1] += 1
        else:
            c[2] += 1
    out = []
    for (x, y), (wx, wy, ties) in sorted(counts.items()):
        n = wx + wy
        p = stats.binomtest(wx, n, 0.5).pvalue if n else math.nan
        low, high = wilson_interval(wx, n, confidence)
        out.append(
            {
                "x": x,
                "y": y,
                "wins_x": wx,
                "wins_y": wy,
                "ties": ties,
                "n": n,
                "rate_x": wx / n if n else math.nan,
                "low": low,
                "high": high,
                "p": float(p),
            }
        )
    return out


def anchor_above_reference(rows: Iterable[dict], *, max_fraction: float = 0.15) -> dict[str, float]:
    """{listener: share of their MUSHRA trials in which the anchor scored above the hidden
    reference}, for those over `max_fraction`: a listener who hears a 3.5 kHz low-pass as
    better than the original is not listening (or not on working headphones)."""
    by_trial: dict[tuple[str, str], dict[str, float]] = defaultdict(dict)
    for r in rows:
        if r.get("kind") == "mushra" and r.get("condition") in (REFERENCE, ANCHOR) and r.get("score") is not None:
            by_trial[(r["listener"], r["trial"])][r["condition"]] = float(r["score"])
    flagged: dict[str, list[bool]] = defaultdict(list)
    for (listener, _), scores in by_trial.items():
        if len(scores) == 2:
            flagged[listener].append(scores[ANCHOR] > scores[REFERENCE])
    return {who: sum(f) / len(f) for who, f in flagged.items() if sum(f) / len(f) > max_fraction}


def gold_failures(rows: Iterable[dict], *, max_fraction: float = 0.25) -> dict[str, float]:
    """{listener: share of their gold A/B trials answered wrongly (not the clean sample)}, for
    those over `max_fraction` (ITU-T P.808's trapping questions)."""
    answers: dict[str, list[bool]] = defaultdict(list)
    for r in rows:
        if r.get("kind") == "gold":
            answers[r["listener"]].append(r.get("choice") != "clean")
    return {who: sum(w) / len(w) for who, w in answers.items() if sum(w) / len(w) > max_fraction}


def faster_than_the_audio(rows: Iterable[dict], *, slack: float = 1.0) -> dict[str, int]:
    """{listener: trials answered in less time than the listening their page reported}. The
    page's player sounds one sample at a time, so a trial's samples' heard seconds summed
    (`heard`) cannot exceed the seconds from its issue to its answer (`took`); more is a page
    altered or a script that claims listening it did not do. Rows without both say nothing."""
    seen: dict[tuple[str, str], bool] = {}
    for r in rows:
        heard, took = r.get("heard"), r.get("took")
        if heard and took is not None:
            seen[(r["listener"], r["trial"])] = float(heard) > float(took) + slack
    out: dict[str, int] = defaultdict(int)
    for (listener, _), fast in seen.items():
        if fast:
            out[listener] += 1
    return dict(out)


def retest_inconsistency(rows: Iterable[dict], *, max_difference: float = 25.0) -> dict[str, float]:
    """{listener: mean absolute difference of their scores between two presentations of the same
    MUSHRA excerpt (every condition), averaged over their repeated excerpts}, for those over
    `max_difference` points: test-retest reliability. The app plays one excerpt of each session
    twice, blind (new labels, new files); a listener who answers at random cannot agree with
    themself."""
    by: dict[tuple[str, str], dict[str, dict[str, float]]] = defaultdict(lambda: defaultdict(dict))
    for r in rows:
        if r.get("kind") == "mushra" and r.get("excerpt") and r.get("score") is not None:
            by[(r["listener"], r["excerpt"])][r["trial"]][r["condition"]] = float(r["score"])
    differences: dict[str, list[float]] = defaultdict(list)
    for (listener, _), trials in by.items():
        if len(trials) < 2:
            continue
        first, second = list(trials.values())[:2]
        common = set(first) & set(second)
        if common:
            differences[listener].append(float(np.mean([abs(first[c] - second[c]) for c in common])))
    means = {who: float(np.mean(d)) for who, d in differences.items()}
    return {who: m for who, m in means.items() if m > max_difference}


def crowd_outliers(
    rows: Iterable[dict], *, max_deviation: float = 30.0, min_others: int = 3, min_stimuli: int = 2
) -> dict[str, float]:
    """{listener: mean absolute distance of their MUSHRA scores of the models (not the hidden
    reference, not the anchor) from the other listeners' mean on the same excerpt and condition},
    for those over `max_deviation` points. Only stimuli `min_others` others rated count, and a
    listener needs `min_stimuli` of them. This is what catches the informed cheater: one who has
    found the hidden reference and the anchor (they pass BS.1534's rules by construction) and
    gives one model a fixed score, whatever it sounds like, lands far from the crowd."""
    scores: dict[tuple[str, str], dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for r in rows:
        if (
            r.get("kind") == "mushra"
            and r.get("excerpt")
            and r.get("condition") not in (REFERENCE, ANCHOR)
            and r.get("score") is not None
        ):
            scores[(r["excerpt"], r["condition"])][r["listener"]].append(float(r["score"]))
    distances: dict[str, list[float]] = defaultdict(list)
    for by_listener in scores.values():
        means = {who: float(np.mean(v)) for who, v in by_listener.items()}
        if len(means) < min_others + 1:
            continue
        total = sum(means.values())
        for who, mine in means.items():
            others = (total - mine) / (len(means) - 1)  # leave-one-out: a listener is not their own crowd
            distances[who].append(abs(mine - others))
    return {
        who: float(np.mean(d))
        for who, d in distances.items()
        if len(d) >= min_stimuli and float(np.mean(d)) > max_deviation
    }


SCREENING = {
    "headphones": "failed or did not take the headphone check (Woods et al. 2017, 5 of 6 needed)",
    "reference": "rated the hidden reference below 90 in more than 15% of MUSHRA trials (BS.1534-3)",
    "anchor": "rated the low-pass anchor above the hidden reference in more than 15% of MUSHRA trials",
    "gold": "chose the degraded sample in more than 25% of gold A/B trials",
    "timing": "answered a trial in less time than the listening its page reported (one sample sounds at a time)",
    "retest": "scored a repeated MUSHRA excerpt more than 25 points apart from the first time, on average",
    "outlier": "scored the models more than 30 points from the other listeners' mean on the same excerpts, on average",
}


def screening(rows: list[dict], headphones: dict[str, int | None] | None = None, pass_score: int = 5) -> dict:
    """{criterion: set of listeners it excludes} (see `SCREENING`). Without `headphones` (no
    record of checks at all) that criterion excludes nobody."""
    listeners = {r["listener"] for r in rows}
    _, dropped = mushra_screening([r for r in rows if r.get("kind") == "mushra"])
    return {
        "headphones": set()
        if headphones is None
        else {who for who in listeners if (headphones.get(who) or 0) < pass_score},
        "reference": set(dropped),
        "anchor": set(anchor_above_reference(rows)),
        "gold": set(gold_failures(rows)),
        "timing": set(faster_than_the_audio(rows)),
        "retest": set(retest_inconsistency(rows)),
        "outlier": set(crowd_outliers(rows)),
    }


def excluded_by(rows: list[dict], headphones: dict[str, int | None] | None = None) -> dict[str, list[str]]:
    """{listener: the criteria that exclude them} (empty list: kept)."""
    criteria = screening(rows, headphones)
    return {who: [c for c, out in criteria.items() if who in out] for who in {r["listener"] for r in rows}}


def summary(rows: list[dict], headphones: dict[str, int | None] | None = None) -> dict:
    """Everything the results tab shows: statistics over the ratings of listeners no screening
    criterion excludes, and how many listeners and ratings each criterion excluded."""
    flags = excluded_by(rows, headphones)
    kept = [r for r in rows if not flags[r["listener"]]]
    return {
        "mushra": mushra_summary(kept),
        "mos": score_summary(kept, kind="mos"),
        "preference": preference(kept),
        "ratings": len(rows),
        "listeners": len(flags),
        "kept_ratings": len(kept),
        "kept_listeners": sum(1 for f in flags.values() if not f),
        "screening": {
            c: {
                "listeners": sum(1 for f in flags.values() if c in f),
                "ratings": sum(1 for r in rows if c in flags[r["listener"]]),
                "rule": rule,
            }
            for c, rule in SCREENING.items()
        },
    }


def metric_agreement(
    rows: list[dict], metrics: dict[tuple[str, str], dict[str, float]], *, boot: int = 1000, seed: int = 0
) -> dict[str, dict]:
    """Do the metrics predict the listeners? Per metric: Kendall's tau between the metric of
    each (excerpt, condition) and its mean MUSHRA score (kept rows), with a bootstrap 95% CI
    (pairs resampled with replacement), and the points for a scatter plot."""
    scores: dict[tuple[str, str], list[float]] = defaultdict(list)
    for r in rows:
        if r.get("kind") == "mushra" and r.get("excerpt") and r.get("condition") != REFERENCE:
            scores[(r["excerpt"], r["condition"])].append(float(r["score"]))
    names = sorted({m for values in metrics.values() for m in values})
    rng = np.random.default_rng(seed)
    out = {}
    for name in names:
        points = [
            (metrics[key][name], float(np.mean(values)), key[1])
            for key, values in scores.items()
            if key in metrics and metrics[key].get(name) is not None and np.isfinite(metrics[key][name])
        ]
        x = np.array([p[0] for p in points])
        y = np.array([p[1] for p in points])
        tau = float(stats.kendalltau(x, y).statistic) if len(points) >= 3 else math.nan
        low = high = math.nan
        if len(points) >= 3:
            draws = []
            for _ in range(boot):
                i = rng.integers(0, len(points), len(points))
                t = stats.kendalltau(x[i], y[i]).statistic
                if np.isfinite(t):
                    draws.append(t)
            if draws:
                low, high = (float(v) for v in np.percentile(draws, [2.5, 97.5]))
        out[name] = {"n": len(points), "tau": tau, "low": low, "high": high, "points": points}
    return out
