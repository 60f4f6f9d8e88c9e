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
    variety: str = "v1"  # "v2": the realistic-variety procedural sounds and instrument renders, in their own folders


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


def _check_soundfonts() -> None:
    for path in (FLUID_GM, MUSESCORE_LITE):
        if not path.exists():
            raise DataError(f"{path} not found: run `samstream data fetch` as root (it installs the soundfonts)")
    try:
        import fluidsynth  # noqa: F401  (pyfluidsynth; needs Debian's libfluidsynth3)
    except (ImportError, OSError) as error:
        raise DataError(f"pyfluidsynth is not usable ({error}): pip install pyfluidsynth, and run "
                        "`samstream data fetch` as root for libfluidsynth3") from error


def _soundfont_sources(cache_dir: Path, cls: str, minutes: float, heldout_share: float) -> list[tuple]:
    """(soundfont, package, split, minutes, plays the Red Zeppelin kit) per render of a class: FluidR3 GM
    trains, MuseScore General Lite is held out, the Red Zeppelin kit plays half the training drums."""
    zeppelin = cache_dir / RED_ZEPPELIN
    held = (MUSESCORE_LITE, "musescore-general-soundfont-small", HELDOUT, minutes * heldout_share, False)
    if cls == "drums" and zeppelin.exists():  # a real multi-sampled kit
        return [(FLUID_GM, "fluid-soundfont-gm", TRAIN, minutes / 2, False),
                (zeppelin, "avldrums.lv2-soundfont", TRAIN, minutes / 2, True), held]
    return [(FLUID_GM, "fluid-soundfont-gm", TRAIN, minutes, False), held]


def instrument_jobs(cache_dir: Path, config: RenderConfig) -> list[dict]:
    _check_soundfonts()
    jobs = []
    for cls in INSTRUMENTS:
        for soundfont, package, split, minutes, bank0 in _soundfont_sources(cache_dir, cls, config.minutes,
                                                                             config.heldout_share):
            slug = cls.replace(" ", "_")
            jobs.append({"kind": "instrument", "cache_dir": str(cache_dir), "cls": cls, "soundfont": str(soundfont),
                         "package": package, "split": split, "seconds": minutes * 60, "drum_kit_bank0": bank0,
                         "drum_programs": (0, 8, 16, 24, 25, 32, 40, 48), "seed": _stable(config.seed, cls, package),
                         "folder": str(cache_dir / RENDER_DIR / "instruments" / package / slug)})
    return jobs


# -------------------------------------------------------------------------------------- procedural

def render_procedural(job: dict) -> list[dict]:
    """Worker: procedural sounds of one class and split (v1, or v2 for kind "procedural_v2"); the file
    names are the seeds. A v2 sound's variant and scene are drawn first, so a stem already on disk is
    named without being made again."""
    from samstream.model.training.procedural import GENERATORS, plan_v2, realize_v2

    v2 = job["kind"] == "procedural_v2"
    cache_dir, folder, cls = Path(job["cache_dir"]), Path(job["folder"]), job["cls"]
    entries, total, k = [], 0.0, 0
    while total < job["seconds"]:
        seed = job["seed_base"] + k
        rng = np.random.default_rng(seed)
        duration = float(rng.uniform(6, 12))
        plan = plan_v2(cls, rng) if v2 else None
        path = folder / f"{seed}.flac"
        if not path.exists():
            write_flac(path, realize_v2(cls, *plan, rng, duration) if v2 else GENERATORS[cls](rng, duration))
        if v2:
            package, source = "procedural-v2", f"procedural v2 {cls} {'/'.join(p for p in plan if p)} seed {seed}"
        else:
            package, source = "procedural", f"procedural {cls} seed {seed}"
        entries.append(_entry(cache_dir, path, cls, package, source, "procedural", job["split"],
                              f"file:{seed}" if job["split"] == HELDOUT else None))
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
    """Render every enabled family, write DIR/stems/rendered.json; returns the rendered entries.

    With variety "v2" the procedural and instrument families render into procedural_v2/ and
    instruments_v2/ (TTS has one variety); entries of the families not rendered this time are kept."""
    if config.variety not in VARIETIES:
        raise DataError(f"unknown variety {config.variety!r}: use one of {', '.join(VARIETIES)}")
    v2 = config.variety == "v2"
    jobs, folders = [], set()
    if config.tts:
        jobs += tts_jobs(cache_dir, config)
        folders.add("tts")
    if config.instruments:
        jobs += instrument_jobs_v2(cache_dir, config) if v2 else instrument_jobs(cache_dir, config)
        folders.add(V2_FAMILIES["instruments"] if v2 else "instruments")
    if config.procedural:
        jobs += procedural_jobs_v2(cache_dir, config) if v2 else procedural_jobs(cache_dir, config)
        folders.add(V2_FAMILIES["procedural"] if v2 else "procedural")
    manifest = cache_dir / RENDERED_NAME
    kept = [e for e in (read_json(manifest) if manifest.exists() else []) if e["path"].split("/")[2] not in folders]
    entries: list[dict] = []
    with ProcessPoolExecutor(max_workers=max(1, config.workers)) as pool:
        for result in tqdm(pool.map(_run_job, jobs), total=len(jobs), desc="render", unit="job", file=sys.stderr):
            entries.extend(result)
    write_json(manifest, kept + entries)
    return entries


# ================================================================================================ variety v2
# `samstream data render --variety v2`: new stems in new folders (stems/_rendered/{procedural_v2,
# instruments_v2}/...), added to the index next to the v1 stems (which stay untouched).
#
# Instruments: every GM program of a class (all pianos, guitars, basses, bowed strings ... and FluidR3's
# bank-8/16 variations), several playing styles per class, and rendering variety per piece: tempo,
# dynamics (a level, a crescendo or diminuendo, accents), a register window inside the class's range,
# the synth's reverb room and chorus (and how much of each the channel sends), a tuning offset, and
# expression, vibrato, sustain-pedal and pitch-bend controllers. Also bells (tubular bells, church bell,
# tinkle bell, agogo), the telephone ring and the seashore of the GM set. FluidR3 GM and the Red
# Zeppelin kit train; the held-out MuseScore General Lite soundfont renders the held-out split.

VARIETIES = ("v1", "v2")
V2_FAMILIES = {"procedural": "procedural_v2", "instruments": "instruments_v2"}
V2_TRAIN_SEED_BASE = 5_000_000  # procedural v2 seeds: train and held-out ranges apart from v1's and each other
V2_HELDOUT_SEED_BASE = 7_000_000
# Each class's block of 100,000 seeds in those ranges; a class added later takes the next free block, so the
# seeds (and stems) of the others never move.
V2_SEED_BLOCKS = {"bell": 0, "engine": 1, "phone ringing": 2, "siren": 3, "water": 4, "guitar": 5, "piano": 6}
# Procedural v2 minutes per class, as a share of --minutes: the physical-model piano and guitar are a
# second opinion next to the soundfont renders, not the main source.
V2_PROCEDURAL_SHARE = {"guitar": 0.5, "piano": 0.5}

MAJOR, MINOR = (0, 2, 4, 5, 7, 9, 11), (0, 2, 3, 5, 7, 8, 10)
MODES = {"major": MAJOR, "minor": MINOR, "dorian": (0, 2, 3, 5, 7, 9, 10), "mixolydian": (0, 2, 4, 5, 7, 9, 10),
         "harmonic minor": (0, 2, 3, 5, 7, 8, 11)}
PROGRESSIONS = ((0, 4, 5, 3), (0, 3, 4, 0), (1, 4, 0, 0), (0, 5, 3, 4), (0, 0, 3, 3, 0, 0, 4, 3), (5, 3, 0, 4), (0, 6, 5, 4))
GUITAR_STRINGS = (40, 45, 50, 55, 59, 64)  # standard tuning, E2 to E4


@dataclass(frozen=True)
class InstrumentV2:
    presets: tuple  # (bank, program) pairs; those a soundfont lacks are skipped
    low: int
    high: int
    styles: tuple
    share: float = 1.0  # of --minutes


INSTRUMENTS_V2 = {
    "piano": InstrumentV2(tuple((0, p) for p in range(6)) + ((8, 4), (8, 5), (8, 0)), 21, 108,
                          ("keys", "arpeggio", "two hands", "melody")),
    "guitar": InstrumentV2(tuple((0, p) for p in range(24, 32)) + ((8, 25), (8, 26), (8, 28)), 40, 86,
                           ("strum", "fingerpick", "lead", "power")),
    "violin": InstrumentV2(tuple((0, p) for p in (40, 41, 42, 43, 44, 45, 48, 49, 110)) + ((8, 40),), 28, 100,
                           ("bowed", "ensemble", "fiddle")),
    "bass": InstrumentV2(tuple((0, p) for p in range(32, 40)) + ((8, 38), (8, 39)), 28, 62,
                         ("bassline", "walking", "funk", "eighths")),
    "drums": InstrumentV2((), 35, 81, ("rock", "half-time", "disco", "funk", "shuffle", "jazz", "metal", "one-drop", "bossa")),
    "bell": InstrumentV2(((0, 14), (8, 14), (0, 112), (0, 113)), 48, 96, ("toll", "peal", "westminster", "tune"), 0.5),
    "phone ringing": InstrumentV2(((0, 124),), 55, 84, ("ring",), 0.25),
    "water": InstrumentV2(((0, 122),), 36, 84, ("surf",), 0.25),
    "brass": InstrumentV2(tuple((0, p) for p in range(56, 64)) + ((8, 61),), 34, 84, ("bowed", "melody", "ensemble"), 0.5),
    "woodwind": InstrumentV2(tuple((0, p) for p in range(64, 78)), 36, 100, ("bowed", "melody"), 0.5),
    "organ": InstrumentV2(tuple((0, p) for p in range(16, 21)) + ((8, 16), (8, 17), (8, 19)), 36, 96,
                          ("keys", "two hands", "melody"), 0.5),
    "accordion": InstrumentV2(((0, 21), (0, 23), (8, 21)), 41, 89, ("keys", "two hands", "melody"), 0.5),
    "harmonica": InstrumentV2(((0, 22),), 55, 91, ("melody", "bowed"), 0.5),
    "singing": InstrumentV2(((0, 52), (0, 53), (0, 54)), 45, 81, ("bowed", "ensemble"), 0.5),
}
# Playable ranges of single instruments inside a class (MIDI notes), where the class range is too wide.
PRESET_RANGES = {(0, 40): (55, 100), (0, 41): (48, 88), (0, 42): (36, 76), (0, 43): (28, 60), (0, 110): (55, 96),
                 (8, 40): (55, 100), (0, 56): (54, 84), (0, 57): (40, 72), (0, 58): (28, 58), (0, 59): (54, 82),
                 (0, 60): (41, 77), (0, 64): (56, 87), (0, 65): (49, 81), (0, 66): (44, 76), (0, 67): (36, 69),
                 (0, 68): (58, 91), (0, 69): (52, 81), (0, 70): (34, 72), (0, 71): (50, 91), (0, 72): (74, 102),
                 (0, 73): (60, 96), (0, 74): (60, 91), (0, 75): (60, 91), (0, 76): (60, 91), (0, 77): (60, 91),
                 (0, 31): (52, 86)}
# Programs that play one way only (tremolo and pizzicato strings).
PRESET_STYLES = {(0, 44): "tremolo", (0, 45): "pizzicato"}


def _scale_notes(root: int, mode: tuple, low: int, high: int) -> np.ndarray:
    return np.array([m for m in range(low, high + 1) if (m - root) % 12 in mode])


def _chord(root: int, mode: tuple, degree: int, seventh: bool) -> list[int]:
    """Pitch classes (as semitones above root, may exceed 12) of the triad/seventh on a scale degree."""
    steps = [degree, degree + 2, degree + 4] + ([degree + 6] if seventh else [])
    return [root + mode[s % 7] + 12 * (s // 7) for s in steps]


def _voice(pcs: list[int], low: int, high: int, size: int, rng: np.random.Generator) -> list[int]:
    """`size` chord notes inside [low, high], stacked upwards from a random inversion."""
    base = int(rng.integers(low, max(low + 1, high - 12)))
    notes, candidates = [], sorted(n for n in range(base, high + 1) if any((n - pc) % 12 == 0 for pc in pcs))
    for n in candidates:
        if len(notes) >= size:
            break
        if not notes or n - notes[-1] >= 3:
            notes.append(n)
    return notes or [base]


def _guitar_voicing(pcs: list[int], rng: np.random.Generator) -> list[int]:
    """One note per string within a four-fret hand position, from the lowest string holding the root:
    what a chord shape on a guitar gives."""
    position = int(rng.choice([0, 0, 0, 1, 3, 5, 7]))
    notes = []
    for open_note in GUITAR_STRINGS:
        frets = [f for f in range(position, position + 5) if any((open_note + f - pc) % 12 == 0 for pc in pcs)]
        if frets:
            notes.append(open_note + frets[0])
    roots = [i for i, n in enumerate(notes) if (n - pcs[0]) % 12 == 0]
    notes = notes[roots[0]:] if roots and len(notes) - roots[0] >= 3 else notes
    if len(notes) < 3:  # no shape here: root, fifth, octave, third
        base = 40 + (pcs[0] - 40) % 12
        notes = [base, base + 7, base + 12, base + 12 + (pcs[1] - pcs[0]) % 12]
    return notes


class _Piece:
    """Notes (onset s, length s, note, velocity) and controls (time s, kind, a, b) of one piece."""

    def __init__(self, rng: np.random.Generator, seconds: float, dynamic: float):
        self.rng, self.seconds = rng, seconds
        self.notes: list[tuple[float, float, int, int]] = []
        self.controls: list[tuple[float, str, int, int]] = []
        self.level = dynamic  # 0..1: pp .. ff
        self.arc = rng.uniform(-0.3, 0.3)  # crescendo (+) or diminuendo (-) over the piece

    def velocity(self, t: float, accent: float = 0.0, spread: float = 8.0) -> int:
        level = self.level + self.arc * (t / self.seconds - 0.5) + accent
        return int(np.clip(25 + 100 * level + self.rng.normal(0, spread), 1, 127))

    def note(self, t: float, length: float, note: int, accent: float = 0.0, velocity: int | None = None) -> None:
        if t < self.seconds and 0 <= note <= 127:
            self.notes.append((t, max(0.02, length), int(note), velocity or self.velocity(t, accent)))

    def cc(self, t: float, ctrl: int, value: float) -> None:
        self.controls.append((t, "cc", ctrl, int(np.clip(value, 0, 127))))

    def bend(self, t: float, semitones: float) -> None:
        self.controls.append((t, "bend", int(np.clip(semitones * 4096, -8192, 8191)), 0))

    def swell(self, t: float, length: float, depth: float, steps: int = 6) -> None:
        """Expression (CC11) rising into a note and falling off: bowed and blown phrasing."""
        for i in range(steps + 1):
            x = i / steps
            self.cc(t + x * length, 11, 127 * (1 - depth * (1 - np.sin(np.pi * x))))

    def vibrato(self, t: float, length: float, depth: int) -> None:
        self.cc(t, 1, 0)
        self.cc(t + min(0.3, length / 3), 1, depth)


def _melody_line(piece: _Piece, pitches: np.ndarray, beat: float, t0: float, t1: float, legato: float,
                 lengths=(0.5, 1, 1, 2, 3), rest: float = 0.1, swells: bool = False, vibrato: int = 0) -> None:
    rng = piece.rng
    idx, t = int(rng.integers(len(pitches) // 4, max(len(pitches) // 4 + 1, 3 * len(pitches) // 4))), t0
    while t < t1:
        length = beat * float(rng.choice(lengths))
        if rng.random() < rest:
            t += length
            continue
        idx = int(np.clip(idx + rng.choice([-3, -2, -1, -1, 0, 1, 1, 2, 3]), 0, len(pitches) - 1))
        piece.note(t, length * legato, int(pitches[idx]), 0.1 if (t / beat) % 4 < 0.01 else 0.0)
        if swells and length > 0.3:
            piece.swell(t, length, rng.uniform(0.2, 0.6))
        if vibrato and length > 0.4:
            piece.vibrato(t, length, vibrato)
        t += length


def piece_v2(rng: np.random.Generator, cls: str, style: str, low: int, high: int, seconds: float):
    """One random piece in a playing style: (notes, controls). Notes are (onset s, length s, MIDI note,
    velocity); controls (time s, "cc" | "bend", controller or bend value, value)."""
    piece = _Piece(rng, seconds, dynamic=float(rng.choice([0.1, 0.3, 0.5, 0.7, 0.85])) + rng.uniform(-0.05, 0.05))
    tempo = rng.uniform(55, 190)
    beat = 60.0 / tempo
    swing = rng.uniform(0.0, 0.25) if rng.random() < 0.3 else 0.0
    root = int(rng.integers(0, 12))
    mode = MODES[str(rng.choice(sorted(MODES)))] if rng.random() < 0.5 else MAJOR
    span = int(rng.integers(12, 31))  # a register window inside the class's range
    lo = int(rng.integers(low, max(low + 1, high - span)))
    hi = min(high, lo + span)
    pitches = _scale_notes(root, mode, lo, hi)
    if len(pitches) < 3:
        pitches = _scale_notes(root, mode, low, high)
    progression = PROGRESSIONS[int(rng.integers(len(PROGRESSIONS)))]
    bar = 4 * beat
    chord_at = lambda t: _chord(root, mode, progression[int(t / bar) % len(progression)], rng.random() < 0.3)  # noqa: E731

    def grid(step: float):
        """Time points on a step grid, with swing on the off-beats."""
        t, k = 0.0, 0
        while t < seconds:
            yield k, t + (swing * step if k % 2 else 0.0)
            t += step
            k += 1

    if style == "keys":
        pedal = rng.random() < 0.6
        for k, t in grid(bar / float(rng.choice([1, 2, 4]))):
            length = bar / 2 if rng.random() < 0.5 else bar / 4
            for n in _voice(chord_at(t), lo, hi, int(rng.integers(3, 6)), rng):
                piece.note(t + rng.uniform(0, 0.012), length * rng.uniform(0.5, 1.0), n, 0.1 if k % 2 == 0 else 0.0)
            if pedal:
                piece.cc(max(0.0, t - 0.02), 64, 0)
                piece.cc(t + 0.05, 64, 127)
        if rng.random() < 0.5:  # a tune on top
            _melody_line(piece, pitches[pitches >= np.median(pitches)], beat, 0.0, seconds, 0.9)
    elif style == "arpeggio":
        step = beat / float(rng.choice([2, 3, 4]))
        order = [0, 2, 1, 2] if rng.random() < 0.4 else [0, 1, 2, 3, 2, 1]
        if rng.random() < 0.6:
            piece.cc(0.0, 64, 127)
        for k, t in grid(step):
            chord = _voice(chord_at(t), lo, hi, 4, rng) if k % len(order) == 0 or k == 0 else chord
            piece.note(t, step * rng.uniform(1.0, 3.0), chord[order[k % len(order)] % len(chord)],
                       0.1 if k % len(order) == 0 else 0.0)
            if k and k % (4 * len(order)) == 0 and rng.random() < 0.5:
                piece.cc(t - 0.01, 64, 0)
                piece.cc(t + 0.03, 64, 127)
    elif style == "two hands":
        split = int((lo + hi) / 2)
        left = max(low, split - 24)
        for k, t in grid(beat * float(rng.choice([1, 2]))):
            pcs = chord_at(t)
            bass = left + (pcs[0] - left) % 12
            piece.note(t, beat * 0.9, bass, 0.1)
            if k % 2 == 1:
                for n in _voice(pcs, bass + 7, split + 4, 3, rng):
                    piece.note(t, beat * 0.8, n, -0.1)
        _melody_line(piece, _scale_notes(root, mode, split, min(high, split + 19)), beat, 0.0, seconds, 0.95)
    elif style in ("melody", "bowed", "tremolo"):
        long_notes = style != "melody"
        _melody_line(piece, pitches, beat, 0.0, seconds, 0.98 if long_notes else float(rng.choice([0.5, 0.8, 0.95])),
                     lengths=(1, 2, 2, 3, 4) if long_notes else (0.5, 0.5, 1, 1, 2), swells=long_notes,
                     vibrato=int(rng.integers(20, 90)) if long_notes and rng.random() < 0.7 else 0)
    elif style == "pizzicato":
        _melody_line(piece, pitches, beat, 0.0, seconds, 0.3, lengths=(0.5, 0.5, 1, 1), rest=0.2)
    elif style == "ensemble":
        for k, t in grid(bar * float(rng.choice([0.5, 1]))):
            length = bar * 0.98 * (0.5 if k % 2 and rng.random() < 0.3 else 1)
            for n in _voice(chord_at(t), lo, hi, int(rng.integers(2, 5)), rng):
                piece.note(t, length, n)
            piece.swell(t, length, rng.uniform(0.2, 0.7))
    elif style == "fiddle":  # a fast reel: running eighths, the odd double stop
        step = 60.0 / rng.uniform(160, 230) / 2
        idx = len(pitches) // 2
        for k, t in grid(step):
            idx = int(np.clip(idx + rng.choice([-2, -1, -1, 1, 1, 2]), 0, len(pitches) - 1))
            piece.note(t, step * 0.95, int(pitches[idx]), 0.12 if k % 4 == 0 else 0.0)
            if rng.random() < 0.08 and idx + 3 < len(pitches):
                piece.note(t, step * 1.9, int(pitches[idx + 3]))
    elif style == "strum":
        pattern = [bool(c == "x") for c in str(rng.choice(["x.x.x.x.", "x.xx.xx.", "x..x..x.", "x.x..xx.", "xxxxxxxx"]))]
        mute = rng.random() < 0.15
        chord, voicing = None, []
        for k, t in grid(beat / 2):
            pcs = chord_at(t)
            if pcs != chord:
                chord, voicing = pcs, _guitar_voicing(pcs, rng)
            if not pattern[k % 8] and k % 8:
                continue
            down = k % 2 == 0
            strings = voicing if down else voicing[-int(rng.integers(3, len(voicing) + 1)):][::-1]
            spread = rng.uniform(0.006, 0.035) / max(1, len(strings))
            length = (beat / 2) * (0.3 if mute else rng.uniform(1.0, 2.0))
            for j, n in enumerate(strings):
                piece.note(t + j * spread, length, n, (0.1 if down else -0.15) + (0.1 if k % 8 == 0 else 0.0))
    elif style == "fingerpick":
        for k, t in grid(beat / 2):
            voicing = _guitar_voicing(chord_at(t), rng) if k % 8 == 0 or k == 0 else voicing
            if k % 2 == 0:  # the thumb alternates bass strings on the beat
                piece.note(t, beat * 0.9, voicing[(k // 2) % 2], 0.05)
            if k % 2 == 1 or rng.random() < 0.3:
                piece.note(t, beat * rng.uniform(0.8, 1.5),
                           voicing[int(rng.integers(max(1, len(voicing) - 3), len(voicing)))], -0.05)
    elif style == "lead":
        bends = rng.random() < 0.6
        t = 0.0
        idx = len(pitches) // 2
        while t < seconds:
            length = beat * float(rng.choice([0.25, 0.5, 0.5, 1, 1.5, 2]))
            idx = int(np.clip(idx + rng.choice([-2, -1, -1, 0, 1, 1, 2]), 0, len(pitches) - 1))
            piece.note(t, length * 0.95, int(pitches[idx]))
            if bends and length >= beat and rng.random() < 0.35:  # bend up a tone and let it down
                up = float(rng.choice([1.0, 2.0]))
                piece.bend(t + 0.05, up / 2)
                piece.bend(t + 0.12, up)
                piece.bend(t + length * 0.9, 0.0)
            elif length >= beat and rng.random() < 0.3:  # finger vibrato
                for j in range(int(length / 0.05)):
                    piece.bend(t + 0.15 + j * 0.05, 0.25 * np.sin(2 * np.pi * 6 * j * 0.05))
                piece.bend(t + length, 0.0)
            t += length
    elif style == "power":
        mute = rng.random() < 0.6
        for k, t in grid(beat / 2):
            pcs = chord_at(t)
            base = 40 + (pcs[0] - 40) % 12
            for j, n in enumerate((base, base + 7, base + 12)):
                piece.note(t + j * 0.004, beat / 2 * (0.35 if mute and k % 4 else 0.95), n, 0.15 if k % 4 == 0 else 0.0)
    elif style in ("bassline", "walking", "funk", "eighths"):
        step = {"bassline": beat / 2, "walking": beat, "funk": beat / 4, "eighths": beat / 2}[style]
        for k, t in grid(step):
            pcs = chord_at(t)
            rootnote = lo + (pcs[0] - lo) % 12
            if style == "eighths":
                n, length = rootnote, step * 0.85
            elif style == "walking":
                beat_in_bar = k % 4
                nxt = chord_at(t + step)[0]
                n = [rootnote, rootnote + (pcs[1] - pcs[0]) % 12, rootnote + 7, lo + (nxt - lo) % 12 - 1][beat_in_bar]
                length = step * 0.9
            elif style == "funk":
                if rng.random() < 0.45:
                    continue
                n = rootnote + int(rng.choice([0, 0, 12, 7, 10]))
                length = step * float(rng.choice([0.4, 0.9]))
            else:
                if k % 2 and rng.random() < 0.5:
                    continue
                n = rootnote + int(rng.choice([0, 0, 0, 7, 12, 5]))
                length = step * float(rng.choice([0.9, 1.8]))
            accent = 0.1 if k % 4 == 0 else (-0.3 if style == "funk" and rng.random() < 0.3 else 0.0)
            piece.note(t, length, int(np.clip(n, low, high)), accent)
    elif style in ("toll", "peal", "westminster", "tune"):
        key = int(rng.integers(lo, max(lo + 1, hi - 12)))
        if style == "toll":
            for t in np.arange(rng.uniform(0, 0.5), seconds, rng.uniform(1.5, 4.0)):
                piece.note(t, 3.0, key + 12)
        elif style == "peal":
            bells = int(rng.integers(4, 9))
            notes = [key + 12 + MAJOR[(7 - i) % 7] - (12 if i == 0 else 0) for i in range(bells)]
            gap, t, row = rng.uniform(0.2, 0.35), rng.uniform(0, 0.3), 0
            while t < seconds:
                order = notes if row % 4 < 2 else list(rng.permutation(notes))
                for n in order:
                    piece.note(t, 2.0, int(n))
                    t += gap
                t += gap * (row % 2)
                row += 1
        elif style == "westminster":
            degrees = {0: 0, 1: 2, 2: 4, -3: -5}
            t, gap = rng.uniform(0, 0.3), rng.uniform(0.5, 0.9)
            while t < seconds:
                change = ((2, 1, 0, -3), (0, 2, 1, -3), (0, 1, 2, 0), (2, 0, 1, -3), (-3, 1, 2, 0))[int(rng.integers(5))]
                for d in change:
                    piece.note(t, 2.5, key + 12 + degrees[d])
                    t += gap
                t += gap * 2
        else:
            _melody_line(piece, pitches, beat, 0.0, seconds, 2.0, lengths=(1, 1, 2))
    elif style == "ring":
        from samstream.model.training.procedural import RING_CADENCES

        cadence = np.array(RING_CADENCES[str(rng.choice(sorted(RING_CADENCES)))])
        n = int(rng.integers(lo, hi + 1))
        t = -rng.uniform(0, min(0.3 * seconds, cadence.sum() - cadence[0]))
        while t < seconds:
            for i in range(0, len(cadence), 2):
                if t + cadence[i] > 0:
                    piece.note(max(0.0, t), cadence[i] + min(0.0, t), n, velocity=int(rng.integers(90, 127)))
                t += cadence[i] + cadence[i + 1]
    elif style == "surf":
        t = 0.0
        while t < seconds:
            length = rng.uniform(3.0, 8.0)
            piece.note(t, length, int(rng.integers(lo, hi + 1)))
            piece.swell(t, length, rng.uniform(0.3, 0.9))
            t += length * rng.uniform(0.4, 0.9)
    else:
        raise ValueError(f"unknown playing style {style!r}")
    return sorted(piece.notes), sorted(piece.controls)


DRUM_STYLES = {  # 16 steps a bar: kick, snare, hat (closed) probabilities; extras per style in drum_pattern_v2
    "rock": ("x...x...x..x....", "....x.......x...", "x.x.x.x.x.x.x.x."),
    "half-time": ("x.........x.....", "........x.......", "x.x.x.x.x.x.x.x."),
    "disco": ("x...x...x...x...", "....x.......x...", "..o...o...o...o."),
    "funk": ("x..x..x...x..x..", "....x..g.g..x..g", "xxxxxxxxxxxxxxxx"),
    "shuffle": ("x.....x.....", "...x.....x..", "x.xx.xx.xx.x"),  # 12 steps: triplet eighths
    "jazz": ("x.....x.....", "...g.....g..", "r..rr.r..rr."),
    "metal": ("xxxxxxxxxxxxxxxx", "....x.......x...", "c...c...c...c..."),
    "one-drop": ("........x.......", "........x.......", "x.x.x.x.x.x.x.x."),
    "bossa": ("x..x x..x..x x..".replace(" ", "."), "x..x..x...x..x..", "x.x.x.x.x.x.x.x."),
}


def drum_pattern_v2(rng: np.random.Generator, style: str, seconds: float, brushes: bool):
    """A groove in one style with fills and crashes: (notes, controls=[])."""
    piece = _Piece(rng, seconds, dynamic=float(rng.choice([0.3, 0.5, 0.7, 0.85])))
    kick, snare, hats = DRUM_STYLES[style]
    steps = len(kick)
    bar = 4 * 60.0 / rng.uniform(60 if style in ("jazz", "one-drop", "bossa") else 80, 180 if style != "metal" else 200)
    step = bar / steps
    hat_note = int(rng.choice([42, 42, 44, 51])) if style not in ("jazz",) else 51
    snare_note = 37 if style == "bossa" and rng.random() < 0.7 else int(rng.choice([38, 38, 40]))
    t, k = 0.0, 0
    while t < seconds:
        s = k % steps
        jitter = rng.normal(0, 0.004)
        bar_index = k // steps
        fill = bar_index % 4 == 3 and s >= steps * 3 // 4 and rng.random() < 0.6
        if kick[s] == "x" and rng.random() < 0.95:
            piece.note(t + jitter, 0.2, 36, 0.1)
        elif kick[s] == "." and rng.random() < 0.04:
            piece.note(t + jitter, 0.2, 36, -0.2)
        if fill:
            piece.note(t + jitter, 0.2, int(rng.choice([41, 43, 45, 47, 48, 50])), 0.1)
        elif snare[s] == "x":
            piece.note(t + jitter, 0.2, snare_note, 0.1)
        elif snare[s] == "g" or (snare[s] == "." and rng.random() < 0.05):
            piece.note(t + jitter, 0.1, snare_note, -0.35)  # ghost note
        if brushes and s % 3 == 0:
            piece.note(t + jitter, 0.1, 38, -0.5)  # brush swirl
        h = hats[s]
        if h == "x":
            piece.note(t + jitter, 0.1, hat_note, 0.0 if s % 4 == 0 else -0.2)
        elif h == "o":
            piece.note(t + jitter, 0.2, 46, 0.0)
        elif h == "r":
            piece.note(t + jitter, 0.3, 51 if rng.random() < 0.9 else 53, -0.1)
        elif h == "c":
            piece.note(t + jitter, 0.5, int(rng.choice([49, 51, 57])), 0.0)
        if style == "jazz" and s in (3, 9):
            piece.note(t + jitter, 0.1, 44, -0.2)  # hi-hat foot on 2 and 4
        if s == 0 and bar_index % 4 == 0 and rng.random() < 0.5:
            piece.note(t, 1.0, int(rng.choice([49, 57])), 0.15)
        t += step
        k += 1
    return sorted(piece.notes), []


def play_v2(synth, channel: int, notes, controls, seconds: float) -> np.ndarray:
    """Play notes and controller changes on a loaded synth; mono float32 with a 1.5 s tail."""
    timeline = sorted([(max(0.0, on), 2, "on", n, v) for on, d, n, v in notes]
                      + [(max(0.0, on + d), 0, "off", n, 0) for on, d, n, v in notes]
                      + [(max(0.0, t), 1, kind, a, b) for t, kind, a, b in controls])
    chunks, now = [], 0
    for when, _order, kind, a, b in timeline:
        sample = max(now, int(when * SAMPLE_RATE))
        if sample > now:
            chunks.append(synth.get_samples(sample - now))
            now = sample
        if kind == "on":
            synth.noteon(channel, a, b)
        elif kind == "off":
            synth.noteoff(channel, a)
        elif kind == "cc":
            synth.cc(channel, a, b)
        else:
            synth.pitch_bend(channel, a)
    synth.cc(channel, 64, 0)
    synth.all_notes_off(channel)
    end = int((seconds + 1.5) * SAMPLE_RATE)
    if end > now:
        chunks.append(synth.get_samples(end - now))
    stereo = np.concatenate(chunks).astype(np.float32).reshape(-1, 2) / 32768.0
    return stereo.mean(axis=1)


def _synth_setup(rng: np.random.Generator) -> dict:
    """The synth's effects and the channel's sends, tuning and volume for one piece."""
    return {"reverb": (float(rng.uniform(0.0, 1.0)), float(rng.uniform(0.0, 1.0)), float(rng.uniform(0, 100)),
                       float(rng.uniform(0.2, 1.0))),
            "chorus": (int(rng.integers(2, 6)), float(rng.uniform(0.5, 4.0)), float(rng.uniform(0.3, 2.0)),
                       float(rng.uniform(2.0, 15.0))),
            "reverb_send": int(rng.choice([0, int(rng.integers(10, 128))], p=[0.25, 0.75])),
            "chorus_send": int(rng.choice([0, int(rng.integers(10, 100))], p=[0.6, 0.4])),
            "tuning_cents": float(rng.uniform(-30, 30)) if rng.random() < 0.5 else 0.0}


def available_presets(synth, sfid: int, presets) -> list[tuple[int, int]]:
    return [(b, p) for b, p in presets if synth.sfpreset_name(sfid, b, p)]


_SYNTHS: dict[str, tuple] = {}  # soundfont -> (synth, sfid): loaded once per worker process


def _synth(soundfont: str):
    if soundfont not in _SYNTHS:
        import fluidsynth

        synth = fluidsynth.Synth(samplerate=float(SAMPLE_RATE), gain=0.35)
        _SYNTHS[soundfont] = (synth, synth.sfload(soundfont))
    return _SYNTHS[soundfont]


def render_instrument_v2(job: dict) -> list[dict]:
    """Worker: v2 pieces of one instrument class from one soundfont until its minutes are reached."""
    cache_dir, folder = Path(job["cache_dir"]), Path(job["folder"])
    spec = INSTRUMENTS_V2[job["cls"]]
    rng = np.random.default_rng(job["seed"])
    synth, sfid = _synth(job["soundfont"])
    drums = job["cls"] == "drums"
    if drums:
        presets = [(0, 0)] if job["drum_kit_bank0"] else [(128, p) for p in range(128) if synth.sfpreset_name(sfid, 128, p)]
    else:
        presets = available_presets(synth, sfid, spec.presets)
    if not presets:
        raise DataError(f"{job['soundfont']} has none of the presets of {job['cls']}")
    name = Path(job["soundfont"]).name
    entries, total, k = [], 0.0, 0
    while total < job["seconds"]:
        seconds = float(rng.uniform(8, 20))
        bank, program = presets[int(rng.integers(len(presets)))]
        if drums:
            style = str(rng.choice(sorted(DRUM_STYLES)))
            notes, controls = drum_pattern_v2(rng, style, seconds, brushes=bank == 128 and program in (40, 41, 42))
        else:
            style = PRESET_STYLES.get((bank, program)) or str(rng.choice(spec.styles))
            low, high = PRESET_RANGES.get((bank, program), (spec.low, spec.high))
            notes, controls = piece_v2(rng, job["cls"], style, low, high, seconds)
        fx = _synth_setup(rng)
        path = folder / f"{k:04d}_b{bank}-p{program}_{style.replace(' ', '-')}.flac"
        if not path.exists() and notes:
            channel = 9 if bank == 128 else 0
            synth.system_reset()
            synth.set_reverb(*fx["reverb"])
            synth.set_chorus(fx["chorus"][0], fx["chorus"][1], fx["chorus"][2], fx["chorus"][3], 0)
            synth.program_select(channel, sfid, bank, program)
            synth.cc(channel, 91, fx["reverb_send"])
            synth.cc(channel, 93, fx["chorus_send"])
            synth.cc(channel, 11, 127)
            if fx["tuning_cents"]:
                offset = int(fx["tuning_cents"] / 200 * 8192)  # the default bend range is +-2 semitones
                controls = [(0.0, "bend", offset, 0)] + [(t, kind, a + offset if kind == "bend" else a, b)
                                                         for t, kind, a, b in controls]
            wav = play_v2(synth, channel, notes, controls, seconds)
            peak = float(np.abs(wav).max())
            if peak < 1e-4:
                k += 1
                continue
            write_flac(path, 0.7 * wav / peak)
        if not path.exists():
            k += 1
            continue
        entry = _entry(cache_dir, path, job["cls"], job["package"],
                       f"soundfont {name} bank {bank} program {program} style {style} (v2)", "rendered", job["split"],
                       f"voice:{job['package']}" if job["split"] == HELDOUT else None, voice=job["package"])
        entries.append(entry)
        total += entry["duration"]
        k += 1
    return entries


def instrument_jobs_v2(cache_dir: Path, config: RenderConfig) -> list[dict]:
    _check_soundfonts()
    jobs = []
    for cls, spec in INSTRUMENTS_V2.items():
        for soundfont, package, split, minutes, bank0 in _soundfont_sources(cache_dir, cls, config.minutes * spec.share,
                                                                             config.heldout_share):
            jobs.append({"kind": "instrument_v2", "cache_dir": str(cache_dir), "cls": cls, "soundfont": str(soundfont),
                         "package": package, "split": split, "seconds": minutes * 60, "drum_kit_bank0": bank0,
                         "seed": _stable(config.seed, "v2", cls, package),
                         "folder": str(cache_dir / RENDER_DIR / V2_FAMILIES["instruments"] / package / cls.replace(" ", "_"))})
    return jobs


def procedural_jobs_v2(cache_dir: Path, config: RenderConfig) -> list[dict]:
    from samstream.model.training.procedural import VARIANTS_V2

    missing = set(VARIANTS_V2) - set(V2_SEED_BLOCKS)
    if missing:
        raise DataError(f"no v2 seed block for {sorted(missing)}: add them to render.V2_SEED_BLOCKS")
    jobs = []
    for cls in sorted(VARIANTS_V2):
        i, minutes = V2_SEED_BLOCKS[cls], config.minutes * V2_PROCEDURAL_SHARE.get(cls, 1.0)
        for split, minutes, base in ((TRAIN, minutes, V2_TRAIN_SEED_BASE),
                                     (HELDOUT, minutes * config.heldout_share, V2_HELDOUT_SEED_BASE)):
            jobs.append({"kind": "procedural_v2", "cache_dir": str(cache_dir), "cls": cls, "split": split,
                         "seconds": minutes * 60, "seed_base": config.seed * 10_000_000 + base + i * 100_000,
                         "folder": str(cache_dir / RENDER_DIR / V2_FAMILIES["procedural"] / cls.replace(" ", "_") / split)})
    return jobs


_WORKERS.update({"instrument_v2": render_instrument_v2, "procedural_v2": render_procedural})
