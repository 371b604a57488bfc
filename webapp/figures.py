"""Plotly figures of the app: decimated dB spectrograms with linked zoom, SDR over time, and the
listening tests' results (MUSHRA means, preference rates, metrics against listeners).

A 30-s clip has 2,600 STFT frames x 1,025 bins; sending that for 6 panels would be ~70 MB of
JSON. The panels here are reduced to `MAX_FRAMES` time columns x `BANDS` log-spaced bands
(what the eye can resolve on a laptop screen) and stored as whole dB *below* the mixture's
peak in uint8 (0..90), which Plotly sends as a base64 typed array: ~75 kB per panel. (Not as
negative int8: bytes 0xF0-0xFF make base64 full of '/', which Plotly's JSON escapes as
six-character \u002f, nearly doubling the size.)
"""

from __future__ import annotations

import math

import numpy as np
import plotly.graph_objects as go
import torch
from plotly.subplots import make_subplots

from separation.audio import SAMPLE_RATE
from separation.spectral import STFT, stft_segments

N_FFT = 2048
HOP = 512
BANDS = 160  # log-spaced frequency bands, 30 Hz .. 20 kHz
MAX_FRAMES = 360  # time columns per panel
FLOOR_DB = -90  # colour scale: 0 dB = the mixture's loudest cell
COLORSCALE = "Magma"


def _band_matrix(
    n_bins: int, bands: int = BANDS, low: float = 30.0, high: float = 20000.0
) -> tuple[torch.Tensor, np.ndarray]:
    """`(bands, n_bins)` averaging matrix over log-spaced bands, and the band centres in Hz."""
    freqs = torch.linspace(0, SAMPLE_RATE / 2, n_bins)
    edges = np.geomspace(low, high, bands + 1)
    centres = np.sqrt(edges[:-1] * edges[1:])
    m = torch.zeros(bands, n_bins)
    for i in range(bands):
        inside = (freqs >= edges[i]) & (freqs < edges[i + 1])
        if inside.any():
            m[i, inside] = 1.0 / inside.sum()
        else:  # a band narrower than a bin (low frequencies): the nearest bin
            m[i, int(torch.argmin((freqs - centres[i]).abs()))] = 1.0
    return m, centres


_BANDS_CACHE: dict[int, tuple[torch.Tensor, np.ndarray]] = {}


def band_power(
    wave: torch.Tensor | np.ndarray, max_frames: int = MAX_FRAMES
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Power of a `(C, T)` or `(T,)` signal (channels averaged) in log bands and pooled frames.

    Returns `(power (BANDS, N), times (N,) s, centres (BANDS,) Hz)`, N <= max_frames. The STFT
    goes a few thousand frames at a time, each reduced to bands and pooled at once: a 10-minute
    upload's full spectrogram would be ~0.8 GB per panel.
    """
    x = torch.as_tensor(np.asarray(wave, dtype=np.float32) if not isinstance(wave, torch.Tensor) else wave).float()
    if x.ndim == 1:
        x = x[None]
    stft = STFT(N_FFT, HOP)
    frames = 1 + x.shape[-1] // HOP
    pool = max(1, math.ceil(frames / max_frames))
    if N_FFT not in _BANDS_CACHE:
        _BANDS_CACHE[N_FFT] = _band_matrix(N_FFT // 2 + 1)
    matrix, centres = _BANDS_CACHE[N_FFT]
    pooled = []
    for (spec,) in stft_segments(stft, [x], frames_per_segment=pool * max(1, 4096 // pool)):  # whole pools
        power = spec.abs().square_().mean(dim=0)  # (bins, frames of this segment)
        pad = (-power.shape[1]) % pool  # only the last segment can be short
        power = torch.nn.functional.pad(power, (0, pad))
        # Pooled before the bands are summed (both are linear): the product is pool times smaller.
        pooled.append(matrix @ power.reshape(power.shape[0], -1, pool).mean(dim=-1))
    banded = torch.cat(pooled, dim=1)
    times = (np.arange(banded.shape[1]) * pool + pool / 2) * HOP / SAMPLE_RATE
    return banded.numpy(), times, centres


def to_db(power: np.ndarray, reference: float) -> np.ndarray:
    """Whole dB below `reference` power (0 = as loud, 90 = the floor), as uint8."""
    db = 10 * np.log10(np.maximum(power, 1e-20) / max(reference, 1e-20))
    return np.clip(-np.round(db), 0, -FLOOR_DB).astype(np.uint8)


def spectrogram_figure(panels: dict[str, torch.Tensor | np.ndarray], *, title: str = "", columns: int = 2) -> go.Figure:
    """One heatmap per named signal, all on the first panel's dB scale, with linked zoom.

    `panels`: {title: `(C, T)` waveform, or its `band_power` when computed earlier}; the first
    is the reference of the colour scale (the mixture): 0 dB is its loudest cell, so estimates
    and errors read in the same units.
    """
    names = list(panels)
    rows = math.ceil(len(names) / columns)
    fig = make_subplots(
        rows=rows,
        cols=columns,
        subplot_titles=names,
        shared_xaxes="all",
        shared_yaxes="all",
        horizontal_spacing=0.04,
        vertical_spacing=0.22 / max(rows, 1),
    )
    reference = None
    for i, name in enumerate(names):
        panel = panels[name]
        power, times, centres = panel if isinstance(panel, tuple) else band_power(panel)
        if reference is None:
            reference = float(power.max())
        # whole dB above the floor (0..90, one unsigned byte a cell: the figure's JSON stays small),
        # labelled as dB relative to the peak: the colour bar runs from -90 at the bottom to 0 dB
        # at the top, as a level meter does
        z = (-FLOOR_DB - to_db(power, reference)).astype(np.uint8)
        fig.add_trace(
            go.Heatmap(
                z=z,
                x=np.round(times, 3).astype(np.float32),
                y=np.round(centres, 1).astype(np.float32),
                zmin=0,
                zmax=-FLOOR_DB,
                colorscale=COLORSCALE,
                showscale=i == 0,
                colorbar={
                    "title": {"text": "dB"},
                    "len": 0.8,
                    "tickvals": list(range(0, -FLOOR_DB + 1, 15)),
                    "ticktext": [str(v + FLOOR_DB) for v in range(0, -FLOOR_DB + 1, 15)],
                }
                if i == 0
                else None,
                hovertemplate="%{x:.2f} s, %{y:.0f} Hz: -%{z} dB<extra>" + name + "</extra>",
            ),
            row=i // columns + 1,
            col=i % columns + 1,
        )
    fig.update_yaxes(
        type="log",
        tickvals=[50, 100, 200, 500, 1000, 2000, 5000, 10000, 20000],
        ticktext=["50", "100", "200", "500", "1k", "2k", "5k", "10k", "20k"],
    )
    fig.update_xaxes(title_text="time (s)", row=rows)
    fig.update_layout(
        title=title or None,
        height=230 * rows + 80,
        margin={"l": 50, "r": 20, "t": 60, "b": 40},
        template="plotly_white",
    )
    return fig


def framewise_figure(curves: dict[str, dict[str, np.ndarray]], *, hop: float = 1.0, metric: str = "SDR") -> go.Figure:
    """SDR per 1-s window over time: one line per model, one panel per source.

    `curves`: {model: {source: (N,) dB}}; NaN windows (silent) are gaps.
    """
    sources = list(dict.fromkeys(s for c in curves.values() for s in c))
    fig = make_subplots(
        rows=1,
        cols=max(1, len(sources)),
        subplot_titles=[f"{s}: {metric} per {hop:g}-s window" for s in sources],
        shared_xaxes="all",
        shared_yaxes="all",
    )
    palette = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728"]
    for i, (model, by_source) in enumerate(curves.items()):
        for j, source in enumerate(sources):
            if source not in by_source:
                continue
            values = np.asarray(by_source[source], dtype=np.float64)
            values = np.where(np.isfinite(values), values, np.nan)
            t = np.arange(values.size) * hop + hop / 2
            fig.add_trace(
                go.Scatter(
                    x=t,
                    y=np.round(values, 2),
                    mode="lines+markers",
                    name=model,
                    legendgroup=model,
                    showlegend=j == 0,
                    line={"color": palette[i % len(palette)]},
                    connectgaps=False,
                    hovertemplate="%{x:.1f} s: %{y:.2f} dB<extra>" + model + "</extra>",
                ),
                row=1,
                col=j + 1,
            )
    fig.update_yaxes(title_text=f"{metric} (dB)", col=1)
    fig.update_xaxes(title_text="time (s)")
    fig.update_layout(
        height=320,
        margin={"l": 50, "r": 20, "t": 50, "b": 40},
        template="plotly_white",
        legend={"orientation": "h", "y": -0.25},
    )
    return fig


def figure_bytes(fig: go.Figure) -> int:
    """What the browser receives for a figure (Gradio sends `fig.to_json()`)."""
    return len(fig.to_json().encode())


# ---------------------------------------------------------------------------- listening results


def rounded(x):
    """A statistic for a table or a label: 2 decimals, None for a missing or infinite one."""
    return None if x is None or (isinstance(x, float) and not math.isfinite(x)) else round(x, 2)


def mushra_figure(scores: list[dict]) -> go.Figure:
    """Mean MUSHRA score with its 95% CI per condition, one colour per source."""
    fig = go.Figure()
    for source in sorted({x["source"] for x in scores}):
        rows = [x for x in scores if x["source"] == source]
        fig.add_trace(
            go.Bar(
                x=[x["condition"] for x in rows],
                y=[x["mean"] for x in rows],
                name=source,
                error_y={
                    "type": "data",
                    "symmetric": False,
                    "array": [(x["high"] - x["mean"]) if math.isfinite(x["high"]) else 0 for x in rows],
                    "arrayminus": [(x["mean"] - x["low"]) if math.isfinite(x["low"]) else 0 for x in rows],
                },
            )
        )
    fig.update_layout(
        barmode="group",
        yaxis={"range": [0, 100], "title": "score"},
        height=320,
        template="plotly_white",
        margin={"l": 40, "r": 10, "t": 20, "b": 40},
    )
    return fig


def preference_figure(pairs: list[dict]) -> go.Figure:
    """How often x was preferred over y, with the Wilson 95% CI; 0.5 is no preference."""
    fig = go.Figure(
        go.Scatter(
            x=[p["rate_x"] for p in pairs],
            y=[f"{p['x']} vs {p['y']}" for p in pairs],
            mode="markers",
            error_x={
                "type": "data",
                "symmetric": False,
                "array": [p["high"] - p["rate_x"] for p in pairs],
                "arrayminus": [p["rate_x"] - p["low"] for p in pairs],
            },
        )
    )
    fig.add_vline(x=0.5, line_dash="dot")
    fig.update_layout(
        xaxis={"range": [0, 1], "title": "rate x preferred"},
        height=320,
        template="plotly_white",
        margin={"l": 120, "r": 10, "t": 20, "b": 40},
    )
    return fig


def agreement_figure(agreement: dict[str, dict]) -> go.Figure:
    """One panel per metric: the metric of each (excerpt, condition) against its mean score."""
    names = list(agreement) or ["SDR"]
    fig = make_subplots(
        rows=1,
        cols=len(names),
        subplot_titles=[f"{m} (tau {rounded(agreement[m]['tau'])})" if m in agreement else m for m in names],
        shared_yaxes=True,
    )
    for i, name in enumerate(names):
        points = agreement.get(name, {}).get("points", [])
        fig.add_trace(
            go.Scatter(
                x=[p[0] for p in points],
                y=[p[1] for p in points],
                mode="markers",
                text=[p[2] for p in points],
                showlegend=False,
                hovertemplate="%{text}: %{x:.1f} dB, score %{y:.0f}<extra></extra>",
            ),
            row=1,
            col=i + 1,
        )
    fig.update_yaxes(title_text="mean score", col=1)
    fig.update_layout(height=300, template="plotly_white", margin={"l": 40, "r": 10, "t": 40, "b": 30})
    return fig
