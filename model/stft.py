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
    """Cached (streaming asks for it every chunk); callers must not modify it in place. Made outside inference
    mode, so that training in a process that already ran inference can still use it."""
    with torch.inference_mode(False):
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


class StftStream:
    """The STFT side of one stream of a frame-causal mask model: chunks of samples in, complex frames out as they
    complete; masked frames in, finished samples out. Output sample n is input sample n − `delay` (zeros before
    the start), where delay = (n_fft − hop) + lookahead frames × hop.

    A chunk must hold whole hops. Frames are handed out with `lookahead` frames of future context: `ready()` says
    how many frames can be masked now.
    """

    def __init__(self, n_fft: int, hop: int, lookahead: int) -> None:
        self.n_fft, self.hop, self.lookahead = n_fft, hop, lookahead
        self.delay = (n_fft - hop) + lookahead * hop
        self.input_tail = torch.zeros(n_fft - hop)
        self.ola_tail = torch.zeros(n_fft - hop)
        self.pending: list[torch.Tensor] = []  # analysed frames not yet masked, each [bins] complex
        self.emitted = 0  # output samples handed out

    def analyse(self, chunks: torch.Tensor, streams: list["StftStream"]) -> torch.Tensor:
        """Batched analysis of one chunk per stream ([N, S] float) -> spectra [N, S // hop, bins]; each stream
        keeps its new frames pending."""
        buffers = torch.cat([torch.stack([s.input_tail for s in streams]), chunks], dim=1)
        spectra = analysis_frames(buffers, self.n_fft, self.hop)
        for row, stream in enumerate(streams):
            stream.input_tail = chunks[row, -(self.n_fft - self.hop):].clone()
            stream.pending.extend(spectra[row])
        return spectra

    def ready(self) -> int:
        return max(0, len(self.pending) - self.lookahead)

    def take(self, count: int) -> torch.Tensor:
        """The next `count` frames with their look-ahead frames: [count + lookahead, bins]; the first `count` are
        consumed."""
        frames = torch.stack(self.pending[: count + self.lookahead])
        del self.pending[:count]
        return frames

    def synthesise(self, masked: torch.Tensor) -> torch.Tensor:
        """Masked frames [count, bins] (the ones just taken) -> count × hop finished samples."""
        span = overlap_add(synthesis_frames(masked[None], self.n_fft), self.hop)[0]
        span[: self.n_fft - self.hop] += self.ola_tail
        done = span[: len(span) - (self.n_fft - self.hop)].clone()
        self.ola_tail = span[len(done):].clone()
        before_start = self.delay - self.emitted  # the first frames reach back before the stream's start
        if before_start > 0:
            done[: min(before_start, len(done))] = 0.0
        self.emitted += len(done)
        return done

    def idle(self, samples: int) -> torch.Tensor:
        """Zeros for a step that had no frames to mask yet (the look-ahead is still filling)."""
        self.emitted += samples
        return torch.zeros(samples)
