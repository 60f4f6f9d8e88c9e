"""`samstream bench model --side-models` (clients/cli/bench_side_models.py): the rows it reports, on the extras."""

import torch

from samstream.clients.cli.bench_model import timed
from samstream.clients.cli.bench_side_models import bench_side_models, describe, random_module
from samstream.model.components import build_span_predictor


def test_extras_rows_report_cost_and_memory():
    rows = bench_side_models(["extras"], 1.0, 1, torch.device("cpu"), torch.float32, timed)
    span, judge = rows
    assert span["params"] == 283_590 and judge["params"] == 377_856  # what is built (unused text layers excluded)
    assert span["memory_mib"] == span["params"] * 4 / 2**20
    assert span["s_per_audio_s"] > 0 and span["ms_per_10s_window"] > 0 and span["ms_per_prompt_text"] > 0
    assert judge["s_per_audio_s"] > 0 and judge["s_per_live_window"] > 0
    assert "per 10 s window" in describe(span) and "live window" in describe(judge)


def test_random_weights_stay_finite():
    config = {"audio_model": {"dac_vae_encoder": {"encoder_hidden_size": 4, "downsampling_ratios": [2, 4],
                                                  "codebook_size": 32, "codebook_dim": 16, "sampling_rate": 200,
                                                  "hidden_size": 32},
                              "audio_transformer": {"hidden_size": 32, "intermediate_size": 64,
                                                    "num_hidden_layers": 2, "num_attention_heads": 4}},
              "text_model": {"hidden_size": 32, "intermediate_size": 48, "num_hidden_layers": 2,
                             "num_attention_heads": 4, "vocab_size": 50},
              "output_dim": 16, "nth_text_layer": 2}
    torch.manual_seed(0)
    model = random_module(build_span_predictor, config, torch.device("cpu"), torch.float32)
    with torch.inference_mode():
        logits = model.logits(model.embed_audio(torch.randn(1, 30, 16)), model.embed_text(torch.tensor([[1, 5, 2]])))
    assert torch.isfinite(logits).all()
