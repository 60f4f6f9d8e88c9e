"""The default model: a pretrained speech expert and networks trained here, behind one prompt.

Parts (docs/model_card.md says which serves what, and why, by measurement):
- level normalisation (model/level.py): every stream is heard at one working level; the output is scaled back;
- the speech expert (model/speech_expert.py): DeepFilterNet3, which keeps speech and removes the rest;
- the general separator (model/embedded.py): any text, span or audio-example prompt, block-causal.

Routing (model/prompt_routing.py) by the text prompt's nearest class wording:
- speech classes ("speech", "man speaking", "a person talking", "una mujer hablando", ...): the expert's speech
  estimate is the target;
- other classes: the general separator runs on the mixture with the expert's speech taken out (speech is an
  interferer there), except for vocal sounds (singing, laughter, ...) that the expert would take for speech;
- span-only, example-only or unknown prompts: the general separator on the mixture.
The residual is always the mixture minus the target, so target + residual == mixture.

Timing. Every branch is delayed to one fixed `delay_samples`: the general separator runs on the mixture delayed
by the expert's delay (so that the speech estimate lines up with it), and the expert's own estimate is delayed
by the separator's delay. The expert runs on every stream (its estimate feeds most routes, and its recurrent
state must be warm when a prompt changes); forks of a state made for a crossfade share it, since it depends on
the audio only (`SharedExpert`).

Offline runs (`separate`, `stream_file`) are the streaming path over the whole file, so they equal streaming.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import torch

from samstream.model.anchors import Span
from samstream.model.audio import check_sample_rate, to_mono
from samstream.model.embedded import EmbeddedSeparator, StreamState
from samstream.model.errors import AudioInputError, PromptError
from samstream.model.level import LevelNormalizer, LevelState
from samstream.model.polyphase import polyphase_resample
from samstream.model.prompt_routing import PromptRouter, Route
from samstream.model.separator import Separation


class DelayLine:
    """A fixed delay of a sample stream (`fill` first: zeros for audio, ones for gains)."""

    def __init__(self, samples: int, fill: float = 0.0) -> None:
        self._buffer = np.full(samples, fill, np.float32)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        joined = np.concatenate([self._buffer, x])
        self._buffer = joined[len(x):]
        return joined[: len(x)]


class SharedExpert:
    """One stream's speech expert, shared by the forks of its state: each hop is computed once, and a fork
    stepping the same hop gets the same estimate."""

    def __init__(self, stream) -> None:
        self.stream = stream
        self._hop = -1
        self._estimate: np.ndarray | None = None

    def step(self, hop_index: int, audio: np.ndarray) -> np.ndarray:
        if hop_index != self._hop:
            self._estimate = self.stream.process(audio)
            self._hop = hop_index
        return self._estimate

    def __deepcopy__(self, memo) -> "SharedExpert":
        return self  # it depends on the audio only, not on the prompt


@dataclass
class CompositeState:
    """One stream of the default model (explicit state, moshi-style)."""

    route: Route
    general: StreamState | None  # the general separator's state when the route uses it
    general_input: DelayLine  # normalised mixture, delayed to line up with the speech estimate
    speech_delay: DelayLine  # the speech estimate, delayed by the general separator's delay
    mixture_delay: DelayLine  # the raw mixture, delayed by the whole model's delay (residual = it − target)
    gain_delay: DelayLine  # per-sample input gains, delayed likewise (the output is divided by them)
    level: LevelState = field(default_factory=LevelState)
    expert: SharedExpert | None = None
    hops: int = 0


class CompositeSeparator:
    """The default model's `Separator` and chunk-step streaming API (the engine's block-causal regime drives it)."""

    def __init__(self, general: EmbeddedSeparator, speech_expert: bool = True) -> None:
        self.general = general
        self.sample_rate = general.sample_rate
        self.chunk_samples = general.chunk_samples
        self.uses_speech_expert = speech_expert
        self.level = LevelNormalizer()
        self.router = PromptRouter(general.text_vectors)
        if speech_expert:
            from samstream.model.speech_expert import expert_delay, state_pool

            self._pool = state_pool()  # starts making native states now, ahead of the first stream
            self.expert_delay = expert_delay(self.sample_rate)
        else:
            self._pool = None
            self.expert_delay = 0
        self.delay_samples = self.expert_delay + general.delay_samples
        self.config = general.config

    # -- prompts ------------------------------------------------------------------------------------------
    def route(self, prompt: str | None, spans: Sequence[Span] = (), example=None) -> Route:
        if prompt is None and not spans and example is None:
            raise PromptError("give a prompt: text, a time span, or an audio example")
        return self.router.route(prompt)

    def _general_state(self, route: Route, prompt, spans, example) -> StreamState | None:
        if route.speech and self.uses_speech_expert and not spans and example is None:
            return None
        return self.general.init_stream(prompt, spans, example)

    # -- streaming ----------------------------------------------------------------------------------------
    def init_stream(self, prompt: str | None = None, spans: Sequence[Span] = (), example=None,
                    example_rate: int | None = None) -> CompositeState:
        if example is not None and not isinstance(example, tuple):
            example = (example, example_rate or self.sample_rate)
        route = self.route(prompt, spans, example)
        expert = None
        if self.uses_speech_expert:
            from samstream.model.speech_expert import SpeechExpertStream

            expert = SharedExpert(SpeechExpertStream(self.sample_rate, self._pool))
        return CompositeState(
            route=route,
            general=self._general_state(route, prompt, spans, example),
            general_input=DelayLine(self.expert_delay),
            speech_delay=DelayLine(self.general.delay_samples),
            mixture_delay=DelayLine(self.delay_samples),
            gain_delay=DelayLine(self.delay_samples, fill=1.0),
            expert=expert,
        )

    def set_prompt(self, state: CompositeState, prompt: str | None = None, spans: Sequence[Span] = (),
                   example=None, example_rate: int | None = None) -> None:
        """Switch a state to a new prompt from its next hop; the level, the expert and the delays carry on."""
        if example is not None and not isinstance(example, tuple):
            example = (example, example_rate or self.sample_rate)
        route = self.route(prompt, spans, example)
        fresh = self.general.init_stream(prompt, spans, example) if state.general is not None else None
        if state.general is not None and fresh is not None:
            # Cached context keys/values keep the old prompt's influence until they slide out of the window;
            # the session crossfades from the old separation meanwhile.
            state.general.prompt, state.general.anchors = fresh.prompt, fresh.anchors
        elif state.general is None:
            state.general = self._general_state(route, prompt, spans, example)
        state.route = route

    @torch.inference_mode()
    def stream_step(self, states: list[CompositeState], chunk: np.ndarray, steps: int | None = None) -> np.ndarray:
        """Advance every stream by one chunk: [N, chunk_samples] -> [N, 2, chunk_samples] (target, residual);
        output sample n of a stream is its input sample n − delay_samples (zeros before the start)."""
        chunk = np.asarray(chunk, dtype=np.float32)
        if chunk.ndim != 2 or chunk.shape != (len(states), self.chunk_samples):
            raise AudioInputError(f"stream_step needs a chunk of shape [{len(states)}, {self.chunk_samples}], "
                                  f"got {tuple(chunk.shape)}")
        targets = np.zeros_like(chunk)
        restore = np.empty_like(chunk)  # each row's input gains, delayed like the output
        general_rows, general_inputs = [], []
        for i, state in enumerate(states):
            normalized, gains = self.level.normalize(state.level, chunk[i])
            restore[i] = state.gain_delay(gains)
            delayed = state.general_input(normalized)
            speech = state.expert.step(state.hops, normalized) if state.expert is not None else None
            state.hops += 1
            if speech is not None:
                targets[i] = state.speech_delay(speech)  # the target unless the general branch runs
            if state.general is not None:
                general_rows.append(i)
                remove = speech is not None and state.route.remove_speech
                general_inputs.append(delayed - speech if remove else delayed)
        if general_rows:
            out = self.general.stream_step([states[i].general for i in general_rows], np.stack(general_inputs), steps)
            targets[general_rows] = out[:, 0]
        targets /= restore
        result = np.empty((len(states), 2, self.chunk_samples), np.float32)
        for i, state in enumerate(states):
            mixture = state.mixture_delay(chunk[i])
            result[i, 0] = targets[i]
            result[i, 1] = mixture - targets[i]
        return result

    # -- offline ------------------------------------------------------------------------------------------
    def stream_file(self, wav: np.ndarray, prompt: str | None = None, spans: Sequence[Span] = (), example=None,
                    steps: int | None = None) -> np.ndarray:
        """Model-rate mono [S] through `stream_step` chunk by chunk -> the target [S], realigned by the delay."""
        state = self.init_stream(prompt, spans, example)
        count = -(-(len(wav) + self.delay_samples) // self.chunk_samples)
        padded = np.zeros(count * self.chunk_samples, np.float32)
        padded[: len(wav)] = wav
        out = np.concatenate([self.stream_step([state], hop[None], steps)[0, 0]
                              for hop in padded.reshape(count, self.chunk_samples)])
        self.close(state)
        return out[self.delay_samples : self.delay_samples + len(wav)]

    def separate(self, audio, sample_rate: int, prompt: str | None = None, spans: Sequence[Span] = (),
                 example=None, steps: int | None = None, progress: bool = False) -> Separation:
        """Offline: the streaming path over the whole file, resampled as a stream is (the LL resampler)."""
        sample_rate = check_sample_rate(sample_rate)
        mono = to_mono(audio).numpy()
        if isinstance(example, np.ndarray) or torch.is_tensor(example):
            example = (example, sample_rate)
        wav = polyphase_resample(mono, sample_rate, self.sample_rate)
        target = self.stream_file(wav, prompt, spans, example, steps)
        target = polyphase_resample(target, self.sample_rate, sample_rate)
        out = np.zeros(len(mono), np.float32)
        out[: min(len(mono), len(target))] = target[: len(mono)]
        return Separation(out, mono - out, sample_rate)

    @staticmethod
    def close(state: CompositeState) -> None:
        """Free the native state of a stream that ended (it is also freed when garbage collected)."""
        if state.expert is not None:
            state.expert.stream.close()
