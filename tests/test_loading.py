"""Loading official-format checkpoints from a local directory, and the errors users get when it fails."""

import json
import shutil

import pytest
import torch

from samstream.model.errors import ModelLoadError
from samstream.model.loading import load_sam_audio


@pytest.fixture
def model_dir(tmp_path, parity_dir):
    shutil.copy(parity_dir / "config.json", tmp_path / "config.json")
    shutil.copy(parity_dir / "checkpoint.pt", tmp_path / "checkpoint.pt")
    return tmp_path


def test_checkpoint_pt_and_safetensors_load_the_same_weights(parity_dir, model_dir):
    from_safetensors = load_sam_audio(parity_dir, progress=False).model.state_dict()
    from_pt = load_sam_audio(model_dir, progress=False).model.state_dict()
    assert from_pt.keys() == from_safetensors.keys()
    assert all(torch.equal(from_pt[k], from_safetensors[k]) for k in from_pt)


def test_directory_without_config_names_what_is_missing(tmp_path):
    (tmp_path / "weights.bin").write_bytes(b"x")
    with pytest.raises(ModelLoadError, match="no config.json.*weights.bin"):
        load_sam_audio(tmp_path, progress=False)


def test_missing_directory(tmp_path):
    with pytest.raises(ModelLoadError, match="does not exist"):
        load_sam_audio(tmp_path / "nope", progress=False)


def test_directory_without_checkpoint(tmp_path, parity_dir):
    shutil.copy(parity_dir / "config.json", tmp_path / "config.json")
    with pytest.raises(ModelLoadError, match="holds no checkpoint"):
        load_sam_audio(tmp_path, progress=False)


def test_truncated_checkpoint(model_dir):
    data = (model_dir / "checkpoint.pt").read_bytes()
    (model_dir / "checkpoint.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelLoadError, match="corrupt or truncated"):
        load_sam_audio(model_dir, progress=False)


def test_corrupt_safetensors(tmp_path, parity_dir):
    shutil.copy(parity_dir / "config.json", tmp_path / "config.json")
    (tmp_path / "model.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all}")
    with pytest.raises(ModelLoadError, match="corrupt or truncated"):
        load_sam_audio(tmp_path, progress=False)


def test_checkpoint_of_another_size_than_its_config(model_dir):
    config = json.loads((model_dir / "config.json").read_text())
    config["transformer"]["dim"] = 128
    config["transformer"]["context_dim"] = 128
    (model_dir / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelLoadError, match="another shape than config.json implies.*transformer"):
        load_sam_audio(model_dir, progress=False)


def test_missing_and_unexpected_keys_are_listed(model_dir):
    state = torch.load(model_dir / "checkpoint.pt", weights_only=True)
    del state["memory_proj.bias"]
    state["transformer.extra.weight"] = torch.zeros(1)
    torch.save(state, model_dir / "checkpoint.pt")
    with pytest.raises(ModelLoadError) as error:
        load_sam_audio(model_dir, progress=False)
    assert "1 missing keys: memory_proj.bias" in str(error.value)
    assert "1 unexpected keys: transformer.extra.weight" in str(error.value)


def test_skipped_prefixes_are_set_aside(model_dir):
    state = torch.load(model_dir / "checkpoint.pt", weights_only=True)
    state["text_ranker.model.weight"] = torch.zeros(2)
    state["span_predictor.head.weight"] = torch.zeros(2)
    torch.save(state, model_dir / "checkpoint.pt")
    loaded = load_sam_audio(model_dir, progress=False)
    assert loaded.set_aside == {"text_ranker.": 1, "span_predictor.": 1}
    assert loaded.model.vision_encoder is None  # no vision_encoder.model.*: no vision tower, and that is fine


def test_checkpoint_with_vision_tower_loads_it(vision_model_dir):
    """A checkpoint in the official layout with a (tiny) PE-Core CLIP: the visual tower is built and loaded
    strictly, the text tower is checked and dropped."""
    loaded = load_sam_audio(vision_model_dir, progress=False)
    model = loaded.model
    state = torch.load(vision_model_dir / "checkpoint.pt", weights_only=True)
    visual = {k: v for k, v in model.state_dict().items() if k.startswith("vision_encoder.")}
    assert visual and all(k.startswith("vision_encoder.model.visual.") for k in visual)
    assert all(torch.equal(v, state[k]) for k, v in visual.items())
    text_tower = [k for k in state if k.startswith("vision_encoder.model.") and ".visual." not in k]
    assert loaded.set_aside == {"vision_encoder.model. (PE text tower, unused)": len(text_tower)} and text_tower
    assert not any(t.is_meta for t in model.state_dict().values())
    features = model.vision_encoder.encode_frames(torch.zeros(2, 16, 16, 3, dtype=torch.uint8))
    assert features.shape == (2, 48) and torch.isfinite(features).all()


@pytest.mark.parametrize("change,message", [
    ("drop_visual", "1 missing keys: vision_encoder.model.visual.attn_pool.probe"),
    ("drop_text", "1 missing keys: vision_encoder.model.logit_scale"),
    ("reshape", "vision_encoder.model.visual.proj: checkpoint \\(32, 7\\) vs config \\(32, 48\\)"),
])
def test_incomplete_vision_tower_is_named(tmp_path, vision_model_dir, change, message):
    shutil.copy(vision_model_dir / "config.json", tmp_path / "config.json")
    state = torch.load(vision_model_dir / "checkpoint.pt", weights_only=True)
    if change == "drop_visual":
        del state["vision_encoder.model.visual.attn_pool.probe"]
    elif change == "drop_text":
        del state["vision_encoder.model.logit_scale"]
    else:
        state["vision_encoder.model.visual.proj"] = torch.zeros(32, 7)
    torch.save(state, tmp_path / "checkpoint.pt")
    with pytest.raises(ModelLoadError, match=message) as error:
        load_sam_audio(tmp_path, progress=False)
    assert "remove every vision_encoder.model.* tensor" in str(error.value)


def test_vision_tower_of_an_unknown_encoder_is_a_config_error(tmp_path, vision_model_dir):
    shutil.copy(vision_model_dir / "checkpoint.pt", tmp_path / "checkpoint.pt")
    config = json.loads((vision_model_dir / "config.json").read_text())
    del config["vision_encoder"]["architecture"]
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelLoadError, match="unknown vision encoder 'PE-Core-test'"):
        load_sam_audio(tmp_path, progress=False)


def test_invalid_config_json(model_dir):
    (model_dir / "config.json").write_text("{ not json")
    with pytest.raises(ModelLoadError, match="not valid JSON"):
        load_sam_audio(model_dir, progress=False)
