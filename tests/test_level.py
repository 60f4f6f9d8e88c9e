"""Causal level normalisation: a stream is heard at the working level whatever its gain, and the gain undoes."""

import numpy as np

from fixtures.real_audio import real_speech
from samstream.model.level import TARGET_DBFS, LevelNormalizer, LevelState


def normalise(x: np.ndarray, hop: int = 512) -> tuple[np.ndarray, np.ndarray]:
    level, state = LevelNormalizer(), LevelState()
    pairs = [level.normalize(state, x[i : i + hop]) for i in range(0, len(x), hop)]
    return np.concatenate([p[0] for p in pairs]), np.concatenate([p[1] for p in pairs])


def test_quiet_and_loud_streams_come_out_at_the_same_working_level():
    speech = real_speech(6.0)
    speech = speech / np.sqrt(np.mean(speech**2))  # 0 dB RMS reference
    outputs = {}
    for dbfs in (-60.0, -40.0, -20.0, -3.0):
        scaled, gains = normalise(speech * 10 ** (dbfs / 20))
        outputs[dbfs] = scaled
        # after the first second the working level is reached, within the tracker's ripple
        settled = scaled[16000:]
        level = 10 * np.log10(np.mean(settled**2))
        assert abs(level - TARGET_DBFS) < 8, (dbfs, level)  # the loudest hops stand for the level: a heuristic
    # once the tracker has settled, the same signal at different gains is normalised to the same samples
    assert np.allclose(outputs[-60.0][32000:], outputs[-3.0][32000:], atol=1e-4)


def test_dividing_by_the_gains_restores_the_input_exactly():
    speech = real_speech(4.0) * 0.01
    scaled, gains = normalise(speech)
    assert np.allclose(scaled / gains, speech, rtol=1e-6, atol=1e-9)


def test_digital_silence_is_left_alone():
    scaled, gains = normalise(np.zeros(16000, np.float32))
    assert np.all(gains == 1.0) and not scaled.any()
