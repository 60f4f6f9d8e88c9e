"""build-eval writes the DESIGN.md layout from held-out sources only, plus the voice-pair subset."""

import json
from dataclasses import replace

import numpy as np
import pytest
import soundfile as sf

from samstream.model.training.augment import AugmentConfig
from samstream.model.training.build_eval import EVAL_CONFIG, build_eval
from samstream.model.training.common import DataError
from samstream.model.training.index import build_index
from samstream.model.class_prompts import prompts_for
from samstream.model.training.toy_cache import make_toy_cache

# The evaluation recipe with a two-room reverb bank (the default bank takes ~30 s to compute).
CONFIG = replace(EVAL_CONFIG, augment=AugmentConfig(speed_rate=0.0, eq_rate=0.3, reverb_rate=0.5, rir_bank_size=2,
                                                    rir_max_seconds=0.3))


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    cache = make_toy_cache(tmp_path_factory.mktemp("cache"))
    index, _ = build_index(cache, workers=1)
    out = tmp_path_factory.mktemp("eval")
    manifest = build_eval(cache, out, n_per_class=2, seed=3, voice_pairs=2, force=True, config=CONFIG)
    return cache, index, out, manifest


def test_layout_and_meta(built):
    cache, index, out, manifest = built
    items = sorted(p for p in out.iterdir() if p.is_dir())
    assert len(items) == manifest["items"] == sum(manifest["per_class"].values())
    heldout = {e["id"] for e in index["entries"] if e["split"] == "heldout"}
    for item in items:
        meta = json.loads((item / "meta.json").read_text())
        assert meta["prompts"][0] == prompts_for(meta["target_class"]).train[0]
        assert meta["split"] == "heldout" and set(meta["target_sources"]) <= heldout
        for ids in meta["interferer_sources"]:
            assert set(ids) <= heldout
        mixture, sr = sf.read(str(item / "mixture.wav"), dtype="float32")
        target, _ = sf.read(str(item / "target.wav"), dtype="float32")
        interferers = [sf.read(str(p), dtype="float32")[0] for p in sorted(item.glob("interferer*.wav"))]
        assert sr == 16000 and mixture.shape == target.shape == (96000,)
        assert len(interferers) == len(meta["interferer_classes"]) >= 1
        assert np.allclose(mixture, target + np.sum(interferers, axis=0), atol=1e-6)


def test_voice_pairs_have_an_enrollment_of_an_unseen_speaker(built):
    cache, index, out, manifest = built
    trained = {e["speaker"] for e in index["entries"] if e["split"] == "train"}
    pairs = sorted(out.glob("voice-pair-*"))
    assert len(pairs) == manifest["per_class"]["speaker"] == 2
    for item in pairs:
        meta = json.loads((item / "meta.json").read_text())
        assert meta["target_class"] == "speaker" and meta["enrollment"] == "enrollment.wav"
        assert meta["target_speaker"] != meta["interferer_speaker"]
        assert meta["target_speaker"] not in trained and meta["interferer_speaker"] not in trained
        assert sf.info(str(item / "enrollment.wav")).samplerate == 16000


def test_in_distribution_uses_training_sources_and_refuses_to_overwrite(built):
    cache, index, out, _ = built
    with pytest.raises(DataError, match="not empty"):
        build_eval(cache, out, n_per_class=1, voice_pairs=0, config=CONFIG)
    train = {e["id"] for e in index["entries"] if e["split"] == "train"}
    other = out.parent / "indist"
    manifest = build_eval(cache, other, n_per_class=1, voice_pairs=0, in_distribution=True, config=CONFIG)
    assert manifest["split"] == "train"
    for item in other.iterdir():
        if item.is_dir():
            assert set(json.loads((item / "meta.json").read_text())["target_sources"]) <= train
