"""The seam between the streaming engine and a separator: `Prompt` and `ChunkProcessor`.

The engine (sessions, batcher) knows nothing about models; a regime adapter (block-causal or
sliding-window) implements `ChunkProcessor` on top of a separator from samstream.model. The engine
hands it one hop of model-rate audio per session per step, batched across sessions that may be at
different positions in their streams and use different prompts (each session has its own state,
like moshi's per-stream streaming state with an execution mask: only sessions with a pending hop
take part in a step).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from samstream.model.anchors import Span, validate_span
from samstream.model.errors import PromptError, UserFacingError


class StreamInputError(UserFacingError):
    """A stream's audio or use is invalid: wrong dtype/shape, NaN, oversized frame, full backlog, closed stream."""


@dataclass(frozen=True, eq=False)
class Prompt:
    """What to separate: text, time spans (stream time, seconds), an audio example at the model rate, and/or
    a visual mask (the object in the stream's video whose sound to isolate).

    Immutable; equal prompts have equal `key`s, which caches (text embeddings, prompt features) use.
    """

    text: str | None = None  # e.g. "dog barking"
    spans: tuple[Span, ...] = ()  # ("+" | "-", start_s, end_s): "this sound" / "not this sound"
    example: np.ndarray | None = None  # float32 mono audio at the model rate ("this voice")
    # bool [H, W] at the video's resolution, True on the object: applied to every video frame the stream
    # receives, keeping the object and blacking out the rest (model/video.py, mask_marks="keep").
    visual_mask: np.ndarray | None = None
    _example_digest: str | None = field(default=None, init=False, repr=False)
    _mask_digest: str | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.text is not None:
            if not isinstance(self.text, str) or not self.text.strip():
                raise PromptError(f"prompt text must be a non-empty string, got {self.text!r}")
            object.__setattr__(self, "text", self.text.strip())
        if isinstance(self.spans, (str, bytes)) or not hasattr(self.spans, "__iter__"):
            raise PromptError(f"prompt spans must be a sequence of (sign, start_s, end_s), got {self.spans!r}")
        object.__setattr__(self, "spans", tuple(validate_span(span) for span in self.spans))
        if self.example is not None:
            example = self.example
            if not isinstance(example, np.ndarray) or example.ndim != 1 or example.size == 0:
                raise PromptError("a prompt's audio example must be a non-empty 1-D numpy array (mono, model rate)")
            if not np.issubdtype(example.dtype, np.floating) or not np.isfinite(example).all():
                raise PromptError("a prompt's audio example must hold finite float samples")
            # A private read-only copy, so the digest keeps describing it.
            example = example.astype(np.float32, copy=True)
            example.setflags(write=False)
            object.__setattr__(self, "example", example)
            object.__setattr__(self, "_example_digest", hashlib.blake2b(example.tobytes(), digest_size=16).hexdigest())
        if self.visual_mask is not None:
            mask = self.visual_mask
            if not isinstance(mask, np.ndarray) or mask.ndim != 2 or mask.size == 0:
                raise PromptError("a prompt's visual mask must be a non-empty 2-D array [height, width] "
                                  "(True / non-zero on the object)")
            mask = mask != 0  # a private read-only bool copy
            mask.setflags(write=False)
            object.__setattr__(self, "visual_mask", mask)
            digest = hashlib.blake2b(np.packbits(mask).tobytes() + str(mask.shape).encode(), digest_size=16)
            object.__setattr__(self, "_mask_digest", digest.hexdigest())
        if self.text is None and not self.spans and self.example is None and self.visual_mask is None:
            raise PromptError("a prompt needs text, at least one span, an audio example, or a visual mask")

    @property
    def key(self) -> tuple:
        """Hashable identity: text, spans, and digests of the example and the visual mask."""
        return (self.text, self.spans, self._example_digest, self._mask_digest)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Prompt) and self.key == other.key

    def __hash__(self) -> int:
        return hash(self.key)


class ChunkProcessor(Protocol):
    """A separator driven one hop at a time; implemented by the regime adapters."""

    sample_rate: int  # model rate (e.g. 16000)
    hop_samples: int  # samples consumed and produced per step, at the model rate
    # Algorithmic delay: the output returned for step n covers input samples [n*hop - delay, (n+1)*hop - delay).
    delay_samples: int
    max_steps: int  # default number of sampling steps; degradation may ask for fewer

    def init_state(self, prompt: Prompt) -> Any:
        """A fresh per-session state. States must survive copy.deepcopy (a prompt change forks one)."""
        ...

    def set_prompt(self, state: Any, prompt: Prompt) -> None:
        """Switch a state to a new prompt; takes effect from the next step."""
        ...

    def process(self, states: list[Any], hops: np.ndarray, steps: int) -> np.ndarray:
        """hops [N, hop_samples] float32, one row per state (states may have different prompts);
        returns [N, 2, hop_samples] float32 (target, residual). Each state advances by one hop.
        If it raises, it must leave the states as they were (the batcher then retries each alone)."""
        ...

    def flush_hops(self) -> int:
        """How many extra zero hops push out the last real input (>= ceil(delay / hop))."""
        ...


def run_processor(processor: ChunkProcessor, states: list[Any], hops: np.ndarray, steps: int) -> np.ndarray:
    """`processor.process`, with its output checked against the contract (a wrong shape is a processor bug)."""
    out = processor.process(states, hops, steps)
    expected = (len(states), 2, processor.hop_samples)
    if not isinstance(out, np.ndarray) or out.shape != expected or out.dtype != np.float32:
        got = f"{out.dtype} {out.shape}" if isinstance(out, np.ndarray) else type(out).__name__
        raise RuntimeError(f"{type(processor).__name__}.process returned {got}; expected float32 {expected}")
    return out
