"""StreamResampler: streaming equals one-shot, the declared hold-back bounds what is owed, identity is free,
and the low-latency kernel ("LL") filters like a high-quality resampler."""

import numpy as np
import pytest
import soxr

from samstream.model.errors import AudioInputError
from samstream.stream.resample import StreamResampler, resample

PAIRS = [(8000, 16000), (16000, 8000), (22050, 16000), (16000, 22050), (44100, 16000), (16000, 44100), (48000, 16000), (16000, 48000)]


def random_chunks(total: int, seed: int) -> list[int]:
    rng = np.random.default_rng(seed)
    sizes = []
    while sum(sizes) < total:
        sizes.append(int(rng.choice([int(rng.integers(1, 16)), int(rng.integers(1, 4097))])))
    return sizes


@pytest.mark.parametrize("quality", ["LL", "HQ"])
@pytest.mark.parametrize("in_rate, out_rate", PAIRS)
def test_holdback_bounds_the_owed_output_for_any_chunking(in_rate, out_rate, quality):
    resampler = StreamResampler(in_rate, out_rate, quality)
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
    # The bound is tight: chunk ends land right before a release often enough to come within 25%.
    assert worst > 0.75 * delay
    pieces.append(resampler.flush())
    streamed = np.concatenate(pieces)
    np.testing.assert_array_equal(streamed, resample(x, in_rate, out_rate, quality))
    if quality != "LL":
        np.testing.assert_array_equal(streamed, soxr.resample(x, in_rate, out_rate, quality=quality))


@pytest.mark.parametrize("quality", ["LL", "HQ"])
def test_output_is_time_aligned_and_multichannel_streams_match(quality):
    # An impulse at input sample 16000 (1 s) comes out at output sample 44100: the content has no delay.
    resampler = StreamResampler(16000, 44100, quality, channels=2)
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


def tone(freq: float, rate: int, seconds: float = 1.0) -> np.ndarray:
    return (0.5 * np.sin(2 * np.pi * freq * np.arange(int(seconds * rate)) / rate)).astype(np.float32)


def level_db(x: np.ndarray) -> float:
    return 10 * np.log10(np.mean(x.astype(np.float64) ** 2) + 1e-30)


@pytest.mark.parametrize("in_rate, out_rate", [(48000, 16000), (16000, 48000), (44100, 16000), (8000, 16000)])
def test_low_latency_kernel_matches_soxr_in_the_pass_band_and_rejects_aliases(in_rate, out_rate):
    low = min(in_rate, out_rate)
    edge = slice(out_rate // 10, -out_rate // 10)  # away from the start and end transients
    for freq in (100.0, 1000.0, 0.43 * low):  # pass band: up to 7 kHz of a 16 kHz stream
        x = tone(freq, in_rate)
        ours, best = resample(x, in_rate, out_rate, "LL")[edge], soxr.resample(x, in_rate, out_rate, "VHQ")[edge]
        assert level_db(ours - best) - level_db(best) < -60, f"{freq} Hz differs from soxr VHQ"
    if in_rate > out_rate:  # a tone above the output's Nyquist frequency must not fold back in
        folded = resample(tone(0.55 * low, in_rate), in_rate, out_rate, "LL")[edge]
        assert level_db(folded) - level_db(tone(0.55 * low, in_rate)) < -75


def test_low_latency_kernel_holds_back_under_three_milliseconds_between_48_and_16_khz():
    down, up = StreamResampler(48000, 16000, "LL"), StreamResampler(16000, 48000, "LL")
    assert down.delay_samples / 16000 < 0.003 and up.delay_samples / 48000 < 0.003
    soxr_hq = StreamResampler(48000, 16000, "HQ")
    assert soxr_hq.delay_samples > 10 * down.delay_samples
