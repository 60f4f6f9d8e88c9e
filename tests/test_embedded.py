import numpy as np
import pytest
import torch

from samstream.model.dit import FusedDiT
from samstream.model.embedded import EmbeddedConfig, EmbeddedModel, EmbeddedSeparator, load_embedded, save_embedded
from samstream.model.stft import analysis_frames, overlap_add, sqrt_hann, synthesis_frames
from samstream.model.errors import AudioInputError, ModelLoadError, PromptError


pytestmark = pytest.mark.usefixtures("one_torch_thread")


class FakeTextEncoder:
    """Deterministic stand-in for MiniLM: a fixed random vector per text."""

    name, dim = "fake", 384

    def encode(self, texts):
        rows = [torch.randn(384, generator=torch.Generator().manual_seed(sum(map(ord, t)))) for t in texts]
        return torch.stack(rows)[:, None], torch.ones(len(texts), 1, dtype=torch.bool)


def random_separator(**overrides) -> EmbeddedSeparator:
    torch.manual_seed(0)
    config = EmbeddedConfig(**{"dim": 32, "n_heads": 2, "n_layers": 2, "context_chunks": 3, **overrides})
    model = EmbeddedModel(config)
    with torch.no_grad():  # trained-looking conditioning, so anchors and the context role matter
        model.anchor_gate.fill_(0.7)
        model.context_embedding.normal_()
    return EmbeddedSeparator(model, FakeTextEncoder())


def snr_db(reference: np.ndarray, estimate: np.ndarray) -> float:
    return float(10 * np.log10(np.sum(reference.astype(np.float64) ** 2) / np.sum((reference - estimate) ** 2)))


def stream_through(separator, states, signals, steps=None, starts=None):
    """Feed sessions (each starting at chunk `starts[i]`) and return each one's delay-aligned target."""
    cs, delay = separator.chunk_samples, separator.delay_samples
    starts = starts or [0] * len(states)
    counts = [-(-(len(x) + delay) // cs) for x in signals]
    outputs = [[] for _ in states]
    for step in range(max(s + c for s, c in zip(starts, counts))):
        active = [i for i in range(len(states)) if starts[i] <= step < starts[i] + counts[i]]
        if not active:
            continue
        chunk = np.zeros((len(active), cs), np.float32)
        for row, i in enumerate(active):
            piece = signals[i][(step - starts[i]) * cs : (step - starts[i] + 1) * cs]
            chunk[row, : len(piece)] = piece
        out = separator.stream_step([states[i] for i in active], chunk, steps)
        assert out.shape == (len(active), 2, cs)
        for row, i in enumerate(active):
            outputs[i].append(out[row])
    return [np.concatenate(o, -1)[:, delay : delay + len(x)] for o, x in zip(outputs, signals)]


def test_stft_reconstructs_perfectly():
    config = EmbeddedConfig()
    assert torch.allclose(sqrt_hann(512) ** 2 + sqrt_hann(512).roll(256) ** 2, torch.ones(512), atol=1e-6)
    x = torch.randn(1, 4000)
    padded = torch.nn.functional.pad(x, (256, 512))
    y = overlap_add(synthesis_frames(analysis_frames(padded, config.n_fft, config.hop), config.n_fft), config.hop)
    assert torch.allclose(y[0, 256 : 256 + 4000], x[0], atol=1e-5)


@pytest.mark.parametrize("steps", [1, 2])
def test_stream_step_equals_offline(steps):
    separator = random_separator()
    rng = np.random.default_rng(0)
    x = (0.1 * rng.standard_normal(3500)).astype(np.float32)
    example = (0.1 * rng.standard_normal(3000)).astype(np.float32)
    spans = [("+", 0.05, 0.1), ("-", 0.15, 0.2)]
    offline = separator.separate(x, 16000, prompt="dog barking", spans=spans, example=example, steps=steps)
    state = separator.init_stream("dog barking", spans, example)
    (streamed,) = stream_through(separator, [state], [x], steps)
    assert snr_db(offline.target, streamed[0]) > 80
    assert snr_db(offline.residual, streamed[1]) > 80


def test_fused_inference_blocks_compute_what_the_modules_do():
    """The separator runs the DiT through `FusedDiT`, training through the modules: the same function, streaming
    and offline."""
    separator = random_separator()
    with torch.no_grad():  # non-trivial norms and biases, so a folded or misordered weight shows
        for name, parameter in separator.model.dit.named_parameters():
            if "norm" in name or name.endswith("bias"):
                parameter.add_(0.3 * torch.randn_like(parameter))
    separator.fused = FusedDiT(separator.model.dit)
    modules = EmbeddedSeparator(separator.model, FakeTextEncoder())
    modules.fused = None  # the reference: the nn.Module blocks
    rng = np.random.default_rng(3)
    x = (0.1 * rng.standard_normal(4000)).astype(np.float32)
    spans = [("+", 0.05, 0.1)]
    for steps in (1, 2):
        fused_out = separator.separate(x, 16000, prompt="dog barking", spans=spans, steps=steps)
        module_out = modules.separate(x, 16000, prompt="dog barking", spans=spans, steps=steps)
        assert snr_db(module_out.target, fused_out.target) > 90
        (fused_stream,) = stream_through(separator, [separator.init_stream("dog barking", spans)], [x], steps)
        (module_stream,) = stream_through(modules, [modules.init_stream("dog barking", spans)], [x], steps)
        assert snr_db(module_stream[0], fused_stream[0]) > 90
        assert np.abs(module_stream[0]).max() > 1e-3  # a real output, not two silences


def test_batched_sessions_with_different_prompts_and_starts_equal_single_runs():
    separator = random_separator()
    rng = np.random.default_rng(1)
    signals = [(0.1 * rng.standard_normal(n)).astype(np.float32) for n in (3000, 2000, 2600)]
    prompts = [("piano", []), (None, [("+", 0.0, 0.1)]), ("siren", [("-", 0.1, 0.2)])]
    states = [separator.init_stream(p, s) for p, s in prompts]
    batched = stream_through(separator, states, signals, starts=[0, 2, 5])
    for (prompt, spans), x, out in zip(prompts, signals, batched):
        single = separator.separate(x, 16000, prompt=prompt, spans=spans)
        assert snr_db(single.target, out[0]) > 80


def test_sample_accounting_and_target_plus_residual_is_mixture():
    separator = random_separator(lookahead_chunks=2)
    assert separator.delay_samples == 256 + 2 * separator.chunk_samples
    rng = np.random.default_rng(2)
    x = (0.1 * rng.standard_normal(separator.chunk_samples * 9)).astype(np.float32)
    state = separator.init_stream("water")
    chunks = x.reshape(9, 1, -1)
    out = np.concatenate([separator.stream_step([state], c)[0] for c in chunks], -1)
    assert out.shape == (2, len(x))
    delayed = np.concatenate([np.zeros(separator.delay_samples, np.float32), x])[: len(x)]
    np.testing.assert_allclose(out[0] + out[1], delayed, atol=1e-6)
    assert np.all(out[:, : separator.delay_samples] == 0)  # nothing before the stream starts
    offline = separator.separate(x, 16000, prompt="water")
    np.testing.assert_allclose(offline.target + offline.residual, x, atol=1e-6)


def test_mask_floor_keeps_that_share_of_the_mixture_streaming_and_offline():
    separator = random_separator()
    rng = np.random.default_rng(4)
    x = (0.1 * rng.standard_normal(3000)).astype(np.float32)
    plain = separator.separate(x, 16000, prompt="bell").target
    separator.mask_floor = 1.0  # everything kept: the target is the mixture
    np.testing.assert_allclose(separator.separate(x, 16000, prompt="bell").target, x, atol=1e-5)
    separator.mask_floor = 0.25  # the mask is lifted linearly: target = 0.25 * mixture + 0.75 * plain target
    floored = separator.separate(x, 16000, prompt="bell").target
    np.testing.assert_allclose(floored, 0.25 * x + 0.75 * plain, atol=1e-5)
    (streamed,) = stream_through(separator, [separator.init_stream("bell")], [x])
    assert snr_db(floored, streamed[0]) > 80
    with pytest.raises(ValueError, match="mask_floor"):
        EmbeddedSeparator(separator.model, mask_floor=1.5)


def test_band_floors_keep_the_mixture_in_their_bands_only():
    """A floor per band (FLOOR_BAND_EDGES_HZ): equal shares are one floor; a share in one band lifts the target only
    at those frequencies; streaming equals offline; a wrong number of bands is refused, naming the bands."""
    from samstream.model.mask_floor import FLOOR_BAND_EDGES_HZ

    separator = random_separator()
    x = (0.1 * np.random.default_rng(5).standard_normal(16000)).astype(np.float32)
    plain = separator.separate(x, 16000, prompt="bell").target
    separator.mask_floor = 0.25
    uniform = separator.separate(x, 16000, prompt="bell").target
    separator.mask_floor = (0.25,) * (len(FLOOR_BAND_EDGES_HZ) + 1)
    np.testing.assert_array_equal(separator.separate(x, 16000, prompt="bell").target, uniform)
    separator.mask_floor = (0.0, 0.0, 0.0, 1.0)  # all of the mixture above 4 kHz, the network's mask below
    top = separator.separate(x, 16000, prompt="bell").target
    spectrum = np.abs(np.fft.rfft(top - plain)) ** 2
    hz = np.fft.rfftfreq(len(x), 1 / 16000)
    assert spectrum[hz < 3500].sum() < 1e-3 * spectrum[hz > 4500].sum()
    (streamed,) = stream_through(separator, [separator.init_stream("bell")], [x])
    assert snr_db(top, streamed[0]) > 80
    with pytest.raises(ValueError, match="one share per band"):
        separator.init_stream("bell", mask_floor=(0.5, 0.5))


def test_offline_resamples_and_keeps_length():
    separator = random_separator()
    x = np.random.default_rng(3).standard_normal((2, 4410)).astype(np.float32) * 0.1
    result = separator.separate(x, 44100, prompt="bell")
    assert result.target.shape == (4410,) and result.sample_rate == 44100


def test_errors_name_the_problem(tmp_path):
    separator = random_separator()
    with pytest.raises(PromptError):
        separator.init_stream()
    with pytest.raises(PromptError):
        separator.separate(np.zeros(1000, np.float32), 16000)
    state = separator.init_stream("dog")
    with pytest.raises(AudioInputError):
        separator.stream_step([state], np.zeros((1, 100), np.float32))
    with pytest.raises(ModelLoadError):
        load_embedded(tmp_path / "missing.safetensors")
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a safetensors file")
    bad.with_suffix(".json").write_text('{"config": {}}')
    with pytest.raises(ModelLoadError):
        load_embedded(bad)


def test_save_load_round_trip(tmp_path):
    separator = random_separator()
    path = tmp_path / "m.safetensors"
    save_embedded(separator.model, path)
    loaded = load_embedded(path, text_encoder=FakeTextEncoder())
    x = np.random.default_rng(4).standard_normal(3000).astype(np.float32) * 0.1
    np.testing.assert_array_equal(loaded.separate(x, 16000, prompt="a").target,
                                  separator.separate(x, 16000, prompt="a").target)
