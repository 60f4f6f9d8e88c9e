"""Frame-causal mask networks over the STFT: the voice picker, and a candidate for the general separator.

A ratio mask per STFT bin (model/stft.py: 16 kHz, n_fft 512, hop 256), predicted from log-magnitude features of
the current frame and `lookahead_frames` future ones by causal layers (convolutions over past frames, GRUs), and
conditioned by FiLM on one prompt vector: the sum of projections of what the prompt gives (a MiniLM sentence
vector, a GE2E speaker embedding, a learned audio-example encoding) or a learned null vector. Span prompts add
SAM-style anchor embeddings (<null>/+/-) to the frames. Trained with -SI-SDR of the waveform (the speech refiner:
-SNR, its level matters; model/training).

With `expert_input` the network is the speech refiner: it also hears the speech expert's estimate of the mixture
(model/speech_expert.py) and outputs g * estimate + h * mixture per bin, g in [0, 1.2] and h in [0, 1]; at
initialisation g = 1 and h = 0.05, so it starts as the expert and learns only what the expert gets wrong (what it
keeps of non-speech sound, what it wipes of speech, which voice a gendered prompt asks for).

Two bodies:
- "fullband": causal conv over frames, then GRU layers across the whole spectrum (one vector per frame);
- "bandsplit": the spectrum cut into bands (narrow at low frequencies), one vector per band and frame; each layer
  runs a GRU along time per band (causal, weights shared by the bands) and self-attention across the bands of
  each frame, so the network keeps frequency detail (band-split RNN, as DeepFilterNet's ERB bands do; attention
  across bands instead of a second RNN, because a GRU over 28 bands is 28 sequential steps per frame on a CPU).

Streaming: GRUs and convolutions carry explicit per-stream state (`MaskNetState`), so the streaming output
equals the offline run up to float rounding, at a fixed delay of (n_fft − hop) + lookahead × hop samples.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from samstream.model.anchors import NEGATIVE, NULL, PAD, POSITIVE, Span, span_frames, validate_span
from samstream.model.audio import check_sample_rate, to_mono
from samstream.model.errors import AudioInputError, ModelLoadError, PromptError
from samstream.model.mask_floor import Floor, check_floor, floor_per_bin
from samstream.model.polyphase import polyphase_resample
from samstream.model.stft import (StftStream, active_frames, analysis_frames, clip_spectra, log_magnitude,
                                  overlap_add, synthesis_frames, with_lookahead)
from samstream.model.weights_file import config_from_dict, load_weights, save_weights


@dataclass
class MaskNetConfig:
    sample_rate: int = 16000
    n_fft: int = 512
    hop: int = 256
    chunk_frames: int = 2  # frames per streaming step (the engine's hop: 512 samples, 32 ms)
    lookahead_frames: int = 0
    body: str = "fullband"  # or "bandsplit"
    hidden: int = 256  # fullband: GRU width
    layers: int = 2
    kernel: int = 3  # fullband: causal convolution over frames at the input
    band_edges: tuple[int, ...] = ()  # bandsplit: first bin of each band, then the end (); () = `default_bands`
    band_dim: int = 32
    cond_dim: int = 128
    text_dim: int = 384  # all-MiniLM-L6-v2 sentence vectors; 0 = no text prompts
    speaker_dim: int = 0  # GE2E speaker embeddings (256); 0 = none
    example: bool = True  # a learned encoder of audio-example prompts ("this sound")
    anchors: bool = True  # span prompts
    expert_input: bool = False  # the speech refiner (fullband body only): also hears the speech expert's estimate

    @classmethod
    def from_dict(cls, values: dict) -> "MaskNetConfig":
        values = dict(values)
        if "band_edges" in values:  # a tuple, saved as a JSON list
            values["band_edges"] = tuple(values["band_edges"])
        return config_from_dict(cls, values, "mask-network")

    @property
    def bins(self) -> int:
        return self.n_fft // 2 + 1

    @property
    def chunk_samples(self) -> int:
        return self.chunk_frames * self.hop

    @property
    def steps(self) -> int:
        """One network pass per chunk: the engine's "fewer sampling steps" leaves a mask network as it is."""
        return 1

    @property
    def delay_samples(self) -> int:
        return (self.n_fft - self.hop) + self.lookahead_frames * self.hop

    def edges(self) -> tuple[int, ...]:
        return self.band_edges or default_bands(self.bins)


def default_bands(bins: int) -> tuple[int, ...]:
    """Band edges (first bin of each band, then `bins`): at 16 kHz / 512 (31.25 Hz bins) 125 Hz bands up to 1 kHz,
    250 Hz to 3 kHz, 1 kHz to 7 kHz, then the rest -> 21 bands."""
    edges, start = [0], 0
    for width, stop in ((4, 32), (8, 96), (32, 224), (bins - 224, bins)):
        while start + width <= stop:
            start += width
            edges.append(start)
    if edges[-1] != bins:
        edges.append(bins)
    return tuple(edges)


class FiLM(nn.Module):
    def __init__(self, cond_dim: int, dim: int):
        super().__init__()
        self.proj = nn.Linear(cond_dim, 2 * dim)
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    def forward(self, h: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        """h [B, ..., dim], cond [B, cond_dim]."""
        gamma, beta = self.proj(cond).chunk(2, dim=-1)
        shape = (cond.shape[0],) + (1,) * (h.dim() - 2) + (h.shape[-1],)
        return h * (1 + gamma.reshape(shape)) + beta.reshape(shape)


class ExampleEncoder(nn.Module):
    """An example clip's log-magnitude frames -> one vector: frame MLP, mean+std pooling over active frames."""

    def __init__(self, bins: int, dim: int):
        super().__init__()
        self.frame = nn.Sequential(nn.Linear(bins, 2 * dim), nn.SiLU(), nn.Linear(2 * dim, dim))
        self.out = nn.Linear(2 * dim, dim)

    def forward(self, spectra: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        h = self.frame(log_magnitude(spectra))
        w = active_frames(spectra, valid).float().unsqueeze(-1)
        total = w.sum(1).clamp_min(1.0)
        mean = (h * w).sum(1) / total
        std = ((h - mean[:, None]).pow(2) * w).sum(1).div(total).add(1e-5).sqrt()
        return self.out(torch.cat([mean, std], dim=-1))


@dataclass
class Conditioning:
    """What a prompt gives, batched: rows without a part have valid=False there."""

    text: torch.Tensor | None = None  # [B, text_dim]
    text_valid: torch.Tensor | None = None  # [B] bool
    speaker: torch.Tensor | None = None  # [B, speaker_dim]
    speaker_valid: torch.Tensor | None = None
    example: torch.Tensor | None = None  # [B, S] clips at the model rate (zero padded)
    example_lengths: torch.Tensor | None = None  # [B]
    example_valid: torch.Tensor | None = None


class FullbandBody(nn.Module):
    def __init__(self, c: MaskNetConfig):
        super().__init__()
        self.kernel = c.kernel
        inputs = c.bins * (1 + c.lookahead_frames) * (2 if c.expert_input else 1)
        self.conv = nn.Conv1d(inputs, c.hidden, c.kernel)
        self.grus = nn.ModuleList(nn.GRU(c.hidden, c.hidden, batch_first=True) for _ in range(c.layers))
        self.films = nn.ModuleList(FiLM(c.cond_dim, c.hidden) for _ in range(c.layers + 1))
        self.anchor_proj = nn.Linear(c.cond_dim, c.hidden, bias=False)
        self.out = nn.Linear(c.hidden, c.bins * (2 if c.expert_input else 1))
        if c.expert_input:  # start as the expert: g = 1 (1.2 * sigmoid(1.609)), h = 0.047 (sigmoid(-3))
            nn.init.zeros_(self.out.weight)
            with torch.no_grad():
                self.out.bias[: c.bins] = math.log(5.0)
                self.out.bias[c.bins :] = -3.0

    def forward(self, features, anchors, cond, state=None):
        """features [B,T,F] (with look-ahead), anchors [B,T,cond_dim] -> mask logits [B,T,bins] (x 2 with the expert's
        estimate as an input), new state."""
        history = state["conv"] if state is not None else features.new_zeros(features.shape[0], self.kernel - 1,
                                                                             features.shape[-1])
        joined = torch.cat([history, features], dim=1)
        h = self.conv(joined.transpose(1, 2)).transpose(1, 2)
        h = self.films[0](F.silu(h) + self.anchor_proj(anchors), cond)
        hiddens = []
        for index, (gru, film) in enumerate(zip(self.grus, self.films[1:])):
            h0 = state["gru"][index] if state is not None else None
            y, hn = gru(h, h0)
            h = film(h + y, cond)
            hiddens.append(hn)
        new_state = {"conv": joined[:, joined.shape[1] - (self.kernel - 1):], "gru": hiddens}
        return self.out(h), new_state


class BandsplitBody(nn.Module):
    def __init__(self, c: MaskNetConfig):
        super().__init__()
        edges = c.edges()
        widths = [b - a for a, b in zip(edges[:-1], edges[1:])]
        count, width, dim = len(widths), max(widths), c.band_dim
        self.lookahead, self.bins = c.lookahead_frames, c.bins
        # Bands gathered into a [bands, width] grid (short bands padded), so every band's own projection runs as
        # one batched product instead of a Python loop over bands.
        index = torch.zeros(count, width, dtype=torch.long)
        valid = torch.zeros(count, width, dtype=torch.bool)
        for k, (start, w) in enumerate(zip(edges[:-1], widths)):
            index[k, :w] = torch.arange(start, start + w)
            valid[k, :w] = True
        self.register_buffer("index", index, persistent=False)
        self.register_buffer("valid", valid, persistent=False)
        self.register_buffer("grid_to_bins", valid.flatten().nonzero()[:, 0], persistent=False)
        inputs = width * (1 + self.lookahead)
        self.in_weight = nn.Parameter(torch.randn(count, inputs, dim) / inputs**0.5)
        self.in_bias = nn.Parameter(torch.zeros(count, dim))
        self.anchor_proj = nn.Linear(c.cond_dim, dim, bias=False)
        self.time_grus = nn.ModuleList(nn.GRU(dim, dim, batch_first=True) for _ in range(c.layers))
        self.band_mixers = nn.ModuleList(nn.MultiheadAttention(dim, 2, batch_first=True) for _ in range(c.layers))
        self.time_norms = nn.ModuleList(nn.LayerNorm(dim) for _ in range(c.layers))
        self.band_norms = nn.ModuleList(nn.LayerNorm(dim) for _ in range(c.layers))
        self.films = nn.ModuleList(FiLM(c.cond_dim, dim) for _ in range(c.layers + 1))
        self.out_hidden = nn.Parameter(torch.randn(count, dim, 2 * dim) / dim**0.5)
        self.out_hidden_bias = nn.Parameter(torch.zeros(count, 2 * dim))
        self.out_weight = nn.Parameter(torch.randn(count, 2 * dim, width) / (2 * dim) ** 0.5)
        self.out_bias = nn.Parameter(torch.zeros(count, width))

    def forward(self, features, anchors, cond, state=None):
        batch, frames, _ = features.shape
        parts = features.reshape(batch, frames, 1 + self.lookahead, self.bins)
        grid = parts[..., self.index] * self.valid  # [B,T,1+L,K,W]
        grid = grid.permute(0, 1, 3, 2, 4).reshape(batch, frames, self.index.shape[0], -1)
        h = torch.einsum("btki,kid->btkd", grid, self.in_weight) + self.in_bias
        h = self.films[0](h + self.anchor_proj(anchors)[:, :, None], cond)  # [B,T,K,D]
        count = h.shape[2]
        hiddens = []
        for index in range(len(self.time_grus)):
            along_time = h.permute(0, 2, 1, 3).reshape(batch * count, frames, -1)
            h0 = state["gru"][index] if state is not None else None
            y, hn = self.time_grus[index](self.time_norms[index](along_time), h0)
            hiddens.append(hn)
            h = h + y.reshape(batch, count, frames, -1).permute(0, 2, 1, 3)
            across = self.band_norms[index](h.reshape(batch * frames, count, -1))
            y, _ = self.band_mixers[index](across, across, across, need_weights=False)
            h = self.films[index + 1](h + y.reshape(batch, frames, count, -1), cond)
        hidden = F.silu(torch.einsum("btkd,kde->btke", h, self.out_hidden) + self.out_hidden_bias)
        grid = torch.einsum("btke,kew->btkw", hidden, self.out_weight) + self.out_bias
        return grid.reshape(batch, frames, -1)[..., self.grid_to_bins], {"gru": hiddens}


class MaskNet(nn.Module):
    def __init__(self, config: MaskNetConfig):
        super().__init__()
        self.config = c = config
        self.null = nn.Parameter(torch.randn(c.cond_dim) * 0.02)
        self.text_proj = nn.Linear(c.text_dim, c.cond_dim) if c.text_dim else None
        self.speaker_proj = nn.Linear(c.speaker_dim, c.cond_dim) if c.speaker_dim else None
        self.example_encoder = ExampleEncoder(c.bins, c.cond_dim) if c.example else None
        self.anchor_embed = nn.Embedding(4, c.cond_dim, padding_idx=PAD) if c.anchors else None
        if c.expert_input and c.body != "fullband":
            raise ModelLoadError("only the fullband body takes the speech expert's estimate as an input")
        if c.body == "fullband":
            self.body = FullbandBody(c)
        elif c.body == "bandsplit":
            self.body = BandsplitBody(c)
        else:
            raise ModelLoadError(f"unknown mask-network body {c.body!r} (fullband or bandsplit)")

    def condition(self, cond: Conditioning, batch: int) -> torch.Tensor:
        """The prompt vector [B, cond_dim]: null + every valid part's projection."""
        out = self.null.expand(batch, -1)
        parts = ((self.text_proj, cond.text, cond.text_valid), (self.speaker_proj, cond.speaker, cond.speaker_valid))
        for proj, value, valid in parts:
            if proj is not None and value is not None:
                out = out + proj(value) * _rows(valid, value)
        if self.example_encoder is not None and cond.example is not None:
            spectra = clip_spectra(cond.example, self.config)
            lengths = cond.example_lengths
            valid = (torch.arange(spectra.shape[1], device=spectra.device)[None] * self.config.hop
                     < lengths[:, None].to(spectra.device))
            out = out + self.example_encoder(spectra, valid) * _rows(cond.example_valid, spectra)
        return out

    def anchor_vectors(self, anchors: torch.Tensor) -> torch.Tensor:
        if self.anchor_embed is None:
            return anchors.new_zeros(*anchors.shape, self.config.cond_dim, dtype=torch.float32)
        return self.anchor_embed(anchors)

    def estimate(self, spectra: torch.Tensor, anchors: torch.Tensor, prompt: torch.Tensor, state=None,
                 expert_spectra: torch.Tensor | None = None, floor: torch.Tensor | None = None,
                 weight: torch.Tensor | None = None):
        """spectra [B, T + lookahead, bins] complex, anchors [B,T], prompt [B,cond_dim] (and, for the refiner, the
        expert estimate's spectra, framed alike) -> the target's spectra [B,T,bins], state. `floor` [B, bins]: the
        share of the input each row keeps at least (model/mask_floor.py); `weight` [B, bins]: each row's share in
        a blend of networks."""
        features = log_magnitude(spectra)
        if self.config.expert_input:
            if expert_spectra is None:
                raise PromptError("the speech refiner needs the speech expert's estimate beside the mixture")
            features = torch.cat([features, log_magnitude(expert_spectra)], dim=-1)
        features = with_lookahead(features, self.config.lookahead_frames)
        logits, state = self.body(features, self.anchor_vectors(anchors), prompt, state)
        mixture = spectra[:, : logits.shape[1]]
        if not self.config.expert_input:
            target = mixture * torch.sigmoid(logits)
        else:
            keep, add = logits.chunk(2, dim=-1)
            target = 1.2 * torch.sigmoid(keep) * expert_spectra[:, : logits.shape[1]] + torch.sigmoid(add) * mixture
        if floor is not None:
            target = floor[:, None, :] * mixture + (1.0 - floor[:, None, :]) * target
        if weight is not None:
            target = weight[:, None, :] * target
        return target, state

    def separate_waveform(self, wav: torch.Tensor, anchors: torch.Tensor, prompt: torch.Tensor,
                          expert: torch.Tensor | None = None, floor: torch.Tensor | None = None) -> torch.Tensor:
        """Training / offline form: [B,S] mixtures, anchors [B,T] (T = S // hop frames), prompt [B,cond_dim] (and
        [B,S] expert estimates, aligned with the mixtures, for the refiner) -> [B,S] target estimates, aligned with
        the input."""
        c = self.config
        count, samples = wav.shape
        overlap = c.n_fft - c.hop
        frames = -(-(samples + overlap) // c.hop)
        pad = (overlap, (frames + c.lookahead_frames - 1) * c.hop + c.n_fft - overlap - samples)
        spectra = analysis_frames(F.pad(wav, pad), c.n_fft, c.hop)
        expert_spectra = analysis_frames(F.pad(expert, pad), c.n_fft, c.hop) if expert is not None else None
        if anchors.shape[1] < frames:
            anchors = F.pad(anchors, (0, frames - anchors.shape[1]), value=NULL)
        target, _ = self.estimate(spectra, anchors[:, :frames], prompt, expert_spectra=expert_spectra, floor=floor)
        out = overlap_add(synthesis_frames(target, c.n_fft), c.hop)
        return out[:, overlap : overlap + samples]


def _rows(valid: torch.Tensor | None, like: torch.Tensor) -> torch.Tensor:
    if valid is None:
        return like.new_ones(like.shape[0], 1)
    return valid.to(like.device, like.dtype if like.is_floating_point() else torch.float32)[:, None]


# -- separator: offline and streaming -----------------------------------------------------------------------------
@dataclass
class MaskNetState:
    """One stream (explicit, moshi-style)."""

    prompt: torch.Tensor  # [1, cond_dim]
    anchors: list[tuple[int, range]]
    stft: StftStream
    network: dict | None = None  # the body's recurrent / convolution state, batch of 1
    next_frame: int = 0
    mixture_delay: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))
    expert_stft: StftStream | None = None  # the speech refiner's: the expert estimate's frames
    mask_floor: Floor = 0.0  # the share of the mixture this session keeps at least (model/mask_floor.py)
    mask_weight: Floor = 1.0  # the share of this network's output in a blend of general networks (composite.Blend)


class MaskNetSeparator:
    """Offline and chunk-step streaming API of a `MaskNet` (the same shape as `EmbeddedSeparator`'s; `steps` is
    accepted and ignored: one network pass per chunk)."""

    def __init__(self, model: MaskNet, text_vectors=None, mask_floor: Floor = 0.0):
        self.model = model.eval()
        self.config = model.config
        self.sample_rate = self.config.sample_rate
        self.chunk_samples = self.config.chunk_samples
        self.delay_samples = self.config.delay_samples
        self.mask_floor = check_floor(mask_floor, "mask_floor")  # every session's unless init_stream gives one
        self._text_vectors = text_vectors  # callable list[str] -> [N, text_dim]; MiniLM by default

    def text_vectors(self, prompts: Sequence[str]) -> torch.Tensor:
        if self._text_vectors is None:
            from samstream.model.text import MiniLMTextEncoder, PromptCache

            cache = PromptCache(MiniLMTextEncoder())
            self._text_vectors = lambda texts: cache.get(list(texts))[0][:, 0]
        return self._text_vectors(list(prompts))

    @torch.inference_mode()
    def prompt_vector(self, prompt: str | None = None, example=None, speaker: np.ndarray | None = None) -> torch.Tensor:
        """[1, cond_dim]. `example` is a clip at the model rate or a (clip, rate) pair; `speaker` a speaker
        embedding (for networks conditioned on one)."""
        c = self.config
        cond = Conditioning()
        if prompt is not None and c.text_dim:
            cond.text, cond.text_valid = self.text_vectors([prompt]), torch.ones(1, dtype=torch.bool)
        if speaker is not None:
            if not c.speaker_dim:
                raise PromptError("this mask network takes no speaker embedding")
            cond.speaker = torch.as_tensor(np.asarray(speaker, np.float32))[None]
            cond.speaker_valid = torch.ones(1, dtype=torch.bool)
        if example is not None and c.example:
            clip, rate = example if isinstance(example, tuple) else (example, self.sample_rate)
            clip = polyphase_resample(to_mono(clip).numpy(), check_sample_rate(rate), self.sample_rate)
            cond.example = torch.from_numpy(clip)[None]
            cond.example_lengths, cond.example_valid = torch.tensor([len(clip)]), torch.ones(1, dtype=torch.bool)
        return self.model.condition(cond, 1)

    def anchor_list(self, spans: Sequence[Span]) -> list[tuple[int, range]]:
        if spans and not self.config.anchors:
            raise PromptError("this mask network takes no span prompts")
        ids = {"+": POSITIVE, "-": NEGATIVE}
        return [(ids[token], span_frames(start, end, self.sample_rate, self.config.hop))
                for token, start, end in map(validate_span, spans)]

    @staticmethod
    def anchor_ids(anchors: list[tuple[int, range]], first: int, count: int) -> torch.Tensor:
        ids = torch.full((count,), NULL, dtype=torch.long)
        for token, frames in anchors:
            lo, hi = max(frames.start, first), min(frames.stop, first + count)
            if lo < hi:
                ids[lo - first : hi - first] = token
        return ids

    # -- offline --------------------------------------------------------------------------------------------
    @torch.inference_mode()
    def separate_model_rate(self, wav, prompt: str | None = None, spans: Sequence[Span] = (), example=None,
                            speaker: np.ndarray | None = None) -> np.ndarray:
        """Target [S] for a model-rate mono waveform [S] (the offline causal run)."""
        wav = torch.as_tensor(np.asarray(wav, np.float32))
        frames = -(-(len(wav) + self.config.n_fft - self.config.hop) // self.config.hop)
        anchors = self.anchor_ids(self.anchor_list(spans), 0, frames)[None]
        vector = self.prompt_vector(prompt, example, speaker)
        floor = self._per_bin([self.mask_floor], 0.0)
        return self.model.separate_waveform(wav[None], anchors, vector, floor=floor)[0].numpy()

    def _per_bin(self, shares: list[Floor], neutral: float) -> torch.Tensor | None:
        """Per-row floors or blend weights as shares per bin [N, bins]; None when every row's is `neutral` (no
        floor, the whole output)."""
        if all(share == neutral for share in shares):
            return None
        c = self.config
        return torch.stack([floor_per_bin(share, c.bins, self.sample_rate, c.n_fft) for share in shares])

    # -- streaming ------------------------------------------------------------------------------------------
    def init_stream(self, prompt: str | None = None, spans: Sequence[Span] = (), example=None,
                    example_rate: int | None = None, speaker: np.ndarray | None = None,
                    mask_floor: Floor | None = None, mask_weight: Floor = 1.0) -> MaskNetState:
        """A stream for this prompt; `mask_floor` overrides the separator's for this session; `mask_weight` is its
        output's share in a blend of networks."""
        if prompt is None and not spans and example is None and speaker is None:
            raise PromptError("give a prompt: text, a time span, an audio example or a speaker embedding")
        if example is not None and not isinstance(example, tuple):
            example = (example, example_rate or self.sample_rate)
        c = self.config
        return MaskNetState(prompt=self.prompt_vector(prompt, example, speaker), anchors=self.anchor_list(spans),
                            stft=StftStream(c.n_fft, c.hop, c.lookahead_frames),
                            mixture_delay=np.zeros(self.delay_samples, np.float32),
                            expert_stft=StftStream(c.n_fft, c.hop, c.lookahead_frames) if c.expert_input else None,
                            mask_floor=check_floor(self.mask_floor if mask_floor is None else mask_floor, "mask_floor"),
                            mask_weight=check_floor(mask_weight, "mask_weight"))

    def set_prompt(self, state: MaskNetState, prompt: str | None = None, spans: Sequence[Span] = (), example=None,
                   example_rate: int | None = None, speaker: np.ndarray | None = None,
                   mask_floor: Floor | None = None, mask_weight: Floor = 1.0) -> None:
        """A new prompt from the next chunk on; the recurrent state carries on (the engine crossfades)."""
        fresh = self.init_stream(prompt, spans, example, example_rate, speaker, mask_floor, mask_weight)
        state.prompt, state.anchors = fresh.prompt, fresh.anchors
        state.mask_floor, state.mask_weight = fresh.mask_floor, fresh.mask_weight

    @torch.inference_mode()
    def stream_step(self, states: list[MaskNetState], chunk: np.ndarray, steps: int | None = None,
                    expert: np.ndarray | None = None) -> np.ndarray:
        """[N, chunk_samples] -> [N, 2, chunk_samples] (target, residual), delayed by `delay_samples`. The speech
        refiner also takes `expert`: the expert's estimate of the same chunk [N, chunk_samples]."""
        c = self.config
        chunk = np.asarray(chunk, dtype=np.float32)
        if chunk.shape != (len(states), self.chunk_samples):
            raise AudioInputError(f"stream_step needs a chunk of shape [{len(states)}, {self.chunk_samples}], "
                                  f"got {tuple(chunk.shape)}")
        if c.expert_input and (expert is None or np.shape(expert) != chunk.shape):
            raise AudioInputError(f"the speech refiner needs the expert's estimate of the chunk, shape {chunk.shape}")
        StftStream.analyse(states[0].stft, torch.from_numpy(chunk), [s.stft for s in states])
        if c.expert_input:
            StftStream.analyse(states[0].expert_stft, torch.from_numpy(np.asarray(expert, np.float32)),
                               [s.expert_stft for s in states])
        ready = [i for i, s in enumerate(states) if s.stft.ready() >= c.chunk_frames]
        targets = np.zeros((len(states), self.chunk_samples), np.float32)
        if ready:
            group = [states[i] for i in ready]
            spectra = torch.stack([s.stft.take(c.chunk_frames) for s in group])
            anchors = torch.stack([self.anchor_ids(s.anchors, s.next_frame, c.chunk_frames) for s in group])
            prompt = torch.cat([s.prompt for s in group])
            expert_spectra = (torch.stack([s.expert_stft.take(c.chunk_frames) for s in group]) if c.expert_input
                              else None)
            target, network = self.model.estimate(spectra, anchors, prompt, _batch_states([s.network for s in group]),
                                                  expert_spectra, self._per_bin([s.mask_floor for s in group], 0.0),
                                                  self._per_bin([s.mask_weight for s in group], 1.0))
            for row, state in enumerate(group):
                state.network = _row_state(network, row, len(group))
                state.next_frame += c.chunk_frames
                targets[ready[row]] = state.stft.synthesise(target[row]).numpy()
        for i, state in enumerate(states):
            if i not in ready:
                targets[i] = state.stft.idle(self.chunk_samples).numpy()
        out = np.empty((len(states), 2, self.chunk_samples), np.float32)
        for i, state in enumerate(states):
            delayed = np.concatenate([state.mixture_delay, chunk[i]])
            state.mixture_delay = delayed[self.chunk_samples:]
            out[i, 0] = targets[i]
            out[i, 1] = delayed[: self.chunk_samples] - targets[i]
        return out


def _batch_states(states: list[dict | None]) -> dict | None:
    """Per-stream body states (None = fresh, i.e. zeros) -> one batched state. GRU hiddens are [1, k, dim] per
    stream (k = 1 fullband, k = bands bandsplit) and batch along dim 1; the conv history along dim 0."""
    if all(s is None for s in states):
        return None
    template = next(s for s in states if s is not None)
    filled = [s if s is not None else {key: ([torch.zeros_like(h) for h in value] if key == "gru"
                                             else torch.zeros_like(value)) for key, value in template.items()}
              for s in states]
    batched = {"gru": [torch.cat([s["gru"][i] for s in filled], dim=1) for i in range(len(template["gru"]))]}
    if "conv" in template:
        batched["conv"] = torch.cat([s["conv"] for s in filled], dim=0)
    return batched


def _row_state(state: dict, row: int, batch: int) -> dict:
    """Stream `row`'s slice of a batched body state."""
    out = {"gru": [h[:, row * (h.shape[1] // batch) : (row + 1) * (h.shape[1] // batch)].clone() for h in state["gru"]]}
    if "conv" in state:
        out["conv"] = state["conv"][row : row + 1].clone()
    return out


# -- weights ------------------------------------------------------------------------------------------------------
def save_masknet(model: MaskNet, path: str | Path, metadata: dict | None = None) -> None:
    """Weights as safetensors + `<stem>.json` (arch, config, metadata) beside them."""
    save_weights(model, path, {"arch": "masknet", **(metadata or {}), "config": asdict(model.config)})


def load_masknet(path: str | Path) -> MaskNet:
    return load_weights(path, "the mask network", lambda config: MaskNet(MaskNetConfig.from_dict(config)))


def load_deeper(model: MaskNet, weights: dict[str, torch.Tensor]) -> None:
    """Start a fullband network from the weights of a shallower one (`samstream train --init WEIGHTS
    --model-config '{"layers": N}'`): every tensor loads where it was, and the extra GRU layers, appended after the
    loaded ones, start at zero. A zero GRU's output stays 0 (its candidate state is tanh(0) = 0) and a new FiLM starts
    as the identity, so each new residual branch adds nothing: the deeper network computes exactly what the
    shallower one did, and training grows it from there (the gradient into a zero GRU's input weights is not 0)."""
    c = model.config
    loaded = len({key.split(".")[2] for key in weights if key.startswith("body.grus.")})
    if c.body != "fullband" or loaded > c.layers:
        raise ModelLoadError(f"weights of {loaded} fullband GRU layers cannot start a {c.body} network of {c.layers}: "
                             "only a fullband network as deep or deeper takes them")
    added = range(loaded, c.layers)
    new = {f"body.grus.{i}." for i in added} | {f"body.films.{i + 1}." for i in added}
    missing, unexpected = model.load_state_dict(weights, strict=False)
    strays = unexpected + [key for key in missing if not any(key.startswith(prefix) for prefix in new)]
    if strays:
        raise ModelLoadError(f"the weights do not fit this mask network apart from its depth: {strays[:5]}")
    with torch.no_grad():
        for gru in model.body.grus[loaded:]:
            for parameter in gru.parameters():
                parameter.zero_()
