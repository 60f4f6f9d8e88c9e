"""Streaming resampling between a client's sample rate and the model's.

Two families, both time-aligned (output sample k is the input signal at time k/out_rate, with no
delay of the content) and both exact under any chunking (concatenated streaming output equals a
one-shot run of the same resampler):

  "LL" (the default): our own windowed-sinc polyphase FIR with a short kernel, 2.5 ms either side
       of each output at 16 kHz (80 dB stop band, pass band to 7 kHz). Its hold-back is half the
       kernel: ~2.6 ms per direction between 48 and 16 kHz. Low latency is what live users want.
  soxr ("QQ" ... "VHQ"): python-soxr. soxr filters in blocks and holds output back until a block is
       complete; how much depends only on how many input samples it has seen and repeats from block
       to block, so the worst case is measured once per configuration by feeding single samples.
       With HQ it is 37-116 ms per direction depending on the rates (8 kHz is the worst).

The worst-case hold-back is `delay_samples`; the session counts it into its fixed latency so that
its output never runs dry whatever the frame sizes. Equal rates cost nothing (identity, no copy).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numba
import numpy as np
import soxr

from samstream.model.errors import AudioInputError

MIN_RATE = 8000
MAX_RATE = 48000
SOXR_QUALITIES = ("QQ", "LQ", "MQ", "HQ", "VHQ")
QUALITIES = ("LL",) + SOXR_QUALITIES
DEFAULT_QUALITY = "LL"


@dataclass(frozen=True)
class ResamplerTiming:
    # After n input samples in any chunking, at least n * out_rate / in_rate - delay outputs were returned.
    delay: int
    # Input samples past time t that still shape the output at t (kernel support, down to -120 dB).
    lookahead: int


def check_rate(rate: float, what: str = "sample rate") -> int:
    """The rate as an int, or a clear error when the engine cannot stream at it."""
    if not float(rate).is_integer() or not MIN_RATE <= rate <= MAX_RATE:
        raise AudioInputError(
            f"{what} {rate} Hz is not supported: streams must use an integer rate between {MIN_RATE} and {MAX_RATE} Hz"
        )
    return int(rate)


@functools.lru_cache(maxsize=None)
def measure_timing(in_rate: int, out_rate: int, quality: str) -> ResamplerTiming:
    """Measure soxr's worst-case hold-back and its kernel look-ahead for one configuration."""
    ratio = out_rate / in_rate
    # Hold-back peaks just before each block is released; watch at least 8 releases and 0.1 s.
    stream = soxr.ResampleStream(in_rate, out_rate, 1, dtype="float32", quality=quality)
    one = np.zeros(1, dtype=np.float32)
    fed = emitted = releases = 0
    worst = 0.0
    while releases < 8 or fed < in_rate // 10:
        got = len(stream.resample_chunk(one))
        fed += 1
        emitted += got
        releases += got > 0
        worst = max(worst, fed * ratio - emitted)
    # Later blocks differ from the observed ones only in a sub-sample phase: one sample of margin.
    delay = math.ceil(worst) + 1

    # Look-ahead: how early the response to an impulse starts, in input samples.
    half = in_rate // 5
    impulse = np.zeros(2 * half, dtype=np.float32)
    impulse[half] = 1.0
    response = np.abs(soxr.resample(impulse, in_rate, out_rate, quality=quality))
    first = int(np.argmax(response > 1e-6 * response.max()))
    lookahead = math.ceil(half - first / ratio)
    return ResamplerTiming(delay=delay, lookahead=lookahead)


# ---------------------------------------------------------------------------------------- "LL"

ATTENUATION_DB = 80.0  # stop band of the low-latency kernel
KAISER_BETA = 0.1102 * (ATTENUATION_DB - 8.7)
MAX_PHASES = 4096  # finer rate ratios round the sub-sample phase to 1/4096 sample (< -80 dB error at 7 kHz)


@functools.lru_cache(maxsize=None)
def polyphase_kernel(in_rate: int, out_rate: int) -> tuple[np.ndarray, int]:
    """Kaiser-windowed sinc, one row per sub-sample phase: ([phases, 2 * half] float32, half).

    Row p holds the taps of an output that falls p/phases of an input sample after input sample c,
    for inputs c - half + 1 ... c + half in that order. The transition band is 1/16 of the lower
    rate, placed just below its Nyquist frequency so that what aliases lands in the stop band (1 kHz
    wide at 16 kHz: pass band to 7 kHz). Kaiser's formula gives the kernel's duration from that width
    and the attenuation; `half` is its half-width in input samples, which is also the look-ahead."""
    low = min(in_rate, out_rate)
    transition = low / 16
    cutoff = (low / 2 - transition / 2) / in_rate  # cycles per input sample
    duration = (ATTENUATION_DB - 8) / (2.285 * 2 * math.pi * transition)  # seconds
    half = math.ceil(duration / 2 * in_rate)
    up = out_rate // math.gcd(in_rate, out_rate)
    phases = min(up, MAX_PHASES)
    # Distance from the output's time to each input, in input samples.
    offsets = (np.arange(phases) / phases)[:, None] + np.arange(half - 1, -half - 1, -1)[None, :]
    window = np.i0(KAISER_BETA * np.sqrt(np.clip(1 - (offsets / half) ** 2, 0, None))) / np.i0(KAISER_BETA)
    kernel = 2 * cutoff * np.sinc(2 * cutoff * offsets) * window
    kernel /= kernel.sum(axis=1, keepdims=True)  # every phase passes DC unchanged
    return kernel.astype(np.float32), half


@numba.njit(cache=True, fastmath=True)  # fastmath vectorises the tap loop; every chunking runs the same sums
def _polyphase(buffer, start, count, kernel, half, up, down, first, limit, out):
    """Outputs first, first+1, ... into out[:, written] while their input is in buffer[:, :count]
    (channel-major; absolute input index of column 0 is `start`) and the index is below `limit`.
    Output j lies at input position j * down / up. Returns how many were written."""
    phases = kernel.shape[0]
    taps = kernel.shape[1]
    written = 0
    j = first
    while j < limit and written < out.shape[1]:
        position = j * down
        centre = position // up  # the input sample at or before the output's time
        if centre + half >= start + count:
            break
        row = kernel[(position - centre * up) * phases // up]
        lo = centre - half + 1 - start
        for c in range(buffer.shape[0]):
            window = buffer[c, lo : lo + taps]  # a slice: indices from 0, so the loop vectorises
            acc = np.float32(0.0)
            for i in range(taps):
                acc += row[i] * window[i]
            out[c, written] = acc
        written += 1
        j += 1
    return written


class PolyphaseStream:
    """The "LL" resampler, with soxr's streaming interface (`resample_chunk(x, last=False)`)."""

    def __init__(self, in_rate: int, out_rate: int, channels: int) -> None:
        divisor = math.gcd(in_rate, out_rate)
        self.up, self.down = out_rate // divisor, in_rate // divisor
        self.kernel, self.half = polyphase_kernel(in_rate, out_rate)
        self.channels = channels
        # Input samples start .. start+count-1, channel-major; `half` zeros stand for the silence before.
        self._buffer = np.zeros((channels, 4 * self.half + 2048), dtype=np.float32)
        self._start, self._count = -self.half, self.half
        self._fed = 0  # input samples received
        self._next = 0  # index of the next output sample

    @property
    def holdback(self) -> int:
        """Worst case of (outputs due for the input so far) - (outputs returned), in output samples."""
        return math.ceil(self.half * self.up / self.down) + 1

    def resample_chunk(self, x: np.ndarray, last: bool = False) -> np.ndarray:
        x = x.reshape(len(x), self.channels)
        self._append(x)
        self._fed += len(x)
        limit = -(-self._fed * self.up // self.down)  # the one-shot output length, ceil(n * up / down)
        if last:
            self._append(np.zeros((self.half + 1, self.channels), dtype=np.float32))
        out = np.empty((self.channels, max(0, limit - self._next)), dtype=np.float32)
        written = _polyphase(self._buffer, self._start, self._count, self.kernel, self.half,
                             self.up, self.down, self._next, limit, out)
        self._next += written
        self._drop_consumed()
        return out[0, :written] if self.channels == 1 else out[:, :written].T

    def _append(self, x: np.ndarray) -> None:
        if self._count + len(x) > self._buffer.shape[1]:
            grown = np.zeros((self.channels, 2 * (self._count + len(x))), dtype=np.float32)
            grown[:, : self._count] = self._buffer[:, : self._count]
            self._buffer = grown
        self._buffer[:, self._count : self._count + len(x)] = x.T
        self._count += len(x)

    def _drop_consumed(self) -> None:
        """Keep only the input the next output still reads (its centre - half + 1 onward)."""
        keep_from = self._next * self.down // self.up - self.half + 1
        drop = min(max(0, keep_from - self._start), self._count)
        if drop:
            self._buffer[:, : self._count - drop] = self._buffer[:, drop : self._count]
            self._count -= drop
            self._start += drop


class StreamResampler:
    """Resample a stream of float32 frames, shape (n,) for mono or (n, channels).

    `process(x)` returns whatever output is complete; `flush()` returns the rest once the input
    has ended. Concatenated, the outputs equal `resample` of the concatenated input.
    """

    def __init__(self, in_rate: float, out_rate: float, quality: str = DEFAULT_QUALITY, *, channels: int = 1) -> None:
        self.in_rate = check_rate(in_rate, "input sample rate")
        self.out_rate = check_rate(out_rate, "output sample rate")
        if quality not in QUALITIES:
            raise ValueError(f"resampler quality must be one of {', '.join(QUALITIES)}, got {quality!r}")
        self.channels = channels
        if self.in_rate == self.out_rate:
            self._stream = None
            timing = ResamplerTiming(delay=0, lookahead=0)
        elif quality == "LL":
            self._stream = PolyphaseStream(self.in_rate, self.out_rate, channels)
            timing = ResamplerTiming(delay=self._stream.holdback, lookahead=self._stream.half)
        else:
            self._stream = soxr.ResampleStream(self.in_rate, self.out_rate, channels, dtype="float32", quality=quality)
            timing = measure_timing(self.in_rate, self.out_rate, quality)
        self.delay_samples = timing.delay  # output samples, see ResamplerTiming
        self.lookahead = timing.lookahead  # input samples

    @property
    def is_identity(self) -> bool:
        return self._stream is None

    def process(self, x: np.ndarray) -> np.ndarray:
        if self._stream is None:
            return x
        return self._stream.resample_chunk(x)

    def flush(self) -> np.ndarray:
        shape = (0,) if self.channels == 1 else (0, self.channels)
        empty = np.zeros(shape, dtype=np.float32)
        if self._stream is None:
            return empty
        return self._stream.resample_chunk(empty, last=True)


def resample(x: np.ndarray, in_rate: int, out_rate: int, quality: str = DEFAULT_QUALITY) -> np.ndarray:
    """One-shot resampling of (n,) or (n, channels) float32: what a stream of this quality gives, sample
    for sample (the offline reference of a streaming session)."""
    stream = StreamResampler(in_rate, out_rate, quality, channels=1 if x.ndim == 1 else x.shape[1])
    return np.concatenate([stream.process(np.ascontiguousarray(x, dtype=np.float32)), stream.flush()])
