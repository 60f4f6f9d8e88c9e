"""DACVAE, the audio codec of SAM Audio (the `audio_codec.` submodule of an official checkpoint).

A clean-room re-implementation of facebookresearch/dacvae as wrapped by sam_audio/model/codec.py:
DAC's convolutional encoder/decoder with a VAE bottleneck (SAM uses only the mean) and an always-on,
AudioSeal-style watermark branch in the decoder. Module names reproduce the official state-dict
keys exactly (prefix `audio_codec.` stripped), including legacy weight-norm `weight_g`/`weight_v`,
so an official checkpoint loads with `strict=True`.

Main path (encoder, bottleneck, decoder up to the tanh output) is non-causal with centred zero
padding; its receptive field gives the context a chunked/streaming caller needs
(`encoder_context_samples`, `decoder_context_frames`). The watermark branch is strictly causal.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .errors import AudioInputError, ModelLoadError

# The official Decoder blends with alpha = wm_channels / d_wm_out from its own defaults (32 / 128); the
# value stays 0.25 even when the watermark widths are changed, so it is not derived from the config.
WATERMARK_BLEND = 32 / 128
WATERMARK_LSTM_LAYERS = 2
# Channel reduction of the watermark convolutions inside each DecoderBlock (official downsampling_factor).
WATERMARK_CHANNEL_DIVISOR = 3

# Keys of the official `audio_codec` config that inference never uses.
_UNUSED_CONFIG_KEYS = frozenset({"n_codebooks", "codebook_size", "quantizer_dropout", "mean", "std"})


@dataclass(frozen=True)
class DACVAEConfig:
    """Codec sizes. Defaults are the released SAM Audio codec (48 kHz, hop 1920, 128 latent channels)."""

    encoder_dim: int = 64
    encoder_rates: tuple[int, ...] = (2, 8, 10, 12)
    latent_dim: int = 1024
    decoder_dim: int = 1536
    decoder_rates: tuple[int, ...] = (12, 10, 8, 2)
    codebook_dim: int = 128  # C, the latent channels SAM works on (the VAE mean)
    sample_rate: int = 48000
    # Watermark widths: hard-coded in the official Decoder (not in config.json); read them from a
    # checkpoint with `infer_watermark_widths` when it may be a shrunk test model.
    wm_hidden: int = 512
    wm_channels: int = 32
    wm_msg_dim: int = 128
    # Decoder block i uses watermark stride wm_rates[i]; a shorter decoder uses the prefix.
    wm_rates: tuple[int, ...] = (8, 5, 4, 2)
    wm_bits: int = 16

    def __post_init__(self) -> None:
        n_blocks = len(self.decoder_rates)
        if n_blocks > len(self.wm_rates):
            raise ValueError(f"{n_blocks} decoder blocks but only {len(self.wm_rates)} watermark rates {self.wm_rates}")
        # The watermark LSTMs and convs are wired to the channel counts of the first and last decoder
        # block, so only these widths give a model that runs.
        expected_hidden = self.decoder_dim // WATERMARK_CHANNEL_DIVISOR
        expected_channels = (self.decoder_dim // 2**n_blocks) // WATERMARK_CHANNEL_DIVISOR
        if (self.wm_hidden, self.wm_channels) != (expected_hidden, expected_channels):
            raise ValueError(
                f"watermark widths hidden={self.wm_hidden}, channels={self.wm_channels} do not fit "
                f"decoder_dim={self.decoder_dim} with {n_blocks} blocks (needs {expected_hidden}, {expected_channels})"
            )

    @classmethod
    def from_dict(cls, config: dict, **overrides) -> DACVAEConfig:
        """Build from the official `config.json["audio_codec"]` dict; `overrides` win over its values."""
        known = {f.name for f in fields(cls)}
        merged = {**config, **overrides}
        unknown = set(merged) - known - _UNUSED_CONFIG_KEYS
        if unknown:
            raise ValueError(f"unknown audio_codec config keys {sorted(unknown)}")
        # The official wrapper normalises latents with (z - mean) / std; only the identity is implemented.
        if merged.get("mean", 0.0) != 0.0 or merged.get("std", 1.0) != 1.0:
            raise ValueError(f"latent mean/std {merged.get('mean')}/{merged.get('std')} are not supported (need 0/1)")
        values = {key: value for key, value in merged.items() if key in known}
        for key in ("encoder_rates", "decoder_rates", "wm_rates"):
            if key in values:
                values[key] = tuple(values[key])
        return cls(**values)


def infer_watermark_widths(state_dict: dict[str, Tensor]) -> dict[str, int]:
    """Watermark widths {wm_hidden, wm_channels, wm_msg_dim} read from codec tensor shapes.

    `state_dict` holds the codec keys without the `audio_codec.` prefix.
    """
    shape_sources = {
        "wm_hidden": ("decoder.wm_model.decoder_block.pre.0.weight", 0),
        "wm_channels": ("decoder.wm_model.encoder_block.pre.3.weight", 0),
        "wm_msg_dim": ("decoder.wm_model.msg_processor.msg_processor.weight", 1),
    }
    widths = {}
    for name, (key, dim) in shape_sources.items():
        if key not in state_dict:
            raise ModelLoadError(f"codec checkpoint lacks '{key}'; it is not a DACVAE codec state dict")
        widths[name] = int(state_dict[key].shape[dim])
    return widths


# ---------------------------------------------------------------------------------------------------
# Layers


def snake(x: Tensor, alpha: Tensor) -> Tensor:
    # Same operation order as the official scripted snake (float rounding parity).
    return x + (alpha + 1e-9).reciprocal() * torch.sin(alpha * x).pow(2)


class Snake1d(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.alpha = nn.Parameter(torch.ones(1, channels, 1))

    def forward(self, x: Tensor) -> Tensor:
        return snake(x, self.alpha)


def _ceil_div(a: int, b: int) -> int:
    return -((-a) // b)


class _WeightNorm(nn.Module):
    """Legacy weight norm: parameters `bias`, `weight_g`, `weight_v` (in that state-dict order).

    Effective weight = g · v / ‖v‖, the L2 norm over every dim except 0, no epsilon. Dim 0 is the
    output channel of a Conv1d but the input channel of a ConvTranspose1d.
    """

    def _init_weight_norm(self, weight_shape: tuple[int, int, int], bias_size: int) -> None:
        # Registration order fixes the state-dict order: bias first, as left by torch's weight_norm.
        self.bias = nn.Parameter(torch.zeros(bias_size))
        self.weight_g = nn.Parameter(torch.empty(weight_shape[0], 1, 1))
        self.weight_v = nn.Parameter(torch.empty(weight_shape))
        with torch.no_grad():
            nn.init.trunc_normal_(self.weight_v, std=0.02)
            self.weight_g.copy_(torch.linalg.vector_norm(self.weight_v, dim=(1, 2), keepdim=True))

    def weight(self) -> Tensor:
        return self.weight_v * (self.weight_g / torch.linalg.vector_norm(self.weight_v, dim=(1, 2), keepdim=True))


class WeightNormConv1d(_WeightNorm):
    """Centred Conv1d with zero padding (kernel − stride)·dilation // 2, as the official pad_mode "none"."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1, dilation: int = 1):
        super().__init__()
        self.kernel_size, self.stride, self.dilation = kernel_size, stride, dilation
        self.padding = (kernel_size - stride) * dilation // 2
        self._init_weight_norm((out_channels, in_channels, kernel_size), out_channels)

    def forward(self, x: Tensor) -> Tensor:
        return F.conv1d(x, self.weight(), self.bias, self.stride, self.padding, self.dilation)

    def input_span(self, lo: int, hi: int) -> tuple[int, int]:
        """Input indices that output indices lo..hi depend on (indices outside the input are padding)."""
        return lo * self.stride - self.padding, hi * self.stride - self.padding + (self.kernel_size - 1) * self.dilation


class WeightNormConvTranspose1d(_WeightNorm):
    """Centred ConvTranspose1d: padding ⌈stride/2⌉, output_padding stride mod 2, so length × stride exactly."""

    def __init__(self, in_channels: int, out_channels: int, stride: int):
        super().__init__()
        self.kernel_size, self.stride = 2 * stride, stride
        self.padding, self.output_padding = (stride + 1) // 2, stride % 2
        self._init_weight_norm((in_channels, out_channels, self.kernel_size), out_channels)

    def forward(self, x: Tensor) -> Tensor:
        return F.conv_transpose1d(x, self.weight(), self.bias, self.stride, self.padding, self.output_padding)

    def input_span(self, lo: int, hi: int) -> tuple[int, int]:
        """Input indices that output indices lo..hi depend on."""
        return _ceil_div(lo + self.padding - (self.kernel_size - 1), self.stride), (hi + self.padding) // self.stride


class CausalConv1d(nn.Conv1d):
    """Plain Conv1d padded like the official pad_mode "auto", causal: all padding on the left except the
    extra right zeros that make the last (partial) stride window complete."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1):
        super().__init__(in_channels, out_channels, kernel_size, stride=stride)

    def forward(self, x: Tensor) -> Tensor:
        length = x.shape[-1]
        kernel_size, stride = self.kernel_size[0], self.stride[0]
        padding_total = kernel_size - stride
        n_frames = (length - kernel_size + padding_total) / stride + 1
        ideal_length = (math.ceil(n_frames) - 1) * stride + (kernel_size - padding_total)
        return super().forward(F.pad(x, (padding_total, ideal_length - length)))


class CausalConvTranspose1d(nn.ConvTranspose1d):
    """Plain ConvTranspose1d (kernel 2·stride) with the kernel − stride overhang trimmed on the right."""

    def __init__(self, in_channels: int, out_channels: int, stride: int):
        super().__init__(in_channels, out_channels, 2 * stride, stride=stride)

    def forward(self, x: Tensor) -> Tensor:
        y = super().forward(x)
        return y[..., : y.shape[-1] - (self.kernel_size[0] - self.stride[0])]


class SnakeResidualUnit(nn.Module):
    """Snake → centred conv k7 (dilated) → Snake → conv k1, plus the input."""

    def __init__(self, dim: int, dilation: int):
        super().__init__()
        self.block = nn.Sequential(
            Snake1d(dim), WeightNormConv1d(dim, dim, 7, dilation=dilation), Snake1d(dim), WeightNormConv1d(dim, dim, 1)
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.block(x) + x


class CausalELUResidualUnit(nn.Module):
    """Watermark-branch residual unit: ELU → causal conv k3 to dim/2 → ELU → conv k1 back, plus the input."""

    def __init__(self, dim: int):
        super().__init__()
        hidden = dim // 2
        self.block = nn.Sequential(nn.ELU(), CausalConv1d(dim, hidden, 3), nn.ELU(), CausalConv1d(hidden, dim, 1))

    def forward(self, x: Tensor) -> Tensor:
        return self.block(x) + x


class LSTMBlock(nn.Module):
    """2-layer LSTM over time with a skip connection; input/output [B, C, T]."""

    def __init__(self, dim: int):
        super().__init__()
        self.lstm = nn.LSTM(dim, dim, WATERMARK_LSTM_LAYERS)

    def forward(self, x: Tensor) -> Tensor:
        x = x.permute(2, 0, 1)
        y, _ = self.lstm(x)
        return (y + x).permute(1, 2, 0)


# ---------------------------------------------------------------------------------------------------
# Encoder and bottleneck


class EncoderBlock(nn.Module):
    def __init__(self, dim: int, stride: int):
        super().__init__()
        self.block = nn.Sequential(
            SnakeResidualUnit(dim // 2, 1),
            SnakeResidualUnit(dim // 2, 3),
            SnakeResidualUnit(dim // 2, 9),
            Snake1d(dim // 2),
            WeightNormConv1d(dim // 2, dim, 2 * stride, stride=stride),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.block(x)


class Encoder(nn.Module):
    def __init__(self, dim: int, rates: tuple[int, ...], latent_dim: int):
        super().__init__()
        layers: list[nn.Module] = [WeightNormConv1d(1, dim, 7)]
        for stride in rates:
            dim *= 2
            layers.append(EncoderBlock(dim, stride))
        layers += [Snake1d(dim), WeightNormConv1d(dim, latent_dim, 3)]
        self.block = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.block(x)


class VAEBottleneck(nn.Module):
    """in_proj: latent_dim → 2C (mean ‖ scale); out_proj: C → latent_dim. SAM uses the mean only."""

    def __init__(self, latent_dim: int, codebook_dim: int):
        super().__init__()
        self.in_proj = WeightNormConv1d(latent_dim, 2 * codebook_dim, 1)
        self.out_proj = WeightNormConv1d(codebook_dim, latent_dim, 1)


# ---------------------------------------------------------------------------------------------------
# Decoder with watermark branch


class DecoderBlock(nn.Module):
    """One upsampling stage. The official block interleaves two networks in one ModuleList:

    - main path (indices 0, 1, 4, 5, 8, 9): Snake → ConvTranspose ×stride → 3 Snake residual units
      (dilations 1, 3, 9; index 9 is an Identity slot);
    - watermark convs at a third of the width, going up (2, 3, 6: ELU → causal ConvTranspose
      ×wm_stride → ELU residual unit) and down (7, 10, 11: ELU residual unit → ELU → causal strided conv).
    """

    def __init__(self, input_dim: int, output_dim: int, stride: int, wm_stride: int):
        super().__init__()
        wm_in, wm_out = input_dim // WATERMARK_CHANNEL_DIVISOR, output_dim // WATERMARK_CHANNEL_DIVISOR
        self.block = nn.ModuleList(
            [
                Snake1d(input_dim),
                WeightNormConvTranspose1d(input_dim, output_dim, stride),
                nn.ELU(),
                CausalConvTranspose1d(wm_in, wm_out, wm_stride),
                SnakeResidualUnit(output_dim, 1),
                SnakeResidualUnit(output_dim, 3),
                CausalELUResidualUnit(wm_out),
                CausalELUResidualUnit(wm_out),
                SnakeResidualUnit(output_dim, 9),
                nn.Identity(),
                nn.ELU(),
                CausalConv1d(wm_out, wm_in, 2 * wm_stride, stride=wm_stride),
            ]
        )

    def _run(self, indices: tuple[int, ...], x: Tensor) -> Tensor:
        for index in indices:
            x = self.block[index](x)
        return x

    def forward(self, x: Tensor) -> Tensor:
        return self._run((0, 1, 4, 5, 8, 9), x)

    def watermark_down(self, h: Tensor) -> Tensor:
        """Time ÷ wm_stride, channels output_dim/3 → input_dim/3 (official `upsample_group`)."""
        return self._run((7, 10, 11), h)

    def watermark_up(self, h: Tensor) -> Tensor:
        """Time × wm_stride, channels input_dim/3 → output_dim/3 (official `downsample_group`)."""
        return self._run((2, 3, 6), h)


class WatermarkEncoderBlock(nn.Module):
    """pre: Snake → conv to 1 channel → tanh (the decoder's real audio output) → causal conv to wm_channels.
    post: LSTM → ELU → causal conv to msg_dim (applied after the blocks' watermark_down stages)."""

    def __init__(self, in_dim: int, msg_dim: int, wm_channels: int, hidden: int):
        super().__init__()
        self.pre = nn.Sequential(
            Snake1d(in_dim), WeightNormConv1d(in_dim, 1, 7), nn.Tanh(), CausalConv1d(1, wm_channels, 7)
        )
        self.post = nn.Sequential(LSTMBlock(hidden), nn.ELU(), CausalConv1d(hidden, msg_dim, 7))


class MsgProcessor(nn.Module):
    """Adds the message embedding: row 2·bit_index + bit_value, summed over bits, broadcast over time."""

    def __init__(self, nbits: int, msg_dim: int):
        super().__init__()
        self.msg_processor = nn.Embedding(2 * nbits, msg_dim)

    def forward(self, hidden: Tensor, message: Tensor) -> Tensor:
        indices = 2 * torch.arange(message.shape[-1], device=hidden.device) + message.to(hidden.device).long()
        return hidden + self.msg_processor(indices).sum(dim=-2).unsqueeze(-1)


class WatermarkDecoderBlock(nn.Module):
    """pre: causal conv msg_dim → hidden → LSTM. post: ELU → causal conv wm_channels → 1."""

    def __init__(self, msg_dim: int, wm_channels: int, hidden: int):
        super().__init__()
        self.pre = nn.Sequential(CausalConv1d(msg_dim, hidden, 7), LSTMBlock(hidden))
        self.post = nn.Sequential(nn.ELU(), CausalConv1d(wm_channels, 1, 7))


class Watermarker(nn.Module):
    def __init__(self, config: DACVAEConfig, last_dim: int):
        super().__init__()
        self.encoder_block = WatermarkEncoderBlock(last_dim, config.wm_msg_dim, config.wm_channels, config.wm_hidden)
        self.msg_processor = MsgProcessor(config.wm_bits, config.wm_msg_dim)
        self.decoder_block = WatermarkDecoderBlock(config.wm_msg_dim, config.wm_channels, config.wm_hidden)


class Decoder(nn.Module):
    def __init__(self, config: DACVAEConfig):
        super().__init__()
        dim = config.decoder_dim
        layers: list[nn.Module] = [WeightNormConv1d(config.latent_dim, dim, 7)]
        for i, (stride, wm_stride) in enumerate(zip(config.decoder_rates, config.wm_rates)):
            layers.append(DecoderBlock(dim // 2**i, dim // 2 ** (i + 1), stride, wm_stride))
        self.model = nn.ModuleList(layers)
        self.wm_model = Watermarker(config, dim // 2 ** len(config.decoder_rates))
        self.watermark_factor = math.prod(config.wm_rates[: len(config.decoder_rates)])

    @property
    def blocks(self) -> list[DecoderBlock]:
        return list(self.model)[1:]

    def main_path(self, x: Tensor) -> Tensor:
        """[B, latent_dim, T] → [B, decoder_dim / 2^n, T·hop], the last DecoderBlock's output."""
        for layer in self.model:
            x = layer(x)
        return x

    def audio_output(self, features: Tensor) -> Tensor:
        """The tanh path: Snake → conv to 1 channel → tanh, i.e. the output without watermark."""
        return self.wm_model.encoder_block.pre[:3](features)

    def watermark_encode(self, audio: Tensor) -> Tensor:
        """Causal branch from the tanh output down to the message bottleneck [B, msg_dim, S / prod(wm_rates)]."""
        h = self.wm_model.encoder_block.pre[3](audio)
        for block in reversed(self.blocks):
            h = block.watermark_down(h)
        return self.wm_model.encoder_block.post(h)

    def watermark_decode(self, bottleneck: Tensor, message: Tensor) -> Tensor:
        """Adds the message and comes back up to the watermark signal [B, 1, S] (before the 0.25 blend)."""
        h = self.wm_model.decoder_block.pre(self.wm_model.msg_processor(bottleneck, message))
        for block in self.blocks:
            h = block.watermark_up(h)
        return self.wm_model.decoder_block.post(h)

    def forward(self, x: Tensor, message: Tensor | None) -> Tensor:
        """message None: tanh path only; otherwise tanh path + 0.25 · watermark signal."""
        audio = self.audio_output(self.main_path(x))
        if message is None:
            return audio
        return audio + WATERMARK_BLEND * self.watermark_decode(self.watermark_encode(audio), message)


# ---------------------------------------------------------------------------------------------------
# Codec


def _check_waveform(wav: Tensor) -> None:
    if wav.dim() != 3 or wav.shape[1] != 1:
        raise ValueError(f"expected a waveform [B, 1, S], got shape {tuple(wav.shape)}")


def _receptive_span(layers: list[nn.Module], lo: int, hi: int) -> tuple[int, int]:
    """Map an output index interval back through `layers` (forward order) to the input interval it reads."""
    for layer in reversed(layers):
        lo, hi = layer.input_span(lo, hi)
    return lo, hi


class DACVAE(nn.Module):
    """The SAM Audio codec. `state_dict()` keys equal the official `audio_codec.*` keys without prefix."""

    def __init__(self, config: DACVAEConfig):
        super().__init__()
        self.config = config
        self.encoder = Encoder(config.encoder_dim, config.encoder_rates, config.latent_dim)
        self.quantizer = VAEBottleneck(config.latent_dim, config.codebook_dim)
        self.decoder = Decoder(config)
        self.encoder_context_samples = self._encoder_context_samples()
        self.decoder_context_frames = self._decoder_context_frames()

    @property
    def hop_length(self) -> int:
        return math.prod(self.config.encoder_rates)

    @property
    def sample_rate(self) -> int:
        return self.config.sample_rate

    @property
    def latent_channels(self) -> int:
        return self.config.codebook_dim

    def _encoder_context_samples(self) -> int:
        """One-sided context: latent frame j reads samples [hop·j − ctx, hop·j + hop − 1 + ctx]."""
        # Every conv of the encoder is a centred WeightNormConv1d, registered in forward order.
        convs = [m for m in self.encoder.modules() if isinstance(m, WeightNormConv1d)] + [self.quantizer.in_proj]
        lo, hi = _receptive_span(convs, 0, 0)
        return max(-lo, hi - (self.hop_length - 1))

    def _decoder_context_frames(self) -> int:
        """One-sided latent context: the samples of frame f (up to the tanh output) read frames f ± ctx."""
        # On the main path every conv is weight-normalised and none of the causal watermark convs is.
        weight_norm_convs = (WeightNormConv1d, WeightNormConvTranspose1d)
        main_convs = [m for m in self.decoder.model.modules() if isinstance(m, weight_norm_convs)]
        layers = [self.quantizer.out_proj, *main_convs, self.decoder.wm_model.encoder_block.pre[1]]
        lo, hi = _receptive_span(layers, 0, self.hop_length - 1)
        return max(-lo, hi)

    @property
    def decode_frame_multiple(self) -> int:
        """Watermarked decoding needs T to be a multiple of this (1 for the released codec, 5 for the parity one)."""
        factor = self.decoder.watermark_factor
        return factor // math.gcd(self.hop_length, factor)

    def encode(self, wav: Tensor) -> Tensor:
        """[B, 1, S] → VAE mean [B, C, ceil(S / hop)], as the official wrapper: the waveform is reflect-padded
        on the right to a multiple of hop first (no sampling, no normalisation)."""
        _check_waveform(wav)
        length = wav.shape[-1]
        pad = -length % self.hop_length
        if pad >= length:
            raise AudioInputError(
                f"audio of {length} samples is too short to encode: reflect padding to the codec hop "
                f"({self.hop_length}) needs more than {pad} samples; pass longer audio"
            )
        return self.encode_frames(F.pad(wav, (0, pad), mode="reflect") if pad else wav)

    def encode_frames(self, wav: Tensor) -> Tensor:
        """[B, 1, k·hop] → [B, C, k] without padding: for chunks cut at frame boundaries (with context)."""
        _check_waveform(wav)
        if wav.shape[-1] % self.hop_length:
            raise ValueError(f"encode_frames needs a multiple of hop {self.hop_length} samples, got {wav.shape[-1]}")
        mean_and_scale = self.quantizer.in_proj(self.encoder(wav))
        return mean_and_scale[:, : self.latent_channels]

    def decode(self, latents: Tensor, message: Tensor | None = None, watermark: bool = True) -> Tensor:
        """[B, C, T] → waveform [B, 1, T·hop].

        watermark=True: tanh path + 0.25 · watermark signal carrying `message` ([B, 16] bits 0/1). When
        message is None a fixed all-zeros message is used so decoding is deterministic; the official
        decoder instead draws random bits from the global torch RNG on every call (pass those bits to
        reproduce it). watermark=False returns the tanh path only (the pre-watermark output).
        """
        if latents.dim() != 3 or latents.shape[1] != self.latent_channels:
            raise ValueError(f"expected latents [B, {self.latent_channels}, T], got shape {tuple(latents.shape)}")
        if watermark:
            length = latents.shape[-1] * math.prod(self.config.decoder_rates)
            if length % self.decoder.watermark_factor:
                # The official code crashes here: the watermark branch comes back with another length.
                raise ValueError(
                    f"watermarked decode needs T·hop ({length}) to be a multiple of the watermark "
                    f"downsampling {self.decoder.watermark_factor}; decode with watermark=False or pad the latents"
                )
            expected = (latents.shape[0], self.config.wm_bits)
            if message is None:
                message = torch.zeros(expected, device=latents.device)
            elif tuple(message.shape) != expected:
                raise ValueError(f"expected a watermark message of shape {expected}, got {tuple(message.shape)}")
        else:
            message = None
        return self.decoder(self.quantizer.out_proj(latents), message)
