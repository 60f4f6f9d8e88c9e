"""The DATA.md reference baseline (~1.4 M parameters): STFT log-magnitude, a causal conv and two GRU layers
FiLM-conditioned on the MiniLM prompt vector, a ratio mask, trained with −SI-SDR.

It uses the embedded model's STFT (16 kHz, n_fft 512, hop 256, sqrt-Hann) so the comparison differs only in
the network and the objective. Offline only; it exists to tell whether the embedded model earns its place.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from samstream.model.stft import clip_spectra, log_magnitude, overlap_add, synthesis_frames
from samstream.model.weights_file import config_from_dict, load_weights, save_weights


@dataclass
class BaselineConfig:
    sample_rate: int = 16000
    n_fft: int = 512
    hop: int = 256
    hidden: int = 256
    kernel: int = 3
    text_dim: int = 384

    @property
    def bins(self) -> int:
        return self.n_fft // 2 + 1


class FiLM(nn.Module):
    def __init__(self, cond_dim: int, dim: int):
        super().__init__()
        self.proj = nn.Linear(cond_dim, 2 * dim)

    def forward(self, h: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        gamma, beta = self.proj(cond)[:, None].chunk(2, dim=-1)
        return h * (1 + gamma) + beta


class BaselineModel(nn.Module):
    def __init__(self, config: BaselineConfig = BaselineConfig()):
        super().__init__()
        self.config = config
        bins, hidden = config.bins, config.hidden
        self.conv = nn.Conv1d(bins, hidden, config.kernel)
        self.film_in = FiLM(config.text_dim, hidden)
        self.gru1 = nn.GRU(hidden, hidden, batch_first=True)
        self.film_mid = FiLM(config.text_dim, hidden)
        self.gru2 = nn.GRU(hidden, hidden, batch_first=True)
        self.out = nn.Linear(hidden, bins)

    def mask(self, spectra: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        """spectra [B,T,bins] complex, text [B,text_dim] -> ratio mask [B,T,bins] (causal in T)."""
        features = log_magnitude(spectra).transpose(1, 2)
        h = self.conv(F.pad(features, (self.config.kernel - 1, 0))).transpose(1, 2)
        h = self.film_in(F.silu(h), text)
        h, _ = self.gru1(h)
        h = self.film_mid(h, text)
        h, _ = self.gru2(h)
        return torch.sigmoid(self.out(h))

    def separate_waveform(self, wav: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        """[B,S] mixture -> [B,S] target estimate."""
        c = self.config
        spectra = clip_spectra(wav, c)
        frames = synthesis_frames(spectra * self.mask(spectra, text), c.n_fft)
        overlap = c.n_fft - c.hop
        return overlap_add(frames, c.hop)[:, overlap : overlap + wav.shape[-1]]


def save_baseline(model: BaselineModel, path: str | Path, metadata: dict | None = None) -> None:
    save_weights(model, path, {"arch": "baseline", "config": asdict(model.config), **(metadata or {})})


def load_baseline(path: str | Path) -> BaselineModel:
    def build(config: dict) -> BaselineModel:
        return BaselineModel(config_from_dict(BaselineConfig, config, "baseline"))

    return load_weights(path, "the baseline", build, missing_hint=": train it with `samstream train --arch baseline`")


class BaselineSeparator:
    """Offline `Separator` around the baseline (text prompts only)."""

    def __init__(self, model: BaselineModel, text_vectors):
        self.model = model
        self.text_vectors = text_vectors  # callable: list[str] -> [B, text_dim]
        self.sample_rate = model.config.sample_rate

    @torch.inference_mode()
    def separate_model_rate(self, wav: torch.Tensor, prompt: str | None) -> np.ndarray:
        text = self.text_vectors([prompt or ""])
        return self.model.separate_waveform(wav[None], text)[0].numpy()
