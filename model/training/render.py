"""`samstream data render`: synthetic stems where real recordings are scarce.

- TTS speech (espeak-ng languages x voice variants x pitch/speed, flite voices, festival voices),
  one folder per speaker, labelled "man speaking" / "woman speaking" by the voice's gender.
- Soundfont instrument stems: random note sequences (melodies, chords, strums, bass lines, drum
  patterns) played by pyfluidsynth with the synth kept loaded.
- Procedural sounds (procedural.py), marked origin "procedural".

Held out: a fixed ~20% of espeak-ng voice variants per gender plus flite "awb" and festival "ked"
(unseen voices); the MuseScore General Lite soundfont (an unseen soundfont); procedural renders
from a separate seed range. Training renders never use them. Writes stems under
DIR/stems/_rendered/ and their entries to DIR/stems/rendered.json (`samstream data render` then
rewrites DIR/index.json).
Idempotent: a stem already on disk is not rendered again.
"""

from __future__ import annotations

import hashlib
import re
import shutil
import subprocess
import sys
import tempfile
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
from tqdm import tqdm

from samstream.model.training.common import SAMPLE_RATE, DataError, read_json, write_flac, write_json
from samstream.model.training.index import RENDERED_NAME
from samstream.model.training.split import HELDOUT, TRAIN

RENDER_DIR = "stems/_rendered"  # stems/_rendered/<family>/...
FLUID_GM = Path("/usr/share/sounds/sf2/FluidR3_GM.sf2")
MUSESCORE_LITE = Path("/usr/share/sounds/sf3/MuseScore_General_Lite.sf3")
RED_ZEPPELIN = "unpacked/avldrums.lv2-soundfont/usr/share/sounds/sf2/Red_Zeppelin_4_LV2.sf2"

# Latin-script espeak-ng languages: they read our English text with their own accent.
ESPEAK_LANGUAGES = ("en-us", "en-gb", "en-gb-scotland", "en-gb-x-rp", "en-029", "en-gb-x-gbclan", "de", "fr-fr",
                    "es", "it", "pt", "nl", "pl", "sv", "cs", "hu", "ro", "fi", "da", "id", "sw", "af")
ESPEAK_SKIP_VARIANTS = ("Demonic", "announcer")
FLITE_VOICES = {"kal16": "male", "awb": "male", "rms": "male", "slt": "female"}
FESTIVAL_VOICES = {"kal_diphone": "male", "ked_diphone": "male", "cmu_us_slt_arctic_hts": "female"}
HELDOUT_VOICES = {"flite:awb", "festival:ked_diphone"}
# Share of TTS speakers per engine: espeak-ng has ~90 voice variants, flite and festival sound more natural.
ENGINE_SHARE = {"espeak-ng": 0.6, "flite": 0.25, "festival": 0.15}

# class -> (GM programs, lowest note, highest note, playing style)
INSTRUMENTS = {
    "piano": ((0, 1, 2, 3, 4, 5), 45, 88, "keys"),
    "guitar": ((24, 25, 26, 27, 28, 29, 30), 40, 79, "strum"),
    "violin": ((40, 41, 42, 44, 45, 48, 49), 48, 93, "melody"),
    "bass": ((32, 33, 34, 35, 36, 37, 38, 39), 28, 55, "bassline"),
    "brass": ((56, 57, 58, 59, 60, 61), 48, 82, "melody"),
    "woodwind": ((64, 65, 66, 68, 70, 71, 72, 73, 74, 75), 55, 93, "melody"),
    "organ": ((16, 17, 18, 19), 40, 84, "keys"),
    "accordion": ((21, 23), 48, 84, "keys"),
    "harmonica": ((22,), 55, 84, "melody"),
    "singing": ((52, 53, 54), 50, 79, "melody"),
    "drums": ((), 35, 81, "drums"),
}
PROCEDURAL_CLASSES = ("siren", "bell", "phone ringing", "engine", "applause", "bubbles", "alarm")
HELDOUT_SEED_OFFSET = 1_000_000  # procedural held-out renders come from seeds training never uses


@dataclass(frozen=True)
class RenderConfig:
    minutes: float = 10.0  # training minutes per rendered class (man/woman speaking, each instrument, ...)
    heldout_share: float = 0.25  # held-out minutes = heldout_share * minutes
    seed: int = 0
    workers: int = 2
    speaker_seconds: float = 30.0  # speech per TTS speaker
    tts: bool = True
    instruments: bool = True
    procedural: bool = True


def _stable(*parts) -> int:
    return int(hashlib.sha1("|".join(map(str, parts)).encode()).hexdigest()[:12], 16)


def _entry(cache_dir: Path, path: Path, cls: str, package: str, source: str, origin: str, split: str,
           split_unit: str | None = None, speaker: str | None = None, gender: str | None = None,
           voice: str | None = None) -> dict:
    rel = path.relative_to(cache_dir).as_posix()
    return {"id": f"render:{rel[len(RENDER_DIR) + 1:]}", "path": rel, "class": cls, "package": package,
            "source": source, "speaker": speaker, "gender": gender, "voice": voice,
            "duration": round(sf.info(str(path)).frames / SAMPLE_RATE, 4), "md5": None, "origin": origin,
            "split": split, "split_unit": split_unit, "duplicates": []}


# ----------------------------------------------------------------------------------------------- TTS

def text_corpus() -> list[str]:
    """English sentences of 4-25 words from the licence texts every Debian system carries."""
    sentences: list[str] = []
    for path in sorted(Path("/usr/share/common-licenses").glob("*")):
        if not path.is_file():
            continue
        text = re.sub(r"\s+", " ", path.read_text(errors="ignore"))
        for sentence in re.split(r"(?<=[.;:!?])\s+", text):
            sentence = re.sub(r"[^A-Za-z0-9,' -]", " ", sentence).strip(" ,-")
            words = sentence.split()
            if 4 <= len(words) <= 25 and not sentence.isupper():
                sentences.append(" ".join(words).lower().capitalize() + ".")
    if len(sentences) < 100:
        raise DataError("no text to speak: /usr/share/common-licenses is missing (install base-files)")
    return sorted(set(sentences))


def espeak_variants() -> dict[str, str]:
    """variant file name -> "male" | "female", from `espeak-ng --voices=variant`."""
    out = subprocess.run(["espeak-ng", "--voices=variant"], capture_output=True, text=True, check=True).stdout
    variants = {}
    for line in out.splitlines()[1:]:
        fields = line.split()
        if len(fields) >= 5 and fields[4].startswith("!v/"):
            name, gender = fields[4][3:], fields[2].split("/")[-1]
            if gender in ("M", "F") and name not in ESPEAK_SKIP_VARIANTS:
                variants[name] = "female" if gender == "F" else "male"
    return variants


def tts_voices() -> list[dict]:
    """Every usable TTS voice with its gender and split (held-out voices chosen by a fixed hash)."""
    voices = []
    variants = espeak_variants()
    for gender in ("male", "female"):
        names = sorted((n for n, g in variants.items() if g == gender), key=lambda n: _stable("variant", n))
        n_held = max(1, round(0.2 * len(names)))
        for i, name in enumerate(names):
            voices.append({"engine": "espeak-ng", "voice": f"espeak-ng:{name}", "variant": name, "gender": gender,
                           "split": HELDOUT if i < n_held else TRAIN})
    for engine, table in (("flite", FLITE_VOICES), ("festival", FESTIVAL_VOICES)):
        for name, gender in table.items():
            key = f"{engine}:{name}"
            voices.append({"engine": engine, "voice": key, "variant": name, "gender": gender,
                           "split": HELDOUT if key in HELDOUT_VOICES else TRAIN})
    return voices


def _speak(engine: str, variant: str, language: str, pitch: int, speed: float, text: str, out_wav: Path) -> None:
    if engine == "espeak-ng":
        cmd = ["espeak-ng", "-v", f"{language}+{variant}", "-p", str(pitch), "-s", str(int(175 * speed)),
               "-w", str(out_wav), text]
    elif engine == "flite":
        cmd = ["flite", "-voice", variant, "--setf", f"duration_stretch={1 / speed:.3f}",
               "--setf", f"int_f0_target_mean={pitch}", "-t", text, "-o", str(out_wav)]
    else:
        txt = out_wav.with_suffix(".txt")
        txt.write_text(text)
        cmd = ["text2wave", "-eval", f"(voice_{variant})", "-eval",
               f"(Parameter.set 'Duration_Stretch {1 / speed:.3f})", str(txt), "-o", str(out_wav)]
    subprocess.run(cmd, check=True, capture_output=True, timeout=60)


def render_speaker(job: dict) -> list[dict]:
    """Worker: render one TTS speaker's utterances (skips those already on disk)."""
    from samstream.model.training.decode import decode_to_16k

    cache_dir, folder = Path(job["cache_dir"]), Path(job["folder"])
    rng = np.random.default_rng(job["seed"])
    cls = "man speaking" if job["gender"] == "male" else "woman speaking"
    entries, total = [], 0.0
    with tempfile.TemporaryDirectory() as tmp:
        for k in range(200):
            if total >= job["seconds"]:
                break
            text = " ".join(rng.choice(job["sentences"], size=int(rng.integers(1, 3))))
            path = folder / f"{k:03d}.flac"
            if not path.exists():
                wav_path = Path(tmp) / "utt.wav"
                _speak(job["engine"], job["variant"], job["language"], job["pitch"], job["speed"], text, wav_path)
                wav = decode_to_16k(wav_path)
                wav = wav[: int(12 * SAMPLE_RATE)]  # long sentences are cut: utterances stay short
                write_flac(path, 0.7 * wav / max(1e-6, float(np.abs(wav).max())))
            entry = _entry(cache_dir, path, cls, job["engine"], f"tts {job['engine']} {job['speaker']}: {text[:80]}",
                           "rendered", job["split"], f"voice:{job['voice']}" if job["split"] == HELDOUT else None,
                           speaker=job["speaker"], gender=job["gender"], voice=job["voice"])
            entries.append(entry)
            total += entry["duration"]
    return entries


def tts_jobs(cache_dir: Path, config: RenderConfig) -> list[dict]:
    for tool in ("espeak-ng", "flite", "text2wave"):
        if shutil.which(tool) is None:
            raise DataError(f"`{tool}` not found: run `samstream data fetch` as root (it installs the TTS tools)")
    sentences = text_corpus()
    voices = tts_voices()
    rng = np.random.default_rng([config.seed, 1])
    jobs = []
    for gender in ("male", "female"):
        for split, minutes in ((TRAIN, config.minutes), (HELDOUT, config.minutes * config.heldout_share)):
            pool = [v for v in voices if v["gender"] == gender and v["split"] == split]
            engines = sorted({v["engine"] for v in pool})
            weights = np.array([ENGINE_SHARE[e] for e in engines])
            n_speakers = max(1, int(np.ceil(minutes * 60 / config.speaker_seconds)))
            for i in range(n_speakers):
                engine = engines[rng.choice(len(engines), p=weights / weights.sum())]
                candidates = [v for v in pool if v["engine"] == engine]
                v = candidates[rng.integers(len(candidates))]
                language = str(rng.choice(ESPEAK_LANGUAGES)) if v["engine"] == "espeak-ng" else "en"
                if v["engine"] == "espeak-ng":
                    pitch = int(rng.integers(25, 75))
                else:  # flite: mean F0 in Hz around the voice's own
                    pitch = int(rng.integers(95, 135) if gender == "male" else rng.integers(160, 220))
                speed = float(np.round(rng.uniform(0.8, 1.2), 2))
                speaker = f"{v['voice']}:{language}:p{pitch}:s{speed}:{split}{i}"
                slug = re.sub(r"[^A-Za-z0-9_.+-]", "_", speaker)
                jobs.append({"kind": "tts", "cache_dir": str(cache_dir), "folder": str(cache_dir / RENDER_DIR / "tts" / slug),
                             "engine": v["engine"], "variant": v["variant"], "voice": v["voice"], "gender": gender,
                             "language": language, "pitch": pitch, "speed": speed, "speaker": speaker,
                             "split": split, "seconds": config.speaker_seconds, "sentences": sentences,
                             "seed": _stable(config.seed, speaker)})
    return jobs


# ------------------------------------------------------------------------------------- instruments

def note_events(rng: np.random.Generator, style: str, low: int, high: int, seconds: float) -> list[tuple[float, float, int, int]]:
    """(onset s, duration s, MIDI note, velocity) for one random piece in the given playing style."""
    beat = 60.0 / rng.uniform(70, 160)
    root = int(rng.integers(0, 12))
    scale = np.array([0, 2, 4, 5, 7, 9, 11] if rng.random() < 0.5 else [0, 2, 3, 5, 7, 8, 10])
    pitches = np.array([n for n in range(low, high + 1) if (n - root) % 12 in scale])
    events: list[tuple[float, float, int, int]] = []
    t = 0.0
    if style == "drums":
        steps = beat / 4
        kick = rng.random(16) < np.where(np.arange(16) % 8 == 0, 0.95, 0.15)
        snare = rng.random(16) < np.where(np.arange(16) % 8 == 4, 0.95, 0.08)
        hat_every = int(rng.choice([1, 2, 2, 4]))
        hat_note = int(rng.choice([42, 44, 46, 51]))
        step = 0
        while t < seconds:
            s = step % 16
            jitter = rng.normal(0, 0.004)
            if kick[s]:
                events.append((t + jitter, 0.2, 36, int(rng.integers(90, 127))))
            if snare[s]:
                events.append((t + jitter, 0.2, int(rng.choice([38, 40])), int(rng.integers(80, 127))))
            if s % hat_every == 0:
                events.append((t + jitter, 0.1, hat_note, int(rng.integers(40, 100))))
            if step % 64 == 0 and rng.random() < 0.6:
                events.append((t, 1.0, int(rng.choice([49, 57])), 110))
            if s >= 12 and step % 32 >= 28 and rng.random() < 0.4:  # fill on toms
                events.append((t + jitter, 0.2, int(rng.choice([41, 43, 45, 47, 48, 50])), int(rng.integers(70, 120))))
            t += steps
            step += 1
        return events
    idx = int(rng.integers(len(pitches) // 4, 3 * len(pitches) // 4))
    while t < seconds:
        length = beat * float(rng.choice([0.5, 1, 1, 2, 3, 4] if style != "bassline" else [0.5, 1, 1, 2]))
        if rng.random() < 0.12:  # rest
            t += length
            continue
        idx = int(np.clip(idx + rng.choice([-3, -2, -1, -1, 0, 1, 1, 2, 3]), 0, len(pitches) - 1))
        velocity = int(rng.integers(55, 120))
        note = int(pitches[idx])
        if style in ("keys", "strum") and rng.random() < 0.6:
            chord = [note, note + (3 if rng.random() < 0.5 else 4), note + 7]
            spread = 0.0 if style == "keys" else rng.uniform(0.01, 0.03)
            for j, n in enumerate(chord):
                if n <= high:
                    events.append((t + j * spread, length * 0.95, n, velocity))
        else:
            legato = 0.98 if style == "melody" else 0.8
            events.append((t, length * legato, note, velocity))
        t += length
    return events


def play(synth, channel: int, events, seconds: float) -> np.ndarray:
    """Play events on a loaded fluidsynth synth; returns mono float32 with a 1.5 s release tail."""
    timeline = sorted([(on, 1, n, v) for on, d, n, v in events] + [(on + d, 0, n, 0) for on, d, n, v in events])
    chunks, now = [], 0
    for when, is_on, note, velocity in timeline:
        sample = max(now, int(max(0.0, when) * SAMPLE_RATE))
        if sample > now:
            chunks.append(synth.get_samples(sample - now))
            now = sample
        if is_on:
            synth.noteon(channel, note, velocity)
        else:
            synth.noteoff(channel, note)
    synth.all_notes_off(channel)  # a note left hanging would ring through the next piece
    end = int((seconds + 1.5) * SAMPLE_RATE)
    if end > now:
        chunks.append(synth.get_samples(end - now))
    stereo = np.concatenate(chunks).astype(np.float32).reshape(-1, 2) / 32768.0
    return stereo.mean(axis=1)


def render_instrument(job: dict) -> list[dict]:
    """Worker: render one instrument class from one soundfont until its minutes are reached."""
    import fluidsynth

    cache_dir, folder = Path(job["cache_dir"]), Path(job["folder"])
    programs, low, high, style = INSTRUMENTS[job["cls"]]
    rng = np.random.default_rng(job["seed"])
    synth = None
    entries, total, k = [], 0.0, 0
    while total < job["seconds"]:
        seconds = float(rng.uniform(8, 20))
        if style == "drums":
            bank, program = (0, 0) if job["drum_kit_bank0"] else (128, int(rng.choice(job["drum_programs"])))
        else:
            bank, program = 0, int(rng.choice(programs))
        events = note_events(rng, style, low, high, seconds)
        path = folder / f"{k:04d}_p{bank}-{program}.flac"
        if not path.exists():
            if synth is None:
                synth = fluidsynth.Synth(samplerate=float(SAMPLE_RATE), gain=0.6)
                sfid = synth.sfload(job["soundfont"])
            channel = 9 if bank == 128 else 0
            synth.program_select(channel, sfid, bank, program)
            wav = play(synth, channel, events, seconds)
            synth.system_reset()
            peak = float(np.abs(wav).max())
            if peak < 1e-4:
                k += 1
                continue
            write_flac(path, 0.7 * wav / peak)
        entry = _entry(cache_dir, path, job["cls"], job["package"], f"soundfont {Path(job['soundfont']).name} bank {bank} program {program}",
                       "rendered", job["split"], f"voice:{job['package']}" if job["split"] == HELDOUT else None,
                       voice=job["package"])
        entries.append(entry)
        total += entry["duration"]
        k += 1
    if synth is not None:
        synth.delete()
    return entries


def instrument_jobs(cache_dir: Path, config: RenderConfig) -> list[dict]:
    for path in (FLUID_GM, MUSESCORE_LITE):
        if not path.exists():
            raise DataError(f"{path} not found: run `samstream data fetch` as root (it installs the soundfonts)")
    try:
        import fluidsynth  # noqa: F401  (pyfluidsynth; needs Debian's libfluidsynth3)
    except (ImportError, OSError) as error:
        raise DataError(f"pyfluidsynth is not usable ({error}): pip install pyfluidsynth, and run "
                        "`samstream data fetch` as root for libfluidsynth3") from error
    zeppelin = cache_dir / RED_ZEPPELIN
    jobs = []
    for cls in INSTRUMENTS:
        sources = [(FLUID_GM, "fluid-soundfont-gm", TRAIN, config.minutes, False),
                   (MUSESCORE_LITE, "musescore-general-soundfont-small", HELDOUT, config.minutes * config.heldout_share, False)]
        if cls == "drums" and zeppelin.exists():  # a real multi-sampled kit: half the training drums
            sources = [(FLUID_GM, "fluid-soundfont-gm", TRAIN, config.minutes / 2, False),
                       (zeppelin, "avldrums.lv2-soundfont", TRAIN, config.minutes / 2, True), sources[1]]
        for soundfont, package, split, minutes, bank0 in sources:
            slug = cls.replace(" ", "_")
            jobs.append({"kind": "instrument", "cache_dir": str(cache_dir), "cls": cls, "soundfont": str(soundfont),
                         "package": package, "split": split, "seconds": minutes * 60, "drum_kit_bank0": bank0,
                         "drum_programs": (0, 8, 16, 24, 25, 32, 40, 48), "seed": _stable(config.seed, cls, package),
                         "folder": str(cache_dir / RENDER_DIR / "instruments" / package / slug)})
    return jobs


# -------------------------------------------------------------------------------------- procedural

def render_procedural(job: dict) -> list[dict]:
    from samstream.model.training.procedural import GENERATORS

    cache_dir, folder = Path(job["cache_dir"]), Path(job["folder"])
    entries, total, k = [], 0.0, 0
    while total < job["seconds"]:
        seed = job["seed_base"] + k
        rng = np.random.default_rng(seed)
        duration = float(rng.uniform(6, 12))
        path = folder / f"{seed}.flac"
        if not path.exists():
            write_flac(path, GENERATORS[job["cls"]](rng, duration))
        entries.append(_entry(cache_dir, path, job["cls"], "procedural", f"procedural {job['cls']} seed {seed}",
                              "procedural", job["split"], f"file:{seed}" if job["split"] == HELDOUT else None))
        total += entries[-1]["duration"]
        k += 1
    return entries


def procedural_jobs(cache_dir: Path, config: RenderConfig) -> list[dict]:
    jobs = []
    for i, cls in enumerate(PROCEDURAL_CLASSES):
        for split, minutes, offset in ((TRAIN, config.minutes, 0), (HELDOUT, config.minutes * config.heldout_share, HELDOUT_SEED_OFFSET)):
            jobs.append({"kind": "procedural", "cache_dir": str(cache_dir), "cls": cls, "split": split,
                         "seconds": minutes * 60, "seed_base": config.seed * 10_000_000 + offset + i * 100_000,
                         "folder": str(cache_dir / RENDER_DIR / "procedural" / cls.replace(" ", "_") / split)})
    return jobs


_WORKERS = {"tts": render_speaker, "instrument": render_instrument, "procedural": render_procedural}


def _run_job(job: dict) -> list[dict]:
    return _WORKERS[job["kind"]](job)


def render(cache_dir: Path, config: RenderConfig = RenderConfig()) -> list[dict]:
    """Render every enabled family, write DIR/stems/rendered.json; returns the rendered entries."""
    jobs = []
    if config.tts:
        jobs += tts_jobs(cache_dir, config)
    if config.instruments:
        jobs += instrument_jobs(cache_dir, config)
    if config.procedural:
        jobs += procedural_jobs(cache_dir, config)
    # Families not rendered this time keep their earlier entries.
    families = {"tts": config.tts, "instruments": config.instruments, "procedural": config.procedural}
    manifest = cache_dir / RENDERED_NAME
    kept = [e for e in (read_json(manifest) if manifest.exists() else [])
            if not families.get(e["path"].split("/")[2], False)]
    entries: list[dict] = []
    with ProcessPoolExecutor(max_workers=max(1, config.workers)) as pool:
        for result in tqdm(pool.map(_run_job, jobs), total=len(jobs), desc="render", unit="job", file=sys.stderr):
            entries.extend(result)
    write_json(manifest, kept + entries)
    return entries
