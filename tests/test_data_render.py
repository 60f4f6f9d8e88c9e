"""Rendering: note sequences per playing style and procedural stems entering the index with their split;
variety v2 (pieces in many styles, allowed soundfonts only, new folders, idempotent)."""

import json
from pathlib import Path

import numpy as np
import pytest

from samstream.model.training.common import write_json
from samstream.model.training.index import write_index
from samstream.model.training.render import (DRUM_STYLES, FLUID_GM, HELDOUT_SEED_OFFSET, INSTRUMENTS, INSTRUMENTS_V2,
                                             MUSESCORE_LITE, PRESET_RANGES, PRESET_STYLES, V2_HELDOUT_SEED_BASE,
                                             V2_SEED_BLOCKS, V2_TRAIN_SEED_BASE, RenderConfig, drum_pattern_v2, instrument_jobs_v2,
                                             note_events, piece_v2, procedural_jobs, procedural_jobs_v2, render,
                                             render_instrument_v2, render_procedural)


def test_note_events_stay_in_range_and_in_time():
    for cls, (_programs, low, high, style) in INSTRUMENTS.items():
        events = note_events(np.random.default_rng(0), style, low, high, 10.0)
        assert events, cls
        for onset, duration, note, velocity in events:
            assert -0.05 <= onset < 10.0 and duration > 0 and 1 <= velocity <= 127
            assert (35 <= note <= 81) if style == "drums" else (low <= note <= high)


def test_drum_patterns_have_kick_snare_and_hats():
    notes = {n for _o, _d, n, _v in note_events(np.random.default_rng(1), "drums", 35, 81, 8.0)}
    assert 36 in notes and notes & {38, 40} and notes & {42, 44, 46, 51}


def test_procedural_stems_are_marked_and_split_by_seed(tmp_path):
    config = RenderConfig(minutes=0.15, heldout_share=1.0)
    entries = []
    for job in procedural_jobs(tmp_path, config)[:2]:  # siren, train and held-out
        entries += render_procedural(job)
    write_json(tmp_path / "stems/rendered.json", entries)
    index = write_index(tmp_path)
    sirens = [e for e in index["entries"] if e["class"] == "siren"]
    assert {e["origin"] for e in sirens} == {"procedural"} and {e["split"] for e in sirens} == {"train", "heldout"}
    train_seeds = {e["source"] for e in sirens if e["split"] == "train"}
    assert not train_seeds & {e["source"] for e in sirens if e["split"] == "heldout"}
    assert sum(e["duration"] for e in sirens if e["split"] == "train") >= 9.0


# ------------------------------------------------------------------------------------ variety v2

def _styles(cls):
    spec = INSTRUMENTS_V2[cls]
    return list(spec.styles) + sorted({s for preset, s in PRESET_STYLES.items() if preset in spec.presets})


@pytest.mark.parametrize("cls", sorted(c for c in INSTRUMENTS_V2 if c != "drums"))
def test_v2_pieces_stay_in_range_with_valid_controls(cls):
    spec = INSTRUMENTS_V2[cls]
    for style in _styles(cls):
        for seed in range(3):
            bank_program = spec.presets[seed % len(spec.presets)]
            low, high = PRESET_RANGES.get(bank_program, (spec.low, spec.high))
            notes, controls = piece_v2(np.random.default_rng(seed), cls, style, low, high, 8.0)
            assert notes, (cls, style)
            for onset, duration, note, velocity in notes:
                assert -0.05 <= onset < 8.0 and duration > 0 and 1 <= velocity <= 127
                assert low - 1 <= note <= high + 14, (cls, style, note)  # chord tones may stack above a melody
            for when, kind, a, b in controls:
                assert when >= -0.05 and kind in ("cc", "bend")
                assert (0 <= a <= 127 and 0 <= b <= 127) if kind == "cc" else -8192 <= a <= 8191
            assert piece_v2(np.random.default_rng(seed), cls, style, low, high, 8.0) == (notes, controls)
            assert len(notes) < 3 or len({v for *_x, v in notes}) > 1  # dynamics vary


def test_v2_drum_styles_play_kicks_snares_and_cymbals():
    for style in DRUM_STYLES:
        notes = {n for _o, _d, n, _v in drum_pattern_v2(np.random.default_rng(0), style, 8.0, brushes=False)[0]}
        assert notes <= set(range(35, 82)) and notes & {36} and notes & {37, 38, 40}, style
        assert notes & {42, 44, 46, 49, 51, 53, 57}, style


def test_v2_instrument_jobs_train_on_allowed_soundfonts_only(tmp_path):
    pytest.importorskip("fluidsynth")
    if not (FLUID_GM.exists() and MUSESCORE_LITE.exists()):
        pytest.skip("soundfonts not installed")
    jobs = instrument_jobs_v2(tmp_path, RenderConfig(minutes=4.0))
    assert {j["cls"] for j in jobs} == set(INSTRUMENTS_V2)
    for job in jobs:
        held = job["package"] == "musescore-general-soundfont-small"
        assert (job["split"] == "heldout") == held and ("MuseScore" in job["soundfont"]) == held
        assert "Black_Pearl" not in job["soundfont"] and "instruments_v2" in job["folder"]


def test_v2_instrument_render_writes_new_stems_once(tmp_path):
    pytest.importorskip("fluidsynth")
    if not FLUID_GM.exists():
        pytest.skip("FluidR3_GM not installed")
    job = {"kind": "instrument_v2", "cache_dir": str(tmp_path), "cls": "guitar", "soundfont": str(FLUID_GM),
           "package": "fluid-soundfont-gm", "split": "train", "seconds": 1.0, "drum_kit_bank0": False, "seed": 3,
           "folder": str(tmp_path / "stems/_rendered/instruments_v2/fluid-soundfont-gm/guitar")}
    first = render_instrument_v2(job)
    assert len(first) == 1 and first[0]["class"] == "guitar" and first[0]["origin"] == "rendered"
    assert "(v2)" in first[0]["source"] and first[0]["duration"] > 8.0
    stem = tmp_path / first[0]["path"]
    mtime = stem.stat().st_mtime_ns
    assert render_instrument_v2(job) == first and stem.stat().st_mtime_ns == mtime  # not rendered again


def test_v2_procedural_seed_ranges_are_apart():
    jobs = procedural_jobs_v2(Path("/cache"), RenderConfig(minutes=30))
    train = {j["seed_base"] for j in jobs if j["split"] == "train"}
    held = {j["seed_base"] for j in jobs if j["split"] == "heldout"}
    assert min(train) >= V2_TRAIN_SEED_BASE and max(train) + 100_000 <= V2_HELDOUT_SEED_BASE <= min(held)
    assert len(set(V2_SEED_BLOCKS.values())) == len(V2_SEED_BLOCKS) and max(V2_SEED_BLOCKS.values()) < 20
    assert V2_TRAIN_SEED_BASE > 7 * 100_000 + HELDOUT_SEED_OFFSET  # beyond every v1 seed
    assert all("procedural_v2" in j["folder"] for j in jobs)


def test_v2_render_adds_to_the_index_idempotently_and_keeps_v1(tmp_path):
    v1_entries = render_procedural(procedural_jobs(tmp_path, RenderConfig(minutes=0.05))[0])  # siren, train
    write_json(tmp_path / "stems/rendered.json", v1_entries)
    v2 = RenderConfig(minutes=0.08, heldout_share=1.0, tts=False, instruments=False, workers=1, variety="v2")
    added = render(tmp_path, v2)
    manifest = (tmp_path / "stems/rendered.json").read_text()
    index = write_index(tmp_path)
    assert json.loads(manifest)[: len(v1_entries)] == v1_entries  # v1 stems and entries untouched
    assert {e["class"] for e in added} == {"siren", "engine", "bell", "phone ringing", "water", "piano", "guitar"}
    assert {e["split"] for e in added} == {"train", "heldout"} and {e["package"] for e in added} == {"procedural-v2"}
    assert all(e["path"].startswith("stems/_rendered/procedural_v2/") for e in added)
    mtimes = {e["path"]: (tmp_path / e["path"]).stat().st_mtime_ns for e in added}
    assert render(tmp_path, v2) == added  # again: the same entries, nothing rendered twice
    assert (tmp_path / "stems/rendered.json").read_text() == manifest
    assert all((tmp_path / p).stat().st_mtime_ns == m for p, m in mtimes.items())
    assert write_index(tmp_path) == index
