"""`python -m eval report results/`: tables, box plots and significance tests from a results folder.

Writes into `results/report/` (or `--to`):
- `summary.md`: the medians table per source (median over windows, then tracks) and the
  paired Wilcoxon signed-rank tests; `summary.csv`: the same table, one row per number;
- `tracks.csv`: per-track medians (method, track, source, metric, value);
- `wilcoxon.csv`: for each source, metric and pair of methods, on the tracks both have:
  the median of the paired differences, the test statistic, p and Holm-adjusted p;
- `boxplots.html` (one self-contained page) and `boxplot-<source>.png` (needs Chrome/Chromium
  for Plotly's image export; skipped with a note when none is found).
"""

from __future__ import annotations

import csv
import logging
import math
from itertools import combinations
from pathlib import Path

import numpy as np
from scipy import stats

from .run import load_results, medians_table
from .scores import METRICS

log = logging.getLogger("eval")


def per_track(results: dict) -> dict:
    """{method: {track: {source: {metric: median}}}}."""
    return {m: {t: s.medians() for t, s in by_track.items()} for m, by_track in results.items()}


def holm(pvalues: list[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values (NaN stays NaN)."""
    index = [i for i, p in enumerate(pvalues) if not math.isnan(p)]
    order = sorted(index, key=lambda i: pvalues[i])
    adjusted = [math.nan] * len(pvalues)
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (len(order) - rank) * pvalues[i]))
        adjusted[i] = running
    return adjusted


def wilcoxon_tests(tracks: dict, sources: list[str]) -> list[dict]:
    """Paired two-sided Wilcoxon signed-rank tests between every pair of methods."""
    rows = []
    methods = sorted(tracks)
    for source in sources:
        for metric in METRICS:
            group = []
            for a, b in combinations(methods, 2):
                common = sorted(set(tracks[a]) & set(tracks[b]))
                pairs = [
                    (tracks[a][t][source][metric], tracks[b][t][source][metric])
                    for t in common
                    if source in tracks[a][t] and source in tracks[b][t]
                ]
                pairs = [(x, y) for x, y in pairs if not (math.isnan(x) or math.isnan(y))]
                diff = [x - y for x, y in pairs]
                if not diff:
                    continue
                if all(d == 0 for d in diff):
                    statistic, p = 0.0, 1.0
                else:
                    result = stats.wilcoxon([x for x, _ in pairs], [y for _, y in pairs])
                    statistic, p = float(result.statistic), float(result.pvalue)
                group.append(
                    {
                        "source": source,
                        "metric": metric,
                        "a": a,
                        "b": b,
                        "tracks": len(diff),
                        "median_diff": float(np.median(diff)),
                        "statistic": statistic,
                        "p": p,
                    }
                )
            for row, adjusted in zip(group, holm([r["p"] for r in group]), strict=True):
                row["p_holm"] = adjusted
            rows.extend(group)
    return rows


def _fmt(x: float, digits: int = 2) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}f}"


def _p(p: float) -> str:
    return "n/a" if math.isnan(p) else ("<0.001" if p < 0.001 else f"{p:.3f}")


def boxplot_figures(tracks: dict, sources: list[str]) -> dict:
    """One Plotly figure per source: a box per method for each metric, one point per track."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    figures = {}
    palette = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f"]
    for source in sources:
        fig = make_subplots(rows=1, cols=len(METRICS), subplot_titles=[f"{m} (dB)" for m in METRICS])
        for i, method in enumerate(sorted(tracks)):
            for j, metric in enumerate(METRICS):
                names = [t for t, s in tracks[method].items() if source in s]
                values = [tracks[method][t][source][metric] for t in names]
                fig.add_trace(
                    go.Box(
                        y=values,
                        x=[method] * len(values),
                        name=method,
                        text=names,
                        boxpoints="all",
                        jitter=0.4,
                        pointpos=0,
                        marker={"color": palette[i % len(palette)], "size": 4},
                        legendgroup=method,
                        showlegend=j == 0,
                        hovertemplate="%{text}: %{y:.2f} dB<extra>" + method + "</extra>",
                    ),
                    row=1,
                    col=j + 1,
                )
        fig.update_layout(
            title=f"{source}: per-track medians over 1-s windows",
            height=450,
            width=300 * len(METRICS),
            template="plotly_white",
        )
        fig.update_xaxes(tickangle=-30)
        figures[source] = fig
    return figures


def write_report(
    results_dir: str | Path, to: str | Path | None = None, *, subset: str = "test", png: bool = True
) -> Path:
    results = load_results(results_dir, subset)
    out = Path(to) if to else Path(results_dir) / "report"
    out.mkdir(parents=True, exist_ok=True)
    table = medians_table(results)
    tracks = per_track(results)
    sources = list(dict.fromkeys(src for row in table.values() for src in row if src != "tracks"))
    tests = wilcoxon_tests(tracks, sources)

    with open(out / "summary.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["method", "source", "metric", "median_db", "tracks"])
        for method, row in table.items():
            for src in sources:
                for metric in METRICS:
                    if src in row:
                        w.writerow([method, src, metric, _fmt(row[src][metric], 3), row["tracks"]])
    with open(out / "tracks.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["method", "track", "source", "metric", "median_db"])
        for method, by_track in tracks.items():
            for track, by_source in by_track.items():
                for src, metrics in by_source.items():
                    for metric, value in metrics.items():
                        w.writerow([method, track, src, metric, _fmt(value, 3)])
    with open(out / "wilcoxon.csv", "w", newline="") as f:
        w = csv.writer(f)
        keys = ["source", "metric", "a", "b", "tracks", "median_diff", "statistic", "p", "p_holm"]
        w.writerow(keys)
        for row in tests:
            w.writerow([row[k] for k in keys])

    lines = [f"# Evaluation of {Path(results_dir).resolve().name}/ ({subset} subset)", ""]
    lines.append(
        "BSSEval v4 (1-s windows, 512-tap filters) and SI-SDR, dB: median over windows per track, "
        "then median over tracks. Higher is better."
    )
    for src in sources:
        lines += [
            "",
            f"## {src}",
            "",
            "| method | " + " | ".join(METRICS) + " | tracks |",
            "|---|" + "---:|" * (len(METRICS) + 1),
        ]
        for method, row in sorted(
            table.items(), key=lambda kv: -np.nan_to_num(kv[1].get(src, {}).get("SDR", -1e9), nan=-1e9)
        ):
            if src in row:
                lines.append(
                    f"| {method} | " + " | ".join(_fmt(row[src][m]) for m in METRICS) + f" | {row['tracks']} |"
                )
    lines += [
        "",
        "## Is the difference real? Paired Wilcoxon signed-rank tests (SDR)",
        "",
        "Two-sided, over the tracks both methods have; p adjusted with Holm's method per source.",
        "",
        "| source | a | b | tracks | median a - b (dB) | p | p (Holm) |",
        "|---|---|---|---:|---:|---:|---:|",
    ]
    for row in tests:
        if row["metric"] == "SDR":
            lines.append(
                f"| {row['source']} | {row['a']} | {row['b']} | {row['tracks']} | "
                f"{row['median_diff']:+.2f} | {_p(row['p'])} | {_p(row['p_holm'])} |"
            )
    lines += ["", "All metrics: `wilcoxon.csv`. Per-track medians: `tracks.csv`. Box plots: `boxplots.html`."]

    figures = boxplot_figures(tracks, sources)
    with open(out / "boxplots.html", "w") as f:
        f.write("<html><head><meta charset='utf-8'><title>Box plots</title></head><body>\n")
        for i, fig in enumerate(figures.values()):
            f.write(fig.to_html(full_html=False, include_plotlyjs=(i == 0)))
        f.write("</body></html>\n")
    if png:
        try:
            for src, fig in figures.items():
                fig.write_image(out / f"boxplot-{src}.png", scale=1)
            lines.append("PNG versions: " + ", ".join(f"`boxplot-{s}.png`" for s in figures) + ".")
        except Exception as exc:  # kaleido needs a Chrome/Chromium: the HTML is enough without one
            log.warning("PNG box plots skipped (%s: %s); the HTML version is written", type(exc).__name__, exc)
            lines.append(f"PNG box plots were not written ({type(exc).__name__}: {str(exc).splitlines()[0][:160]}).")
    (out / "summary.md").write_text("\n".join(lines) + "\n")
    return out
