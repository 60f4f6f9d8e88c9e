"""Crossfader: equal power, and a switch between two different steady signals without a click."""

import numpy as np
import pytest

from samstream.stream.crossfade import Crossfader


def test_gains_keep_constant_power_and_run_from_old_to_new():
    fade = Crossfader(480)
    np.testing.assert_allclose(fade.fade_out**2 + fade.fade_in**2, 1.0, atol=1e-6)
    assert np.all(np.diff(fade.fade_in) > 0) and np.all(np.diff(fade.fade_out) < 0)
    assert fade.fade_out[0] > 0.9999 and fade.fade_in[-1] > 0.9999
    # Uncorrelated signals of equal power keep that power through the fade.
    rng = np.random.default_rng(0)
    old, new = rng.standard_normal((2, 200_000)).astype(np.float32)
    assert np.mean(Crossfader(200_000).mix(old, new) ** 2) == pytest.approx(1.0, rel=0.01)


def test_switching_between_steady_signals_has_no_click():
    rate, length = 16000, 320
    t = np.arange(4000) / rate
    start = 2000  # where `old` crosses zero and `new` peaks at 0.7: a hard switch jumps by 0.7
    old = (0.5 * np.sin(2 * np.pi * 200 * t)).astype(np.float32)
    new = (0.5 * np.cos(2 * np.pi * 330 * (t - start / rate)) + 0.2).astype(np.float32)
    fade = Crossfader(length)
    # Mixed in two pieces (as hops arrive) equals mixing in one go.
    seam = np.concatenate([fade.mix(old[start : start + 100], new[start : start + 100], 0),
                           fade.mix(old[start + 100 : start + length], new[start + 100 : start + length], 100)])
    np.testing.assert_array_equal(seam, fade.mix(old[start : start + length], new[start : start + length]))
    out = np.concatenate([old[:start], seam, new[start + length :]])
    steady = max(np.abs(np.diff(old)).max(), np.abs(np.diff(new)).max())
    ramp = np.pi / 2 / length * (np.abs(old).max() + np.abs(new).max())  # the gains' own slope
    jump = np.abs(np.diff(out)).max()
    assert jump <= np.sqrt(2) * steady + ramp
    hard = np.concatenate([old[:start], new[start:]])
    assert np.abs(np.diff(hard)).max() > 5 * jump  # the click the fade removes


def test_mismatched_pieces_are_rejected():
    fade = Crossfader(100)
    with pytest.raises(ValueError, match="does not fit"):
        fade.mix(np.zeros((2, 60)), np.zeros((2, 60)), start=50)
    with pytest.raises(ValueError, match="does not fit"):
        fade.mix(np.zeros(10), np.zeros(11))
    with pytest.raises(ValueError, match="at least 1"):
        Crossfader(0)
