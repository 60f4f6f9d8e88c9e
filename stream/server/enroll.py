"""Streaming enrollment, "the last N seconds of my input are the voice to keep", shared by the WebSocket
protocol (`{"type": "enroll", "seconds": N}`, ws.py) and WebRTC calls (the data channel's `enroll`).

Each stream keeps the last MAX_ENROLL_S of its input at the client's rate (`InputHistory`, written on the
event loop as frames arrive: a copy into a ring). An `enroll` takes the last N seconds of it, checks that they
hold enough sound to be a voice, and resamples them to the model rate: the audio example of the new prompt.
A refusal is an `EnrollmentError` whose `code` is the protocol's error code (the servers answer it as such).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from samstream.model.errors import UserFacingError
from samstream.stream.ringbuffer import RingBuffer

MAX_ENROLL_S = 10.0  # input history kept per stream
MIN_ENROLL_S = 0.5
SOUND_DBFS = -60.0  # a 30 ms window quieter than this holds no voice
WINDOW_S = 0.03


class EnrollmentError(UserFacingError):
    """An `enroll` the server refuses: `code` is `bad_message` (bad seconds) or `not_enough_audio`."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class InputHistory:
    """The last `seconds` of a stream's input (mono float32 at `rate`, default a WebRTC call's 48 kHz)."""

    def __init__(self, seconds: float = MAX_ENROLL_S, rate: int = 48000) -> None:
        self.rate = rate
        self.total = 0  # samples ever written: the stream clock of the input
        self._ring = RingBuffer(math.ceil(seconds * rate))

    def write(self, pcm: np.ndarray) -> None:
        self.total += len(pcm)
        self._ring.write_latest(pcm)

    def last(self, seconds: float) -> np.ndarray:
        n = min(self._ring.available, round(seconds * self.rate))
        out = np.empty(n, dtype=np.float32)
        self._ring.peek_into(out, offset=self._ring.available - n)
        return out


def enroll_seconds(value: Any) -> float:
    """The `seconds` of an `enroll` message, or `bad_message`."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not MIN_ENROLL_S <= value <= MAX_ENROLL_S:
        raise EnrollmentError("bad_message", f"'seconds' must be a number from {MIN_ENROLL_S} to {MAX_ENROLL_S}, "
                                             f"got {repr(value)[:60]}")
    return float(value)


def sounding_seconds(clip: np.ndarray, rate: int) -> float:
    """Seconds of the clip in 30 ms windows louder than SOUND_DBFS."""
    window = max(1, round(WINDOW_S * rate))
    count = len(clip) // window
    if count == 0:
        return 0.0
    power = np.mean(np.square(clip[: count * window].reshape(count, window), dtype=np.float64), axis=1)
    return float(np.sum(power > 10 ** (SOUND_DBFS / 10))) * window / rate


def enrollment_clip(history: InputHistory, seconds: float) -> np.ndarray:
    """The last `seconds` of the input as an enrollment clip (client rate), or `not_enough_audio` when the
    stream has not sent MIN_ENROLL_S yet or they are (nearly) silent."""
    clip = history.last(seconds)
    heard = len(clip) / history.rate
    if heard < MIN_ENROLL_S:
        raise EnrollmentError("not_enough_audio", f"not enough audio to enroll yet: {heard:.2f} s heard, need "
                                                  f"{MIN_ENROLL_S} s; send 'enroll' while the voice to keep speaks")
    sounding = sounding_seconds(clip, history.rate)
    if sounding < MIN_ENROLL_S:
        raise EnrollmentError("not_enough_audio", f"the last {heard:.1f} s are nearly silent ({sounding:.2f} s above "
                                                  f"{SOUND_DBFS:.0f} dBFS, need {MIN_ENROLL_S} s): send 'enroll' while "
                                                  "the voice to keep speaks")
    return clip


def to_model_rate(clip: np.ndarray, rate: int, model_rate: int) -> np.ndarray:
    """A clip at the model rate (soxr, as examples sent in a prompt are; a few ms for 10 s: run it off the loop)."""
    import soxr

    return clip if rate == model_rate else soxr.resample(clip, rate, model_rate).astype(np.float32)
