"""The train / held-out split: whole sources go to evaluation, so evaluation never hears training audio.

For each class, real recordings are held out in whole units, coarsest first: whole packages (when the
class has several), then whole speakers, then whole folders (a game level, a language), then whole
files, until about `fraction` of the class's minutes is held out (never more than `max_fraction` of its
minutes or of its files, and never the class's last training unit). The order within a level comes from a fixed hash, so
the split is stable across machines and re-runs. Rendered and procedural stems carry the split
their renderer gave them (held-out voices, soundfont, seeds).

A file has one split for all classes; `verify_split` checks the invariants and training code calls it.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from dataclasses import dataclass

from samstream.model.classes import family
from samstream.model.training.common import DataError

TRAIN, HELDOUT = "train", "heldout"
LEVELS = ("package", "speaker", "folder", "file")


@dataclass(frozen=True)
class SplitConfig:
    fraction: float = 0.2  # aim: this share of each class's real minutes held out
    max_fraction: float = 0.4  # a unit that would push past this share (minutes or files) stays in training
    salt: str = "samstream-split-v1"


def unit_key(entry: dict, level: str) -> str | None:
    """The entry's unit at one level; None when the level does not apply (no known speaker)."""
    if level == "package":
        return entry["package"]
    if level == "speaker":
        return entry.get("speaker")
    if level == "folder":
        return f"{entry['package']}:{entry['source'].rsplit('/', 1)[0]}"
    return entry["id"]


def _order(salt: str, cls: str, key: str) -> str:
    return hashlib.sha1(f"{salt}|{cls}|{key}".encode()).hexdigest()


def assign_splits(entries: list[dict], config: SplitConfig = SplitConfig()) -> None:
    """Set entry["split"] and entry["split_unit"] on every real entry (in place)."""
    real = [e for e in entries if e["origin"] == "real"]
    for e in real:
        e["split"], e["split_unit"] = TRAIN, None
    by_class: dict[str, list[dict]] = defaultdict(list)
    for e in real:
        by_class[e["class"]].append(e)
    held_ids: set[str] = set()
    for cls in sorted(by_class):
        _split_class(cls, by_class[cls], config, held_ids)
    # One split per file: a file held out for its class is held out everywhere (duplicates included).
    for e in real:
        if e["id"] in held_ids:
            e["split"] = HELDOUT


def _split_class(cls: str, items: list[dict], config: SplitConfig, held_ids: set[str]) -> None:
    total = sum(e["duration"] for e in items)
    target, ceiling = config.fraction * total, config.max_fraction * total
    file_ceiling = config.max_fraction * len(items)  # one-shot classes: many short files count too
    held, held_files = 0.0, 0
    for level in LEVELS:
        remaining = [e for e in items if e["id"] not in held_ids]
        units: dict[str, list[dict]] = defaultdict(list)
        for e in remaining:
            key = unit_key(e, level)
            if key is not None:
                units[key].append(e)
        if len(units) < 2:
            continue
        train_units = len(units)
        for key in sorted(units, key=lambda k: _order(config.salt, cls, k)):
            if held >= target:
                return
            minutes = sum(e["duration"] for e in units[key])
            if held + minutes > ceiling or held_files + len(units[key]) > file_ceiling or train_units <= 1:
                continue
            for e in units[key]:
                held_ids.add(e["id"])
                e["split_unit"] = f"{level}:{key}"
            held += minutes
            held_files += len(units[key])
            train_units -= 1


def verify_split(entries: list[dict]) -> None:
    """Raise DataError when a held-out source leaks into training.

    Checked: every entry has a split; no audio content (md5) is in both splits; for every held-out
    unit, no training entry of the same class shares it; no held-out speaker speaks in training
    within the speech family (speaker-level units only).
    """
    problems: list[str] = []
    train_md5 = {e["md5"] for e in entries if e.get("split") == TRAIN and e.get("md5")}
    for e in entries:
        if e.get("split") not in (TRAIN, HELDOUT):
            problems.append(f"{e['id']}: no split")
        elif e["split"] == HELDOUT and e.get("md5") in train_md5:
            problems.append(f"{e['id']}: same audio (md5) is also in training")
    train_units: dict[tuple[str, str], set[str]] = defaultdict(set)
    train_speakers: set[str] = set()
    for e in entries:
        if e.get("split") != TRAIN:
            continue
        for level in LEVELS:
            key = unit_key(e, level)
            if key is not None:
                train_units[(e["class"], level)].add(key)
        if e.get("speaker") and family(e["class"]) == "speech":
            train_speakers.add(e["speaker"])
    for e in entries:
        unit = e.get("split_unit")
        if e.get("split") != HELDOUT or not unit:
            continue
        level, key = unit.split(":", 1)
        if key in train_units[(e["class"], level)]:
            problems.append(f"{e['id']}: held-out {level} {key} also trains class {e['class']}")
        if level == "speaker" and key in train_speakers:
            problems.append(f"{e['id']}: held-out speaker {key} also speaks in training")
    if problems:
        shown = "; ".join(problems[:5])
        raise DataError(f"the train/held-out split leaks ({len(problems)} problems): {shown}. "
                        "Rebuild the index with `samstream data index`.")
