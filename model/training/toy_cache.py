"""A tiny data cache of synthesised audio in the real unpacked layout of a few packages.

For tests and for trying the pipeline without network: `make_toy_cache(dir)` writes
DIR/unpacked/<package>/... exactly where the catalogue's globs look, then `index` works as on the
real cache. Voices are harmonic sources through formant filters with syllable envelopes (f0 ~110 Hz
for the male speakers, ~220 Hz for the female ones); barks, cars, keys and instruments are simple
but distinct sounds.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
from scipy import signal

SR = 16000


def _voice(rng: np.random.Generator, f0: float, seconds: float) -> np.ndarray:
    t = np.arange(int(seconds * SR)) / SR
    pitch = f0 * (1 + 0.05 * np.sin(2 * np.pi * rng.uniform(2, 5) * t))
    phase = 2 * np.pi * np.cumsum(pitch) / SR
    source = sum(np.sin(k * phase) / k for k in range(1, 13))
    out = np.zeros_like(t)
    for formant in rng.uniform([500, 1200, 2400], [900, 2000, 3200]):
        out += signal.sosfilt(signal.butter(2, [formant * 0.85, formant * 1.15], "bandpass", fs=SR, output="sos"), source)
    syllables = np.clip(np.sin(2 * np.pi * rng.uniform(3, 5) * t + rng.uniform(0, 6)), 0, None)
    return out * syllables


def _bark(rng: np.random.Generator, seconds: float) -> np.ndarray:
    n = int(seconds * SR)
    out = np.zeros(n)
    for onset in np.arange(0.05, seconds - 0.2, rng.uniform(0.35, 0.6)):
        t = np.arange(int(0.15 * SR)) / SR
        burst = (np.sin(2 * np.pi * rng.uniform(400, 700) * t) + 0.5 * rng.standard_normal(len(t))) * np.exp(-t / 0.04)
        out[int(onset * SR):int(onset * SR) + len(t)] += burst
    return out


def _tone(freq: float, seconds: float, decay: float) -> np.ndarray:
    t = np.arange(int(seconds * SR)) / SR
    return sum(np.sin(2 * np.pi * k * freq * t) / k for k in (1, 2, 3)) * np.exp(-t / decay)


def _noise(rng: np.random.Generator, seconds: float, lo: float, hi: float) -> np.ndarray:
    n = rng.standard_normal(int(seconds * SR))
    return signal.sosfilt(signal.butter(2, [lo, hi], "bandpass", fs=SR, output="sos"), n)


def _write(path: Path, wav: np.ndarray) -> None:
    import soundfile as sf

    path.parent.mkdir(parents=True, exist_ok=True)
    wav = 0.5 * wav / max(1e-9, float(np.abs(wav).max()))
    fmt = {".ogg": "OGG", ".wav": "WAV", ".flac": "FLAC"}[path.suffix]
    sf.write(str(path), wav.astype(np.float32), SR, format=fmt, subtype="VORBIS" if fmt == "OGG" else None)


def make_toy_cache(cache_dir: Path, seed: int = 0) -> Path:
    """Write the toy packages under cache_dir/unpacked; returns cache_dir."""
    rng = np.random.default_rng(seed)
    u = Path(cache_dir) / "unpacked"
    fillets = u / "fillets-ng-data-cs/usr/share/games/fillets-ng/sound"
    for level in ("city", "reactor", "pavement", "viking"):
        for k in range(2):
            _write(fillets / level / "cs" / f"{level[:3]}-m-{k}.ogg", _voice(rng, 225, rng.uniform(1.0, 2.0)))
            _write(fillets / level / "cs" / f"{level[:3]}-v-{k}.ogg", _voice(rng, 110, rng.uniform(1.0, 2.0)))
        _write(fillets / level / "cs" / f"{level[:3]}-x-0.ogg", _noise(rng, 0.5, 200, 2000))  # not a voice rule
    voices = u / "hedgewars-data/usr/share/games/hedgewars/Data/Sounds/voices"
    for pack, f0 in (("Pirate", 120), ("Robot", 150), ("Default", 135), ("Surfer", 170)):
        for word in ("Hello", "Byebye", "Incoming"):
            _write(voices / pack / f"{word}.ogg", _voice(rng, f0, rng.uniform(0.6, 1.2)))
        _write(voices / pack / "Laugh.ogg", _voice(rng, f0 * 1.5, 0.8) * _noise(rng, 0.8, 100, 300)[: int(0.8 * SR)])
    letters = u / "klettres-data/usr/share/klettres"
    for lang, f0 in (("fr", 115), ("de", 205), ("es", 140), ("it", 190)):
        for letter in "abc":
            _write(letters / lang / "alpha" / f"{letter}.ogg", _voice(rng, f0, rng.uniform(0.5, 0.9)))
    stamps = u / "tuxpaint-stamps-default/usr/share/tuxpaint/stamps"
    _write(stamps / "animals/dogs/dog.ogg", _bark(rng, 1.5))
    _write(stamps / "animals/dogs/dog_desc_fr.ogg", _voice(rng, 200, 1.5))
    _write(stamps / "vehicles/emergency/firetruck.ogg", _tone(800, 2.0, 5.0))
    sounds = u / "scratch/usr/share/scratch/Media/Sounds"
    _write(sounds / "Animal/Dog1.wav", _bark(rng, 1.2))
    _write(sounds / "Animal/Dog2.wav", _bark(rng, 1.0))
    _write(sounds / "Effects/CarPassing.wav", _noise(rng, 2.5, 60, 600))
    _write(sounds / "Effects/MotorcyclePassing.wav", _noise(rng, 2.0, 80, 900))
    keys = u / "bucklespring-data/usr/share/buckle/wav"
    for name in ("1e-0", "1e-1", "2a-0", "3b-0", "4f-1"):  # 3b, 4f: scan codes >= 0x30, not typing
        _write(keys / f"{name}.wav", _noise(rng, 0.08, 1000, 6000))
    samples = u / "sonic-pi-samples/usr/lib/sonic-pi/etc/samples"
    _write(samples / "ambi_piano.flac", _tone(261.6, 3.0, 0.8))
    _write(samples / "bass_hit_c.flac", _tone(65.4, 1.5, 0.5))
    _write(samples / "drum_snare_hard.flac", _noise(rng, 0.4, 200, 5000) * np.exp(-np.arange(int(0.4 * SR)) / 1500))
    music = u / "widelands-data/usr/share/games/widelands/data/music"
    _write(music / "ingame_00.ogg", sum(_tone(f, 8.0, 4.0) for f in (220, 277, 330)) + 0.1 * _noise(rng, 8.0, 100, 4000))
    rcc = u / "gcompris-qt-data/rcc/instruments/gcompris/src/activities/instruments/resource"
    _write(rcc / "piano.ogg", _tone(392.0, 2.0, 0.6))
    _write(rcc / "violin.ogg", _tone(440.0, 2.0, 3.0))
    cheer = u / "tuxmath-data/usr/share/tuxmath/sounds/cheer.wav"
    _write(cheer, _noise(rng, 1.0, 500, 4000))
    twin = u / "tuxtype-data/usr/share/tuxtype/sounds/cheer.wav"  # byte-identical duplicate
    twin.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(cheer, twin)
    _write(u / "etw-data/usr/share/games/etw/sound/crowd/crowd1.wav", _noise(rng, 2.0, 300, 3000))
    return Path(cache_dir)


def write_toy_rir_bank(cache_dir: Path, config=None) -> Path:
    """A short decaying-noise room bank under the file name of config's bank (default: AugmentConfig()), so
    tests that mix with reverb never run pyroomacoustics (~30 s for the real 64-room bank)."""
    from samstream.model.training.augment import AugmentConfig

    config = config or AugmentConfig()
    name = (f"bank_{config.rir_bank_size}x{config.rir_sources}_{config.rir_max_seconds}s_"
            f"{config.rt60_range[0]}-{config.rt60_range[1]}.npy")
    rng = np.random.default_rng(0)
    bank = rng.standard_normal((config.rir_bank_size, config.rir_sources, 100)) * np.exp(-np.arange(100) / 20)
    bank[..., 0] = 1.0
    path = Path(cache_dir) / "rirs" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, bank.astype(np.float32))
    return path
