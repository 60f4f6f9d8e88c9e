"""Procedural sounds have the structure DATA.md describes (checked on the waveforms)."""

import numpy as np
import pytest

from samstream.model.training.procedural import GENERATORS, bell, phone_ring, siren

SR = 16000


def _band_share(wav, lo, hi):
    spectrum = np.abs(np.fft.rfft(wav)) ** 2
    freqs = np.fft.rfftfreq(len(wav), 1 / SR)
    return spectrum[(freqs >= lo) & (freqs <= hi)].sum() / spectrum.sum()


@pytest.mark.parametrize("name", sorted(GENERATORS))
def test_generators_are_deterministic_finite_and_normalised(name):
    a = GENERATORS[name](np.random.default_rng(3), 2.0)
    b = GENERATORS[name](np.random.default_rng(3), 2.0)
    assert a.dtype == np.float32 and a.shape == (32000,) and np.array_equal(a, b)
    assert np.isfinite(a).all() and np.abs(a).max() == pytest.approx(0.5, abs=1e-3)


def test_siren_fundamental_sweeps_in_the_siren_band():
    wav = siren(np.random.default_rng(0), 4.0)
    assert _band_share(wav, 450, 1800) > 0.5


def test_bell_decays():
    wav = bell(np.random.default_rng(1), 3.0)
    first = np.abs(wav[: SR // 4]).max()
    assert np.abs(wav[-SR // 4:]).max() < first


def test_phone_ring_is_gated_dual_tone():
    rng = np.random.default_rng(0)
    while True:  # the generator picks one of three cadences; find a US or UK dual tone
        wav = phone_ring(rng, 6.0)
        if _band_share(wav, 390, 490) > 0.9:
            break
    frames = np.sqrt(np.mean(wav[: len(wav) // 320 * 320].reshape(-1, 320) ** 2, axis=1))
    assert (frames < 0.01 * frames.max()).mean() > 0.2  # silent gaps between rings
