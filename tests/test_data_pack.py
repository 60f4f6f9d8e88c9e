"""pack: train-split sources only, the size budget, balanced classes, speakers kept; MixtureSource reads a
pack and its unpacked copy."""

import json

import numpy as np
import pytest
import soundfile as sf
import torch

from samstream.model.training.index import build_index, load_index
from samstream.model.training.pack import PackConfig, build_pack, folder_bytes, unpack
from samstream.model.training.split import verify_split
from samstream.model.training.toy_cache import make_toy_cache, write_toy_rir_bank
from samstream.model.training.train import MixtureSource

BUDGET_MB = 0.6  # 0.47 MiB of it are the prompt vectors and the RIR bank
SMALL_MB = 0.53


class FakeEncoder:
    """Stands in for MiniLM (12 s to load): any fixed vectors do for the pack's prompt-vector file."""

    def encode(self, texts):
        vectors = torch.randn(len(texts), 1, 384, generator=torch.Generator().manual_seed(0))
        return vectors, torch.ones(len(texts), 1, dtype=torch.bool)


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    cache = make_toy_cache(tmp_path_factory.mktemp("cache"))
    build_index(cache, workers=1)
    write_toy_rir_bank(cache)
    return cache


@pytest.fixture(scope="module")
def built(cache, tmp_path_factory):
    out = tmp_path_factory.mktemp("pack")
    index = build_pack(cache, out, PackConfig(max_mb=BUDGET_MB, clip_seconds=1.0), encoder=FakeEncoder(),
                       progress=False)
    return out, index["pack"]


@pytest.fixture(scope="module")
def pack(built):
    return built[0]


def test_pack_keeps_only_train_sources(cache, pack):
    source = load_index(cache)["entries"]
    train = {e["id"]: e for e in source if e["split"] == "train"}
    heldout_md5 = {e["md5"] for e in source if e["split"] == "heldout"}
    assert heldout_md5, "the toy cache should hold some sources out"
    entries = load_index(pack)["entries"]  # load_index verifies the split of the pack's own index too
    assert entries and all(e["split"] == "train" for e in entries)
    assert all(e["id"] in train for e in entries)
    assert not {e["md5"] for e in entries} & heldout_md5
    verify_split(source + entries)  # no pack entry shares audio or a held-out unit with a held-out source
    for e in entries:
        original = train[e["id"]]
        assert (e["class"], e["speaker"], e["package"], e["source"]) == (
            original["class"], original["speaker"], original["package"], original["source"])
        assert e["pack_offset"] + e["duration"] <= original["duration"] + 0.05


def test_pack_respects_the_budget_and_keeps_classes_balanced(cache, built, tmp_path):
    pack, summary = built
    size, files = folder_bytes(pack)
    index = json.loads((pack / "index.json").read_text())
    assert size <= BUDGET_MB * 2**20 and summary["bytes"] == size and summary["files"] == files
    assert size > 0.95 * BUDGET_MB * 2**20  # the budget is used, not wasted
    assert (pack / "prompt_vectors.safetensors").is_file()
    bank = next((pack / "rirs").glob("bank_*.npy"))
    assert np.load(bank).dtype == np.float16
    # a smaller budget: fewer clips, but still every class (the fair queue serves each class first)
    small = tmp_path / "small"
    build_pack(cache, small, PackConfig(max_mb=SMALL_MB, clip_seconds=1.0), encoder=FakeEncoder(), progress=False)
    small_index = json.loads((small / "index.json").read_text())
    assert folder_bytes(small)[0] <= SMALL_MB * 2**20
    assert small_index["pack"]["clips"] < index["pack"]["clips"]
    train_classes = {e["class"] for e in load_index(cache)["entries"] if e["split"] == "train"}
    assert set(small_index["pack"]["classes"]) == train_classes
    stem = next((pack / "stems").rglob("*.opus"))
    assert sf.info(str(stem)).subtype == "OPUS" and sf.info(str(stem)).samplerate == 16000


def test_speakers_survive_with_several_utterances(pack):
    entries = load_index(pack)["entries"]
    per_speaker = {}
    for e in entries:
        if e.get("speaker"):
            per_speaker.setdefault(e["speaker"], []).append(e)
    assert sum(len(v) >= 2 for v in per_speaker.values()) >= 2  # voice-pick pairs need two such speakers


def test_mixture_source_samples_from_the_pack_and_its_unpacked_copy(pack, tmp_path):
    unpacked = tmp_path / "unpacked"
    index = unpack(pack, unpacked, workers=1, progress=False)
    packed_entries = load_index(pack)["entries"]
    assert [e["id"] for e in index["entries"]] == [e["id"] for e in packed_entries]
    for e in index["entries"][:5]:
        info = sf.info(str(unpacked / e["path"]))
        assert info.subtype == "PCM_16" and info.frames == round(e["duration"] * 16000)
    assert np.load(next((unpacked / "rirs").glob("bank_*.npy"))).dtype == np.float32
    assert (unpacked / "prompt_vectors.json").is_file()
    for folder in (pack, unpacked):
        source = MixtureSource(folder, seconds=1.0)
        rng = np.random.default_rng(0)
        examples = [source.sample(rng) for _ in range(12)]
        assert all(len(ex.mixture) == 16000 and np.isfinite(ex.mixture).all() for ex in examples)
        assert any(ex.example is not None for ex in examples)  # enrollment clips from kept speakers
    unpack(pack, unpacked, workers=1, progress=False)  # idempotent: decoded stems are kept
