"""Is the speech expert's estimate speech? A voice-activity detector on it: Silero VAD, whose weights ship in
PyPI's silero-vad wheel (MIT code and weights).

Why the default model needs it: for a non-vocal class it takes the expert's speech estimate out of the general
separator's input, as speech is an interferer there. But DeepFilterNet3 keeps what sounds voice-like to it, and
on some items with no speech at all its "speech" is the target itself (a viola held as a voice: the target went
from the mixture's level to −22 dB below it once subtracted). A voice-activity detector on the estimate tells
speech from the rest: over 560 non-speech items of held-out mixtures its mean probability has a median of 0.55
where someone talks and 0.026 where no one does (AUC 0.97), and every item where subtracting the estimate cost
more than 1 dB scores at most 0.19. What it does not hear is just as often a voice-like interferer (a bird,
singing, a cough) that is better taken out, so `SpeechGate` takes all of the estimate out where speech is heard
and half of it elsewhere (docs/model_card.md, "Only speech is taken out").

The network, reproduced here with the 16 kHz weights of the wheel's `silero_vad/data/silero_vad.jit` (found with
`importlib.util.find_spec`, which locates the package without executing it: importing `silero_vad` sets torch's
thread count for the whole process), checked by SHA-256; tests/test_speech_presence.py compares it with the
wheel's own TorchScript model. Per 512-sample chunk at 16 kHz (32 ms), with the 64 samples before it as context:
a 256-point STFT (a fixed convolution, hop 128, the chunk's end reflected by 64 samples, so no look-ahead) ->
magnitudes of 129 bins -> four convolutions (the 4 frames down to 1) -> an LSTM cell (128) carried across
chunks -> one probability. Streams are batched, each with its own `SpeechPresenceState`.
"""

from __future__ import annotations

import functools
import importlib.util
import io
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from samstream.model.errors import ModelLoadError
from samstream.model.pinned_file import read_pinned

PINNED_VERSION = "6.2.3"  # silero-vad; pyproject.toml pins the same
WEIGHTS_SHA256 = "e1122837f4154c511485fe0b9c64455f7b929c96fbb8d79fbdb336383ebd3720"  # silero_vad/data/silero_vad.jit
SAMPLE_RATE = 16000
CHUNK = 512  # samples per probability (32 ms)
CONTEXT = 64  # samples of the previous chunk the network sees
N_FFT, HOP, REFLECT = 256, 128, 64
HIDDEN = 128


class SileroVad(nn.Module):
    """The detector's network: [N, CONTEXT + CHUNK] audio and the LSTM state -> speech probability [N]."""

    def __init__(self) -> None:
        super().__init__()
        bins = N_FFT // 2 + 1
        self.stft = nn.Conv1d(1, 2 * bins, N_FFT, stride=HOP, bias=False)  # real and imaginary basis
        self.convs = nn.ModuleList([nn.Conv1d(bins, 128, 3, padding=1), nn.Conv1d(128, 64, 3, stride=2, padding=1),
                                    nn.Conv1d(64, 64, 3, stride=2, padding=1), nn.Conv1d(64, 128, 3, padding=1)])
        self.lstm = nn.LSTMCell(128, HIDDEN)
        self.out = nn.Conv1d(HIDDEN, 1, 1)

    def forward(self, audio: torch.Tensor, h: torch.Tensor, c: torch.Tensor):
        x = F.pad(audio[:, None], (0, REFLECT), mode="reflect")
        real, imag = self.stft(x).chunk(2, dim=1)
        x = torch.sqrt(real.square() + imag.square())
        for conv in self.convs:
            x = torch.relu(conv(x))
        h, c = self.lstm(x[:, :, -1], (h, c))
        probability = torch.sigmoid(self.out(torch.relu(h)[:, :, None]))[:, 0, 0]
        return probability, h, c


def weights_path() -> Path:
    spec = importlib.util.find_spec("silero_vad")
    if spec is None or not spec.submodule_search_locations:
        raise ModelLoadError("the speech-presence detector needs the weights inside the silero-vad wheel: run "
                             f"`bash install.sh` (or pip install silero-vad=={PINNED_VERSION}), or pass "
                             "--no-speech-expert")
    return Path(next(iter(spec.submodule_search_locations))) / "data" / "silero_vad.jit"


# The 16 kHz network's tensor names in the wheel's TorchScript archive -> this module's
_NAMES = {"_model.stft.forward_basis_buffer": "stft.weight", "_model.decoder.rnn.": "lstm.",
          "_model.decoder.decoder.2.": "out.", **{f"_model.encoder.{i}.reparam_conv.": f"convs.{i}." for i in range(4)}}


def read_weights(path: Path) -> dict[str, torch.Tensor]:
    data = read_pinned(path, WEIGHTS_SHA256, "the Silero VAD model", f"pip install silero-vad=={PINNED_VERSION}")
    # Only the archive's tensors are used: its TorchScript code (the package's streaming wrapper, which keeps one
    # hidden state for the whole batch) is not run.
    with warnings.catch_warnings():  # torch.jit.load's deprecation notice: it still reads the archive's tensors
        warnings.simplefilter("ignore", FutureWarning)
        archive = torch.jit.load(io.BytesIO(data), map_location="cpu")
    renamed = {}
    for key, tensor in archive.state_dict().items():
        for theirs, ours in _NAMES.items():
            if key.startswith(theirs):
                renamed[ours + key[len(theirs):]] = tensor.detach().clone()
    return renamed


@functools.lru_cache(maxsize=1)
def load_vad() -> SileroVad:
    """The pretrained network, frozen, in eval mode; loaded once and shared (do not modify it)."""
    with torch.inference_mode(False):
        vad = SileroVad()
        vad.load_state_dict(read_weights(weights_path()))
    return vad.eval().requires_grad_(False)


@dataclass
class SpeechPresenceState:
    """One stream's detector state: the LSTM's and the last CONTEXT samples."""

    h: torch.Tensor = field(default_factory=lambda: torch.zeros(HIDDEN))
    c: torch.Tensor = field(default_factory=lambda: torch.zeros(HIDDEN))
    context: np.ndarray = field(default_factory=lambda: np.zeros(CONTEXT, np.float32))


class SpeechPresence:
    """Speech probability per 32 ms chunk of 16 kHz audio, for a batch of streams (one state each)."""

    def __init__(self) -> None:
        self.vad = load_vad()

    @staticmethod
    def init_stream() -> SpeechPresenceState:
        return SpeechPresenceState()

    @torch.inference_mode()
    def stream_step(self, states: list[SpeechPresenceState], chunk: np.ndarray) -> np.ndarray:
        """[N, k * CHUNK] -> each stream's probability for each of its k chunks [N, k]."""
        chunk = np.asarray(chunk, np.float32)
        if chunk.ndim != 2 or chunk.shape[0] != len(states) or chunk.shape[1] % CHUNK:
            raise ValueError(f"the speech-presence detector steps [streams, k * {CHUNK}] samples, "
                             f"got {chunk.shape}")
        h = torch.stack([s.h for s in states])
        c = torch.stack([s.c for s in states])
        context = np.stack([s.context for s in states])
        probabilities = np.empty((len(states), chunk.shape[1] // CHUNK), np.float32)
        for k in range(probabilities.shape[1]):
            piece = chunk[:, k * CHUNK:(k + 1) * CHUNK]
            p, h, c = self.vad(torch.from_numpy(np.concatenate([context, piece], axis=1)), h, c)
            probabilities[:, k] = p.numpy()
            context = piece[:, -CONTEXT:]
        for i, state in enumerate(states):
            state.h, state.c, state.context = h[i].clone(), c[i].clone(), context[i].copy()
        return probabilities


@dataclass(frozen=True)
class SpeechGateConfig:
    # A chunk is speech when the detector's probability on the expert's estimate reaches `threshold`; the gate
    # stays open `hold_s` after the last such chunk (a voice's pauses and its quiet ends).
    threshold: float = 0.5
    hold_s: float = 0.25
    # The share of the estimate the gate passes where no speech is heard: there the expert's "speech" is sometimes
    # a voice-like interferer (a bird, singing, a cough: taking it out helps) and sometimes the target itself (a
    # viola: taking it out destroys it). All three chosen on calibration sets (docs/model_card.md, "Only speech is
    # taken out").
    unheard_share: float = 0.5


@dataclass
class SpeechGateState:
    presence: SpeechPresenceState = field(default_factory=SpeechPresenceState)
    since_speech: int = 1 << 30  # chunks since the last speech chunk
    gate: float = 0.0  # the gate at the end of the last chunk


class SpeechGate:
    """Where the speech expert's estimate is speech: a gate per sample, 1 while the detector hears speech in the
    estimate (held `hold_s`), `unheard_share` elsewhere, ramped across a chunk where it changes so that what it
    multiplies never steps. Causal: a chunk's gate needs only that chunk of the estimate."""

    def __init__(self, presence: SpeechPresence | None = None, config: SpeechGateConfig = SpeechGateConfig()) -> None:
        self.presence = presence or SpeechPresence()
        self.config = config
        self.hold_chunks = round(config.hold_s * SAMPLE_RATE / CHUNK)
        self._ramp = np.arange(1, CHUNK + 1, dtype=np.float32) / CHUNK

    def init_stream(self) -> SpeechGateState:
        return SpeechGateState(gate=self.config.unheard_share)

    def step(self, state: SpeechGateState, estimate: np.ndarray) -> np.ndarray:
        """One stream's estimate [k * CHUNK] -> its gate [k * CHUNK]."""
        probabilities = self.presence.stream_step([state.presence], estimate[None])[0]
        gate = np.empty(len(estimate), np.float32)
        for k, probability in enumerate(probabilities):
            state.since_speech = 0 if probability >= self.config.threshold else state.since_speech + 1
            target = 1.0 if state.since_speech <= self.hold_chunks else self.config.unheard_share
            gate[k * CHUNK:(k + 1) * CHUNK] = state.gate + (target - state.gate) * self._ramp
            state.gate = target
        return gate
