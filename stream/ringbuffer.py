"""Preallocated float32 ring buffer for one producer and one consumer.

Audio moves through the engine in frames of any size; the ring decouples the producer's frame
size from the consumer's (e.g. transport frames of 960 samples in, model hops of 320 out).
Nothing is allocated per frame: callers read into arrays they own, and the copies (which wrap
around the end of the storage) are numba kernels. Writing more than fits raises instead of
silently dropping audio, because a dropped sample would break the engine's sample accounting.

The read and write counters only grow, and each side publishes its counter after its copy, so
a single producer thread and a single consumer thread may use one ring without a lock; anything
that needs both sides at once (e.g. the session's feed/pull) takes its own lock.
"""

from __future__ import annotations

import numba
import numpy as np


class BufferOverflowError(RuntimeError):
    """More frames written than the ring has room for (the consumer fell behind)."""


class BufferUnderflowError(RuntimeError):
    """More frames read than the ring holds."""


@numba.njit(cache=True)
def _copy_in(storage, frames, start):  # pragma: no cover - compiled
    capacity = storage.shape[0]
    first = min(frames.shape[0], capacity - start)
    storage[start : start + first] = frames[:first]
    storage[: frames.shape[0] - first] = frames[first:]


@numba.njit(cache=True)
def _copy_out(storage, out, start):  # pragma: no cover - compiled
    capacity = storage.shape[0]
    first = min(out.shape[0], capacity - start)
    out[:first] = storage[start : start + first]
    out[first:] = storage[: out.shape[0] - first]


class RingBuffer:
    """`capacity` frames of `channels` float32 samples.

    Mono rings (channels=1) take and fill 1-D arrays; multi-channel rings take and fill
    [frames, channels] arrays (frame-major, the layout soxr and sound cards use).
    """

    def __init__(self, capacity: int, channels: int = 1) -> None:
        if capacity < 1 or channels < 1:
            raise ValueError(f"ring buffer needs capacity >= 1 and channels >= 1, got {capacity}, {channels}")
        self.capacity = int(capacity)
        self.channels = int(channels)
        self._storage = np.zeros((self.capacity, self.channels), dtype=np.float32)
        self._written = 0  # total frames ever written (producer-owned)
        self._read = 0  # total frames ever consumed (consumer-owned)

    @property
    def available(self) -> int:
        """Frames written and not yet consumed."""
        return self._written - self._read

    @property
    def free(self) -> int:
        """Frames that can be written without overflow."""
        return self.capacity - self.available

    def write(self, frames: np.ndarray) -> None:
        frames = self._as_frames(frames, "write")
        n = frames.shape[0]
        if n > self.free:
            raise BufferOverflowError(
                f"ring buffer overflow: writing {n} frames but only {self.free} of {self.capacity} are free "
                "(the reader fell behind; audio is never dropped silently)"
            )
        if n:
            _copy_in(self._storage, frames, self._written % self.capacity)
        self._written += n

    def write_latest(self, frames: np.ndarray) -> None:
        """Write, consuming the oldest frames to make room: the ring keeps the newest `capacity` frames (a history,
        not a queue: for monitors and enrollment, never for audio that must be delivered)."""
        frames = frames[-self.capacity :]
        overflow = len(frames) - self.free
        if overflow > 0:
            self.advance(overflow)
        self.write(frames)

    def read_into(self, out: np.ndarray) -> None:
        """Fill `out` with the next len(out) frames and consume them."""
        self.peek_into(out)
        self._read += out.shape[0]

    def peek_into(self, out: np.ndarray, offset: int = 0) -> None:
        """Fill `out` with the frames that start `offset` frames after the read position, consuming nothing."""
        frames = self._as_frames(out, "read")
        n = frames.shape[0]
        if offset < 0 or offset + n > self.available:
            raise BufferUnderflowError(
                f"ring buffer underflow: reading {n} frames at offset {offset} but only {self.available} are buffered"
            )
        if n:
            _copy_out(self._storage, frames, (self._read + offset) % self.capacity)

    def advance(self, n: int) -> None:
        """Consume n frames without copying them."""
        if n < 0 or n > self.available:
            raise BufferUnderflowError(f"ring buffer underflow: advancing {n} frames but only {self.available} are buffered")
        self._read += n

    def _as_frames(self, array: np.ndarray, verb: str) -> np.ndarray:
        """A [frames, channels] view of `array` (no copy), or a clear error."""
        if array.dtype != np.float32:
            raise TypeError(f"ring buffer {verb}: expected float32 samples, got {array.dtype}")
        if array.ndim == 1 and self.channels == 1:
            array = array[:, None]  # a view, never a copy, so read_into can fill it
        if array.ndim != 2 or array.shape[1] != self.channels:
            expected = "(frames,)" if self.channels == 1 else f"(frames, {self.channels})"
            raise ValueError(f"ring buffer {verb}: expected shape {expected}, got {array.shape}")
        return array
