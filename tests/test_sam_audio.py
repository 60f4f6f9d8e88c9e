"""Parity of the SAM Audio model core with the official implementation (../shared/parity), loaded through
the user-facing loader, at the tolerances of the parity README."""

import json

import pytest
import torch
from torch.testing import assert_close

from samstream.model.anchors import anchor_tokens
from samstream.model.dit import DiT, DiTConfig
from samstream.model.sam_audio import SAMAudio, SAMAudioConfig
from samstream.model.sampling import SolverConfig, solve
from samstream.model.separator import SAMAudioSeparator, SamplingInputs

TOL = dict(rtol=1e-5, atol=2e-5)


def test_dit_forward_matches_reference(parity_model, parity_vectors):
    v = parity_vectors
    dit = parity_model.transformer
    with torch.no_grad():
        out = dit(v["dit_forward.x"], v["dit_forward.time"], padding_mask=v["dit_forward.padding_mask"],
                  memory=v["dit_forward.memory"], memory_padding_mask=v["dit_forward.memory_padding_mask"])
        e, t_block = dit.time_conditioning(v["dit_forward.time"])
        patched = dit.x_embedder(v["dit_forward.x"]).transpose(1, 2)
        y = dit.y_embedder(v["dit_forward.memory"])
    assert_close(patched, v["dit_forward.dbg_x_embedder"], **TOL)
    assert_close(e, v["dit_forward.dbg_t_embedder"], **TOL)
    assert_close(t_block, v["dit_forward.dbg_t_block"], **TOL)
    assert_close(y, v["dit_forward.dbg_y_embedder"], **TOL)
    assert_close(out, v["dit_forward.out"], **TOL)


def test_dit_per_token_time_equals_per_sample_time(parity_model, parity_vectors):
    """The block-causal extension: a [B,T] time that is constant per row must give the [B] result."""
    v = parity_vectors
    dit = parity_model.transformer
    time = v["dit_forward.time"]
    kwargs = dict(padding_mask=v["dit_forward.padding_mask"], memory=v["dit_forward.memory"],
                  memory_padding_mask=v["dit_forward.memory_padding_mask"])
    with torch.no_grad():
        per_sample = dit(v["dit_forward.x"], time, **kwargs)
        per_token = dit(v["dit_forward.x"], time[:, None].expand(-1, v["dit_forward.x"].shape[1]), **kwargs)
    assert_close(per_token, per_sample, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("case", ["full", "novideo_defaultanchors", "zerovideo_defaultanchors", "minimal"])
def test_sam_forward_matches_reference(parity_model, parity_vectors, case):
    v = parity_vectors
    prefix = f"sam_forward.{case}."
    text = None if case == "minimal" else v["sam_forward.text_features"]
    text_mask = None if case == "minimal" else v["sam_forward.text_mask"]
    video = {
        "full": v["sam_forward.masked_video_features"],
        "novideo_defaultanchors": None,
        "zerovideo_defaultanchors": torch.zeros_like(v["sam_forward.masked_video_features"]),
        "minimal": None,
    }[case]
    if case == "full":
        ids, alignment = v["sam_forward.anchor_ids"], v["sam_forward.anchor_alignment"]
    elif case == "minimal":
        ids = alignment = None
    else:
        ids, alignment = v["anchors_none.anchor_ids"], v["anchors_none.anchor_alignment"]
    model = parity_model
    with torch.no_grad():
        conditioning = model.frame_conditioning(v["sam_forward.audio_features"], video, ids, alignment)
        projected_input = model.project_noisy(v["sam_forward.noisy_audio"]) + conditioning.value
        memory = model.memory(text, v["sam_forward.time"])
        out = model(v["sam_forward.noisy_audio"], v["sam_forward.audio_features"], text, v["sam_forward.time"],
                    masked_video_features=video, text_mask=text_mask, anchor_ids=ids, anchor_alignment=alignment,
                    audio_pad_mask=v["sam_forward.audio_pad_mask"])
    assert_close(projected_input, v[prefix + "dbg_after_anchors"], **TOL)
    assert_close(memory, v[prefix + "dbg_memory"], **TOL)
    assert_close(out, v[prefix + "out"], **TOL)


def test_anchor_tokens_match_reference(parity_meta, parity_vectors):
    v, inputs = parity_vectors, parity_meta["non_tensor_inputs"]
    hop, rate = inputs["hop_length"], inputs["sample_rate"]
    frames = [int(s) for s in v["anchors.sizes"]]
    assert frames == [-(-n // hop) for n in inputs["wav_lengths"]]
    total = v["anchors.audio_pad_mask"].shape[1]
    for case in ("anchors", "anchors_extra"):
        spans = [[tuple(a) for a in item] for item in inputs[case]]
        tokens = anchor_tokens(spans, frames, total, rate, hop)
        assert torch.equal(tokens.ids, v[f"{case}.anchor_ids"]), case
        assert torch.equal(tokens.alignment, v[f"{case}.anchor_alignment"]), case
    none = anchor_tokens(None, frames, total, rate, hop)
    assert torch.equal(none.ids, v["anchors_none.anchor_ids"])
    assert torch.equal(none.alignment, v["anchors_none.anchor_alignment"])


def test_midpoint_sampling_matches_reference(parity_model, parity_vectors):
    """The full official separate(): 16 midpoint steps (32 evaluations), decode, trim."""
    v = parity_vectors
    assert [float(t) for t in SolverConfig().evaluation_times()] == v["sample.eval_times"].tolist()
    separator = SAMAudioSeparator(parity_model)
    waves = [v["codec_encode.input_wav"][b, 0, :n] for b, n in enumerate(v["anchors.wav_sizes"].tolist())]
    prepared = separator.prepare(waves, [None] * 3, spans=None)
    assert_close(prepared.audio_features, v["sample.audio_features"], **TOL)
    inputs = SamplingInputs(
        audio_features=prepared.audio_features,
        pad_mask=v["anchors.audio_pad_mask"],
        text_features=v["sam_forward.text_features"],
        text_mask=v["sam_forward.text_mask"],
        anchor_ids=v["anchors.anchor_ids"],
        anchor_alignment=v["anchors.anchor_alignment"],
        video_features=v["sam_forward.masked_video_features"],
    )
    final = separator.sample(inputs, noise=v["sample.noise"])
    assert_close(final, v["sample.final_state"], rtol=1e-5, atol=5e-5)
    decoded = separator.decode(final, message=v["sample.decode_message"])
    assert_close(decoded, v["sample.decoded"], rtol=1e-5, atol=5e-5)
    for b, frames in enumerate(v["anchors.sizes"].int().tolist()):
        assert_close(decoded[b, 0, : frames * 8], v[f"sample.target.{b}"], rtol=1e-5, atol=5e-5)
        assert_close(decoded[b, 1, : frames * 8], v[f"sample.residual.{b}"], rtol=1e-5, atol=5e-5)


def test_solver_grid_states_match_reference(parity_model, parity_vectors):
    v = parity_vectors
    model = parity_model
    text, text_mask = v["sam_forward.text_features"], v["sam_forward.text_mask"]
    conditioning = model.frame_conditioning(v["sample.audio_features"], v["sam_forward.masked_video_features"],
                                            v["anchors.anchor_ids"], v["anchors.anchor_alignment"])
    calls = []

    def velocity(t, x):
        out = model.velocity(x, t.expand(3), conditioning, model.memory(text, t.expand(3)), text_mask,
                             v["anchors.audio_pad_mask"])
        calls.append((float(t), x))
        return out

    states = []
    with torch.no_grad():
        solve(velocity, v["sample.noise"], SolverConfig(), on_step=lambda k, x: states.append(x))
    assert len(calls) == 32
    assert_close(calls[1][1], v["sample.step1_midstate"], rtol=1e-5, atol=5e-5)
    assert_close(torch.stack(states), v["sample.grid_states"][1:], rtol=1e-5, atol=5e-5)


def test_euler_and_fewer_steps_are_available(parity_model, parity_vectors):
    v = parity_vectors
    model = parity_model
    conditioning = model.frame_conditioning(v["sample.audio_features"])
    evaluations = []

    def velocity(t, x):
        evaluations.append(float(t))
        return model.velocity(x, t.expand(3), conditioning, model.memory(None, t.expand(3)), None, None)

    with torch.no_grad():
        out = solve(velocity, v["sample.noise"], SolverConfig("euler", 4))
    assert evaluations == [0.0, 0.25, 0.5, 0.75]
    assert out.shape == v["sample.noise"].shape and torch.isfinite(out).all()


@pytest.mark.parametrize("size", ["small", "base", "large"])
def test_release_key_manifests(parity_dir, size):
    manifest = json.loads((parity_dir / f"keys_{size}.json").read_text())
    with torch.device("meta"):
        model = SAMAudio(SAMAudioConfig.from_dict(manifest["config"]))
    ours = {k: list(t.shape) for k, t in model.state_dict().items()}
    assert list(ours) == list(manifest["keys"])
    assert ours == manifest["keys"]
    dit_plus_heads = sum(t.numel() for k, t in model.state_dict().items() if not k.startswith("audio_codec."))
    assert dit_plus_heads == manifest["parameter_counts"]["dit_plus_heads"]


def test_dit_config_ffn_widths():
    for dim, ffn in [(1024, 2752), (1536, 4096), (2048, 5504), (2816, 7552)]:
        assert DiTConfig(dim=dim, n_heads=dim // 128, context_dim=dim).ffn_hidden == ffn


def test_block_causal_cache_equals_masked_full_pass():
    """Past-frame K/V caching (the streaming engine's block-causal path) equals one pass with a causal mask."""
    torch.manual_seed(0)
    config = DiTConfig(dim=32, n_heads=2, n_layers=2, out_channels=8, context_dim=32, causal=True, patch_kernel=1,
                       dropout=0.0)
    dit = DiT(config).eval()
    x, memory = torch.randn(1, 12, 32), torch.randn(1, 3, 32)
    time = torch.rand(1, 12)
    chunk = 4
    frames = torch.arange(12)
    mask = (frames[None, :] // chunk) <= (frames[:, None] // chunk)  # block-causal: chunk i sees chunks <= i
    with torch.no_grad():
        full = dit(x, time, memory=memory, attn_mask=mask)
        from samstream.model.dit import PastFrames

        past, outputs = None, []
        for start in range(0, 12, chunk):
            out, kv = dit(x[:, start:start + chunk], time[:, start:start + chunk], memory=memory, past=past,
                          return_keys_values=True)
            outputs.append(out)
            if past is None:
                past = PastFrames(kv, chunk)
            else:
                past = PastFrames([(torch.cat([pk, k], 2), torch.cat([pv, v], 2))
                                   for (pk, pv), (k, v) in zip(past.keys_values, kv)], past.length + chunk)
    assert_close(torch.cat(outputs, 1), full, rtol=1e-5, atol=1e-5)
