"""`samstream data index`: scan the unpacked packages, decode every catalogued file to a 16 kHz mono
FLAC stem, and write DIR/index.json (real stems + rendered stems, each with its split).

Entry fields: id, path (stem, relative to the cache), class, package, source (path inside the
package, or the render recipe), speaker, gender, duration (s), md5 (of the original file), origin
("real" | "rendered" | "procedural"), split ("train" | "heldout"), split_unit, duplicates.
"""

from __future__ import annotations

import hashlib
import os
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from tqdm import tqdm

from samstream.model.training.catalogue import match, rules_by_package
from samstream.model.training.common import DataError, SAMPLE_RATE, read_json, write_flac, write_json
from samstream.model.training.packages import RESERVED_NAME_PARTS
from samstream.model.training.split import SplitConfig, assign_splits, verify_split

INDEX_NAME = "index.json"
REAL_NAME = "stems/real.json"
RENDERED_NAME = "stems/rendered.json"
MIN_DURATION_S = 0.05
SILENT_PEAK = 1e-4


def _md5(path: Path) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def scan(cache_dir: Path) -> list[dict]:
    """Catalogued files of every unpacked package, without duplicates (same bytes = same file)."""
    unpacked = cache_dir / "unpacked"
    if not unpacked.is_dir():
        raise DataError(f"{unpacked} does not exist: run `samstream data fetch --cache {cache_dir}` first")
    found: list[dict] = []
    for package, rules in sorted(rules_by_package().items()):
        root = unpacked / package
        if not root.is_dir():
            continue  # fetch reports missing packages; the index uses what is there
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames.sort()
            for name in sorted(filenames):
                relpath = os.path.relpath(os.path.join(dirpath, name), root).replace(os.sep, "/")
                if any(part in relpath.lower() for part in RESERVED_NAME_PARTS):
                    continue
                rule = match(package, relpath, rules)
                if rule is None:
                    continue
                found.append({
                    "id": f"{package}:{relpath}", "path": f"stems/{package}/{relpath}.flac",
                    "class": rule.cls, "package": package, "source": relpath,
                    "speaker": rule.speaker_of(relpath), "gender": rule.gender,
                    "md5": _md5(root / relpath), "origin": "real", "duplicates": [],
                })
    first_by_md5: dict[str, dict] = {}
    unique = []
    for entry in found:
        first = first_by_md5.get(entry["md5"])
        if first is None:
            first_by_md5[entry["md5"]] = entry
            unique.append(entry)
        else:
            first["duplicates"].append(entry["id"])
    return unique


def _decode_one(job: tuple[str, str]) -> tuple[str, float, float, str | None]:
    """Worker: decode (or re-read) one stem; returns (stem path, duration, peak, error)."""
    from samstream.model.training.common import read_audio
    from samstream.model.training.decode import decode_to_16k

    src, dst = Path(job[0]), Path(job[1])
    try:
        if dst.exists():
            wav, _ = read_audio(dst)
        else:
            wav = decode_to_16k(src)
            if len(wav):
                write_flac(dst, wav)
        peak = float(np.abs(wav).max()) if len(wav) else 0.0
        return job[1], len(wav) / SAMPLE_RATE, peak, None
    except Exception as error:  # one bad file must not stop the index; it is reported and left out
        return job[1], 0.0, 0.0, str(error)


def decode_stems(cache_dir: Path, entries: list[dict], workers: int = 2) -> tuple[list[dict], list[str]]:
    """Decode every entry's stem (at most `workers` processes); drop empty, silent or broken files."""
    jobs = [(str(cache_dir / "unpacked" / e["package"] / e["source"]), str(cache_dir / e["path"])) for e in entries]
    results = {}
    with ProcessPoolExecutor(max_workers=max(1, workers)) as pool:
        for stem, duration, peak, error in tqdm(pool.map(_decode_one, jobs, chunksize=16), total=len(jobs),
                                                desc="decode", unit="file", file=sys.stderr):
            results[stem] = (duration, peak, error)
    kept, dropped = [], []
    for e, (_src, stem) in zip(entries, jobs):
        duration, peak, error = results[stem]
        if error or duration < MIN_DURATION_S or peak < SILENT_PEAK:
            dropped.append(f"{e['id']}: {error or 'empty or silent'}")
            continue
        e["duration"] = round(duration, 4)
        kept.append(e)
    return kept, dropped


def write_index(cache_dir: Path, config: SplitConfig = SplitConfig()) -> dict:
    """Merge real and rendered stems, assign splits, verify them, write DIR/index.json."""
    real = read_json(cache_dir / REAL_NAME) if (cache_dir / REAL_NAME).exists() else []
    rendered = read_json(cache_dir / RENDERED_NAME) if (cache_dir / RENDERED_NAME).exists() else []
    if not real and not rendered:
        raise DataError(f"nothing indexed in {cache_dir}: run `samstream data index` (and `render`) first")
    entries = real + rendered
    assign_splits(entries, config)
    verify_split(entries)
    index = {"version": 1, "sample_rate": SAMPLE_RATE, "entries": entries}
    write_json(cache_dir / INDEX_NAME, index)
    return index


def build_index(cache_dir: Path, workers: int = 2) -> tuple[dict, list[str]]:
    entries = scan(cache_dir)
    if not entries:
        raise DataError(f"no catalogued audio under {cache_dir / 'unpacked'}: run `samstream data fetch` first")
    kept, dropped = decode_stems(cache_dir, entries, workers)
    write_json(cache_dir / REAL_NAME, kept)
    return write_index(cache_dir), dropped


def load_index(cache_dir: Path) -> dict:
    path = cache_dir / INDEX_NAME
    if not path.exists():
        raise DataError(f"{path} not found: run `samstream data fetch`, `index` and `render` first")
    index = read_json(path)
    verify_split(index["entries"])
    return index


def summarize(entries: list[dict]) -> dict[str, dict[str, dict[str, float]]]:
    """class -> split -> {"files", "minutes", "real_minutes"} for reports and docs."""
    table: dict[str, dict[str, dict[str, float]]] = {}
    for e in entries:
        cell = table.setdefault(e["class"], {}).setdefault(e["split"], {"files": 0, "minutes": 0.0, "real_minutes": 0.0})
        cell["files"] += 1
        cell["minutes"] += e["duration"] / 60
        if e["origin"] == "real":
            cell["real_minutes"] += e["duration"] / 60
    for per_split in table.values():
        for cell in per_split.values():
            cell["minutes"] = round(cell["minutes"], 2)
            cell["real_minutes"] = round(cell["real_minutes"], 2)
    return dict(sorted(table.items()))


def summarize_sources(entries: list[dict]) -> dict[str, dict[str, dict[str, dict[str, float]]]]:
    """class -> split -> package -> {"files", "minutes"}: which sources train and which are held out."""
    table: dict = {}
    for e in entries:
        cell = table.setdefault(e["class"], {}).setdefault(e["split"], {}).setdefault(e["package"], {"files": 0, "minutes": 0.0})
        cell["files"] += 1
        cell["minutes"] = round(cell["minutes"] + e["duration"] / 60, 3)
    return dict(sorted(table.items()))
