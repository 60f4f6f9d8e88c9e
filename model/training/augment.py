"""Augmentations for mixture sources: speed (resampling), random EQ biquads, room reverb, active RMS;
and, off unless a config asks for them (`AugmentConfig.heavy()`): level rides, distortion/clipping,
a recording device's band-limiting (phone line, laptop microphone, headset, low sample rate) and a
background noise floor.

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
    # Heavier options; their defaults keep the behaviour (and the random draws) of the recipe above.
    eq_max_sections: int = 3  # EQ biquads per track: 1..this
    level_ride_rate: float = 0.0  # share of tracks whose level drifts (a source moving, a hand on a fader)
    level_ride_db: float = 6.0  # +- this much, changing about once a second
    clip_rate: float = 0.0  # share of tracks distorted (soft or hard clipping, an overdriven recorder)
    clip_drive_db: tuple[float, float] = (3.0, 18.0)
    device_rate: float = 0.0  # share of mixtures heard through a device (phone line, laptop mic, headset ...)
    noise_rate: float = 0.0  # share of mixtures with a background noise floor (hiss, rumble, hum)
    noise_snr_db: tuple[float, float] = (10.0, 40.0)  # target (or reference) active RMS over the noise's

    @classmethod
    def heavy(cls, **overrides) -> "AugmentConfig":
        """Wider EQ, level and speed (+-10 %), more and longer reverb, distortion, band-limited devices
        and noise floors: recordings from phones and laptops in real rooms. For new runs only: the
        default config is what runs in progress use."""
        values = dict(speed_rate=0.6, speed_range=0.10, eq_rate=0.8, eq_max_db=15.0, eq_max_sections=5,
                      reverb_rate=0.6, rt60_range=(0.1, 0.8), level_ride_rate=0.3, clip_rate=0.15, device_rate=0.3,
                      noise_rate=0.4)
        values.update(overrides)
        return cls(**values)


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


def random_eq(wav: np.ndarray, rng: np.random.Generator, max_db: float, max_sections: int = 3) -> np.ndarray:
    """One to max_sections random biquads: peaks, shelves, a gentle high- or low-pass."""
    sections = []
    for _ in range(int(rng.integers(1, max_sections + 1))):
        kind = str(rng.choice(["peak", "peak", "lowshelf", "highshelf", "highpass", "lowpass"]))
        if kind == "highpass":
            sections.append(_biquad(kind, rng.uniform(40, 400), 0.707, 0.0))
        elif kind == "lowpass":
            sections.append(_biquad(kind, rng.uniform(2500, 7500), 0.707, 0.0))
        else:
            freq = float(np.exp(rng.uniform(np.log(80), np.log(6000))))
            sections.append(_biquad(kind, freq, rng.uniform(0.5, 2.0), rng.uniform(-max_db, max_db)))
    return signal.sosfilt(np.stack(sections), wav).astype(np.float32)


def level_ride(wav: np.ndarray, rng: np.random.Generator, max_db: float) -> np.ndarray:
    """A slowly drifting gain (+-max_db, about one change a second): the source moves or is faded."""
    n = len(wav)
    points = max(2, int(n / SAMPLE_RATE) + 2)
    curve_db = np.interp(np.arange(n), np.linspace(0, n, points), rng.uniform(-max_db, max_db, points))
    return (wav * 10 ** (curve_db / 20)).astype(np.float32)


def distort(wav: np.ndarray, rng: np.random.Generator, drive_db: tuple[float, float]) -> np.ndarray:
    """Soft (tanh), hard or asymmetric clipping driven drive_db into the clip; keeps the peak level."""
    peak = float(np.abs(wav).max())
    if peak <= 0:
        return wav
    x = wav / peak * 10 ** (rng.uniform(*drive_db) / 20)
    kind = rng.integers(3)
    if kind == 0:
        y = np.tanh(x)
    elif kind == 1:
        y = np.clip(x, -1.0, 1.0)
    else:  # asymmetric, like an overdriven preamp: even harmonics too
        y = np.tanh(x + 0.3 * x ** 2 / (1 + np.abs(x)))
        y -= float(np.mean(y))
    return (y / (np.abs(y).max() + 1e-12) * peak).astype(np.float32)


DEVICES = ("phone line", "wideband call", "laptop mic", "headset", "low sample rate")


def device_filter(rng: np.random.Generator, device: str | None = None) -> np.ndarray:
    """Second-order sections of a recording/transmission chain: a narrowband phone line (300-3400 Hz),
    a wideband call (100-7000 Hz), a laptop microphone (no bass, uneven response), a headset (a
    presence peak), or audio that passed through a low sample rate (a steep low-pass at 4-6 kHz)."""
    device = device or str(rng.choice(DEVICES))
    fs = SAMPLE_RATE
    if device == "phone line":
        sos = [signal.butter(4, [rng.uniform(250, 350), rng.uniform(3200, 3500)], "bandpass", fs=fs, output="sos")]
    elif device == "wideband call":
        sos = [signal.butter(3, [rng.uniform(80, 150), rng.uniform(6500, 7200)], "bandpass", fs=fs, output="sos")]
    elif device == "laptop mic":
        sos = [signal.butter(2, rng.uniform(150, 400), "highpass", fs=fs, output="sos"),
               signal.butter(4, rng.uniform(5500, 7500), "lowpass", fs=fs, output="sos")]
        sos += [_biquad("peak", float(np.exp(rng.uniform(np.log(800), np.log(6000)))), rng.uniform(1, 4),
                        rng.uniform(-10, 8))[None] for _ in range(int(rng.integers(2, 5)))]
    elif device == "headset":
        sos = [signal.butter(2, rng.uniform(150, 300), "highpass", fs=fs, output="sos"),
               _biquad("peak", rng.uniform(2000, 4500), rng.uniform(1, 3), rng.uniform(4, 10))[None],
               signal.butter(2, rng.uniform(6000, 7500), "lowpass", fs=fs, output="sos")]
    elif device == "low sample rate":
        sos = [signal.ellip(6, 0.5, 60, rng.uniform(3800, 6000), "lowpass", fs=fs, output="sos")]
    else:
        raise ValueError(f"unknown device {device!r}")
    return np.concatenate(sos)


NOISE_FLOORS = ("white", "pink", "brown", "hum", "fan")


def background_noise(rng: np.random.Generator, n: int, kind: str | None = None) -> tuple[np.ndarray, str]:
    """A stationary noise floor: hiss (white, pink), rumble (brown), mains hum with harmonics (50/60 Hz),
    or a fan (low-passed noise with a blade tone). Returns (noise of unit peak, kind)."""
    kind = kind or str(rng.choice(NOISE_FLOORS))
    white = rng.standard_normal(n)
    if kind == "white":
        noise = white
    elif kind == "pink":  # -3 dB/octave (Paul Kellet's filter)
        noise = signal.lfilter([0.049922035, -0.095993537, 0.050612699, -0.004408786],
                               [1, -2.494956002, 2.017265875, -0.522189400], white)
    elif kind == "brown":
        noise = signal.lfilter([1.0], [1, -0.995], white)
        noise = signal.sosfilt(signal.butter(1, 20, "highpass", fs=SAMPLE_RATE, output="sos"), noise)
    elif kind == "hum":
        t = np.arange(n) / SAMPLE_RATE
        mains = float(rng.choice([50.0, 60.0]))
        noise = sum(rng.uniform(0.1, 1.0) / k * np.sin(2 * np.pi * mains * k * t + rng.uniform(0, 6.3)) for k in range(1, 8))
        noise = noise + 0.05 * white
    elif kind == "fan":
        t = np.arange(n) / SAMPLE_RATE
        noise = signal.sosfilt(signal.butter(2, rng.uniform(300, 1500), "lowpass", fs=SAMPLE_RATE, output="sos"), white)
        noise = noise / (np.abs(noise).max() + 1e-12) + 0.2 * np.sin(2 * np.pi * rng.uniform(80, 300) * t)
    else:
        raise ValueError(f"unknown noise floor {kind!r}")
    return (noise / (np.abs(noise).max() + 1e-12)).astype(np.float32), kind


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
