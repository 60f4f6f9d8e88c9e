"""The speech-presence detector (Silero VAD's weights, our network) and the gate it drives over the expert's estimate."""

import warnings

import numpy as np
import pytest
import torch

from fixtures.real_audio import at_snr, real_sounds, real_speech, real_woman_speech
from fixtures.speech_estimate import speech_estimate
from samstream.model.errors import ModelLoadError
from samstream.model.speech_presence import (CHUNK, SpeechGate, SpeechGateConfig, SpeechPresence, read_weights,
                                             weights_path)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def presence():
    return SpeechPresence()


def probabilities(presence, x: np.ndarray, chunks_per_step: int = 1) -> np.ndarray:
    state = [presence.init_stream()]
    step = chunks_per_step * CHUNK
    return np.concatenate([presence.stream_step(state, x[None, i:i + step])[0]
                           for i in range(0, len(x) // step * step, step)])


def test_matches_the_wheels_own_model_on_real_speech_and_sounds(presence):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        theirs = torch.jit.load(str(weights_path())).eval()
    for x in (real_speech(4.0), real_sounds(4.0)):
        theirs.reset_states()
        with torch.inference_mode():
            expected = [float(theirs(torch.from_numpy(x[i:i + CHUNK].copy()), 16000))
                        for i in range(0, len(x) // CHUNK * CHUNK, CHUNK)]
        np.testing.assert_allclose(probabilities(presence, x), expected, atol=1e-5)


def test_hears_real_voices_and_not_real_sounds_in_the_experts_estimate(presence):
    man, woman, sounds = real_speech(6.0), real_woman_speech(6.0), real_sounds(6.0)
    # what the expert keeps of everyday sounds alone is not speech; its estimate of a voice among them is
    assert probabilities(presence, speech_estimate(sounds)).mean() < 0.15
    for voice in (man, woman):
        heard = probabilities(presence, speech_estimate(voice + at_snr(voice, sounds, 0.0)))
        assert heard.mean() > 0.5


def test_batched_streams_and_any_whole_chunks_per_step_give_the_same_probabilities(presence):
    x = np.stack([real_speech(3.0), real_sounds(3.0)])
    alone = [probabilities(presence, row) for row in x]
    states = [presence.init_stream(), presence.init_stream()]
    batched = np.concatenate([presence.stream_step(states, x[:, i:i + CHUNK]) for i in range(0, 93 * CHUNK, CHUNK)],
                             axis=1)
    np.testing.assert_allclose(batched, np.stack(alone)[:, :93], atol=1e-6)
    np.testing.assert_allclose(probabilities(presence, x[0], chunks_per_step=3)[:90], alone[0][:90], atol=1e-6)
    with pytest.raises(ValueError, match="k \\* 512"):
        presence.stream_step(states, x[:, :500])


def test_the_gate_opens_on_speech_holds_through_pauses_and_never_steps(presence):
    gate = SpeechGate(presence, SpeechGateConfig(threshold=0.5, hold_s=0.25, unheard_share=0.5))
    speech = speech_estimate(real_speech(3.0))
    chunks = [speech[i:i + CHUNK] for i in range(0, len(speech) // CHUNK * CHUNK, CHUNK)]
    probe, heard = gate.init_stream(), []
    for chunk in chunks:
        gate.step(probe, chunk)
        heard.append(probe.since_speech == 0)
    last_heard = max(i for i, h in enumerate(heard) if h)  # the pause starts after this chunk
    state = gate.init_stream()
    opened = np.concatenate([gate.step(state, chunk) for chunk in chunks[: last_heard + 1]])
    closing = np.concatenate([gate.step(state, np.zeros(CHUNK, np.float32)) for _ in range(32)])
    assert opened.mean() > 0.8 and opened.min() >= 0.5
    assert np.abs(np.diff(np.concatenate([opened, closing]))).max() <= 0.5 / CHUNK + 1e-6  # ramps, not steps
    assert closing[: gate.hold_chunks * CHUNK].min() == 1.0  # held over the pause's first 0.25 s
    assert np.all(closing[-CHUNK:] == 0.5)  # then the unheard share


def test_a_model_file_that_is_not_the_tested_one_is_refused(tmp_path):
    wrong = tmp_path / "silero_vad.jit"
    data = bytearray(weights_path().read_bytes())
    data[-1] ^= 1
    wrong.write_bytes(bytes(data))
    with pytest.raises(ModelLoadError, match="silero-vad==6.2.3"):
        read_weights(wrong)
