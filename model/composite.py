"""The default model: a pretrained speech expert and networks trained here, behind one prompt.

Parts (docs/model_card.md says which serves what, and why, by measurement):
- level normalisation (model/level.py): every stream is heard at one working level; the output is scaled back;
- the speech expert (model/speech_expert.py): DeepFilterNet3, which keeps speech and removes the rest;
- the speech-presence gate (model/speech_presence.py): how much of the expert's estimate leaves the general
  separator's input: all of it where Silero VAD hears speech in it, half elsewhere;
- the speech refiner (model/masknet.py with the expert's estimate as an input): corrects the expert's estimate for
  the speech classes (what it keeps of other sound, which voice "man speaking" / "woman speaking" means);
- the pitch mask (model/gender_mask.py): which voices "man speaking" / "woman speaking" mean, by pitch, tracked on
  the expert's estimate;
- the voice picker (model/masknet.py with a GE2E speaker embedding, model/speaker_encoder.py): one voice out of
  the mixture, named by an enrollment clip (or, blended into the pitch mask's, by a gender's wording);
- the general separator (model/embedded.py): any other text, a span, an audio example beside a non-speech class;
  where more general networks are shipped (an ensemble file, `ENSEMBLE_FILE`), a class may be served by a weighted
  blend of their outputs, calibrated on held-out items (`samstream calibrate --ensemble`).

Branches, chosen by the prompt (model/prompt_routing.py matches text to the nearest class wording):
- "expert": speech classes ("speech", "a person talking", "una persona hablando", ...): the expert's estimate,
  refined by the speech refiner (prompted with the class's canonical wording) when one is shipped, else for
  "man speaking" / "woman speaking" the mixture masked by pitch to the voices of that gender and by the expert's
  gain, blended with the voice picker's estimate for that gender's wording (model/gender_mask.py);
- "voice": an enrollment clip (alone or with speech wording): the voice picker on the mixture (beside the expert:
  measured better than on the expert's estimate), as it arrives (not delayed like the other branches: see Timing);
- "general": everything else; for non-vocal classes the expert's speech is taken out of its input first (speech
  is an interferer there) where the gate hears speech in it, half of it elsewhere (what the expert keeps there
  may be a voice-like interferer or the target itself); for spans, examples and unknown wordings it hears the
  mixture. It is prompted with
  the canonical wording of the class the text was matched to, so paraphrases and translations separate like it.
The residual is always the mixture minus the target, so target + residual == mixture.

Timing. The expert runs on every stream: its estimate feeds most branches, and its recurrent state must be warm
when a prompt changes. The general separator sees the mixture delayed by the expert's delay (so that the speech
estimate lines up with it); the voice picker, which never uses the speech estimate, sees it undelayed: the delay
line's leading zeros cost the picker 2.7 dB on held-out overlapped pairs (a recurrent network trained on streams
that start with sound). Each branch's output is delayed to one fixed `delay_samples`. A prompt change
that moves a stream to another branch starts that branch on the last few hops of the stream (kept for that), so
its output is already in step when the session crossfades to it. Forks of a state made for that crossfade share
the expert (`SharedExpert`): it depends on the audio only.

Offline runs (`separate`, `stream_file`) are the streaming path over the whole file, so they equal streaming.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from samstream.model.anchors import Span
from samstream.model.audio import check_sample_rate, to_mono
from samstream.model.class_prompts import canonical
from samstream.model.embedded import EmbeddedSeparator
from samstream.model.errors import AudioInputError, PromptError
from samstream.model.gender_mask import GenderMask, GenderMaskState
from samstream.model.level import LevelNormalizer, LevelState
from samstream.model.mask_floor import FLOOR_BAND_EDGES_HZ, Floor, check_floor, check_share, lowest_share
from samstream.model.masknet import MaskNetSeparator, load_masknet
from samstream.model.polyphase import polyphase_kernel, polyphase_resample
from samstream.model.prompt_routing import PromptRouter, Route
from samstream.model.separator import Separation
from samstream.model.speech_presence import SpeechGate, SpeechGateState

EXPERT, VOICE, GENERAL = "expert", "voice", "general"

# The general separator's mask floor inside the default model where no calibrated one applies (a wording that
# matches no class, spans, audio examples): it keeps at least this share of its input, so a target the network
# cannot find comes out near the mixture instead of confidently wrong. The one floor for every class before the
# calibrated ones, chosen on half of the held-out set and checked on the other (docs/model_card.md).
GENERAL_MASK_FLOOR = 0.15
# Floors calibrated on an evaluation set of held-out sources (`samstream calibrate`), beside the general weights: each
# class the general separator serves keeps the floor that separated its items best, from none to the whole input,
# one share for every frequency or one per band (prompts that match no class, spans and audio examples keep
# GENERAL_MASK_FLOOR), and the speech expert's estimate keeps one share of the mixture for every speech prompt.
FLOORS_FILE = "floors.json"
# More general networks beside the shipped one, when model/weights/ holds an ensemble file: the networks it names
# (weights files beside it) and, for the classes it lists, a blend of the networks' outputs (`Blend`) at one floor,
# chosen on calibration items (`samstream calibrate --ensemble`). Networks trained differently fail on different
# items: a blend of two or three separated some classes' items better than any one of them (docs/model_card.md,
# "General networks blended").
ENSEMBLE_FILE = "ensemble.json"
FIRST_NETWORK = "general"  # the shipped general weights' name in a blend


@dataclass(frozen=True)
class Blend:
    """How the general branch serves a prompt: general networks by name with the weight of each one's output (they
    sum to 1; one weight, or one per band of FLOOR_BAND_EDGES_HZ summing to 1 in each band) and the mask floor every
    one of them keeps. The networks' outputs are masks of the same input, so the blend is one mask: the weighted
    mean of theirs, each network's mask times its weight."""

    weights: tuple[tuple[str, Floor], ...]
    floor: Floor

    @property
    def networks(self) -> tuple[str, ...]:
        return tuple(name for name, _ in self.weights)

    @classmethod
    def alone(cls, floor: Floor) -> "Blend":
        return cls(((FIRST_NETWORK, 1.0),), floor)


class DelayLine:
    """A fixed delay of a sample stream (`fill` first: zeros for audio, ones for gains)."""

    def __init__(self, samples: int, fill: float = 0.0) -> None:
        self._buffer = np.full(samples, fill, np.float32)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        joined = np.concatenate([self._buffer, x])
        self._buffer = joined[len(x):]
        return joined[: len(x)]


class SharedExpert:
    """One stream's speech expert and the gate over its estimate, shared by the forks of its state: each hop is
    computed once, and a fork stepping the same hop gets the same estimate."""

    def __init__(self, stream, gate: SpeechGateState) -> None:
        self.stream = stream
        self.gate = gate
        self._hop = -1
        self._estimate: tuple[np.ndarray, np.ndarray] | None = None

    def step(self, hop_index: int, audio: np.ndarray, gate: SpeechGate) -> tuple[np.ndarray, np.ndarray]:
        """-> the speech estimate, and what of it the general separator's input loses (the estimate times the
        gate)."""
        if hop_index != self._hop:
            speech = self.stream.process(audio)
            self._estimate = speech, speech * gate.step(self.gate, speech)
            self._hop = hop_index
        return self._estimate

    def __deepcopy__(self, memo) -> "SharedExpert":
        return self  # it depends on the audio only, not on the prompt


@dataclass
class PitchMaskedExpert:
    """The expert branch of a gendered prompt: the pitch mask's stream, the mixture delayed like its output (the
    expert's floor mixes them), and the voice picker prompted by the gender's wording, which hears the stream as it
    arrives, with its output delayed into step with the expert's estimate (None without a shipped picker)."""

    mask: GenderMaskState
    mixture: DelayLine
    picker: Any = None
    picker_delay: DelayLine | None = None


@dataclass
class CompositeState:
    """One stream of the default model (explicit state, moshi-style)."""

    branch: str  # EXPERT, VOICE or GENERAL
    route: Route
    branch_state: Any  # the branch's stream state: the general networks' (a list, in the blend's order), the voice
    # picker's, the speech refiner's or the pitch mask's (PitchMaskedExpert); None for the expert's estimate as it is
    align: DelayLine  # the branch output, delayed to the model's delay
    mixture_in: DelayLine  # normalised mixture, delayed to line up with the speech estimate
    mixture_out: DelayLine  # the raw mixture, delayed by the model's delay (residual = it − target)
    gain_delay: DelayLine  # per-sample input gains, delayed likewise (the output is divided by them)
    history: deque  # the last hops of (normalised mixture, the same delayed, speech estimate, what of it is taken
    # out): primes a new branch
    level: LevelState = field(default_factory=LevelState)
    expert: SharedExpert | None = None
    blend: Blend | None = None  # on the general branch, the general networks serving it (by name: a prompt change
    # deep-copies the state)
    hops: int = 0


class CompositeSeparator:
    """The default model's `Separator` and chunk-step streaming API (the engine's block-causal regime drives it)."""

    def __init__(self, general: EmbeddedSeparator | MaskNetSeparator, voice=None, speech_expert: bool = True, refiner=None,
                 class_floors: dict[str, Floor] | None = None, expert_floor: float = 0.0,
                 others: dict[str, EmbeddedSeparator | MaskNetSeparator] | None = None,
                 blends: dict[str, Blend] | None = None) -> None:
        # class -> the general separator's calibrated mask floor (checked here, not when a stream first needs it)
        self.class_floors = {name: check_floor(floor, f"the mask floor of {name!r}")
                             for name, floor in (class_floors or {}).items()}
        # more general networks by name, and the classes served by a blend of them (`Blend`)
        self.networks = {FIRST_NETWORK: general, **(others or {})}
        for name, network in self.networks.items():
            if (network.chunk_samples, network.delay_samples, network.sample_rate) != (
                    general.chunk_samples, general.delay_samples, general.sample_rate):
                raise ValueError(f"the general network {name!r} must step the same hop with the same delay and rate "
                                 "as the first")
        self.blends = {name: check_blend(blend, self.networks, name) for name, blend in (blends or {}).items()}
        # the share of the mixture the expert's own estimate keeps (target = speech + floor * (mixture - speech)):
        # one for every speech prompt, as the expert's estimate does not depend on the prompt
        self.expert_floor = check_share(expert_floor, "expert_floor")
        self.voice = voice if speech_expert else None
        self.refiner = refiner if speech_expert else None  # it refines the expert's estimate: nothing without one
        # "man speaking" / "woman speaking": the expert keeps every voice, the pitch mask keeps that gender's (a
        # shipped refiner would hear the prompt itself)
        self.pitch_mask = GenderMask() if speech_expert and self.refiner is None else None
        self.sample_rate = general.sample_rate
        self.chunk_samples = general.chunk_samples
        self.config = general.config
        self.uses_speech_expert = speech_expert
        self.level = LevelNormalizer()
        self.router = PromptRouter(general.text_vectors)
        for part in (voice, refiner):
            if part is not None and part.chunk_samples != self.chunk_samples:
                raise ValueError("the voice picker, the speech refiner and the general separator must step the same hop")
        if speech_expert:
            from samstream.model.speech_expert import expert_delay, state_pool

            self._pool = state_pool()  # starts making native states now, ahead of the first stream
            self.expert_delay = expert_delay(self.sample_rate)
            if self.voice is not None and self.voice.delay_samples > self.expert_delay:
                raise ValueError("the voice picker's delay must fit in the speech expert's: a gendered prompt lines "
                                 "its output up with the expert's estimate")
            self.speech_gate = SpeechGate()
        else:
            self._pool = None
            self.expert_delay = 0
            self.speech_gate = None
        # each branch's longest delay (the expert branch's: with the pitch mask) sets the model's one delay
        self.branch_delays = {EXPERT: self._expert_branch_delay(gendered=True), GENERAL: general.delay_samples}
        if self.voice is not None:
            self.branch_delays[VOICE] = self.voice.delay_samples
        self.delay_samples = self.expert_delay + max(self.branch_delays.values())
        self._history_hops = math.ceil(self.delay_samples / self.chunk_samples) + 2  # covers an undelayed branch
        self._embeddings: dict[bytes, np.ndarray] = {}  # enrollment clip digest -> speaker embedding

    @property
    def general(self) -> EmbeddedSeparator | MaskNetSeparator:
        """The first general network (one place: `networks` holds it under FIRST_NETWORK)."""
        return self.networks[FIRST_NETWORK]

    def other_networks(self) -> dict:
        """The general networks beside the first, by name (as the constructor takes them)."""
        return {name: network for name, network in self.networks.items() if name != FIRST_NETWORK}

    def _expert_branch_delay(self, gendered: bool) -> int:
        if self.refiner is not None:
            return self.refiner.delay_samples
        return self.pitch_mask.delay_samples if gendered and self.pitch_mask is not None else 0

    # -- prompts ------------------------------------------------------------------------------------------
    def plan(self, prompt: str | None, spans: Sequence[Span] = (), example=None) -> tuple[str, Route]:
        """Which branch serves this prompt, and the text's route."""
        if prompt is None and not spans and example is None:
            raise PromptError("give a prompt: text, a time span, or an audio example")
        route = self.router.route(prompt)
        if not self.uses_speech_expert or spans:
            return GENERAL, route
        if example is not None:
            # An enrollment (alone, or with speech wording) picks a voice; an example beside a non-speech class
            # ("dog barking" + a clip of that dog) is the general separator's audio-example prompt.
            voice_wanted = route.target_class is None or route.speech
            return (VOICE if self.voice is not None and voice_wanted else GENERAL), route
        if route.speech:
            # "man speaking" / "woman speaking" stay with the expert, whose pitch mask blends in the voice picker
            # prompted by the gender's wording: the picker alone does badly under loud sounds (docs/model_card.md,
            # "Man or woman")
            return EXPERT, route
        return GENERAL, route

    @staticmethod
    def general_text(route: Route, prompt: str | None) -> str | None:
        """The wording the general separator hears: the canonical wording of the class the prompt was matched to
        (so a paraphrase or a translation separates like the class name it means), or the user's own text when
        it matched no class."""
        return canonical(route.target_class) if route.target_class is not None else prompt

    def general_for(self, route: Route, spans: Sequence[Span], example) -> Blend:
        """The general networks serving a prompt and their mask floor: the calibrated blend of the class a text
        prompt was matched to where the ensemble has one, else the first network at the class's calibrated floor
        (docs/model_card.md, "Never confidently wrong"), or at its own floor for spans, examples and wordings that
        match no class (never calibrated)."""
        if route.target_class is None or spans or example is not None:
            return Blend.alone(self.general.mask_floor)
        if route.target_class in self.blends:
            return self.blends[route.target_class]
        return Blend.alone(self.class_floors.get(route.target_class, self.general.mask_floor))

    def _branch_state(self, branch: str, route: Route, prompt, spans, example):
        if branch == GENERAL:
            blend = self.general_for(route, spans, example)
            return [self.networks[name].init_stream(self.general_text(route, prompt), spans, example,
                                                    mask_floor=blend.floor, mask_weight=weight)
                    for name, weight in blend.weights]
        if branch == VOICE:
            # The picker's prompt: the enrollment clip's speaker embedding, and the gender's canonical wording when
            # the text beside the clip names one.
            text = canonical(route.target_class) if route.gender else None
            return self.voice.init_stream(text, speaker=self.speaker_embedding(example))
        if self.refiner is not None:
            return self.refiner.init_stream(canonical(route.target_class))
        if route.gender is not None and self.pitch_mask is not None:
            # The picker tells a man from a woman better than the pitch mask, which holds a voice alone in noise
            # better: the pitch mask blends the two (model/gender_mask.py; docs/model_card.md, "Man or woman").
            picker = picker_delay = None
            if self.voice is not None:
                picker = self.voice.init_stream(canonical(route.target_class))
                picker_delay = DelayLine(self.expert_delay - self.voice.delay_samples)
            return PitchMaskedExpert(self.pitch_mask.init_stream(route.gender),
                                     DelayLine(self.pitch_mask.delay_samples), picker, picker_delay)
        return None

    def speaker_embedding(self, example) -> np.ndarray | None:
        """The enrollment clip's GE2E embedding, cached by the clip's content: a prompt change, a fork or a meter
        asking again costs nothing (embedding a 10 s clip takes ~0.1 s on the worker)."""
        if example is None:
            return None
        from samstream.model.speaker_encoder import load_speaker_encoder

        clip, rate = example if isinstance(example, tuple) else (example, self.sample_rate)
        clip = polyphase_resample(to_mono(clip).numpy(), check_sample_rate(rate), self.sample_rate)
        key = hashlib.blake2b(clip.tobytes(), digest_size=16).digest()
        if key not in self._embeddings:
            if len(self._embeddings) >= 64:
                self._embeddings.pop(next(iter(self._embeddings)))
            self._embeddings[key] = load_speaker_encoder().embed_utterance(clip)
        return self._embeddings[key]

    # -- streaming ----------------------------------------------------------------------------------------
    def init_stream(self, prompt: str | None = None, spans: Sequence[Span] = (), example=None,
                    example_rate: int | None = None) -> CompositeState:
        if example is not None and not isinstance(example, tuple):
            example = (example, example_rate or self.sample_rate)
        branch, route = self.plan(prompt, spans, example)
        expert = None
        if self.uses_speech_expert:
            from samstream.model.speech_expert import SpeechExpertStream

            expert = SharedExpert(SpeechExpertStream(self.sample_rate, self._pool), self.speech_gate.init_stream())
        return CompositeState(
            branch=branch, route=route,
            branch_state=self._branch_state(branch, route, prompt, spans, example),
            blend=self.general_for(route, spans, example) if branch == GENERAL else None,
            align=self._align(branch, route),
            mixture_in=DelayLine(self.expert_delay),
            mixture_out=DelayLine(self.delay_samples),
            gain_delay=DelayLine(self.delay_samples, fill=1.0),
            history=deque(maxlen=self._history_hops),
            expert=expert,
        )

    def _align(self, branch: str, route: Route) -> DelayLine:
        input_delay = 0 if branch == VOICE else self.expert_delay
        served = (self._expert_branch_delay(route.gender is not None) if branch == EXPERT
                  else self.branch_delays[branch])
        return DelayLine(self.delay_samples - input_delay - served)

    def set_prompt(self, state: CompositeState, prompt: str | None = None, spans: Sequence[Span] = (),
                   example=None, example_rate: int | None = None) -> None:
        """Switch a state to a new prompt from its next hop; the level, the expert and the delays carry on."""
        if example is not None and not isinstance(example, tuple):
            example = (example, example_rate or self.sample_rate)
        branch, route = self.plan(prompt, spans, example)
        blend = self.general_for(route, spans, example) if branch == GENERAL else None
        if branch == state.branch == GENERAL and blend.networks == state.blend.networks:
            # The general networks' own context (cached keys/values, recurrent state) carries on; the session
            # crossfades from the old separation meanwhile.
            for (name, weight), network_state in zip(blend.weights, state.branch_state):
                self.networks[name].set_prompt(network_state, self.general_text(route, prompt), spans, example,
                                               mask_floor=blend.floor, mask_weight=weight)
            state.blend = blend
        else:
            state.branch_state = self._branch_state(branch, route, prompt, spans, example)
            state.align = self._align(branch, route)
            state.branch = branch
            state.blend = blend
            state.route = route
            for hop in state.history:  # start the new branch in step with the stream
                self._run_branch([state], [self._branch_input(state, *hop)], None)
        state.route = route

    @staticmethod
    def _branch_input(state: CompositeState, normalized: np.ndarray, mixture: np.ndarray,
                      speech: np.ndarray | None, taken_out: np.ndarray | None) -> np.ndarray:
        # The voice picker hears the mixture beside the expert, not the expert's output: on held-out voice pairs
        # the same network scored +1.1 dB on the mixture and -0.9 dB on the expert's speech estimate, whose
        # artefacts it was not trained on (docs/model_card.md, "Voice picker"); and it hears it undelayed.
        if state.branch == EXPERT:
            # the expert's floor or the refiner mixes the first two; a gendered prompt's picker hears the third
            return np.stack([mixture, speech, normalized])
        if state.branch == VOICE:
            return normalized
        if taken_out is not None and state.route.remove_speech:
            # The whole estimate where the gate hears speech in it, half elsewhere, where the expert's "speech" is
            # what it kept of other sounds: a voice-like interferer or the target itself (docs/model_card.md,
            # "Only speech is taken out").
            return mixture - taken_out
        return mixture

    def _run_branch(self, states: list[CompositeState], inputs: list[np.ndarray], steps: int | None) -> np.ndarray:
        """One hop of each state's branch (all states on the same branch, with the same kind of branch state) ->
        aligned targets [N, hop]."""
        branch = states[0].branch
        if branch == EXPERT and states[0].branch_state is None:
            mixture, speech, _ = np.stack(inputs).transpose(1, 0, 2)
            out = speech + self.expert_floor * (mixture - speech)
        elif branch == EXPERT and isinstance(states[0].branch_state, PitchMaskedExpert):
            mixture, speech, normalized = np.stack(inputs).transpose(1, 0, 2)
            picked = None
            if states[0].branch_state.picker is not None:
                picked = self.voice.stream_step([s.branch_state.picker for s in states], normalized)[:, 0]
                picked = np.stack([s.branch_state.picker_delay(row) for s, row in zip(states, picked)])
            speech = self.pitch_mask.stream_step([s.branch_state.mask for s in states], speech, mixture, picked)
            mixture = np.stack([s.branch_state.mixture(row) for s, row in zip(states, mixture)])
            out = speech + self.expert_floor * (mixture - speech)
        elif branch == EXPERT:
            both = np.stack(inputs)
            out = self.refiner.stream_step([s.branch_state for s in states], both[:, 0], expert=both[:, 1])[:, 0]
        elif branch == VOICE:
            out = self.voice.stream_step([s.branch_state for s in states], np.stack(inputs))[:, 0]
        else:  # the blend's networks (the same for every state here), each weighing its mask by each state's weight
            heard = np.stack(inputs)
            out = np.zeros_like(heard)
            for index, name in enumerate(states[0].blend.networks):
                out += self.networks[name].stream_step([s.branch_state[index] for s in states], heard, steps)[:, 0]
        return np.stack([s.align(row) for s, row in zip(states, out)])

    @torch.inference_mode()
    def stream_step(self, states: list[CompositeState], chunk: np.ndarray, steps: int | None = None) -> np.ndarray:
        """Advance every stream by one chunk: [N, chunk_samples] -> [N, 2, chunk_samples] (target, residual);
        output sample n of a stream is its input sample n − delay_samples (zeros before the start)."""
        chunk = np.asarray(chunk, dtype=np.float32)
        if chunk.ndim != 2 or chunk.shape != (len(states), self.chunk_samples):
            raise AudioInputError(f"stream_step needs a chunk of shape [{len(states)}, {self.chunk_samples}], "
                                  f"got {tuple(chunk.shape)}")
        restore = np.empty_like(chunk)  # each row's input gains, delayed like the output
        groups: dict[str, list[int]] = {}
        inputs: dict[int, np.ndarray] = {}
        for i, state in enumerate(states):
            normalized, gains = self.level.normalize(state.level, chunk[i])
            restore[i] = state.gain_delay(gains)
            mixture = state.mixture_in(normalized)
            speech, taken_out = (state.expert.step(state.hops, normalized, self.speech_gate)
                                 if state.expert is not None else (None, None))
            state.hops += 1
            state.history.append((normalized, mixture, speech, taken_out))
            inputs[i] = self._branch_input(state, normalized, mixture, speech, taken_out)
            # one batched call per kind (and per set of general networks)
            groups.setdefault((state.branch, type(state.branch_state),
                               state.blend.networks if state.blend else None), []).append(i)
        targets = np.empty_like(chunk)
        for rows in groups.values():
            targets[rows] = self._run_branch([states[i] for i in rows], [inputs[i] for i in rows], steps)
        targets /= restore
        result = np.empty((len(states), 2, self.chunk_samples), np.float32)
        for i, state in enumerate(states):
            result[i, 0] = targets[i]
            result[i, 1] = state.mixture_out(chunk[i]) - targets[i]
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
        """Offline: the streaming path over the whole file, resampled as a stream is (the LL resampler); the residual
        is the input minus the target at the input's rate. A `StreamSession` of the same input gives the same
        target and residual, delayed by its latency (tests/test_stream_offline.py)."""
        sample_rate = check_sample_rate(sample_rate)
        mono = to_mono(audio).numpy()
        if isinstance(example, np.ndarray) or torch.is_tensor(example):
            example = (example, sample_rate)
        wav = polyphase_resample(mono, sample_rate, self.sample_rate)
        # The resampler back reaches `half` model samples past each output: keep the separation of the silence
        # after the end that far, as a stream has it, so the two agree to the last sample.
        tail = polyphase_kernel(self.sample_rate, sample_rate)[1] + 1 if sample_rate != self.sample_rate else 0
        target = self.stream_file(np.concatenate([wav, np.zeros(tail, np.float32)]), prompt, spans, example, steps)
        target = polyphase_resample(target, self.sample_rate, sample_rate)
        out = np.zeros(len(mono), np.float32)
        out[: min(len(mono), len(target))] = target[: len(mono)]
        return Separation(out, mono - out, sample_rate)

    def prepare(self, streams: int) -> None:
        """Expect up to `streams` streams opening at once: keep that many speech-expert states made ahead (each
        takes ~0.5 s to make, which a stream opening would otherwise wait for)."""
        if self._pool is not None:
            self._pool.reserve(streams)

    def describe_state(self, state: CompositeState) -> dict:
        """How a stream's prompt was understood: the branch serving it, the class wording nearest to its text
        (None when none is near enough: the general separator then hears the text as it is), and the share of its
        input the serving part keeps at least at every frequency (the general separator's class floor, the
        expert's floor; None for the voice picker and a speech refiner), with the general separator's floor per
        band where it has one (`band_floors`, bands split at FLOOR_BAND_EDGES_HZ), and on the general branch the
        networks serving it with their weights (`general_networks`). A floor of 1: that class is not separated, its
        input passes."""
        return self._understood(state.branch, state.route, state.blend)

    def understand(self, prompt: str | None, spans: Sequence[Span] = (), example=None) -> dict:
        """`describe_state` of a stream this prompt would open, without opening one."""
        branch, route = self.plan(prompt, spans, example)
        return self._understood(branch, route, self.general_for(route, spans, example) if branch == GENERAL else None)

    def _understood(self, branch: str, route: Route, blend: Blend | None) -> dict:
        floor = self.expert_floor if branch == EXPERT and self.refiner is None else blend.floor if blend else None
        return {"branch": branch, "class": route.target_class, "similarity": round(float(route.similarity), 3),
                "mask_floor": None if floor is None else lowest_share(floor),
                "band_floors": list(floor) if isinstance(floor, tuple) else None,
                "general_networks": {name: list(weight) if isinstance(weight, tuple) else weight
                                     for name, weight in blend.weights} if blend else None}

    @staticmethod
    def close(state: CompositeState) -> None:
        """Free the native state of a stream that ended (it is also freed when garbage collected)."""
        if state.expert is not None:
            state.expert.stream.close()


def load_default(speech_expert: bool = True, mask_floor: float | None = None,
                 general_weights: Path | None = None) -> CompositeSeparator:
    """The packaged default model: the general separator's, the voice picker's and the speech refiner's weights
    from model/weights/ (each network when it is shipped), with the speech expert unless `speech_expert` is False.
    `general_weights` puts other general weights (a training snapshot) in place of the shipped ones.
    The general separator keeps each class's calibrated mask floor and the expert its own (`load_floors`, from
    `floors_file(general_weights)`; weights never calibrated keep GENERAL_MASK_FLOOR and no expert floor); a
    `mask_floor` given instead is the general separator's for every prompt, and the expert keeps none.
    With the shipped general weights and their floors, a shipped ensemble (ENSEMBLE_FILE) adds its general networks
    and serves the classes it lists by their blends."""
    from samstream.model.embedded import WEIGHTS_DIR, shipped_weights

    others, blends = {}, {}
    if general_weights is None and mask_floor is None and (WEIGHTS_DIR / ENSEMBLE_FILE).is_file():
        paths, blends = load_ensemble(WEIGHTS_DIR / ENSEMBLE_FILE)
        others = {name: load_general(path, GENERAL_MASK_FLOOR) for name, path in paths.items()}
    general_weights = general_weights or shipped_weights()
    general = load_general(general_weights, GENERAL_MASK_FLOOR if mask_floor is None else mask_floor)
    parts = {}
    for name in ("voice", "speech"):
        path = WEIGHTS_DIR / f"{name}.safetensors"
        if speech_expert and path.is_file():
            parts[name] = MaskNetSeparator(load_masknet(path), general.text_vectors)
    floors, expert_floor = load_floors(floors_file(general_weights)) if mask_floor is None else ({}, 0.0)
    return CompositeSeparator(general, parts.get("voice"), speech_expert, parts.get("speech"), floors, expert_floor,
                              others, blends)


def load_general(path: Path, mask_floor: Floor) -> EmbeddedSeparator | MaskNetSeparator:
    """General separator weights of either architecture (their .json's "arch"): the DiT (model/embedded.py) or a mask
    network trained on the general task (model/masknet.py, the candidates of docs/model_card.md); both take mask
    floors and the same chunk-step streaming calls."""
    from samstream.model.embedded import load_embedded
    from samstream.model.errors import ModelLoadError

    config = Path(path).with_suffix(".json")
    arch = json.loads(config.read_text()).get("arch", "embedded") if config.is_file() else "embedded"
    if arch == "embedded":
        return load_embedded(path, mask_floor=mask_floor)
    if arch != "masknet":
        raise ModelLoadError(f"{path} holds {arch} weights: the default model's general separator is an embedded DiT "
                             "or a mask network")
    network = MaskNetSeparator(load_masknet(path), mask_floor=mask_floor)
    if network.config.speaker_dim or network.config.expert_input:
        raise ModelLoadError(f"{path} is a voice picker or a speech refiner, not a general separator")
    return network


def floors_file(general_weights: Path) -> Path:
    """Where `samstream calibrate` writes the floors of these general weights, and the default model reads them:
    model/weights/floors.json for the shipped weights, NAME.floors.json beside any other weights file."""
    from samstream.model.embedded import shipped_weights

    if Path(general_weights).resolve() == shipped_weights().resolve():
        return shipped_weights().parent / FLOORS_FILE
    return Path(general_weights).with_suffix(".floors.json")


def load_floors(path: Path) -> tuple[dict[str, Floor], float]:
    """The general separator's per-class mask floors and the speech expert's floor in `path` (`floors_file`),
    checked against the weights they were calibrated for (named in the file, beside it): floors of other weights
    would keep the wrong share. No file: no floors ({}, 0.0)."""
    from samstream.model.errors import ModelLoadError

    if not path.is_file():
        return {}, 0.0
    table = json.loads(path.read_text())
    weights = path.parent / table["general_weights"]
    if not weights.is_file() or file_sha256(weights) != table["general_weights_sha256"]:
        raise ModelLoadError(f"{path} was calibrated for other general weights than {weights}: run `samstream "
                             f"calibrate` on an evaluation set to calibrate them again, or delete {path}")
    if tuple(table.get("floor_band_edges_hz", FLOOR_BAND_EDGES_HZ)) != FLOOR_BAND_EDGES_HZ:
        raise ModelLoadError(f"{path} has per-band floors for other bands ({table['floor_band_edges_hz']} Hz) than this "
                             f"code's {list(FLOOR_BAND_EDGES_HZ)}: run `samstream calibrate` again")
    floors = {name: tuple(floor) if isinstance(floor, list) else float(floor) for name, floor in table["floors"].items()}
    return floors, float(table["expert_floor"])


def ensemble_file(general_weights: Path) -> Path:
    """Where `samstream calibrate --ensemble` writes the blends of these general weights with others: ENSEMBLE_FILE
    beside the shipped weights (the default model reads it), NAME.ensemble.json beside any other weights file."""
    from samstream.model.embedded import shipped_weights

    if Path(general_weights).resolve() == shipped_weights().resolve():
        return shipped_weights().parent / ENSEMBLE_FILE
    return Path(general_weights).with_suffix(".ensemble.json")


def load_ensemble(path: Path) -> tuple[dict[str, Path], dict[str, Blend]]:
    """The other general networks an ensemble file names (name -> weights file beside it) and its blends (class ->
    `Blend`), checked against the weights they were calibrated with, the first network's included."""
    from samstream.model.errors import ModelLoadError

    table = json.loads(path.read_text())
    if tuple(table.get("floor_band_edges_hz", FLOOR_BAND_EDGES_HZ)) != FLOOR_BAND_EDGES_HZ:
        raise ModelLoadError(f"{path} has per-band floors for other bands than this code's: run `samstream calibrate "
                             "--ensemble` again")
    named = {FIRST_NETWORK: table["general_weights"], **table["networks"]}
    paths = {}
    for name, entry in named.items():
        weights = path.parent / entry["weights"]
        if not weights.is_file() or file_sha256(weights) != entry["sha256"]:
            raise ModelLoadError(f"{path} was calibrated with other general weights than {weights}: run `samstream "
                                 f"calibrate --ensemble` to calibrate the blends again, or delete {path}")
        paths[name] = weights
    del paths[FIRST_NETWORK]  # checked: the blends were calibrated with these first weights
    blends = {cls: Blend(tuple((name, tuple(weight) if isinstance(weight, list) else float(weight))
                               for name, weight in row["networks"].items()),
                         tuple(row["floor"]) if isinstance(row["floor"], list) else float(row["floor"]))
              for cls, row in table["blends"].items()}
    return paths, blends


def check_blend(blend: Blend, networks: dict, cls: str) -> Blend:
    """A blend whose networks exist, whose weights are shares (one, or one per band) summing to 1 in every band and
    whose floor is a floor."""
    unknown = [name for name in blend.networks if name not in networks]
    if unknown or not blend.weights:
        raise ValueError(f"the blend of {cls!r} names no general network or unknown ones ({', '.join(unknown)}): the "
                         f"networks are {', '.join(networks)}")
    weights = tuple((name, check_floor(weight, f"the weight of {name!r} in the blend of {cls!r}"))
                    for name, weight in blend.weights)
    per_band = np.sum([np.broadcast_to(weight, len(FLOOR_BAND_EDGES_HZ) + 1) for _, weight in weights], 0)
    if np.abs(per_band - 1.0).max() > 1e-6:
        raise ValueError(f"the weights of the blend of {cls!r} must sum to 1 in every band, got "
                         f"{', '.join(f'{total:g}' for total in per_band)}")
    return Blend(weights, check_floor(blend.floor, f"the mask floor of {cls!r}"))


def file_sha256(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()
