"""The "LL" resampler: our own low-latency windowed-sinc polyphase FIR, streaming and exact under any chunking.

It lives on the model floor because both the streaming engine (client rate <-> model rate, stream/resample.py)
and the separators (the speech expert's 16 <-> 48 kHz hop, model/speech_expert.py) run it, and an offline run
must resample exactly as the stream does.
"""

from __future__ import annotations

import functools
import math

import numba
import numpy as np

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


def polyphase_resample(x: np.ndarray, in_rate: int, out_rate: int) -> np.ndarray:
    """One-shot LL resampling of a mono float32 signal: exactly what a stream of it returns, sample for sample."""
    if in_rate == out_rate:
        return np.asarray(x, dtype=np.float32)
    stream = PolyphaseStream(in_rate, out_rate, 1)
    head = stream.resample_chunk(np.ascontiguousarray(x, dtype=np.float32))
    return np.concatenate([head, stream.resample_chunk(np.zeros(0, np.float32), last=True)])
