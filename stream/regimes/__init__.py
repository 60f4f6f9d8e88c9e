"""Regime adapters: a separator from samstream.model behind the engine's `ChunkProcessor` seam."""

from __future__ import annotations

import os

from samstream.stream.processor import ChunkProcessor


def make_processor(model: str = "tiny", text_encoder: str | os.PathLike | None = None, window_s: float = 10.0,
                   hop_s: float = 1.0, lookahead_s: float = 0.5, steps: int | None = None,
                   speech_expert: bool = True) -> ChunkProcessor:
    """`tiny` -> block-causal default model (`speech_expert=False`: its networks alone); a SAM Audio checkpoint
    directory -> sliding-window regime."""
    from samstream.model.registry import load_separator

    separator = load_separator(model, text_encoder, speech_expert=speech_expert)
    from samstream.model.separator import SAMAudioSeparator

    if isinstance(separator, SAMAudioSeparator):
        from samstream.stream.regimes.sliding_window import SlidingWindowProcessor, WindowConfig

        frame_rate = separator.sample_rate / separator.hop
        config = WindowConfig.from_seconds(frame_rate, window_s, hop_s, lookahead_s,
                                           **({"steps": steps} if steps else {}))
        return SlidingWindowProcessor(separator, config)
    from samstream.stream.regimes.block_causal import BlockCausalProcessor

    processor = BlockCausalProcessor(separator)
    if steps:
        processor.max_steps = steps
    return processor
