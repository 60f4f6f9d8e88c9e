"""The SAM Audio Judge: a reference-free score of a separation (overall, recall, precision, faithfulness).

A clean-room re-implementation of sam-audio `sam_audio/model/judge.py` (`SAMAudioJudgeModel`) and of the
audio path of its processor, with the official state-dict layout: `audio_codec.{encoder,quantizer}` (the
DACVAE encoder and bottleneck, legacy weight norm; `quantizer.out_proj` is stored and unused),
`data_proj`, `transformer` and `finetune_transformer` (PE-AV, model/peav.py), `text_model` (ModernBERT,
model/modernbert.py), `cat_audio_proj`, `text_proj1`, `text_proj2`, `layer_norm`, `proj_audio_and_text`,
`finetune_data_proj`, `head`, and the de-normalisation `mean` / `std` ([4] each).

The official numbers are reproduced, quirks included (../shared/parity/extras/README.md §2):
- **the padding mask never reaches the transformers.** Upstream passes it as `padding_mask=` to a
  forward whose parameter is `attention_mask`, so it is swallowed: padded frames (zeros in the codec
  input) take part in the GroupNorm statistics and in attention. Only the final mean over frames is
  masked. We do the same, because the released weights were trained and evaluated that way (honouring
  the mask would move `overall` by ~5e-3 on the parity model);
- processor: each waveform is reflect-padded to a hop multiple, then zero-padded to the longest; the
  reflect-padded samples count as valid, and the frame mask is the strided pick padding_mask[:, ::hop];
- mixture and candidate go through the first transformer as one batch, and are fused **candidate
  first**: cat_audio_proj(cat([candidate, mixture])); the text (text_proj1 of the [CLS] row of
  hidden_states[nth], LayerNorm(text_proj2(.))) is broadcast over frames and fused by proj_audio_and_text;
- scores = masked mean over frames of head(finetune_transformer rows 1:) * std + mean.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from samstream.model.dacvae import Encoder, VAEBottleneck
from samstream.model.errors import AudioInputError
from samstream.model.modernbert import ModernBertConfig, ModernBertEncoder
from samstream.model.peav import PEAVTransformer, PEAVTransformerConfig

SCORE_NAMES = ("overall", "recall", "precision", "faithfulness")


@dataclass(frozen=True)
class JudgeCodecConfig:
    """The encoder half of the official DACVAEConfig (the Judge never decodes); defaults = SAM Audio's codec."""

    encoder_dim: int = 64
    encoder_rates: tuple[int, ...] = (2, 8, 10, 12)
    latent_dim: int = 1024
    codebook_dim: int = 128
    sample_rate: int = 48000

    @classmethod
    def from_dict(cls, values: dict | None) -> "JudgeCodecConfig":
        values = values or {}
        decoder_only = {"decoder_dim", "decoder_rates", "n_codebooks", "codebook_size", "quantizer_dropout"}
        unknown = sorted(set(values) - {"encoder_dim", "encoder_rates", "latent_dim", "codebook_dim", "sample_rate",
                                        "mean", "std"} - decoder_only)
        if unknown:
            raise ValueError(f"unknown audio_codec config keys {unknown}")
        if values.get("mean", 0.0) != 0.0 or values.get("std", 1.0) != 1.0:
            raise ValueError("audio_codec mean/std other than 0/1 are not supported")
        kept = {k: v for k, v in values.items() if k in {"encoder_dim", "latent_dim", "codebook_dim", "sample_rate"}}
        if "encoder_rates" in values:
            kept["encoder_rates"] = tuple(values["encoder_rates"])
        return cls(**kept)

    @property
    def hop_length(self) -> int:
        return math.prod(self.encoder_rates)


@dataclass(frozen=True)
class JudgeConfig:
    """The official `SAMAudioJudgeConfig(**config.json)`; a missing sub-config means its code defaults."""

    audio_codec: JudgeCodecConfig = field(default_factory=JudgeCodecConfig)
    transformer: PEAVTransformerConfig = field(default_factory=PEAVTransformerConfig)
    finetune_transformer: PEAVTransformerConfig = field(default_factory=PEAVTransformerConfig)
    text_model: ModernBertConfig = field(default_factory=ModernBertConfig)
    nth_text_layer: int | None = 22
    bottleneck_dim: int = 256

    @classmethod
    def from_dict(cls, values: dict) -> "JudgeConfig":
        return cls(
            audio_codec=JudgeCodecConfig.from_dict(values.get("audio_codec")),
            transformer=PEAVTransformerConfig.from_dict(values.get("transformer")),
            finetune_transformer=PEAVTransformerConfig.from_dict(values.get("finetune_transformer")),
            text_model=ModernBertConfig.from_dict(values.get("text_model") or {}),
            nth_text_layer=values.get("nth_text_layer", 22),
            bottleneck_dim=int(values.get("bottleneck_dim", 256)),
        )

    @property
    def sample_rate(self) -> int:
        return self.audio_codec.sample_rate


class JudgeCodec(nn.Module):
    """`audio_codec.`: DACVAE encoder + VAE bottleneck; features = the mean half of quantizer.in_proj."""

    def __init__(self, config: JudgeCodecConfig):
        super().__init__()
        self.config = config
        self.encoder = Encoder(config.encoder_dim, config.encoder_rates, config.latent_dim)
        self.quantizer = VAEBottleneck(config.latent_dim, config.codebook_dim)

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        """[B,1,S] with S a hop multiple (the processor pads) -> [B,C,S/hop]."""
        return self.quantizer.in_proj(self.encoder(waveform))[:, : self.config.codebook_dim]


@dataclass
class JudgeInputs:
    """A processed batch at the Judge's rate: what the official SAMAudioJudgeProcessor makes of raw audio."""

    mixture: torch.Tensor  # [B,1,S]
    candidate: torch.Tensor  # [B,1,S]
    padding_mask: torch.Tensor | None  # [B,S] bool, True up to each item's reflect-padded length; None: all valid


def reflect_pad_to_hop(wav: torch.Tensor, hop: int) -> torch.Tensor:
    pad = -wav.shape[-1] % hop
    if pad >= wav.shape[-1]:
        raise AudioInputError(f"audio of {wav.shape[-1]} samples is too short for the Judge: it needs more than "
                              f"{pad} samples to reflect-pad to its codec hop of {hop}")
    return F.pad(wav[None], (0, pad), mode="reflect")[0] if pad else wav


def prepare_inputs(mixtures: list[torch.Tensor], candidates: list[torch.Tensor], hop: int) -> JudgeInputs:
    """1-D waveforms at the Judge's rate -> a batch: reflect-pad each to a hop multiple, zero-pad to the longest."""
    if len(mixtures) != len(candidates):
        raise AudioInputError(f"{len(mixtures)} mixtures but {len(candidates)} candidates")
    mixtures = [reflect_pad_to_hop(w, hop) for w in mixtures]
    candidates = [reflect_pad_to_hop(w, hop) for w in candidates]
    width = max(w.shape[-1] for w in mixtures + candidates)

    def stack(waves):
        return torch.stack([F.pad(w, (0, width - w.shape[-1])) for w in waves])[:, None]

    # As upstream, the mask comes from the mixtures' lengths (both are processed alike; callers pass equal lengths).
    lengths = torch.tensor([w.shape[-1] for w in mixtures])
    return JudgeInputs(stack(mixtures), stack(candidates), torch.arange(width)[None] < lengths[:, None])


class SAMAudioJudge(nn.Module):
    def __init__(self, config: JudgeConfig):
        super().__init__()
        self.config = config
        width, bottleneck = config.transformer.hidden_size, config.bottleneck_dim
        self.mean = nn.Parameter(torch.zeros(4), requires_grad=False)
        self.std = nn.Parameter(torch.ones(4), requires_grad=False)
        self.data_proj = nn.Linear(config.audio_codec.codebook_dim, width)
        self.audio_codec = JudgeCodec(config.audio_codec)
        self.transformer = PEAVTransformer(config.transformer)
        self.finetune_transformer = PEAVTransformer(config.finetune_transformer)
        self.text_model = ModernBertEncoder(config.text_model, config.nth_text_layer,
                                            final_norm=config.nth_text_layer is None)
        self.cat_audio_proj = nn.Linear(2 * width, bottleneck)
        self.text_proj1 = nn.Linear(config.text_model.hidden_size, width, bias=False)
        self.text_proj2 = nn.Linear(width, bottleneck)
        self.layer_norm = nn.LayerNorm(bottleneck)
        self.proj_audio_and_text = nn.Linear(2 * bottleneck, bottleneck)
        self.finetune_data_proj = nn.Linear(bottleneck, config.finetune_transformer.hidden_size)
        self.head = nn.Linear(config.finetune_transformer.hidden_size, 4, bias=False)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None, inputs: JudgeInputs
                ) -> torch.Tensor:
        """-> scores [B,4] in SCORE_NAMES order."""
        text = self.text_proj1(self.text_model(input_ids, attention_mask)[:, 0])
        codec = self.audio_codec(torch.cat([inputs.mixture, inputs.candidate]))  # one pass for both halves
        # The official call drops the padding mask here (see the module docstring): valid=None on purpose.
        features = self.transformer(self.data_proj(codec.transpose(1, 2)))[:, 1:]
        mixture, candidate = features.chunk(2)
        audio = self.cat_audio_proj(torch.cat([candidate, mixture], -1))
        text = self.layer_norm(self.text_proj2(text))[:, None].expand_as(audio)
        fused = self.proj_audio_and_text(torch.cat([audio, text], -1))
        per_frame = self.head(self.finetune_transformer(self.finetune_data_proj(fused))[:, 1:])  # [B,T,4]
        if inputs.padding_mask is None:
            pooled = per_frame.mean(1)
        else:
            valid = inputs.padding_mask[:, :: self.config.audio_codec.hop_length].to(per_frame.device)
            weights = valid[..., None].to(per_frame.dtype)
            pooled = (per_frame * weights).sum(1) / weights.sum(1)
        return pooled * self.std + self.mean


@dataclass
class JudgeScores:
    overall: float
    recall: float
    precision: float
    faithfulness: float

    def as_dict(self) -> dict[str, float]:
        return {name: getattr(self, name) for name in SCORE_NAMES}


class Judge:
    """The Judge with its tokenizer: (mixture, separated target, prompt) -> JudgeScores, at the Judge's rate."""

    def __init__(self, model: SAMAudioJudge, tokenizer):
        self.model = model.eval()
        self.tokenizer = tokenizer

    @property
    def sample_rate(self) -> int:
        return self.model.config.sample_rate

    @property
    def hop(self) -> int:
        return self.model.config.audio_codec.hop_length

    @torch.inference_mode()
    def score_tensor(self, mixtures: list[torch.Tensor], candidates: list[torch.Tensor], prompts: list[str]
                     ) -> torch.Tensor:
        """1-D waveforms at `sample_rate` -> scores [B,4]."""
        inputs = prepare_inputs([m.float() for m in mixtures], [c.float() for c in candidates], self.hop)
        tokens = self.tokenizer(list(prompts), return_tensors="pt", padding="longest", truncation=True,
                                max_length=512)
        weight = self.model.data_proj.weight
        inputs = JudgeInputs(inputs.mixture.to(weight.device, weight.dtype),
                             inputs.candidate.to(weight.device, weight.dtype), inputs.padding_mask)
        ids, mask = tokens["input_ids"].to(weight.device), tokens["attention_mask"].to(weight.device)
        return self.model(ids, mask, inputs).float().cpu()

    def score(self, mixtures: list[torch.Tensor], candidates: list[torch.Tensor], prompts: list[str]
              ) -> list[JudgeScores]:
        return [JudgeScores(*map(float, row)) for row in self.score_tensor(mixtures, candidates, prompts)]
