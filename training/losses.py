"""Training objectives, one module per model family, so DDP sees one forward per step.

Spectrogram models (DPRNN, Open-Unmix) use a log-magnitude term and a complex (phase-aware) term:

    L = w_log * mean (log(|S^| + eps) - log(|S| + eps))^2          log-L2 on magnitudes
      + w_phase * sum |S^ - S|^2 / sum |X|^2                        phase-aware: complex STFT error

where S^ is the magnitude estimate with the mixture's phase (and, for Open-Unmix, the
complex residual as accompaniment), i.e. exactly what inference produces before Wiener EM.
The complex term is normalised by the mixture's energy X (the share of the mixture that is
misattributed), so that its weight depends neither on the STFT's scale nor on the song's
loudness, and a silent target (a vocal-free chunk) cannot make it explode as a ratio to the
target's own energy would. The log term cares about quiet bins, the complex term about loud
ones and about phase.

The time-domain Conv1D baseline uses the MSE on waveforms.

Shapes: B batch, S sources, C channels, T samples, F bins, N frames.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from separation.models.base import MaskModel, SeparationModel
from separation.spectral import stft_segments, wiener_filter


@dataclass(frozen=True)
class LossConfig:
    log_weight: float = 1.0
    phase_weight: float = 10.0  # the complex term is a fraction (~0.1), the log term ~1
    log_eps: float = 1e-3
    spec_augment: bool = True  # for models whose `training_magnitudes` use it on their input (DPRNN)
    freq_masks: int = 2
    freq_width: int = 64  # bins (of 2049: ~1.4 kHz at n_fft 4096)
    time_masks: int = 2
    time_width: int = 20  # frames (~0.5 s at hop 1024)


def spec_augment(mag: Tensor, cfg: LossConfig, gen: torch.Generator) -> Tensor:
    """SpecAugment (Park et al. 2019) on the *input* magnitude `(B, C, F, N)`: zero random
    frequency bands and time spans, the same for both channels. The targets are untouched, so
    the model learns to fill in from context instead of trusting every bin."""
    batch, _, bins, frames = mag.shape
    keep = torch.ones(batch, 1, bins, frames, device=mag.device)
    for b in range(batch):
        for _ in range(cfg.freq_masks):
            w = int(torch.randint(0, cfg.freq_width + 1, (1,), generator=gen))
            f0 = int(torch.randint(0, max(1, bins - w), (1,), generator=gen))
            keep[b, :, f0 : f0 + w] = 0
        for _ in range(cfg.time_masks):
            w = int(torch.randint(0, cfg.time_width + 1, (1,), generator=gen))
            t0 = int(torch.randint(0, max(1, frames - w), (1,), generator=gen))
            keep[b, :, :, t0 : t0 + w] = 0
    return mag * keep


def spectral_loss(est: Tensor, target: Tensor, mix_spec: Tensor, cfg: LossConfig) -> tuple[Tensor, dict[str, float]]:
    """`est`, `target`: complex `(B, S, C, F, N)`; `mix_spec` `(B, C, F, N)`. Returns the loss and its parts."""
    err = (est - target).abs().square()
    return _combine(est.abs(), target.abs(), err, mix_spec, cfg)


class _MaskedSums(torch.autograd.Function):
    """Per batch item, `sum (log(m + eps) - log(|S| + eps))^2` `(B,)` and `sum (m - p)^2`
    `(B, S)` of magnitudes `m` `(B, S, C, F, N)`, with their gradient in closed form:
    2 (log(m + eps) - log(|S| + eps)) / (m + eps) and 2 (m - p). Autograd of the same
    expressions made about twice as many passes over full-size spectra and kept more of them.
    The loss's memory-bound passes (these and the no-grad terms of `masked_spectral_loss`) took
    0.27 s of a 0.53-s bf16 CPU training step with autograd and complex arithmetic; 0.14 s now."""

    @staticmethod
    def forward(ctx, mags: Tensor, target_log: Tensor, proj: Tensor, eps: float):
        shifted = mags + eps
        dlog = torch.log(shifted).sub_(target_log)
        log_sq = torch.linalg.vector_norm(dlog.flatten(1), dim=1).square()
        resid = mags - proj
        err = torch.linalg.vector_norm(resid, dim=(-3, -2, -1)).square()
        ctx.save_for_backward(dlog.div_(shifted), resid)
        return log_sq, err

    @staticmethod
    def backward(ctx, grad_log_sq: Tensor, grad_err: Tensor):
        dlog, resid = ctx.saved_tensors
        grad = dlog * grad_log_sq.view(-1, 1, 1, 1, 1)
        grad.addcmul_(resid, grad_err[..., None, None, None])
        return grad.mul_(2), None, None, None


def masked_spectral_loss(
    mags: Tensor, mix_spec: Tensor, target: Tensor, cfg: LossConfig, mix_mag: Tensor | None = None
) -> tuple[Tensor, dict]:
    """`spectral_loss` of the mixture-phase estimate `mags * exp(i angle(X))`, in real arithmetic.

    With u = X/|X| and conj(u) S = p + iq: |S^ - S|^2 = |m u - S|^2 = (m - p)^2 + (|S|^2 - p^2),
    and p, |S| need no gradient: the same number as `spectral_loss` without complex abs, angle
    and polar or their backward passes, with the gradient in closed form (`_MaskedSums`).
    `mix_mag` is `mix_spec.abs()` when the caller has it already."""
    with torch.no_grad():
        if mix_mag is None:
            mix_mag = mix_spec.abs()
        # Real arithmetic on the interleaved (re, im) layout: complex abs, division and product
        # made separate passes over the spectra and took 3.5x as long (memory-bound on a CPU).
        x, s = torch.view_as_real(mix_spec).unsqueeze(1), torch.view_as_real(target)
        prod = x * s
        inv_mix = mix_mag.clamp_min(1e-12).reciprocal_().unsqueeze(1)  # p = 0 where X = 0
        proj = torch.add(prod[..., 0], prod[..., 1]).mul_(inv_mix)  # Re(conj(X) S) / |X|
        power = torch.square(s, out=prod)
        target_power = torch.add(power[..., 0], power[..., 1])  # |S|^2
        dims = (-3, -2, -1)
        # |S|^2 - p^2 = q^2 >= 0 per bin (no cancellation in a difference of large sums): a constant of the loss.
        lost = torch.addcmul(target_power, proj, proj, value=-1).sum(dim=dims)
        target_log = target_power.sqrt_().add_(cfg.log_eps).log_()
        mix_energy = mix_mag.square().sum(dim=dims)
    log_sq, err = _MaskedSums.apply(mags, target_log, proj, cfg.log_eps)
    sums = {
        "log_sq": log_sq,
        "bins": torch.full((mags.shape[0],), mags[0].numel(), dtype=torch.float64, device=mags.device),
        "err": err + lost,
        "mix_energy": mix_energy,
    }
    return combine_sums(sums, cfg)


def _combine(mag: Tensor, tmag: Tensor, err: Tensor, mix_spec: Tensor, cfg: LossConfig) -> tuple[Tensor, dict]:
    return combine_sums(loss_sums(mag, tmag, err, mix_spec, cfg), cfg)


def loss_sums(mag: Tensor, tmag: Tensor, err: Tensor, mix_spec: Tensor, cfg: LossConfig) -> dict[str, Tensor]:
    """The sums the loss is made of, per batch item: they add up over segments of a long track
    (`training.loop` validates whole tracks a segment of frames at a time)."""
    return {
        "log_sq": (torch.log(mag + cfg.log_eps) - torch.log(tmag + cfg.log_eps)).square().flatten(1).sum(dim=1),
        "bins": torch.full((mag.shape[0],), mag[0].numel(), dtype=torch.float64, device=mag.device),
        "err": err.sum(dim=(-3, -2, -1)),  # (B, S)
        "mix_energy": mix_spec.abs().square().sum(dim=(-3, -2, -1)),
    }


def combine_sums(sums: dict[str, Tensor], cfg: LossConfig) -> tuple[Tensor, dict]:
    log_l2 = sums["log_sq"].sum() / sums["bins"].sum()  # mean over every bin of the batch
    phase = (sums["err"] / (sums["mix_energy"][:, None] + 1e-3)).mean()  # misattributed share of the energy
    loss = cfg.log_weight * log_l2 + cfg.phase_weight * phase
    return loss, {"log_l2": float(log_l2.detach()), "phase": float(phase.detach())}


def whole_track_spectral_loss(est: Tensor, target: Tensor, mix: Tensor, stft, cfg: LossConfig) -> float:
    """`spectral_loss` of one whole track, `(S, C, T)` estimates and targets and a `(C, T)`
    mixture, taken a segment of STFT frames at a time: the same number, in bounded memory.

    It is computed where `stft` is: the signals may stay on the CPU, and only a segment at a
    time is moved. Left on the CPU beside a GPU's model, it took most of a
    validation pass (`./run.sh bench validation_speed`)."""
    total: dict[str, Tensor] | None = None
    for e, t, m in stft_segments(stft, [est, target, mix]):
        part = loss_sums(e.abs()[None], t.abs()[None], (e - t).abs().square()[None], m[None], cfg)
        part = {k: v.double() for k, v in part.items()}
        total = part if total is None else {k: total[k] + v for k, v in part.items()}
    assert total is not None
    return float(combine_sums(total, cfg)[0])


class TrainingObjective(nn.Module):
    """`(mixture (B, C, T), targets (B, S, C, T)) -> loss`: the model's forward for training."""

    def __init__(self, model: SeparationModel, cfg: LossConfig = LossConfig()):
        super().__init__()
        self.model, self.cfg = model, cfg

    def forward(self, mix: Tensor, targets: Tensor, gen: torch.Generator | None = None) -> tuple[Tensor, dict]:
        model = self.model
        if not isinstance(model, MaskModel):
            est = model(mix)
            loss = (est.float() - targets).square().mean()
            return loss, {"mse": float(loss.detach())}
        # The STFT stays in float32 under autocast: fp16 spectra of loud songs overflow.
        with torch.autocast(mix.device.type, enabled=False):
            spec = model.stft(mix.float())
            target_spec = model.stft(targets.float())
        mag = spec.abs()
        augment = None
        if self.cfg.spec_augment and gen is not None:

            def augment(x: Tensor) -> Tensor:
                return spec_augment(x, self.cfg, gen)

        mags = model.training_magnitudes(mag, augment).float()
        if not model.residual:
            return masked_spectral_loss(mags, spec, target_spec, self.cfg, mix_mag=mag)
        est = wiener_filter(mags, spec, 0, residual=True)
        return spectral_loss(est, target_spec, spec, self.cfg)
