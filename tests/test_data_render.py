"""Rendering: note sequences per playing style and procedural stems entering the index with their split."""

import numpy as np

from samstream.model.training.common import write_json
from samstream.model.training.index import write_index
from samstream.model.training.render import INSTRUMENTS, RenderConfig, note_events, procedural_jobs, render_procedural


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
