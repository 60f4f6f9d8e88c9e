"""Decode any audio file of the pool (ogg, oga, opus, mp3, wav, flac, au, aiff) to 16 kHz mono float32."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from samstream.model.training.common import SAMPLE_RATE


def _read_soundfile(path: Path) -> tuple[np.ndarray, int]:
    import soundfile as sf

    wav, sr = sf.read(str(path), dtype="float32", always_2d=True)
    return wav.mean(axis=1), sr


def _read_av(path: Path) -> tuple[np.ndarray, int]:
    """PyAV for what libsndfile cannot read (odd mp3 headers, some wav codecs)."""
    import av

    chunks, sr = [], None
    with av.open(str(path)) as container:
        stream = container.streams.audio[0]
        resampler = av.AudioResampler(format="flt", layout="mono")
        for frame in container.decode(stream):
            sr = frame.sample_rate
            for out in resampler.resample(frame):
                chunks.append(out.to_ndarray().reshape(-1))
        for out in resampler.resample(None):
            chunks.append(out.to_ndarray().reshape(-1))
    if sr is None:
        raise ValueError(f"{path}: no audio frames")
    return np.concatenate(chunks).astype(np.float32), sr


def decode_to_16k(path: Path) -> np.ndarray:
    """Mono float32 at 16 kHz; raises ValueError when neither libsndfile nor PyAV can read the file."""
    import soxr

    try:
        wav, sr = _read_soundfile(path)
    except Exception:  # libsndfile rejects some valid files; PyAV (FFmpeg) reads nearly everything
        try:
            wav, sr = _read_av(path)
        except Exception as error:
            raise ValueError(f"cannot decode {path}: {error}") from error
    wav = np.nan_to_num(wav)
    if sr != SAMPLE_RATE and len(wav):
        wav = soxr.resample(wav, sr, SAMPLE_RATE, quality="HQ").astype(np.float32)
    return wav
