"""PE-A-Frame (model/span_predictor.py) against the official code's reference tensors
(../shared/parity/extras/pe_a_frame), loaded through the user-facing loader; its real-size key layout."""

import json

import pytest
import torch
from torch.testing import assert_close

from fixtures.side_models import EXTRAS, side_model_directory
from samstream.model.anchors import anchor_tokens
from samstream.model.components import load_span_predictor, official_shapes
from samstream.model.span_predictor import PEAudioFrame, PEAudioFrameConfig, frames_to_seconds, runs

TOLERANCE = dict(rtol=1e-5, atol=5e-5)  # the extras README's recommended check (atol 1e-4 for the waveform case)
CASES = ("frame", "frame_nomask", "frame_wave")


@pytest.fixture(scope="module")
def vectors():
    from safetensors.torch import load_file

    return load_file(str(EXTRAS / "pe_a_frame" / "vectors.safetensors"))


@pytest.fixture(scope="module")
def meta():
    return json.loads((EXTRAS / "pe_a_frame" / "vectors.json").read_text())


@pytest.fixture(scope="module")
def predictor(tmp_path_factory):
    directory = side_model_directory("pe_a_frame", tmp_path_factory.mktemp("pe_a_frame"))
    return load_span_predictor(directory)[0]


def case_inputs(model: PEAudioFrame, vectors, case: str):
    """(latent features [B,T,C], frame mask or None), through the waveform path for frame_wave."""
    if case == "frame_wave":
        return model.encode_waveform(vectors[f"{case}.input_values"], vectors[f"{case}.padding_mask"])
    return vectors[f"{case}.input_features"], vectors.get(f"{case}.padding_mask")


def run_case(model: PEAudioFrame, vectors, case: str) -> dict[str, torch.Tensor]:
    with torch.inference_mode():
        features, valid = case_inputs(model, vectors, case)
        text = model.embed_text(vectors[f"{case}.input_ids"], vectors.get(f"{case}.attention_mask"))
        audio = model.embed_audio(features, valid)
        logits = model.logits(audio, text)
    return {"text_embeds": text, "audio_embeds": audio, "logits": logits, "probs": logits.sigmoid(),
            "features": features, "valid": valid}


@pytest.mark.parametrize("case", CASES)
def test_outputs_match_the_official_code(predictor, vectors, meta, case):
    out = run_case(predictor.model, vectors, case)
    tolerance = dict(rtol=1e-5, atol=1e-4) if case == "frame_wave" else TOLERANCE
    for name in ("text_embeds", "audio_embeds", "logits", "probs"):
        assert_close(out[name], vectors[f"{case}.{name}"], **tolerance, msg=f"{case}.{name}")
    if case == "frame_wave":
        assert_close(out["features"], vectors[f"{case}.dbg_audio_codec_features"], **tolerance)
        assert torch.equal(out["valid"], vectors[f"{case}.dbg_feature_padding_mask"])
    # Integer outputs exactly: hits, the span table, the spans in frames and in float32 seconds.
    hits = out["probs"] > meta["non_tensor_inputs"]["threshold"]
    assert torch.equal(hits, vectors[f"{case}.preds"])
    frames = runs(hits)
    table = [[b, start, end] for b, item in enumerate(frames) for start, end in item]
    assert table == vectors[f"{case}.span_tensor"].tolist()
    seconds = [[list(pair) for pair in frames_to_seconds(item, 8, 200)] for item in frames]
    assert seconds == meta["reference_non_tensor_outputs"][f"{case}.spans"]


def test_predict_gives_the_official_spans_and_anchors(predictor, vectors, meta):
    """The user-facing path (tokens from the tokenizer are replaced by the reference ids): spans run into padding
    as upstream, and SAM's anchor conversion of the float32 seconds shifts boundaries exactly as the official one."""
    with torch.inference_mode():
        text = predictor.model.embed_text(vectors["frame.input_ids"], vectors["frame.attention_mask"])
    predictor._text_cache.update({f"prompt {i}": row for i, row in enumerate(text)})
    prediction = predictor.predict(vectors["frame.input_features"], vectors["frame.padding_mask"],
                                   [f"prompt {i}" for i in range(3)])
    assert [[list(p) for p in item] for item in prediction.seconds] == meta["reference_non_tensor_outputs"]["frame.spans"]
    assert prediction.frames[1][-2:] == [(19, 22), (23, 25)]  # item 1 has 19 valid frames: spans run into padding
    valid_frames = vectors["frame.padding_mask"].sum(1).tolist()
    tokens = anchor_tokens(prediction.anchor_spans(), valid_frames, 25, 200, 8)
    assert torch.equal(tokens.ids, vectors["frame.sam_anchor_ids"])
    assert torch.equal(tokens.alignment, vectors["frame.sam_anchor_alignment"])
    # Item 0: frame spans [2,3) [5,6) [7,8) [9,13) become anchor frames {2}, {}, {}, {10, 11, 12} upstream.
    assert tokens.alignment[0, :14].tolist() == [0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 5, 5, 5, 0]


def test_text_hidden_states_match_every_layer(predictor, vectors):
    """hidden_states[k] after k ModernBERT layers (no final norm), on the valid tokens (padded rows are free)."""
    model = predictor.model.text_model
    captured = []
    handles = [layer.register_forward_hook(lambda m, i, o: captured.append(o)) for layer in model.layers]
    try:
        for case in CASES:
            captured.clear()
            mask = vectors.get(f"{case}.attention_mask")
            with torch.inference_mode():
                embeddings = model.embeddings(vectors[f"{case}.input_ids"])
                model(vectors[f"{case}.input_ids"], mask)
            keep = (mask if mask is not None else torch.ones(vectors[f"{case}.input_ids"].shape)).bool()
            for k, state in enumerate([embeddings] + captured):
                assert_close(state[keep], vectors[f"{case}.dbg_text_hidden_{k}"][keep], **TOLERANCE,
                             msg=f"{case} hidden {k}")
    finally:
        for handle in handles:
            handle.remove()


def test_a_perturbed_weight_breaks_parity(tmp_path, vectors):
    from safetensors.torch import load_file, save_file

    directory = side_model_directory("pe_a_frame", tmp_path / "perturbed")
    state = load_file(str(directory / "model.safetensors"))
    state["audio_model.audio_transformer.layers.1.self_attn.k_norm.weight"][3] += 0.05
    save_file(state, str(directory / "model.safetensors"))
    out = run_case(load_span_predictor(directory)[0].model, vectors, "frame")
    with pytest.raises(AssertionError):
        assert_close(out["audio_embeds"], vectors["frame.audio_embeds"], **TOLERANCE)


def test_raw_logit_scale_and_no_normalisation(predictor, vectors):
    """The trap the README names first: exp(logit_scale) would move the probabilities by ~0.3."""
    out = run_case(predictor.model, vectors, "frame")
    unscaled = (out["audio_embeds"] @ out["text_embeds"][:, :, None]).squeeze(-1)
    model = predictor.model
    assert_close(out["logits"], unscaled * model.logit_scale + model.logit_bias)
    assert (unscaled * model.logit_scale.exp() + model.logit_bias - out["logits"]).abs().max() > 0.1


def test_real_size_layout_equals_the_official_manifest():
    """PEAudioFrame(PEAudioFrameConfig()) of perception_models, built on the meta device: every key and shape, in
    order (the text layers above nth_text_layer are declared by the loader's manifest, not built)."""
    manifest = json.loads((EXTRAS / "pe_a_frame" / "keys_pe_a_frame_code_defaults.json").read_text())
    config = dict(manifest["config"])
    config["audio_model"] = {"dac_vae_encoder": config["audio_model"]["dac_vae_encoder"]}  # transformer: code defaults
    parsed = PEAudioFrameConfig.from_dict(config)
    with torch.device("meta"):
        model = PEAudioFrame(parsed)
    shapes = {k: list(v) for k, v in official_shapes(model, parsed.text_model).items()}
    assert list(shapes.items()) == list(manifest["keys"].items())
    built = sum(p.numel() for p in model.parameters())
    assert sum(torch.Size(s).numel() for s in shapes.values()) == manifest["num_parameters"] == 634_449_730
    assert len(model.text_model.layers) == 22 and built < 634_449_730  # layers 22..27 never run, never built
