"""The one on-disk layout of the networks trained here (model/weights_file.py), through the baseline's loader."""

import json

import pytest
import torch

from samstream.model.errors import ModelLoadError
from samstream.model.training.baseline import BaselineConfig, BaselineModel, load_baseline, save_baseline


def saved(tmp_path, **config):
    model = BaselineModel(BaselineConfig(hidden=32, **config))
    path = tmp_path / "net.safetensors"
    save_baseline(model, path, {"step": 7})
    return model, path


def edit_config(path, **changes):
    info = json.loads(path.with_suffix(".json").read_text())
    info["config"].update(changes)
    path.with_suffix(".json").write_text(json.dumps(info))


def test_round_trip_keeps_weights_config_and_metadata(tmp_path):
    model, path = saved(tmp_path)
    loaded = load_baseline(path)
    assert loaded.config == model.config and not loaded.training
    for (name, a), (_, b) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert torch.equal(a, b), name
    info = json.loads(path.with_suffix(".json").read_text())
    assert info["arch"] == "baseline" and info["step"] == 7 and info["config"]["hidden"] == 32


def test_a_missing_config_names_the_file_and_how_to_get_it(tmp_path):
    _, path = saved(tmp_path)
    path.with_suffix(".json").unlink()
    with pytest.raises(ModelLoadError, match=r"net\.json.*not found: train it with"):
        load_baseline(path)


def test_a_corrupt_weights_file_is_a_clear_error(tmp_path):
    _, path = saved(tmp_path)
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(ModelLoadError, match="cannot read the baseline"):
        load_baseline(path)


def test_weights_of_another_size_than_the_config(tmp_path):
    _, path = saved(tmp_path)
    edit_config(path, hidden=64)
    with pytest.raises(ModelLoadError, match="does not fit its config"):
        load_baseline(path)


def test_an_unknown_config_key_is_named(tmp_path):
    _, path = saved(tmp_path)
    edit_config(path, hiden=32)
    with pytest.raises(ModelLoadError, match="unknown baseline config keys.*hiden"):
        load_baseline(path)
