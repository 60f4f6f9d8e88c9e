"""Procedural sound generators (DATA.md): sirens, bells, phone rings, engines, applause, bubbles, alarms.

Each generator takes a numpy Generator and a duration and returns 16 kHz float32 mono peaking near
0.5. They stand in where real recordings are scarce; the mixer weights real recordings above them.
"""

from __future__ import annotations

import numpy as np
from scipy import signal

from samstream.model.training.common import SAMPLE_RATE as SR


def _normalize(wav: np.ndarray, peak: float = 0.5) -> np.ndarray:
    m = float(np.abs(wav).max())
    return (wav * (peak / m)).astype(np.float32) if m > 0 else wav.astype(np.float32)


def _fade(wav: np.ndarray, seconds: float = 0.02) -> np.ndarray:
    n = min(int(seconds * SR), len(wav) // 2)
    if n > 0:
        ramp = np.linspace(0.0, 1.0, n, dtype=np.float32)
        wav[:n] *= ramp
        wav[-n:] *= ramp[::-1]
    return wav


def _harmonic_tone(freq: np.ndarray, n_harmonics: int, rolloff: float) -> np.ndarray:
    """Sum of harmonics of a time-varying frequency, dropping those above Nyquist."""
    phase = 2 * np.pi * np.cumsum(freq) / SR
    out = np.zeros_like(freq)
    for k in range(1, n_harmonics + 1):
        out += np.where(k * freq < SR / 2 - 200, np.sin(k * phase) / k ** rolloff, 0.0)
    return out


def _bandpass(x: np.ndarray, lo: float, hi: float, order: int = 2) -> np.ndarray:
    sos = signal.butter(order, [lo, min(hi, SR / 2 - 100)], btype="bandpass", fs=SR, output="sos")
    return signal.sosfilt(sos, x)


def _lowpass(x: np.ndarray, cutoff: float, order: int = 2) -> np.ndarray:
    return signal.sosfilt(signal.butter(order, cutoff, btype="lowpass", fs=SR, output="sos"), x)


def siren(rng: np.random.Generator, duration: float) -> np.ndarray:
    """Wail (slow sweep), yelp (fast sweep) or hi-lo (two alternating tones), rich in harmonics."""
    t = np.arange(int(duration * SR)) / SR
    lo, hi = rng.uniform(500, 900), rng.uniform(1100, 1700)
    kind = rng.choice(["wail", "yelp", "hilo"])
    if kind == "hilo":
        period = rng.uniform(0.8, 1.4)
        freq = np.where((t % period) < period / 2, lo, hi)
        freq = _lowpass(freq, 30.0, order=1)  # the switch glides, it does not click
    else:
        period = rng.uniform(2.5, 6.0) if kind == "wail" else rng.uniform(0.15, 0.4)
        sweep = 0.5 - 0.5 * np.cos(2 * np.pi * t / period + rng.uniform(0, 2 * np.pi))
        freq = lo + (hi - lo) * sweep
    wav = _harmonic_tone(freq, n_harmonics=int(rng.integers(3, 9)), rolloff=rng.uniform(0.8, 1.6))
    if rng.random() < 0.5:  # a passing vehicle: level rises and falls, pitch bends (Doppler)
        centre = rng.uniform(0.3, 0.7) * duration
        wav *= 1.0 / (1.0 + ((t - centre) / rng.uniform(1.0, 3.0)) ** 2)
    return _normalize(_fade(wav))


def bell(rng: np.random.Generator, duration: float) -> np.ndarray:
    """Inharmonic partials with exponential decays, struck one to six times."""
    n = int(duration * SR)
    ratios = np.array([0.5, 1.0, 1.19, 1.5, 2.0, 2.51, 2.66, 3.01, 4.1, 5.4]) * rng.uniform(0.98, 1.02, 10)
    f0 = rng.uniform(180, 1400)
    ratios = ratios[ratios * f0 < SR / 2 - 500]
    decay = rng.uniform(0.6, 4.0)
    strike = np.zeros(n)
    period = rng.uniform(0.5, 2.5)
    for onset in np.arange(rng.uniform(0, 0.3), duration - 0.2, period)[: int(rng.integers(1, 7))]:
        t = np.arange(n - int(onset * SR)) / SR
        tone = sum(rng.uniform(0.2, 1.0) * np.exp(-t * r ** 0.7 / decay) * np.sin(2 * np.pi * r * f0 * t + rng.uniform(0, 6.3))
                   for r in ratios)
        strike[int(onset * SR):] += rng.uniform(0.6, 1.0) * tone
    return _normalize(_fade(strike, 0.005))


def phone_ring(rng: np.random.Generator, duration: float) -> np.ndarray:
    """Dual-tone cadences (US 440+480 Hz, UK 400+450 Hz double ring) or an electronic trill."""
    t = np.arange(int(duration * SR)) / SR
    kind = rng.choice(["us", "uk", "trill"])
    if kind == "us":
        tone = np.sin(2 * np.pi * 440 * t) + np.sin(2 * np.pi * 480 * t)
        gate = (t % 6.0) < 2.0
    elif kind == "uk":
        tone = np.sin(2 * np.pi * 400 * t) + np.sin(2 * np.pi * 450 * t)
        phase = t % 3.0
        gate = (phase < 0.4) | ((phase > 0.6) & (phase < 1.0))
    else:
        f1, f2 = rng.uniform(700, 1500), rng.uniform(1500, 2600)
        trill = (t * rng.uniform(12, 25)) % 1.0 < 0.5
        tone = np.sign(np.sin(2 * np.pi * np.where(trill, f1, f2) * t)) * 0.5
        cycle = rng.uniform(2.0, 4.0)
        gate = (t % cycle) < rng.uniform(0.8, 1.5)
    offset = rng.uniform(0, 2.0)
    gate = np.roll(gate, int(offset * SR))
    env = _lowpass(gate.astype(float), 200.0, order=1)
    return _normalize(_fade(tone * env))


def engine(rng: np.random.Generator, duration: float) -> np.ndarray:
    """Firing pulses at 20-80 Hz through a low resonance, plus low-passed noise; rpm drifts or ramps."""
    n = int(duration * SR)
    t = np.arange(n) / SR
    f_start, f_end = rng.uniform(20, 80, size=2)
    rate = f_start + (f_end - f_start) * t / duration + rng.uniform(0, 3) * np.sin(2 * np.pi * rng.uniform(0.1, 0.5) * t)
    phase = np.cumsum(rate) / SR
    pulses = np.diff(np.floor(phase), prepend=0.0) * rng.uniform(0.6, 1.0, n)
    resonance = signal.butter(2, [rng.uniform(60, 120), rng.uniform(300, 900)], btype="bandpass", fs=SR, output="sos")
    body = signal.sosfilt(resonance, pulses)
    noise = _lowpass(rng.standard_normal(n), rng.uniform(300, 1500)) * rng.uniform(0.02, 0.1)
    wav = body / (np.abs(body).max() + 1e-9) + noise / (np.abs(noise).max() + 1e-9) * rng.uniform(0.1, 0.5)
    if rng.random() < 0.4:  # drive-by
        centre = rng.uniform(0.3, 0.7) * duration
        wav *= 1.0 / (1.0 + ((t - centre) / rng.uniform(0.7, 2.0)) ** 2)
    return _normalize(_fade(wav, 0.1))


def applause(rng: np.random.Generator, duration: float) -> np.ndarray:
    """Many hand claps at Poisson times: short band-passed noise bursts, crowd swelling and fading."""
    n = int(duration * SR)
    wav = np.zeros(n)
    rate = rng.uniform(15, 150)  # claps per second: a few people to a hall
    onsets = np.sort(rng.uniform(0, duration, int(rate * duration)))
    clap_len = int(0.03 * SR)
    for onset in onsets:
        start = int(onset * SR)
        if start + clap_len >= n:
            continue
        burst = rng.standard_normal(clap_len) * np.exp(-np.arange(clap_len) / (rng.uniform(0.003, 0.012) * SR))
        wav[start:start + clap_len] += rng.uniform(0.3, 1.0) * burst
    wav = _bandpass(wav, rng.uniform(400, 900), rng.uniform(2500, 6000))
    t = np.arange(n) / SR
    rise, fall = rng.uniform(0.2, 1.5), rng.uniform(0.5, 2.5)
    env = np.minimum(1.0, t / rise) * np.minimum(1.0, (duration - t) / fall).clip(0, 1)
    return _normalize(wav * env)


def bubbles(rng: np.random.Generator, duration: float) -> np.ndarray:
    """Damped sinusoids whose pitch rises as each bubble forms (Minnaert resonance)."""
    n = int(duration * SR)
    wav = np.zeros(n)
    count = int(rng.uniform(3, 25) * duration)
    for onset in rng.uniform(0, duration - 0.1, count):
        f0 = rng.uniform(300, 2500)
        length = int(rng.uniform(0.03, 0.1) * SR)
        t = np.arange(length) / SR
        freq = f0 * (1 + rng.uniform(2, 12) * t)
        tone = np.sin(2 * np.pi * np.cumsum(freq) / SR) * np.exp(-t / rng.uniform(0.005, 0.03))
        start = int(onset * SR)
        wav[start:start + length] += rng.uniform(0.2, 1.0) * tone[: n - start]
    return _normalize(wav)


def alarm(rng: np.random.Generator, duration: float) -> np.ndarray:
    """Electronic beeping: square or sine pulses at 1.5-4 kHz in a repeating pattern."""
    t = np.arange(int(duration * SR)) / SR
    freq = rng.uniform(1500, 4000)
    tone = np.sin(2 * np.pi * freq * t)
    if rng.random() < 0.5:
        tone = np.sign(tone) * 0.6
    period, on = rng.uniform(0.2, 1.2), rng.uniform(0.3, 0.7)
    gate = ((t % period) / period) < on
    return _normalize(_fade(tone * _lowpass(gate.astype(float), 300.0, order=1)))


GENERATORS = {
    "siren": siren,
    "bell": bell,
    "phone ringing": phone_ring,
    "engine": engine,
    "applause": applause,
    "bubbles": bubbles,
    "alarm": alarm,
}
