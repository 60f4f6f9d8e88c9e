"""Sliding-window streaming of a SAM Audio checkpoint equals the offline windowed reference (same windows)."""

import numpy as np
import pytest

from samstream.model.errors import PromptError
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


# -- visual-mask prompts --------------------------------------------------------------------------------

def video_clip(seconds: float, fps: int = 30, seed: int = 0):
    frames = np.random.default_rng(seed).integers(0, 256, (int(seconds * fps), 24, 20, 3), dtype=np.uint8)
    return frames, np.arange(frames.shape[0]) / fps


def object_mask():
    mask = np.zeros((24, 20), bool)
    mask[4:16, 3:11] = True
    return mask


@pytest.fixture(scope="module")
def vision_processor(vision_model):
    return SlidingWindowProcessor(SAMAudioSeparator(vision_model), CONFIG)


def test_streaming_with_video_equals_windowed_reference(vision_processor, one_torch_thread):
    """Video frames pushed alongside the audio (each no later than its audio hop): per-frame features cached
    with the latent frames give the same output as the offline windowed reference, which differs from no video."""
    processor = vision_processor
    audio = mixture(3.0, 4)
    frames, times = video_clip(3.0)
    prompt = Prompt(visual_mask=object_mask())
    state = processor.init_state(prompt)
    hop = processor.hop_samples
    n_hops = -(-audio.shape[0] // hop) + processor.flush_hops()
    padded = np.zeros(n_hops * hop, np.float32)
    padded[: audio.shape[0]] = audio
    pushed, outputs = 0, []
    for k in range(n_hops):
        upto = int(np.searchsorted(times, (k + 1) * hop / processor.sample_rate))  # frames of this hop's audio
        if upto > pushed:
            processor.push_video(state, frames[pushed:upto], times[pushed:upto])
            pushed = upto
        outputs.append(processor.process([state], padded[None, k * hop:(k + 1) * hop], CONFIG.steps)[0])
    streamed = np.concatenate(outputs, axis=1)
    assert len(state.video) <= 3  # frames behind the final latent frames were dropped
    reference = windowed_reference(processor, audio, prompt, video=(frames, times))
    assert snr_db(reference, streamed) >= 80
    without_video = windowed_reference(processor, audio, prompt)
    assert np.abs(reference - without_video).max() > 1e-3


def test_visual_prompt_errors(processor, vision_processor):
    frames, times = video_clip(0.2)
    with pytest.raises(PromptError, match="has no vision encoder"):
        processor.init_state(Prompt(visual_mask=object_mask()))
    with pytest.raises(PromptError, match="has no vision encoder"):
        processor.push_video(processor.init_state(Prompt(spans=(("+", 0, 1),))), frames, times)
    state = vision_processor.init_state(Prompt(visual_mask=object_mask()))
    with pytest.raises(PromptError, match="visual mask is 20x24 .* frames are 10x24"):
        vision_processor.push_video(state, frames[:, :, :10], times)
    vision_processor.push_video(state, frames, times)
    with pytest.raises(PromptError, match="must increase"):
        vision_processor.push_video(state, frames[:1], times[:1])
    with pytest.raises(PromptError, match="visual mask is 10x24"):
        vision_processor.set_prompt(state, Prompt(visual_mask=np.ones((24, 10), bool)))
    with pytest.raises(PromptError, match="non-empty 2-D array"):
        Prompt(visual_mask=np.ones(5, bool))
    assert Prompt(visual_mask=object_mask()) == Prompt(visual_mask=object_mask().astype(np.uint8))
    assert Prompt(visual_mask=object_mask()) != Prompt(visual_mask=~object_mask())
