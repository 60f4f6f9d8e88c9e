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


# ================================================================================================ variety v2
# Realistic variety (`samstream data render --variety v2`): engines with load and gear changes, sirens of
# several countries, bells with real partial structures, the ring signals of several countries and mobile
# ringtones, and water (rain, streams, drips, pouring, splashes). Each class has named variants; a variant
# is a function (rng, duration) -> float32 peaking at 0.5, and `generate_v2` picks one and places the
# sound in a scene (a pass-by with Doppler shift, or a distance). The v1 generators above stay as they
# are: stems already rendered from them must stay reproducible.

def _time(duration: float) -> np.ndarray:
    return np.arange(int(duration * SR)) / SR


def _one_pole(x: np.ndarray, cutoff: float) -> np.ndarray:
    """A first-order low-pass: smooths control curves (gates, frequency switches, envelopes)."""
    a = float(np.exp(-2 * np.pi * cutoff / SR))
    return signal.lfilter([1 - a], [1, -a], x)


def _highpass(x: np.ndarray, cutoff: float, order: int = 2) -> np.ndarray:
    return signal.sosfilt(signal.butter(order, cutoff, btype="highpass", fs=SR, output="sos"), x)


def _resonate(x: np.ndarray, freq: float, q: float, gain: float) -> np.ndarray:
    """Add a resonance peak (a body, a horn, a pipe): x + gain * band-pass(x)."""
    if not 20 < freq < SR / 2 - 200:
        return x
    b, a = signal.iirpeak(freq, q, fs=SR)
    return x + gain * signal.lfilter(b, a, x)


def _wander(rng: np.random.Generator, n: int, rate_hz: float) -> np.ndarray:
    """A slow random curve of unit standard deviation that changes about rate_hz times a second."""
    points = max(2, int(n / SR * rate_hz) + 2)
    curve = np.interp(np.arange(n), np.linspace(0, n, points), rng.standard_normal(points))
    return _one_pole(curve, max(rate_hz, 0.05))


def _ramps(n: int, times, values) -> np.ndarray:
    """A piecewise-linear curve through (time s, value) breakpoints, held outside them."""
    return np.interp(np.arange(n) / SR, np.asarray(times, dtype=float), np.asarray(values, dtype=float))


def _additive(freq: np.ndarray, amps: dict[int, float]) -> np.ndarray:
    """Harmonics {k: amplitude} of a time-varying fundamental; those above Nyquist are left out."""
    phase = 2 * np.pi * np.cumsum(freq) / SR
    out = np.zeros_like(freq)
    for k, a in amps.items():
        out += np.where(k * freq < SR / 2 - 300, a * np.sin(k * phase), 0.0)
    return out


def _modes(freqs, amps, decays, seconds: float, rng: np.random.Generator, split_hz=None,
           attack: float = 0.0005) -> np.ndarray:
    """One strike of a resonant body: exponentially decaying partials (pairs split by split_hz beat)."""
    t = np.arange(int(seconds * SR)) / SR
    out = np.zeros_like(t)
    splits = np.zeros(len(freqs)) if split_hz is None else np.asarray(split_hz, dtype=float)
    for f, a, d, s in zip(freqs, amps, decays, splits):
        if f >= SR / 2 - 300 or a <= 0:
            continue
        env = a * np.exp(-t / d)
        if s > 0:  # the two modes of a slightly asymmetric body beat against each other
            out += 0.5 * env * (np.sin(2 * np.pi * (f - s / 2) * t + rng.uniform(0, 6.3))
                                + np.sin(2 * np.pi * (f + s / 2) * t + rng.uniform(0, 6.3)))
        else:
            out += env * np.sin(2 * np.pi * f * t + rng.uniform(0, 6.3))
    if attack > 0:
        out *= np.minimum(1.0, t / attack)
    return out


def _strike_noise(rng: np.random.Generator, lo: float, hi: float, decay: float, seconds: float = 0.06) -> np.ndarray:
    """The impact itself: a short band-passed noise burst (clapper, hammer, mallet)."""
    t = np.arange(int(seconds * SR)) / SR
    return _bandpass(rng.standard_normal(len(t)) * np.exp(-t / decay), lo, hi)


def _place(kernel: np.ndarray, onsets, gains, n: int) -> np.ndarray:
    """Copies of kernel at onsets (s) with gains, in a track of n samples."""
    impulses = np.zeros(n)
    idx = (np.asarray(onsets, dtype=float) * SR).astype(int)
    keep = (idx >= 0) & (idx < n)
    np.add.at(impulses, idx[keep], np.asarray(gains, dtype=float)[keep] if np.ndim(gains) else gains)
    if not impulses.any():
        return impulses
    return signal.fftconvolve(impulses, kernel)[:n]


def _first(rng: np.random.Generator, duration: float, latest: float = 1.0) -> float:
    """When the first event of a clip happens: early enough that even a short clip hears it."""
    return rng.uniform(0.0, min(latest, 0.3 * duration))


def _every(rng: np.random.Generator, duration: float, period: float, latest: float = 0.5, tail: float = 0.1) -> np.ndarray:
    """Regular onsets from an early first one until `tail` s before the end (at least one)."""
    start = _first(rng, duration, latest)
    return np.arange(start, max(duration - tail, start + 1e-3), period)


def _soft_clip(x: np.ndarray, drive: float) -> np.ndarray:
    return np.tanh(drive * x / (np.abs(x).max() + 1e-12)) / np.tanh(drive)


def _finish(wav: np.ndarray, fade: float = 0.02) -> np.ndarray:
    return _normalize(_fade(np.asarray(wav, dtype=np.float64), fade))


# -------------------------------------------------------------------------------------------- scenes

SPEED_OF_SOUND = 343.0


def pass_by(wav: np.ndarray, rng: np.random.Generator, speed: float | None = None, closest: float | None = None,
            centre: float | None = None) -> np.ndarray:
    """A source driving past on a straight line: Doppler shift (the pitch falls as it passes), level
    falling with distance (1/r), and air absorption (more low-passed when far)."""
    n = len(wav)
    t = np.arange(n) / SR
    v = speed if speed is not None else rng.uniform(8, 30)
    d = closest if closest is not None else rng.uniform(3, 25)
    t0 = centre if centre is not None else rng.uniform(0.25, 0.75) * n / SR
    tau = t.copy()  # emission time of what is heard at t: t = tau + (r(tau) - d) / c
    for _ in range(6):
        tau = t - (np.hypot(d, v * (tau - t0)) - d) / SPEED_OF_SOUND
    r = np.hypot(d, v * (tau - t0))
    tau -= tau.min()
    heard = np.interp(tau * SR, np.arange(n), wav, left=0.0, right=0.0)
    near = np.clip(d / r, 0.0, 1.0) ** 0.5
    far = _lowpass(heard, rng.uniform(1200, 3000))
    return (d / r) * (near * heard + (1 - near) * far)


def at_distance(wav: np.ndarray, rng: np.random.Generator, metres: float | None = None) -> np.ndarray:
    """A stationary source some way off: high frequencies absorbed, sometimes an echo off a building."""
    m = metres if metres is not None else float(np.exp(rng.uniform(np.log(5), np.log(400))))
    cutoff = float(np.clip(7000 * (15 / m) ** 0.5, 700, 7500))
    out = _lowpass(wav, cutoff)
    if rng.random() < 0.4:
        delay = int(rng.uniform(0.04, 0.35) * SR)
        out[delay:] += rng.uniform(0.1, 0.4) * out[:-delay].copy()
    return out


# -------------------------------------------------------------------------------------------- sirens

# European two-tone ("nee-naw") sirens differ in interval and tempo: the German Martinshorn plays A4 and
# D5 (a fourth), the French "pin-pon" A4 and B4 (a whole tone), the Japanese ambulance about 960/770 Hz
# (a major third), others a minor third or a fifth. (low Hz range, high/low ratio, seconds per tone)
TWO_TONE_SIRENS = {
    "de": ((420.0, 460.0), 4 / 3, (0.55, 0.8)),
    "at": ((450.0, 480.0), 4 / 3, (0.5, 0.7)),
    "fr": ((420.0, 450.0), 9 / 8, (0.4, 0.6)),
    "it": ((480.0, 520.0), 5 / 4, (0.45, 0.7)),
    "jp": ((740.0, 800.0), 5 / 4, (0.55, 0.75)),
    "nl": ((500.0, 560.0), 6 / 5, (0.35, 0.6)),
    "uk": ((560.0, 700.0), 4 / 3, (0.45, 0.7)),
    "se": ((480.0, 560.0), 3 / 2, (0.4, 0.65)),
}


def _sweep(t: np.ndarray, period: float, lo: float, hi: float, rise: float, shape: float, offset: float) -> np.ndarray:
    """A repeating up-down sweep: `rise` is the share of the period spent rising."""
    u = (t / period + offset) % 1.0
    x = np.where(u < rise, u / rise, 1 - (u - rise) / (1 - rise))
    return lo + (hi - lo) * x ** shape


def _siren_voice(freq: np.ndarray, rng: np.random.Generator, timbre: str | None = None) -> np.ndarray:
    """The sound source: an electronic driver (square-ish, odd harmonics, horn speaker), a pneumatic horn
    (all harmonics), a mechanical rotor (harmonics and chopped air) or a near-sine."""
    timbre = timbre or str(rng.choice(["electronic", "electronic", "pneumatic", "mechanical", "sine"]))
    if timbre == "electronic":
        r = rng.uniform(1.0, 1.5)
        wav = _additive(freq, {k: k ** -r for k in range(1, 16, 2)})
        wav = _resonate(_highpass(wav, rng.uniform(250, 400)), rng.uniform(1500, 3200), rng.uniform(1.5, 3),
                        rng.uniform(0.3, 1.0))
    elif timbre == "pneumatic":
        r = rng.uniform(1.1, 1.7)
        wav = _additive(freq, {k: k ** -r for k in range(1, 13)})
        wav = _resonate(wav, rng.uniform(900, 2200), rng.uniform(1.5, 3), rng.uniform(0.3, 0.8))
    elif timbre == "mechanical":
        r = rng.uniform(0.9, 1.4)
        wav = _additive(freq, {k: k ** -r for k in range(1, 11)})
        phase = 2 * np.pi * np.cumsum(freq) / SR
        chopped = _bandpass(rng.standard_normal(len(freq)), 300, 5000) * (0.5 + 0.5 * np.sin(phase))
        wav = wav + rng.uniform(0.1, 0.4) * chopped / (np.abs(chopped).max() + 1e-9) * np.abs(wav).max()
    else:
        wav = _additive(freq, {1: 1.0, 2: rng.uniform(0, 0.15), 3: rng.uniform(0, 0.1)})
    return wav


def _siren_range(rng: np.random.Generator) -> tuple[float, float]:
    return rng.uniform(500, 800), rng.uniform(1250, 1750)


def siren_wail(rng: np.random.Generator, duration: float, timbre: str | None = None) -> np.ndarray:
    """US/UK wail: a slow rise and fall over 2.5-6 s between ~600 and ~1500 Hz."""
    t = _time(duration)
    lo, hi = _siren_range(rng)
    freq = _sweep(t, rng.uniform(2.5, 6.0), lo, hi, rng.uniform(0.35, 0.6), rng.uniform(0.6, 1.4), rng.uniform(0, 1))
    return _finish(_siren_voice(freq, rng, timbre))


def siren_yelp(rng: np.random.Generator, duration: float, timbre: str | None = None) -> np.ndarray:
    """Yelp (a sweep every 0.2-0.45 s) or phaser/priority (every 0.07-0.15 s)."""
    t = _time(duration)
    lo, hi = _siren_range(rng)
    period = rng.uniform(0.2, 0.45) if rng.random() < 0.7 else rng.uniform(0.07, 0.15)
    freq = _sweep(t, period, lo, hi, rng.uniform(0.5, 0.9), rng.uniform(0.7, 1.3), rng.uniform(0, 1))
    return _finish(_siren_voice(freq, rng, timbre))


def siren_hilo(rng: np.random.Generator, duration: float, timbre: str | None = None) -> np.ndarray:
    """Hi-lo: two tones alternating (US, Scandinavia, most European two-tone variants)."""
    t = _time(duration)
    if rng.random() < 0.75:
        (lo_min, lo_max), ratio, (s_min, s_max) = TWO_TONE_SIRENS[str(rng.choice(sorted(TWO_TONE_SIRENS)))]
        lo = rng.uniform(lo_min, lo_max)
        hi, each = lo * ratio * rng.uniform(0.99, 1.01), rng.uniform(s_min, s_max)
        timbre = timbre or str(rng.choice(["pneumatic", "pneumatic", "electronic", "sine"]))
    else:
        lo, hi = rng.uniform(550, 800), rng.uniform(900, 1300)
        each = rng.uniform(0.3, 0.8)
    gate = ((t / (2 * each) + rng.uniform(0, 1)) % 1.0) < 0.5
    freq = _one_pole(np.where(gate, hi, lo), rng.uniform(15, 60))  # pneumatic horns glide between tones
    return _finish(_siren_voice(freq, rng, timbre))


def siren_rumbler(rng: np.random.Generator, duration: float) -> np.ndarray:
    """A wail or yelp with a low-frequency "rumbler" two octaves below (felt more than heard)."""
    t = _time(duration)
    lo, hi = _siren_range(rng)
    period = rng.uniform(2.5, 5.0) if rng.random() < 0.5 else rng.uniform(0.2, 0.4)
    freq = _sweep(t, period, lo, hi, rng.uniform(0.4, 0.8), 1.0, rng.uniform(0, 1))
    main = _siren_voice(freq, rng, "electronic")
    low = _additive(freq / 4, {1: 1.0, 3: 0.2})
    return _finish(main / (np.abs(main).max() + 1e-9) + rng.uniform(0.5, 1.0) * low / (np.abs(low).max() + 1e-9))


def _spin(n: int, rng: np.random.Generator, top: float, up: float, down: float, on_share: float) -> np.ndarray:
    """A rotor's speed (0..top) under press/release: exponential spin-up (time constant up) and coast-down."""
    out, level, pos = np.zeros(n), rng.uniform(0, 0.8) * top, 0
    pressed = rng.random() < 0.7
    while pos < n:
        length = int(rng.uniform(1.5, 5.0) * SR * (on_share if pressed else 1 - on_share) * 2)
        seg = np.arange(min(length, n - pos)) / SR
        target, tau = (top, up) if pressed else (0.0, down)
        out[pos:pos + len(seg)] = target + (level - target) * np.exp(-seg / tau)
        level = out[pos + len(seg) - 1]
        pos += len(seg)
        pressed = not pressed
    return out


def siren_mechanical(rng: np.random.Generator, duration: float) -> np.ndarray:
    """A motor-driven rotor siren (fire engines, "Q" sirens): slow spin-up, long coast-down, harmonic-rich."""
    n = int(duration * SR)
    freq = 80 + _spin(n, rng, rng.uniform(900, 1500), rng.uniform(0.8, 2.0), rng.uniform(2.0, 5.0), rng.uniform(0.5, 0.8))
    return _finish(_siren_voice(freq, rng, "mechanical"))


def siren_air_raid(rng: np.random.Generator, duration: float) -> np.ndarray:
    """A civil-defence siren: two chopper rings a minor third or so apart, slowly rotating (level swells)."""
    t = _time(duration)
    top = rng.uniform(350, 600)
    rotor = 30 + _spin(len(t), rng, top, rng.uniform(2.0, 4.0), rng.uniform(4.0, 8.0), rng.uniform(0.6, 0.9))
    ratio = rng.choice([6 / 5, 5 / 4, 7 / 6])
    wav = _siren_voice(rotor, rng, "mechanical") + _siren_voice(rotor * ratio, rng, "mechanical")
    sweep = 1.0 - rng.uniform(0.3, 0.7) * (0.5 + 0.5 * np.cos(2 * np.pi * t / rng.uniform(6, 14) + rng.uniform(0, 6.3)))
    return _finish(wav * sweep)


def siren_switching(rng: np.random.Generator, duration: float) -> np.ndarray:
    """A driver switching modes at a junction: wail, yelp, phaser, hi-lo in turn (one continuous voice)."""
    t = _time(duration)
    lo, hi = _siren_range(rng)
    freq, pos = np.zeros(len(t)), 0
    while pos < len(t):
        mode = rng.choice(["wail", "yelp", "phaser", "hilo"])
        seg = t[pos:pos + int(rng.uniform(1.2, 4.0) * SR)] - t[pos]
        if mode == "wail":
            part = _sweep(seg, rng.uniform(2.5, 4.5), lo, hi, 0.5, 1.0, 0.0)
        elif mode == "yelp":
            part = _sweep(seg, rng.uniform(0.2, 0.4), lo, hi, 0.7, 1.0, 0.0)
        elif mode == "phaser":
            part = _sweep(seg, rng.uniform(0.07, 0.13), lo, hi, 0.6, 1.0, 0.0)
        else:
            part = np.where((seg % 1.0) < 0.5, hi * 0.85, lo * 1.1)
        freq[pos:pos + len(seg)] = part
        pos += len(seg)
    return _finish(_siren_voice(_one_pole(freq, 40.0), rng, str(rng.choice(["electronic", "sine"]))))


# ------------------------------------------------------------------------------------------- engines

def engine_sound(rng: np.random.Generator, rpm: np.ndarray, load: np.ndarray, cylinders: int = 4,
                 two_stroke: bool = False, uneven: float = 0.0, roughness: float = 0.08,
                 exhaust_m: float | None = None, muffler_hz: float | None = None, knock: float = 0.0,
                 turbo: float = 0.0, speed: np.ndarray | None = None, road: float = 0.0) -> np.ndarray:
    """An engine from its rpm and load curves (per sample): one pressure pulse per cylinder firing (a
    four-stroke fires every cylinder once per two revolutions, so the firing rate is rpm/60 * cylinders/2),
    harder and brighter pulses under load, through exhaust-pipe resonances (odd quarter-wave modes) and
    a muffler; plus mechanical noise, diesel knock, turbo whine and road/tyre noise from `speed` (m/s)."""
    n = len(rpm)
    f_rot = rpm / 60.0
    cycles = np.cumsum(f_rot / (1.0 if two_stroke else 2.0)) / SR  # engine cycles completed
    offsets = np.arange(cylinders) / cylinders + uneven * rng.uniform(-0.5, 0.5, cylinders) / cylinders
    cyl_gain = 1.0 + roughness * rng.standard_normal(cylinders)
    soft, hard = np.zeros(n), np.zeros(n)
    for k in range(cylinders):
        idx = np.nonzero(np.diff(np.floor(cycles - offsets[k])) > 0)[0] + 1
        amp = cyl_gain[k] * (1.0 + roughness * rng.standard_normal(len(idx)))
        soft[idx] += amp * (1.0 - load[idx]) * 0.6
        hard[idx] += amp * load[idx]
    kt = np.arange(int(0.03 * SR)) / SR
    tau_soft, tau_hard = rng.uniform(1.5e-3, 3e-3), rng.uniform(0.4e-3, 1.0e-3)
    k_soft = (kt / tau_soft) * np.exp(1 - kt / tau_soft)
    k_hard = ((kt / tau_hard) * np.exp(1 - kt / tau_hard)
              + rng.uniform(0.2, 0.5) * rng.standard_normal(len(kt)) * np.exp(-kt / 2e-3))
    pulses = signal.fftconvolve(soft, k_soft)[:n] + signal.fftconvolve(hard, k_hard)[:n]
    pulses = _highpass(pulses, 15.0)
    length = exhaust_m if exhaust_m is not None else rng.uniform(0.8, 3.0)
    c_hot = rng.uniform(400, 500)  # hot exhaust gas
    body = pulses.copy()
    for m in (1, 3, 5, 7):
        body = _resonate(body, m * c_hot / (4 * length), rng.uniform(2, 6), rng.uniform(0.5, 2.0) / m ** 0.5)
    body = _lowpass(body, muffler_hz if muffler_hz is not None else rng.uniform(300, 2500))
    body /= np.abs(body).max() + 1e-9
    envelope = _one_pole(np.abs(pulses), 200.0)
    envelope /= envelope.max() + 1e-9
    mech = _bandpass(rng.standard_normal(n), 800, 5000) * envelope * (rpm / max(float(rpm.max()), 1.0))
    out = body + rng.uniform(0.03, 0.12) * mech / (np.abs(mech).max() + 1e-9)
    if knock > 0:  # diesel combustion knock: a sharp click on every firing
        clicks = signal.fftconvolve(soft + hard, _strike_noise(rng, 1500, 5000, 0.8e-3, 0.01))[:n]
        out += knock * 0.5 * clicks / (np.abs(clicks).max() + 1e-9)
    if turbo > 0:
        spool = _one_pole(load * rpm, 1.0)
        f_turbo = 1500 + 5000 * spool / (float(spool.max()) + 1e-9)
        out += turbo * 0.05 * (spool / (float(spool.max()) + 1e-9)) * np.sin(2 * np.pi * np.cumsum(f_turbo) / SR)
    if road > 0 and speed is not None:
        tyre = _resonate(_lowpass(_highpass(rng.standard_normal(n), 150), rng.uniform(1200, 2500)),
                         rng.uniform(700, 1100), 1.5, 1.0)
        out += road * (speed / 30.0) ** 2 * tyre / (np.abs(tyre).max() + 1e-9)
    return out


def _idle_curves(rng: np.random.Generator, n: int, idle: float):
    rpm = idle * (1 + 0.015 * _wander(rng, n, 1.0))
    return rpm, np.clip(0.15 + 0.05 * _wander(rng, n, 2.0), 0.05, 0.4)


def _rev_curves(rng: np.random.Generator, n: int, idle: float, redline: float):
    """Stationary revving: blips of the throttle from idle."""
    duration = n / SR
    times, rpms, loads, t = [0.0], [idle], [0.15], rng.uniform(0.3, 1.5)
    while t < duration:
        rise, fall = rng.uniform(0.2, 0.7), rng.uniform(0.8, 2.2)
        peak = rng.uniform(0.4, 0.95) * redline
        times += [t, t + rise, t + rise + 0.05, t + rise + fall]
        rpms += [idle, peak, peak, idle]
        loads += [0.15, 1.0, 0.05, 0.15]
        t += rise + fall + rng.uniform(0.3, 2.0)
    rpm = _one_pole(_ramps(n, times, rpms), 6.0) * (1 + 0.01 * _wander(rng, n, 2.0))
    return rpm, _one_pole(_ramps(n, times, loads), 20.0)


def _gear_curves(rng: np.random.Generator, n: int, idle: float, shift_rpm: float, gears: int, rate: float):
    """Pulling away through the gears: rpm climbs (fastest in first), drops at each shift while the
    throttle is off, climbs again; speed follows rpm / gear ratio."""
    duration = n / SR
    ratios = 3.6 * (0.68 ** np.arange(gears))
    gear = int(rng.integers(0, 2))
    rpm_now = rng.uniform(1.1, 1.8) * idle
    times, rpms, loads, gear_at = [0.0], [rpm_now], [rng.uniform(0.7, 1.0)], [(0.0, gear)]
    t = 0.0
    while t < duration and gear < gears:
        climb = rate * ratios[-1] / ratios[gear] * rng.uniform(0.15, 0.3) * 4
        top = shift_rpm * rng.uniform(0.85, 1.05)
        dt = max(0.3, (top - rpm_now) / climb)
        t += dt
        times.append(t), rpms.append(top), loads.append(rng.uniform(0.7, 1.0))
        if gear + 1 >= gears:
            times.append(t + 10), rpms.append(top * 1.05), loads.append(0.5)  # top gear: cruise on
            break
        shift = rng.uniform(0.15, 0.5)
        rpm_now = top * ratios[gear + 1] / ratios[gear]
        times += [t + 0.02, t + shift]
        rpms += [top * 0.97, rpm_now]
        loads += [0.05, 0.05]
        t += shift
        gear += 1
        gear_at.append((t, gear))
        times.append(t + 0.05), rpms.append(rpm_now), loads.append(rng.uniform(0.7, 1.0))
        t += 0.05
    rpm = _one_pole(_ramps(n, times, rpms), 8.0)
    load = _one_pole(_ramps(n, times, loads), 25.0)
    ratio = np.full(n, ratios[gear_at[0][1]])
    for start, g in gear_at[1:]:
        ratio[int(start * SR):] = ratios[min(g, gears - 1)]
    speed = rpm / ratio / 60 * 2.0  # m/s with a ~2 m wheel circumference and a unit final drive
    return rpm, load, speed


def _cruise_curves(rng: np.random.Generator, n: int, rpm0: float):
    rpm = rpm0 * (1 + 0.03 * _wander(rng, n, 0.3))
    load = np.clip(rng.uniform(0.25, 0.5) + 0.1 * _wander(rng, n, 0.5), 0.05, 1.0)
    return rpm, load, np.full(n, rng.uniform(12, 35)) * rpm / rpm0


def _decel_curves(rng: np.random.Generator, n: int, idle: float, start: float):
    duration = n / SR
    rpm = _ramps(n, [0, rng.uniform(0.5, 0.9) * duration], [start, idle * 1.1])
    return rpm, np.full(n, 0.03), np.linspace(rng.uniform(15, 30), 0.0, n) * rpm / start


def _car(rng: np.random.Generator) -> dict:
    diesel = rng.random() < 0.3
    return {"cylinders": int(rng.choice([3, 4, 4, 4, 6, 8])), "idle": rng.uniform(650, 950),
            "redline": rng.uniform(4000, 4800) if diesel else rng.uniform(5500, 7000),
            "knock": rng.uniform(0.3, 0.8) if diesel else 0.0,
            "turbo": rng.uniform(0.3, 1.0) if diesel or rng.random() < 0.3 else 0.0,
            "muffler_hz": rng.uniform(300, 900) if rng.random() < 0.6 else rng.uniform(900, 2500)}


def _car_engine(rng: np.random.Generator, car: dict, rpm, load, speed=None, road: float = 0.0) -> np.ndarray:
    cyl = car["cylinders"]
    return engine_sound(rng, rpm, load, cylinders=cyl, uneven=0.3 if cyl == 8 else 0.05,
                        muffler_hz=car["muffler_hz"], knock=car["knock"], turbo=car["turbo"], speed=speed, road=road)


def engine_idle(rng: np.random.Generator, duration: float) -> np.ndarray:
    """A car idling (650-950 rpm), small rpm wander."""
    car = _car(rng)
    rpm, load = _idle_curves(rng, int(duration * SR), car["idle"])
    return _finish(_car_engine(rng, car, rpm, load), 0.1)


def engine_rev(rng: np.random.Generator, duration: float) -> np.ndarray:
    """Revving a standing car: throttle blips from idle towards the red line and back."""
    car = _car(rng)
    rpm, load = _rev_curves(rng, int(duration * SR), car["idle"], car["redline"])
    return _finish(_car_engine(rng, car, rpm, load), 0.1)


def engine_accelerate(rng: np.random.Generator, duration: float) -> np.ndarray:
    """Pulling away through 2-5 gears, with road/tyre noise growing with speed."""
    car = _car(rng)
    rpm, load, speed = _gear_curves(rng, int(duration * SR), car["idle"], rng.uniform(0.5, 0.85) * car["redline"],
                                    int(rng.integers(3, 6)), rng.uniform(1500, 3000))
    return _finish(_car_engine(rng, car, rpm, load, speed, rng.uniform(0.05, 0.4)), 0.1)


def engine_cruise(rng: np.random.Generator, duration: float) -> np.ndarray:
    """Steady driving: moderate rpm and load, road noise."""
    car = _car(rng)
    rpm, load, speed = _cruise_curves(rng, int(duration * SR), rng.uniform(1600, 3200))
    return _finish(_car_engine(rng, car, rpm, load, speed, rng.uniform(0.1, 0.6)), 0.1)


def engine_decelerate(rng: np.random.Generator, duration: float) -> np.ndarray:
    """Coasting down to idle on engine braking (weak, soft pulses)."""
    car = _car(rng)
    rpm, load, speed = _decel_curves(rng, int(duration * SR), car["idle"], rng.uniform(2500, 4500))
    return _finish(_car_engine(rng, car, rpm, load, speed, rng.uniform(0.05, 0.4)), 0.1)


def engine_motorcycle(rng: np.random.Generator, duration: float) -> np.ndarray:
    """A motorcycle: a single, an uneven V-twin or a high-revving four; revving or pulling through gears."""
    n = int(duration * SR)
    cylinders = int(rng.choice([1, 2, 2, 4]))
    redline = {1: 7000.0, 2: 8000.0, 4: 12000.0}[cylinders] * rng.uniform(0.85, 1.05)
    idle = rng.uniform(900, 1400)
    if rng.random() < 0.5:
        rpm, load = _rev_curves(rng, n, idle, redline)
        speed = None
    else:
        rpm, load, speed = _gear_curves(rng, n, idle, rng.uniform(0.5, 0.9) * redline, int(rng.integers(3, 6)),
                                        rng.uniform(3000, 6000))
    wav = engine_sound(rng, rpm, load, cylinders=cylinders, uneven=0.8 if cylinders == 2 else 0.05,
                       exhaust_m=rng.uniform(0.6, 1.4), muffler_hz=rng.uniform(900, 4000), speed=speed,
                       road=rng.uniform(0.0, 0.2))
    return _finish(wav, 0.1)


def engine_truck(rng: np.random.Generator, duration: float) -> np.ndarray:
    """A diesel truck or bus: six cylinders, low rpm, combustion knock, turbo whine, many gears."""
    n = int(duration * SR)
    idle = rng.uniform(550, 750)
    kind = rng.choice(["idle", "gears", "cruise"])
    if kind == "idle":
        (rpm, load), speed = _idle_curves(rng, n, idle), None
    elif kind == "gears":
        rpm, load, speed = _gear_curves(rng, n, idle, rng.uniform(1700, 2300), int(rng.integers(4, 9)), rng.uniform(500, 1000))
    else:
        rpm, load, speed = _cruise_curves(rng, n, rng.uniform(1200, 1900))
    wav = engine_sound(rng, rpm, load, cylinders=6, exhaust_m=rng.uniform(2.0, 4.0), muffler_hz=rng.uniform(250, 800),
                       knock=rng.uniform(0.6, 1.2), turbo=rng.uniform(0.5, 1.5), speed=speed, road=rng.uniform(0.1, 0.5))
    return _finish(wav, 0.1)


def engine_two_stroke(rng: np.random.Generator, duration: float) -> np.ndarray:
    """A small two-stroke (moped, scooter, lawnmower): one cylinder firing every revolution, buzzy."""
    n = int(duration * SR)
    idle = rng.uniform(1800, 3000)
    if rng.random() < 0.5:
        rpm, load = _rev_curves(rng, n, idle, rng.uniform(7000, 10000))
    else:
        rpm, load = _idle_curves(rng, n, rng.uniform(2500, 6000))
    wav = engine_sound(rng, rpm, load, cylinders=1, two_stroke=True, exhaust_m=rng.uniform(0.3, 0.9),
                       muffler_hz=rng.uniform(1000, 3500), roughness=0.15)
    return _finish(wav, 0.1)


def engine_interior(rng: np.random.Generator, duration: float) -> np.ndarray:
    """Inside the car: the engine low-passed through the body, a cabin boom, road and wind noise."""
    n = int(duration * SR)
    car = _car(rng)
    if rng.random() < 0.5:
        rpm, load, speed = _gear_curves(rng, n, car["idle"], rng.uniform(2500, 4000), int(rng.integers(3, 6)),
                                        rng.uniform(1500, 3000))
    else:
        rpm, load, speed = _cruise_curves(rng, n, rng.uniform(1600, 3000))
    wav = _car_engine(rng, car, rpm, load, speed, road=0.0)
    wav = _resonate(_lowpass(wav, rng.uniform(250, 600)), rng.uniform(30, 70), 3.0, 1.5)
    road = _lowpass(_highpass(rng.standard_normal(n), 40), rng.uniform(400, 900)) * (speed / 30.0)
    wind = _highpass(rng.standard_normal(n), 300) * (speed / 40.0) ** 2
    wav = wav / (np.abs(wav).max() + 1e-9) + rng.uniform(0.2, 0.8) * road / (np.abs(road).max() + 1e-9) \
        + rng.uniform(0.02, 0.1) * wind / (np.abs(wind).max() + 1e-9)
    return _finish(wav, 0.1)


# --------------------------------------------------------------------------------------------- bells

# A tuned church bell's partials relative to its prime (fundamental): hum an octave below, tierce a
# minor third above the prime, quint a fifth, nominal (the strike note) an octave, then the upper
# partials (deciem, undeciem, superquint, octave nominal, ...).
CHURCH_BELL_PARTIALS = {
    "hum": 0.5, "prime": 1.0, "tierce": 1.2, "quint": 1.5, "nominal": 2.0, "deciem": 2.5, "undeciem": 2.67,
    "superquint": 3.0, "octave nominal": 4.0, "upper 5": 5.04, "upper 6": 5.33, "upper 7": 6.0,
}
_CHURCH_AMPS = (0.5, 0.6, 0.8, 0.3, 1.0, 0.5, 0.3, 0.45, 0.35, 0.2, 0.15, 0.1)
# Free-free bar or tube (tubular bells, chimes, door-chime tone bars): mode n at ((2n+1)/3.0112)^2.
BAR_MODES = (1.0, 2.756, 5.404, 8.933, 13.344, 18.638, 24.81, 31.86)


def church_bell_kernel(rng: np.random.Generator, prime: float, seconds: float, well_tuned: bool = True,
                       size_decay: float | None = None) -> np.ndarray:
    """One strike of a church bell: the partials above with slightly split (beating) modes, the hum
    ringing longest, plus the clang of the clapper."""
    ratios = np.array(list(CHURCH_BELL_PARTIALS.values()))
    if well_tuned:
        ratios = ratios * rng.uniform(0.997, 1.003, len(ratios))
    else:  # old, untuned bells: flat hums, sharp or flat quints and primes
        ratios = ratios * np.array([rng.uniform(0.94, 1.03), rng.uniform(0.96, 1.03), rng.uniform(0.98, 1.02),
                                    rng.uniform(0.92, 1.03)] + list(rng.uniform(0.97, 1.03, len(ratios) - 4)))
    tau_hum = size_decay if size_decay is not None else float(np.clip(rng.uniform(1500, 3000) / prime, 2.0, 12.0))
    decays = tau_hum * (0.5 / ratios) ** rng.uniform(0.8, 1.2)
    amps = np.array(_CHURCH_AMPS) * rng.uniform(0.6, 1.4, len(ratios))
    splits = rng.uniform(0.0, 1.5, len(ratios)) * (rng.random(len(ratios)) < 0.6)
    tone = _modes(prime * ratios, amps, decays, seconds, rng, splits)
    clang = _strike_noise(rng, 1000, 6000, rng.uniform(2e-3, 6e-3))
    tone[: len(clang)] += rng.uniform(0.05, 0.25) * clang / (np.abs(clang).max() + 1e-9) * np.abs(tone).max()
    return tone


def church_bell(rng: np.random.Generator, duration: float, pattern: str | None = None, prime: float | None = None,
                well_tuned: bool | None = None) -> np.ndarray:
    """Church bells: one bell tolling, a swinging bell, or a ring of 4-8 bells ringing rounds."""
    n = int(duration * SR)
    pattern = pattern or str(rng.choice(["toll", "swing", "peal"], p=[0.4, 0.3, 0.3]))
    tuned = bool(rng.random() < 0.6) if well_tuned is None else well_tuned
    if pattern == "peal":
        bells = int(rng.integers(4, 9))
        top = prime or rng.uniform(350, 800)
        steps = np.cumsum([0] + [2, 2, 1, 2, 2, 2, 1][: bells - 1])  # a descending major scale
        interval = rng.uniform(0.18, 0.35)
        kernels = [church_bell_kernel(rng, top * 2 ** (-s / 12), min(duration, 4.0), tuned) for s in steps]
        out, t, row = np.zeros(n), rng.uniform(0, 0.3), 0
        onsets: list[list[float]] = [[] for _ in range(bells)]
        while t < duration:
            order = range(bells) if row % 4 < 2 or rng.random() < 0.5 else rng.permutation(bells)
            for b in order:
                onsets[b].append(t + rng.normal(0, 0.01))
                t += interval
            t += interval if row % 2 else 0.0  # the handstroke gap
            row += 1
        for kernel, times in zip(kernels, onsets):
            out += _place(kernel, times, rng.uniform(0.7, 1.0, len(times)), n)
        return _finish(out, 0.005)
    prime = prime or float(np.exp(rng.uniform(np.log(150), np.log(700))))
    kernel = church_bell_kernel(rng, prime, duration, tuned)
    if pattern == "toll":
        onsets = _every(rng, duration, rng.uniform(1.8, 5.0))
        gains = rng.uniform(0.8, 1.0, len(onsets))
    else:  # a swinging bell sounds at each end of its swing; the mouth faces towards and away
        period = rng.uniform(0.9, 2.0)
        onsets = _every(rng, duration, period / 2) + rng.uniform(0, 0.02)
        gains = np.where(np.arange(len(onsets)) % 2 == 0, 1.0, rng.uniform(0.5, 0.9)) * rng.uniform(0.85, 1.0, len(onsets))
    return _finish(_place(kernel, onsets, gains, n), 0.005)


WESTMINSTER_CHANGES = ((2, 1, 0, -3), (0, 2, 1, -3), (0, 1, 2, 0), (2, 0, 1, -3), (-3, 1, 2, 0))  # scale steps


def _bar_kernel(rng: np.random.Generator, pitch: float, seconds: float, amps=(0.05, 0.15, 0.4, 1.0, 0.8, 0.6, 0.3, 0.15),
                decay: float = 5.0) -> np.ndarray:
    """A struck tube or bar; a tubular bell's heard pitch is half its 4th mode (modes 4-6 go as 2:3:4)."""
    f1 = 2 * pitch / BAR_MODES[3] if amps[3] >= max(amps) else pitch
    freqs = f1 * np.array(BAR_MODES) * rng.uniform(0.997, 1.003, len(BAR_MODES))
    decays = decay * (freqs[3] / freqs) ** 0.7 if amps[3] >= max(amps) else decay * (f1 / freqs) ** 0.9
    return _modes(freqs, np.array(amps) * rng.uniform(0.7, 1.3, len(amps)), decays, seconds, rng)


def tubular_chimes(rng: np.random.Generator, duration: float) -> np.ndarray:
    """Tubular bells/clock chimes: Westminster quarters or a descending scale, struck with a mallet."""
    n = int(duration * SR)
    key = float(np.exp(rng.uniform(np.log(300), np.log(700))))
    major = [0, 2, 4, 5, 7, 9, 11, 12]
    out = np.zeros(n)
    notes: list[tuple[float, int]] = []
    t, gap = rng.uniform(0, 0.4), rng.uniform(0.45, 0.9)
    westminster = rng.random() < 0.6
    while t < duration:
        phrase = WESTMINSTER_CHANGES[int(rng.integers(len(WESTMINSTER_CHANGES)))] if westminster else \
            tuple(int(s) for s in rng.choice(7, size=int(rng.integers(3, 8)), replace=True))
        for step in phrase:
            notes.append((t, step))
            t += gap
        t += gap * rng.uniform(1.5, 3.0)
    kernels: dict[int, np.ndarray] = {}
    for onset, step in notes:
        if step not in kernels:
            semis = major[step % 7] + 12 * (step // 7) if step >= 0 else -12 + major[step % 7]
            kernels[step] = _bar_kernel(rng, key * 2 ** (semis / 12), min(duration, 4.0), decay=rng.uniform(2.5, 6.0))
            hit = _strike_noise(rng, 2000, 7000, 1.5e-3, 0.01)
            kernels[step][: len(hit)] += 0.1 * hit / (np.abs(hit).max() + 1e-9) * np.abs(kernels[step]).max()
    for step, kernel in kernels.items():
        times = [o for o, s in notes if s == step]
        out += _place(kernel, times, rng.uniform(0.7, 1.0, len(times)), n)
    return _finish(out, 0.005)


def wind_chimes(rng: np.random.Generator, duration: float) -> np.ndarray:
    """Five to eight tuned tubes (pentatonic) struck at random by a clapper, in gusts."""
    n = int(duration * SR)
    base = float(np.exp(rng.uniform(np.log(500), np.log(1300))))
    pentatonic = [0, 2, 4, 7, 9, 12, 14, 16]
    tubes = [_bar_kernel(rng, base * 2 ** (s / 12), 3.0, amps=(0.2, 1.0, 0.5, 0.3, 0.15, 0.1, 0.05, 0.02),
                         decay=rng.uniform(0.8, 2.5)) for s in pentatonic[: int(rng.integers(5, 9))]]
    rate = np.clip(rng.uniform(1, 8) * (1 + 0.8 * _wander(rng, n, 0.4)), 0.0, None)
    count = max(1, rng.poisson(rate.mean() * duration))
    onsets = np.sort(rng.choice(n, size=count, p=(rate + 1e-9) / (rate + 1e-9).sum()) / SR)
    which = rng.integers(len(tubes), size=len(onsets))
    out = np.zeros(n)
    for k, kernel in enumerate(tubes):
        times = onsets[which == k]
        out += _place(kernel, times, rng.lognormal(0, 0.4, len(times)), n)
    return _finish(out, 0.005)


def handbell(rng: np.random.Generator, duration: float) -> np.ndarray:
    """Handbells: a handbell choir playing a slow tune, or one school bell rung by hand (rapid strikes)."""
    n = int(duration * SR)
    ratios = np.array([1.0, 3.0, 5.4, 8.4, 12.0]) * rng.uniform(0.99, 1.01, 5)  # tuned to the twelfth

    def kernel(f: float, seconds: float) -> np.ndarray:
        tau = rng.uniform(1.5, 4.0) * (500 / f) ** 0.3
        return _modes(f * ratios, np.array([1, 0.6, 0.3, 0.15, 0.08]) * rng.uniform(0.7, 1.3, 5), tau / ratios ** 0.6,
                      seconds, rng, rng.uniform(0, 1.0, 5))
    if rng.random() < 0.5:
        f = rng.uniform(700, 1800)
        k = kernel(f, 2.0)
        onsets, t = [], rng.uniform(0, 0.3)
        while t < duration:
            burst = rng.uniform(0.8, 3.0)
            onsets += list(np.arange(t, min(t + burst, duration), 1 / rng.uniform(3, 7)))
            t += burst + rng.uniform(0.3, 1.5)
        return _finish(_place(k, onsets, rng.uniform(0.6, 1.0, len(onsets)), n), 0.005)
    key = float(np.exp(rng.uniform(np.log(350), np.log(900))))
    scale = [0, 2, 4, 5, 7, 9, 11, 12, 14]
    out, t, kernels = np.zeros(n), rng.uniform(0, 0.3), {}
    degree = int(rng.integers(0, 7))
    beat = rng.uniform(0.35, 0.8)
    while t < duration:
        degree = int(np.clip(degree + rng.choice([-2, -1, -1, 0, 1, 1, 2]), 0, len(scale) - 1))
        if degree not in kernels:
            kernels[degree] = kernel(key * 2 ** (scale[degree] / 12), 3.0)
        out += _place(kernels[degree], [t], [rng.uniform(0.6, 1.0)], n)
        t += beat * float(rng.choice([1, 1, 2]))
    return _finish(out, 0.005)


def bicycle_bell(rng: np.random.Generator, duration: float) -> np.ndarray:
    """A bicycle bell: lever "ding-ding" strikes or a rotary "brrring" trill on a small dome."""
    n = int(duration * SR)
    f = rng.uniform(1800, 3500)
    ratios = np.array([1.0, rng.uniform(1.35, 1.6), rng.uniform(2.0, 2.4), rng.uniform(2.8, 3.3)])
    k = _modes(f * ratios, [1.0, 0.7, 0.3, 0.15], rng.uniform(0.3, 1.2) / ratios ** 0.7, 1.5, rng, rng.uniform(0, 4, 4))
    click = _strike_noise(rng, 2000, 7000, 0.5e-3, 0.01)
    k[: len(click)] += 0.3 * click / (np.abs(click).max() + 1e-9) * np.abs(k).max()
    onsets, t = [], _first(rng, duration)
    rotary = rng.random() < 0.4
    while t < duration:
        if rotary:
            length = rng.uniform(0.3, 1.0)
            onsets += list(np.arange(t, t + length, 1 / rng.uniform(15, 30)))
            t += length
        else:
            for _ in range(int(rng.integers(1, 4))):
                onsets.append(t)
                t += rng.uniform(0.1, 0.22)
        t += rng.uniform(0.6, 3.0)
    return _finish(_place(k, onsets, rng.uniform(0.6, 1.0, len(onsets)), n), 0.005)


def doorbell(rng: np.random.Generator, duration: float) -> np.ndarray:
    """Door chimes: two tone bars ("ding-dong"), or an eight-note Westminster chime, with the solenoid thump."""
    n = int(duration * SR)
    high = rng.uniform(550, 950)
    amps = (1.0, 0.2, 0.08, 0.03, 0.0, 0.0, 0.0, 0.0)  # a resonator tube behind the bar favours mode 1

    def bar(pitch: float) -> np.ndarray:
        k = _bar_kernel(rng, pitch, 2.5, amps=amps, decay=rng.uniform(0.8, 2.0))
        thump = _lowpass(_strike_noise(rng, 100, 3000, 4e-3, 0.03), 1500)
        k[: len(thump)] += 0.15 * thump / (np.abs(thump).max() + 1e-9) * np.abs(k).max()
        return k
    out, t = np.zeros(n), _first(rng, duration)
    if rng.random() < 0.7:
        low = high / float(rng.choice([1.19, 1.26, 1.33, 1.5]))
        ding, dong = bar(high), bar(low)
        while t < duration:
            out += _place(ding, [t], [1.0], n)
            if rng.random() < 0.85:
                out += _place(dong, [t + rng.uniform(0.35, 0.8)], [rng.uniform(0.8, 1.0)], n)
            t += rng.uniform(1.5, 4.0)
    else:
        key, major = high / 2 ** (7 / 12), [0, 2, 4, 5, 7, 9, 11]
        bars = {s: bar(key * 2 ** ((major[s % 7] + 12 * (s // 7)) / 12)) for s in (-3, 0, 1, 2)}
        gap = rng.uniform(0.35, 0.6)
        for change in (WESTMINSTER_CHANGES[0], WESTMINSTER_CHANGES[1]):
            for step in change:
                out += _place(bars[step], [t], [rng.uniform(0.8, 1.0)], n)
                t += gap
            t += gap
    return _finish(out, 0.005)


def electric_bell(rng: np.random.Generator, duration: float) -> np.ndarray:
    """An electric (school, shop, fire) bell: a hammer striking a gong dome 15-30 times a second."""
    n = int(duration * SR)
    f = rng.uniform(600, 1600)
    ratios = np.array([1.0, 1.52, 2.41, 3.35, 4.6]) * rng.uniform(0.97, 1.03, 5)
    k = _modes(f * ratios, [1.0, 0.6, 0.5, 0.3, 0.2], rng.uniform(0.2, 0.6) / ratios ** 0.5, 1.0, rng, rng.uniform(0, 3, 5))
    rate = rng.uniform(15, 30)
    onsets, t = [], rng.uniform(0, 0.5)
    while t < duration:
        length = rng.uniform(1.0, 4.0)
        onsets += list(np.arange(t, min(t + length, duration), 1 / rate) + rng.normal(0, 0.002, 1))
        t += length + rng.uniform(0.5, 3.0)
    rattle = _strike_noise(rng, 2000, 7000, 0.3e-3, 0.005)
    k[: len(rattle)] += 0.2 * rattle / (np.abs(rattle).max() + 1e-9) * np.abs(k).max()
    return _finish(_place(k, onsets, rng.uniform(0.7, 1.0, len(onsets)), n), 0.005)


def gong(rng: np.random.Generator, duration: float) -> np.ndarray:
    """A tam-tam (dense inharmonic partials that bloom upwards after the strike), a pitched opera gong
    (its pitch glides) or a temple bell struck with a wooden beam (low, long, beating)."""
    n = int(duration * SR)
    t = np.arange(n) / SR
    kind = rng.choice(["tamtam", "opera", "temple"])
    if kind == "tamtam":
        freqs = np.sort(np.exp(rng.uniform(np.log(60), np.log(4500), int(rng.integers(30, 60)))))
        out = np.zeros(n)
        for f in freqs:
            bloom = 1 - np.exp(-t / (rng.uniform(0.02, 0.3) * (f / 400) ** 0.8)) if f > 400 else 1.0
            out += rng.uniform(0.3, 1.0) * (f / 200) ** -0.3 * bloom * np.exp(-t / (rng.uniform(3, 10) * (200 / f) ** 0.4)) \
                * np.sin(2 * np.pi * f * t + rng.uniform(0, 6.3))
        mallet = _lowpass(_strike_noise(rng, 40, 2000, 8e-3, 0.08), 600)
    elif kind == "opera":
        f0, glide, tau = rng.uniform(150, 500), rng.uniform(0.03, 0.15) * rng.choice([-1, 1]), rng.uniform(0.15, 0.5)
        warp = t + glide * (t - tau * (1 - np.exp(-t / tau)))  # instantaneous frequency f0 * (1 + glide (1 - e^-t/tau))
        out = sum(a * np.exp(-t / (d * rng.uniform(0.8, 1.2))) * np.sin(2 * np.pi * f0 * r * warp)
                  for r, a, d in ((1.0, 1.0, 1.5), (1.52, 0.5, 1.0), (2.31, 0.4, 0.7), (3.6, 0.25, 0.5), (4.9, 0.15, 0.35)))
        mallet = _lowpass(_strike_noise(rng, 40, 3000, 3e-3, 0.04), 1500)
    else:
        f0 = rng.uniform(70, 140)
        ratios = np.array([1.0, 2.15, 2.9, 4.2, 5.6, 7.3]) * rng.uniform(0.97, 1.03, 6)
        out = _modes(f0 * ratios, [1.0, 0.7, 0.6, 0.4, 0.3, 0.2], rng.uniform(4, 10) / ratios ** 0.6, duration, rng,
                     rng.uniform(0.2, 1.5, 6))
        mallet = _lowpass(_strike_noise(rng, 30, 1000, 15e-3, 0.1), 300)
    kernel = out
    kernel[: len(mallet)] += 0.4 * mallet / (np.abs(mallet).max() + 1e-9) * np.abs(kernel).max()
    onsets = _every(rng, duration, rng.uniform(3.0, 8.0))
    return _finish(_place(kernel, onsets, rng.uniform(0.7, 1.0, len(onsets)), n), 0.005)


def small_bells(rng: np.random.Generator, duration: float) -> np.ndarray:
    """Sleigh bells shaken in rhythm, a desk (service) bell, a cowbell, or a shop-door bell on its spring."""
    n = int(duration * SR)
    kind = rng.choice(["sleigh", "desk", "cowbell", "shop"])
    if kind == "sleigh":
        jingles = [_modes(np.exp(rng.uniform(np.log(2500), np.log(7200), 4)), rng.uniform(0.3, 1.0, 4),
                          rng.uniform(0.02, 0.06, 4), 0.12, rng) for _ in range(6)]
        beat = rng.uniform(0.15, 0.5)
        out = np.zeros(n)
        for shake in _every(rng, duration, beat, 0.2):
            hits = shake + rng.uniform(0, 0.05, int(rng.integers(6, 20)))
            which = rng.integers(len(jingles), size=len(hits))
            for k, kernel in enumerate(jingles):
                out += _place(kernel, hits[which == k], rng.uniform(0.3, 1.0, int((which == k).sum())), n)
        rattle = _highpass(rng.standard_normal(n), 4000) * (np.abs(out) > 0.05 * np.abs(out).max())
        return _finish(out + 0.05 * np.abs(out).max() * rattle, 0.005)
    if kind == "desk":
        f = rng.uniform(1800, 3000)
        k = _modes(f * np.array([1.0, 2.7, 5.1]), [1.0, 0.4, 0.15], [rng.uniform(0.8, 2.0), 0.5, 0.2], 2.5, rng,
                   [0.8, 1.5, 2.0])
        onsets = _first(rng, duration) + np.cumsum([0.0] + list(rng.uniform(0.15, 2.0, int(rng.integers(0, 4)))))
    elif kind == "cowbell":
        f = rng.uniform(500, 900)
        k = _modes([f, f * 1.48, f * 2.6], [1.0, 0.8, 0.3], [0.15, 0.1, 0.06], 0.4, rng)
        beat = rng.uniform(0.25, 0.6)
        onsets = _every(rng, duration, beat, 0.3, 0.0)
        onsets = onsets[(rng.random(len(onsets)) < 0.85) | (np.arange(len(onsets)) == 0)]
    else:
        f = rng.uniform(1500, 3000)
        k = _modes(f * np.array([1.0, 1.6, 2.5]), [1.0, 0.5, 0.3], [0.6, 0.3, 0.15], 1.5, rng, [0.5, 1.0, 1.5])
        onsets = []
        for start in _every(rng, duration, rng.uniform(2.0, 5.0), 1.0, 0.3):
            onsets += list(start + np.cumsum([0] + list(rng.uniform(0.06, 0.14, int(rng.integers(3, 7))))))
    k[: int(0.004 * SR)] += 0.2 * np.abs(k).max() * rng.standard_normal(int(0.004 * SR))
    gains = np.clip(rng.uniform(0.5, 1.0, len(onsets)), 0, 1)
    return _finish(_place(k, onsets, gains, n), 0.005)


# ------------------------------------------------------------------------------------- phone ringing

# Ring cadences (on, off, on, off ... seconds) of telephone ring signals by country.
RING_CADENCES = {
    "us": (2.0, 4.0), "uk": (0.4, 0.2, 0.4, 2.0), "au": (0.4, 0.2, 0.4, 2.0), "de": (1.0, 4.0), "fr": (1.5, 3.5),
    "it": (1.0, 4.0), "jp": (1.0, 2.0), "es": (1.5, 3.0), "ru": (0.8, 3.2), "se": (1.0, 5.0), "in": (0.4, 0.2, 0.4, 2.0),
}
# Ringback tones heard in the handset: (frequencies Hz, amplitude-modulation Hz or 0, cadence key)
RINGBACK_TONES = {"us": ((440.0, 480.0), 0.0, "us"), "uk": ((400.0, 450.0), 0.0, "uk"), "eu": ((425.0,), 0.0, "de"),
                  "jp": ((400.0,), 16.0, "jp"), "au": ((400.0, 425.0), 0.0, "au"), "cn": ((450.0,), 0.0, "de")}


def ring_gate(t: np.ndarray, cadence, offset: float) -> np.ndarray:
    """True while the cadence is "on" (on/off seconds, repeating), shifted by offset seconds."""
    bounds = np.cumsum(cadence)
    u = (t + offset) % bounds[-1]
    on = np.zeros(len(t), dtype=bool)
    start = 0.0
    for i, end in enumerate(bounds):
        if i % 2 == 0:
            on |= (u >= start) & (u < end)
        start = end
    return on


def _cadence(rng: np.random.Generator, duration: float, country: str | None = None):
    country = country or str(rng.choice(sorted(RING_CADENCES)))
    cadence = np.array(RING_CADENCES[country]) * rng.uniform(0.95, 1.05)
    return country, cadence, _ring_offset(rng, cadence, duration)


def _ring_offset(rng: np.random.Generator, cadence, duration: float) -> float:
    """Where in its cadence a clip starts: inside the first ring, or in the pause shortly before it."""
    cycle, first_on = float(np.sum(cadence)), float(cadence[0])
    lead = min(0.3 * duration, cycle - first_on)
    return float(rng.uniform(-lead, 0.8 * first_on)) % cycle


def phone_bell(rng: np.random.Generator, duration: float, country: str | None = None) -> np.ndarray:
    """An old telephone's mechanical ringer: a clapper striking two gongs alternately at the ring signal's
    20-25 Hz during each ring of the country's cadence; the gongs ring on after."""
    t = _time(duration)
    n = len(t)
    _country, cadence, offset = _cadence(rng, duration, country)
    gate = ring_gate(t, cadence, offset)
    ring_hz = rng.choice([20.0, 25.0]) * rng.uniform(0.97, 1.03)
    gongs = []
    for f in (rng.uniform(900, 1800), rng.uniform(900, 1800)):
        ratios = np.array([1.0, rng.uniform(2.2, 2.6), rng.uniform(3.8, 4.4), rng.uniform(5.8, 6.6)])
        gongs.append(_modes(f * ratios, [1.0, 0.6, 0.35, 0.2], rng.uniform(0.15, 0.5) / ratios ** 0.5, 1.0, rng,
                            rng.uniform(0, 3, 4)))
    strikes = np.arange(0, duration, 1 / (2 * ring_hz)) + rng.uniform(0, 0.01)
    strikes = strikes[gate[np.minimum((strikes * SR).astype(int), n - 1)]]
    out = sum(_place(g, strikes[i::2], rng.uniform(0.7, 1.0, len(strikes[i::2])), n) for i, g in enumerate(gongs))
    rattle = _bandpass(rng.standard_normal(n), 2000, 6000) * _one_pole(gate.astype(float), 50.0)
    out = out + rng.uniform(0.02, 0.08) * np.abs(out).max() * rattle / (np.abs(rattle).max() + 1e-9)
    return _finish(out, 0.005)


def _piezo(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A small piezo or phone loudspeaker: no bass, a resonance, a little distortion."""
    x = _resonate(_highpass(x, rng.uniform(350, 900)), rng.uniform(1500, 3500), rng.uniform(1.5, 4), rng.uniform(0.3, 1.2))
    return _soft_clip(x, rng.uniform(0.5, 3.0))


def phone_electronic(rng: np.random.Generator, duration: float, country: str | None = None) -> np.ndarray:
    """Electronic ringers: a two-tone trill (10-25 Hz), a warbling sweep (the "trimphone"), or an
    office phone's fast three-note arpeggio, through a piezo, in a country's ring cadence."""
    t = _time(duration)
    _country, cadence, offset = _cadence(rng, duration, country)
    gate = ring_gate(t, cadence, offset)
    kind = rng.choice(["trill", "warble", "arpeggio"])
    if kind == "trill":
        f1, f2 = rng.uniform(700, 1600), rng.uniform(1500, 2800)
        freq = np.where(((t * rng.uniform(10, 25)) % 1.0) < 0.5, f1, f2)
    elif kind == "warble":
        lo, hi = rng.uniform(1000, 1800), rng.uniform(2000, 3200)
        freq = lo + (hi - lo) * (0.5 + 0.5 * np.sin(2 * np.pi * rng.uniform(8, 20) * t))
    else:
        notes = rng.uniform(900, 2600, int(rng.integers(2, 5)))
        step = rng.uniform(0.03, 0.08)
        freq = notes[((t / step).astype(int)) % len(notes)]
    square = rng.random() < 0.6
    tone = _additive(freq, {1: 1.0, 3: 0.33, 5: 0.2, 7: 0.14} if square else {1: 1.0, 2: 0.1})
    return _finish(_piezo(tone * _one_pole(gate.astype(float), 300.0), rng), 0.005)


def phone_ringback(rng: np.random.Generator, duration: float, country: str | None = None) -> np.ndarray:
    """The ringing tone a caller hears (US 440+480 Hz 2 s on 4 s off, UK 400+450 Hz double ring, Europe
    425 Hz, Japan 400 Hz warbled at 16 Hz ...), through a telephone line's 300-3400 Hz band."""
    t = _time(duration)
    country = country or str(rng.choice(sorted(RINGBACK_TONES)))
    freqs, am, cadence_key = RINGBACK_TONES[country]
    cadence = np.array(RING_CADENCES[cadence_key])
    gate = ring_gate(t, cadence, _ring_offset(rng, cadence, duration))
    tone = sum(np.sin(2 * np.pi * f * t + rng.uniform(0, 6.3)) for f in freqs)
    if am:
        tone *= 0.6 + 0.4 * np.sin(2 * np.pi * am * t)
    wav = _bandpass(tone * _one_pole(gate.astype(float), 400.0), 300, 3400, order=3)
    line = _bandpass(rng.standard_normal(len(t)), 300, 3400) * rng.uniform(0.001, 0.01)
    return _finish(wav + line, 0.005)


def _ringtone_voice(freq: float, seconds: float, timbre: str, rng: np.random.Generator) -> np.ndarray:
    t = np.arange(int(seconds * SR)) / SR
    if timbre == "beeper":
        return np.sign(np.sin(2 * np.pi * freq * t)) * 0.5 * np.minimum(1, (seconds - t) / 0.005)
    if timbre == "fm":  # two-operator FM bell/electric-piano: the brightness fades with the note
        ratio = float(rng.choice([1.0, 1.4, 2.0, 3.5]))
        index = 3.0 * np.exp(-t / 0.15)
        return np.sin(2 * np.pi * freq * t + index * np.sin(2 * np.pi * ratio * freq * t)) * np.exp(-t / 0.4)
    if timbre == "marimba":  # bar tuned 1:4:10
        return sum(a * np.exp(-t / d) * np.sin(2 * np.pi * freq * r * t)
                   for r, a, d in ((1, 1, 0.3), (4, 0.3, 0.08), (10, 0.1, 0.03)))
    harmonics = {1: 1.0, 2: 0.5, 3: 0.3, 4: 0.2}  # plucked synth
    return sum(a * np.sin(2 * np.pi * freq * k * t) * np.exp(-t * k / 0.3) for k, a in harmonics.items())


def phone_melodic(rng: np.random.Generator, duration: float) -> np.ndarray:
    """A mobile ringtone: a short random motif (pentatonic or major, 4-12 notes) repeated with gaps,
    played by a beeper, FM bell, marimba or synth pluck through a phone loudspeaker."""
    n = int(duration * SR)
    timbre = str(rng.choice(["beeper", "fm", "marimba", "pluck"]))
    root = float(np.exp(rng.uniform(np.log(400), np.log(1000))))
    scale = [0, 2, 4, 7, 9, 12, 14, 16] if rng.random() < 0.5 else [0, 2, 4, 5, 7, 9, 11, 12, 14]
    beat = 60 / rng.uniform(100, 180)
    motif, t = [], 0.0
    for _ in range(int(rng.integers(4, 13))):
        length = beat * float(rng.choice([0.25, 0.5, 0.5, 1.0, 1.5]))
        motif.append((t, length, scale[int(rng.integers(len(scale)))]))
        t += length
    out, start = np.zeros(n), rng.uniform(0, 0.5)
    voices: dict[tuple[int, int], np.ndarray] = {}
    while start < duration:
        for onset, length, step in motif:
            key = (step, int(length * 1000))
            if key not in voices:
                voices[key] = _ringtone_voice(root * 2 ** (step / 12), length * 0.95 if timbre == "beeper" else 1.0,
                                              timbre, rng)
            i = int((start + onset) * SR)
            if i < n:
                v = voices[key][: n - i]
                out[i:i + len(v)] += v
        start += t + rng.uniform(0.3, 1.5)
    return _finish(_piezo(out, rng), 0.005)


# --------------------------------------------------------------------------------------------- water

def _bubble(rng: np.random.Generator, f0: float, rise: float, decay: float) -> np.ndarray:
    """A bubble's Minnaert resonance, its pitch rising (by `rise` of f0 per decay time) as it nears
    the surface."""
    t = np.arange(int(min(0.25, 6 * decay) * SR)) / SR
    freq = f0 * (1 + rise * t / decay)
    audible = freq < SR / 2 - 300
    return np.where(audible, np.sin(2 * np.pi * np.cumsum(freq) / SR), 0.0) * np.exp(-t / decay) * np.minimum(1, t / 0.0005)


def _events(rng: np.random.Generator, n: int, rate: np.ndarray | float) -> np.ndarray:
    """Poisson event times (s) with a rate (events/s) that may vary per sample."""
    rate = np.broadcast_to(np.asarray(rate, dtype=float), (n,))
    count = rng.poisson(float(rate.mean()) * n / SR)
    if count == 0:
        return np.array([])
    return np.sort(rng.choice(n, size=count, p=rate / rate.sum()) + rng.uniform(0, 1, count)) / SR


def _scatter(rng: np.random.Generator, kernels: list[np.ndarray], onsets: np.ndarray, n: int, sigma: float = 0.6) -> np.ndarray:
    """Each onset plays one of the kernels at a log-normal level."""
    which = rng.integers(len(kernels), size=len(onsets))
    out = np.zeros(n)
    for k, kernel in enumerate(kernels):
        times = onsets[which == k]
        if len(times):
            out += _place(kernel, times, rng.lognormal(0, sigma, len(times)), n)
    return out


def _surface_kernels(rng: np.random.Generator, surface: str) -> list[np.ndarray]:
    """What one raindrop sounds like on a surface."""
    kernels = []
    for _ in range(8):
        if surface == "water":  # a tick and, often, a bubble
            k = _strike_noise(rng, 1000, 7000, 0.3e-3, 0.01)
            k = k / (np.abs(k).max() + 1e-9)
            if rng.random() < 0.6:
                b = _bubble(rng, float(np.exp(rng.uniform(np.log(1200), np.log(6000)))), rng.uniform(0.0, 0.3),
                            rng.uniform(2e-3, 8e-3))
                k = np.concatenate([k, np.zeros(max(0, len(b) - len(k)))])
                k[: len(b)] += rng.uniform(0.5, 1.5) * b
        elif surface == "leaves":
            k = _strike_noise(rng, rng.uniform(600, 1500), rng.uniform(3000, 7000), rng.uniform(1e-3, 4e-3), 0.03)
        elif surface == "hard":
            k = (_strike_noise(rng, 200, 7500, rng.uniform(0.4e-3, 2e-3), 0.02)
                 + 0.5 * _lowpass(_strike_noise(rng, 60, 2000, 3e-3, 0.02), 800))
        elif surface == "metal":
            f = np.exp(rng.uniform(np.log(800), np.log(6000), 4))
            k = _modes(f, rng.uniform(0.3, 1.0, 4), rng.uniform(0.01, 0.06, 4), 0.2, rng)
        else:  # glass
            f = np.exp(rng.uniform(np.log(2500), np.log(6500), 2))
            k = _modes(f, [1.0, 0.5], rng.uniform(0.004, 0.02, 2), 0.08, rng)
            k[: int(0.001 * SR)] += rng.standard_normal(int(0.001 * SR))
        kernels.append(k / (np.abs(k).max() + 1e-9))
    return kernels


def rain(rng: np.random.Generator, duration: float) -> np.ndarray:
    """Rain: thousands of drop impacts at Poisson times in gusts (on water, leaves, pavement, a metal roof,
    a window), over the hiss of the distant rain; sometimes heard from indoors."""
    n = int(duration * SR)
    rate = float(np.exp(rng.uniform(np.log(150), np.log(3000))))
    gust = np.clip(1 + rng.uniform(0.1, 0.6) * _wander(rng, n, 0.3), 0.2, 3.0)
    surfaces = rng.choice(["water", "leaves", "hard", "metal", "glass"], size=int(rng.integers(1, 4)), replace=False)
    out = np.zeros(n)
    for surface in surfaces:
        share = rng.uniform(0.2, 1.0)
        out += _scatter(rng, _surface_kernels(rng, str(surface)), _events(rng, n, rate * share * gust), n)
    hiss = _lowpass(_highpass(rng.standard_normal(n), rng.uniform(150, 500)), rng.uniform(2500, 7000)) * gust
    out = out / (np.abs(out).max() + 1e-9) + rng.uniform(0.05, 0.6) * (rate / 1000) ** 0.5 * hiss / (np.abs(hiss).max() + 1e-9)
    if rng.random() < 0.3:  # behind a window
        out = _lowpass(out, rng.uniform(1000, 3000))
    return _finish(out, 0.1)


def stream(rng: np.random.Generator, duration: float) -> np.ndarray:
    """Running water: a brook (dense bubbles over a turbulent hiss), a river (lower roar) or a waterfall
    (broadband roar)."""
    n = int(duration * SR)
    kind = rng.choice(["brook", "brook", "river", "waterfall"])
    lo, hi = {"brook": (300, 3000), "river": (150, 1500), "waterfall": (150, 2000)}[str(kind)]
    bubbles_ = [_bubble(rng, float(np.exp(rng.uniform(np.log(lo), np.log(hi)))), rng.uniform(0.05, 0.4),
                        rng.uniform(4e-3, 3e-2))
                for _ in range(24)]
    turbulence = np.clip(1 + 0.5 * _wander(rng, n, rng.uniform(0.5, 3)), 0.1, None)
    rate = {"brook": rng.uniform(100, 500), "river": rng.uniform(80, 300), "waterfall": rng.uniform(50, 200)}[str(kind)]
    out = _scatter(rng, bubbles_, _events(rng, n, rate * turbulence), n, 0.8)
    noise_lo, noise_hi = {"brook": (300, 4000), "river": (80, 1500), "waterfall": (100, 5000)}[str(kind)]
    roar = _bandpass(rng.standard_normal(n), noise_lo, noise_hi) * np.clip(1 + 0.3 * _wander(rng, n, 1.0), 0.2, None)
    level = {"brook": rng.uniform(0.2, 0.8), "river": rng.uniform(0.8, 2.0), "waterfall": rng.uniform(2.0, 6.0)}[str(kind)]
    rms = lambda x: np.sqrt(np.mean(x ** 2)) + 1e-12  # noqa: E731
    out = out / rms(out) + level * roar / rms(roar)
    return _finish(out, 0.1)


def drip(rng: np.random.Generator, duration: float, echo: bool | None = None) -> np.ndarray:
    """Dripping: drops every 0.2-2 s (one to three drips), each a tick and a "plink" whose pitch rises;
    often in a cave or a sink (echo)."""
    n = int(duration * SR)
    out = np.zeros(n)
    for _ in range(int(rng.integers(1, 4))):
        period = rng.uniform(0.2, 2.0)
        onsets = _first(rng, duration, period) + np.cumsum(
            [0.0] + list(period * rng.uniform(0.7, 1.3, int(duration / period) + 1)))
        f0 = float(np.exp(rng.uniform(np.log(600), np.log(2500))))
        for onset in onsets[(onsets >= 0) & (onsets < duration - 0.05)]:
            k = 0.3 * _strike_noise(rng, 1500, 7000, 0.3e-3, 0.005)
            if rng.random() < 0.85:
                b = _bubble(rng, f0 * rng.uniform(0.9, 1.1), rng.uniform(0.15, 0.5), rng.uniform(0.01, 0.05))
                k = np.concatenate([k, np.zeros(max(0, len(b) - len(k)))])
                k[: len(b)] += b
            out += _place(k, [onset], [rng.uniform(0.6, 1.0)], n)
    if echo if echo is not None else rng.random() < 0.6:
        rt = rng.uniform(0.4, 2.0)
        tail_t = np.arange(int(rt * SR)) / SR
        tail = _lowpass(rng.standard_normal(len(tail_t)) * np.exp(-6.9 * tail_t / rt), rng.uniform(2000, 6000))
        tail *= 10 ** (rng.uniform(-12, 0) / 20) / np.sqrt(np.sum(tail ** 2))  # reverberant energy below the direct sound
        tail[0] += 1.0
        out = signal.fftconvolve(out, tail)[:n]
    return _finish(out, 0.005)


def pour(rng: np.random.Generator, duration: float, container_m: float | None = None, fill=(0.05, 0.9)) -> np.ndarray:
    """Pouring into a bottle or glass: a turbulent jet and bubbles exciting the air column above the
    water, whose quarter-wave resonance c / (4 (L - h)) rises as the level h rises."""
    n = int(duration * SR)
    length = container_m if container_m is not None else rng.uniform(0.12, 0.35)
    start = rng.uniform(0.0, 0.15) * duration
    stop = duration - rng.uniform(0.0, 0.15) * duration
    t = np.arange(n) / SR
    flow = np.clip((t - start) / 0.05, 0, 1) * np.clip((stop - t) / 0.1, 0, 1)
    # turbulence, falling off above ~1 kHz
    jet = _one_pole(_highpass(rng.standard_normal(n), 150), 800.0) * (1 + 0.3 * _wander(rng, n, 8.0))
    small = [_bubble(rng, float(np.exp(rng.uniform(np.log(800), np.log(4000)))), rng.uniform(0.05, 0.3),
                     rng.uniform(2e-3, 1e-2)) for _ in range(12)]
    excitation = (jet / (np.abs(jet).max() + 1e-9)
                  + 0.5 * _scatter(rng, small, _events(rng, n, rng.uniform(60, 250) * flow + 1e-6), n)) * flow
    f, frames, spec = signal.stft(excitation, fs=SR, nperseg=512, noverlap=384)
    level = fill[0] + (fill[1] - fill[0]) * np.clip((frames - start) / max(stop - start, 1e-3), 0, 1)
    f_res = np.minimum(SPEED_OF_SOUND / (4 * length * (1 - level)), 6000.0)
    gain = np.ones_like(np.abs(spec))
    strength, q = rng.uniform(10, 20), rng.uniform(8, 16)
    for m in (1, 3, 5):
        centre = m * f_res[None, :]
        gain += (strength / m ** 2) / (1 + ((f[:, None] - centre) / (centre / q)) ** 2)
    _, wav = signal.istft(spec * gain, fs=SR, nperseg=512, noverlap=384)
    return _finish(wav[:n] if len(wav) >= n else np.pad(wav, (0, n - len(wav))), 0.01)


def splash(rng: np.random.Generator, duration: float) -> np.ndarray:
    """Splashes: an object or a body entering water (a crash, a bubble cloud, droplets falling back),
    single, or repeated like swimming strokes or paddling."""
    n = int(duration * SR)

    def one(size: float) -> np.ndarray:
        length = int(min(duration, 1.5) * SR)
        crash = _strike_noise(rng, 150, 7000, rng.uniform(0.03, 0.15) * size, 0.5)
        thud = _lowpass(_strike_noise(rng, 40, 1000, 0.04, 0.15), 300)
        out = np.zeros(length)
        out[: len(crash)] += _lowpass(crash, rng.uniform(2000, 6000))
        out[: len(thud)] += rng.uniform(0.3, 1.0) * thud / (np.abs(thud).max() + 1e-9) * np.abs(crash).max()
        cloud = [_bubble(rng, float(np.exp(rng.uniform(np.log(300), np.log(3000)))), rng.uniform(0.05, 0.4),
                         rng.uniform(5e-3, 3e-2)) for _ in range(12)]
        decay = np.exp(-np.arange(length) / (rng.uniform(0.2, 0.6) * SR))
        out += 0.4 * np.abs(crash).max() * _scatter(rng, cloud, _events(rng, length, 300 * size * decay + 1e-6), length) / 3
        drops = _surface_kernels(rng, "water")
        fall = np.exp(-((np.arange(length) / SR - rng.uniform(0.2, 0.6)) / 0.2) ** 2)
        out += 0.3 * np.abs(crash).max() * _scatter(rng, drops, _events(rng, length, 150 * size * fall + 1e-6), length) / 3
        return out
    if rng.random() < 0.5:
        onsets = [_first(rng, duration, 0.5 * duration)] + list(rng.uniform(0, duration, int(rng.integers(0, 3))))
        sizes = rng.uniform(0.5, 1.5, len(onsets))
    else:  # strokes or paddling
        period = rng.uniform(0.5, 1.5)
        onsets = list(_every(rng, duration, period, 0.5, 0.2))
        sizes = rng.uniform(0.3, 0.6, len(onsets))
    out = np.zeros(n)
    for onset, size in zip(onsets, sizes):
        s = one(float(size))
        i = int(onset * SR)
        out[i:i + len(s)] += s[: n - i]
    return _finish(out, 0.005)


def tap(rng: np.random.Generator, duration: float) -> np.ndarray:
    """A tap running into a sink or a bath: a jet hiss, fizzing small bubbles, the basin's resonance,
    turned on and off."""
    n = int(duration * SR)
    t = np.arange(n) / SR
    on = rng.uniform(0, 0.3 * duration)
    off = rng.uniform(0.7, 1.1) * duration
    flow = np.clip((t - on) / 0.3, 0, 1) * np.clip((off - t) / 0.3, 0, 1) * (1 + 0.1 * _wander(rng, n, 3))
    jet = _resonate(_bandpass(rng.standard_normal(n), 400, 7500), rng.uniform(800, 3000), rng.uniform(2, 6),
                    rng.uniform(0.5, 2.0))
    fizz = [_bubble(rng, float(np.exp(rng.uniform(np.log(1500), np.log(6000)))), rng.uniform(0.02, 0.15),
                    rng.uniform(1e-3, 5e-3)) for _ in range(16)]
    out = jet / (np.abs(jet).max() + 1e-9) + rng.uniform(0.3, 1.0) * _scatter(
        rng, fizz, _events(rng, n, rng.uniform(300, 1200) * flow + 1e-6), n) / 4
    return _finish(out * flow, 0.02)


def waves(rng: np.random.Generator, duration: float) -> np.ndarray:
    """Waves on a shore: a swell that crashes (the noise opens up) and a fizzing backwash, every 5-12 s."""
    n = int(duration * SR)
    t = np.arange(n) / SR
    period = rng.uniform(5, 12)
    phase = (t / period + rng.uniform(0, 1)) % 1.0
    crash = np.exp(-((phase - 0.3) / 0.12) ** 2)
    wash = np.exp(-((phase - 0.6) / 0.2) ** 2)
    low = _lowpass(rng.standard_normal(n), 600)
    bright = _bandpass(rng.standard_normal(n), 800, 6000)
    out = (0.3 + crash) * low / (np.abs(low).max() + 1e-9) + (0.6 * crash + 0.4 * wash) * bright / (np.abs(bright).max() + 1e-9)
    return _finish(out, 0.1)


# ---------------------------------------------------------------------------- physical models (piano, guitar)
# A second way to make piano and guitar besides the soundfonts: strings simulated rather than sampled.
# The pieces come from render.piece_v2 (the same playing styles as the soundfont renders).

def karplus_strong(rng: np.random.Generator, f0: float, seconds: float, decay: float, pick: float = 0.2,
                   hardness: float = 0.5, damping: float = 0.15) -> np.ndarray:
    """A plucked string (extended Karplus-Strong): a delay line of one period fed back through a loss
    filter ([c, 1-2c, c], stronger for larger `damping` c: the high partials die first) with linear
    interpolation for the fractional period; computed a period at a time. `decay`: seconds in which the
    loop gain alone takes 60 dB off; the loss filter and the interpolation take more, the more the higher
    the partial and the note (as on a real string); `pick`: where along the string it is plucked (a comb
    notch); `hardness`: 0 soft flesh .. 1 hard pick."""
    n = int(seconds * SR)
    period = SR / f0
    lag = int(period)
    if lag < 3:
        raise ValueError(f"{f0:.0f} Hz is too high for a string at {SR} Hz")
    d, c = period - lag, damping
    taps = {lag - 1: c * (1 - d), lag: (1 - 2 * c) * (1 - d) + c * d, lag + 1: c * (1 - d) + (1 - 2 * c) * d,
            lag + 2: c * d}
    gain = 10 ** (-3 / (f0 * decay))
    excitation = _one_pole(rng.uniform(-1, 1, lag), 800 + 6000 * hardness)
    excitation = excitation - np.roll(excitation, max(1, int(pick * lag)))
    pad = lag + 2
    y = np.zeros(pad + n)  # y[pad + i] is sample i
    y[pad:pad + min(lag, n)] = excitation[:n]
    block = lag - 1
    for begin in range(lag, n, block):
        end = min(begin + block, n)
        y[pad + begin:pad + end] = gain * sum(w * y[pad + begin - m:pad + end - m] for m, w in taps.items())
    return y[pad:]


def _string_decay(f0: float, rng: np.random.Generator, kind: str) -> float:
    base = {"nylon": 2.5, "steel": 4.0, "electric": 5.0}[kind]
    return base * rng.uniform(0.7, 1.3) * (110 / f0) ** 0.4


def plucked_guitar(rng: np.random.Generator, duration: float) -> np.ndarray:
    """Guitar pieces (strums, finger-picking, single lines, power chords) on simulated strings: nylon or
    steel strings through a guitar body's resonances, or an electric guitar (pickup position, tone
    control, sometimes overdrive)."""
    from samstream.model.training.render import piece_v2  # the playing styles live with the soundfont renders

    n = int(duration * SR)
    kind = str(rng.choice(["nylon", "steel", "steel", "electric"]))
    style = str(rng.choice(["strum", "fingerpick", "lead", "power"] if kind == "electric" else ["strum", "fingerpick", "lead"]))
    notes, _controls = piece_v2(rng, "guitar", style, 40, 86, duration)
    pick = rng.uniform(0.08, 0.3)
    hardness = rng.uniform(0.1, 0.4) if kind == "nylon" else rng.uniform(0.4, 0.9)
    damping = {"nylon": rng.uniform(0.18, 0.25), "steel": rng.uniform(0.08, 0.18), "electric": rng.uniform(0.04, 0.12)}[kind]
    out = np.zeros(n + int(2 * SR))
    for onset, length, note, velocity in notes:
        f0 = 440.0 * 2 ** ((note - 69) / 12)
        ring = min(length + rng.uniform(0.05, 0.3), duration + 1.5 - onset)
        tone = karplus_strong(rng, f0, ring, _string_decay(f0, rng, kind), pick * rng.uniform(0.8, 1.2), hardness,
                              damping)
        release = int(length * SR)
        if release < len(tone):  # the fretting hand lifts or a palm mutes: the string is damped
            tone[release:] *= np.exp(-np.arange(len(tone) - release) / (rng.uniform(0.03, 0.12) * SR))
        i = int(max(0.0, onset) * SR)
        out[i:i + len(tone)] += (velocity / 127) ** 1.5 * tone[: len(out) - i]
    out = out[:n]
    if kind == "electric":
        pickup = int(rng.uniform(0.5, 3.0) * SR / 1000)
        out = out - rng.uniform(0.3, 0.9) * np.concatenate([np.zeros(pickup), out[:-pickup]])
        out = _resonate(_lowpass(out, rng.uniform(2500, 5000)), rng.uniform(1500, 3500), 2.0, rng.uniform(0.3, 1.0))
        if style == "power" or rng.random() < 0.3:
            out = _lowpass(_soft_clip(out, rng.uniform(3, 12)), rng.uniform(3000, 6000))
    else:
        for freq, q, g in ((rng.uniform(90, 120), 4.0, rng.uniform(0.5, 1.5)), (rng.uniform(180, 240), 4.0, rng.uniform(0.5, 1.5)),
                           (rng.uniform(380, 520), 3.0, rng.uniform(0.3, 1.0))):
            out = _resonate(out, freq, q, g)
        out = _lowpass(out, rng.uniform(3500, 5500) if kind == "nylon" else rng.uniform(5500, 7500))
    return _finish(out, 0.01)


def piano_note(rng: np.random.Generator, f0: float, velocity: float, seconds: float) -> np.ndarray:
    """One undamped piano note by modal synthesis: stiff-string partials f_k = k f0 sqrt(1 + B k^2), one
    to three slightly detuned strings (beating), a hammer whose strike position and hardness shape the
    spectrum (louder is brighter), a fast then slow (aftersound) decay, and the hammer's thump."""
    t = np.arange(int(seconds * SR), dtype=np.float32) / SR
    inharmonicity = float(np.exp(rng.uniform(np.log(4e-5), np.log(3e-4)))) * (f0 / 260) ** 0.8
    k = np.arange(1, 41)
    freqs = k * f0 * np.sqrt(1 + inharmonicity * k ** 2)
    amps = np.abs(np.sin(np.pi * k * rng.uniform(1 / 9, 1 / 7))) / k ** (2.3 - 1.4 * velocity)
    keep = (freqs < SR / 2 - 500) & (amps > 3e-3 * amps.max())  # what is left is 50 dB down or above Nyquist
    k, freqs, amps = k[keep], freqs[keep], amps[keep]
    scale = (260 / f0) ** 0.5
    fast = (rng.uniform(0.2, 0.6) * scale / (1 + k / 8)).astype(np.float32)
    slow = (rng.uniform(2.0, 8.0) * scale / (1 + k / 15)).astype(np.float32)
    after = rng.uniform(0.1, 0.35)
    env = (amps * (1 - after)).astype(np.float32) * np.exp(-t[:, None] / fast) \
        + (amps * after).astype(np.float32) * np.exp(-t[:, None] / slow)
    tone = np.zeros(len(t), dtype=np.float32)
    for s in range(1 if f0 < 80 else 2):
        detune = 2 ** ((rng.uniform(-2.0, 2.0) if s else 0.0) / 1200)
        phase = rng.uniform(0, 6.3, len(k)).astype(np.float32)
        tone += np.sum(env * np.sin((2 * np.pi * detune * freqs).astype(np.float32) * t[:, None] + phase), axis=1)
    thump = _lowpass(_strike_noise(rng, 30, 2000, 4e-3, 0.05), 300 + 1500 * velocity)
    tone[: len(thump)] += 0.05 * velocity * thump / (np.abs(thump).max() + 1e-9) * np.abs(tone).max()
    return tone.astype(np.float64)


def modal_piano(rng: np.random.Generator, duration: float) -> np.ndarray:
    """Piano pieces (chords, arpeggios, two hands, melodies) on a modal piano (one synthesis per key and
    loudness, reused like the keys of one instrument), dampers and the sustain pedal, and a soundboard's
    resonances."""
    from samstream.model.training.render import piece_v2  # the playing styles live with the soundfont renders

    n = int(duration * SR)
    style = str(rng.choice(["keys", "arpeggio", "two hands", "melody"]))
    notes, controls = piece_v2(rng, "piano", style, 28, 100, duration)
    pedal = sorted((t, v >= 64) for t, kind, ctrl, v in controls if kind == "cc" and ctrl == 64)

    def damper_falls(off: float) -> float:
        """At the key release, or when the pedal comes up after it."""
        down = False
        for when, state in pedal:
            if when > off and down:
                if not state:
                    return when
            elif when > off:
                return off
            down = state
        return duration + 1.5 if down else off
    keys: dict[tuple[int, int], np.ndarray] = {}
    out = np.zeros(n + int(3 * SR))
    for onset, length, note, velocity in notes:
        loudness = int(np.clip(velocity // 43, 0, 2))  # three hammer hardnesses
        if (note, loudness) not in keys:
            keys[(note, loudness)] = piano_note(rng, 440.0 * 2 ** ((note - 69) / 12), (loudness + 1) / 3, 2.5)
        tone = keys[(note, loudness)] * (velocity / 127)
        hold = int((damper_falls(onset + length) - onset) * SR)
        if hold < len(tone):
            tone = tone.copy()
            tone[hold:] *= np.exp(-np.arange(len(tone) - hold) / (0.08 * SR))
        i = int(max(0.0, onset) * SR)
        out[i:i + len(tone)] += tone[: len(out) - i]
    out = out[:n]
    for _ in range(3):
        out = _resonate(out, float(np.exp(rng.uniform(np.log(80), np.log(2500)))), rng.uniform(1.5, 4), rng.uniform(0.2, 0.8))
    return _finish(_highpass(out, 30.0), 0.01)


# -------------------------------------------------------------------------------------- the registry

VARIANTS_V2: dict[str, dict[str, tuple]] = {  # class -> variant -> (generator, weight)
    "siren": {"wail": (siren_wail, 1.0), "yelp": (siren_yelp, 0.9), "hilo": (siren_hilo, 1.3),
              "rumbler": (siren_rumbler, 0.3), "mechanical": (siren_mechanical, 0.5), "air raid": (siren_air_raid, 0.3),
              "switching": (siren_switching, 0.8)},
    "engine": {"idle": (engine_idle, 0.7), "rev": (engine_rev, 0.8), "accelerate": (engine_accelerate, 1.2),
               "cruise": (engine_cruise, 0.6), "decelerate": (engine_decelerate, 0.4), "motorcycle": (engine_motorcycle, 0.8),
               "truck": (engine_truck, 0.7), "two-stroke": (engine_two_stroke, 0.4), "interior": (engine_interior, 0.4)},
    "bell": {"church": (church_bell, 1.6), "tubular chimes": (tubular_chimes, 0.8), "wind chimes": (wind_chimes, 0.4),
             "handbell": (handbell, 0.6), "bicycle": (bicycle_bell, 0.6), "doorbell": (doorbell, 0.8),
             "electric bell": (electric_bell, 0.4), "gong": (gong, 0.6), "small bells": (small_bells, 0.5)},
    "phone ringing": {"mechanical bell": (phone_bell, 1.0), "electronic": (phone_electronic, 1.0),
                      "ringback": (phone_ringback, 0.6), "ringtone": (phone_melodic, 1.2)},
    "water": {"rain": (rain, 1.2), "stream": (stream, 1.0), "drip": (drip, 0.8), "pour": (pour, 0.7),
              "splash": (splash, 0.7), "tap": (tap, 0.6), "waves": (waves, 0.4)},
    "guitar": {"plucked strings": (plucked_guitar, 1.0)},
    "piano": {"modal piano": (modal_piano, 1.0)},
}
# Where the listener is: (pass-by share, at-a-distance share); the rest is close by.
SCENES_V2 = {"siren": (0.4, 0.35), "engine": (0.3, 0.15), "bell": (0.0, 0.35), "phone ringing": (0.0, 0.1),
             "water": (0.0, 0.15)}
_STATIONARY = {"engine": ("interior",)}  # variants that never drive past


def plan_v2(cls: str, rng: np.random.Generator) -> tuple[str, str]:
    """The first draws of a v2 sound: (variant, scene "" | "pass-by" | "distant"). Known before the
    sound is made, so a renderer can name a stem already on disk without making it again."""
    variants = VARIANTS_V2[cls]
    names = sorted(variants)
    weights = np.array([variants[v][1] for v in names])
    name = names[rng.choice(len(names), p=weights / weights.sum())]
    moving, far = SCENES_V2.get(cls, (0.0, 0.0))
    u = rng.random()
    if u < moving and name not in _STATIONARY.get(cls, ()):
        return name, "pass-by"
    return name, "distant" if moving <= u < moving + far else ""


def realize_v2(cls: str, variant: str, scene: str, rng: np.random.Generator, duration: float) -> np.ndarray:
    """The sound of a plan: the variant's generator, then the scene."""
    wav = VARIANTS_V2[cls][variant][0](rng, duration)
    if scene == "pass-by":
        return _finish(pass_by(wav.astype(np.float64), rng), 0.05)
    if scene == "distant":
        return _finish(at_distance(wav.astype(np.float64), rng), 0.02)
    return wav


def generate_v2(cls: str, rng: np.random.Generator, duration: float) -> tuple[np.ndarray, str]:
    """One v2 sound of a class: (16 kHz float32 peaking at 0.5, "variant[/scene]")."""
    variant, scene = plan_v2(cls, rng)
    return realize_v2(cls, variant, scene, rng, duration), f"{variant}/{scene}" if scene else variant
