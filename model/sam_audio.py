"""SAM Audio: the checkpoint-compatible model (codec + DiT + prompt heads) and one network evaluation.

State-dict prefixes follow the official `checkpoint.pt`: audio_codec, vision_encoder (PE-Core, built only
when the checkpoint carries it: `SAMAudio(config, vision=True)`), transformer, proj, align_masked_video,
embed_anchors, memory_proj (SAM_AUDIO.md §1.1). The text encoder (T5) lives outside this module, and the
network evaluation takes per-frame video *features* [B,vision_dim,T]: `vision_encoder.encode_frames` turns
masked frames into them (model/vision.py), so the model itself never needs a hub.

The input projection is linear in [noisy ‖ zeros ‖ mixture ‖ mixture], so it is split into the part that
changes every evaluation (noisy) and the part fixed for a mixture and prompt (`FrameConditioning`: the
mixture term, bias, gated video and anchor embeddings), computed once per separation or streaming window.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from samstream.model.dacvae import DACVAE, DACVAEConfig
from samstream.model.dit import DiT, DiTConfig, sinusoid
from samstream.model.vision import VisionEncoder, VisionEncoderConfig


@dataclass
class SAMAudioConfig:
    in_channels: int
    audio_codec: DACVAEConfig
    transformer: DiTConfig
    text_dim: int
    vision_dim: int
    num_anchors: int = 3
    anchor_embedding_dim: int = 128
    text_encoder_name: str = "t5-base"
    vision_encoder: VisionEncoderConfig = field(default_factory=VisionEncoderConfig)
    # Entries the official config carries for modules we never build (rankers, span predictor).
    unused: dict = field(default_factory=dict)

    @classmethod
    def from_dict(cls, values: dict, codec_overrides: dict | None = None) -> "SAMAudioConfig":
        known = {"in_channels", "audio_codec", "transformer", "text_encoder", "vision_encoder", "num_anchors",
                 "anchor_embedding_dim"}
        config = cls(
            in_channels=int(values["in_channels"]),
            audio_codec=DACVAEConfig.from_dict(values["audio_codec"], **(codec_overrides or {})),
            transformer=DiTConfig.from_dict(values["transformer"]),
            text_dim=int(values["text_encoder"]["dim"]),
            vision_dim=int(values["vision_encoder"]["dim"]),
            num_anchors=int(values.get("num_anchors", 3)),
            anchor_embedding_dim=int(values.get("anchor_embedding_dim", 128)),
            text_encoder_name=values["text_encoder"].get("name", "t5-base"),
            vision_encoder=VisionEncoderConfig.from_dict(values["vision_encoder"]),
            unused={k: v for k, v in values.items() if k not in known},
        )
        latent = config.audio_codec.codebook_dim
        if config.in_channels != 6 * latent or config.transformer.out_channels != 2 * latent:
            raise ValueError(
                f"in_channels {config.in_channels} / transformer.out_channels {config.transformer.out_channels} "
                f"do not fit the codec's {latent} latent channels (expected {6 * latent} / {2 * latent})"
            )
        if config.transformer.context_dim != config.transformer.dim:
            raise ValueError("transformer.context_dim must equal transformer.dim (memory_proj maps text to dim)")
        return config

    @property
    def latent_channels(self) -> int:
        return self.audio_codec.codebook_dim


class AlignModalities(nn.Module):
    """Gated per-frame features: x + tanh(gate) * LayerNorm(Conv1x1(features))."""

    def __init__(self, in_channels: int, dim: int):
        super().__init__()
        self.conv = nn.Conv1d(in_channels, dim, kernel_size=1)
        self.layer_norm = nn.LayerNorm(dim)
        self.gate = nn.Parameter(torch.zeros(1))

    def forward(self, features: torch.Tensor) -> torch.Tensor:  # [B,in,T] -> [B,T,dim] (the gated addend)
        return self.gate.tanh() * self.layer_norm(self.conv(features).transpose(1, 2))


class EmbedAnchors(nn.Module):
    def __init__(self, num_anchors: int, embedding_dim: int, dim: int):
        super().__init__()
        self.embed = nn.Embedding(num_anchors + 1, embedding_dim, padding_idx=num_anchors)
        self.gate = nn.Parameter(torch.zeros(1))
        self.proj = nn.Linear(embedding_dim, dim, bias=False)

    def forward(self, anchor_ids: torch.Tensor, alignment: torch.Tensor) -> torch.Tensor:  # the gated addend
        return self.gate.tanh() * self.proj(self.embed(anchor_ids.gather(1, alignment)))


@dataclass
class FrameConditioning:
    """Everything of the projected DiT input that does not depend on the noisy state: [B,T,D]."""

    value: torch.Tensor


class SAMAudio(nn.Module):
    def __init__(self, config: SAMAudioConfig, vision: bool = False):
        """`vision`: build the PE-Core vision tower (needed for visual-mask prompts; the parity test model and
        checkpoints stripped of `vision_encoder.model.*` have none, and then video features must come in ready)."""
        super().__init__()
        self.config = config
        dim = config.transformer.dim
        self.audio_codec = DACVAE(config.audio_codec)
        self.vision_encoder = VisionEncoder(config.vision_encoder) if vision else None
        self.transformer = DiT(config.transformer)
        self.proj = nn.Linear(config.in_channels, dim)
        self.align_masked_video = AlignModalities(config.vision_dim, dim)
        self.embed_anchors = EmbedAnchors(config.num_anchors, config.anchor_embedding_dim, dim)
        self.memory_proj = nn.Linear(config.text_dim, dim)

    # -- pieces that callers cache ---------------------------------------------------------------------
    def frame_conditioning(
        self,
        audio_features: torch.Tensor,
        masked_video_features: torch.Tensor | None = None,
        anchor_ids: torch.Tensor | None = None,
        anchor_alignment: torch.Tensor | None = None,
    ) -> FrameConditioning:
        """audio_features [B,T,2C] (= z_mix ‖ z_mix); video [B,vision_dim,T]; anchors as from `anchor_tokens`."""
        noisy_width = self.config.transformer.out_channels
        mixture_weight = self.proj.weight[:, 2 * noisy_width :]  # the zero slot contributes nothing
        h = F.linear(audio_features, mixture_weight, self.proj.bias)
        if masked_video_features is not None:
            h = h + self.align_masked_video(masked_video_features)
        if anchor_ids is not None:
            h = h + self.embed_anchors(anchor_ids, anchor_alignment)
        return FrameConditioning(h)

    def project_noisy(self, noisy: torch.Tensor) -> torch.Tensor:
        return F.linear(noisy, self.proj.weight[:, : self.config.transformer.out_channels])

    def memory(self, text_features: torch.Tensor | None, time: torch.Tensor) -> torch.Tensor:
        """Cross-attention memory: memory_proj(text) + sinusoid(t) ([B,1,D] when there is no text)."""
        time_term = sinusoid(time, self.config.transformer.dim).to(self.proj.weight.dtype).unsqueeze(1)
        if text_features is None:
            return time_term
        return self.memory_proj(text_features) + time_term

    # -- one network evaluation (the reference's SAMAudio.forward) -------------------------------------
    def forward(
        self,
        noisy_audio: torch.Tensor,
        audio_features: torch.Tensor,
        text_features: torch.Tensor | None,
        time: torch.Tensor,
        masked_video_features: torch.Tensor | None = None,
        text_mask: torch.Tensor | None = None,
        anchor_ids: torch.Tensor | None = None,
        anchor_alignment: torch.Tensor | None = None,
        audio_pad_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Velocity [B,T,2C] for state `noisy_audio` [B,T,2C] at `time` [B]."""
        conditioning = self.frame_conditioning(audio_features, masked_video_features, anchor_ids, anchor_alignment)
        return self.velocity(noisy_audio, time, conditioning, self.memory(text_features, time), text_mask, audio_pad_mask)

    def velocity(
        self,
        noisy: torch.Tensor,
        time: torch.Tensor,
        conditioning: FrameConditioning,
        memory: torch.Tensor | None,
        memory_mask: torch.Tensor | None,
        audio_pad_mask: torch.Tensor | None,
        cross_kv=None,
        time_cond=None,
    ) -> torch.Tensor:
        x = self.project_noisy(noisy) + conditioning.value
        return self.transformer(
            x,
            time,
            padding_mask=audio_pad_mask,
            memory=memory,
            memory_padding_mask=memory_mask,
            cross_kv=cross_kv,
            time_cond=time_cond,
        )
