"""Augmentations: speed by resampling, EQ, active RMS, room impulse responses."""

import numpy as np
import pytest

from samstream.model.training.augment import (AugmentConfig, active_rms, change_speed, compute_rir_bank, random_eq,
                                              reverberate)

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
