"""Mixtures: exact stems, target-to-interferer ratios in range, gender pairs, negatives, enrollment,
worker seeding, shards."""

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from samstream.model.training.augment import AugmentConfig, active_rms
from samstream.model.classes import REQUIRED_CLASSES, family, overlaps
from samstream.model.training.index import build_index
from samstream.model.training.mixtures import (MixtureConfig, MixtureDataset, MixtureGenerator, ShardDataset,
                                               write_shard)
from samstream.model.class_prompts import prompts_for
from samstream.model.training.common import DataError
from samstream.model.training.toy_cache import make_toy_cache, write_toy_rir_bank
from samstream.model.training.train import MixtureSource

# Small RIR bank so the reverb path runs in the tests without a long room computation.
SMALL_AUGMENT = AugmentConfig(reverb_rate=0.5, rir_bank_size=2, rir_sources=4, rir_max_seconds=0.3)


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    cache = make_toy_cache(tmp_path_factory.mktemp("cache"))
    build_index(cache, workers=1)
    return cache


@pytest.fixture(scope="module")
def generator(cache):
    return MixtureGenerator.from_cache(cache, "train", MixtureConfig(augment=SMALL_AUGMENT))


def test_stems_are_exact_and_levels_in_range(generator):
    rng = np.random.default_rng(0)
    checked = 0
    for _ in range(40):
        ex = generator.example(rng)
        assert ex.mixture.dtype == np.float32 and ex.mixture.shape == (96000,)
        assert np.array_equal(ex.mixture, ex.target + ex.residual)  # bit-exact
        assert np.allclose(np.sum(ex.interferers, axis=0), ex.residual, atol=1e-6)
        assert 0.05 < np.abs(ex.mixture).max() <= 0.9
        assert ex.prompt in prompts_for(ex.class_name).train
        if ex.is_negative or ex.class_name == "speaker":
            continue
        assert 1 <= len(ex.interferers) <= 3
        for cls in ex.interferer_classes:
            assert not overlaps(ex.class_name, cls) or {ex.class_name, cls} == {"man speaking", "woman speaking"}
        for tir, wav in zip(ex.tir_db, ex.interferers):
            measured = 20 * np.log10(active_rms(ex.target) / active_rms(wav))
            assert -5.0 <= tir <= 5.0 and measured == pytest.approx(tir, abs=0.01)
            checked += 1
    assert checked > 20


def test_gendered_targets_get_the_other_gender_half_the_time(cache):
    plain = MixtureGenerator.from_cache(cache, "train", MixtureConfig(augment=None))
    rng = np.random.default_rng(1)
    crossed = [("man speaking" in plain.example_for_class("woman speaking", rng).interferer_classes)
               for _ in range(60)]
    assert 0.3 < np.mean(crossed) < 0.7  # 0.5 expected; the bounds are three standard deviations


def test_negative_query_has_a_silent_target_and_an_absent_class(generator):
    ex = generator.negative(np.random.default_rng(2), "dog bark")
    assert ex.is_negative and not ex.target.any() and np.array_equal(ex.mixture, ex.residual)
    assert "dog bark" not in ex.interferer_classes and np.abs(ex.mixture).max() > 0.05


def test_enrollment_is_the_same_speaker_from_other_utterances(generator):
    rng = np.random.default_rng(3)
    by_id = {e["id"]: e for e in generator.pool.entries}
    for _ in range(5):
        ex = generator.example_for_class("man speaking", rng)
        assert ex.enrollment is not None and ex.enrollment.shape == (64000,) and np.abs(ex.enrollment).max() > 0.01
        assert ex.speaker and all(by_id[i]["speaker"] == ex.speaker for i in ex.target_sources)
    pair = generator.speaker_pair(rng)
    assert pair.class_name == "speaker" and pair.enrollment is not None
    other = {by_id[i]["speaker"] for i in pair.interferer_sources[0]}
    assert pair.speaker not in other and family(pair.interferer_classes[0]) == "speech"


def test_music_targets_are_music(generator):
    rng = np.random.default_rng(4)
    ex = generator.example_for_class("music", rng)
    by_id = {e["id"]: e for e in generator.pool.entries}
    assert all(family(by_id[i]["class"]) == "music" for i in ex.target_sources)
    assert not any(family(c) == "music" for c in ex.interferer_classes)


def test_dataset_seeds_workers_apart_and_reproducibly(cache):
    config = MixtureConfig(augment=None)
    loader = DataLoader(MixtureDataset(cache, config=config, seed=7, num_examples=4), batch_size=None, num_workers=2)
    first = [item["mixture"] for item in loader]
    assert len(first) == 4
    assert not any(torch.equal(first[i], first[j]) for i in range(4) for j in range(i + 1, 4))
    again = [item["mixture"] for item in DataLoader(MixtureDataset(cache, config=config, seed=7, num_examples=4),
                                                     batch_size=None, num_workers=2)]
    assert all(torch.equal(a, b) for a, b in zip(first, again))
    batch = next(iter(DataLoader(MixtureDataset(cache, config=config, num_examples=2), batch_size=2)))
    assert batch["mixture"].shape == (2, 96000) and batch["enrollment"].shape == (2, 64000)
    assert len(batch["prompt"]) == 2 and batch["tir_db"].shape == (2, 3)


def test_shard_round_trip(cache, tmp_path):
    path = write_shard(tmp_path / "shard.npz", cache, n=3, config=MixtureConfig(augment=None), seed=5)
    shard = ShardDataset(path)
    assert len(shard) == 3 and shard.split == "train"
    item = shard[1]
    assert torch.equal(item["mixture"], item["target"] + item["residual"])
    assert isinstance(item["prompt"], str) and isinstance(item["has_enrollment"], bool)


def test_heavy_augmentation_keeps_the_stems_exact(cache):
    heavy = MixtureConfig.heavy(augment=AugmentConfig.heavy(rir_bank_size=2, rir_sources=4, rir_max_seconds=0.3,
                                                            rt60_range=(0.1, 0.3), noise_rate=0.7, device_rate=0.7,
                                                            clip_rate=0.5))
    generator = MixtureGenerator.from_cache(cache, "train", heavy)
    rng = np.random.default_rng(3)
    with_noise = 0
    for _ in range(20):
        ex = generator.example(rng)
        assert np.array_equal(ex.mixture, ex.target + ex.residual) and np.isfinite(ex.mixture).all()
        assert np.allclose(np.sum(ex.interferers, axis=0), ex.residual, atol=1e-5)
        assert len(ex.interferers) == len(ex.interferer_classes) == len(ex.tir_db)
        with_noise += "background noise" in ex.interferer_classes
        assert ex.interferer_classes.count("background noise") <= 1
    assert with_noise >= 6


def test_the_training_source_mixes_with_the_recipe_it_is_given(cache):
    for recipe in (AugmentConfig(), AugmentConfig.heavy()):
        write_toy_rir_bank(cache, recipe)
    standard, heavy = MixtureSource(cache, seconds=1.0), MixtureSource(cache, seconds=1.0, augment="heavy")
    assert standard.generator.config.augment == AugmentConfig()
    assert heavy.generator.config.augment == AugmentConfig.heavy()
    peaks = {}
    for name, source in (("standard", standard), ("heavy", heavy)):
        rng = np.random.default_rng(0)
        examples = [source.sample(rng) for _ in range(16)]
        assert all(np.isfinite(ex.mixture).all() and len(ex.mixture) == 16000 for ex in examples)
        peaks[name] = [20 * np.log10(np.abs(ex.mixture).max()) for ex in examples]
    # the heavy recipe also reaches quieter mixtures (peaks from -35 dBFS; the standard one from -20)
    assert min(peaks["standard"]) > -20.01 and min(peaks["heavy"]) < -22
    with pytest.raises(DataError, match="unknown augmentation 'loud'"):
        MixtureSource(cache, seconds=1.0, augment="loud")
    focused = MixtureSource(cache, seconds=1.0, augment="heavy", mixture={"extra_class_weight": 0.2})
    assert focused.generator.config.augment == AugmentConfig.heavy()
    # each class's draw weight against the standard recipe's: extras fell to 0.2 / 0.5 of a required class's change
    change = dict(zip(focused.generator.classes, focused.generator.class_weights / standard.generator.class_weights))
    extras = [c for c in change if c not in REQUIRED_CLASSES]
    required = [c for c in change if c in REQUIRED_CLASSES]
    assert extras and required
    assert {round(change[e] / change[r], 6) for e in extras for r in required} == {0.4}
    for bad in ({"extra_weight": 0.2}, {"augment": None}):
        with pytest.raises(DataError, match="unknown mixture setting"):
            MixtureSource(cache, seconds=1.0, mixture=bad)


def test_classes_with_few_real_recordings_can_draw_them_less_often(tmp_path):
    def entry(i, origin, package):
        return {"id": f"{package}:{i}", "path": f"{i}.flac", "class": "siren", "package": package, "source": f"s/{i}",
                "speaker": None, "duration": 8.0, "origin": origin, "split": "train"}
    entries = [entry(0, "real", "tuxpaint")] + [entry(i, "procedural", "procedural") for i in range(1, 5)]
    assert MixtureGenerator(entries, tmp_path, "train", MixtureConfig()).real_weight("siren") == 0.75
    scaled = MixtureGenerator(entries, tmp_path, "train", MixtureConfig(real_files_full=16))
    assert scaled.pool.real_files("siren") == 1 and scaled.real_weight("siren") == pytest.approx(0.75 / 4)
    rng = np.random.default_rng(0)
    real = np.mean([scaled.pool.draw("siren", rng, scaled.real_weight("siren"))["origin"] == "real" for _ in range(400)])
    assert 0.1 < real < 0.3
