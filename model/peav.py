"""The PE-AV transformer: the frame encoder of PE-A-Frame (span predictor) and of the SAM Audio Judge.

A clean-room re-implementation of perception_models `core/audio_visual_encoder/transformer.py` and
`patcher.py`, with their module names (`embeddings.cls_token`, `embeddings.resnet_block.block{1,2}`,
`layers.i.self_attn.{q,k,v,o}_proj`, `q_norm`/`k_norm`, `mlp.{gate,up,down}_proj`, `input_layernorm`,
`post_attention_layernorm`, `norm`, `output`).

What it computes, [B,T,D] frames -> [B,1+T,D] (row 0 is a learned class token):
- a class token is prepended, then a ResNet block (twice: GroupNorm(1 group) -> SiLU -> Conv1d k=3 with
  zero "same" padding, plus a skip). With a padding mask the GroupNorm takes its mean and *biased*
  variance over the valid (channel x frame) entries only and zeroes padded frames after the affine;
  without one it is a plain GroupNorm;
- pre-RMSNorm blocks: attention with the standard head split `view(B,T,H,hd)` (not the SAM DiT's
  head-interleaved one), QK-RMSNorm over head_dim before RoPE, adjacent-pair RoPE with theta =
  max(10000, 2 * max_position_embeddings) (the config's `rope_theta` is ignored, as upstream), keys
  masked with the padding mask, no biases; SwiGLU MLP without biases;
- final RMSNorm and a bias-free `output` Linear.
The RMSNorm and the adjacent-pair RoPE are the same as the SAM DiT's (model/dit.py) and are shared.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch
import torch.nn.functional as F
from torch import nn

from samstream.model.dit import RMSNorm, RotaryTable, apply_rotary


@dataclass(frozen=True)
class PEAVTransformerConfig:
    """The official `TransformerConfig` fields that shape the computation, with its defaults."""

    hidden_size: int = 1024
    intermediate_size: int = 2752
    num_hidden_layers: int = 16
    num_attention_heads: int = 8
    num_key_value_heads: int | None = None
    max_position_embeddings: int = 10000
    rms_norm_eps: float = 1e-5
    attention_bias: bool = False
    hidden_act: str = "silu"

    @classmethod
    def from_dict(cls, values: dict | None) -> "PEAVTransformerConfig":
        """From the official config dict. `rope_theta`, `rope_scaling` and `attention_dropout` are accepted and
        ignored: upstream derives theta from max_position_embeddings and never scales or drops out at inference."""
        values = dict(values or {})
        ignored = {"rope_theta", "rope_scaling", "attention_dropout"}
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known - ignored)
        if unknown:
            raise ValueError(f"unknown PE-AV transformer config keys {unknown}")
        config = cls(**{k: v for k, v in values.items() if k in known})
        if config.num_key_value_heads not in (None, config.num_attention_heads):
            # Upstream has no key/value repeat: fewer KV heads would crash there too.
            raise ValueError("PE-AV transformer: num_key_value_heads must equal num_attention_heads")
        if config.hidden_act != "silu" or config.attention_bias:
            raise ValueError("PE-AV transformer: only hidden_act 'silu' without attention bias is supported")
        if config.hidden_size % config.num_attention_heads:
            raise ValueError(f"PE-AV transformer: hidden_size {config.hidden_size} is not divisible by "
                             f"{config.num_attention_heads} heads")
        return config

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads


def masked_group_norm(x: torch.Tensor, norm: nn.GroupNorm, valid: torch.Tensor | None) -> torch.Tensor:
    """x [B,C,T]; valid [B,T] bool or None. One-group statistics over valid entries only; padded frames -> 0."""
    if valid is None:
        return norm(x)
    mask = valid[:, None, :].to(x.dtype).expand_as(x)
    count = mask.sum(dim=(1, 2), keepdim=True)
    mean = (x * mask).sum(dim=(1, 2), keepdim=True) / count
    variance = ((x - mean).pow(2) * mask).sum(dim=(1, 2), keepdim=True) / count  # biased, as upstream
    normed = (x - mean) / torch.sqrt(variance + norm.eps)
    return (normed * norm.weight[:, None] + norm.bias[:, None]) * mask


class ConvBlock(nn.Module):
    def __init__(self, width: int):
        super().__init__()
        self.groupnorm = nn.GroupNorm(1, width)
        self.project = nn.Conv1d(width, width, kernel_size=3, padding=1)

    def forward(self, x: torch.Tensor, valid: torch.Tensor | None) -> torch.Tensor:
        return self.project(F.silu(masked_group_norm(x, self.groupnorm, valid)))


class ResnetBlock(nn.Module):
    def __init__(self, width: int):
        super().__init__()
        self.block1 = ConvBlock(width)
        self.block2 = ConvBlock(width)

    def forward(self, x: torch.Tensor, valid: torch.Tensor | None) -> torch.Tensor:
        return self.block2(self.block1(x, valid), valid) + x


class Embeddings(nn.Module):
    def __init__(self, width: int):
        super().__init__()
        self.resnet_block = ResnetBlock(width)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, width))

    def forward(self, x: torch.Tensor, valid: torch.Tensor | None) -> torch.Tensor:
        x = torch.cat([self.cls_token.to(x.dtype).expand(x.shape[0], -1, -1), x], 1)
        return self.resnet_block(x.transpose(1, 2), valid).transpose(1, 2)


class Attention(nn.Module):
    def __init__(self, config: PEAVTransformerConfig):
        super().__init__()
        width, self.heads = config.hidden_size, config.num_attention_heads
        self.q_proj = nn.Linear(width, width, bias=False)
        self.k_proj = nn.Linear(width, width, bias=False)
        self.v_proj = nn.Linear(width, width, bias=False)
        self.o_proj = nn.Linear(width, width, bias=False)
        self.q_norm = RMSNorm(config.head_dim, config.rms_norm_eps)
        self.k_norm = RMSNorm(config.head_dim, config.rms_norm_eps)

    def split(self, x: torch.Tensor) -> torch.Tensor:
        return x.unflatten(-1, (self.heads, -1)).transpose(1, 2)  # head-major: channel c -> head c // hd

    def forward(self, x: torch.Tensor, rotation, mask: torch.Tensor | None) -> torch.Tensor:
        q = apply_rotary(self.q_norm(self.split(self.q_proj(x))), rotation)
        k = apply_rotary(self.k_norm(self.split(self.k_proj(x))), rotation)
        out = F.scaled_dot_product_attention(q, k, self.split(self.v_proj(x)), attn_mask=mask)
        return self.o_proj(out.transpose(1, 2).flatten(2))


class SwiGLU(nn.Module):
    def __init__(self, config: PEAVTransformerConfig):
        super().__init__()
        self.gate_proj = nn.Linear(config.hidden_size, config.intermediate_size, bias=False)
        self.up_proj = nn.Linear(config.hidden_size, config.intermediate_size, bias=False)
        self.down_proj = nn.Linear(config.intermediate_size, config.hidden_size, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class Layer(nn.Module):
    def __init__(self, config: PEAVTransformerConfig):
        super().__init__()
        self.self_attn = Attention(config)
        self.mlp = SwiGLU(config)
        self.input_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.post_attention_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)

    def forward(self, x: torch.Tensor, rotation, mask: torch.Tensor | None) -> torch.Tensor:
        x = x + self.self_attn(self.input_layernorm(x), rotation, mask)
        return x + self.mlp(self.post_attention_layernorm(x))


class PEAVTransformer(nn.Module):
    def __init__(self, config: PEAVTransformerConfig):
        super().__init__()
        self.config = config
        self.embeddings = Embeddings(config.hidden_size)
        self.layers = nn.ModuleList(Layer(config) for _ in range(config.num_hidden_layers))
        self.norm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.output = nn.Linear(config.hidden_size, config.hidden_size, bias=False)
        self.rope = RotaryTable(config.head_dim, config.max_position_embeddings)

    def forward(self, x: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
        """Frames x [B,T,D], valid [B,T] (True = real frame) or None -> [B,1+T,D]; row 0 is the class token."""
        if valid is not None:
            valid = F.pad(valid.to(x.device).bool(), (1, 0), value=True)  # the class token is always valid
        h = self.embeddings(x, valid)
        rotation = self.rope.rotation(torch.arange(h.shape[1], device=self.rope.cos.device))
        rotation = tuple(t.to(h.device) for t in rotation)
        mask = valid[:, None, None, :] if valid is not None else None  # only keys are masked
        for layer in self.layers:
            h = layer(h, rotation, mask)
        return self.output(self.norm(h))
