"""RingBuffer: wrap-around copies, peeking, multi-channel frames, loud overflow/underflow."""

import numpy as np
import pytest

from samstream.stream.ringbuffer import BufferOverflowError, BufferUnderflowError, RingBuffer


@pytest.mark.parametrize("channels", [1, 2])
def test_random_writes_and_reads_wrap_around_exactly(channels):
    rng = np.random.default_rng(channels)
    ring = RingBuffer(capacity=1000, channels=channels)
    shape = (lambda n: (n,)) if channels == 1 else (lambda n: (n, channels))
    source = rng.standard_normal(shape(50_000)).astype(np.float32)
    written = read = 0
    received = []
    while read < len(source):
        n = min(int(rng.integers(0, 700)), ring.free, len(source) - written)
        ring.write(source[written : written + n])
        written += n
        m = int(rng.integers(0, ring.available + 1))
        out = np.empty(shape(m), dtype=np.float32)
        ring.read_into(out)
        read += m
        received.append(out)
        assert ring.available == written - read and ring.free == 1000 - ring.available
    np.testing.assert_array_equal(np.concatenate(received), source)


def test_peek_and_advance_across_the_seam():
    ring = RingBuffer(capacity=8)
    ring.write(np.arange(6, dtype=np.float32))
    ring.advance(5)
    ring.write(np.arange(6, 13, dtype=np.float32))  # wraps: storage holds 5..12 across the end
    out = np.empty(4, dtype=np.float32)
    ring.peek_into(out, offset=2)
    np.testing.assert_array_equal(out, [7, 8, 9, 10])
    assert ring.available == 8  # peeking consumed nothing
    ring.read_into(out)
    np.testing.assert_array_equal(out, [5, 6, 7, 8])


def test_overflow_and_underflow_raise_and_leave_the_ring_intact():
    ring = RingBuffer(capacity=4)
    ring.write(np.array([1, 2, 3], dtype=np.float32))
    with pytest.raises(BufferOverflowError, match="only 1 of 4 are free"):
        ring.write(np.zeros(2, dtype=np.float32))
    with pytest.raises(BufferUnderflowError):
        ring.read_into(np.empty(4, dtype=np.float32))
    with pytest.raises(BufferUnderflowError):
        ring.peek_into(np.empty(2, dtype=np.float32), offset=2)
    with pytest.raises(BufferUnderflowError):
        ring.advance(4)
    out = np.empty(3, dtype=np.float32)
    ring.read_into(out)
    np.testing.assert_array_equal(out, [1, 2, 3])


def test_wrong_dtype_or_shape_is_rejected():
    ring = RingBuffer(capacity=16, channels=2)
    with pytest.raises(TypeError, match="float32"):
        ring.write(np.zeros((4, 2), dtype=np.float64))
    with pytest.raises(ValueError, match=r"\(frames, 2\)"):
        ring.write(np.zeros(4, dtype=np.float32))
    with pytest.raises(ValueError, match="capacity"):
        RingBuffer(capacity=0)


def test_write_latest_keeps_the_newest_frames():
    ring = RingBuffer(5, channels=2)
    frames = np.arange(24, dtype=np.float32).reshape(12, 2)
    ring.write_latest(frames[:3])
    ring.write_latest(frames[3:7])  # drops the oldest two
    out = np.empty((5, 2), np.float32)
    ring.peek_into(out)
    np.testing.assert_array_equal(out, frames[2:7])
    ring.write_latest(frames[:12])  # longer than the ring: its last 5 frames
    ring.peek_into(out)
    np.testing.assert_array_equal(out, frames[7:12])
