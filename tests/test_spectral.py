"""STFT reconstruction and the Wiener/EM filter against upstream Open-Unmix's implementation."""

from __future__ import annotations

import pytest
import torch
from openunmix.filtering import wiener as umx_wiener

from separation.spectral import STFT, _em_general, _em_stereo, apply_mixture_phase, wiener_filter


def test_stft_perfect_reconstruction():
    stft = STFT(4096, 1024)
    x = torch.randn(2, 2, 44100)
    torch.testing.assert_close(stft.inverse(stft(x), x.shape[-1]), x, atol=1e-5, rtol=0)


def test_stft_short_input_uses_constant_padding():
    stft = STFT(512, 128)
    x = torch.randn(1, 2, 100)  # shorter than n_fft // 2: reflect padding would fail
    assert stft(x).shape[-2] == 257


def test_mixture_phase_masks_that_sum_to_one_give_back_the_mixture():
    stft = STFT(512, 128)
    x = torch.randn(1, 2, 8000)
    spec = stft(x)
    mask = torch.rand(1, 1, 2, 257, spec.shape[-1])
    mags = torch.cat([mask, 1 - mask], dim=1) * spec.abs().unsqueeze(1)
    stems = stft.inverse(apply_mixture_phase(mags, spec), 8000)
    torch.testing.assert_close(stems.sum(dim=1), x, atol=1e-5, rtol=0)


def _upstream(mags, mix, iterations, residual, window=300):
    """openunmix.filtering.wiener window by window, as upstream's Separator calls it."""
    batch, sources, channels, bins, frames = mags.shape
    out = []
    for b in range(batch):
        m = mags[b].permute(3, 2, 1, 0)
        x = torch.view_as_real(mix[b].permute(2, 1, 0))
        parts = [
            umx_wiener(m[s : s + window], x[s : s + window], iterations, residual=residual)
            for s in range(0, frames, window)
        ]
        y = torch.cat(parts, dim=0)  # (N, F, C, 2, S)
        out.append(torch.view_as_complex(y.permute(4, 2, 1, 0, 3).contiguous()))
    return torch.stack(out)


@pytest.mark.parametrize(
    "channels,sources,iterations,residual",
    [(2, 2, 1, False), (2, 1, 1, True), (2, 2, 3, False), (2, 2, 0, True), (1, 2, 2, False), (1, 1, 1, True)],
)
def test_wiener_matches_openunmix(channels, sources, iterations, residual):
    gen = torch.Generator().manual_seed(channels * 10 + sources + iterations)
    frames, bins = 650, 129  # three windows, the last one ragged
    mix = (
        torch.complex(
            torch.randn(2, channels, bins, frames, generator=gen), torch.randn(2, channels, bins, frames, generator=gen)
        )
        * 30
    )
    mags = torch.rand(2, sources, channels, bins, frames, generator=gen) * 20
    mine = wiener_filter(mags, mix, iterations, residual=residual)
    ref = _upstream(mags, mix, iterations, residual)
    assert mine.shape == ref.shape == (2, sources + residual, channels, bins, frames)
    err = (mine - ref).abs().max() / ref.abs().max()
    assert err < 1e-5


def test_wiener_em_keeps_the_sum_close_to_the_mixture():
    stft = STFT(1024, 256)
    gen = torch.Generator().manual_seed(0)
    a, b = torch.randn(1, 2, 22050, generator=gen), torch.randn(1, 2, 22050, generator=gen) * 0.3
    spec = stft(a + b)
    mags = torch.stack([stft(a).abs(), stft(b).abs()], dim=1)
    stems = wiener_filter(mags, spec, 2)
    # EM with oracle magnitudes: both estimates close to the truth, and they sum to the mix
    rel = (stems.sum(dim=1) - spec).abs().pow(2).sum() / spec.abs().pow(2).sum()
    assert rel < 1e-3


def test_stereo_fast_path_equals_general_path():
    gen = torch.Generator().manual_seed(3)
    shape = (3, 40, 33, 2)
    y = torch.complex(torch.randn(shape, generator=gen), torch.randn(shape, generator=gen))
    x = y.sum(dim=0) + 0.1 * torch.complex(torch.randn(shape[1:], generator=gen), torch.randn(shape[1:], generator=gen))
    fast, general = _em_stereo(y, x, 2, 1e-10), _em_general(y, x, 2, 1e-10)
    torch.testing.assert_close(fast, general, rtol=1e-4, atol=1e-5)
    three = torch.complex(torch.randn(2, 40, 33, 3, generator=gen), torch.randn(2, 40, 33, 3, generator=gen))
    out = _em_general(three, three.sum(dim=0), 1, 1e-10)
    assert out.shape == three.shape and torch.isfinite(out.real).all()
