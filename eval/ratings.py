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
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import asdict, dataclass

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


def mean_ci(values: Iterable[float], confidence: float = 0.95) -> MeanCI:
    """Mean and Student-t confidence interval; NaN bounds with fewer than 2 values."""
    x = [float(v) for v in values]
    n = len(x)
    if n == 0:
        return MeanCI(0, math.nan, math.nan, math.nan)
    mean = sum(x) / n
    if n < 2:
        return MeanCI(n, mean, math.nan, math.nan)
    sd = math.sqrt(sum((v - mean) ** 2 for v in x) / (n - 1))
    half = stats.t.ppf(0.5 + confidence / 2, n - 1) * sd / math.sqrt(n)
    return MeanCI(n, mean, mean - half, mean + half)


def score_summary(rows: Iterable[dict], kind: str | None = None, confidence: float = 0.95) -> list[dict]:
    """Mean score with CI per (condition, source); rows with a `score`, optionally of one kind."""
    groups: dict[tuple[str, str], list[float]] = defaultdict(list)
    for r in rows:
        if r.get("score") is None or (kind and r.get("kind") != kind):
            continue
        groups[(r["condition"], r.get("source") or "")].append(float(r["score"]))
    out = []
    for (condition, source), values in sorted(groups.items()):
        out.append({"condition": condition, "source": source, **mean_ci(values, confidence).as_dict()})
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


def summary(rows: list[dict]) -> dict:
    """Everything the results tab shows, from all rows."""
    return {
        "mushra": mushra_summary(rows),
        "mos": score_summary(rows, kind="mos"),
        "preference": preference(rows),
        "ratings": len(rows),
        "listeners": len({r["listener"] for r in rows}),
    }
