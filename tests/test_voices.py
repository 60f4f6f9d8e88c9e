"""Voice-pick training pairs (model/training/voices.py): exact stems, the enrollment of other utterances of the
target, and streams that start with digital silence."""

import dataclasses

import numpy as np
import pytest

from samstream.model.training.index import build_index
from samstream.model.training.mixtures import MixtureGenerator
from samstream.model.training.toy_cache import make_toy_cache, write_toy_rir_bank
from samstream.model.training.voices import LAYOUTS, VoiceConfig, VoicePairGenerator


@pytest.fixture(scope="module")
def voices(tmp_path_factory):
    cache = make_toy_cache(tmp_path_factory.mktemp("cache"))
    write_toy_rir_bank(cache)
    build_index(cache, workers=1)
    return VoicePairGenerator(MixtureGenerator.from_cache(cache, "train"), VoiceConfig(seconds=4.0))


def test_pairs_of_every_layout_hold_the_target_and_fit_in_range(voices):
    rng = np.random.default_rng(0)
    for layout in LAYOUTS:
        pair = voices.pair(rng, layout)
        assert pair.mixture.shape == pair.target.shape == (voices.config.samples,)
        assert pair.target_speaker != pair.interferer_speaker
        assert np.abs(pair.mixture).max() <= 10 ** (voices.config.peak_dbfs[1] / 20) + 1e-6
        assert np.any(pair.enrollment)
        if layout == "absent":
            assert not np.any(pair.target)
        elif layout != "turns":  # (the toy speakers have too few utterances left for a target's turn every time)
            assert np.any(pair.target)


def test_some_streams_start_with_digital_silence_in_mixture_and_target_alike(voices):
    config = dataclasses.replace(voices.config, lead_silence_rate=1.0, lead_silence_seconds=(0.2, 0.5))
    always = VoicePairGenerator(voices._generator, config)
    plain = VoicePairGenerator(voices._generator, dataclasses.replace(config, lead_silence_rate=0.0))
    for seed in range(4):
        silent_start = always.pair(np.random.default_rng(seed), "overlap")
        reference = plain.pair(np.random.default_rng(seed), "overlap")  # the same pair without the silence
        lead = int(np.argmax(silent_start.mixture != 0)) - int(np.argmax(reference.mixture != 0))
        assert 0.2 * 16000 <= lead <= 0.5 * 16000
        assert not np.any(silent_start.mixture[:lead]) and not np.any(silent_start.target[:lead])
        for delayed, plain_stem in ((silent_start.mixture, reference.mixture), (silent_start.target, reference.target)):
            assert np.array_equal(delayed[lead:], plain_stem[: len(plain_stem) - lead])
