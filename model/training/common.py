"""Shared pieces of the data pipeline: the cache location, the sample rate, audio I/O, errors."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from samstream.model.errors import UserFacingError

SAMPLE_RATE = 16000


class DataError(UserFacingError):
    """The data cache is missing, incomplete or unusable; the message says which command fixes it."""


def default_cache_dir() -> Path:
    """`$SAMSTREAM_DATA`, else `~/.cache/samstream/data`."""
    env = os.environ.get("SAMSTREAM_DATA")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "samstream" / "data"


def read_json(path: Path):
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def write_json(path: Path, obj) -> None:
    """Write atomically so an interrupted run never leaves a half-written index behind."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=1, ensure_ascii=False)
    os.replace(tmp, path)


def write_flac(path: Path, wav: np.ndarray, sr: int = SAMPLE_RATE) -> None:
    import soundfile as sf

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".part")
    sf.write(tmp, np.clip(wav, -1.0, 1.0).astype(np.float32), sr, format="FLAC", subtype="PCM_16")
    os.replace(tmp, path)


def read_audio(path: Path) -> tuple[np.ndarray, int]:
    """Read a stem written by this pipeline (FLAC/WAV) as float32 mono."""
    import soundfile as sf

    wav, sr = sf.read(str(path), dtype="float32", always_2d=True)
    return wav.mean(axis=1), sr
