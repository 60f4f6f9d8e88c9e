"""Voice pairs for the voice picker: "keep this voice, remove the other one(s)".

Each example is speech of a target speaker and an interfering speaker, laid out as a video call has them:
- "overlap": both talk at once for the whole window;
- "partial": the interferer joins part-way;
- "turns": they take turns, hardly overlapping;
- "alone": only the target speaks;
- "absent": only the other speaker does (the target is silence: the picker must output nothing).
A little non-speech sound is added at -35..-15 dB and some examples are placed in a room. (The default model runs
the picker on the mixture, beside the speech expert: on the expert's output it scored 2 dB worse, docs/model_card.md.)

Speakers multiply: every draw plays a speaker at one speed factor (pitch and formants move together), the same
for its utterances in the mixture and in its enrollment clip, so a voice and its speed-shifted copy are different
training speakers. The prompt is the enrollment clip (other utterances of the target speaker), and, for pairs of
different genders when both are known, also the gender's wording ("a woman speaking"): the picker serves
"man speaking" / "woman speaking" too.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np

from samstream.model.class_prompts import prompts_for
from samstream.model.classes import family
from samstream.model.training.augment import (AugmentConfig, active_rms, background_noise, change_speed,
                                              load_rir_bank, random_eq, reverberate)
from samstream.model.training.common import SAMPLE_RATE, DataError
from samstream.model.training.mixtures import MixtureGenerator

LAYOUTS = ("overlap", "partial", "turns", "alone", "absent")
GENDER_CLASS = {"male": "man speaking", "female": "woman speaking"}


@dataclass(frozen=True)
class VoiceConfig:
    seconds: float = 4.0
    layout_weights: tuple[float, ...] = (0.45, 0.2, 0.2, 0.1, 0.05)  # in LAYOUTS order
    tir_db: tuple[float, float] = (-6.0, 6.0)
    speed_range: float = 0.1  # virtual speakers: a factor in 1 ± this
    enrollment_seconds: tuple[float, float] = (2.5, 6.0)
    noise_rate: float = 0.6
    noise_db: tuple[float, float] = (-35.0, -15.0)  # non-speech sound against the speech
    reverb_rate: float = 0.25
    eq_rate: float = 0.3
    gender_prompt_rate: float = 0.5  # of pairs of known, different genders
    peak_dbfs: tuple[float, float] = (-20.0, -1.0)
    # A stream often starts with digital silence (a call's first packets; the default model's delay line did, until
    # the picker was moved in front of it). Every layout but turn-taking started with sound, and 724 leading zeros
    # cost the picker 2.7 dB on the 40 held-out overlapped pairs (docs/model_card.md, "Voice picker").
    lead_silence_rate: float = 0.3
    lead_silence_seconds: tuple[float, float] = (0.01, 1.0)
    # Which clip of a voice enrolls it moved the picker by 2-3 dB from snapshot to snapshot on the suite's real pair
    # (live 3 s of the stream vs a clip file of other sentences, docs/model_card.md): so the enrollment varies more
    # than the voice does. Some "partial" pairs enroll the target's solo start of the stream itself, as
    # `enroll` does live; other enrollments get a microphone of their own (EQ) and a noise floor.
    live_enrollment_rate: float = 0.3  # of "partial" pairs
    enrollment_eq_rate: float = 0.3
    enrollment_noise_rate: float = 0.3
    enrollment_noise_snr_db: tuple[float, float] = (10.0, 30.0)

    @property
    def samples(self) -> int:
        return int(round(self.seconds * SAMPLE_RATE))


@dataclass
class VoicePair:
    mixture: np.ndarray
    target: np.ndarray
    enrollment: np.ndarray
    layout: str
    target_speaker: str
    interferer_speaker: str
    genders: tuple[str | None, str | None]
    prompt: str | None  # the gender wording, when the example carries one
    noise: np.ndarray  # the non-speech sound in the mixture (zeros: none)


class VoicePairGenerator:
    """Voice pairs from one split of the data index (speakers with at least two utterances)."""

    def __init__(self, generator: MixtureGenerator, config: VoiceConfig = VoiceConfig()):
        self.config = config
        self.pool = generator.pool
        self.speakers = [s for s in generator.pair_speakers if len(self.pool.by_speaker[s]) >= 2]
        if len(self.speakers) < 2:
            raise DataError(f"the {self.pool.split} split has fewer than two speakers with two utterances")
        self.genders = {s: _gender(self.pool.by_speaker[s]) for s in self.speakers}
        self.noise_classes = [c for c in generator.classes if family(c) != "speech" and c not in
                              ("singing", "laughter", "scream", "cough", "sneeze", "baby crying")]
        self._generator = generator
        self._rirs = None

    def utterances(self, speaker: str, factor: float, samples: int, rng: np.random.Generator,
                   exclude: set[str], gap: tuple[float, float] = (0.1, 0.6)) -> tuple[np.ndarray, list[str], list[tuple[int, int]]]:
        """An utterance train of `speaker` at speed `factor`, up to `samples` long: (audio, ids, [(start, end)])."""
        entries = [e for e in self.pool.by_speaker[speaker] if e["id"] not in exclude]
        out, used, segments, pos = np.zeros(samples, np.float32), [], [], 0
        for i in rng.permutation(len(entries)):
            clip = change_speed(self.pool.read(entries[i], rng, int(samples * 1.2)), factor)
            take = clip[: samples - pos]
            out[pos : pos + len(take)] = take
            used.append(entries[i]["id"])
            segments.append((pos, pos + len(take)))
            pos += len(take) + int(rng.uniform(*gap) * SAMPLE_RATE)
            if pos >= samples:
                break
        return out, used, segments

    def pair(self, rng: np.random.Generator, layout: str | None = None,
             speakers: tuple[str, str] | None = None, same_gender: bool | None = None) -> VoicePair:
        c = self.config
        layout = layout or LAYOUTS[rng.choice(len(LAYOUTS), p=np.asarray(c.layout_weights) / sum(c.layout_weights))]
        a, b = speakers or self._pick_speakers(rng, same_gender)
        fa, fb = (1.0 + rng.uniform(-c.speed_range, c.speed_range) for _ in range(2))
        n = c.samples
        entries = self.pool.by_speaker[a]
        reserved = {entries[rng.integers(len(entries))]["id"]}  # always left for the enrollment clip
        target, used, _ = self.utterances(a, fa, n, rng, reserved)
        other, _, _ = self.utterances(b, fb, n, rng, set())
        start = 0
        if layout == "partial":
            start = int(rng.uniform(0.3, 0.7) * n)
            other = np.concatenate([np.zeros(start, np.float32), other[: n - start]])
        elif layout == "turns":
            target, other = self._turns(a, b, fa, fb, n, rng, used, reserved)
        elif layout == "alone":
            other = np.zeros(n, np.float32)
        elif layout == "absent":
            target = np.zeros(n, np.float32)
        enrollment, _, _ = self.utterances(a, fa, int(rng.uniform(*c.enrollment_seconds) * SAMPLE_RATE), rng,
                                           set(used), gap=(0.05, 0.3))
        if not np.any(enrollment):
            raise DataError(f"speaker {a} has no utterance left for an enrollment clip")
        target, other, enrollment = self._room(target, other, enrollment, rng)
        reference = active_rms(target)
        level = active_rms(other)
        if reference > 0 and level > 0:
            other = other * (reference / level / 10 ** (rng.uniform(*c.tir_db) / 20))
        speech = target + other
        noise = np.zeros(n, np.float32)
        if rng.random() < c.noise_rate and self.noise_classes:
            cls = self.noise_classes[rng.integers(len(self.noise_classes))]
            noise, _, _ = self._generator.track(cls, rng)
            noise = noise[:n] if len(noise) >= n else np.pad(noise, (0, n - len(noise)))
            speech_level, noise_level = active_rms(speech), active_rms(noise)
            if speech_level > 0 and noise_level > 0:
                noise = noise * (speech_level / noise_level * 10 ** (rng.uniform(*c.noise_db) / 20))
        mixture = speech + noise
        if start and rng.random() < c.live_enrollment_rate:
            enrollment = mixture[:start].astype(np.float32)  # the stream's solo start, enrolled live
        else:
            enrollment = self._other_microphone(enrollment, rng)
        peak = float(np.abs(mixture).max())
        gain = 10 ** (rng.uniform(*c.peak_dbfs) / 20) / peak if peak > 0 else 1.0
        genders = (self.genders[a], self.genders[b])
        prompt = None
        if genders[0] and genders[1] and genders[0] != genders[1] and rng.random() < c.gender_prompt_rate:
            wordings = prompts_for(GENDER_CLASS[genders[0]]).train
            prompt = wordings[rng.integers(len(wordings))]
        if rng.random() < c.lead_silence_rate:
            lead = int(rng.uniform(*c.lead_silence_seconds) * SAMPLE_RATE)
            mixture, target, noise = _delayed(mixture, lead), _delayed(target, lead), _delayed(noise, lead)
        peak_e = float(np.abs(enrollment).max())
        return VoicePair(mixture=(mixture * gain).astype(np.float32), target=(target * gain).astype(np.float32),
                         enrollment=(enrollment * (0.5 / peak_e if peak_e > 0.5 else 1.0)).astype(np.float32),
                         layout=layout, target_speaker=a, interferer_speaker=b, genders=genders, prompt=prompt,
                         noise=(noise * gain).astype(np.float32))

    def _other_microphone(self, enrollment: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        c = self.config
        if rng.random() < c.enrollment_eq_rate:
            enrollment = random_eq(enrollment, rng, 6.0)
        if rng.random() < c.enrollment_noise_rate:
            floor, _ = background_noise(rng, len(enrollment))
            level, floor_level = active_rms(enrollment), active_rms(floor)
            if level > 0 and floor_level > 0:
                snr = rng.uniform(*c.enrollment_noise_snr_db)
                enrollment = enrollment + floor * (level / floor_level / 10 ** (snr / 20))
        return enrollment.astype(np.float32)

    def _pick_speakers(self, rng: np.random.Generator, same_gender: bool | None) -> tuple[str, str]:
        for _ in range(100):
            a, b = (str(s) for s in rng.choice(self.speakers, size=2, replace=False))
            ga, gb = self.genders[a], self.genders[b]
            if same_gender is None or (ga and gb and (ga == gb) == same_gender):
                return a, b
        raise DataError(f"no pair of {self.pool.split} speakers with {'the same' if same_gender else 'different'} "
                        "known genders")

    def _turns(self, a, b, fa, fb, n, rng, used, reserved) -> tuple[np.ndarray, np.ndarray]:
        """Alternating single utterances with short pauses (at most a little overlap at the hand-over)."""
        target, other = np.zeros(n, np.float32), np.zeros(n, np.float32)
        pos, speaker_a = int(rng.uniform(0, 0.3) * SAMPLE_RATE), bool(rng.random() < 0.5)
        while pos < n:
            speaker, factor, track = (a, fa, target) if speaker_a else (b, fb, other)
            clip, ids, _ = self.utterances(speaker, factor, int(rng.uniform(0.8, 2.0) * SAMPLE_RATE), rng,
                                           set(used) | reserved if speaker_a else set())
            if speaker_a:
                used.extend(ids)
            end = min(n, pos + len(clip))
            track[pos:end] += clip[: end - pos]
            pos = end + int(rng.uniform(-0.1, 0.5) * SAMPLE_RATE)
            speaker_a = not speaker_a
        return target, other

    def _room(self, target, other, enrollment, rng):
        c = self.config
        if rng.random() < c.eq_rate:
            target, other = random_eq(target, rng, 6.0), random_eq(other, rng, 6.0)
        if rng.random() < c.reverb_rate:
            if self._rirs is None:
                self._rirs = load_rir_bank(self.pool.cache_dir, AugmentConfig())
            room = self._rirs[rng.integers(len(self._rirs))]
            target, other = reverberate(target, room[0]), reverberate(other, room[1])
            if rng.random() < 0.5:  # the enrollment was recorded in the same room
                enrollment = reverberate(enrollment, room[0])
        return target, other, enrollment


def _gender_by_pitch(pairs: VoicePairGenerator, speaker: str) -> str | None:
    """A recorded voice's gender from the median pitch of (up to 30 of) its clips, as the pitch mask draws the line
    (GenderMaskConfig.woman_from_hz); None when too little of it is voiced. (With 8 short clips, some voices of
    spoken letters came out an octave off.)"""
    from samstream.model.gender_mask import GenderMaskConfig, median_pitch

    clips = [pairs.pool.read(entry, np.random.default_rng(0), 10 * SAMPLE_RATE)
             for entry in pairs.pool.by_speaker[speaker][:30]]
    pitch = median_pitch(np.concatenate(clips))
    return None if not pitch else "female" if pitch >= GenderMaskConfig.woman_from_hz else "male"


def _delayed(audio: np.ndarray, samples: int) -> np.ndarray:
    """The same length, starting with `samples` of digital silence."""
    return np.concatenate([np.zeros(min(samples, len(audio)), audio.dtype), audio[: max(0, len(audio) - samples)]])


def _gender(entries: list[dict]) -> str | None:
    genders = {e.get("gender") for e in entries} - {None}
    if len(genders) == 1:
        return genders.pop()
    classes = {e["class"] for e in entries}
    if classes == {"man speaking"}:
        return "male"
    if classes == {"woman speaking"}:
        return "female"
    return None


class VoicePairSource:
    """`samstream train --task voice`: voice pairs of the train split as training examples."""

    def __init__(self, cache_dir, seconds: float, overrides: dict | None = None):
        settings = {"seconds": seconds, **(overrides or {})}
        unknown = sorted(set(settings) - {f.name for f in fields(VoiceConfig)})
        if unknown:
            raise DataError(f"unknown voice-pair setting(s) {', '.join(unknown)}: see VoiceConfig in "
                            "model/training/voices.py")
        settings = {k: tuple(v) if isinstance(v, list) else v for k, v in settings.items()}  # JSON lists -> ranges
        self.generator = VoicePairGenerator(MixtureGenerator.from_cache(cache_dir, "train"), VoiceConfig(**settings))

    def sample(self, rng: np.random.Generator):
        from samstream.model.training.train import TrainingExample

        for _ in range(10):
            try:
                pair = self.generator.pair(rng)
                break
            except DataError:
                continue
        else:
            raise DataError("10 voice pairs in a row could not be made: too few utterances per speaker?")
        return TrainingExample(pair.mixture, pair.target, pair.prompt, pair.enrollment,
                               example_required=pair.prompt is None)


PAIR_TYPES = {  # evaluation pair type -> (layout, same gender?)
    "overlap-cross-gender": ("overlap", False),
    "overlap-same-gender": ("overlap", True),
    "turns": ("turns", None),
}


def build_voice_eval(cache_dir, out_dir, per_type: int = 20, seed: int = 0, seconds: float = 6.0,
                     force: bool = False, real_voices: bool = False,
                     noise_db: tuple[float, float] | None = None) -> dict:
    """Voice-pick items of held-out voices never heard in training, in the eval layout: two voices overlapping
    (different genders, the same gender) and taking turns; the enrollment clip holds other utterances of the
    target. meta.json: target_class "speaker", pair_type, target/interferer speaker and gender.

    `real_voices`: only recorded voices (no TTS), whose gender the index mostly does not know: a voice without one
    takes it from its median pitch (`gender_mask.median_pitch`, below / from 165 Hz: male / female; listed in the
    manifest), and a pair type the voices cannot make is left out (named in the manifest). `noise_db`: a held-out
    non-speech sound under every pair, this many dB against the speech (a call in a noisy place)."""
    import shutil
    from pathlib import Path

    import soundfile as sf

    from samstream.model.class_prompts import canonical
    from samstream.model.training.common import write_json
    from samstream.model.training.index import load_index
    from samstream.model.training.mixtures import SPEAKER_CLASS
    from samstream.model.training.split import HELDOUT, TRAIN

    out_dir = Path(out_dir)
    if out_dir.exists() and any(out_dir.iterdir()):
        if not force:
            raise DataError(f"{out_dir} is not empty: choose another folder or pass --force to replace it")
        shutil.rmtree(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    entries = load_index(Path(cache_dir))["entries"]
    trained = {e.get("speaker") for e in entries if e["split"] == TRAIN}
    noise = {"noise_rate": 1.0, "noise_db": tuple(noise_db)} if noise_db else {"noise_rate": 0.0}
    pairs = VoicePairGenerator(MixtureGenerator(entries, cache_dir, HELDOUT),
                               VoiceConfig(seconds=seconds, reverb_rate=0.2, speed_range=0.0, gender_prompt_rate=0.0,
                                           **noise))
    pairs.speakers = [s for s in pairs.speakers if s not in trained]
    by_pitch = {}
    if real_voices:
        pairs.speakers = [s for s in pairs.speakers if all(e["origin"] == "real" for e in pairs.pool.by_speaker[s])]
        by_pitch = {s: _gender_by_pitch(pairs, s) for s in pairs.speakers if pairs.genders[s] is None}
        pairs.genders.update(by_pitch)
    counts, left_out = {}, []
    for t, (pair_type, (layout, same_gender)) in enumerate(PAIR_TYPES.items()):
        rng = np.random.default_rng([seed, 77_003, t])
        for i in range(per_type):
            for _ in range(50):
                try:
                    pair = pairs.pair(rng, layout, same_gender=same_gender)
                except DataError:
                    continue
                if not noise_db or np.any(pair.noise):  # (a sound's track can be silent in the window: draw again)
                    break
            else:
                if not real_voices:
                    raise DataError(f"no {pair_type} voice pair could be made from the held-out voices")
                left_out.append(pair_type)
                break
            folder = out_dir / f"voice-{pair_type}-{i:03d}"
            folder.mkdir()
            stems = [("mixture", pair.mixture), ("target", pair.target),
                     ("interferer1", pair.mixture - pair.target - pair.noise), ("enrollment", pair.enrollment)]
            if np.any(pair.noise):
                stems.append(("interferer2", pair.noise))
            for name, wav in stems:
                sf.write(str(folder / f"{name}.wav"), wav.astype(np.float32), SAMPLE_RATE, subtype="FLOAT")
            write_json(folder / "meta.json", {
                "target_class": SPEAKER_CLASS, "prompts": [canonical(SPEAKER_CLASS)], "pair_type": pair_type,
                "split": HELDOUT, "sample_rate": SAMPLE_RATE, "seconds": seconds, "enrollment": "enrollment.wav",
                "target_speaker": pair.target_speaker, "interferer_speaker": pair.interferer_speaker,
                "genders": list(pair.genders)})
            counts[pair_type] = counts.get(pair_type, 0) + 1
    manifest = {"split": HELDOUT, "seed": seed, "per_pair_type": counts, "items": sum(counts.values()),
                "speakers": len(pairs.speakers), "real_voices": real_voices,
                "noise_db": list(noise_db) if noise_db else None}
    if real_voices:
        manifest.update(genders_by_pitch=by_pitch, pair_types_left_out=left_out)
    write_json(out_dir / "manifest.json", manifest)
    return manifest
