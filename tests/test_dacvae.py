"""DACVAE codec: checkpoint layout, parity with the official code (shared/parity), streaming constants."""

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from samstream.model.dacvae import DACVAE, DACVAEConfig, infer_watermark_widths
from samstream.model.errors import AudioInputError, ModelLoadError

PARITY = Path(__file__).resolve().parents[2] / "shared" / "parity"
PREFIX = "audio_codec."
TOLERANCE = dict(rtol=1e-5, atol=2e-5)


@pytest.fixture(scope="module")
def codec_state() -> dict[str, torch.Tensor]:
    tensors = load_file(PARITY / "model.safetensors")
    return {key[len(PREFIX) :]: value for key, value in tensors.items() if key.startswith(PREFIX)}


@pytest.fixture(scope="module")
def codec(codec_state) -> DACVAE:
    config_json = json.loads((PARITY / "config.json").read_text())
    model = DACVAE(DACVAEConfig.from_dict(config_json["audio_codec"], **infer_watermark_widths(codec_state)))
    model.load_state_dict(codec_state, strict=True)
    return model.eval()


@pytest.fixture(scope="module")
def vectors() -> dict[str, torch.Tensor]:
    return load_file(PARITY / "vectors.safetensors")


def test_config_and_inferred_widths(codec, codec_state):
    widths = json.loads((PARITY / "vectors.json").read_text())["small_model_codec_watermark_widths"]
    assert infer_watermark_widths(codec_state) == {
        "wm_hidden": widths["hidden"],
        "wm_channels": widths["wm_channels"],
        "wm_msg_dim": widths["msg_dim"],
    }
    assert (codec.hop_length, codec.sample_rate, codec.latent_channels) == (8, 200, 16)
    assert codec.config.encoder_rates == (2, 4)
    with pytest.raises(ValueError, match="unknown audio_codec config keys"):
        DACVAEConfig.from_dict({"encoder_dim": 64, "encoder_ratez": [2]})
    with pytest.raises(ValueError, match="watermark widths"):
        DACVAEConfig(wm_hidden=16)
    with pytest.raises(ModelLoadError, match="msg_processor"):
        infer_watermark_widths({k: v for k, v in codec_state.items() if "msg_processor" not in k})


def test_full_size_manifest_on_meta_device():
    manifest = json.loads((PARITY / "keys_large.json").read_text())
    expected = [(key[len(PREFIX) :], shape) for key, shape in manifest["keys"].items() if key.startswith(PREFIX)]
    with torch.device("meta"):
        model = DACVAE(DACVAEConfig.from_dict(manifest["config"]["audio_codec"]))
    assert [(key, list(value.shape)) for key, value in model.state_dict().items()] == expected
    assert sum(p.numel() for p in model.parameters()) == 107_671_171
    assert list(model.buffers()) == []
    assert (model.hop_length, model.latent_channels) == (1920, 128)
    assert model.encoder_context_samples == 9953
    assert model.decoder_context_frames == 8


def test_encode_matches_reference(codec, vectors):
    wav, padded = vectors["codec_encode.input_wav"], vectors["codec_encode.padded_wav"]
    with torch.no_grad():
        encoder_out = codec.encoder(padded)
        torch.testing.assert_close(encoder_out, vectors["codec_encode.encoder_out"], **TOLERANCE)
        in_proj_out = codec.quantizer.in_proj(encoder_out)
        torch.testing.assert_close(in_proj_out, vectors["codec_encode.in_proj_out"], **TOLERANCE)
        latents = codec.encode(wav)
        torch.testing.assert_close(latents, vectors["codec_encode.latent_mean"], **TOLERANCE)
        # encode() reflect-pads exactly as the reference wrapper did.
        assert torch.equal(latents, codec.encode_frames(padded))


def test_decode_matches_reference(codec, vectors):
    latents, message = vectors["codec_decode.latents"], vectors["codec_decode.message"]
    decoder = codec.decoder
    with torch.no_grad():
        features = codec.quantizer.out_proj(latents)
        torch.testing.assert_close(features, vectors["codec_decode.out_proj"], **TOLERANCE)
        main = decoder.main_path(features)
        torch.testing.assert_close(main, vectors["codec_decode.main_path_out"], **TOLERANCE)
        audio = decoder.audio_output(main)
        torch.testing.assert_close(audio, vectors["codec_decode.pre_watermark"], **TOLERANCE)
        wm_in = decoder.wm_model.encoder_block.pre(main)
        torch.testing.assert_close(wm_in, vectors["codec_decode.wm_encoder_out"], **TOLERANCE)
        bottleneck = decoder.watermark_encode(audio)
        torch.testing.assert_close(bottleneck, vectors["codec_decode.wm_bottleneck"], **TOLERANCE)
        signal = decoder.watermark_decode(bottleneck, message)
        torch.testing.assert_close(signal, vectors["codec_decode.watermark_signal"], **TOLERANCE)
        torch.testing.assert_close(codec.decode(latents, message), vectors["codec_decode.wav"], **TOLERANCE)
        torch.testing.assert_close(
            codec.decode(latents, watermark=False), vectors["codec_decode.pre_watermark"], **TOLERANCE
        )


def test_decode_of_separated_latents_matches_reference(codec, vectors):
    # separate() decodes the [B, T, 2C] final state as [2B, C, T]: rows target_0, residual_0, target_1, ...
    state = vectors["sample.final_state"]
    batch, frames, _ = state.shape
    latents = state.transpose(1, 2).reshape(2 * batch, codec.latent_channels, frames)
    with torch.no_grad():
        decoded = codec.decode(latents, vectors["sample.decode_message"])
        pre_watermark = codec.decode(latents, watermark=False)
    torch.testing.assert_close(decoded.reshape(batch, 2, -1), vectors["sample.decoded"], **TOLERANCE)
    torch.testing.assert_close(pre_watermark, vectors["sample.decode_pre_watermark"], **TOLERANCE)


def test_default_message_is_fixed_zeros_and_leaves_rng_alone(codec, vectors):
    latents = vectors["codec_decode.latents"]
    rng_before = torch.get_rng_state()
    with torch.no_grad():
        first, second = codec.decode(latents), codec.decode(latents)
        zeros = codec.decode(latents, torch.zeros(2, 16))
        stored = codec.decode(latents, vectors["codec_decode.message"])
    assert torch.equal(torch.get_rng_state(), rng_before)
    assert torch.equal(first, second) and torch.equal(first, zeros)
    assert (first - stored).abs().max() > 1e-3  # the message really reaches the output


def test_input_errors(codec, vectors):
    with pytest.raises(ValueError, match="multiple of hop 8"):
        codec.encode_frames(torch.zeros(1, 1, 12))
    with pytest.raises(AudioInputError, match="too short"):
        codec.encode(torch.zeros(1, 1, 3))
    latents = vectors["codec_decode.latents"]
    with pytest.raises(ValueError, match="multiple of the watermark downsampling 40"):
        codec.decode(latents[..., :14])
    assert codec.decode(latents[..., :14], watermark=False).shape == (2, 1, 14 * 8)
    with pytest.raises(ValueError, match="watermark message of shape"):
        codec.decode(latents, torch.zeros(2, 8))


def _nonzero_range(gradient: torch.Tensor) -> tuple[int, int]:
    indices = torch.nonzero(gradient.abs().sum(dim=(0, 1))).flatten()
    return int(indices[0]), int(indices[-1])


def test_context_constants_equal_the_measured_receptive_field(codec):
    hop, frame = codec.hop_length, 30
    wav = torch.randn(1, 1, 60 * hop, generator=torch.Generator().manual_seed(1), requires_grad=True)
    # Gradients w.r.t. the input only, so the shared codec's parameters keep no .grad.
    (gradient,) = torch.autograd.grad(codec.encode_frames(wav)[..., frame].sum(), wav)
    context = codec.encoder_context_samples
    assert _nonzero_range(gradient) == (frame * hop - context, frame * hop + hop - 1 + context)

    latents = torch.randn(1, codec.latent_channels, 60, generator=torch.Generator().manual_seed(2), requires_grad=True)
    frame_samples = codec.decode(latents, watermark=False)[..., frame * hop : (frame + 1) * hop]
    (gradient,) = torch.autograd.grad(frame_samples.sum(), latents)
    first, last = _nonzero_range(gradient)
    assert max(frame - first, last - frame) == codec.decoder_context_frames


def test_chunked_encode_equals_whole_encode(codec):
    hop, chunk = codec.hop_length, 8
    context = -(-codec.encoder_context_samples // hop)  # whole frames of context on each side
    wav = torch.randn(1, 1, 80 * hop, generator=torch.Generator().manual_seed(3))

    def chunked(context_frames: int) -> torch.Tensor:
        starts = range(context_frames, 80 - context_frames - chunk + 1, chunk)
        pieces = [
            codec.encode_frames(wav[..., (start - context_frames) * hop : (start + chunk + context_frames) * hop])
            for start in starts
        ]
        return torch.cat([piece[..., context_frames : context_frames + chunk] for piece in pieces], dim=-1), starts

    with torch.no_grad():
        whole = codec.encode(wav)
        joined, starts = chunked(context)
        torch.testing.assert_close(joined, whole[..., starts[0] : starts[-1] + chunk], rtol=0, atol=1e-5)
        short, starts = chunked(context - 1)  # one frame less no longer covers the receptive field
        assert (short - whole[..., starts[0] : starts[-1] + chunk]).abs().max() > 1e-4


def test_chunked_decode_equals_whole_decode(codec):
    hop, chunk, frames = codec.hop_length, 10, 80
    context = codec.decoder_context_frames
    latents = torch.randn(1, codec.latent_channels, frames, generator=torch.Generator().manual_seed(4))
    starts = range(context, frames - context - chunk + 1, chunk)
    with torch.no_grad():
        whole = codec.decode(latents, watermark=False)
        pieces = [
            codec.decode(latents[..., start - context : start + chunk + context], watermark=False)
            for start in starts
        ]
    joined = torch.cat([piece[..., context * hop : (context + chunk) * hop] for piece in pieces], dim=-1)
    torch.testing.assert_close(joined, whole[..., starts[0] * hop : (starts[-1] + chunk) * hop], rtol=0, atol=1e-5)
