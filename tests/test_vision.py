"""The PE-Core vision tower (model/vision.py): official layout, the numbers of PE-Core-L14-336, and the forward
pass against a direct re-computation written independently here (no reference tensors of Meta's vision tower
exist, see docs/sam_audio.md)."""

import json
import math
import re

import pytest
import torch
import torch.nn.functional as F
from torch.testing import assert_close

from samstream.model.loading import expected_shapes
from samstream.model.sam_audio import SAMAudio, SAMAudioConfig
from samstream.model.vision import (PECoreCLIP, PETextConfig, PEVisionConfig, VisionEncoderConfig, clip_state_shapes,
                                    rope_2d_angles)
from samstream.model.video import resize_frames

TINY = PEVisionConfig(image_size=16, patch_size=4, width=32, layers=2, heads=2, output_dim=48, attn_pooler_heads=4)


@pytest.mark.parametrize("size", ["small", "base", "large"])
def test_release_layout_with_vision_tower(parity_dir, size):
    """Meta-device build with the vision tower: the manifest keys are unchanged, and vision_encoder.model.*
    (visual + text tower) has exactly the tensor and parameter counts the manifests record for the official
    perception_models build (they list those counts, not the keys)."""
    manifest = json.loads((parity_dir / f"keys_{size}.json").read_text())
    with torch.device("meta"):
        model = SAMAudio(SAMAudioConfig.from_dict(manifest["config"]), vision=True)
    shapes = expected_shapes(model)
    vision = {k: s for k, s in shapes.items() if k.startswith("vision_encoder.")}
    rest = {k: list(s) for k, s in shapes.items() if not k.startswith("vision_encoder.")}
    assert list(rest) == list(manifest["keys"]) and rest == manifest["keys"]
    note = manifest["not_listed"]["vision_encoder.model.*"].replace(",", "")
    tensors, total, visual, text = map(int, re.search(
        r"(\d+) tensors (\d+) parameters \(visual tower (\d+) \+ text tower (\d+)\)", note).groups())
    count = lambda keys: sum(math.prod(vision[k]) for k in keys)  # noqa: E731
    visual_keys = [k for k in vision if k.startswith("vision_encoder.model.visual.")]
    assert len(vision) == tensors == 601
    assert count(visual_keys) == visual and count(set(vision) - set(visual_keys)) == text
    assert count(vision) == total == manifest["parameter_counts"]["vision_encoder_model_not_listed"]
    everything = sum(math.prod(s) for s in shapes.values())
    assert everything == manifest["parameter_counts"]["total_checkpoint_pt_including_vision_encoder"]
    # Only the visual tower is a module of the model; the text tower is checked and dropped by the loader.
    built = {k for k in model.state_dict() if k.startswith("vision_encoder.")}
    assert built == set(visual_keys)


def test_l14_336_numbers_come_from_the_config():
    vision, text = VisionEncoderConfig().towers()
    shapes = clip_state_shapes(vision, text)
    # As perception_models' pe.py builds PE-Core-L14-336 (read from the official source).
    expected = {
        "visual.class_embedding": (1024,),
        "visual.positional_embedding": (1 + 24 * 24, 1024),  # class token + (336 / 14)^2 patches
        "visual.proj": (1024, 1024),
        "visual.conv1.weight": (1024, 3, 14, 14),  # no bias
        "visual.transformer.resblocks.23.attn.in_proj_weight": (3072, 1024),
        "visual.transformer.resblocks.23.mlp.c_fc.weight": (4096, 1024),
        "visual.attn_pool.probe": (1, 1, 1024),
        "visual.attn_pool.attn.in_proj_weight": (3072, 1024),
        "positional_embedding": (32, 1024),
        "token_embedding.weight": (49408, 1024),
        "text_projection": (1024, 1024),
        "logit_scale": (),
    }
    assert {k: tuple(shapes[k]) for k in expected} == expected
    assert "visual.transformer.resblocks.24.attn.in_proj_weight" not in shapes
    assert not any(k.endswith(".gamma") or k == "visual.conv1.bias" for k in shapes)  # no LayerScale, no conv bias
    assert list(shapes)[:3] == ["positional_embedding", "text_projection", "logit_scale"]  # official order


def test_rope_angles_follow_the_official_layout():
    head_dim, grid = 16, 3
    angles = rope_2d_angles(head_dim, grid, grid, cls_token=True)
    assert angles.shape == (1 + grid * grid, head_dim)
    assert torch.equal(angles[0], torch.zeros(head_dim))  # the class token is not rotated
    freqs = torch.tensor([10000 ** (-2 * k / (head_dim // 2)) for k in range(head_dim // 4)])
    for row in range(grid):
        for col in range(grid):
            token = angles[1 + row * grid + col]
            # First half: the column (x) at position col + 1; second half: the row (y); each frequency twice.
            assert_close(token[: head_dim // 2], ((col + 1) * freqs).repeat_interleave(2))
            assert_close(token[head_dim // 2:], ((row + 1) * freqs).repeat_interleave(2))


def direct_encode(clip: PECoreCLIP, images: torch.Tensor) -> torch.Tensor:
    """PE-Core's encode_image(normalize=True) written out from the formulas (complex RoPE, explicit attention)."""
    cfg = clip.visual.config
    sd = {k[len("visual."):]: v for k, v in clip.state_dict().items()}
    heads, hd = cfg.heads, cfg.width // cfg.heads
    batch, grid = images.shape[0], images.shape[-1] // cfg.patch_size
    patches = images.unfold(2, cfg.patch_size, cfg.patch_size).unfold(3, cfg.patch_size, cfg.patch_size)
    patches = patches.permute(0, 2, 3, 1, 4, 5).reshape(batch, grid * grid, -1)  # row-major patches
    x = patches @ sd["conv1.weight"].reshape(cfg.width, -1).T
    x = torch.cat([sd["class_embedding"].expand(batch, 1, -1), x], 1) + sd["positional_embedding"]
    x = F.layer_norm(x, (cfg.width,), sd["ln_pre.weight"], sd["ln_pre.bias"])
    # Complex rotation per token: pair p of the first half turns with the column, of the second with the row.
    freqs = 10000.0 ** (-torch.arange(hd // 4) * 2 / (hd // 2))
    rotation = torch.ones(1 + grid * grid, hd // 2, dtype=torch.complex64)
    for r in range(grid):
        for c in range(grid):
            rotation[1 + r * grid + c] = torch.polar(torch.ones(hd // 2), torch.cat([(c + 1) * freqs, (r + 1) * freqs]))

    def rotate(t):
        pairs = torch.view_as_complex(t.reshape(*t.shape[:-1], -1, 2).contiguous())
        return torch.view_as_real(pairs * rotation).flatten(-2)

    for i in range(cfg.layers):
        p = f"transformer.resblocks.{i}."
        h = F.layer_norm(x, (cfg.width,), sd[p + "ln_1.weight"], sd[p + "ln_1.bias"])
        q, k, v = (h @ sd[p + "attn.in_proj_weight"].T + sd[p + "attn.in_proj_bias"]).split(cfg.width, -1)
        q, k, v = (t.reshape(batch, -1, heads, hd).transpose(1, 2) for t in (q, k, v))
        weights = torch.softmax(rotate(q) @ rotate(k).transpose(-1, -2) / math.sqrt(hd), -1)
        a = (weights @ v).transpose(1, 2).reshape(batch, -1, cfg.width)
        x = x + a @ sd[p + "attn.out_proj.weight"].T + sd[p + "attn.out_proj.bias"]
        h = F.layer_norm(x, (cfg.width,), sd[p + "ln_2.weight"], sd[p + "ln_2.bias"])
        x = x + F.gelu(h @ sd[p + "mlp.c_fc.weight"].T + sd[p + "mlp.c_fc.bias"]) @ sd[p + "mlp.c_proj.weight"].T \
            + sd[p + "mlp.c_proj.bias"]
    x = F.layer_norm(x, (cfg.width,), sd["ln_post.weight"], sd["ln_post.bias"])
    # Attention pooling: standard multi-head attention of the probe over all tokens, then a residual MLP.
    w, b = sd["attn_pool.attn.in_proj_weight"], sd["attn_pool.attn.in_proj_bias"]
    ph, phd = cfg.attn_pooler_heads, cfg.width // cfg.attn_pooler_heads
    q = (sd["attn_pool.probe"] @ w[: cfg.width].T + b[: cfg.width]).reshape(1, 1, ph, phd).transpose(1, 2)
    k = (x @ w[cfg.width: 2 * cfg.width].T + b[cfg.width: 2 * cfg.width]).reshape(batch, -1, ph, phd).transpose(1, 2)
    v = (x @ w[2 * cfg.width:].T + b[2 * cfg.width:]).reshape(batch, -1, ph, phd).transpose(1, 2)
    pooled = (torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(phd), -1) @ v).transpose(1, 2).reshape(batch, 1, -1)
    pooled = pooled @ sd["attn_pool.attn.out_proj.weight"].T + sd["attn_pool.attn.out_proj.bias"]
    h = F.layer_norm(pooled, (cfg.width,), sd["attn_pool.layernorm.weight"], sd["attn_pool.layernorm.bias"])
    pooled = pooled + F.gelu(h @ sd["attn_pool.mlp.c_fc.weight"].T + sd["attn_pool.mlp.c_fc.bias"]) \
        @ sd["attn_pool.mlp.c_proj.weight"].T + sd["attn_pool.mlp.c_proj.bias"]
    return F.normalize(pooled[:, 0] @ sd["proj"], dim=-1)


def random_clip(config: PEVisionConfig = TINY) -> PECoreCLIP:
    torch.manual_seed(0)
    clip = PECoreCLIP(config)
    with torch.no_grad():
        for name, parameter in clip.named_parameters():
            parameter.normal_(0, 1 / math.sqrt(parameter.shape[-1]) if parameter.dim() > 1 else 0.1)
            if name.endswith(("ln_pre.weight", "ln_post.weight", "ln_1.weight", "ln_2.weight", "layernorm.weight")):
                parameter.add_(1.0)
    return clip.eval()


def test_forward_matches_direct_computation():
    clip = random_clip()
    images = torch.randn(3, 3, 16, 16)
    with torch.no_grad():
        ours = clip.encode_image(images, normalize=True)
        direct = direct_encode(clip, images)
    assert ours.shape == (3, 48)
    assert_close(ours, direct, rtol=1e-5, atol=1e-5)
    assert_close(ours.norm(dim=-1), torch.ones(3))
    assert not torch.allclose(ours[0], ours[1])


def test_other_image_sizes_interpolate_the_position_table():
    clip = random_clip()
    with torch.no_grad():
        out = clip.encode_image(torch.randn(2, 3, 24, 20))  # 6 x 5 patches instead of 4 x 4
    assert out.shape == (2, 48) and torch.isfinite(out).all()


def test_preprocess_resizes_like_torchvision_on_uint8_and_normalises(vision_model):
    encoder = vision_model.vision_encoder
    frames = torch.randint(0, 256, (2, 30, 40, 3), dtype=torch.uint8)
    x = encoder.preprocess(frames)
    assert x.shape == (2, 3, 16, 16)
    resized = F.interpolate(frames.permute(0, 3, 1, 2).float(), size=(16, 16), mode="bicubic", align_corners=False,
                            antialias=True).clamp(0, 255).round()
    assert_close(x, (resized / 255 - 0.5) / 0.5)
    assert torch.equal(resize_frames(frames[:, :16, :16], 16), frames[:, :16, :16])  # already that size


def test_encode_frames_in_batches_equals_one_batch(vision_model):
    encoder = vision_model.vision_encoder
    assert encoder.config.batch_size == 3
    frames = torch.randint(0, 256, (7, 20, 20, 3), dtype=torch.uint8)
    chunked = encoder.encode_frames(frames)
    with torch.no_grad():
        whole = encoder.model.encode_image(encoder.preprocess(frames), normalize=True)
    assert chunked.shape == (7, 48)
    assert_close(chunked, whole, rtol=1e-5, atol=1e-6)


def test_unknown_encoder_and_dim_mismatch_are_named():
    with pytest.raises(ValueError, match="unknown vision encoder 'PE-Core-X'"):
        VisionEncoderConfig(name="PE-Core-X").towers()
    with pytest.raises(ValueError, match="gives 1024-d features but vision_encoder.dim is 48"):
        VisionEncoderConfig(dim=48).towers()
    with pytest.raises(ValueError, match="unknown vision_encoder config keys"):
        VisionEncoderConfig.from_dict({"name": "PE-Core-L14-336", "dim": 1024, "colour": 1})
    custom = VisionEncoderConfig(name="tiny", dim=48, architecture=(TINY, PETextConfig()))
    assert VisionEncoderConfig.from_dict(custom.to_dict()) == custom


# -- Meta's numbers: the extras' PE-Core reference tensors, through the user-facing loader ---------------------

@pytest.fixture(scope="module")
def pe_core_vectors():
    from safetensors.torch import load_file

    from fixtures.side_models import EXTRAS

    return load_file(str(EXTRAS / "pe_core" / "vectors.safetensors"))


@pytest.fixture(scope="module")
def pe_core_sam(parity_dir, tmp_path_factory):
    """load_sam_audio on the parity model carrying the extras' PE-Core (official key prefix)."""
    from fixtures.side_models import pe_core_sam_directory
    from samstream.model.loading import load_sam_audio

    return load_sam_audio(pe_core_sam_directory(parity_dir, tmp_path_factory.mktemp("pe_core")), progress=False)


PE_TOLERANCE = dict(rtol=1e-5, atol=5e-5)


@pytest.mark.parametrize("case", ["encode_image", "encode_image_nonsquare"])
def test_encode_image_equals_the_official_pe_core(pe_core_sam, pe_core_vectors, case):
    clip = pe_core_sam.model.vision_encoder.model
    images = pe_core_vectors[f"{case}.pixel_values"]
    captured = []
    hooks = [block.register_forward_hook(lambda m, i, o: captured.append(o)) for block in clip.visual.transformer.resblocks]
    hooks.append(clip.visual.attn_pool.register_forward_hook(lambda m, i, o: captured.append(o)))
    try:
        with torch.inference_mode():
            features = clip.encode_image(images, normalize=True)
            unnormalised = clip.encode_image(images)
            forward_features = clip.visual.forward_features(images)
    finally:
        for hook in hooks:
            hook.remove()
    assert_close(features, pe_core_vectors[f"{case}.features"], **PE_TOLERANCE)
    assert_close(unnormalised, pe_core_vectors[f"{case}.dbg_unnormalized"], **PE_TOLERANCE)
    assert_close(forward_features, pe_core_vectors[f"{case}.dbg_forward_features"], **PE_TOLERANCE)
    for i in range(2):
        assert_close(captured[i], pe_core_vectors[f"{case}.dbg_block{i}"], **PE_TOLERANCE)
    assert_close(captured[2], pe_core_vectors[f"{case}.dbg_pooled"], **PE_TOLERANCE)
    grid = images.shape[-2] // 14, images.shape[-1] // 14
    assert torch.equal(rope_2d_angles(16, *grid, cls_token=True), pe_core_vectors[f"{case}.dbg_rope_freq"][0])


def test_sam_wrapper_equals_the_official_perception_encoder(pe_core_sam, pe_core_vectors):
    """uint8 videos -> torchvision's uint8 bicubic resize, /255, normalise -> features per frame, chunked by
    batch_size (2 here) and zero-padded to the longest video, as the official PerceptionEncoder.forward."""
    encoder = pe_core_sam.model.vision_encoder
    features = torch.zeros(2, 5, 48)
    for i in range(2):
        frames = pe_core_vectors[f"sam_wrapper.video.{i}"].permute(0, 2, 3, 1)  # [T,3,H,W] -> [T,H,W,3]
        assert torch.equal(encoder.preprocess(frames), pe_core_vectors[f"sam_wrapper.dbg_transformed.{i}"])
        encoded = encoder.encode_frames(frames)
        features[i, : encoded.shape[0]] = encoded
    assert_close(features, pe_core_vectors["sam_wrapper.features"], **PE_TOLERANCE)


def test_text_tower_equals_the_official_encode_text(pe_core_vectors):
    """SAM Audio never runs the CLIP text tower (the loader checks and drops it); its numbers are checked here by
    building it with the visual tower from the extras' state dict."""
    from safetensors.torch import load_file

    from fixtures.side_models import EXTRAS

    config = json.loads((EXTRAS / "pe_core" / "config.json").read_text())
    vision = PEVisionConfig(**{k: v for k, v in config["vision"].items() if k != "drop_path"})
    clip = PECoreCLIP(vision, PETextConfig(**config["text"]))
    clip.load_state_dict(load_file(str(EXTRAS / "pe_core" / "model.safetensors")), strict=True)
    with torch.inference_mode():
        features = clip.encode_text(pe_core_vectors["encode_text.input_ids"], normalize=True)
    assert_close(features, pe_core_vectors["encode_text.features"], **PE_TOLERANCE)


def test_a_perturbed_pe_core_weight_breaks_parity(parity_dir, tmp_path, pe_core_vectors):
    from fixtures.side_models import pe_core_sam_directory
    from samstream.model.loading import load_sam_audio

    directory = pe_core_sam_directory(parity_dir, tmp_path, perturb="visual.attn_pool.attn.in_proj_weight")
    clip = load_sam_audio(directory, progress=False).model.vision_encoder.model
    with torch.inference_mode():
        features = clip.encode_image(pe_core_vectors["encode_image.pixel_values"], normalize=True)
    with pytest.raises(AssertionError):
        assert_close(features, pe_core_vectors["encode_image.features"], **PE_TOLERANCE)


def test_l14_336_layout_equals_the_official_manifest():
    """pe.CLIP.from_config('PE-Core-L14-336') built on the meta device (extras manifest, exact): keys, shapes, order."""
    from fixtures.side_models import EXTRAS

    manifest = json.loads((EXTRAS / "pe_core" / "keys_pe_core_l14_336.json").read_text())
    shapes = {k: list(v) for k, v in clip_state_shapes(*VisionEncoderConfig().towers()).items()}
    assert list(shapes.items()) == list(manifest["keys"].items())
    assert sum(math.prod(s) for s in shapes.values()) == manifest["num_parameters"] == 671_137_793
