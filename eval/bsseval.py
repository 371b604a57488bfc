"""BSSEval v4 in torch: museval's metrics, batched over frames, on CPU or GPU.

BSSEval v4 (Liutkus, Stöter & Ito, SiSEC 2018; `museval.metrics.bss_eval` with
`framewise_filters=False`) decomposes each estimate into the true source image, a spatial
distortion, interference and artifacts, using distortion filters of 512 taps that are fitted
ONCE on the whole track; only the energy ratios are then taken per 1-s window.

museval computes the whole-track filters well, but then loops over windows in Python and, per
window, runs S*C*C*(S+1) `fftconvolve` calls. Here the same algebra is re-arranged:

1. the Gram matrix G of the delayed references and the cross-correlations D with each
   estimate come from FFTs of the whole track (as museval); G is LU-factored once and solved
   for every estimate at once (museval solves the same matrix again per estimate);
2. every window of every reference is FFT'd in one batched call, filtered in the frequency
   domain with all filters at once, and transformed back; the energy ratios (and SI-SDR)
   follow from one batched Gram matrix of the explicitly formed error terms.

Every computation is float64 (the signals are kept as given, float32 audio included, and
converted a block or window at a time), so the results agree with museval to ~1e-13 dB in the
tests and ~1e-6 dB on a 60-s song (tested: within 0.01 dB on random signals, synthetic songs,
silent stretches and nearly perfect estimates). Same conventions: a window where any reference
or any estimate is "silent" (its channel sum is exactly 0 at every sample) is NaN for every
source; a zero denominator gives +inf (museval's JSON then stores NaN).

Real stems make the least-squares systems singular (dual-mono references, identical sources)
or nearly so (band-limited sources); see `_solve_channels` and `solve_like_museval` for how
they are solved as museval does, and `min_samples` for the shortest signal that can be scored.

Round-off floor: a term that is exactly zero in exact arithmetic (e.g. the artifacts of an
estimate that is an exact mix of the references) comes out at ~1e-14 of the signal, i.e. a
ratio of ~140 dB, in museval and here alike; such values are round-off in both and differ.

Shapes follow this project, `(S, C, T)` = (sources, channels, samples); museval's own API
takes `(S, T, C)`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from separation.audio import SAMPLE_RATE

METRICS = ("SDR", "SIR", "ISR", "SAR")


@dataclass(frozen=True)
class Frames:
    """museval's `Framing`: `count` windows of `length` samples every `hop` samples."""

    length: int
    hop: int
    count: int

    @classmethod
    def of(cls, samples: int, window: int, hop: int) -> Frames:
        if window < samples:
            return cls(window, hop, int(math.floor((samples - window + hop) / hop)))
        return cls(samples, hop, 1)  # one window: the whole signal

    def unfold(self, x: Tensor) -> Tensor:
        """`(..., T)` -> `(..., count, length)` (a view)."""
        return x[..., : (self.count - 1) * self.hop + self.length].unfold(-1, self.length, self.hop)


def next_fast_len(n: int) -> int:
    """The smallest 5-smooth number (2^a 3^b 5^c) >= n: an FFT length pocketfft and cuFFT do fast
    (`scipy.fft.next_fast_len(n, real=True)`, without importing scipy.fft for one number)."""
    best = 1 << max(0, (n - 1).bit_length())
    p5 = 1
    while p5 < best:
        p35 = p5
        while p35 < best:
            m = p35
            while m < n:
                m *= 2
            best = min(best, m)
            p35 *= 3
        p5 *= 5
    return best


def pad_or_truncate(references: Tensor, estimates: Tensor) -> Tensor:
    """museval's `pad_or_truncate`: estimates cut or zero-padded to the references' length."""
    t = references.shape[-1]
    if estimates.shape[-1] >= t:
        return estimates[..., :t]
    return torch.nn.functional.pad(estimates, (0, t - estimates.shape[-1]))


def _short_lags(x: Tensor, ys: list[Tensor], filters_len: int, block: int = 8192, group: int = 8) -> Tensor:
    """Cross-correlations at short lags only: `(P, T)`, [`(Q_i, T)`, ...] -> `(P, sum Q_i, 2L-1)`.

    r[p, q, k + L - 1] = sum_t x_p[t + k] y_q[t] for |k| < L, the exact linear correlation.
    museval takes these from one FFT of the whole track per pair (n = 2**22 for a minute);
    here the track is cut into blocks of `block - 2L + 2` samples, each block of y is
    correlated with the block of x widened by L - 1 samples on both sides, and the products
    are summed over blocks in the frequency domain: one small batched FFT per signal and a
    single short inverse FFT per pair, with the same result up to rounding.
    """
    t = x.shape[-1]
    hop = block - 2 * filters_len + 2
    count = max(1, -(-t // hop))
    q = sum(y.shape[0] for y in ys)
    spectrum = torch.zeros((block // 2 + 1, x.shape[0], q), dtype=torch.complex128, device=x.device)
    # a few blocks at a time: small temporaries stay in the allocator's heap and in cache
    # (one pass over a minute of audio at once spends as long in page faults as in FFTs), and
    # only they are float64: the signals stay as they came (float32 audio: half the memory)
    for start in range(0, count, group):
        stop = min(count, start + group)
        # y blocks: y[b*hop : (b+1)*hop]; x blocks: x[b*hop - (L-1) : (b+1)*hop + (L-1)], zero outside
        xb = _segment(x, start * hop - filters_len + 1, stop * hop + filters_len - 1).unfold(-1, block, hop)
        xf = torch.fft.rfft(xb, block).permute(2, 0, 1)  # (F, P, B)
        yb = torch.cat([_segment(y, start * hop, stop * hop) for y in ys]).unflatten(-1, (stop - start, hop))
        yf = torch.fft.rfft(yb, block).conj_physical().permute(2, 1, 0)  # (F, B, Q)
        spectrum.baddbmm_(xf, yf)  # sum over blocks as one small matrix product per frequency
    return torch.fft.irfft(spectrum.permute(1, 2, 0), block)[..., : 2 * filters_len - 1]


def _segment(x: Tensor, start: int, stop: int) -> Tensor:
    """`x[..., start:stop]` as float64, zero where the range leaves `[0, T)`."""
    t = x.shape[-1]
    inside = x[..., max(0, start) : min(t, stop)].to(torch.float64)
    return torch.nn.functional.pad(inside, (max(0, -start), max(0, stop - t)))


def _correlations(refs: Tensor, ests: Tensor, filters_len: int) -> tuple[Tensor, Tensor]:
    """museval's G (`_compute_reference_correlations` + `_reshape_G`) and D, in one pass.

    G `(S*C*L, S*C*L)`: G[(j, c2, a), (i, c1, b)] = sum_t x_{j,c2}[t + b - a] x_{i,c1}[t].
    D `(E, S, C, L, C_est)`: D[e, j, cj, k, c] = sum_t x_{j,cj}[t - k] e_c[t].
    """
    s, c = refs.shape[:2]
    e, c_est = ests.shape[:2]
    sc = s * c
    lags = _short_lags(refs.reshape(sc, -1), [refs.reshape(sc, -1), ests.reshape(e * c_est, -1)], filters_len)
    a = torch.arange(filters_len, device=refs.device)
    index = a[None, :] - a[:, None] + filters_len - 1  # b - a
    blocks = lags[:, :sc, index]  # (SC_row, SC_col, L_a, L_b)
    g = blocks.permute(0, 2, 1, 3).reshape(sc * filters_len, sc * filters_len)
    taps = lags[:, sc:, :filters_len].flip(-1)  # lags 0, -1, ..., -(L-1)
    d = taps.reshape(s, c, e, c_est, filters_len).permute(2, 0, 1, 4, 3)
    return g, d


def solve_like_museval(g: Tensor, rhs: Tensor) -> Tensor:
    """museval's `_compute_projection_filters` solve: `(G + eps I) X = D`, and the minimum-norm
    least-squares solution of `G X = D` when that matrix is exactly singular.

    Real stems make G singular: a dual-mono reference (left == right, sample for sample) gives
    G two identical block rows and columns, as do two sources with the same content; then LU
    meets an exactly zero pivot. museval catches numpy's LinAlgError there and calls
    `np.linalg.lstsq(G, D)` (SVD, `rcond` = eps * max(M, N)), which is `gelsd` here with the same
    cut-off. When G is only nearly singular (band-limited sources), LU succeeds in museval and
    here alike, and the projections agree although the filters themselves are ill-determined.
    """
    eps = float(np.finfo(float).eps)
    eye = torch.eye(g.shape[0], dtype=g.dtype, device=g.device)
    lu, pivots, info = torch.linalg.lu_factor_ex(g + eps * eye)
    if int(info) == 0:
        return torch.linalg.lu_solve(lu, pivots, rhs)
    # gelsd (SVD) exists on the CPU only; this happens once per singular system, not per window
    solution = torch.linalg.lstsq(g.cpu(), rhs.cpu(), driver="gelsd").solution
    return solution.to(g.device)


def distortion_filters(references: Tensor, estimates: Tensor, filters_len: int = 512) -> tuple[Tensor, Tensor]:
    """The whole-track least-squares filters of BSSEval v4.

    Returns `(C, Cj)`: C `(E, S, C, L, C)` projects all references onto estimate e (e's
    interference filters); Cj `(E, C, L, C)` projects reference e alone onto estimate e.
    """
    s, c = references.shape[:2]
    g, d = _correlations(references, estimates, filters_len)
    size = s * c * filters_len
    rhs = d.reshape(s, size, c).permute(1, 0, 2).reshape(size, s * c)
    twins = Twins(references.reshape(s * c, -1))
    # one factorisation for every estimate (museval solves the same system once per estimate)
    interference = _solve_channels(g, rhs, list(range(s * c)), twins, filters_len)
    interference = interference.reshape(size, s, c).permute(1, 0, 2).reshape(s, s, c, filters_len, c)
    own = []
    block = c * filters_len
    for j in range(s):
        gj = g[j * block : (j + 1) * block, j * block : (j + 1) * block]
        dj = d[j, j].reshape(block, c)
        own.append(
            _solve_channels(gj, dj, list(range(j * c, (j + 1) * c)), twins, filters_len).reshape(c, filters_len, c)
        )
    return interference, torch.stack(own)


class Twins:
    """Which reference channels are sample-for-sample identical (a dual-mono source's left and
    right, two sources with the same content): compared once each, on the signals themselves."""

    def __init__(self, channels: Tensor):
        self.channels = channels  # (K, T)
        self._same: dict[tuple[int, int], bool] = {}

    def same(self, a: int, b: int) -> bool:
        key = (min(a, b), max(a, b))
        if key not in self._same:
            self._same[key] = bool(torch.equal(self.channels[a], self.channels[b]))
        return self._same[key]


def _solve_channels(g: Tensor, rhs: Tensor, channels: list[int], twins: Twins, filters_len: int) -> Tensor:
    """Solve the block system of reference `channels` (block k of `g` and `rhs` is channel
    `channels[k]`, `filters_len` rows each), as museval's least squares would.

    Identical channels make identical block rows and columns: G is exactly singular, and its
    minimum-norm least-squares solution (museval's fallback) gives each copy an equal share of
    the filter that one copy alone needs. So the system is solved with one copy of each channel
    (an LU of a smaller, regular matrix: a dual-mono track is then faster to score, not 5x
    slower as an SVD of the whole system would make it) and the filter is split between the
    copies. What else is singular goes to `solve_like_museval`.
    """
    first: list[int] = []  # one position per distinct channel
    owner: list[int] = []  # for each position, the position of its first copy
    for k, channel in enumerate(channels):
        twin = next((f for f in first if twins.same(channels[f], channel)), None)
        if twin is None:
            first.append(k)
        owner.append(k if twin is None else twin)
    if len(first) == len(channels):
        return solve_like_museval(g, rhs)
    rows = torch.cat([torch.arange(k * filters_len, (k + 1) * filters_len, device=g.device) for k in first])
    reduced = solve_like_museval(g[rows][:, rows], rhs[rows]).reshape(len(first), filters_len, -1)
    copies = torch.tensor([owner.count(f) for f in first], dtype=g.dtype, device=g.device)
    shares = reduced / copies[:, None, None]
    return shares[[first.index(o) for o in owner]].reshape(len(channels) * filters_len, -1)


def _filter(spec: Tensor, filters: Tensor, own: bool = False) -> Tensor:
    """Apply distortion filters to reference spectra; `spec` is `(S, C, B, F)`.

    own=False: sum_{j,k} spec[j, k] * filters[e, j, k, c], filters `(E, S, C, C', F)`;
    own=True:  sum_k spec[e, k] * filters[e, k, c], filters `(E, C, C', F)`.
    Returns `(E, C', B, F)`. A loop of broadcast multiply-adds: einsum turns this into one
    tiny matrix product per frequency bin, several times slower on CPU.
    """
    e, c_out = filters.shape[0], filters.shape[-2]
    out = spec.new_zeros((e, c_out) + spec.shape[2:])
    for i in range(e):
        terms = (
            [(spec[i, k], filters[i, k]) for k in range(spec.shape[1])]
            if own
            else [(spec[j, k], filters[i, j, k]) for j in range(spec.shape[0]) for k in range(spec.shape[1])]
        )
        for o in range(c_out):
            for x, f in terms:
                out[i, o].addcmul_(x, f[o, None])
    return out


def _db(num: Tensor, den: Tensor) -> Tensor:
    """museval's `_safe_db`: +inf where the denominator is exactly zero."""
    out = 10 * torch.log10(num / den)
    return torch.where(den == 0, torch.full_like(out, math.inf), out)


def _as_float(x: Tensor | np.ndarray, device: torch.device) -> Tensor:
    """A float tensor on `device`, without copying float32/float64 input that is already there."""
    x = torch.as_tensor(np.asarray(x) if not isinstance(x, Tensor) else x).to(device)
    return x if x.dtype in (torch.float32, torch.float64) else x.to(torch.float64)


def _any_source_silent(x: Tensor, block: int = 1 << 20) -> bool:
    """museval's `_any_source_silent` on a whole `(S, C, T)` signal, summed in float64 a block
    at a time: is there a source whose channel sum is exactly zero at every sample?"""
    for source in x:
        if not any(
            bool((source[:, a : a + block].to(torch.float64).sum(dim=0) != 0).any())
            for a in range(0, source.shape[-1], block)
        ):
            return True
    return False


def _silent(x: Tensor) -> Tensor:
    """`(S, C, N, W)` frames -> `(N,)`: is any source silent (museval's `_any_source_silent`)?"""
    return (x.sum(dim=1) == 0).all(dim=-1).any(dim=0)


def min_samples(sources: int, channels: int, filters_len: int = 512) -> int:
    """Shortest signal BSSEval v4 can score: each estimate channel is fitted by least squares
    with sources * channels * filters_len taps, which needs well over that many samples. Below
    it the fit is (nearly) exact whatever the estimate, the artifacts vanish into round-off, and
    museval's numbers and these are noise that differ by tens of dB."""
    return 2 * sources * channels * filters_len


def check_length(sources: int, channels: int, samples: int, filters_len: int = 512) -> None:
    need = min_samples(sources, channels, filters_len)
    if 0 < samples < need:
        raise ValueError(
            f"{samples} samples are too short for BSSEval v4 with {sources} sources x {channels} channels "
            f"x {filters_len}-tap filters: it needs at least {need} ({need / SAMPLE_RATE * 1000:.0f} ms at 44.1 kHz)"
        )


def bss_eval(
    references: Tensor | np.ndarray,
    estimates: Tensor | np.ndarray,
    *,
    window: int = SAMPLE_RATE,
    hop: int = SAMPLE_RATE,
    filters_len: int = 512,
    device: str | torch.device = "cpu",
    frames_per_batch: int | None = None,
) -> dict[str, np.ndarray]:
    """BSSEval v4 images metrics, as `museval.evaluate(..., mode="v4")`.

    references, estimates: `(S, C, T)`; estimates are padded or cut to the references'
    length. Returns {"SDR", "SIR", "ISR", "SAR", "SI-SDR"} -> `(S, N)` float64 arrays, N
    windows (SI-SDR as `si_sdr`, from the same inner products).
    """
    device = torch.device(device)
    # The signals stay in their own precision (float32 audio: half the memory of a float64 copy
    # of a whole track); every computation converts its block or window to float64.
    refs, ests = (_as_float(x, device) for x in (references, estimates))
    ests = pad_or_truncate(refs, ests)
    if refs.ndim != 3 or refs.shape[:2] != ests.shape[:2]:
        raise ValueError(f"references {tuple(refs.shape)} and estimates {tuple(ests.shape)} must both be (S, C, T)")
    s, c, t = refs.shape
    check_length(s, c, t, filters_len)
    for name, x in (("reference", refs), ("estimated", ests)):
        if t and _any_source_silent(x):
            # museval refuses this too: the projection onto a zero source is undetermined
            raise ValueError(f"a {name} source is all zeros: BSSEval needs every source to be non-silent")
    frames = Frames.of(t, window, hop)
    out = {m: torch.full((s, frames.count), math.nan, dtype=torch.float64, device=device) for m in (*METRICS, "SI-SDR")}
    if t == 0:
        return {m: v.cpu().numpy() for m, v in out.items()}
    interference, own = distortion_filters(refs, ests, filters_len)

    w = frames.length
    n = next_fast_len(w + filters_len - 1)
    # filters in the frequency domain, indexed [e, j, cj, c, f] and [e, cj, c, f]
    cf = torch.fft.rfft(interference.movedim(3, -1), n)
    cjf = torch.fft.rfft(own.movedim(2, -1), n)
    m = w + filters_len - 1  # museval's length of a projected window
    if frames_per_batch is None:
        # ~32 MiB of spectra, projections and error terms per batch: larger batches are slower
        # on CPU (fresh pages and cache misses), a GPU wants more
        per_frame = 16 * (n // 2 + 1) * c * (s + 2 * s) + 8 * s * c * (2 * n + 5 * m)
        budget = (32 << 20) if device.type == "cpu" else (1 << 30)
        frames_per_batch = max(1, budget // per_frame)
    ref_frames = frames.unfold(refs)  # (S, C, N, W)
    est_frames = frames.unfold(ests)
    for start in range(0, frames.count, frames_per_batch):
        sl = slice(start, min(start + frames_per_batch, frames.count))
        rf, ef = ref_frames[:, :, sl].to(torch.float64), est_frames[:, :, sl].to(torch.float64)
        b = rf.shape[2]
        silent = _silent(rf) | _silent(ef)
        spec = torch.fft.rfft(rf, n)  # (S, C, B, F)
        p_all = torch.fft.irfft(_filter(spec, cf), n).transpose(1, 2)[..., :m]  # (E, B, C, m)
        p_own = torch.fft.irfft(_filter(spec, cjf, own=True), n).transpose(1, 2)[..., :m]
        s_true, est = rf.transpose(1, 2), ef.transpose(1, 2)  # (S, B, C, W), zero beyond W
        # museval's decomposition (`_bss_decomp_mtifilt`): est = s_true + e_spat + e_interf + e_artif
        # with e_spat = p_own - s_true, e_interf = p_all - p_own, e_artif = est - p_all. The
        # energies below need only the Gram matrix of [s_true, est - s_true, e_spat, e_interf,
        # e_artif], which one batched matrix product gives in a single pass over memory; the
        # differences themselves are formed explicitly, so nothing cancels catastrophically
        # when an estimate is nearly perfect.
        terms = torch.empty((s, b, 5, c, m), dtype=torch.float64, device=device)
        terms[:, :, 0, :, :w] = s_true
        torch.sub(est, s_true, out=terms[:, :, 1, :, :w])
        terms[:, :, :2, :, w:] = 0.0  # s_true and est are zero-padded (museval's `_zeropad`)
        terms[:, :, 2] = p_own
        terms[:, :, 2, :, :w] -= s_true
        torch.sub(p_all, p_own, out=terms[:, :, 3])
        torch.neg(p_all, out=terms[:, :, 4])
        terms[:, :, 4, :, :w] += est
        flat = terms.reshape(s * b, 5, c * m)
        g = torch.bmm(flat, flat.transpose(1, 2)).reshape(s, b, 5, 5)
        ss, err, spat, interf, artif = (g[..., i, i] for i in range(5))
        image = ss + 2 * g[..., 0, 2] + spat  # |s_true + e_spat|^2
        target = image + interf + 2 * (g[..., 0, 3] + g[..., 2, 3])  # |s_true + e_spat + e_interf|^2
        # SI-SDR comes with it: alpha = <s, est> / |s|^2 and est - alpha s = d1 - (alpha - 1) s
        alpha_1 = g[..., 0, 1] / ss  # alpha - 1
        scaled = (1 + alpha_1) ** 2 * ss
        residual = (alpha_1 * alpha_1 * ss - 2 * alpha_1 * g[..., 0, 1] + err).clamp_min(0.0)
        values = {
            "SDR": _db(ss, err),
            "ISR": _db(ss, spat),
            "SIR": _db(image, interf),
            "SAR": _db(target, artif),
            "SI-SDR": _db(scaled, residual),
        }
        for name, v in values.items():
            out[name][:, sl] = torch.where(silent[None], torch.full_like(v, math.nan), v)
    return {m: v.cpu().numpy() for m, v in out.items()}


def si_sdr(
    references: Tensor | np.ndarray,
    estimates: Tensor | np.ndarray,
    *,
    window: int = SAMPLE_RATE,
    hop: int = SAMPLE_RATE,
) -> np.ndarray:
    """Scale-invariant SDR (Le Roux et al. 2019) per source and window: `(S, N)` dB.

    Channels are concatenated (one scale per source and window). Windows are BSSEval's, and a
    window is NaN where BSSEval's is (any source silent), so that medians cover the same frames.
    """
    refs = torch.as_tensor(np.asarray(references), dtype=torch.float64)
    ests = pad_or_truncate(refs, torch.as_tensor(np.asarray(estimates), dtype=torch.float64))
    frames = Frames.of(refs.shape[-1], window, hop)
    rf, ef = frames.unfold(refs), frames.unfold(ests)  # (S, C, N, W)

    def inner(a: Tensor, b: Tensor) -> Tensor:
        return torch.linalg.vecdot(a, b).sum(dim=1)  # over samples, then channels -> (S, N)

    dot, power, energy = inner(rf, ef), inner(rf, rf), inner(ef, ef)
    alpha = dot / power
    target = alpha * alpha * power  # |alpha s|^2
    # |alpha s - s_hat|^2 from inner products; clamped: an exactly scaled reference gives 0 -> +inf
    noise = (target - 2 * alpha * dot + energy).clamp_min(0.0)
    values = _db(target, noise)
    silent = _silent(rf) | _silent(ef)
    return torch.where(silent[None] | (power == 0), torch.full_like(values, math.nan), values).numpy()
