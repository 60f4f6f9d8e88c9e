"""StreamResampler: streaming equals one-shot soxr, the measured hold-back bounds what is owed, identity is free."""

import numpy as np
import pytest
import soxr

from samstream.model.errors import AudioInputError
from samstream.stream.resample import StreamResampler

PAIRS = [(8000, 16000), (16000, 8000), (22050, 16000), (16000, 22050), (44100, 16000), (16000, 44100), (48000, 16000), (16000, 48000)]


def random_chunks(total: int, seed: int) -> list[int]:
    rng = np.random.default_rng(seed)
    sizes = []
    while sum(sizes) < total:
        sizes.append(int(rng.choice([int(rng.integers(1, 16)), int(rng.integers(1, 4097))])))
    return sizes


@pytest.mark.parametrize("in_rate, out_rate", PAIRS)
def test_holdback_bounds_the_owed_output_for_any_chunking(in_rate, out_rate):
    resampler = StreamResampler(in_rate, out_rate)
    delay = resampler.delay_samples
    x = np.random.default_rng(0).standard_normal(3 * in_rate).astype(np.float32) * 0.3
    fed = emitted = 0
    worst = 0.0
    pieces = []
    for size in random_chunks(len(x), seed=in_rate + out_rate):
        piece = resampler.process(x[fed : fed + size])
        fed += len(x[fed : fed + size])
        emitted += len(piece)
        pieces.append(piece)
        owed = fed * out_rate / in_rate - emitted
        assert owed <= delay, f"after {fed} inputs {owed:.1f} outputs owed, more than the measured {delay}"
        worst = max(worst, owed)
    # The bound is tight: large chunks land right before a block release often enough to come within 25%.
    assert worst > 0.75 * delay
    pieces.append(resampler.flush())
    np.testing.assert_array_equal(np.concatenate(pieces), soxr.resample(x, in_rate, out_rate, quality="HQ"))


def test_output_is_time_aligned_and_multichannel_streams_match():
    # An impulse at input sample 16000 (1 s) comes out at output sample 44100: the content has no delay.
    resampler = StreamResampler(16000, 44100, channels=2)
    x = np.zeros((32000, 2), dtype=np.float32)
    x[16000, 0] = 1.0
    x[16000, 1] = -0.5
    y = np.concatenate([resampler.process(x[:7000]), resampler.process(x[7000:]), resampler.flush()])
    assert y.shape == (88200, 2)
    assert np.argmax(y[:, 0]) == 44100 and np.argmin(y[:, 1]) == 44100
    np.testing.assert_allclose(y[:, 1], -0.5 * y[:, 0], atol=1e-7)
    assert 0 < resampler.lookahead < 200  # input samples of kernel support ahead


def test_equal_rates_are_free():
    resampler = StreamResampler(16000, 16000)
    x = np.ones(10, dtype=np.float32)
    assert resampler.process(x) is x
    assert resampler.delay_samples == 0 and resampler.lookahead == 0
    assert resampler.flush().shape == (0,)


@pytest.mark.parametrize("rate", [4000, 96000, 22050.5])
def test_unsupported_rates_get_a_clear_error(rate):
    with pytest.raises(AudioInputError, match="between 8000 and 48000 Hz"):
        StreamResampler(rate, 16000)


def test_unknown_quality_is_rejected():
    with pytest.raises(ValueError, match="quality"):
        StreamResampler(16000, 48000, quality="best")
