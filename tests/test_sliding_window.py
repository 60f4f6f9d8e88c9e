"""Sliding-window streaming of a SAM Audio checkpoint equals the offline windowed reference (same windows)."""

import numpy as np
import pytest

from samstream.model.separator import SAMAudioSeparator
from samstream.stream.processor import Prompt
from samstream.stream.regimes.sliding_window import SlidingWindowProcessor, WindowConfig, windowed_reference

# Parity codec: 200 Hz, 8-sample frames, 17 frames of encoder context, 19 of decoder context.
CONFIG = WindowConfig(window_frames=60, hop_frames=10, lookahead_frames=20, crossfade_frames=2, steps=2)


def snr_db(reference: np.ndarray, estimate: np.ndarray) -> float:
    noise = np.sum((reference - estimate) ** 2)
    return float(10 * np.log10(np.sum(reference**2) / max(noise, 1e-30)))


def mixture(seconds: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(200 * seconds)) / 200
    return (0.4 * np.sin(2 * np.pi * 13 * t) + 0.2 * rng.standard_normal(t.size)).astype(np.float32)


def stream(processor, states, audios):
    """Feed each stream hop by hop (streams in one batch), then the flush hops."""
    hop = processor.hop_samples
    n_hops = max(-(-a.shape[0] // hop) for a in audios) + processor.flush_hops()
    padded = np.zeros((len(audios), n_hops * hop), np.float32)
    for i, a in enumerate(audios):
        padded[i, : a.shape[0]] = a
    outputs = [processor.process(states, padded[:, k * hop:(k + 1) * hop], CONFIG.steps) for k in range(n_hops)]
    return np.concatenate(outputs, axis=2)  # [N, 2, samples]


@pytest.fixture(scope="module")
def processor(parity_model):
    return SlidingWindowProcessor(SAMAudioSeparator(parity_model), CONFIG)


def test_streaming_equals_windowed_reference(processor):
    audio = mixture(5.0, 0)
    prompt = Prompt(spans=(("+", 1.0, 2.5), ("-", 4.0, 4.6)))
    streamed = stream(processor, [processor.init_state(prompt)], [audio])[0]
    reference = windowed_reference(processor, audio, prompt)
    assert streamed.shape == reference.shape
    assert np.abs(reference).max() > 0.01
    assert snr_db(reference, streamed) >= 80


def test_batched_sessions_with_different_prompts_equal_each_alone(processor):
    audios = [mixture(4.0, 1), mixture(4.0, 2)]
    prompts = [Prompt(spans=(("+", 0.5, 1.5),)), Prompt(spans=(("-", 2.0, 3.0),))]
    batched = stream(processor, [processor.init_state(p) for p in prompts], audios)
    for i, (audio, prompt) in enumerate(zip(audios, prompts)):
        alone = windowed_reference(processor, audio, prompt)
        assert snr_db(alone, batched[i]) >= 80


def test_latency_accounting(processor):
    """Output sample n of the processor is input sample n - delay: an impulse-free check on the schedule —
    output is exactly zero before the first committed frame and the delay is context + look-ahead."""
    assert processor.delay_samples == (17 + CONFIG.lookahead_frames) * 8
    audio = mixture(3.0, 3)
    out = stream(processor, [processor.init_state(Prompt(spans=(("+", 0.0, 1.0),)))], [audio])[0]
    first_nonzero = np.flatnonzero(np.abs(out[0]) > 0)[0]
    assert first_nonzero == processor.delay_samples


def test_frame_noise_is_shared_between_windows(processor):
    first = processor._noise(10, 30)
    second = processor._noise(20, 40)
    assert np.array_equal(first[10:].numpy(), second[:10].numpy())
