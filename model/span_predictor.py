"""PE-A-Frame, SAM Audio's span predictor: which latent frames does a text prompt describe?

A clean-room re-implementation of perception_models `PEAudioFrame` (`core/audio_visual_encoder/pe.py`,
`audio_codec.py`, `config.py`) with its state-dict layout: `text_model.*` (ModernBERT, model/modernbert.py),
`audio_model.{data_proj, dac_vae_encoder, audio_transformer}`, `text_head`, `audio_head`, `logit_scale`,
`logit_bias`. Dimensions come from the checkpoint's config.json (`PEAudioFrameConfig` layout).

SAM Audio calls it on the mixture's DACVAE latents it already computed ([B,T,128], the waveform path
through PE-A-Frame's own DAC encoder is bypassed) with the audio padding mask, and turns the result into
"+" anchors. What the official code does, reproduced here (../shared/parity/extras/README.md §1):
- text embedding = text_head(hidden_states[nth_text_layer][:, 0]) (the [CLS] row, no final norm);
  audio embedding per frame = audio_head(PE-AV transformer rows 1:); both heads are LayerNorm(eps 1e-6)
  + a bias-free Linear;
- logit = <audio_t, text> * logit_scale + logit_bias with **no** normalisation and logit_scale used
  **raw** (not exp'd); a frame is a hit when sigmoid(logit) > threshold (0.3, strict);
- padded frames are not masked at the output, so spans may run into padding;
- spans are the runs of hits as [start, end) frames, converted to seconds as `int64 * hop / rate` in
  torch, i.e. **float32** seconds (frame 7 -> 0.2800000011920929). SAM's anchor conversion
  ceil(t * sr / hop) then shifts a boundary by +1 frame whenever float32(k/25) > k/25 and can drop
  one-frame spans; `anchor_spans` keeps that, so offline `--predict-spans` equals the official pipeline.
The waveform path (own DAC encoder, HF `DacEncoder` layout without weight norm, reflect padding to a hop
multiple, mask = padding_mask[:, ::hop]) is implemented too: its weights are in every checkpoint.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from samstream.model.dacvae import Snake1d
from samstream.model.modernbert import ModernBertConfig, ModernBertEncoder
from samstream.model.peav import PEAVTransformer, PEAVTransformerConfig

DEFAULT_THRESHOLD = 0.3

# The text model the official PEAudioFrameConfig uses when config.json names none (perception_models config.py).
DEFAULT_TEXT_MODEL = {
    "global_attn_every_n_layers": 3, "global_rope_theta": 160000.0, "hidden_size": 1024, "intermediate_size": 2624,
    "local_rope_theta": 10000.0, "num_attention_heads": 16, "num_hidden_layers": 28,
}
# The DAC encoder when config.json names none: the SAM Audio codec's geometry (48 kHz, hop 1920, C = 128).
DEFAULT_DAC = {"encoder_hidden_size": 64, "downsampling_ratios": [2, 8, 10, 12], "codebook_size": 1024,
               "codebook_dim": 128, "sampling_rate": 48000}


@dataclass(frozen=True)
class DacEncoderConfig:
    """HF `DacConfig` fields of PE-A-Frame's own encoder, with the HF defaults for missing keys."""

    encoder_hidden_size: int = 64
    downsampling_ratios: tuple[int, ...] = (2, 4, 8, 8)
    codebook_size: int = 1024  # the bottleneck's input width (upstream passes codebook_size, not hidden_size)
    codebook_dim: int = 8  # C, the latent channels
    sampling_rate: int = 16000
    hidden_size: int | None = None  # output width of the encoder; defaults to encoder_hidden_size * 2^blocks

    @classmethod
    def from_dict(cls, values: dict) -> "DacEncoderConfig":
        known = {"encoder_hidden_size", "downsampling_ratios", "codebook_size", "codebook_dim", "sampling_rate",
                 "hidden_size"}
        kept = {k: v for k, v in values.items() if k in known}
        if "downsampling_ratios" in kept:
            kept["downsampling_ratios"] = tuple(kept["downsampling_ratios"])
        return cls(**kept)

    @property
    def output_width(self) -> int:
        return self.hidden_size or self.encoder_hidden_size * 2 ** len(self.downsampling_ratios)

    @property
    def hop_length(self) -> int:
        return math.prod(self.downsampling_ratios)


@dataclass(frozen=True)
class PEAudioFrameConfig:
    """The official `PEAudioFrameConfig(**config.json)`."""

    dac: DacEncoderConfig = field(default_factory=lambda: DacEncoderConfig.from_dict(DEFAULT_DAC))
    audio_transformer: PEAVTransformerConfig = field(default_factory=PEAVTransformerConfig)
    text_model: ModernBertConfig = field(default_factory=lambda: ModernBertConfig.from_dict(DEFAULT_TEXT_MODEL))
    output_dim: int = 1024
    nth_text_layer: int | None = 22

    @classmethod
    def from_dict(cls, values: dict) -> "PEAudioFrameConfig":
        audio = values.get("audio_model") or {}
        # As upstream: a missing or empty sub-config means the defaults, a given one is taken as it is.
        dac = DacEncoderConfig.from_dict(audio.get("dac_vae_encoder") or DEFAULT_DAC)
        config = cls(
            dac=dac,
            audio_transformer=PEAVTransformerConfig.from_dict(audio.get("audio_transformer")),
            text_model=ModernBertConfig.from_dict(values.get("text_model") or DEFAULT_TEXT_MODEL),
            output_dim=int(values.get("output_dim", 1024)),
            nth_text_layer=values.get("nth_text_layer", 22),
        )
        if dac.output_width != dac.codebook_size:
            raise ValueError(f"PE-A-Frame DAC encoder: its output width {dac.output_width} must equal codebook_size "
                             f"{dac.codebook_size} (the bottleneck's input)")
        return config

    @property
    def seconds_per_frame(self) -> float:
        return self.dac.hop_length / self.dac.sampling_rate


# -- PE-A-Frame's own DAC encoder (HF DacEncoder layout, plain convolutions) ----------------------------------

class DacResidualUnit(nn.Module):
    def __init__(self, width: int, dilation: int):
        super().__init__()
        self.snake1 = Snake1d(width)
        self.conv1 = nn.Conv1d(width, width, kernel_size=7, dilation=dilation, padding=3 * dilation)
        self.snake2 = Snake1d(width)
        self.conv2 = nn.Conv1d(width, width, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(self.snake2(self.conv1(self.snake1(x))))


class DacEncoderBlock(nn.Module):
    def __init__(self, width: int, stride: int):
        super().__init__()
        half = width // 2
        self.res_unit1 = DacResidualUnit(half, 1)
        self.res_unit2 = DacResidualUnit(half, 3)
        self.res_unit3 = DacResidualUnit(half, 9)
        self.snake1 = Snake1d(half)
        self.conv1 = nn.Conv1d(half, width, kernel_size=2 * stride, stride=stride, padding=math.ceil(stride / 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv1(self.snake1(self.res_unit3(self.res_unit2(self.res_unit1(x)))))


class DacEncoder(nn.Module):
    def __init__(self, config: DacEncoderConfig):
        super().__init__()
        width = config.encoder_hidden_size
        self.conv1 = nn.Conv1d(1, width, kernel_size=7, padding=3)
        blocks = []
        for stride in config.downsampling_ratios:
            width *= 2
            blocks.append(DacEncoderBlock(width, stride))
        self.block = nn.ModuleList(blocks)
        self.snake1 = Snake1d(width)
        self.conv2 = nn.Conv1d(width, config.output_width, kernel_size=3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv1(x)
        for block in self.block:
            x = block(x)
        return self.conv2(self.snake1(x))


class Bottleneck(nn.Module):
    def __init__(self, width: int, channels: int):
        super().__init__()
        self.in_proj = nn.Conv1d(width, 2 * channels, kernel_size=1)
        self.out_proj = nn.Conv1d(channels, width, kernel_size=1)  # in the checkpoint, never used


class DacEncoderVAE(nn.Module):
    def __init__(self, config: DacEncoderConfig):
        super().__init__()
        self.config = config
        self.encoder = DacEncoder(config)
        self.bottleneck = Bottleneck(config.codebook_size, config.codebook_dim)

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        """[B,1,S] -> VAE mean [B,C,ceil(S/hop)] (reflect-padded on the right to a hop multiple)."""
        pad = -waveform.shape[-1] % self.config.hop_length
        if pad:
            waveform = F.pad(waveform, (0, pad), mode="reflect")
        return self.bottleneck.in_proj(self.encoder(waveform))[:, : self.config.codebook_dim]


class AudioModel(nn.Module):
    def __init__(self, config: PEAudioFrameConfig):
        super().__init__()
        self.data_proj = nn.Linear(config.dac.codebook_dim, config.audio_transformer.hidden_size)
        self.dac_vae_encoder = DacEncoderVAE(config.dac)
        self.audio_transformer = PEAVTransformer(config.audio_transformer)

    def forward(self, features: torch.Tensor, valid: torch.Tensor | None) -> torch.Tensor:
        """Latent frames [B,T,C] -> [B,T,D] (the class token's row is dropped)."""
        return self.audio_transformer(self.data_proj(features), valid)[:, 1:]


class ContrastiveHead(nn.Module):
    def __init__(self, in_dim: int, out_dim: int):
        super().__init__()
        self.layer_norm = nn.LayerNorm(in_dim, eps=1e-6)
        self.proj = nn.Linear(in_dim, out_dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(self.layer_norm(x))


class PEAudioFrame(nn.Module):
    def __init__(self, config: PEAudioFrameConfig):
        super().__init__()
        self.config = config
        self.logit_scale = nn.Parameter(torch.zeros(1))
        self.logit_bias = nn.Parameter(torch.zeros(1))
        self.text_model = ModernBertEncoder(config.text_model, config.nth_text_layer,
                                            final_norm=config.nth_text_layer is None)
        self.audio_model = AudioModel(config)
        self.text_head = ContrastiveHead(config.text_model.hidden_size, config.output_dim)
        self.audio_head = ContrastiveHead(config.audio_transformer.hidden_size, config.output_dim)

    def embed_text(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Token ids [B,L] -> [B, output_dim]."""
        return self.text_head(self.text_model(input_ids, attention_mask)[:, 0])

    def embed_audio(self, features: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
        """DACVAE latent frames [B,T,C] (True = valid frame in `valid` [B,T]) -> per-frame [B,T,output_dim]."""
        return self.audio_head(self.audio_model(features, valid))

    def encode_waveform(self, waveform: torch.Tensor, padding_mask: torch.Tensor | None = None
                        ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The waveform path: [B,1,S] (sample mask [B,S]) -> latent frames [B,T,C] and the strided frame mask."""
        features = self.audio_model.dac_vae_encoder(waveform).transpose(1, 2)
        valid = padding_mask[:, :: self.config.dac.hop_length] if padding_mask is not None else None
        return features, valid

    def logits(self, audio_embeds: torch.Tensor, text_embeds: torch.Tensor) -> torch.Tensor:
        """[B,T,E] x [B,E] -> [B,T]: unnormalised dot product, raw logit_scale (as upstream, not exp'd)."""
        unscaled = (audio_embeds @ text_embeds[:, :, None]).squeeze(-1)
        return unscaled * self.logit_scale + self.logit_bias


# -- from frame probabilities to spans -----------------------------------------------------------------------

def runs(hits: torch.Tensor) -> list[list[tuple[int, int]]]:
    """Bool [B,T] -> per item the runs of True as [start, end) frame pairs."""
    edges = torch.diff(F.pad(hits.int(), (1, 1)), dim=1)
    out = []
    for row in edges:
        starts = (row == 1).nonzero().flatten().tolist()
        ends = (row == -1).nonzero().flatten().tolist()
        out.append(list(zip(starts, ends)))
    return out


def frames_to_seconds(spans: list[tuple[int, int]], hop: int, sample_rate: int) -> list[tuple[float, float]]:
    """As upstream: int64 frames * hop / rate computed by torch in float32, then turned into Python floats."""
    if not spans:
        return []
    seconds = torch.tensor(spans, dtype=torch.int64) * hop / sample_rate  # true division -> float32
    return [tuple(pair) for pair in seconds.tolist()]


@dataclass
class SpanPrediction:
    probabilities: torch.Tensor  # [B,T] float32
    frames: list[list[tuple[int, int]]]  # per item: [start, end) frame runs with probability > threshold
    seconds: list[list[tuple[float, float]]]  # the same in float32 seconds, as the official output

    def anchor_spans(self) -> list[list[tuple[str, float, float]]]:
        """"+" anchors in seconds, exactly what the official `predict_spans` hands to `process_anchors`."""
        return [[("+", start, end) for start, end in item] for item in self.seconds]


class SpanPredictor:
    """PE-A-Frame with its tokenizer: text prompt + mixture latents -> spans. Text embeddings are cached per
    prompt (a streaming session asks for the same prompt every window)."""

    def __init__(self, model: PEAudioFrame, tokenizer, threshold: float = DEFAULT_THRESHOLD, cache_size: int = 64):
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.threshold = threshold
        self.cache_size = cache_size
        self._text_cache: dict[str, torch.Tensor] = {}

    @property
    def latent_channels(self) -> int:
        return self.model.config.dac.codebook_dim

    @property
    def seconds_per_frame(self) -> float:
        return self.model.config.seconds_per_frame

    @torch.inference_mode()
    def text_embeddings(self, texts: list[str]) -> torch.Tensor:
        missing = [t for t in dict.fromkeys(texts) if t not in self._text_cache]
        if missing:
            tokens = self.tokenizer(missing, return_tensors="pt", padding="longest", truncation=True, max_length=512)
            device = self.model.logit_scale.device
            embeds = self.model.embed_text(tokens["input_ids"].to(device), tokens["attention_mask"].to(device))
            for text, row in zip(missing, embeds):
                self._text_cache[text] = row
            while len(self._text_cache) > self.cache_size:
                self._text_cache.pop(next(iter(self._text_cache)))
        return torch.stack([self._text_cache[t] for t in texts])

    @torch.inference_mode()
    def probabilities(self, latents: torch.Tensor, valid: torch.Tensor | None, texts: list[str]) -> torch.Tensor:
        """Mixture latents [B,T,C] (the DACVAE mean SAM Audio computed), frame mask [B,T] -> probabilities [B,T]."""
        if latents.shape[-1] != self.latent_channels:
            raise ValueError(f"the span predictor reads {self.latent_channels}-channel latents, got {latents.shape[-1]}")
        weight = self.model.logit_scale
        audio = self.model.embed_audio(latents.to(weight.device, weight.dtype), valid)
        return self.model.logits(audio, self.text_embeddings(texts)).float().sigmoid().cpu()

    def predict(self, latents: torch.Tensor, valid: torch.Tensor | None, texts: list[str]) -> SpanPrediction:
        probabilities = self.probabilities(latents, valid, texts)
        frames = runs(probabilities > self.threshold)
        dac = self.model.config.dac
        seconds = [frames_to_seconds(item, dac.hop_length, dac.sampling_rate) for item in frames]
        return SpanPrediction(probabilities, frames, seconds)
