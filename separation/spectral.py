"""STFT settings, mixture-phase reconstruction and multichannel Wiener/EM refinement.

Every time-frequency model in the project (DPRNN, Open-Unmix) estimates *magnitudes*; this
module turns magnitudes back into waveforms in one of two ways:

- mixture phase: `|S_j| * exp(i * angle(X))`, or
- multichannel Wiener filtering with EM iterations (Nugraha et al. 2016), the algorithm of
  `openunmix.filtering.wiener`, which refines the estimates with the sources' spatial
  covariances so that they add up to the mixture again.

Spectra are used frames-major in memory, `(..., N, F)` with the bins contiguous, while their
shapes read `(..., F, N)`: the layout `torch.stft` returns and `irfft` reads, kept through the
masks and the Wiener step so that no stage transposes a whole spectrogram.

Shapes (legend): B batch, S sources, C channels (2), F frequency bins (n_fft // 2 + 1),
N frames, T samples.
"""

from __future__ import annotations

import torch
from torch import Tensor


class STFT(torch.nn.Module):
    """Batched, centred, Hann-windowed STFT with perfect reconstruction (COLA at 75% overlap)."""

    def __init__(self, n_fft: int = 4096, hop: int = 1024):
        super().__init__()
        self.n_fft, self.hop = n_fft, hop
        # A buffer, not a parameter: it moves with .to(device) but is never saved or trained.
        self.register_buffer("window", torch.hann_window(n_fft), persistent=False)
        self._envelopes: dict = {}

    def forward(self, wave: Tensor) -> Tensor:
        """`(..., T)` real -> `(..., F, N)` complex."""
        shape = wave.shape
        spec = torch.stft(
            wave.reshape(-1, shape[-1]),
            n_fft=self.n_fft,
            hop_length=self.hop,
            window=self.window,
            center=True,
            pad_mode="reflect" if shape[-1] > self.n_fft // 2 else "constant",
            return_complex=True,
        )
        return spec.reshape(*shape[:-1], *spec.shape[-2:])

    def inverse(self, spec: Tensor, length: int) -> Tensor:
        """`(..., F, N)` complex -> `(..., length)` real: `torch.istft` with the same window and
        centring (the tests compare the two), written out because it is faster on the CPU:
        the frames' overlap-add is a few shifted slices added in place (torch.istft folds,
        about half its time), and the window's squared overlap-add is cached per frame count."""
        shape, frames = spec.shape, spec.shape[-1]
        if self.n_fft % self.hop:
            wave = torch.istft(
                spec.reshape(-1, *shape[-2:]), self.n_fft, self.hop, window=self.window, center=True, length=length
            )
            return wave.reshape(*shape[:-2], length)
        # (M, N, n_fft): a view where the spectrum is frames-major, as the Wiener step leaves it
        chunks = torch.fft.irfft(spec.reshape(-1, *shape[-2:]).transpose(-1, -2), n=self.n_fft, dim=-1)
        overlap = self.n_fft // self.hop
        wave = torch.zeros(chunks.shape[0], frames + overlap - 1, self.hop, dtype=chunks.dtype, device=chunks.device)
        for k in range(overlap):  # each frame's k-th hop of samples, windowed, onto hop k of its place
            part = slice(k * self.hop, (k + 1) * self.hop)
            wave[:, k : k + frames].addcmul_(chunks[..., part], self.window[part])
        start = self.n_fft // 2  # centred frames: the signal starts half a window in
        wave = wave.flatten(1)[:, start : start + length]
        wave = wave / self._envelope(frames, device=wave.device)[start : start + wave.shape[-1]]
        if wave.shape[-1] < length:
            raise ValueError(f"{frames} frames cover {wave.shape[-1]} samples, not {length}")
        return wave.reshape(*shape[:-2], length)

    def _envelope(self, frames: int, device: torch.device) -> Tensor:
        """The squared window's overlap-add over `frames` frames `((frames - 1) * hop + n_fft,)`,
        what the inverse divides by; floored where it vanishes (no frame covers the sample)."""
        key = (frames, str(device))
        env = self._envelopes.get(key)
        if env is None:
            overlap = self.n_fft // self.hop
            w2 = self.window.square().to(device).view(overlap, self.hop)
            env = torch.zeros(frames + overlap - 1, self.hop, dtype=w2.dtype, device=device)
            for k in range(overlap):
                env[k : k + frames] += w2[k]
            env = env.flatten().clamp_min(1e-11)
            self._envelopes = {key: env}  # the segments of a run share one frame count: keep one
        return env


def stft_segments(stft: STFT, signals: list[Tensor], frames_per_segment: int = 1024):
    """The STFT of long signals `(..., T)` a segment of frames at a time: yields lists of
    `(..., F, n)` spectra whose frames, concatenated, are exactly the whole-signal STFT's.
    Each segment is computed where `stft` is: long signals can stay on the CPU beside a GPU's
    STFT, and only a segment of their samples at a time is moved there.

    Each segment is computed from the samples its frames' windows cover plus a margin (on the
    hop grid, so frames fall where the whole STFT puts them, and the signal's own ends are
    padded as the whole STFT pads them): memory depends on the segment, not on the track
    (a 7-minute stereo pair of sources is ~0.6 GB of complex spectrogram at once).
    """
    length = signals[0].shape[-1]
    total = 1 + length // stft.hop  # frames of a centred STFT
    margin = -(-stft.n_fft // stft.hop)  # frames' worth of samples around a segment
    for k0 in range(0, total, frames_per_segment):
        k1 = min(total, k0 + frames_per_segment)
        a = max(0, k0 - margin) * stft.hop
        b = min(length, (k1 - 1 + margin) * stft.hop)
        first = k0 - a // stft.hop
        yield [stft(x[..., a:b].to(stft.window.device))[..., first : first + k1 - k0] for x in signals]


def unit_phase(spec: Tensor, magnitude: Tensor | None = None) -> Tensor:
    """`exp(i * angle(spec))`, without the trigonometry (0 where spec is 0); `magnitude` is
    `spec.abs()` when the caller already has it."""
    magnitude = spec.abs() if magnitude is None else magnitude
    return spec / magnitude.clamp_min(1e-12)


def along_mixture_phase(amplitudes: Tensor, mix_spec: Tensor, mix_magnitude: Tensor | None = None) -> Tensor:
    """Real amplitudes `(B, S, C, F, N)` on the mixture's phase: complex `(B, S, C, F, N)`.

    Written on the real and imaginary planes: a real tensor times a complex one goes through
    a slow mixed-type path in PyTorch (about 4x a complex product on the CPU). Differentiable
    in `amplitudes` (training's mixture-phase estimate goes through here)."""
    u = unit_phase(mix_spec, mix_magnitude).unsqueeze(1)
    return torch.complex(amplitudes * u.real, amplitudes * u.imag)


def wiener_filter(
    magnitudes: Tensor,
    mix_spec: Tensor,
    iterations: int,
    *,
    residual: bool = False,
    window: int = 300,
    mix_magnitude: Tensor | None = None,
) -> Tensor:
    """Multichannel Wiener filtering with `iterations` EM steps (0 = mixture phase).

    The algorithm of `openunmix.filtering.wiener` (Nugraha et al. 2016; the same scaling,
    regularisation and 300-frame windows; the tests compare the outputs with upstream's run
    in float64). Stereo, the case of every model here, is solved in closed form (see
    `_wiener_stereo`); other channel counts go through `_em_general`.

    Args:
        magnitudes: `(B, S, C, F, N)` non-negative source magnitude estimates.
        mix_spec: `(B, C, F, N)` complex mixture STFT.
        iterations: EM iterations; upstream Open-Unmix uses 1.
        residual: add one more source, the complex mixture minus the others, before EM
            (Open-Unmix's `residual=True`: vocals + residual = karaoke).
        window: frames filtered together (upstream's `wiener_win_len`); the spatial
            covariances are estimated per window, which bounds memory on long inputs.
        mix_magnitude: `mix_spec.abs()`, when the caller has it already.
    Returns:
        `(B, S + residual, C, F, N)` complex source STFTs.
    """
    mix_magnitude = mix_spec.abs() if mix_magnitude is None else mix_magnitude
    amplitudes = magnitudes
    if residual:
        # Every initial estimate lies on the mixture's phase, the residual too: mixture minus
        # the others is the real amplitude |X| - sum_j |S_j| (negative where they exceed it).
        rest = (mix_magnitude - magnitudes.sum(dim=1)).unsqueeze(1)
        amplitudes = torch.cat([magnitudes, rest], dim=1)
    if iterations <= 0:
        return along_mixture_phase(amplitudes, mix_spec, mix_magnitude)
    if mix_spec.shape[1] == 2:
        return _wiener_stereo(amplitudes, mix_spec, mix_magnitude, iterations, window)
    stems = along_mixture_phase(amplitudes, mix_spec, mix_magnitude)
    out = torch.empty_like(stems)
    frames = mix_spec.shape[-1]
    for b in range(mix_spec.shape[0]):
        for start in range(0, frames, window):
            sl = slice(start, start + window)
            # (S, C, F, n) -> (S, n, F, C): frames and bins are batch dimensions of C x C algebra.
            y = stems[b, ..., sl].permute(0, 3, 2, 1)
            x = mix_spec[b, ..., sl].permute(2, 1, 0)
            scale = window_scale(mix_magnitude[b, ..., sl])
            y = _em_general(y / scale, x / scale, iterations) * scale
            out[b, ..., sl] = y.permute(0, 3, 2, 1)
    return out


def window_scale(mix_magnitude: Tensor) -> Tensor:
    """Upstream's per-window scale: the mixture is divided by `max |X| / 10` (at least 1) before
    EM, so that eps means the same for loud and quiet tracks. `(..., C, F, n)` -> `(...)`."""
    return (mix_magnitude.amax(dim=(-3, -2, -1)) / 10.0).clamp_min(1.0)


def _em_general(y: Tensor, x: Tensor, iterations: int, eps: float = 1e-10) -> Tensor:
    """EM refinement of source STFTs under a local Gaussian model, for any channel count.

    Each source j has a power spectral density v_j(n, f) and a spatial covariance R_j(f);
    each step re-estimates both from the current estimates and re-filters the mixture with
    the multichannel Wiener gain  G_j = v_j R_j (sum_k v_k R_k + sqrt(eps) I)^-1.

    Args:
        y: `(S, N, F, C)` complex initial source estimates.
        x: `(N, F, C)` complex mixture.
    Returns:
        `(S, N, F, C)` refined estimates.
    """
    channels = x.shape[-1]
    reg = (eps**0.5) * torch.eye(channels, dtype=x.dtype, device=x.device)
    for _ in range(iterations):
        v = (y.real.square() + y.imag.square()).mean(dim=-1)  # (S, N, F)
        # Spatial covariance: sum over frames of y y^H, normalised by the summed PSD.
        cov = (y.unsqueeze(-1) * y.conj().unsqueeze(-2)).sum(dim=1)  # (S, F, C, C)
        R = cov / (eps + v.sum(dim=1))[..., None, None]
        Cxx = (v[..., None, None] * R.unsqueeze(1)).sum(dim=0) + reg  # (N, F, C, C)
        # y_j = v_j R_j Cxx^-1 x: apply Cxx^-1 to x once, then each source's R_j.
        z = (torch.linalg.inv(Cxx) * x.unsqueeze(-2)).sum(dim=-1)  # (N, F, C)
        y = v.unsqueeze(-1) * (R.unsqueeze(1) * z[None, :, :, None, :]).sum(dim=-1)
    return y


# --------------------------------------------------------------------------- stereo, closed form


def _wiener_stereo(amplitudes: Tensor, x: Tensor, x_mag: Tensor, iterations: int, window: int) -> Tensor:
    """`wiener_filter` for two channels: `(B, S, 2, F, N)` real amplitudes along the mixture's
    phase, `(B, 2, F, N)` complex mixture and its magnitude -> `(B, S, 2, F, N)` complex.

    The work is done frames-major, `(..., N, F)` with the bins contiguous: the layout that
    `torch.stft` returns and `irfft` reads, and one in which a window of frames is a contiguous
    block. Windows are independent (each has its own spatial covariances), so each goes through
    all its EM steps on real and imaginary planes of its own: PyTorch's complex kernels on the
    CPU are several times slower than the same arithmetic on floats, and a real times a complex
    tensor slower still.
    """
    amplitudes, x, x_mag = amplitudes.transpose(-1, -2), x.transpose(-1, -2), x_mag.transpose(-1, -2)
    frames = amplitudes.shape[-2]
    out = torch.empty(amplitudes.shape, dtype=x.dtype, device=x.device)  # (B, S, 2, N, F)
    for start in range(0, frames, window):
        sl = slice(start, start + window)
        xw = torch.view_as_real(x[..., sl, :])
        xr, xi = xw[..., 0].contiguous(), xw[..., 1].contiguous()  # (B, 2, n, F)
        mag = x_mag[..., sl, :]
        reg = (_REG * window_scale(mag).square())[:, None, None]  # (B, 1, 1)
        yr, yi = _stereo_step(_moments_along_phase(amplitudes[..., sl, :].contiguous(), xr, xi, mag), xr, xi, reg)
        for _ in range(iterations - 1):
            yr, yi = _stereo_step(_moments(yr, yi), xr, xi, reg, wide_sums=True)
        out[..., sl, :] = torch.view_as_complex(torch.stack((yr, yi), dim=-1))
    return out.transpose(-1, -2)


# Upstream's eps, and the regularisation sqrt(eps) added to the mixture's covariance. Upstream
# divides each window's mixture by its scale s (`window_scale`) before EM; multiplying both
# constants by s^2 instead gives the same estimates without a scaled copy of the data.
_EPS = 1e-10
_REG = _EPS**0.5


def _moments_along_phase(a: Tensor, xr: Tensor, xi: Tensor, x_mag: Tensor) -> tuple[Tensor, ...]:
    """First-step statistics of estimates `a_jc * u_c` (u_c the mixture's unit phase in channel
    c) from their real amplitudes `a` `(B, S, 2, n, F)`: |y_j0|^2 = a_j0^2, |y_j1|^2 = a_j1^2 and
    y_j0 conj(y_j1) = a_j0 a_j1 w, with w = u_0 conj(u_1) one plane shared by every source.
    Returns the four `(B, S, n, F)` planes of `_moments`."""
    den = x_mag[:, 0].clamp_min(1e-12) * x_mag[:, 1].clamp_min(1e-12)  # (B, n, F)
    wr = torch.addcmul(xr[:, 0] * xr[:, 1], xi[:, 0], xi[:, 1]).div_(den).unsqueeze(1)
    wi = torch.addcmul(xi[:, 0] * xr[:, 1], xr[:, 0], xi[:, 1], value=-1.0).div_(den).unsqueeze(1)
    a0, a1 = a[:, :, 0], a[:, :, 1]
    q = a0 * a1
    return a0.square(), a1.square(), q * wr, q.mul_(wi)


def _moments(yr: Tensor, yi: Tensor) -> tuple[Tensor, ...]:
    """`(B, S, 2, n, F)` real and imaginary planes of estimates -> |y_0|^2, |y_1|^2 and the real
    and imaginary planes of y_0 conj(y_1), each `(B, S, n, F)`."""
    y0r, y0i, y1r, y1i = yr[:, :, 0], yi[:, :, 0], yr[:, :, 1], yi[:, :, 1]
    return (
        torch.addcmul(y0r.square(), y0i, y0i),
        torch.addcmul(y1r.square(), y1i, y1i),
        torch.addcmul(y0r * y1r, y0i, y1i),
        torch.addcmul(y0i * y1r, y0r, y1i, value=-1.0),
    )


def _stereo_step(
    moments: tuple[Tensor, ...], xr: Tensor, xi: Tensor, reg: Tensor, *, wide_sums: bool = False
) -> tuple[Tensor, Tensor]:
    """One EM step on one window: `_moments` of the current estimates, the mixture's planes
    `(B, 2, n, F)` and the window's regularisation `reg` `(B, 1, 1)` -> the new estimates'
    real and imaginary planes `(B, S, 2, n, F)`.

    The model: source j has PSD v_j(n, f) = (|y_j0|^2 + |y_j1|^2) / 2 and spatial covariance
    R_j(f) = sum_n y_j y_j^H / sum_n v_j; the mixture's covariance is Cxx = A + r I with
    A = sum_j v_j R_j; the estimate is y_j = v_j R_j Cxx^-1 x.

    Solved in a form that stays accurate in float32 where Cxx is nearly singular, as it is on
    every bin of a dual-mono song (a mono file, or left == right). With adj the 2x2 adjugate,

        det Cxx      = r^2 + r tr(A) + sum_jk v_j v_k D_jk,   D_jk = tr(R_j adj R_k) / 2 >= 0
        R_j adj(Cxx) = sum_k v_k P_jk + r R_j,                P_jk = R_j adj R_k

    the determinant is a sum of non-negative terms (a d - |b|^2 from Cxx's entries cancels to
    noise, or below zero: NaN stems from a mono file) and the per-window products D_jk and
    P_jk are taken in float64. The last source is the mixture minus the others minus
    r Cxx^-1 x, an identity of the exact solution, which needs no P.

    `wide_sums` accumulates the window sums in float64 too: the later steps' estimates are no
    longer on the mixture's phase, and on a dual-mono song their float32 sums left the second
    step 20 dB from a float64 run instead of 50 dB. The first step is > 100 dB from it either way.
    """
    p0, p1, cr, ci = moments  # (B, S, n, F)
    R, P, D = _spatial_covariances(moments, reg, wide_sums)
    v = torch.add(p0, p1).mul_(0.5)  # (B, S, n, F)
    # det Cxx = r^2 + sum_j v_j (r tr R_j + sum_k v_k D_jk)
    det = reg.square().expand_as(v[:, 0]).clone()
    for j in range(v.shape[1]):
        term = torch.addcmul(reg * _each_frame(R[0][:, j].real + R[3][:, j].real), v[:, 0], _each_frame(D[:, j, 0]))
        for k in range(1, v.shape[1]):
            term.addcmul_(v[:, k], _each_frame(D[:, j, k]))
        det.addcmul_(term, v[:, j])
    yr = torch.empty((v.shape[0], v.shape[1], 2, *v.shape[2:]), dtype=v.dtype, device=v.device)
    yi = torch.empty_like(yr)
    _all_but_the_last(yr, yi, v, det, R, P, xr, xi, reg)
    _the_last(yr, yi, v, det, R, xr, xi, reg)
    return yr, yi


def _spatial_covariances(moments: tuple[Tensor, ...], reg: Tensor, wide_sums: bool):
    """The window's spatial covariances R_j, P_jk = R_j adj(R_k) and D_jk = tr(P_jk) / 2, in
    float64: R as its four entries `(B, S, F)` (complex), P as its four entries `(B, S, S, F)`,
    D `(B, S, S, F)`."""
    p0, p1, cr, ci = moments
    wide = torch.float64
    total = (lambda t: t.sum(-2, dtype=wide)) if wide_sums else (lambda t: t.sum(-2).to(wide))  # noqa: E731
    s00, s11 = total(p0), total(p1)
    norm = 1.0 / (_EPS / _REG * reg.to(wide) + 0.5 * (s00 + s11))
    r00, r11 = s00 * norm, s11 * norm
    r01 = torch.complex(total(cr), total(ci)) * norm
    # adj(R) = [[r11, -r01], [-conj(r01), r00]]
    rj, rk = (slice(None), slice(None), None), (slice(None), None, slice(None))
    P = (
        r00[rj] * r11[rk] - r01[rj] * r01[rk].conj(),
        r01[rj] * r00[rk] - r00[rj] * r01[rk],
        r01[rj].conj() * r11[rk] - r11[rj] * r01[rk].conj(),
        r11[rj] * r00[rk] - r01[rj].conj() * r01[rk],
    )
    D = (0.5 * (P[0].real + P[3].real)).clamp_min(0.0)  # mixed discriminants of PSD matrices: >= 0
    R = (r00.to(r01.dtype), r01, r01.conj(), r11.to(r01.dtype))
    return R, P, D


def _each_frame(t: Tensor) -> Tensor:
    """A per-window constant `(B, F)` (float64) as float32 `(B, 1, F)`, the same for every frame."""
    return t.to(torch.float32).unsqueeze(-2)


def _all_but_the_last(yr, yi, v, det, R, P, xr, xi, reg) -> None:
    """y_j = v_j / det * (sum_k v_k P_jk + r R_j) x for every source j but the last, into the
    planes `yr`, `yi` `(B, S, 2, n, F)`."""
    sources = v.shape[1]
    x0r, x0i, x1r, x1i = xr[:, 0], xi[:, 0], xr[:, 1], xi[:, 1]
    for j in range(sources - 1):
        M = []  # the entries 00, 01, 10, 11 of the 2x2 matrix, as (real, imaginary) planes
        for e in range(4):
            planes = []
            for part in (torch.real, torch.imag):
                m = torch.addcmul(reg * _each_frame(part(R[e][:, j])), v[:, 0], _each_frame(part(P[e][:, j, 0])))
                for k in range(1, sources):
                    m.addcmul_(v[:, k], _each_frame(part(P[e][:, j, k])))
                planes.append(m)
            M.append(planes)
        gain = v[:, j] / det
        for c, ((ar, ai), (br, bi)) in enumerate(((M[0], M[1]), (M[2], M[3]))):
            re = (ar * x0r).addcmul_(ai, x0i, value=-1.0).addcmul_(br, x1r).addcmul_(bi, x1i, value=-1.0)
            im = (ar * x0i).addcmul_(ai, x0r).addcmul_(br, x1i).addcmul_(bi, x1r)
            torch.mul(re, gain, out=yr[:, j, c])
            torch.mul(im, gain, out=yi[:, j, c])


def _the_last(yr, yi, v, det, R, xr, xi, reg) -> None:
    """The last source: x - the others - r Cxx^-1 x, with Cxx = [[a, b], [conj(b), d]], into
    `yr`, `yi` (whose other sources are written)."""
    x0r, x0i, x1r, x1i = xr[:, 0], xi[:, 0], xr[:, 1], xi[:, 1]
    a, d = reg.expand_as(x0r).clone(), reg.expand_as(x0r).clone()
    b_re, b_im = torch.zeros_like(x0r), torch.zeros_like(x0r)
    for j in range(v.shape[1]):
        a.addcmul_(v[:, j], _each_frame(R[0][:, j].real))
        d.addcmul_(v[:, j], _each_frame(R[3][:, j].real))
        b_re.addcmul_(v[:, j], _each_frame(R[1][:, j].real))
        b_im.addcmul_(v[:, j], _each_frame(R[1][:, j].imag))
    h = reg / det
    adj = (
        (d * x0r).addcmul_(b_re, x1r, value=-1.0).addcmul_(b_im, x1i),  # (adj(Cxx) x)_0 = d x0 - b x1
        (d * x0i).addcmul_(b_re, x1i, value=-1.0).addcmul_(b_im, x1r, value=-1.0),
        (a * x1r).addcmul_(b_re, x0r, value=-1.0).addcmul_(b_im, x0i, value=-1.0),  # _1 = a x1 - conj(b) x0
        (a * x1i).addcmul_(b_re, x0i, value=-1.0).addcmul_(b_im, x0r),
    )
    last = v.shape[1] - 1
    others_re, others_im = yr[:, :last].sum(1), yi[:, :last].sum(1)  # (B, 2, n, F)
    for c, (xc_r, xc_i) in enumerate(((x0r, x0i), (x1r, x1i))):
        torch.sub(xc_r, others_re[:, c], out=yr[:, last, c]).addcmul_(adj[2 * c], h, value=-1.0)
        torch.sub(xc_i, others_im[:, c], out=yi[:, last, c]).addcmul_(adj[2 * c + 1], h, value=-1.0)
