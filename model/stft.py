"""The codec of the embedded networks: a perfectly reconstructing STFT (16 kHz, n_fft 512, hop 256, sqrt-Hann
analysis and synthesis windows, whose squares overlap-add to one), and the features and masks built on it.

Shared by the general separator (model/embedded.py), the mask networks (model/masknet.py), training and
evaluation (the oracle mask).
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F

@functools.lru_cache(maxsize=4)
def sqrt_hann(n_fft: int) -> torch.Tensor:
    """Cached (streaming asks for it every chunk); callers must not modify it in place."""
    return torch.hann_window(n_fft, periodic=True, dtype=torch.float64).sqrt().float()


def analysis_frames(padded: torch.Tensor, n_fft: int, hop: int) -> torch.Tensor:
    """[B, S] already padded signal -> complex spectra [B, T, bins] of frames starting at 0, hop, 2 hop, ..."""
    frames = padded.unfold(-1, n_fft, hop) * sqrt_hann(n_fft).to(padded.device)
    return torch.fft.rfft(frames, dim=-1)


def synthesis_frames(spectra: torch.Tensor, n_fft: int) -> torch.Tensor:
    """[B, T, bins] -> windowed time frames [B, T, n_fft], ready for overlap-add."""
    return torch.fft.irfft(spectra, n=n_fft, dim=-1) * sqrt_hann(n_fft).to(spectra.device)


def overlap_add(frames: torch.Tensor, hop: int) -> torch.Tensor:
    """[B, T, n_fft] -> [B, (T - 1) * hop + n_fft]."""
    batch, count, n_fft = frames.shape
    return F.fold(frames.transpose(1, 2), output_size=(1, (count - 1) * hop + n_fft), kernel_size=(1, n_fft),
                  stride=(1, hop)).reshape(batch, -1)


def clip_spectra(wav: torch.Tensor, config) -> torch.Tensor:
    """[B,S] -> spectra [B,T,bins] of every frame that overlaps the clip (the model's framing, zero padded)."""
    overlap = config.n_fft - config.hop
    count = -(-(wav.shape[-1] + overlap) // config.hop)
    padded = F.pad(wav, (overlap, (count - 1) * config.hop + config.n_fft - overlap - wav.shape[-1]))
    return analysis_frames(padded, config.n_fft, config.hop)


def log_magnitude(spectra: torch.Tensor) -> torch.Tensor:
    """Compressed, roughly unit-scale magnitude features (the gain offset is learnt with gain augmentation)."""
    return torch.log(spectra.abs() + 1e-4) / 4 + 1


def with_lookahead(features: torch.Tensor, lookahead: int) -> torch.Tensor:
    """[B, T + lookahead, F] -> [B, T, F * (1 + lookahead)]: frame j carries frames j .. j + lookahead."""
    count = features.shape[1] - lookahead
    return torch.cat([features[:, k : k + count] for k in range(lookahead + 1)], dim=-1)


def state_to_mask(x: torch.Tensor) -> torch.Tensor:
    return ((x + 1) / 2).clamp(0, 1)


def mask_to_state(mask: torch.Tensor) -> torch.Tensor:
    return 2 * mask - 1


def ideal_ratio_mask(target: torch.Tensor, mixture: torch.Tensor) -> torch.Tensor:
    """|S| / (|S| + |X − S|) per bin (complex spectra in); 0.5 where both are silent."""
    s, n = target.abs(), (mixture - target).abs()
    return (s + 1e-8) / (s + n + 2e-8)


def active_frames(spectra: torch.Tensor, valid: torch.Tensor, floor_db: float = 40.0) -> torch.Tensor:
    """Frames within `floor_db` of the clip's loudest frame: what an audio example is pooled over."""
    energy = 10 * torch.log10(spectra.abs().pow(2).sum(-1) + 1e-10)
    energy = energy.masked_fill(~valid, -200.0)
    return valid & (energy > energy.max(dim=1, keepdim=True).values - floor_db)
