"""Augmentations for mixture sources: speed (resampling), random EQ biquads, room reverb, active RMS.

Reverb uses shoebox-room impulse responses from pyroomacoustics (image-source method). Computing
a room takes 0.1-0.8 s, so a bank of rooms is computed once and kept in the data cache; every
mixture picks one room and gives each of its sources a different position in it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import signal

from samstream.model.training.common import SAMPLE_RATE


@dataclass(frozen=True)
class AugmentConfig:
    speed_rate: float = 0.5  # share of sources played faster/slower
    speed_range: float = 0.05  # +-5 %: speed and pitch change together (resampling)
    eq_rate: float = 0.5
    eq_max_db: float = 8.0
    reverb_rate: float = 0.3  # share of mixtures placed in a room
    rir_bank_size: int = 64  # rooms in the bank
    rir_sources: int = 4  # source positions per room (max sources per mixture)
    rir_max_seconds: float = 1.0
    rt60_range: tuple[float, float] = (0.1, 0.5)  # Sabine target; the image method overshoots ~2x


def active_rms(wav: np.ndarray, frame: int = 320, floor_db: float = -40.0) -> float:
    """RMS over the frames within floor_db of the loudest frame (silence does not dilute the level)."""
    n = len(wav) // frame
    if n == 0:
        return float(np.sqrt(np.mean(wav ** 2))) if len(wav) else 0.0
    frames = np.sqrt(np.mean(wav[: n * frame].reshape(n, frame).astype(np.float64) ** 2, axis=1))
    peak = frames.max()
    if peak <= 0:
        return 0.0
    active = frames[frames >= peak * 10 ** (floor_db / 20)]
    return float(np.sqrt(np.mean(active ** 2)))


def change_speed(wav: np.ndarray, factor: float) -> np.ndarray:
    """Play `factor` times faster (pitch rises with it), by resampling."""
    import soxr

    if abs(factor - 1.0) < 1e-4 or len(wav) < 2:
        return wav
    return soxr.resample(wav, SAMPLE_RATE * factor, SAMPLE_RATE, quality="HQ").astype(np.float32)


def _biquad(kind: str, freq: float, q: float, gain_db: float) -> np.ndarray:
    """RBJ audio-EQ-cookbook biquad as one second-order section."""
    a = 10 ** (gain_db / 40)
    w0 = 2 * np.pi * freq / SAMPLE_RATE
    alpha = np.sin(w0) / (2 * q)
    cos = np.cos(w0)
    if kind == "peak":
        b = [1 + alpha * a, -2 * cos, 1 - alpha * a]
        den = [1 + alpha / a, -2 * cos, 1 - alpha / a]
    elif kind == "lowshelf":
        s = 2 * np.sqrt(a) * alpha
        b = [a * ((a + 1) - (a - 1) * cos + s), 2 * a * ((a - 1) - (a + 1) * cos), a * ((a + 1) - (a - 1) * cos - s)]
        den = [(a + 1) + (a - 1) * cos + s, -2 * ((a - 1) + (a + 1) * cos), (a + 1) + (a - 1) * cos - s]
    elif kind == "highshelf":
        s = 2 * np.sqrt(a) * alpha
        b = [a * ((a + 1) + (a - 1) * cos + s), -2 * a * ((a - 1) + (a + 1) * cos), a * ((a + 1) + (a - 1) * cos - s)]
        den = [(a + 1) - (a - 1) * cos + s, 2 * ((a - 1) - (a + 1) * cos), (a + 1) - (a - 1) * cos - s]
    elif kind == "highpass":
        b = [(1 + cos) / 2, -(1 + cos), (1 + cos) / 2]
        den = [1 + alpha, -2 * cos, 1 - alpha]
    else:  # lowpass
        b = [(1 - cos) / 2, 1 - cos, (1 - cos) / 2]
        den = [1 + alpha, -2 * cos, 1 - alpha]
    return np.array([*(np.array(b) / den[0]), 1.0, den[1] / den[0], den[2] / den[0]])


def random_eq(wav: np.ndarray, rng: np.random.Generator, max_db: float) -> np.ndarray:
    """One to three random biquads: peaks, shelves, a gentle high- or low-pass."""
    sections = []
    for _ in range(int(rng.integers(1, 4))):
        kind = str(rng.choice(["peak", "peak", "lowshelf", "highshelf", "highpass", "lowpass"]))
        if kind == "highpass":
            sections.append(_biquad(kind, rng.uniform(40, 400), 0.707, 0.0))
        elif kind == "lowpass":
            sections.append(_biquad(kind, rng.uniform(2500, 7500), 0.707, 0.0))
        else:
            freq = float(np.exp(rng.uniform(np.log(80), np.log(6000))))
            sections.append(_biquad(kind, freq, rng.uniform(0.5, 2.0), rng.uniform(-max_db, max_db)))
    return signal.sosfilt(np.stack(sections), wav).astype(np.float32)


def reverberate(wav: np.ndarray, rir: np.ndarray) -> np.ndarray:
    """Convolve and keep the original length (the tail past the window is cut, as in a live stream)."""
    return signal.fftconvolve(wav, rir)[: len(wav)].astype(np.float32)


def compute_rir_bank(config: AugmentConfig, seed: int = 1234) -> np.ndarray:
    """[rooms, sources, samples] impulse responses, direct path at the start, peak-normalised."""
    import pyroomacoustics as pra

    rng = np.random.default_rng(seed)
    length = int(config.rir_max_seconds * SAMPLE_RATE)
    bank = np.zeros((config.rir_bank_size, config.rir_sources, length), dtype=np.float32)
    for r in range(config.rir_bank_size):
        while True:  # a short RT60 is impossible in a large room: draw again
            dims = rng.uniform([3.0, 3.0, 2.4], [12.0, 9.0, 4.5])
            try:
                absorption, max_order = pra.inverse_sabine(rng.uniform(*config.rt60_range), dims)
                break
            except ValueError:
                continue
        room = pra.ShoeBox(dims, fs=SAMPLE_RATE, materials=pra.Material(absorption), max_order=max_order)
        for _ in range(config.rir_sources):
            room.add_source(dims * rng.uniform(0.1, 0.9, 3))
        room.add_microphone(dims * rng.uniform(0.2, 0.8, 3))
        room.compute_rir()
        for s in range(config.rir_sources):
            rir = np.asarray(room.rir[0][s], dtype=np.float32)
            rir = rir[max(0, int(np.argmax(np.abs(rir))) - 40):][:length]  # start at the direct path
            bank[r, s, : len(rir)] = rir / np.abs(rir).max()
    return bank


def load_rir_bank(cache_dir: Path | None, config: AugmentConfig) -> np.ndarray:
    """The bank from DIR/rirs/, computed and saved on first use (atomically, so workers may race)."""
    name = f"bank_{config.rir_bank_size}x{config.rir_sources}_{config.rir_max_seconds}s_{config.rt60_range[0]}-{config.rt60_range[1]}.npy"
    path = Path(cache_dir) / "rirs" / name if cache_dir else None
    if path is not None and path.exists():
        return np.load(path).astype(np.float32, copy=False)  # a training pack stores it as float16
    bank = compute_rir_bank(config)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp.npy")
        np.save(tmp, bank)
        os.replace(tmp, path)
    return bank
