"""Both regimes driven through a StreamSession with random frame sizes (1..4096 samples, jitter) equal their
offline references: the embedded model's offline causal run, and SAM Audio's offline windowed reference."""

import numpy as np
import torch

from samstream.clients.cli.bench_stream import SAM_TINY, SAM_TINY_WATERMARK, signal
from samstream.stream.processor import Prompt
from samstream.stream.session import StreamSession


def snr_db(reference, estimate) -> float:
    return float(10 * np.log10(np.sum(reference**2) / max(np.sum((reference - estimate) ** 2), 1e-30)))


def stream_with_random_frames(processor, audio, prompt, rate, seed):
    session = StreamSession(processor, rate, prompt)
    rng = np.random.default_rng(seed)
    outs, position = [], 0
    while position < audio.shape[0]:
        size = int(rng.integers(1, 4097)) if rng.random() < 0.7 else int(rng.integers(1, 64))
        outs.append(np.stack(session.push(audio[position:position + size])))
        position += size
    outs.append(np.stack(session.flush()))
    out = np.concatenate(outs, axis=1)
    assert out.shape[1] == audio.shape[0] + session.latency_samples  # L pre-roll zeros, then one per input
    return out[:, session.latency_samples:]


def test_block_causal_stream_equals_offline_causal_run():
    seed = 0
    from samstream.model.embedded import EmbeddedConfig, EmbeddedModel, EmbeddedSeparator
    from samstream.stream.regimes.block_causal import BlockCausalProcessor

    torch.manual_seed(0)
    separator = EmbeddedSeparator(EmbeddedModel(EmbeddedConfig()))
    audio = signal(2.0, 16000, seed)
    prompt = Prompt(spans=(("+", 0.5, 1.2), ("-", 2.0, 2.4)))
    streamed = stream_with_random_frames(BlockCausalProcessor(separator), audio, prompt, 16000, seed)
    offline = separator.separate(audio, 16000, spans=prompt.spans)
    assert snr_db(offline.target, streamed[0]) >= 80
    assert snr_db(offline.residual, streamed[1]) >= 80


def test_sliding_window_stream_equals_windowed_reference():
    from samstream.model.loading import rebuild_buffers
    from samstream.model.sam_audio import SAMAudio, SAMAudioConfig
    from samstream.model.separator import SAMAudioSeparator
    from samstream.stream.regimes.sliding_window import SlidingWindowProcessor, WindowConfig, windowed_reference

    torch.manual_seed(0)
    model = SAMAudio(SAMAudioConfig.from_dict(SAM_TINY, codec_overrides=SAM_TINY_WATERMARK)).eval()
    rebuild_buffers(model)
    processor = SlidingWindowProcessor(SAMAudioSeparator(model),
                                       WindowConfig(window_frames=30, hop_frames=10, lookahead_frames=8, steps=1))
    audio = signal(3.0, 16000, 3)
    prompt = Prompt(spans=(("+", 1.0, 2.0),))
    streamed = stream_with_random_frames(processor, audio, prompt, 16000, 3)
    reference = windowed_reference(processor, audio, prompt)[:, processor.delay_samples:]
    reference = reference[:, : audio.shape[0]]
    assert np.abs(reference).max() > 0
    assert snr_db(reference, streamed) >= 80
