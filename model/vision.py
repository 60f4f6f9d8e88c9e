"""PE-Core, SAM Audio's vision encoder (the `vision_encoder.` submodule of an official checkpoint).

A clean-room re-implementation of the visual tower of facebookresearch/perception_models
`core/vision_encoder/pe.py` (`CLIP.encode_image`) and `rope.py` (`Rope2D`), as SAM Audio wraps it in
`sam_audio/model/vision_encoder.py` (`PerceptionEncoder`): masked video frames -> one L2-normalised
1024-d feature per frame (SAM_AUDIO.md §5.3).

Official layout under `vision_encoder.model.` (a PE `CLIP` built from its preset name):
- `visual.*`: the ViT. Conv patch embedding without bias, a class token, a learned absolute position
  table (577 rows at 336 px / patch 14: class token + 24x24) *and* 2D RoPE in every block, ln_pre, 24
  pre-LN blocks (fused `in_proj` attention, GELU MLP, LayerScale only when configured: PE-Core has
  none), ln_post, attention pooling (one learned probe, 8-head nn.MultiheadAttention, no residual
  around it, then a residual MLP), and a `proj` matrix (width -> output dim).
- the CLIP text tower at the top level (`token_embedding`, `positional_embedding`, `transformer.*`,
  `ln_final`, `text_projection`) and `logit_scale`. SAM Audio never runs it; the loader checks its
  keys and shapes strictly and then drops the tensors, so they cost neither compute nor memory.

Details taken from the official code:
- 2D RoPE (`Rope2D` + `RotaryEmbedding(head_dim // 2)`, theta 10000, "lang" frequencies): per axis
  head_dim/4 frequencies 10000^(-2k/(head_dim/2)), each repeated for an adjacent pair; the first half
  of head_dim rotates with the patch column (x), the second with the row (y); positions start at 1
  when there is a class token, which gets angle 0 (no rotation); pairs (2i, 2i+1) rotate together.
- head split is the usual head-major `(h d)` (unlike SAM Audio's DiT); softmax scale head_dim^-0.5.
- the absolute table is bilinearly resized (align_corners=False) only when the image grid differs from
  the pretraining grid (never with SAM Audio's 336 px input).
- `encode_image(normalize=True)` = F.normalize(proj(attn_pool(ln_post(blocks(...))))).
Verified against Meta's numbers: tests/test_vision.py loads ../shared/parity/extras/pe_core (reference
tensors of the official `pe.CLIP` and SAM Audio's `PerceptionEncoder` with small random weights) through
`load_sam_audio` and matches every case (square and non-square images, the uint8 resize path, chunked
video encoding, the text tower) to < 3e-7; the PE-Core-L14-336 key manifest matches exactly.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import asdict, dataclass, fields

import torch
import torch.nn.functional as F
from torch import nn

from samstream.model.video import resize_frames


@dataclass(frozen=True)
class PEVisionConfig:
    """The visual tower (official `PEConfig`). Defaults: PE-Core-L14-336."""

    image_size: int = 336  # pretraining size: fixes the absolute position grid (image_size // patch_size)
    patch_size: int = 14
    width: int = 1024
    layers: int = 24
    heads: int = 16
    mlp_ratio: float = 4.0
    output_dim: int | None = 1024
    ls_init_value: float | None = None  # LayerScale after attention and MLP (None: none, as in PE-Core)
    use_abs_posemb: bool = True
    use_cls_token: bool = True
    use_rope2d: bool = True
    pool_type: str = "attn"  # "attn" (PE-Core), "tok", "avg" or "none"
    attn_pooler_heads: int = 8
    use_ln_pre: bool = True
    use_ln_post: bool = True
    norm_eps: float = 1e-5

    def __post_init__(self):
        if self.width % self.heads:
            raise ValueError(f"vision width {self.width} is not divisible by {self.heads} heads")
        if self.use_rope2d and (self.width // self.heads) % 4:
            raise ValueError(f"2D RoPE needs a head dim divisible by 4, got {self.width // self.heads}")
        if self.pool_type not in ("attn", "tok", "avg", "none"):
            raise ValueError(f"unknown pool_type {self.pool_type!r}")
        if self.pool_type == "attn" and self.width % self.attn_pooler_heads:
            raise ValueError(f"vision width {self.width} is not divisible by {self.attn_pooler_heads} pooler heads")

    @property
    def grid(self) -> int:
        return self.image_size // self.patch_size

    @property
    def feature_dim(self) -> int:
        return self.output_dim or self.width


@dataclass(frozen=True)
class PETextConfig:
    """The CLIP text tower (official `PETextConfig`; argmax pooling, no bias on the projection).
    Only its parameter layout is used, to check checkpoints. Defaults: PE-Core-L14-336."""

    context_length: int = 32
    width: int = 1024
    heads: int = 16
    layers: int = 24
    output_dim: int = 1024
    mlp_ratio: float = 4.0
    vocab_size: int = 49408


# perception_models core/vision_encoder/config.py. Only the tower SAM Audio uses is listed.
PE_PRESETS: dict[str, tuple[PEVisionConfig, PETextConfig]] = {
    "PE-Core-L14-336": (PEVisionConfig(), PETextConfig()),
}


@dataclass(frozen=True)
class VisionEncoderConfig:
    """`config.json["vision_encoder"]`: which PE-Core, and how frames are prepared for it.

    `architecture` is a samstream extension for test-size checkpoints ({"vision": {...}, "text": {...}}
    with PEVisionConfig / PETextConfig fields); official configs name a preset instead."""

    name: str = "PE-Core-L14-336"
    dim: int = 1024  # feature width fed to align_masked_video
    batch_size: int = 300  # frames per encoder call
    normalize_feature: bool = True
    interpolation_mode: str = "BICUBIC"
    image_size: int = 336  # frames are resized to image_size x image_size
    architecture: tuple[PEVisionConfig, PETextConfig] | None = None

    @classmethod
    def from_dict(cls, values: dict) -> "VisionEncoderConfig":
        known = {f.name for f in fields(cls)}
        unknown = set(values) - known
        if unknown:
            raise ValueError(f"unknown vision_encoder config keys {sorted(unknown)}")
        architecture = values.get("architecture")
        if architecture is not None:
            architecture = (PEVisionConfig(**architecture["vision"]), PETextConfig(**architecture["text"]))
        return cls(**{**values, "architecture": architecture})

    def to_dict(self) -> dict:
        values = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "architecture"}
        if self.architecture is not None:
            values["architecture"] = {"vision": asdict(self.architecture[0]), "text": asdict(self.architecture[1])}
        return values

    def towers(self) -> tuple[PEVisionConfig, PETextConfig]:
        if self.architecture is not None:
            vision, text = self.architecture
        elif self.name in PE_PRESETS:
            vision, text = PE_PRESETS[self.name]
        else:
            raise ValueError(f"unknown vision encoder {self.name!r} (known: {', '.join(PE_PRESETS)})")
        if vision.feature_dim != self.dim:
            raise ValueError(f"vision encoder {self.name} gives {vision.feature_dim}-d features but "
                             f"vision_encoder.dim is {self.dim}")
        if self.interpolation_mode.upper() != "BICUBIC":
            raise ValueError(f"interpolation_mode {self.interpolation_mode!r}: only BICUBIC is implemented")
        return vision, text


# -- 2D rotary position embedding ---------------------------------------------------------------------

def rope_2d_angles(head_dim: int, grid_h: int, grid_w: int, cls_token: bool, theta: float = 10000.0) -> torch.Tensor:
    """Rotation angles [tokens, head_dim] in token order (class token first, then patches row-major)."""
    axis_dim = head_dim // 2  # RotaryEmbedding(dim=head_dim // 2): axis_dim/2 frequencies, each used twice
    freqs = 1.0 / theta ** (torch.arange(0, axis_dim, 2)[: axis_dim // 2].float() / axis_dim)
    offset = 1 if cls_token else 0  # the class token sits at (0, 0)
    ys = torch.arange(grid_h, dtype=torch.float32) + offset
    xs = torch.arange(grid_w, dtype=torch.float32) + offset
    per_y = (ys[:, None] * freqs).repeat_interleave(2, -1)[:, None].expand(grid_h, grid_w, axis_dim)
    per_x = (xs[:, None] * freqs).repeat_interleave(2, -1)[None, :].expand(grid_h, grid_w, axis_dim)
    angles = torch.cat([per_x, per_y], -1).reshape(grid_h * grid_w, head_dim)
    if cls_token:
        angles = torch.cat([angles.new_zeros(1, head_dim), angles])
    return angles


def rotate_pairs(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate adjacent pairs (2i, 2i+1) of the last dim: (a, b) -> (a cos - b sin, b cos + a sin), in fp32."""
    a, b = x.float().unflatten(-1, (-1, 2)).unbind(-1)
    rotated_half = torch.stack([-b, a], -1).flatten(-2)
    return (x.float() * cos + rotated_half * sin).to(x.dtype)


# -- transformer ----------------------------------------------------------------------------------------

class LayerScale(nn.Module):
    def __init__(self, dim: int, init_value: float):
        super().__init__()
        self.gamma = nn.Parameter(torch.full((dim,), init_value))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gamma


def mlp(width: int, hidden: int) -> nn.Sequential:
    return nn.Sequential(OrderedDict([("c_fc", nn.Linear(width, hidden)), ("gelu", nn.GELU()),
                                      ("c_proj", nn.Linear(hidden, width))]))


class SelfAttention(nn.Module):
    """Fused-projection attention with nn.MultiheadAttention's parameter names; optional RoPE on q and k."""

    def __init__(self, width: int, heads: int):
        super().__init__()
        self.heads = heads
        self.in_proj_weight = nn.Parameter(torch.empty(3 * width, width))
        self.in_proj_bias = nn.Parameter(torch.empty(3 * width))
        self.out_proj = nn.Linear(width, width)

    def forward(self, x: torch.Tensor, rotation: tuple[torch.Tensor, torch.Tensor] | None = None,
                attn_mask: torch.Tensor | None = None) -> torch.Tensor:
        q, k, v = (t.unflatten(-1, (self.heads, -1)).transpose(1, 2)  # head-major: channel c -> head c // hd
                   for t in F.linear(x, self.in_proj_weight, self.in_proj_bias).chunk(3, -1))
        if rotation is not None:
            q, k = rotate_pairs(q, *rotation), rotate_pairs(k, *rotation)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)
        return self.out_proj(out.transpose(1, 2).flatten(2))


class ResidualAttentionBlock(nn.Module):
    def __init__(self, width: int, heads: int, mlp_ratio: float, ls_init_value: float | None, eps: float):
        super().__init__()
        self.attn = SelfAttention(width, heads)
        self.ls_1 = LayerScale(width, ls_init_value) if ls_init_value is not None else nn.Identity()
        self.ls_2 = LayerScale(width, ls_init_value) if ls_init_value is not None else nn.Identity()
        self.ln_1 = nn.LayerNorm(width, eps=eps)
        self.ln_2 = nn.LayerNorm(width, eps=eps)
        self.mlp = mlp(width, int(width * mlp_ratio))

    def forward(self, x: torch.Tensor, rotation=None, attn_mask=None) -> torch.Tensor:
        x = x + self.ls_1(self.attn(self.ln_1(x), rotation, attn_mask))
        return x + self.ls_2(self.mlp(self.ln_2(x)))


class Transformer(nn.Module):
    def __init__(self, width: int, layers: int, heads: int, mlp_ratio: float, ls_init_value: float | None,
                 eps: float):
        super().__init__()
        self.resblocks = nn.ModuleList(ResidualAttentionBlock(width, heads, mlp_ratio, ls_init_value, eps)
                                       for _ in range(layers))

    def forward(self, x: torch.Tensor, rotation=None, attn_mask=None) -> torch.Tensor:
        for block in self.resblocks:
            x = block(x, rotation, attn_mask)
        return x


class AttentionPooling(nn.Module):
    """One learned probe attends over all tokens (no residual around the attention), then a residual MLP."""

    def __init__(self, width: int, heads: int, eps: float, num_probe: int = 1, mlp_ratio: float = 4.0):
        super().__init__()
        self.probe = nn.Parameter(torch.empty(1, num_probe, width))
        self.attn = nn.MultiheadAttention(width, heads, batch_first=True)
        self.layernorm = nn.LayerNorm(width, eps=eps)
        self.mlp = mlp(width, int(width * mlp_ratio))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        probe = self.probe.expand(x.shape[0], -1, -1).to(x.dtype)
        x = self.attn(probe, x, x, need_weights=False)[0]
        return x + self.mlp(self.layernorm(x))


class VisionTransformer(nn.Module):
    """PE's visual tower (`visual.` keys of the official CLIP)."""

    def __init__(self, config: PEVisionConfig):
        super().__init__()
        self.config = config
        width = config.width
        # Own parameters first, in the official order (they appear first in the state dict).
        self.class_embedding = nn.Parameter(torch.empty(width)) if config.use_cls_token else None
        if config.use_abs_posemb:
            self.positional_embedding = nn.Parameter(torch.empty(int(config.use_cls_token) + config.grid**2, width))
        else:
            self.positional_embedding = None
        self.proj = nn.Parameter(torch.empty(width, config.output_dim)) if config.output_dim is not None else None
        self.conv1 = nn.Conv2d(3, width, kernel_size=config.patch_size, stride=config.patch_size, bias=False)
        self.ln_pre = nn.LayerNorm(width, eps=config.norm_eps) if config.use_ln_pre else nn.Identity()
        self.ln_post = nn.LayerNorm(width, eps=config.norm_eps) if config.use_ln_post else nn.Identity()
        self.transformer = Transformer(width, config.layers, config.heads, config.mlp_ratio, config.ls_init_value,
                                       config.norm_eps)
        self.attn_pool = (AttentionPooling(width, config.attn_pooler_heads, config.norm_eps)
                          if config.pool_type == "attn" else None)
        self._rotations: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}

    def rotation(self, grid_h: int, grid_w: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        key = (grid_h, grid_w, device)
        if key not in self._rotations:
            angles = rope_2d_angles(self.config.width // self.config.heads, grid_h, grid_w, self.config.use_cls_token)
            self._rotations[key] = (angles.cos().to(device), angles.sin().to(device))
        return self._rotations[key]

    def position_table(self, grid_h: int, grid_w: int) -> torch.Tensor:
        table = self.positional_embedding
        grid = self.config.grid
        if (grid_h, grid_w) == (grid, grid):
            return table
        cls, patches = (table[:1], table[1:]) if self.config.use_cls_token else (table[:0], table)
        patches = patches.reshape(1, grid, grid, -1).permute(0, 3, 1, 2)
        patches = F.interpolate(patches, size=(grid_h, grid_w), mode="bilinear", align_corners=False)
        return torch.cat([cls, patches.permute(0, 2, 3, 1).reshape(grid_h * grid_w, -1)])

    def forward_features(self, images: torch.Tensor) -> torch.Tensor:
        """[B,3,H,W] normalised images -> [B, tokens, width] after ln_post."""
        batch = images.shape[0]
        grid_h, grid_w = images.shape[-2] // self.config.patch_size, images.shape[-1] // self.config.patch_size
        x = self.conv1(images).flatten(2).transpose(1, 2)  # patches row-major
        if self.class_embedding is not None:
            x = torch.cat([self.class_embedding.to(x.dtype).expand(batch, 1, -1), x], 1)
        if self.positional_embedding is not None:
            x = x + self.position_table(grid_h, grid_w).to(x.dtype)
        rotation = self.rotation(grid_h, grid_w, x.device) if self.config.use_rope2d else None
        x = self.transformer(self.ln_pre(x), rotation)
        return self.ln_post(x)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = self.forward_features(images)
        pool = self.config.pool_type
        if pool == "attn":
            x = self.attn_pool(x).squeeze(1)
        elif pool == "tok":
            x = x[:, 0]
        elif pool == "avg":
            x = x.mean(1)
        return x @ self.proj if self.proj is not None else x


class PECoreCLIP(nn.Module):
    """The official CLIP's key layout. Only `visual` is built for inference; with `text` the text tower is
    built too (on the meta device, to list the full official key set; for real, to check its numbers)."""

    def __init__(self, vision: PEVisionConfig, text: PETextConfig | None = None):
        super().__init__()
        if text is not None:
            self.positional_embedding = nn.Parameter(torch.empty(text.context_length, text.width))
            self.text_projection = nn.Parameter(torch.empty(text.width, text.output_dim))
            self.logit_scale = nn.Parameter(torch.empty(()))
            self.token_embedding = nn.Embedding(text.vocab_size, text.width)
            self.transformer = Transformer(text.width, text.layers, text.heads, text.mlp_ratio, None, 1e-5)
            self.ln_final = nn.LayerNorm(text.width)
        self.visual = VisionTransformer(vision)

    def encode_image(self, images: torch.Tensor, normalize: bool = False) -> torch.Tensor:
        x = self.visual(images)
        return F.normalize(x, dim=-1) if normalize else x

    def encode_text(self, tokens: torch.Tensor, normalize: bool = False) -> torch.Tensor:
        """Token ids [B,L] -> [B,output_dim]: causal attention, the state of the highest id (the end-of-text token)
        after ln_final, times text_projection. SAM Audio never calls it; it exists to prove the tower's numbers."""
        if not hasattr(self, "token_embedding"):
            raise RuntimeError("this PE-Core CLIP was built without its text tower")
        length = tokens.shape[1]
        x = self.token_embedding(tokens) + self.positional_embedding[:length]
        causal = torch.full((length, length), float("-inf"), device=x.device).triu(1)
        x = self.ln_final(self.transformer(x, attn_mask=causal.to(x.dtype)))
        x = x[torch.arange(x.shape[0], device=x.device), tokens.argmax(-1)] @ self.text_projection
        return F.normalize(x, dim=-1) if normalize else x


def clip_state_shapes(vision: PEVisionConfig, text: PETextConfig) -> dict[str, torch.Size]:
    """Every key and shape of the official CLIP state dict (visual + text towers), in official order."""
    with torch.device("meta"):
        return {k: v.shape for k, v in PECoreCLIP(vision, text).state_dict().items()}


class VisionEncoder(nn.Module):
    """SAM Audio's `vision_encoder` (official `PerceptionEncoder`): frame preprocessing + PE-Core (`.model`)."""

    def __init__(self, config: VisionEncoderConfig):
        super().__init__()
        self.config = config
        vision, _ = config.towers()
        self.model = PECoreCLIP(vision)

    @property
    def dim(self) -> int:
        return self.config.dim

    def preprocess(self, frames: torch.Tensor) -> torch.Tensor:
        """uint8 [N,H,W,3] RGB -> [N,3,S,S]: resize to S = image_size (bicubic, antialiased, rounded back to
        uint8 as torchvision's Resize does on uint8 tensors), /255, normalise with mean 0.5 / std 0.5."""
        x = resize_frames(frames, self.config.image_size).permute(0, 3, 1, 2).float() / 255.0
        return (x - 0.5) / 0.5

    @torch.inference_mode()
    def encode_frames(self, frames: torch.Tensor, progress: bool = False) -> torch.Tensor:
        """Masked uint8 frames [N,H,W,3] -> features [N, dim] (L2-normalised when normalize_feature), float32 on
        the encoder's device, `batch_size` frames per encoder call (preprocessed on that device too). With
        `progress`, a bar counts frames and calls take at most 25 frames (every frame is encoded on its own, so
        the grouping does not change the result)."""
        from tqdm import tqdm

        weight = self.model.visual.conv1.weight
        step = self.config.batch_size if self.config.batch_size > 0 else max(1, frames.shape[0])
        if progress:
            step = min(step, 25)
        bar = tqdm(total=frames.shape[0], desc="vision encoder", unit="frame", disable=not progress, leave=False)
        out = []
        for i in range(0, frames.shape[0], step):
            images = self.preprocess(frames[i:i + step].to(weight.device)).to(weight.dtype)
            out.append(self.model.encode_image(images, normalize=self.config.normalize_feature).float())
            bar.update(images.shape[0])
        bar.close()
        return torch.cat(out) if out else torch.zeros(0, self.dim, device=weight.device)
