"""The split holds out whole sources and training never sees them (checked, and enforced by the mixer)."""

import numpy as np
import pytest

from samstream.model.training.common import DataError
from samstream.model.training.index import build_index
from samstream.model.training.mixtures import MixtureConfig, MixtureGenerator
from samstream.model.training.split import HELDOUT, TRAIN, SplitConfig, assign_splits, verify_split
from samstream.model.training.toy_cache import make_toy_cache


def _entry(cls, package, name, minutes=1.0, speaker=None, folder="f"):
    return {"id": f"{package}:{folder}/{name}", "class": cls, "package": package, "source": f"{folder}/{name}",
            "speaker": speaker, "duration": minutes * 60, "md5": f"{package}{folder}{name}", "origin": "real"}


def _entries():
    out = []
    for p, n in (("a", 6), ("b", 4), ("c", 3), ("d", 2), ("e", 1)):  # five packages of dog barks
        out += [_entry("dog bark", p, f"bark{i}.ogg") for i in range(n)]
    for spk in ("s1", "s2", "s3", "s4", "s5"):  # one package, five speakers
        out += [_entry("speech", "voices", f"{spk}-{i}.ogg", speaker=f"voices:{spk}", folder=spk) for i in range(4)]
    for lvl in range(10):  # one package, one speaker, ten folders
        out += [_entry("woman speaking", "fish", f"{lvl}-{i}.ogg", speaker="fish:m", folder=f"level{lvl}") for i in range(3)]
    out.append(_entry("siren", "stamps", "firetruck.ogg"))  # a single file: nothing to hold out
    return out


def _held(entries, cls):
    return [e for e in entries if e["class"] == cls and e["split"] == HELDOUT]


def test_whole_packages_then_speakers_then_folders():
    entries = _entries()
    assign_splits(entries, SplitConfig(fraction=0.2, max_fraction=0.4))
    verify_split(entries)
    for cls, level in (("dog bark", "package"), ("speech", "speaker"), ("woman speaking", "folder")):
        held = _held(entries, cls)
        units = {e["split_unit"] for e in held}
        assert held and {u.split(":")[0] for u in units} == {level}
        share = len(held) / len([e for e in entries if e["class"] == cls])
        assert 0.1 <= share <= 0.4, (cls, share)
        for unit in units:  # whole units: every member of a held-out unit is held out
            key = unit.split(":", 1)[1]
            members = [e for e in entries if e["class"] == cls and
                       {"package": e["package"], "speaker": e["speaker"],
                        "folder": f"{e['package']}:{e['source'].rsplit('/', 1)[0]}"}[level] == key]
            assert all(e["split"] == HELDOUT for e in members)
    assert [e["split"] for e in entries if e["class"] == "siren"] == [TRAIN]


def test_split_is_stable():
    a, b = _entries(), _entries()[::-1]
    assign_splits(a)
    assign_splits(b)
    assert {e["id"]: e["split"] for e in a} == {e["id"]: e["split"] for e in b}


def test_verify_split_catches_leaks():
    entries = _entries()
    assign_splits(entries)
    held = _held(entries, "dog bark")[0]
    leaked = dict(held, id="leak", split=TRAIN, split_unit=None, md5="other")  # same package, in training
    with pytest.raises(DataError, match="also trains"):
        verify_split(entries + [leaked])
    copy = dict(_held(entries, "speech")[0])
    train_twin = dict(copy, id="twin", split=TRAIN, split_unit=None, speaker="voices:other",
                      package="elsewhere")
    with pytest.raises(DataError, match="md5"):
        verify_split(entries + [train_twin])


def test_training_mixtures_never_touch_heldout_sources(tmp_path):
    cache = make_toy_cache(tmp_path)
    index, _ = build_index(cache, workers=1)
    heldout = {e["id"] for e in index["entries"] if e["split"] == HELDOUT}
    assert heldout
    gen = MixtureGenerator(index["entries"], cache, "train", MixtureConfig(augment=None, speaker_pair_rate=0.2))
    rng = np.random.default_rng(0)
    seen = set()
    for _ in range(60):
        ex = gen.example(rng)
        seen.update(ex.target_sources)
        for ids in ex.interferer_sources:
            seen.update(ids)
    assert seen and not (seen & heldout)
    evaluation = MixtureGenerator(index["entries"], cache, "heldout", MixtureConfig(augment=None))
    ex = evaluation.example_for_class(evaluation.classes[0], rng)
    assert set(ex.target_sources) <= heldout
