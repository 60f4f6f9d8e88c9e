"""index: scanning the unpacked layout, de-duplication, decoding to 16 kHz mono FLAC stems, index.json."""

import json

import numpy as np
import pytest
import soundfile as sf

from samstream.model.training.common import DataError
from samstream.model.training.index import build_index, load_index, scan
from samstream.model.training.toy_cache import make_toy_cache


@pytest.fixture(scope="module")
def indexed(tmp_path_factory):
    cache = make_toy_cache(tmp_path_factory.mktemp("cache"))
    index, dropped = build_index(cache, workers=1)
    return cache, index, dropped


def test_scan_labels_and_dedups(indexed):
    cache, index, dropped = indexed
    by_id = {e["id"]: e for e in index["entries"]}
    assert not dropped
    female = [e for e in index["entries"] if e["class"] == "woman speaking"]
    assert len(female) == 8 and {e["speaker"] for e in female} == {"fillets-ng-data-cs:m"}
    assert {e["gender"] for e in female} == {"female"}
    assert not [i for i in by_id if "-x-" in i]  # other fillets characters are not catalogued
    typing = sorted(e["source"].rsplit("/", 1)[1] for e in index["entries"] if e["class"] == "typing")
    assert typing == ["1e-0.wav", "1e-1.wav", "2a-0.wav"]  # scan codes >= 0x30 left out
    cheers = [e for e in index["entries"] if e["source"].endswith("cheer.wav")]
    assert len(cheers) == 1 and len(cheers[0]["duplicates"]) == 1  # byte-identical copy kept once
    assert by_id["gcompris-qt-data:rcc/instruments/gcompris/src/activities/instruments/resource/piano.ogg"]["class"] == "piano"
    laughs = [e for e in index["entries"] if e["class"] == "laughter"]
    assert len(laughs) == 4 and all(e["origin"] == "real" for e in index["entries"])


def test_stems_are_16k_mono_flac_with_true_durations(indexed):
    cache, index, _ = indexed
    music = next(e for e in index["entries"] if e["class"] == "music")
    info = sf.info(str(cache / music["path"]))
    assert (info.samplerate, info.channels, info.format) == (16000, 1, "FLAC")
    assert music["duration"] == pytest.approx(8.0, abs=0.01) == pytest.approx(info.frames / 16000, abs=1e-3)
    wav, _ = sf.read(str(cache / music["path"]))
    spectrum = np.abs(np.fft.rfft(wav))
    peak_hz = np.argmax(spectrum) * 16000 / len(wav)
    assert min(abs(peak_hz - f) for f in (220, 277, 330)) < 3  # the chord survived decoding and resampling


def test_index_file_round_trips_and_every_entry_has_a_split(indexed):
    cache, index, _ = indexed
    on_disk = json.loads((cache / "index.json").read_text())
    assert on_disk["sample_rate"] == 16000 and len(on_disk["entries"]) == len(index["entries"])
    assert {e["split"] for e in load_index(cache)["entries"]} == {"train", "heldout"}


def test_missing_cache_is_a_clear_error(tmp_path):
    with pytest.raises(DataError, match="data fetch"):
        scan(tmp_path)
    with pytest.raises(DataError, match="not found"):
        load_index(tmp_path)
