"""The SAM Audio diffusion transformer (DiT), checkpoint-compatible with the official release.

Module names reproduce the official state-dict keys under `transformer.` (SAM_AUDIO.md §1.2). Details
that silently break compatibility when guessed, each kept here on purpose:
- heads are split head-interleaved: channel c belongs to head c mod H (view [B,T,hd,H]);
- QK RMSNorm over head_dim is applied before RoPE; RoPE rotates adjacent pairs with base
  max(10000, 2 * max_positions);
- the Patcher is a ResNet block with 1-group GroupNorm (window-global statistics) and k=3 convs;
- modulation order is (shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp);
- the final layer is modulated by the raw time embedding `e`, not by `t_block(silu(e))`;
- cross-attention is neither normalised nor gated, and has no RoPE.

Two extensions, off for official checkpoints, serve the block-causal streaming regime:
- `time` may be per token ([B,T]) instead of per sample ([B]): cached context frames sit at t=1 while
  the chunk being sampled is at its current t;
- `causal=True` makes the Patcher frame-local (per-frame norm, kernel `patch_kernel`, left padding)
  and attention accepts an explicit mask plus keys/values of past frames (`past`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class DiTConfig:
    dim: int = 2048
    n_heads: int = 16
    n_layers: int = 16
    out_channels: int = 256
    dropout: float = 0.1
    norm_eps: float = 1e-5
    qk_norm: bool = True
    fc_bias: bool = False
    ffn_exp: int = 4
    ffn_dim_multiplier: float = 1
    multiple_of: int = 64
    non_linearity: str = "swiglu"
    use_rope: bool = True
    max_positions: int = 10000
    frequency_embedding_dim: int = 256
    timestep_non_linearity: str = "swiglu"
    t_block_non_linearity: str = "silu"
    t_block_bias: bool = True
    context_dim: int = 2048
    context_non_linearity: str = "swiglu"
    context_embedder_dropout: float = 0.0
    context_norm: bool = False
    in_channels: int | None = None
    # samstream extensions (not in official configs)
    causal: bool = False
    patch_kernel: int = 3

    @classmethod
    def from_dict(cls, values: dict) -> "DiTConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown transformer config keys {unknown}")
        config = cls(**values)
        config.validate()
        return config

    def validate(self) -> None:
        # The released checkpoints use exactly these choices; others would need code paths we don't have.
        expected = {
            "non_linearity": "swiglu",
            "timestep_non_linearity": "swiglu",
            "t_block_non_linearity": "silu",
            "context_non_linearity": "swiglu",
        }
        for name, value in expected.items():
            if getattr(self, name) != value:
                raise ValueError(f"transformer.{name}={getattr(self, name)!r} is not supported (only {value!r})")
        if self.in_channels is not None:
            raise ValueError("transformer.in_channels must be null (the data_proj/CLS path is not used by SAM Audio)")
        if self.context_norm:
            raise ValueError("transformer.context_norm=true is not supported")
        if self.dim % self.n_heads:
            raise ValueError(f"transformer.dim {self.dim} is not divisible by n_heads {self.n_heads}")
        if not self.use_rope:
            raise ValueError("transformer.use_rope=false is not supported")

    @property
    def head_dim(self) -> int:
        return self.dim // self.n_heads

    @property
    def ffn_hidden(self) -> int:
        hidden = int(2 * (self.ffn_exp * self.dim) / 3)  # SwiGLU keeps the parameter count of a 4D MLP
        hidden = int(self.ffn_dim_multiplier * hidden)
        return self.multiple_of * ((hidden + self.multiple_of - 1) // self.multiple_of)


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x32 = x.float()  # statistics in fp32 whatever the compute dtype, as the reference does
        normed = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)
        return (normed * self.weight).type_as(x)


class SwiGLU(nn.Module):
    """w2(silu(w1 x) * w3 x): the FFN, and the time/context projections (with hidden = out)."""

    def __init__(self, in_dim: int, hidden: int, out_dim: int, dropout: float, bias: bool):
        super().__init__()
        self.dropout = dropout
        self.w1 = nn.Linear(in_dim, hidden, bias=bias)
        self.w2 = nn.Linear(hidden, out_dim, bias=bias)
        self.w3 = nn.Linear(in_dim, hidden, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        hidden = F.silu(self.w1(x)) * self.w3(x)
        return self.w2(F.dropout(hidden, p=self.dropout, training=self.training))


class Projection(nn.Module):
    """Holds a SwiGLU under the name `projection`, as the official time and context embedders do."""

    def __init__(self, in_dim: int, out_dim: int, dropout: float, bias: bool):
        super().__init__()
        self.projection = SwiGLU(in_dim, out_dim, out_dim, dropout, bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.projection(x)


def sinusoid(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """[cos(t f_k), sin(t f_k)] with f_k = max_period^(-k/(dim/2)); t in [0, 1] as is (no x1000)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t.float()[..., None] * freqs
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


class TimestepEmbedder(Projection):
    def __init__(self, config: DiTConfig):
        super().__init__(config.frequency_embedding_dim, config.dim, config.dropout, config.fc_bias)
        self.frequency_dim = config.frequency_embedding_dim

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        return self.projection(sinusoid(t, self.frequency_dim).to(self.projection.w1.weight.dtype))


class RotaryTable(nn.Module):
    """cos/sin tables for adjacent-pair rotary embeddings, up to `max_positions` frames."""

    def __init__(self, head_dim: int, max_positions: int):
        super().__init__()
        self.head_dim, self.max_positions = head_dim, max_positions
        self.rebuild_buffers()

    def rebuild_buffers(self) -> None:
        """(Re)compute the tables on the CPU; also used after building the model on the meta device."""
        theta = max(10000, 2 * self.max_positions)
        exponents = torch.arange(0, self.head_dim, 2, device="cpu")[: self.head_dim // 2].float() / self.head_dim
        angles = torch.outer(torch.arange(self.max_positions, device="cpu").float(), 1.0 / (theta**exponents))
        self.register_buffer("cos", angles.cos(), persistent=False)
        self.register_buffer("sin", angles.sin(), persistent=False)

    def rotation(self, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if int(positions.max()) >= self.max_positions:
            raise ValueError(
                f"sequence of {int(positions.max()) + 1} frames exceeds the model's RoPE table of "
                f"{self.max_positions} frames; process the audio in shorter windows"
            )
        return self.cos[positions], self.sin[positions]


def apply_rotary(x: torch.Tensor, rotation: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """Rotate pairs (2i, 2i+1) of x [B,H,T,hd] by per-position angles ([T,hd/2] tables)."""
    cos, sin = rotation
    pairs = x.float().unflatten(-1, (-1, 2))
    even, odd = pairs[..., 0], pairs[..., 1]
    rotated = torch.stack((even * cos - odd * sin, even * sin + odd * cos), dim=-1)
    return rotated.flatten(-2).type_as(x)


class Attention(nn.Module):
    def __init__(self, config: DiTConfig):
        super().__init__()
        dim, self.n_heads = config.dim, config.n_heads
        self.wq = nn.Linear(dim, dim, bias=config.fc_bias)
        self.wk = nn.Linear(dim, dim, bias=config.fc_bias)
        self.wv = nn.Linear(dim, dim, bias=config.fc_bias)
        self.wo = nn.Linear(dim, dim, bias=config.fc_bias)
        self.q_norm = RMSNorm(config.head_dim, config.norm_eps)
        self.k_norm = RMSNorm(config.head_dim, config.norm_eps)

    def split_heads(self, x: torch.Tensor) -> torch.Tensor:
        # Head-interleaved: [B,T,D] -> [B,T,hd,H] -> [B,H,T,hd]; channel c is head c mod H.
        return x.unflatten(-1, (-1, self.n_heads)).permute(0, 3, 1, 2)

    def keys_values(self, source: torch.Tensor, rotation=None) -> tuple[torch.Tensor, torch.Tensor]:
        keys = self.k_norm(self.split_heads(self.wk(source)))
        if rotation is not None:
            keys = apply_rotary(keys, rotation)
        return keys, self.split_heads(self.wv(source))

    def forward(
        self,
        x: torch.Tensor,
        keys_values: tuple[torch.Tensor, torch.Tensor],
        mask: torch.Tensor | None,
        rotation=None,
    ) -> torch.Tensor:
        queries = self.q_norm(self.split_heads(self.wq(x)))
        if rotation is not None:
            queries = apply_rotary(queries, rotation)
        keys, values = keys_values
        out = F.scaled_dot_product_attention(queries, keys, values, attn_mask=mask)
        return self.wo(out.transpose(1, 2).flatten(2))  # heads merged head-major: (h d)


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return x * (1 + scale) + shift


class DiTBlock(nn.Module):
    def __init__(self, config: DiTConfig):
        super().__init__()
        self.dim = config.dim
        self.dropout = config.dropout
        # Registration order reproduces the official state-dict order.
        self.attention = Attention(config)
        self.feed_forward = SwiGLU(config.dim, config.ffn_hidden, config.dim, config.dropout, config.fc_bias)
        self.attention_norm = RMSNorm(config.dim, config.norm_eps)
        self.ffn_norm = RMSNorm(config.dim, config.norm_eps)
        self.cross_attention = Attention(config)
        self.scale_shift_table = nn.Parameter(torch.randn(6, config.dim) / config.dim**0.5)

    def modulation(self, t_block: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """t_block [B,6D] or [B,T,6D] -> six tensors broadcastable against [B,T,D]."""
        table = t_block.unflatten(-1, (6, self.dim)) + self.scale_shift_table
        if table.dim() == 3:  # per-sample time: broadcast over frames
            table = table[:, None]
        return table.unbind(-2)

    def forward(
        self,
        h: torch.Tensor,
        t_block: torch.Tensor,
        self_mask: torch.Tensor | None,
        rotation,
        cross_kv: tuple[torch.Tensor, torch.Tensor],
        cross_mask: torch.Tensor | None,
        past_kv: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        """Returns the block output and this input's own self-attention (K, V) for callers that cache them."""
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = self.modulation(t_block)
        normed = modulate(self.attention_norm(h), shift_msa, scale_msa)
        own_kv = self.attention.keys_values(normed, rotation)
        keys, values = own_kv
        if past_kv is not None:
            keys, values = torch.cat([past_kv[0], keys], dim=2), torch.cat([past_kv[1], values], dim=2)
        h = h + gate_msa * self.attention(normed, (keys, values), self_mask, rotation)
        h = h + self.cross_attention(h, cross_kv, cross_mask)
        h = h + gate_mlp * self.feed_forward(modulate(self.ffn_norm(h), shift_mlp, scale_mlp))
        return h, own_kv


class FrameNorm(nn.GroupNorm):
    """1-group GroupNorm applied to each frame on its own: the causal stand-in for the window-global one."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x [B,D,T]
        normed = F.layer_norm(x.transpose(1, 2), (x.shape[1],), eps=self.eps)
        return normed.transpose(1, 2) * self.weight[:, None] + self.bias[:, None]


class ConvBlock(nn.Module):
    def __init__(self, dim: int, kernel: int, causal: bool):
        super().__init__()
        self.groupnorm = FrameNorm(1, dim) if causal else nn.GroupNorm(1, dim)
        self.project = nn.Conv1d(dim, dim, kernel)
        # 'same' length: centred zero padding, or all of it on the left when causal
        total = kernel - 1
        self.padding = (total, 0) if causal else (total - total // 2, total // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.project(F.pad(F.silu(self.groupnorm(x)), self.padding))


class ResnetBlock(nn.Module):
    def __init__(self, dim: int, kernel: int, causal: bool):
        super().__init__()
        self.block1 = ConvBlock(dim, kernel, causal)
        self.block2 = ConvBlock(dim, kernel, causal)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.block2(self.block1(x))


class Patcher(nn.Module):
    def __init__(self, config: DiTConfig):
        super().__init__()
        if config.causal and config.patch_kernel != 1:
            # A causal k>1 conv would need the noisy inputs of cached frames; keep the causal patcher frame-local.
            raise ValueError("a causal DiT needs patch_kernel=1")
        self.block = ResnetBlock(config.dim, config.patch_kernel, config.causal)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [B,T,D] -> [B,T,D]
        return self.block(x.transpose(1, 2)).transpose(1, 2)


class FusedDiT:
    """A causal DiT's blocks for inference on frozen weights, with fewer and larger operations.

    A streaming chunk is 4 tokens, so a block's cost is the number of operations, not their arithmetic: the Q/K/V
    and the two SwiGLU input projections each become one matmul, Q and K are normalised and rotated together,
    RMSNorm is one fused op with its weight folded into the modulation's scale, and the frame-local Patcher's
    kernel-1 convolutions are linear maps. Same function as the modules (tests/test_embedded.py compares them);
    about 28 % less time per streaming chunk of the embedded DiT (docs/model_card.md, "Latency and cost"). Holds
    fused copies of the weights: build it again after changing them.
    """

    def __init__(self, dit: "DiT"):
        config = dit.config
        if not config.causal or config.patch_kernel != 1:
            raise ValueError("FusedDiT serves causal DiTs with patch_kernel=1 (a frame-local Patcher)")
        self.dit = dit
        self.dim, self.n_heads, self.head_dim = config.dim, config.n_heads, config.head_dim
        self.eps = config.norm_eps
        self.layers = []
        for layer in dit.layers:
            attention, cross, ffn = layer.attention, layer.cross_attention, layer.feed_forward
            self.layers.append({
                "qkv": _joined(attention.wq, attention.wk, attention.wv),
                "qk_norm": torch.stack([attention.q_norm.weight, attention.k_norm.weight]).detach()[:, None, None, :],
                "out": (attention.wo.weight, attention.wo.bias),
                "cross_q": (cross.wq.weight, cross.wq.bias),
                "cross_q_norm": cross.q_norm.weight,
                "cross_out": (cross.wo.weight, cross.wo.bias),
                "ffn_in": _joined(ffn.w1, ffn.w3),
                "ffn_out": (ffn.w2.weight, ffn.w2.bias),
                "norms": (layer.attention_norm.weight, layer.ffn_norm.weight),
            })

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """The frame-local Patcher on x [B,T,D]."""
        block = self.dit.x_embedder.block
        h = x
        for conv in (block.block1, block.block2):
            norm = conv.groupnorm
            h = F.linear(F.silu(F.layer_norm(h, (self.dim,), norm.weight, norm.bias, norm.eps)),
                         conv.project.weight[..., 0], conv.project.bias)
        return x + h

    def block(self, index: int, h: torch.Tensor, t_block: torch.Tensor, self_mask: torch.Tensor | None, rotation,
              cross_kv: tuple[torch.Tensor, torch.Tensor], cross_mask: torch.Tensor | None,
              past_kv: tuple[torch.Tensor, torch.Tensor] | None = None):
        """`DiTBlock.forward` of layer `index`; `rotation` = (cos, sin), each [B,1,T,hd/2]."""
        weights, dim, heads, head_dim = self.layers[index], self.dim, self.n_heads, self.head_dim
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = self.dit.layers[index].modulation(t_block)
        attention_norm, ffn_norm = weights["norms"]
        normed = torch.addcmul(shift_msa, F.rms_norm(h, (dim,), None, self.eps), attention_norm * (1 + scale_msa))
        qkv = F.linear(normed, *weights["qkv"])
        # head-interleaved channels, as `Attention.split_heads`: [B,T,(2,hd,H)] -> [B,2,H,T,hd]
        qk = qkv[..., : 2 * dim].unflatten(-1, (2, head_dim, heads)).permute(0, 2, 4, 1, 3)
        qk = F.rms_norm(qk, (head_dim,), None, self.eps) * weights["qk_norm"]
        cos, sin = (part[:, None] for part in rotation)
        even, odd = qk.unflatten(-1, (-1, 2)).unbind(-1)
        queries, keys = torch.stack((even * cos - odd * sin, even * sin + odd * cos), dim=-1).flatten(-2).unbind(1)
        values = qkv[..., 2 * dim :].unflatten(-1, (head_dim, heads)).permute(0, 3, 1, 2)
        own_kv = (keys, values)
        if past_kv is not None:
            keys, values = torch.cat([past_kv[0], keys], dim=2), torch.cat([past_kv[1], values], dim=2)
        attended = F.scaled_dot_product_attention(queries, keys, values, attn_mask=self_mask)
        h = torch.addcmul(h, gate_msa, F.linear(attended.transpose(1, 2).flatten(2), *weights["out"]))
        cross_q = F.linear(h, *weights["cross_q"]).unflatten(-1, (head_dim, heads)).permute(0, 3, 1, 2)
        cross_q = F.rms_norm(cross_q, (head_dim,), weights["cross_q_norm"], self.eps)
        attended = F.scaled_dot_product_attention(cross_q, *cross_kv, attn_mask=cross_mask)
        h = h + F.linear(attended.transpose(1, 2).flatten(2), *weights["cross_out"])
        normed = torch.addcmul(shift_mlp, F.rms_norm(h, (dim,), None, self.eps), ffn_norm * (1 + scale_mlp))
        gate, up = F.linear(normed, *weights["ffn_in"]).chunk(2, dim=-1)
        h = torch.addcmul(h, gate_mlp, F.linear(F.silu(gate) * up, *weights["ffn_out"]))
        return h, own_kv


def _joined(*linears: nn.Linear) -> tuple[torch.Tensor, torch.Tensor | None]:
    """One (weight, bias) for linear maps of the same input, their outputs concatenated."""
    weight = torch.cat([linear.weight.detach() for linear in linears])
    biases = [linear.bias for linear in linears]
    return weight, None if biases[0] is None else torch.cat([b.detach() for b in biases])


@dataclass
class PastFrames:
    """Per-layer self-attention keys/values of frames that precede the current input (block-causal cache).

    keys/values: one (K, V) pair per layer, each [B,H,P,hd] with RoPE already applied at `positions`.
    """

    keys_values: list[tuple[torch.Tensor, torch.Tensor]]
    length: int


class DiT(nn.Module):
    def __init__(self, config: DiTConfig):
        super().__init__()
        self.config = config
        # Registration order reproduces the official state-dict order.
        self.final_layer_scale_shift_table = nn.Parameter(torch.randn(2, config.dim) / config.dim**0.5)
        self.layers = nn.ModuleList(DiTBlock(config) for _ in range(config.n_layers))
        self.norm = RMSNorm(config.dim, config.norm_eps)
        self.output = nn.Linear(config.dim, config.out_channels, bias=config.fc_bias)
        self.x_embedder = Patcher(config)
        self.y_embedder = Projection(config.context_dim, config.dim, config.context_embedder_dropout, config.fc_bias)
        self.t_embedder = TimestepEmbedder(config)
        self.t_block = nn.Linear(config.dim, 6 * config.dim, bias=config.t_block_bias)
        self.rope = RotaryTable(config.head_dim, config.max_positions)

    # -- conditioning that depends only on time or on the prompt: cacheable by callers ------------------
    def time_conditioning(self, time: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """time [B] or [B,T] -> (e, t_block(silu(e))): the final-layer and per-block modulation inputs."""
        e = self.t_embedder(time)
        return e, self.t_block(F.silu(e))

    def cross_keys_values(self, memory: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Per-layer cross-attention K/V of the prompt memory [B,L,context_dim] (computed once per prompt)."""
        y = self.y_embedder(memory)
        return [layer.cross_attention.keys_values(y) for layer in self.layers]

    # -- the network -----------------------------------------------------------------------------------
    def forward(
        self,
        x: torch.Tensor,
        time: torch.Tensor,
        *,
        padding_mask: torch.Tensor | None = None,
        memory: torch.Tensor | None = None,
        memory_padding_mask: torch.Tensor | None = None,
        cross_kv: list[tuple[torch.Tensor, torch.Tensor]] | None = None,
        time_cond: tuple[torch.Tensor, torch.Tensor] | None = None,
        attn_mask: torch.Tensor | None = None,
        past: PastFrames | None = None,
        return_keys_values: bool = False,
    ):
        """One network evaluation.

        x [B,T,D] (already projected input), time [B] (or [B,T] per token), padding_mask [B,T] True=valid,
        memory [B,L,context_dim] with memory_padding_mask [B,L] True=valid (or precomputed `cross_kv`),
        `time_cond` = precomputed `time_conditioning(time)`. Block-causal extensions: `attn_mask` [T, P+T] or
        [B,1,T,P+T] bool (True = may attend), `past` cached K/V of P earlier frames (positions 0..P-1; x
        occupies P..P+T-1). With `return_keys_values` also returns this input's per-layer self-attention K/V.
        """
        if cross_kv is None:
            cross_kv = self.cross_keys_values(memory)
        e, t_block = time_cond if time_cond is not None else self.time_conditioning(time)
        offset = past.length if past is not None else 0
        positions = torch.arange(offset, offset + x.shape[1], device=x.device)
        rotation = self.rope.rotation(positions)

        self_mask = padding_mask[:, None, None, :] if padding_mask is not None else None
        if past is not None and self_mask is not None:
            past_valid = self_mask.new_ones(self_mask.shape[:-1] + (offset,))
            self_mask = torch.cat([past_valid, self_mask], dim=-1)
        if attn_mask is not None:
            self_mask = attn_mask if self_mask is None else self_mask & attn_mask
        cross_mask = memory_padding_mask[:, None, None, :] if memory_padding_mask is not None else None

        h = F.dropout(self.x_embedder(x), p=self.config.dropout, training=self.training)
        new_keys_values = []
        for index, layer in enumerate(self.layers):
            past_kv = past.keys_values[index] if past is not None else None
            h, own_kv = layer(h, t_block, self_mask, rotation, cross_kv[index], cross_mask, past_kv)
            new_keys_values.append(own_kv)

        final = self.final_layer_scale_shift_table + e.unsqueeze(-2)  # raw e, not t_block
        shift, scale = final.unbind(-2)
        if shift.dim() == 2:
            shift, scale = shift[:, None], scale[:, None]
        h = modulate(self.norm(h), shift, scale)
        out = self.output(F.dropout(h, p=self.config.dropout, training=self.training))
        return (out, new_keys_values) if return_keys_values else out
