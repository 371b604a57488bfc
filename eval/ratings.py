"""Statistics of listener ratings: pure functions over rows (dicts), used by the app's results tab.

A row is one rating, e.g. from the app's SQLite store:

    {"listener": "a1b2", "trial": "t17", "kind": "mushra", "condition": "dprnn",
     "source": "vocals", "score": 72.0, "excerpt": "..."}
    {"listener": "a1b2", "trial": "t18", "kind": "ab", "a": "dprnn", "b": "umxhq",
     "choice": "umxhq", "source": "accompaniment"}          # choice: a condition, or None (no preference)
    {"listener": "a1b2", "trial": "t18", "kind": "mos", "condition": "umxhq", "score": 4}

- `mean_ci`: mean with a Student-t 95% confidence interval (scipy).
- `score_summary`: that per condition (model) and source, one rating scale at a time.
- `first_presentations`: each stimulus once per listener (the first time it was rated).
- `mushra_screening`: ITU-R BS.1534-3 post-screening: a listener who rates the hidden
  reference below 90 in more than 15% of their MUSHRA trials is excluded.
- `preference`: A/B preference rate per pair of conditions with an exact two-sided binomial
  test against 50% (ties excluded, reported) and a Wilson 95% interval (scipy).
- `Rules`, `screening`, `summary`: listeners excluded by the headphone check, BS.1534
  post-screening, anchor-above-reference, gold A/B trials, answers faster than the reported
  listening, test-retest on repeated excerpts and distance from the crowd, and the statistics of
  the others.
- `metric_agreement`: Kendall's tau between objective metrics and listener scores, with a
  bootstrap interval (scipy).
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
    """Mean and Student-t confidence interval (`scipy.stats.t.interval`); NaN bounds with fewer
    than 2 values. With `scale` (the rating scale's ends), the interval is cut to it: with few and
    spread ratings the t interval passes the ends (28-134 on a 0-100 scale), where no mean of such
    ratings can be."""
    x = np.asarray([float(v) for v in values])
    n = len(x)
    if n == 0:
        return MeanCI(0, math.nan, math.nan, math.nan)
    mean = float(x.mean())
    if n < 2:
        return MeanCI(n, mean, math.nan, math.nan)
    sem = float(x.std(ddof=1)) / math.sqrt(n)
    if sem == 0:  # every rating equal: scipy's interval is NaN wide; the mean is known exactly
        low = high = mean
    else:
        low, high = (float(v) for v in stats.t.interval(confidence, n - 1, loc=mean, scale=sem))
    if scale is not None:
        low, high = max(low, scale[0]), min(high, scale[1])
    return MeanCI(n, mean, low, high)


SCALES = {"mushra": (0.0, 100.0), "mos": (1.0, 5.0)}  # the sliders' ends


def score_summary(rows: Iterable[dict], kind: str = "mushra", confidence: float = 0.95) -> list[dict]:
    """Mean score with CI per (condition, source) of the rows of one `kind` ("mushra", 0-100, or
    "mos", 1-5); the CI is cut to that scale. One scale at a time: a mean of a 0-100 and a 1-5
    score means nothing."""
    if kind not in SCALES:
        raise ValueError(f"kind is one of {', '.join(SCALES)} (scores on different scales are never averaged)")
    groups: dict[tuple[str, str], list[float]] = defaultdict(list)
    for r in rows:
        if r.get("score") is None or r.get("kind") != kind:
            continue
        groups[(r["condition"], r.get("source") or "")].append(float(r["score"]))
    return [
        {"condition": condition, "source": source, **mean_ci(values, confidence, SCALES[kind]).as_dict()}
        for (condition, source), values in sorted(groups.items())
    ]


def first_presentations(rows: Iterable[dict]) -> list[dict]:
    """The rows that count in the means: of every stimulus (`excerpt`) a listener rated more than
    once (the session's blind repeat, or the same excerpt in a later session), the first trial's
    rows only; the later ones serve the test-retest screening. Rows are taken in the order given
    (the store's: the order they were written); rows without an excerpt all count."""
    first: dict[tuple[str, str], str] = {}
    out = []
    for r in rows:
        key = r.get("excerpt")
        if key:
            trial = first.setdefault((r["listener"], key), r["trial"])
            if trial != r["trial"]:
                continue
        out.append(r)
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
    """Wilson score interval of a proportion (`scipy.stats.binomtest(...).proportion_ci`)."""
    if n == 0:
        return math.nan, math.nan
    ci = stats.binomtest(successes, n, 0.5).proportion_ci(confidence_level=confidence, method="wilson")
    return float(ci.low), float(ci.high)


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
    """{listener: mean absolute difference of their scores between the first presentation of a
    MUSHRA excerpt and each later one (every condition), averaged over their repeated excerpts},
    for those over `max_difference` points: test-retest reliability. The app plays one excerpt of
    each session again, blind (new labels, new files); a listener who answers at random cannot
    agree with themself."""
    by: dict[tuple[str, str], dict[str, dict[str, float]]] = defaultdict(lambda: defaultdict(dict))
    for r in rows:
        if r.get("kind") == "mushra" and r.get("excerpt") and r.get("score") is not None:
            by[(r["listener"], r["excerpt"])][r["trial"]][r["condition"]] = float(r["score"])
    differences: dict[str, list[float]] = defaultdict(list)
    for (listener, _), trials in by.items():
        first, *later = trials.values()  # in the order the rows came (the store's: as written)
        for again in later:
            common = set(first) & set(again)
            if common:
                differences[listener].append(float(np.mean([abs(first[c] - again[c]) for c in common])))
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


@dataclass(frozen=True)
class Rules:
    """The screening rules' thresholds, in one place: what `screening` applies, what `SCREENING`
    says, and what the app's headphone verdict uses (`headphone_pass`)."""

    headphone_pass: int = 5  # of 6 (Woods et al. 2017)
    headphone_trials: int = 6
    reference_below: float = 90.0  # BS.1534-3
    reference_share: float = 0.15
    anchor_share: float = 0.15
    gold_share: float = 0.25
    timing_slack: float = 1.0
    retest_points: float = 25.0
    outlier_points: float = 30.0
    outlier_others: int = 3
    outlier_stimuli: int = 2

    def texts(self) -> dict[str, str]:
        """{criterion: its rule in words}, made from the thresholds."""
        return {
            "headphones": f"failed or did not take the headphone check (Woods et al. 2017, {self.headphone_pass} "
            f"of {self.headphone_trials} needed)",
            "reference": f"rated the hidden reference below {self.reference_below:g} in more than "
            f"{self.reference_share:.0%} of MUSHRA trials (BS.1534-3)",
            "anchor": f"rated the low-pass anchor above the hidden reference in more than {self.anchor_share:.0%} "
            "of MUSHRA trials",
            "gold": f"chose the degraded sample in more than {self.gold_share:.0%} of gold A/B trials",
            "timing": "answered a trial in less time than the listening its page reported (one sample sounds at "
            "a time; the page reports it, so this catches careless scripts, not a page rewritten to lie)",
            "retest": f"scored a repeated MUSHRA excerpt more than {self.retest_points:g} points apart from the "
            "first time, on average",
            "outlier": f"scored the models more than {self.outlier_points:g} points from the other listeners' mean, "
            f"on average over the excerpts that {self.outlier_others} or more others rated (where a listener has "
            f"{self.outlier_stimuli} or more such excerpts)",
        }


RULES = Rules()
SCREENING = RULES.texts()


def screening(rows: list[dict], headphones: dict[str, int | None] | None = None, rules: Rules = RULES) -> dict:
    """{criterion: set of listeners it excludes} (see `Rules.texts`). Without `headphones` (no
    record of checks at all) that criterion excludes nobody."""
    listeners = {r["listener"] for r in rows}
    _, dropped = mushra_screening(
        [r for r in rows if r.get("kind") == "mushra"],
        threshold=rules.reference_below,
        max_fraction=rules.reference_share,
    )
    return {
        "headphones": set()
        if headphones is None
        else {who for who in listeners if (headphones.get(who) or 0) < rules.headphone_pass},
        "reference": set(dropped),
        "anchor": set(anchor_above_reference(rows, max_fraction=rules.anchor_share)),
        "gold": set(gold_failures(rows, max_fraction=rules.gold_share)),
        "timing": set(faster_than_the_audio(rows, slack=rules.timing_slack)),
        "retest": set(retest_inconsistency(rows, max_difference=rules.retest_points)),
        "outlier": set(
            crowd_outliers(
                rows,
                max_deviation=rules.outlier_points,
                min_others=rules.outlier_others,
                min_stimuli=rules.outlier_stimuli,
            )
        ),
    }


def excluded_by(
    rows: list[dict], headphones: dict[str, int | None] | None = None, rules: Rules = RULES
) -> dict[str, list[str]]:
    """{listener: the criteria that exclude them} (empty list: kept)."""
    criteria = screening(rows, headphones, rules)
    return {who: [c for c, out in criteria.items() if who in out] for who in {r["listener"] for r in rows}}


def summary(
    rows: list[dict], headphones: dict[str, int | None] | None = None, flags: dict[str, list[str]] | None = None
) -> dict:
    """Everything the results tab shows: statistics over the ratings of listeners no screening
    criterion excludes (`flags`, from `excluded_by` where not given), each stimulus counted once
    per listener (`first_presentations`), and how many listeners and ratings each criterion
    excluded."""
    flags = excluded_by(rows, headphones) if flags is None else flags
    kept = first_presentations([r for r in rows if not flags.get(r["listener"])])
    return {
        "mushra": mushra_summary(kept),
        "mos": score_summary(kept, kind="mos"),
        "preference": preference(kept),
        "ratings": len(rows),
        "listeners": len({r["listener"] for r in rows}),
        "kept_ratings": len(kept),
        "repeats_left_out": sum(1 for r in rows if not flags.get(r["listener"])) - len(kept),
        "kept_listeners": len({r["listener"] for r in rows if not flags.get(r["listener"])}),
        "screening": {
            c: {
                "listeners": sum(1 for who in {r["listener"] for r in rows} if c in flags.get(who, ())),
                "ratings": sum(1 for r in rows if c in flags.get(r["listener"], ())),
                "rule": rule,
            }
            for c, rule in SCREENING.items()
        },
    }


def metric_agreement(
    rows: list[dict], metrics: dict[tuple[str, str], dict[str, float]], *, boot: int = 1000, seed: int = 0
) -> dict[str, dict]:
    """Do the metrics predict the listeners? Per metric: Kendall's tau-b between the metric of
    each (excerpt, condition) and its mean MUSHRA score (kept rows, each listener's first
    presentation), with a 95% percentile bootstrap CI over the pairs (`scipy.stats.bootstrap`,
    paired, `boot` resamples), and the points for a scatter plot."""
    scores: dict[tuple[str, str], list[float]] = defaultdict(list)
    for r in first_presentations(rows):
        if r.get("kind") == "mushra" and r.get("excerpt") and r.get("condition") != REFERENCE:
            scores[(r["excerpt"], r["condition"])].append(float(r["score"]))
    names = sorted({m for values in metrics.values() for m in values})
    out = {}
    for name in names:
        points = [
            (metrics[key][name], float(np.mean(values)), key[1])
            for key, values in scores.items()
            if key in metrics and metrics[key].get(name) is not None and np.isfinite(metrics[key][name])
        ]
        x = np.array([p[0] for p in points])
        y = np.array([p[1] for p in points])
        tau = low = high = math.nan
        if len(points) >= 3:
            tau = float(stats.kendalltau(x, y).statistic)
            low, high = _tau_interval(x, y, boot, seed)
        out[name] = {"n": len(points), "tau": tau, "low": low, "high": high, "points": points}
    return out


def kendall_tau_b(x: np.ndarray, y: np.ndarray, axis: int = -1) -> np.ndarray:
    """Kendall's tau-b of paired samples along `axis`, for a batch at once (`(..., n)` arrays):
    the same number as `scipy.stats.kendalltau` on each pair of rows (ties in x, in y or both,
    the repeated points of a bootstrap resample among them; NaN where x or y is constant), from
    the n x n sign matrices, so that a thousand resamples are one numpy computation instead of a
    thousand Python calls (0.86 s -> ~0.05 s for the results' four metrics)."""
    x, y = np.moveaxis(np.asarray(x, float), axis, -1), np.moveaxis(np.asarray(y, float), axis, -1)
    sx = np.sign(x[..., :, None] - x[..., None, :])
    sy = np.sign(y[..., :, None] - y[..., None, :])
    n = x.shape[-1]
    pairs = n * (n - 1)  # ordered pairs: each unordered pair twice, as below
    concordance = (sx * sy).sum(axis=(-2, -1))
    untied_x = pairs - (sx == 0).sum(axis=(-2, -1)) + n  # the diagonal is no pair
    untied_y = pairs - (sy == 0).sum(axis=(-2, -1)) + n
    with np.errstate(invalid="ignore", divide="ignore"):
        return concordance / np.sqrt(untied_x.astype(float) * untied_y)


def _tau_interval(x: np.ndarray, y: np.ndarray, boot: int, seed: int) -> tuple[float, float]:
    """The percentile bootstrap 95% interval of Kendall's tau (pairs resampled together). A
    resample with no variation in x or y has no tau (NaN): those are left out of the percentiles;
    BCa is not used because its jackknife fails on the many ties of rating data."""

    def tau(a, b, axis=-1):
        # a resample with x or y constant has no tau: marked 2 (no tau is), left out below; a NaN
        # would make scipy warn from whichever thread computes the results
        return np.nan_to_num(kendall_tau_b(a, b, axis), nan=2.0)

    res = stats.bootstrap(
        (x, y),
        tau,
        paired=True,
        vectorized=True,
        batch=100,  # 100 resamples' n x n sign matrices at a time: memory stays small
        n_resamples=boot,
        method="percentile",
        rng=np.random.default_rng(seed),
    )
    draws = res.bootstrap_distribution
    draws = draws[np.abs(draws) <= 1 + 1e-9]
    if not len(draws):
        return math.nan, math.nan
    # the percentiles of the draws that have a tau (scipy's own bounds would count the marks)
    low, high = np.percentile(draws, [2.5, 97.5])
    return float(low), float(high)
