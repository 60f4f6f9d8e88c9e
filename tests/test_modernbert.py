"""ModernBERT (model/modernbert.py): config parsing, the local-attention window, and agreement with the
transformers implementation installed here on every layer it exposes without the version trap. The
reference numbers themselves are checked in tests/test_span_predictor.py and tests/test_judge.py."""

import pytest
import torch
from torch.testing import assert_close

from samstream.model.modernbert import ModernBertConfig, ModernBertEncoder, text_tower_shapes

SMALL = {"vocab_size": 40, "hidden_size": 32, "intermediate_size": 48, "num_hidden_layers": 4,
         "num_attention_heads": 4, "local_attention": 4, "global_attn_every_n_layers": 3, "pad_token_id": 0,
         "model_type": "modernbert", "layer_norm_eps": 1e-5, "classifier_pooling": "mean"}


def test_config_takes_hf_fields_and_ignores_the_rest():
    config = ModernBertConfig.from_dict(SMALL)
    assert (config.hidden_size, config.num_hidden_layers, config.local_attention) == (32, 4, 4)
    assert [config.is_global(i) for i in range(4)] == [True, False, False, True]
    newer = ModernBertConfig.from_dict({**SMALL, "rope_parameters": {"full_attention": {"rope_theta": 5.0}}})
    assert newer.global_rope_theta == 5.0
    with pytest.raises(ValueError, match="hidden_activation"):
        ModernBertConfig.from_dict({**SMALL, "hidden_activation": "relu"})


def test_layout_has_no_attn_norm_in_layer_0_and_no_biases():
    shapes = text_tower_shapes(ModernBertConfig.from_dict(SMALL))
    assert "layers.0.attn_norm.weight" not in shapes and "layers.1.attn_norm.weight" in shapes
    assert not any(k.endswith(".bias") for k in shapes)
    assert shapes["layers.0.attn.Wqkv.weight"] == (96, 32) and shapes["layers.0.mlp.Wi.weight"] == (96, 32)
    assert list(shapes)[-1] == "final_norm.weight"


def test_local_layers_see_only_their_window():
    encoder = ModernBertEncoder(ModernBertConfig.from_dict(SMALL))
    global_mask, local_mask = encoder.attention_masks(torch.tensor([[1, 1, 1, 1, 1, 1, 0]]), 7, 1, torch.float32,
                                                      "cpu")
    allowed = local_mask[0, 0] == 0
    assert allowed[3].tolist() == [False, True, True, True, True, True, False]  # |i - j| <= 2, pad key masked
    assert (global_mask[0, 0] == 0)[0].tolist() == [True] * 6 + [False]


def test_matches_transformers_on_every_unambiguous_layer():
    """Against transformers' ModernBertModel with the same weights: the embeddings and the states after 1..L-1
    layers agree on valid tokens. The last entry of hidden_states is final-normed in transformers 5 but not in 4
    (the extras README's trap); ours follows 4.x, the official code's period, and the final-normed
    last_hidden_state is what final_norm=True gives."""
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    hf = transformers.ModernBertModel(transformers.ModernBertConfig(**SMALL, attn_implementation="sdpa")).eval()
    ours = ModernBertEncoder(ModernBertConfig.from_dict(SMALL), final_norm=True).eval()
    ours.load_state_dict(hf.state_dict(), strict=True)
    ids = torch.randint(3, 40, (2, 9))
    mask = torch.ones(2, 9, dtype=torch.long)
    mask[1, 6:] = 0
    with torch.inference_mode():
        reference = hf(input_ids=ids, attention_mask=mask, output_hidden_states=True)
        keep = mask.bool()
        for layers in range(4):
            partial = ModernBertEncoder(ours.config, run_layers=layers)
            partial.load_state_dict({k: v for k, v in ours.state_dict().items() if k in partial.state_dict()})
            assert_close(partial(ids, mask)[keep], reference.hidden_states[layers][keep], rtol=1e-5, atol=1e-5)
        assert_close(ours(ids, mask)[keep], reference.last_hidden_state[keep], rtol=1e-5, atol=1e-5)
