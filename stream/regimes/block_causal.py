"""Block-causal streaming: the default model (model/composite.py) and its parts, or any model trained chunk-causal.

Each step costs one chunk whatever the stream length (past chunks live in cached keys/values, recurrent states
and delay lines), and streaming output equals the model's offline run sample for sample: the model owns that
state (`init_stream`, `set_prompt`, `stream_step`, e.g. `CompositeSeparator`, `EmbeddedSeparator`). This adapter
only maps the engine's `ChunkProcessor` seam onto it.
"""

from __future__ import annotations

import math

import numpy as np

from samstream.model.errors import PromptError
from samstream.stream.processor import Prompt


def _check_prompt(prompt: Prompt) -> None:
    if prompt.visual_mask is not None:
        raise PromptError("visual-mask prompts need a SAM Audio checkpoint with its vision encoder; the embedded "
                          "model has none (use text, span or audio-example prompts)")


class BlockCausalProcessor:
    """`separator`: anything with the block-causal streaming API (sample_rate, chunk_samples, delay_samples,
    config.steps, init_stream, set_prompt, stream_step).

    The block-causal separators (the default model and its parts) return the delayed mixture minus the target
    as the residual, so the session may form the residual itself, at the client's rate
    (`residual_is_complement`; a separator that generates its residual says `residual_is_complement = False`)."""

    def __init__(self, separator):
        self.separator = separator
        self.sample_rate = separator.sample_rate
        self.hop_samples = separator.chunk_samples
        self.delay_samples = separator.delay_samples
        self.max_steps = separator.config.steps
        self.residual_is_complement = getattr(separator, "residual_is_complement", True)
        # Whether fewer sampling steps change a state's output (the batcher counts degradation by it).
        steps_matter = getattr(separator, "steps_matter", None)
        if steps_matter is not None:
            self.steps_matter = steps_matter
        describe_state = getattr(separator, "describe_state", None)  # how a prompt was understood (a dict)
        if describe_state is not None:
            self.describe_state = describe_state

    def release_state(self, state) -> None:
        """A stream is over: free what the separator holds for it outside Python (`separator.close(state)`)."""
        close = getattr(self.separator, "close", None)
        if close is not None:
            close(state)

    def prepare(self, streams: int) -> None:
        """Make ready for up to `streams` streams opening at once (the default model makes its speech expert's
        native states ahead), so that opening one does not hold up the others' compute."""
        prepare = getattr(self.separator, "prepare", None)
        if prepare is not None:
            prepare(streams)

    def init_state(self, prompt: Prompt):
        _check_prompt(prompt)
        return self.separator.init_stream(prompt.text, prompt.spans, prompt.example)

    def set_prompt(self, state, prompt: Prompt) -> None:
        _check_prompt(prompt)
        self.separator.set_prompt(state, prompt.text, prompt.spans, prompt.example)

    def process(self, states: list, hops: np.ndarray, steps: int) -> np.ndarray:
        return self.separator.stream_step(states, hops, steps).astype(np.float32, copy=False)

    def flush_hops(self) -> int:
        return math.ceil(self.delay_samples / self.hop_samples) + 1
