"""Which voice "man speaking" / "woman speaking" means: a pitch-based mask, steered by the speech expert's estimate.

The speech expert (model/speech_expert.py) keeps every voice, so with a man and a woman talking at once "woman
speaking" got both. Their voices differ in pitch (fundamental frequency: roughly 85-155 Hz for men, 165-255 Hz
for women), and a voiced sound is a comb of harmonics of its pitch, so a voice can be followed frame by frame
without any training data (signal processing, not a network: it holds on real voices as on synthetic ones).

Per frame of the embedded codec's STFT (model/stft.py: 16 kHz, n_fft 512, hop 256, causal, so the mask adds that
codec's delay of n_fft − hop samples and no look-ahead):
- harmonic salience of each pitch candidate (55-440 Hz, 1/48 octave) on the frame's compressed magnitude
  spectrum, zero-padded to `PITCH_FFT` bins for finer harmonic positions: harmonics up to `SALIENCE_MAX_HZ`
  weigh in (decaying with their number), the midpoints between them weigh against, so that a voice's
  sub-octave, which also collects its harmonics, loses to it;
- the frame's voices: the most salient candidate, then the most salient once that one's harmonics are cancelled,
  each kept when salient enough (`voicing`); a voice is the target's when its pitch is within the target
  gender's bound (`GenderMaskConfig`) or glides on from the target's pitch a frame before;
- the mask: bins near a target harmonic pass, bins near the other voice's harmonics are removed (both: half),
  and every other bin (between harmonics, above `COMB_MAX_HZ`, unvoiced frames) keeps the share of recent
  voiced frames that held the target (exponential, `presence_s`): consonants and breaths follow the voice that
  was talking;
- and nothing at all is removed until the other gender's voice has been heard clearly in the last second or so:
  a voice alone passes (its pitch errors are in weakly voiced frames).

The pitches are tracked on the expert's estimate (the voices without the noise), and the mask applies to the
mixture times the expert's own gain per bin (|estimate| / |mixture|, at most 1), except that a woman's harmonics
keep 30 % of the mixture: the expert damages voices that overlap (on held-out items where a man and a woman talk at
once, even an oracle mask on its estimate stays ~9 dB below one on the mixture), and that share measured better on
calibration sets and on real voices (docs/model_card.md).

With the voice picker (model/masknet.py, trained on pairs of many voices) prompted by the gender's wording beside
it, the output's magnitude is a weighted geometric mean of this mask's and the picker's (its estimate times the
expert's gain to the power 0.5, which takes out what noise it leaves), with the mixture's phase: the picker weighs
0.5 once the other gender has been heard clearly, 0.15 before. The picker tells a man from a woman better (held-out
voices it never heard), the mask holds a voice alone in noise better; the blend keeps most of both.

Measured on held-out speech items, with its parameters chosen on calibration sets: docs/model_card.md,
"Man or woman: the pitch mask".
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field

import numpy as np
import torch

from samstream.model.stft import StftStream

SAMPLE_RATE = 16000
N_FFT, HOP = 512, 256  # the embedded codec's STFT: its delay fits inside the general separator's
PITCH_FFT = 2048  # zero-padded spectra for the salience (harmonic positions at 7.8 Hz instead of 31 Hz)
PITCH_MIN_HZ, PITCH_OCTAVES, PITCH_STEPS_PER_OCTAVE = 55.0, 3.0, 48
SALIENCE_MAX_HZ = 3000.0  # harmonics counted in the salience
COMB_MAX_HZ = 4000.0  # harmonics assigned to a voice (above: the recent share, as between harmonics)
HARMONIC_DECAY = 0.9  # weight of harmonic h: DECAY ** (h - 1)
COMB_WIDTH = 0.09  # half-width of a harmonic's peak in the mask, as a share of the pitch (Gaussian sigma)
SAME_VOICE_OCTAVES = 0.1  # a second voice within this of the first is the first again


@dataclass(frozen=True)
class GenderMaskConfig:
    # A voice is the other gender's when its pitch is beyond the target's bound: above `man_up_to_hz` for "man
    # speaking", below `woman_from_hz` for "woman speaking" (men's and women's pitch ranges overlap: the zone
    # between the bounds counts as either gender's).
    man_up_to_hz: float = 180.0
    woman_from_hz: float = 165.0
    # A voice within this of the target's pitch one frame before is the target's, wherever it is: pitch glides, so
    # a woman's phrase ending low or a man's voice rising stays the target.
    glide_octaves: float = 0.1
    voicing: float = 0.06  # salience a frame's voice needs (harmonic evidence per unit of spectrum)
    presence_s: float = 0.25  # memory of which voice was talking, for bins no harmonic claims
    # Nothing is removed until the other gender's voice has been heard clearly (salience above `clear_salience`)
    # in `clear_share` of the frames of about the last `clear_s` seconds: a voice alone, whose pitch errors are
    # weakly voiced frames, then passes as the expert left it.
    clear_salience: float = 0.2
    clear_share: float = 0.05
    clear_s: float = 1.0
    # The share of the mixture kept on a woman's harmonics where the expert took it out. Not for a man: his
    # harmonics, 100 Hz or so apart, cover most of the spectrum below COMB_MAX_HZ, so a share kept on them is
    # nearly a share of the whole mixture, noise included (measured worse).
    woman_keep: float = 0.3
    # With the voice picker's estimate for the gender's wording beside it (`stream_step`'s `picked`), the output's
    # magnitude is the weighted geometric mean of this mask's and the picker's (the latter times the expert's gain
    # to `picker_gain_power`, which takes out what noise the picker leaves), with the picker weighing
    # `picker_weight_other` once the other gender has been heard clearly and `picker_weight_alone` before: the
    # picker tells a man from a woman better, the mask steered by the expert holds a voice alone in noise better.
    picker_weight_alone: float = 0.15
    picker_weight_other: float = 0.5
    picker_gain_power: float = 0.5


@functools.lru_cache(maxsize=1)
def pitch_candidates() -> np.ndarray:
    return PITCH_MIN_HZ * 2 ** (np.arange(0, PITCH_OCTAVES, 1 / PITCH_STEPS_PER_OCTAVE))


@functools.lru_cache(maxsize=1)
def salience_weights() -> np.ndarray:
    """[candidates, PITCH_FFT bins]: + at each harmonic, − at each midpoint between harmonics (linear
    interpolation between bins)."""
    bins = PITCH_FFT // 2 + 1
    weights = np.zeros((len(pitch_candidates()), bins))
    for row, pitch in enumerate(pitch_candidates()):
        number = np.arange(1, int(SALIENCE_MAX_HZ / pitch) + 1)
        for position, sign in ((number * pitch, 1.0), ((number - 0.5) * pitch, -1.0)):
            exact = position / SAMPLE_RATE * PITCH_FFT
            low = np.floor(exact).astype(int)
            frac = exact - low
            gain = sign * HARMONIC_DECAY ** (number - 1)
            np.add.at(weights[row], low, gain * (1 - frac))
            np.add.at(weights[row], np.minimum(low + 1, bins - 1), gain * frac)
    return weights


@functools.lru_cache(maxsize=1)
def harmonic_combs() -> np.ndarray:
    """[candidates, PITCH_FFT bins]: 1 on each harmonic of the candidate up to COMB_MAX_HZ, Gaussian around it."""
    frequencies = np.arange(PITCH_FFT // 2 + 1) * SAMPLE_RATE / PITCH_FFT
    pitches = pitch_candidates()[:, None]
    nearest = np.maximum(np.round(frequencies / pitches), 1) * pitches
    combs = np.exp(-0.5 * ((frequencies - nearest) / (COMB_WIDTH * pitches)) ** 2)
    combs[:, frequencies > COMB_MAX_HZ] = 0.0
    return combs


@functools.lru_cache(maxsize=1)
def mask_combs() -> np.ndarray:
    """`harmonic_combs` at the mask's own bins (every PITCH_FFT // N_FFT-th), and a last row of zeros: NO_VOICE."""
    combs = harmonic_combs()[:, :: PITCH_FFT // N_FFT]
    return np.concatenate([combs, np.zeros((1, combs.shape[1]))])


NO_VOICE = -1  # the zero row of `mask_combs`


def frame_salience(frames: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Complex STFT frames [T, N_FFT // 2 + 1] -> their compressed zero-padded magnitude spectra [T, PITCH_FFT bins],
    its sum up to SALIENCE_MAX_HZ [T, 1] and the salience of every pitch candidate [T, candidates]."""
    windowed = np.fft.irfft(frames, n=N_FFT, axis=-1)  # the analysis-windowed frames
    magnitude = np.sqrt(np.abs(np.fft.rfft(windowed, n=PITCH_FFT, axis=-1)))  # compressed: weak harmonics count
    norm = magnitude[:, : int(SALIENCE_MAX_HZ / SAMPLE_RATE * PITCH_FFT)].sum(-1, keepdims=True) + 1e-9
    return magnitude, norm, magnitude @ salience_weights().T / norm * 10


def median_pitch(audio: np.ndarray) -> float:
    """The median pitch (Hz) of one voice's clean recording at 16 kHz: the most salient candidate of each clearly
    voiced frame (salience above GenderMaskConfig.clear_salience); 0.0 when fewer than 10 frames are."""
    stft = StftStream(N_FFT, HOP, 0)
    usable = len(audio) // HOP * HOP
    stft.analyse(torch.from_numpy(np.ascontiguousarray(audio[None, :usable], np.float32)), [stft])
    _, _, salience = frame_salience(stft.take(stft.ready()).numpy())
    voiced = salience.max(-1) > GenderMaskConfig.clear_salience
    return float(np.median(pitch_candidates()[salience.argmax(-1)[voiced]])) if voiced.sum() >= 10 else 0.0


@dataclass
class GenderMaskState:
    """One stream: the STFTs of the expert's estimate and of the mixture, and how recently each voice was heard."""

    want_high: bool  # the target is the higher voice (a woman)
    speech_stft: StftStream = field(default_factory=lambda: StftStream(N_FFT, HOP, 0))
    mixture_stft: StftStream = field(default_factory=lambda: StftStream(N_FFT, HOP, 0))
    picked_stft: StftStream = field(default_factory=lambda: StftStream(N_FFT, HOP, 0))  # the picker's estimate
    target_presence: float = 0.0
    other_presence: float = 0.0
    target_pitch: float = 0.0  # the target voice's pitch in the last frame (0: not heard)
    clear_other: float = 0.0  # the recent share of frames with the other gender's voice clearly heard


class GenderMask:
    """The mask's streaming API: `init_stream(gender)`, `stream_step(states, speech, mixture)`; output sample n is
    input sample n − `delay_samples`."""

    delay_samples = N_FFT - HOP

    def __init__(self, config: GenderMaskConfig = GenderMaskConfig()) -> None:
        self.config = config
        self._memory = np.exp(-HOP / SAMPLE_RATE / config.presence_s)
        self._clear_memory = np.exp(-HOP / SAMPLE_RATE / config.clear_s)

    @staticmethod
    def init_stream(gender: str) -> GenderMaskState:
        """A stream keeping the voices of `gender` ("male" or "female", as model/prompt_routing.py names them)."""
        if gender not in ("male", "female"):
            raise ValueError(f"gender must be 'male' or 'female', got {gender!r}")
        return GenderMaskState(want_high=gender == "female")

    def stream_step(self, states: list[GenderMaskState], speech: np.ndarray, mixture: np.ndarray,
                    picked: np.ndarray | None = None) -> np.ndarray:
        """The expert's estimate and the mixture it was made from, in step, [N, S] each (S whole hops) -> the
        asked gender's voices [N, S]. `picked`: the voice picker's estimate for the gender's wording, in step with
        them (see GenderMaskConfig.picker_weight_other)."""
        signals = [(speech, [s.speech_stft for s in states]), (mixture, [s.mixture_stft for s in states])]
        if picked is not None:
            signals.append((picked, [s.picked_stft for s in states]))
        for chunks, streams in signals:
            streams[0].analyse(torch.from_numpy(np.ascontiguousarray(chunks, np.float32)), streams)
        c = self.config
        out = np.empty_like(mixture, dtype=np.float32)
        for row, state in enumerate(states):
            estimate = state.speech_stft.take(state.speech_stft.ready())
            frames = state.mixture_stft.take(state.mixture_stft.ready())
            mask, on_target, acting = (torch.from_numpy(m) for m in self.masks(state, estimate.numpy()))
            magnitude = frames.abs() + 1e-8
            expert_gain = (estimate.abs() / magnitude).clamp(max=1.0).double()
            keep = c.woman_keep * on_target if state.want_high else torch.zeros_like(on_target)
            gain = mask * (keep + (1 - keep) * expert_gain)
            if picked is not None:  # the blend of magnitudes, as gains on the mixture (its phase kept)
                picked_frames = state.picked_stft.take(state.picked_stft.ready())
                picker_gain = picked_frames.abs() / magnitude * expert_gain ** c.picker_gain_power
                weight = torch.where(acting, c.picker_weight_other, c.picker_weight_alone).double()[:, None]
                gain = gain ** (1 - weight) * picker_gain ** weight
            out[row] = state.mixture_stft.synthesise(frames * gain.to(frames.dtype)).numpy()
        return out

    def _targets(self, state: GenderMaskState, pitch: float) -> bool:
        if state.target_pitch and abs(np.log2(pitch / state.target_pitch)) < self.config.glide_octaves:
            return True
        if state.want_high:
            return pitch >= self.config.woman_from_hz
        return pitch <= self.config.man_up_to_hz

    def masks(self, state: GenderMaskState, frames: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Complex frames of the expert's estimate [T, N_FFT // 2 + 1] of one stream -> its masks, where the
        target's harmonics are (0..1, the other voice's taken out), both the same shape, and whether the mask acts
        in each frame [T] (the other gender heard clearly of late; the state advances)."""
        magnitude, norm, salience = frame_salience(frames)
        weights, combs, pitches = salience_weights(), harmonic_combs(), pitch_candidates()
        first = salience.argmax(-1)
        rest = magnitude * (1 - combs[first])  # the first voice's harmonics cancelled
        second_salience = rest @ weights.T / norm * 10
        near_first = np.abs(np.log2(pitches[None] / pitches[first][:, None])) < SAME_VOICE_OCTAVES
        second_salience[near_first] = -np.inf
        second = second_salience.argmax(-1)
        # Per frame only the scalar decisions (they carry state from frame to frame): which candidates are the
        # target's and the other's (NO_VOICE: none), the recent share of target voicing, whether the mask acts.
        count = len(frames)
        target_voices = np.full((count, 2), NO_VOICE)
        other_voices = np.full((count, 2), NO_VOICE)
        recent = np.ones(count)
        acting = np.zeros(count, bool)
        for t in range(count):
            heard_target = heard_other = clear_other = False
            target_pitch = 0.0
            for slot, (candidate, value) in enumerate(((first[t], salience[t, first[t]]),
                                                       (second[t], second_salience[t, second[t]]))):
                if value <= self.config.voicing:
                    continue
                if self._targets(state, pitches[candidate]):
                    target_voices[t, slot], heard_target = candidate, True
                    target_pitch = target_pitch or pitches[candidate]
                else:
                    other_voices[t, slot], heard_other = candidate, True
                    clear_other = clear_other or value > self.config.clear_salience
            state.target_pitch = target_pitch
            state.target_presence = self._memory * state.target_presence + (1 - self._memory) * heard_target
            state.other_presence = self._memory * state.other_presence + (1 - self._memory) * heard_other
            state.clear_other = self._clear_memory * state.clear_other + (1 - self._clear_memory) * clear_other
            acting[t] = state.clear_other >= self.config.clear_share
            recent[t] = (state.target_presence + 1e-3) / (state.target_presence + state.other_presence + 1e-3)
        combs_at_mask_bins = mask_combs()
        target_comb = combs_at_mask_bins[target_voices].max(1)
        other_comb = combs_at_mask_bins[other_voices].max(1)
        on_target = target_comb * (1 - other_comb)
        masks = on_target + 0.5 * target_comb * other_comb + recent[:, None] * (1 - target_comb) * (1 - other_comb)
        masks[~acting] = 1.0
        return masks, on_target, acting
