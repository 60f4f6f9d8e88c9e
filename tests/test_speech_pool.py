"""The training pools with the speech expert's estimate (model/training/speech_pool.py): speech-class examples for
the speech refiner and every class's for the general separator, heard as the default model hears them
(level-normalised, then the speech expert), written shard by shard while a training reads them."""

import dataclasses
import json

import numpy as np
import pytest

from samstream.model.level import TARGET_DBFS
from samstream.model.speech_expert import SpeechExpertStream
from samstream.model.training.index import build_index
from samstream.model.training.common import DataError
from samstream.model.training.speech_pool import (SPEECH_TARGETS, SpeechPoolConfig, SpeechPoolSource,
                                                  normalized_example, removes_speech, shard_paths, write_pool)
from samstream.model.training.toy_cache import make_toy_cache, write_toy_rir_bank

CONFIG = SpeechPoolConfig(seconds=2.0, shard_examples=3)


@pytest.fixture(scope="module")
def pool(tmp_path_factory):
    cache = make_toy_cache(tmp_path_factory.mktemp("cache"))
    write_toy_rir_bank(cache)
    build_index(cache, workers=1)
    out = tmp_path_factory.mktemp("pool")
    assert write_pool(cache, out, shards=1, config=CONFIG, progress=False) == 1
    return cache, out


def test_examples_are_speech_targets_with_the_expert_estimate_of_the_normalised_mixture(pool):
    _, out = pool
    with np.load(shard_paths(out)[0]) as shard:
        mixture, target, expert = (shard[k].astype(np.float32) for k in ("mixture", "target", "expert"))
        meta = json.loads(bytes(shard["meta"]).decode())
    assert mixture.shape == target.shape == expert.shape == (3, 32000)
    assert set(meta["classes"]) <= set(SPEECH_TARGETS)
    # the first example went through a fresh expert: a fresh stream of the stored mixture gives its estimate
    stream = SpeechExpertStream(16000)
    fresh = stream.process(np.concatenate([mixture[0], np.zeros(stream.delay_samples, np.float32)]))
    stream.close()
    assert np.abs(fresh[stream.delay_samples :] - expert[0]).max() < 2e-3  # float16 on disk
    for m, t in zip(mixture, target):
        level = 10 * np.log10(np.mean(m.astype(np.float64) ** 2))
        assert TARGET_DBFS - 8 < level < TARGET_DBFS + 8  # near the normaliser's working level
        if np.any(t):
            residual = m - t
            assert np.sum(residual**2) > 1e-6 * np.sum(m**2)  # something to remove


def test_the_level_normaliser_scales_mixture_and_target_alike():
    rng = np.random.default_rng(0)
    target = (0.01 * rng.standard_normal(16000)).astype(np.float32)
    mixture = target + (0.01 * rng.standard_normal(16000)).astype(np.float32)
    normed_mixture, normed_target = normalized_example(mixture, target)
    ratio = normed_mixture[8000:] / mixture[8000:]
    assert np.allclose(normed_target[8000:], target[8000:] * ratio, rtol=1e-4, atol=1e-7)


def test_a_training_reads_the_shards_written_so_far_and_sees_new_ones(pool):
    cache, out = pool
    source = SpeechPoolSource(out, rescan_s=0.0)
    example = source.sample(np.random.default_rng(0))
    assert example.expert is not None and example.expert.shape == example.mixture.shape
    assert example.prompt is not None
    write_pool(cache, out, shards=1, config=dataclasses.replace(CONFIG, shard_examples=2), progress=False)
    source.sample(np.random.default_rng(1))
    assert len(source.shards) == 2
    names = [p.name for p in shard_paths(out)]
    assert names == ["shard00000.npz", "shard00001.npz"]  # numbered on: a resumed writer repeats no seed


@pytest.fixture(scope="module")
def general_pool(pool, tmp_path_factory):
    cache, _ = pool
    out = tmp_path_factory.mktemp("general_pool")
    write_pool(cache, out, shards=1, config=dataclasses.replace(CONFIG, targets="general", shard_examples=8),
               progress=False)
    return out


def test_a_general_pool_draws_every_kind_of_class(general_pool):
    with np.load(shard_paths(general_pool)[0]) as shard:
        meta = json.loads(bytes(shard["meta"]).decode())
    assert meta["targets"] == "general" and len(meta["classes"]) == 8
    assert "speaker" not in meta["classes"]  # voice-pick pairs need enrollment clips: not in a pool
    assert set(meta["classes"]) - set(SPEECH_TARGETS)  # not only speech classes


def test_the_general_separator_hears_the_mixture_less_speech_for_the_classes_the_default_model_does_so(general_pool):
    with np.load(shard_paths(general_pool)[0]) as shard:
        meta = json.loads(bytes(shard["meta"]).decode())
        mixture, expert = shard["mixture"].astype(np.float32), shard["expert"].astype(np.float32)
    source = SpeechPoolSource(general_pool, targets="general", rescan_s=1e9)
    removed = 0
    for seed in range(40):
        example = source.sample(np.random.default_rng(seed))
        draws = np.random.default_rng(seed)
        draws.integers(1)  # `sample` draws the shard (one here), then the example
        i = int(draws.integers(len(meta["classes"])))
        heard = mixture[i] - expert[i] if removes_speech(meta["classes"][i]) else mixture[i]
        gain = float(np.dot(example.mixture, heard) / np.dot(heard, heard))  # a random gain around the level
        assert np.abs(example.mixture - gain * heard).max() < 1e-5 and 0.7 < gain < 1.42
        assert example.expert is None and example.prompt == meta["prompts"][i]
        removed += removes_speech(meta["classes"][i]) and np.any(expert[i])
    assert removed  # the test saw the speech taken out
    assert removes_speech("dog bark") and not removes_speech("speech") and not removes_speech("singing")


def test_a_pool_of_the_other_kind_is_refused(pool, general_pool):
    _, speech_pool = pool
    with pytest.raises(DataError, match="holds speech examples.*--targets general"):
        SpeechPoolSource(speech_pool, targets="general")
    with pytest.raises(DataError, match="holds general examples"):
        SpeechPoolSource(general_pool)
