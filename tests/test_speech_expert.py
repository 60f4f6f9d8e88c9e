"""The speech expert (DeepFilterNet3 through its C API): pinned and checked, streaming exactly at a fixed delay,
and a real speech enhancer on real recordings."""

import time

import numpy as np
import pytest

from fixtures.real_audio import at_snr, real_sounds, real_speech
from fixtures.signals import si_sdr
from fixtures.speech_estimate import speech_estimate
from samstream.model import speech_expert
from samstream.model.errors import ModelLoadError
from samstream.model.speech_expert import SpeechExpertStream, expert_delay, state_pool


def test_a_model_file_that_is_not_the_pinned_one_is_refused(monkeypatch):
    monkeypatch.setattr(speech_expert, "MODEL_SHA256", "0" * 64)
    with pytest.raises(ModelLoadError, match="SHA-256"):
        speech_expert.DeepFilterRuntime()


def test_any_chunking_gives_the_same_samples_at_the_declared_delay():
    rng = np.random.default_rng(0)
    x = real_speech(3.0) + at_snr(real_speech(3.0), real_sounds(3.0), 5.0)
    whole = SpeechExpertStream(16000)
    reference = whole.process(x)
    pieces, position, chunked = [], 0, SpeechExpertStream(16000)
    while position < len(x):
        size = int(rng.integers(1, 900))
        pieces.append(chunked.process(x[position : position + size]))
        position += size
    assert np.array_equal(np.concatenate(pieces), reference)
    # the output is the input's speech delayed by exactly delay_samples: a click comes out there
    assert whole.delay_samples == expert_delay(16000) == 724
    assert np.argmax([np.dot(reference[lag:], x[: len(x) - lag]) for lag in range(1200)]) == whole.delay_samples


def test_it_keeps_real_speech_and_removes_everyday_sounds():
    speech = real_speech(6.0)
    mixture = speech + at_snr(speech, real_sounds(6.0), 0.0)
    estimate = speech_estimate(mixture)
    improvement = si_sdr(estimate, speech) - si_sdr(mixture, speech)
    assert improvement > 8.0, f"SI-SDR improvement {improvement:.1f} dB"


def test_states_are_made_ahead_of_need():
    pool = state_pool()
    SpeechExpertStream(16000, pool).close()  # the pool refills in the background
    deadline = time.monotonic() + 10
    while len(pool._states) < pool.ready and time.monotonic() < deadline:
        time.sleep(0.05)
    started = time.perf_counter()
    stream = SpeechExpertStream(16000, pool)
    assert time.perf_counter() - started < 0.1  # creating a state costs ~0.5 s: this one was ready
    stream.close()
