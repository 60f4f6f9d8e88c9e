"""Mask networks: streaming equals the offline causal run, batched streams keep their own prompts and state."""

from dataclasses import replace

import numpy as np
import pytest
import torch

from fixtures.real_audio import real_sounds, real_speech
from samstream.model.errors import ModelLoadError
from samstream.model.masknet import (MaskNet, MaskNetConfig, MaskNetSeparator, default_bands, load_masknet,
                                     save_masknet)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def random_vectors(texts):
    """Deterministic stand-in sentence vectors (the text encoder is tested elsewhere)."""
    out = []
    for text in texts:
        rng = np.random.default_rng(abs(hash(text)) % 2**32)
        out.append(rng.standard_normal(384).astype(np.float32))
    return torch.from_numpy(np.stack(out))


def separator(body: str, lookahead: int, **overrides) -> MaskNetSeparator:
    torch.manual_seed(0)
    config = MaskNetConfig(body=body, lookahead_frames=lookahead, speaker_dim=256, **overrides)
    model = MaskNet(config)
    with torch.no_grad():  # FiLM starts at identity; a trained network's prompts do change its output
        for name, parameter in model.named_parameters():
            if "films" in name:
                parameter.normal_(0, 0.1)
    return MaskNetSeparator(model, random_vectors)


def streamed(sep: MaskNetSeparator, states, mixture: np.ndarray) -> np.ndarray:
    """[N, S] mixtures through stream_step together -> [N, S] targets realigned by the delay."""
    hop, delay = sep.chunk_samples, sep.delay_samples
    count = -(-(mixture.shape[1] + delay) // hop)
    padded = np.zeros((len(states), count * hop), np.float32)
    padded[:, : mixture.shape[1]] = mixture
    out = np.concatenate([sep.stream_step(states, padded[:, k * hop : (k + 1) * hop])[:, 0] for k in range(count)],
                         axis=1)
    return out[:, delay : delay + mixture.shape[1]]


@pytest.mark.parametrize("body, lookahead", [("fullband", 0), ("fullband", 2), ("bandsplit", 0), ("bandsplit", 2)])
def test_batched_streams_equal_their_offline_runs(body, lookahead):
    sep = separator(body, lookahead)
    mixture = real_speech(2.0) + 0.3 * real_sounds(2.0)
    speaker = np.random.default_rng(1).standard_normal(256).astype(np.float32)
    prompts = [dict(prompt="dog barking"), dict(speaker=speaker), dict(prompt="piano", spans=[("+", 0.5, 1.0)])]
    states = [sep.init_stream(**p) for p in prompts]
    together = streamed(sep, states, np.stack([mixture] * 3))
    for row, p in enumerate(prompts):
        offline = sep.separate_model_rate(mixture, **p)
        error = np.sum((together[row] - offline) ** 2) / np.sum(offline**2)
        assert 10 * np.log10(1 / error) > 80, (body, lookahead, p)
    assert not np.allclose(together[0], together[1])  # the prompts matter


def test_a_mask_floor_keeps_that_share_of_the_mixture_per_stream_and_per_band():
    """A general mask network inside the default model keeps each class's calibrated floor (model/mask_floor.py), as
    the DiT does: the floor mixes the input back in, per stream, per band, streaming as offline."""
    sep = separator("bandsplit", 0)
    mixture = real_speech(2.0) + 0.3 * real_sounds(2.0)
    bare = sep.separate_model_rate(mixture, prompt="dog barking")
    floors = [0.0, 1.0, 0.4, (1.0, 0.0, 0.0, 1.0)]
    states = [sep.init_stream("dog barking", mask_floor=f) for f in floors]
    together = streamed(sep, states, np.stack([mixture] * len(floors)))
    snr = lambda a, b: 10 * np.log10(np.sum(b**2) / np.sum((a - b) ** 2))
    assert snr(together[0], bare) > 80  # floor 0: the network's own output
    assert snr(together[1], mixture) > 60  # floor 1: the input (realigned by the delay), whatever the network does
    assert snr(together[2], 0.4 * mixture + 0.6 * bare) > 60  # linear in the floor (one share for every bin)
    # per band: the input below 500 Hz and above 4 kHz, the network's output between
    low_high = together[3] - bare
    spectrum = np.abs(np.fft.rfft(low_high)) ** 2
    hz = np.fft.rfftfreq(len(low_high), 1 / sep.sample_rate)
    assert spectrum[(hz > 800) & (hz < 3500)].sum() < 0.01 * spectrum[(hz < 400) | (hz > 4500)].sum()
    floored = MaskNetSeparator(sep.model, random_vectors, mask_floor=0.4)  # the separator's own, offline
    assert snr(floored.separate_model_rate(mixture, prompt="dog barking"), together[2]) > 80
    assert not np.allclose(bare, mixture, atol=1e-3)  # the network does change its input
    with pytest.raises(ValueError, match="one share per band"):
        sep.init_stream("dog barking", mask_floor=(0.5, 0.5))


def test_weights_round_trip_and_a_wrong_config_is_named(tmp_path):
    sep = separator("bandsplit", 0)
    save_masknet(sep.model, tmp_path / "net.safetensors", {"task": "voice"})
    loaded = load_masknet(tmp_path / "net.safetensors")
    for (name, a), (_, b) in zip(sep.model.state_dict().items(), loaded.state_dict().items()):
        assert torch.equal(a, b), name
    text = (tmp_path / "net.json").read_text().replace('"band_dim"', '"band_width"')
    (tmp_path / "net.json").write_text(text)
    with pytest.raises(ModelLoadError, match="band_width"):
        load_masknet(tmp_path / "net.safetensors")


def test_default_bands_tile_the_spectrum():
    edges = default_bands(257)
    assert edges[0] == 0 and edges[-1] == 257 and all(b > a for a, b in zip(edges[:-1], edges[1:]))


def refiner() -> MaskNetSeparator:
    torch.manual_seed(0)
    return MaskNetSeparator(MaskNet(MaskNetConfig(expert_input=True, example=False, anchors=False)), random_vectors)


def test_the_speech_refiner_starts_as_the_expert_and_streams_as_it_runs_offline():
    """At initialisation the refiner's output is the expert's estimate (g = 1) plus 4.7 % of the mixture (h): it
    can only learn corrections. Streamed in batches (each stream with its own expert estimate), it equals the
    offline run; and it takes no chunk without the estimate."""
    sep = refiner()
    speech, sounds = real_speech(2.0), real_sounds(2.0)
    mixture = speech + 0.5 * sounds
    estimate = 0.9 * speech + 0.05 * sounds  # stands for the expert's estimate (the expert is tested elsewhere)
    with torch.no_grad():
        out = sep.model.separate_waveform(torch.from_numpy(mixture)[None], torch.zeros(1, 0, dtype=torch.long),
                                          sep.prompt_vector("speech"), torch.from_numpy(estimate)[None])[0].numpy()
    expected = estimate + 1 / (1 + np.e**3) * mixture
    inner = slice(512, len(mixture) - 512)
    assert np.abs(out - expected)[inner].max() < 1e-4

    with torch.no_grad():  # a trained refiner's prompts change its output
        for name, parameter in sep.model.named_parameters():
            if "films" in name or "out" in name:
                parameter.normal_(0, 0.05)
    states = [sep.init_stream("man speaking"), sep.init_stream("speech")]
    mixtures, estimates = np.stack([mixture, sounds]), np.stack([estimate, 0.1 * sounds])
    hop, delay = sep.chunk_samples, sep.delay_samples
    count = -(-(len(mixture) + delay) // hop)
    padded = np.zeros((2, 2, count * hop), np.float32)
    padded[:, :, : len(mixture)] = np.stack([mixtures, estimates])
    streamed_out = np.concatenate([sep.stream_step(states, padded[0, :, k * hop : (k + 1) * hop],
                                                   expert=padded[1, :, k * hop : (k + 1) * hop])[:, 0]
                                   for k in range(count)], axis=1)[:, delay : delay + len(mixture)]
    for row, (prompt, x, e) in enumerate(zip(("man speaking", "speech"), mixtures, estimates)):
        with torch.no_grad():
            offline = sep.model.separate_waveform(torch.from_numpy(x)[None], torch.zeros(1, 0, dtype=torch.long),
                                                  sep.prompt_vector(prompt), torch.from_numpy(e)[None])[0].numpy()
        error = np.sum((streamed_out[row] - offline) ** 2) / np.sum(offline**2)
        assert 10 * np.log10(1 / error) > 80, prompt
    with pytest.raises(Exception, match="expert's estimate"):
        sep.stream_step(states, padded[0, :, :hop])


def test_a_deeper_network_starts_from_a_shallower_ones_weights_and_computes_what_it_did():
    """`load_deeper` (train --init WEIGHTS --model-config '{"layers": N}'): the shipped voice picker's weights in a
    network of two more GRU layers give the same output on real audio, and one training step moves the new layers."""
    from samstream.model.embedded import WEIGHTS_DIR
    from samstream.model.masknet import Conditioning, load_deeper

    shipped = load_masknet(WEIGHTS_DIR / "voice.safetensors")
    deeper = MaskNet(replace(shipped.config, layers=shipped.config.layers + 2))
    load_deeper(deeper, shipped.state_dict())
    mixture = torch.from_numpy(real_speech(2.0) + 0.5 * real_sounds(2.0))[None]
    speaker = torch.from_numpy(np.random.default_rng(1).standard_normal(256).astype(np.float32))[None]
    anchors = torch.zeros(1, 0, dtype=torch.long)

    def run(model):
        prompt = model.condition(Conditioning(speaker=speaker, speaker_valid=torch.ones(1, dtype=torch.bool)), 1)
        return model.separate_waveform(mixture, anchors, prompt)

    with torch.no_grad():
        assert torch.equal(run(shipped), run(deeper))
    run(deeper).pow(2).mean().backward()
    new_gru = deeper.body.grus[-1]
    assert new_gru.weight_ih_l0.grad.abs().sum() > 0  # the zero layers learn
    with pytest.raises(ModelLoadError, match="only a fullband network as deep or deeper"):
        load_deeper(MaskNet(replace(shipped.config, layers=1)), shipped.state_dict())
