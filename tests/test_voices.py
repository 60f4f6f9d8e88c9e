"""Voice-pick training pairs (model/training/voices.py): exact stems, the enrollment of other utterances of the
target, and streams that start with digital silence."""

import dataclasses

import numpy as np
import pytest
import soundfile as sf

from samstream.model.training.augment import active_rms
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


def test_some_partial_pairs_enroll_the_streams_solo_start_as_live_enrollment_does(voices):
    live = VoicePairGenerator(voices._generator, dataclasses.replace(voices.config, live_enrollment_rate=1.0,
                                                                     lead_silence_rate=0.0))
    for seed in range(3):
        pair = live.pair(np.random.default_rng(seed), "partial")
        solo = len(pair.enrollment)
        assert 0.3 * live.config.samples <= solo <= 0.7 * live.config.samples
        # the same samples as the mixture's start (the enrollment keeps its own level)
        scale = np.dot(pair.enrollment, pair.mixture[:solo]) / np.dot(pair.mixture[:solo], pair.mixture[:solo])
        assert np.allclose(pair.enrollment, scale * pair.mixture[:solo], atol=1e-5)


def test_enrollments_can_come_through_another_microphone(voices):
    config = dataclasses.replace(voices.config, live_enrollment_rate=0.0, enrollment_eq_rate=1.0,
                                 enrollment_noise_rate=1.0)
    plain = dataclasses.replace(config, enrollment_eq_rate=0.0, enrollment_noise_rate=0.0)
    changed = VoicePairGenerator(voices._generator, config).pair(np.random.default_rng(3), "overlap")
    reference = VoicePairGenerator(voices._generator, plain).pair(np.random.default_rng(3), "overlap")
    assert (changed.target_speaker, changed.interferer_speaker) == (reference.target_speaker, reference.interferer_speaker)
    assert changed.enrollment.shape == reference.enrollment.shape  # the same clip ...
    assert not np.allclose(changed.enrollment, reference.enrollment, atol=1e-3)  # ... heard through another microphone


def test_training_takes_voice_pair_settings_and_refuses_unknown_ones(voices, tmp_path):
    """`samstream train --task voice --mixture-config '{"noise_db": [-5, 0]}'`: louder noise than the default
    (−35..−15 dB against the speech) under every pair; a setting VoiceConfig lacks is named before training."""
    from samstream.model.training.common import DataError
    from samstream.model.training.voices import VoicePairSource

    cache = voices.pool.cache_dir
    loud = VoicePairSource(cache, 4.0, {"noise_db": [-5, 0], "noise_rate": 1.0})
    quiet = VoicePairSource(cache, 4.0, {"noise_rate": 1.0})
    assert loud.generator.config.noise_db == (-5, 0)

    def rest_db(source) -> float:
        rng = np.random.default_rng(3)
        pairs = [source.generator.pair(rng, "alone") for _ in range(6)]  # the target alone: the rest is the noise
        return 10 * np.log10(sum(np.sum((p.mixture - p.target) ** 2) for p in pairs) /
                             sum(np.sum(p.target**2) for p in pairs))

    assert rest_db(loud) > rest_db(quiet) + 10.0  # measured −5.9 against −24.9 dB
    with pytest.raises(DataError, match="noise_level"):
        VoicePairSource(cache, 4.0, {"noise_level": -5})


def test_a_real_voice_eval_set_takes_genders_from_pitch_and_says_what_it_left_out(tmp_path_factory):
    """`samstream data build-voice-eval --real-voices --noise-db`: the toy cache's held-out recorded voices are
    hedgewars' Robot (pitch 150 Hz) and klettres' Italian (190 Hz), of no known gender: a man and a woman by pitch,
    so there are cross-gender and turn-taking pairs and no same-gender ones; a sound lies under every pair."""
    from samstream.model.training.voices import build_voice_eval

    cache = make_toy_cache(tmp_path_factory.mktemp("cache"))
    build_index(cache, workers=1)
    write_toy_rir_bank(cache)
    out = tmp_path_factory.mktemp("real")
    manifest = build_voice_eval(cache, out, per_type=2, seconds=2.0, force=True, real_voices=True,
                                noise_db=(-6.0, -6.0))
    assert manifest["genders_by_pitch"] == {"hedgewars-data:Robot": "male", "klettres-data:it": "female"}
    assert manifest["per_pair_type"] == {"overlap-cross-gender": 2, "turns": 2}
    assert manifest["pair_types_left_out"] == ["overlap-same-gender"]
    for item in sorted(out.glob("voice-*")):
        mixture, target, voice, sound = (sf.read(str(item / f"{name}.wav"))[0]
                                         for name in ("mixture", "target", "interferer1", "interferer2"))
        assert np.allclose(mixture, target + voice + sound, atol=1e-6)
        assert 20 * np.log10(active_rms(sound) / active_rms(target + voice)) == pytest.approx(-6.0, abs=0.5)
