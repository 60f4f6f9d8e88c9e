"""The SAM Audio Judge (model/judge.py) against the official code's reference tensors
(../shared/parity/extras/judge), loaded through the user-facing loader, quirks included; its real-size layout."""

import json

import pytest
import torch
from torch.testing import assert_close

from fixtures.side_models import EXTRAS, side_model_directory
from samstream.model.components import load_judge, official_shapes
from samstream.model.judge import SCORE_NAMES, JudgeConfig, JudgeInputs, SAMAudioJudge, prepare_inputs

TOLERANCE = dict(rtol=1e-5, atol=5e-5)


@pytest.fixture(scope="module")
def vectors():
    from safetensors.torch import load_file

    return load_file(str(EXTRAS / "judge" / "vectors.safetensors"))


@pytest.fixture(scope="module")
def judge(tmp_path_factory):
    return load_judge(side_model_directory("judge", tmp_path_factory.mktemp("judge")))[0]


def raw_pairs(vectors):
    return [(vectors[f"judge.raw_input_audio.{i}"][0], vectors[f"judge.raw_separated_audio.{i}"][0]) for i in range(3)]


def test_processor_matches_the_official_one(vectors):
    """Reflect-pad each item to a hop multiple (197 -> 200, 150 -> 152, 180 -> 184), zero-pad to the longest; the
    reflected samples count as valid."""
    pairs = raw_pairs(vectors)
    inputs = prepare_inputs([m for m, _ in pairs], [c for _, c in pairs], hop=8)
    assert torch.equal(inputs.mixture, vectors["judge.input_values"])
    assert torch.equal(inputs.candidate, vectors["judge.separated_values"])
    assert torch.equal(inputs.padding_mask, vectors["judge.padding_mask"])


def test_scores_match_the_official_code(judge, vectors):
    tokens = (vectors["judge.input_ids"], vectors["judge.attention_mask"])
    pairs = raw_pairs(vectors)
    with torch.inference_mode():
        scores = judge.model(*tokens, prepare_inputs([m for m, _ in pairs], [c for _, c in pairs], hop=8))
    for i, name in enumerate(SCORE_NAMES):
        assert_close(scores[:, i:i + 1], vectors[f"judge.{name}"], **TOLERANCE, msg=name)
    nomask = JudgeInputs(vectors["judge_nomask.input_values"], vectors["judge_nomask.separated_values"], None)
    with torch.inference_mode():
        scores = judge.model(vectors["judge_nomask.input_ids"], vectors["judge_nomask.attention_mask"], nomask)
    for i, name in enumerate(SCORE_NAMES):
        assert_close(scores[:, i:i + 1], vectors[f"judge_nomask.{name}"], **TOLERANCE, msg=f"nomask {name}")


def test_intermediates_match(judge, vectors):
    """The fusion order (candidate first), the text branch and the masked pooling, one tensor at a time."""
    model = judge.model
    captured = {}
    modules = {"dbg_audio_features": model.cat_audio_proj, "dbg_audio_and_text": model.proj_audio_and_text,
               "dbg_result": model.head, "dbg_text_features": model.text_proj1}
    hooks = [m.register_forward_hook(lambda mod, a, o, n=n: captured.__setitem__(n, o)) for n, m in modules.items()]
    inputs = JudgeInputs(vectors["judge.input_values"], vectors["judge.separated_values"], vectors["judge.padding_mask"])
    try:
        with torch.inference_mode():
            model(vectors["judge.input_ids"], vectors["judge.attention_mask"], inputs)
            codec = model.audio_codec(vectors["judge.dbg_stacked_audios"])
    finally:
        for hook in hooks:
            hook.remove()
    assert_close(codec, vectors["judge.dbg_stacked_codec_features"], **TOLERANCE)
    for name, value in captured.items():
        assert_close(value, vectors[f"judge.{name}"], **TOLERANCE, msg=name)


def test_judge_api_scores_raw_waveforms(judge, vectors):
    """Judge.score: raw 1-D audio and prompts in, the official numbers out (tokens here come from the test
    tokenizer, so the text is swapped for the reference ids through the model's own call)."""
    pairs = raw_pairs(vectors)
    calls = []
    original = judge.tokenizer

    def reference_tokens(texts, **kwargs):
        calls.append(texts)
        return {"input_ids": vectors["judge.input_ids"], "attention_mask": vectors["judge.attention_mask"]}

    judge.tokenizer = reference_tokens
    try:
        scores = judge.score([m for m, _ in pairs], [c for _, c in pairs], ["a", "b", "c"])
    finally:
        judge.tokenizer = original
    assert calls == [["a", "b", "c"]]
    assert [s.overall for s in scores] == pytest.approx(vectors["judge.overall"].flatten().tolist(), abs=5e-5)
    assert set(scores[0].as_dict()) == set(SCORE_NAMES)


def test_a_perturbed_weight_breaks_parity(tmp_path, vectors):
    from safetensors.torch import load_file, save_file

    directory = side_model_directory("judge", tmp_path / "perturbed")
    state = load_file(str(directory / "model.safetensors"))
    state["finetune_transformer.layers.0.mlp.up_proj.weight"][0, 0] += 0.05
    save_file(state, str(directory / "model.safetensors"))
    model = load_judge(directory)[0].model
    inputs = JudgeInputs(vectors["judge.input_values"], vectors["judge.separated_values"], vectors["judge.padding_mask"])
    with torch.inference_mode():
        scores = model(vectors["judge.input_ids"], vectors["judge.attention_mask"], inputs)
    with pytest.raises(AssertionError):
        assert_close(scores[:, :1], vectors["judge.overall"], **TOLERANCE)


def test_real_size_layout_equals_the_official_manifest():
    manifest = json.loads((EXTRAS / "judge" / "keys_judge_code_defaults.json").read_text())
    config = JudgeConfig.from_dict({})  # the manifest is SAMAudioJudgeConfig()'s code defaults
    with torch.device("meta"):
        model = SAMAudioJudge(config)
    shapes = {k: list(v) for k, v in official_shapes(model, config.text_model).items()}
    assert list(shapes.items()) == list(manifest["keys"].items())
    assert sum(torch.Size(s).numel() for s in shapes.values()) == manifest["num_parameters"] == 598_323_848
