"""Augmentations: speed by resampling, EQ, active RMS, room impulse responses; the heavy options (level
rides, distortion, devices, noise floors) and their off-by-default switches."""

import numpy as np
import pytest

from scipy import signal

from samstream.model.training.augment import (DEVICES, NOISE_FLOORS, AugmentConfig, active_rms, background_noise,
                                              change_speed, compute_rir_bank, device_filter, distort, level_ride,
                                              random_eq, reverberate)

SR = 16000


def test_active_rms_ignores_silence():
    tone = 0.1 * np.sin(2 * np.pi * 440 * np.arange(SR) / SR)
    padded = np.concatenate([tone, np.zeros(3 * SR)])
    assert active_rms(padded) == pytest.approx(active_rms(tone), rel=0.01) == pytest.approx(0.1 / np.sqrt(2), rel=0.01)


def test_speed_change_shifts_pitch_and_length():
    tone = np.sin(2 * np.pi * 1000 * np.arange(SR) / SR).astype(np.float32)
    fast = change_speed(tone, 1.05)
    assert len(fast) == pytest.approx(SR / 1.05, abs=2)
    peak = np.argmax(np.abs(np.fft.rfft(fast))) * SR / len(fast)
    assert peak == pytest.approx(1050, abs=3)


def test_random_eq_changes_the_spectrum_but_not_the_length():
    noise = np.random.default_rng(0).standard_normal(SR).astype(np.float32)
    out = random_eq(noise, np.random.default_rng(1), 8.0)
    assert out.shape == noise.shape and np.isfinite(out).all() and not np.allclose(out, noise)


def test_rir_bank_starts_at_the_direct_path_and_decays():
    bank = compute_rir_bank(AugmentConfig(rir_bank_size=2, rir_sources=2, rir_max_seconds=0.3))
    assert bank.shape == (2, 2, 4800)
    for rir in bank.reshape(-1, 4800):
        assert np.argmax(np.abs(rir)) < 50 and np.abs(rir).max() == pytest.approx(1.0)
        assert np.abs(rir[2400:]).max() < 0.5
    click = np.zeros(SR, dtype=np.float32)
    click[100] = 1.0
    wet = reverberate(click, bank[0, 0])
    assert wet.shape == click.shape and np.abs(wet[200:]).sum() > 0


def test_heavy_options_are_off_by_default_and_on_in_the_heavy_preset():
    default, heavy = AugmentConfig(), AugmentConfig.heavy()
    assert (default.level_ride_rate, default.clip_rate, default.device_rate, default.noise_rate) == (0, 0, 0, 0)
    assert (default.speed_range, default.eq_max_sections, default.rt60_range) == (0.05, 3, (0.1, 0.5))
    assert heavy.speed_range == 0.10 and heavy.eq_max_db > default.eq_max_db and heavy.reverb_rate > default.reverb_rate
    assert min(heavy.level_ride_rate, heavy.clip_rate, heavy.device_rate, heavy.noise_rate) > 0
    assert AugmentConfig.heavy(noise_rate=0.0).noise_rate == 0.0


def test_devices_band_limit():
    noise = np.random.default_rng(0).standard_normal(4 * SR)
    freqs = np.fft.rfftfreq(len(noise), 1 / SR)
    for device in DEVICES:
        out = signal.sosfilt(device_filter(np.random.default_rng(1), device), noise)
        power = np.abs(np.fft.rfft(out)) ** 2
        assert np.isfinite(out).all() and power.sum() > 0
        assert power[freqs > 7600].sum() < 0.01 * power.sum(), device  # nothing a 16 kHz device passes up there
    phone = signal.sosfilt(device_filter(np.random.default_rng(1), "phone line"), noise)
    power = np.abs(np.fft.rfft(phone)) ** 2
    assert power[(freqs < 150) | (freqs > 4500)].sum() < 0.01 * power.sum()


def test_distortion_keeps_the_peak_and_adds_harmonics():
    tone = (0.3 * np.sin(2 * np.pi * 500 * np.arange(SR) / SR)).astype(np.float32)
    for seed in range(3):
        out = distort(tone, np.random.default_rng(seed), (12.0, 18.0))
        assert np.abs(out).max() == pytest.approx(0.3, rel=1e-4)
        power = np.abs(np.fft.rfft(out)) ** 2
        assert power[1400:1600].sum() + power[900:1100].sum() > 0.01 * power[450:550].sum()


def test_level_ride_stays_within_its_range_and_noise_floors_are_unit_peak():
    ones = np.ones(3 * SR, dtype=np.float32)
    ride = level_ride(ones, np.random.default_rng(0), 6.0)
    assert 10 ** (-6 / 20) - 1e-6 <= ride.min() and ride.max() <= 10 ** (6 / 20) + 1e-6 and ride.std() > 0.05
    for kind in NOISE_FLOORS:
        noise, name = background_noise(np.random.default_rng(0), SR, kind)
        assert name == kind and noise.dtype == np.float32 and np.abs(noise).max() == pytest.approx(1.0)
    hum, _ = background_noise(np.random.default_rng(0), 2 * SR, "hum")
    spectrum = np.abs(np.fft.rfft(hum))
    peak_hz = np.argmax(spectrum) / 2  # 2 s: bins are 0.5 Hz
    assert peak_hz % 50 == 0 or peak_hz % 60 == 0  # mains or one of its harmonics
