"""Side models (model/components.py): found where users keep them, loaded only when asked for, strictly, with
their memory reported and errors that name what is missing."""

import json

import pytest
import torch

from fixtures.side_models import side_model_directory
from samstream.model.components import (JUDGE, SPAN_PREDICTOR, SideModels, find_component, load_judge,
                                        load_span_predictor)
from samstream.model.errors import ModelLoadError


def test_search_order_explicit_then_environment_then_the_sam_directory(tmp_path, monkeypatch):
    sam = tmp_path / "sam"
    named = side_model_directory("pe_a_frame", sam / "pe-a-frame-large")
    env = side_model_directory("pe_a_frame", tmp_path / "env")
    explicit = side_model_directory("pe_a_frame", tmp_path / "explicit")
    monkeypatch.delenv(SPAN_PREDICTOR.environment, raising=False)
    assert find_component(SPAN_PREDICTOR, None, sam, ("pe-a-frame-large",)) == named
    monkeypatch.setenv(SPAN_PREDICTOR.environment, str(env))
    assert find_component(SPAN_PREDICTOR, None, sam) == env
    assert find_component(SPAN_PREDICTOR, explicit, sam) == explicit


def test_missing_component_names_every_place_and_the_flag(tmp_path, monkeypatch):
    monkeypatch.delenv(JUDGE.environment, raising=False)
    with pytest.raises(ModelLoadError) as error:
        find_component(JUDGE, None, tmp_path, ("sam-audio-judge",))
    message = str(error.value)
    assert "SAM Audio Judge" in message and "--judge DIR" in message and JUDGE.environment in message
    assert str(tmp_path / "sam-audio-judge") in message and str(tmp_path / "judge") in message
    with pytest.raises(ModelLoadError, match="holds no config.json"):
        find_component(JUDGE, tmp_path / "nothing-here", None)


def test_missing_tokenizer_and_mismatched_weights_are_named(tmp_path):
    directory = side_model_directory("judge", tmp_path / "judge")
    (directory / "tokenizer.json").unlink()
    (directory / "tokenizer_config.json").unlink()
    with pytest.raises(ModelLoadError, match="has no tokenizer"):
        load_judge(directory)
    directory = side_model_directory("pe_a_frame", tmp_path / "wrong")
    config = json.loads((directory / "config.json").read_text())
    config["output_dim"] = 32
    (directory / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelLoadError, match=r"another shape than config.json.*audio_head.proj.weight"):
        load_span_predictor(directory)
    from safetensors.torch import load_file, save_file

    directory = side_model_directory("pe_a_frame", tmp_path / "missing")
    state = load_file(str(directory / "model.safetensors"))
    del state["logit_bias"]
    save_file(state, str(directory / "model.safetensors"))
    with pytest.raises(ModelLoadError, match="1 missing keys: logit_bias"):
        load_span_predictor(directory)


def test_text_layers_above_nth_are_checked_then_dropped(tmp_path):
    directory = side_model_directory("pe_a_frame", tmp_path / "nth2")
    config = json.loads((directory / "config.json").read_text())
    config["nth_text_layer"] = 2
    (directory / "config.json").write_text(json.dumps(config))
    predictor, loaded = load_span_predictor(directory)
    assert len(predictor.model.text_model.layers) == 2
    per_layer = 64 * 64 * 4 + 64 * 96 * 3 + 2 * 64  # Wqkv + Wo, Wi + Wo, two norms
    assert loaded.dropped_parameters == 3 * per_layer + 64  # layers 2, 3, 4 and final_norm
    assert loaded.parameters == sum(p.numel() for p in predictor.model.parameters())


def test_side_models_load_lazily_once_and_report_memory(tmp_path, monkeypatch):
    monkeypatch.delenv(SPAN_PREDICTOR.environment, raising=False)
    monkeypatch.delenv(JUDGE.environment, raising=False)
    sam = tmp_path / "sam"
    side_model_directory("pe_a_frame", sam / "pe-a-frame-large")
    side_model_directory("judge", sam / "sam-audio-judge")
    lines = []
    side = SideModels(sam, {"span_predictor": "pe-a-frame-large",
                            "text_ranker": {"kind": "judge", "checkpoint_or_model_id": "facebook/sam-audio-judge"}},
                      report=lines.append, dtype=torch.float64)
    assert side.loaded == []  # nothing is built before it is asked for
    predictor = side.span_predictor()
    assert side.span_predictor() is predictor and len(side.loaded) == 1
    judge = side.judge()
    assert judge.model.data_proj.weight.dtype == torch.float64
    assert [info.kind for info in side.loaded] == [SPAN_PREDICTOR.name, JUDGE.name]
    assert len(lines) == 2 and all("MiB" in line and "M parameters" in line for line in lines)
    assert side.loaded[1].bytes == 2 * side.loaded[1].parameters * 4  # float64


def test_side_models_error_when_nothing_is_there(tmp_path, monkeypatch):
    monkeypatch.delenv(SPAN_PREDICTOR.environment, raising=False)
    with pytest.raises(ModelLoadError, match="--span-predictor DIR"):
        SideModels(tmp_path).span_predictor()
