"""Sliding-window streaming of a SAM Audio checkpoint equals the offline windowed reference (same windows)."""

import numpy as np
import pytest
import torch

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


# -- predicted spans (PE-A-Frame per window, with hysteresis) ---------------------------------------------------

@pytest.fixture(scope="module")
def span_processor(parity_dir, tmp_path_factory):
    """The parity model with a tiny T5 and the extras' PE-A-Frame (same codec geometry: 16 channels, 25 frames/s)."""
    from fixtures.side_models import sam_directory_with_side_models
    from samstream.model.components import SideModels
    from samstream.model.registry import load_separator

    directory = sam_directory_with_side_models(parity_dir, tmp_path_factory.mktemp("sam"), judge=False)
    separator = load_separator(str(directory), progress=False)
    return SlidingWindowProcessor(separator, CONFIG, span_predictor=SideModels(directory).span_predictor())


def test_streaming_with_predicted_spans_equals_windowed_reference(span_processor, one_torch_thread):
    audio = mixture(4.0, 5)
    prompt = Prompt(text="music")
    state = span_processor.init_state(prompt)
    decisions = []
    original = span_processor.predict_window_spans

    def recording(states, firsts, latents):
        out = original(states, firsts, latents)
        decisions.append((firsts[0], out[0].clone()))
        return out

    span_processor.predict_window_spans = recording
    try:
        streamed = stream(span_processor, [state], [audio])[0]
    finally:
        del span_processor.predict_window_spans
    reference = windowed_reference(span_processor, audio, prompt)
    assert snr_db(reference, streamed) >= 80
    # The spans are real: some frames are "+" and some are not, and they reach the DiT.
    on = torch.cat([d for _, d in decisions])
    assert on.any() and not on.all()
    plain = SlidingWindowProcessor(span_processor.separator, CONFIG)
    assert snr_db(reference, windowed_reference(plain, audio, prompt)) < 40
    assert span_processor.span_windows >= len(decisions) and span_processor.span_seconds > 0


def test_span_hysteresis_keeps_frames_from_flickering():
    from samstream.stream.regimes.sliding_window import PredictedSpans

    spans = PredictedSpans(on_threshold=0.3, off_threshold=0.2)
    first = spans.update(0, torch.tensor([0.5, 0.31, 0.1, 0.29]))
    assert first.tolist() == [True, True, False, False]  # new frames: the official rule, p > 0.3
    # One frame later: frames 1..3 are known. 0.25 keeps frame 1 on, 0.29 does not turn frame 3 on.
    second = spans.update(1, torch.tensor([0.25, 0.35, 0.29, 0.9]))
    assert second.tolist() == [True, True, False, True]
    # Frame 2 drops below 0.2: off; frame 3 rises above 0.3: on; frame 4 holds at exactly the off threshold.
    third = spans.update(2, torch.tensor([0.19, 0.35, 0.2]))
    assert third.tolist() == [False, True, True]


def test_spans_of_the_prompt_win_over_prediction(span_processor):
    assert span_processor.predicts_spans(Prompt(text="music"))
    assert not span_processor.predicts_spans(Prompt(text="music", spans=(("+", 0.1, 0.5),)))
    assert not span_processor.predicts_spans(Prompt(spans=(("+", 0.1, 0.5),)))
