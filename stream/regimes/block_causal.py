"""Block-causal streaming: the embedded default model (and any model trained chunk-causal).

Attention is causal over chunks; past chunks are represented by keys/values cached when they were
committed, so each step costs one chunk whatever the stream length, and streaming output equals the
model's offline causal run sample for sample (the model owns that state: `EmbeddedSeparator.stream_step`).
This adapter only maps the engine's `ChunkProcessor` seam onto it.
"""

from __future__ import annotations

import math

import numpy as np

from samstream.model.embedded import EmbeddedSeparator, StreamState
from samstream.model.errors import PromptError
from samstream.stream.processor import Prompt


def _check_prompt(prompt: Prompt) -> None:
    if prompt.visual_mask is not None:
        raise PromptError("visual-mask prompts need a SAM Audio checkpoint with its vision encoder; the embedded "
                          "model has none (use text, span or audio-example prompts)")


class BlockCausalProcessor:
    def __init__(self, separator: EmbeddedSeparator):
        self.separator = separator
        self.sample_rate = separator.sample_rate
        self.hop_samples = separator.chunk_samples
        self.delay_samples = separator.delay_samples
        self.max_steps = separator.config.steps

    def init_state(self, prompt: Prompt) -> StreamState:
        _check_prompt(prompt)
        return self.separator.init_stream(prompt.text, prompt.spans, prompt.example)

    def set_prompt(self, state: StreamState, prompt: Prompt) -> None:
        _check_prompt(prompt)
        # Cached context keys/values keep the old prompt's influence until they slide out of the attention
        # window; the session crossfades from the old separation meanwhile.
        fresh = self.separator.init_stream(prompt.text, prompt.spans, prompt.example)
        state.prompt, state.anchors = fresh.prompt, fresh.anchors

    def process(self, states: list[StreamState], hops: np.ndarray, steps: int) -> np.ndarray:
        return self.separator.stream_step(states, hops, steps).astype(np.float32, copy=False)

    def flush_hops(self) -> int:
        return math.ceil(self.delay_samples / self.hop_samples) + 1
