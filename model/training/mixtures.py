"""On-the-fly training mixtures: a target class, 1-3 interferers of other classes, exact stems.

    gen = MixtureGenerator.from_cache(cache_dir, split="train")
    ex = gen.example(np.random.default_rng(0))     # Example: mixture, target, residual, prompt, ...
    ds = MixtureDataset(cache_dir, split="train")  # torch IterableDataset of dicts, worker-seeded
    write_shard("shard.npz", cache_dir, n=512)     # pre-generated examples for quick training
    ShardDataset("shard.npz")                      # map-style dataset over a shard

Recipe (DATA.md): 6 s at 16 kHz; target-to-interferer ratio U(-5, +5) dB on active RMS, per
interferer; half of gendered-speech targets get the other gender as an interferer; a few negative
queries (the prompted class is absent, the target is silence); "music" targets are full mixes or
sums of instrument stems; a few "speaker" examples (two voices, the enrollment clip says which one);
augmentation: random crops and event placement, speed +-5 %, EQ, shared-room reverb; one common gain.
Real recordings are drawn before rendered/procedural ones (`real_weight`). Every example carries
mixture == target + residual exactly (float32), the class, a prompt from the class's training
wordings, and for a known speaker an enrollment clip from other utterances of the same speaker.
Only entries of the requested split are ever read: training never touches held-out sources.
"""

from __future__ import annotations

import sys
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy import signal
from torch.utils.data import IterableDataset

from samstream.model.training.augment import (AugmentConfig, active_rms, background_noise, change_speed,
                                              device_filter, distort, level_ride, load_rir_bank, random_eq,
                                              reverberate)
from samstream.model.classes import ALL_CLASSES, GENDERED, REQUIRED_CLASSES, family, members, overlaps
from samstream.model.training.common import SAMPLE_RATE, DataError
from samstream.model.class_prompts import prompts_for

SPEAKER_CLASS = "speaker"  # the audio-prompted "this voice" task
NOISE_CLASS = "background noise"  # the noise floor of heavy augmentation: always residual, never a target
MAX_INTERFERERS = 3


@dataclass(frozen=True)
class MixtureConfig:
    seconds: float = 6.0
    min_interferers: int = 1
    max_interferers: int = 3
    tir_db: tuple[float, float] = (-5.0, 5.0)
    other_gender_rate: float = 0.5  # of gendered-speech targets
    negative_rate: float = 0.05
    speaker_pair_rate: float = 0.05
    real_weight: float = 0.75  # chance to draw a real recording when a class has real and synthetic
    # > 0: a class with fewer real recordings than this draws them less often (real_weight * sqrt(files /
    # real_files_full)), so that one fire-truck recording does not stand for "siren" three times in four.
    real_files_full: int = 0
    extra_class_weight: float = 0.5  # target-class weight of the extras (the 17 required weigh 1)
    music_full_mix_rate: float = 0.5  # "music" targets: full mix, else a sum of instrument stems
    enrollment_seconds: float = 4.0
    peak_dbfs: tuple[float, float] = (-20.0, -1.0)  # mixture peak after the common gain
    heldout_prompts: bool = False  # draw from the held-out wordings (evaluation of unseen phrasing)
    augment: AugmentConfig | None = field(default_factory=AugmentConfig)  # None: no augmentation

    @classmethod
    def heavy(cls, **overrides) -> "MixtureConfig":
        """AugmentConfig.heavy() and a wider range of mixture levels (peaks from -35 to -1 dBFS)."""
        values = dict(augment=AugmentConfig.heavy(), peak_dbfs=(-35.0, -1.0))
        values.update(overrides)
        return cls(**values)

    @property
    def samples(self) -> int:
        return int(round(self.seconds * SAMPLE_RATE))

    @property
    def enrollment_samples(self) -> int:
        return int(round(self.enrollment_seconds * SAMPLE_RATE))


@dataclass
class Example:
    mixture: np.ndarray  # float32 [T]; == target + residual exactly
    target: np.ndarray  # float32 [T]; zeros for a negative query
    residual: np.ndarray  # float32 [T]
    interferers: list[np.ndarray]  # float32 [T] each, at mixture level (residual = their sum, rounded)
    class_name: str  # target class ("speaker" for the voice-pick task)
    prompt: str
    enrollment: np.ndarray | None  # float32 [E] of the target speaker, other utterances; None if unknown
    is_negative: bool
    tir_db: list[float]  # per interferer, target active RMS over interferer active RMS
    target_sources: list[str]  # entry ids
    interferer_classes: list[str]
    interferer_sources: list[list[str]]
    speaker: str | None = None


class SourcePool:
    """The entries of one split, grouped for drawing: by class, real vs synthetic, package, speaker."""

    def __init__(self, entries: list[dict], cache_dir: Path, split: str):
        self.cache_dir = Path(cache_dir)
        self.split = split
        self.entries = [e for e in entries if e["split"] == split]
        self.by_class: dict[str, list[dict]] = defaultdict(list)
        self.by_speaker: dict[str, list[dict]] = defaultdict(list)
        self.by_group: dict[str, list[dict]] = defaultdict(list)
        for e in self.entries:
            self.by_class[e["class"]].append(e)
            if family(e["class"]) == "speech":
                self.by_speaker[e["speaker"] or ""].append(e)
            self.by_group[self.group_of(e)].append(e)
        self.by_speaker.pop("", None)
        self._choices: dict[tuple[str, bool], tuple[list[list[dict]], np.ndarray]] = {}

    @staticmethod
    def group_of(entry: dict) -> str:
        """Clips that plausibly share a voice or a scene: the speaker, else the folder."""
        return entry.get("speaker") or f"{entry['package']}:{entry['source'].rsplit('/', 1)[0]}"

    def available(self, cls: str) -> bool:
        return any(self.by_class.get(c) for c in members(cls))

    def classes(self) -> list[str]:
        return [c for c in ALL_CLASSES if self.available(c)]

    def _packages(self, cls: str, real: bool) -> tuple[list[list[dict]], np.ndarray]:
        """Entries of cls (and its sub-classes) grouped by package, weighted by sqrt(package minutes):
        many files of one package must not drown the other packages (diversity of sources)."""
        key = (cls, real)
        if key not in self._choices:
            groups: dict[str, list[dict]] = defaultdict(list)
            for c in members(cls):
                for e in self.by_class.get(c, ()):
                    if (e["origin"] == "real") == real:
                        groups[e["package"]].append(e)
            lists = [groups[p] for p in sorted(groups)]
            weights = np.array([np.sqrt(sum(e["duration"] for e in g)) for g in lists], dtype=np.float64)
            self._choices[key] = (lists, weights / weights.sum() if len(lists) else weights)
        return self._choices[key]

    def real_files(self, cls: str) -> int:
        """How many real recordings cls (with its sub-classes) has in this split."""
        return sum(len(group) for group in self._packages(cls, True)[0])

    def draw(self, cls: str, rng: np.random.Generator, real_weight: float) -> dict:
        real, synthetic = self._packages(cls, True), self._packages(cls, False)
        if not real[0] and not synthetic[0]:
            raise DataError(f"no {self.split} sources for class {cls!r}")
        use_real = bool(real[0]) and (not synthetic[0] or rng.random() < real_weight)
        lists, weights = real if use_real else synthetic
        group = lists[rng.choice(len(lists), p=weights)]
        return group[rng.integers(len(group))]

    def read(self, entry: dict, rng: np.random.Generator, max_samples: int) -> np.ndarray:
        """The whole clip, or a random crop of max_samples when it is longer."""
        import soundfile as sf

        total = int(round(entry["duration"] * SAMPLE_RATE))
        start = int(rng.integers(0, total - max_samples + 1)) if total > max_samples else 0
        wav, _ = sf.read(str(self.cache_dir / entry["path"]), start=start, frames=min(total, max_samples),
                         dtype="float32", always_2d=True)
        return wav.mean(axis=1)


class MixtureGenerator:
    """Draws examples from one split of the index; all randomness comes from the rng passed in."""

    def __init__(self, entries: list[dict], cache_dir: Path, split: str = "train", config: MixtureConfig = MixtureConfig()):
        self.config = config
        self.pool = SourcePool(entries, cache_dir, split)
        self.classes = self.pool.classes()
        if not self.classes:
            raise DataError(f"the index has no {split} sources: run `samstream data index` and `render`")
        weights = np.array([1.0 if c in REQUIRED_CLASSES else config.extra_class_weight for c in self.classes])
        self.class_weights = weights / weights.sum()
        self.pair_speakers = sorted(s for s, es in self.pool.by_speaker.items() if len(es) >= 2)
        self._rirs = None

    @classmethod
    def from_cache(cls, cache_dir: Path, split: str = "train", config: MixtureConfig = MixtureConfig()) -> "MixtureGenerator":
        from samstream.model.training.index import load_index

        return cls(load_index(Path(cache_dir))["entries"], cache_dir, split, config)

    def real_weight(self, cls: str) -> float:
        """The chance to draw a real recording of cls (when it has real and synthetic sources)."""
        full = self.config.real_files_full
        if full <= 0:
            return self.config.real_weight
        return self.config.real_weight * min(1.0, float(np.sqrt(self.pool.real_files(cls) / full)))

    # ------------------------------------------------------------------ tracks
    def _augment_clip(self, wav: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        aug = self.config.augment
        if aug and rng.random() < aug.speed_rate:
            wav = change_speed(wav, 1.0 + rng.uniform(-aug.speed_range, aug.speed_range))
        return wav

    def _continuation(self, entry: dict, used: set[str]) -> list[dict]:
        """Other clips of the same speaker (or folder) to follow a short speech clip."""
        return [e for e in self.pool.by_group[SourcePool.group_of(entry)] if e["id"] not in used]

    def track(self, cls: str, rng: np.random.Generator, entry: dict | None = None) -> tuple[np.ndarray, list[str], dict]:
        """A [T] track of one class: a crop of a long recording, an utterance train of one speaker,
        or one to three events at random times. Returns (track, entry ids used, first entry)."""
        n = self.config.samples
        first = entry or self.pool.draw(cls, rng, self.real_weight(cls))
        clip = self._augment_clip(self.pool.read(first, rng, int(n * 1.06)), rng)
        used = [first["id"]]
        track = np.zeros(n, dtype=np.float32)
        if len(clip) >= n:
            track[:] = clip[:n]
        elif family(first["class"]) == "speech":
            pos = int(rng.uniform(0, min(1.0, self.config.seconds / 4)) * SAMPLE_RATE)
            candidates = self._continuation(first, set(used))
            if candidates and first.get("speaker"):  # keep one utterance back for the enrollment clip
                candidates.pop(int(rng.integers(len(candidates))))
            while pos < n:
                take = clip[: n - pos]
                track[pos:pos + len(take)] = take
                pos += len(clip) + int(rng.uniform(0.1, 0.8) * SAMPLE_RATE)
                if pos >= n or not candidates:
                    break
                nxt = candidates.pop(int(rng.integers(len(candidates))))
                used.append(nxt["id"])
                clip = self._augment_clip(self.pool.read(nxt, rng, n), rng)
        else:
            for k in range(int(rng.integers(1, 4))):
                if k:
                    nxt = first if rng.random() < 0.5 else self.pool.draw(cls, rng, self.real_weight(cls))
                    used.append(nxt["id"])
                    clip = self._augment_clip(self.pool.read(nxt, rng, n), rng)
                start = int(rng.integers(0, max(1, n - len(clip) // 2)))
                take = clip[: n - start]
                track[start:start + len(take)] += take
        aug = self.config.augment
        if aug and rng.random() < aug.eq_rate:
            track = random_eq(track, rng, aug.eq_max_db, aug.eq_max_sections)
        if aug and aug.level_ride_rate > 0 and rng.random() < aug.level_ride_rate:
            track = level_ride(track, rng, aug.level_ride_db)
        if aug and aug.clip_rate > 0 and rng.random() < aug.clip_rate:
            track = distort(track, rng, aug.clip_drive_db)
        return track, used, first

    def music_track(self, rng: np.random.Generator) -> tuple[np.ndarray, list[str], dict]:
        """"music": a full mix, or two or three instrument stems summed at random relative levels."""
        instruments = [c for c in members("music") if c != "music" and self.pool.available(c)]
        if self.pool.by_class.get("music") and (len(instruments) < 2 or rng.random() < self.config.music_full_mix_rate):
            return self.track("music", rng, self.pool.draw("music", rng, self.real_weight("music")))
        picked = rng.choice(instruments, size=min(len(instruments), int(rng.integers(2, 4))), replace=False)
        total, used, first = np.zeros(self.config.samples, dtype=np.float32), [], None
        for cls in picked:
            part, ids, entry = self.track(str(cls), rng)
            level = active_rms(part)
            if level > 0:
                total += part / level * 10 ** (rng.uniform(-6, 0) / 20)
            used += ids
            first = first or entry
        return total, used, first

    def enrollment(self, speaker: str | None, used: list[str], rng: np.random.Generator) -> np.ndarray | None:
        """Other utterances of the speaker, concatenated to enrollment_seconds; None if there are none."""
        if not speaker:
            return None
        used_ids = set(used)
        others = [e for e in self.pool.by_speaker.get(speaker, ()) if e["id"] not in used_ids]
        if not others:
            return None
        n = self.config.enrollment_samples
        out, pos = np.zeros(n, dtype=np.float32), 0
        for i in rng.permutation(len(others)):
            clip = self.pool.read(others[i], rng, n)
            take = clip[: n - pos]
            out[pos:pos + len(take)] = take
            pos += len(take) + int(0.1 * SAMPLE_RATE)
            if pos >= n:
                break
        return out

    # ---------------------------------------------------------------- examples
    def _sample_class(self, rng: np.random.Generator, allowed=None) -> str:
        classes, weights = self.classes, self.class_weights
        if allowed is not None:
            keep = [i for i, c in enumerate(classes) if allowed(c)]
            if not keep:
                raise DataError("no class is available as an interferer for this target")
            classes, weights = [classes[i] for i in keep], weights[keep] / weights[keep].sum()
        return classes[rng.choice(len(classes), p=weights)]

    def _prompt(self, cls: str, rng: np.random.Generator) -> str:
        wordings = prompts_for(cls)
        choices = wordings.heldout if self.config.heldout_prompts else wordings.train
        return choices[rng.integers(len(choices))]

    def example(self, rng: np.random.Generator) -> Example:
        u = rng.random()
        if u < self.config.speaker_pair_rate and len(self.pair_speakers) >= 2:
            return self.speaker_pair(rng)
        if u < self.config.speaker_pair_rate + self.config.negative_rate:
            return self.negative(rng)
        return self.example_for_class(self._sample_class(rng), rng)

    def _interferer_count(self, rng: np.random.Generator) -> int:
        return int(rng.integers(self.config.min_interferers, min(self.config.max_interferers, MAX_INTERFERERS) + 1))

    def example_for_class(self, cls: str, rng: np.random.Generator) -> Example:
        if cls == "music":
            target, used, first = self.music_track(rng)
        else:
            target, used, first = self.track(cls, rng)
        speaker = first.get("speaker") if family(first["class"]) == "speech" else None
        count = self._interferer_count(rng)
        classes: list[str] = []
        other = GENDERED.get(cls)
        if other and self.pool.available(other) and rng.random() < self.config.other_gender_rate:
            classes.append(other)  # the other gender: the one speech interferer a text prompt can resolve
        while len(classes) < count:
            taken = set(classes)
            classes.append(self._sample_class(rng, lambda c: not overlaps(cls, c) and c not in taken))
        return self._assemble(cls, target, used, classes, rng, speaker=speaker,
                              enrollment=self.enrollment(speaker, used, rng))

    def negative(self, rng: np.random.Generator, cls: str | None = None) -> Example:
        """The prompted class is absent: the target is silence and everything is residual."""
        cls = cls or self._sample_class(rng)
        classes: list[str] = []
        for _ in range(self._interferer_count(rng)):
            taken = set(classes)
            classes.append(self._sample_class(rng, lambda c: not overlaps(cls, c) and c not in taken))
        return self._assemble(cls, None, [], classes, rng)

    def speaker_pair(self, rng: np.random.Generator, speakers: tuple[str, str] | None = None) -> Example:
        """Two voices; the enrollment clip (other utterances of the target speaker) says which one."""
        a, b = speakers or tuple(rng.choice(self.pair_speakers, size=2, replace=False))
        first = self.pool.by_speaker[a][rng.integers(len(self.pool.by_speaker[a]))]
        target, used, _ = self.track(first["class"], rng, first)
        other = self.pool.by_speaker[b][rng.integers(len(self.pool.by_speaker[b]))]
        interferer, other_used, _ = self.track(other["class"], rng, other)
        return self._assemble(SPEAKER_CLASS, target, used, [], rng, speaker=a,
                              enrollment=self.enrollment(a, used, rng),
                              given=[(other["class"], interferer, other_used)])

    def _assemble(self, cls: str, target: np.ndarray | None, used: list[str], classes: list[str],
                  rng: np.random.Generator, speaker: str | None = None, enrollment: np.ndarray | None = None,
                  given: list | None = None) -> Example:
        parts = list(given or [])
        for c in classes:
            wav, ids, _ = self.music_track(rng) if c == "music" else self.track(c, rng)
            parts.append((c, wav, ids))
        aug = self.config.augment
        if aug and rng.random() < aug.reverb_rate:
            if self._rirs is None:
                self._rirs = load_rir_bank(self.pool.cache_dir, aug)
            room = self._rirs[rng.integers(len(self._rirs))]
            slots = rng.permutation(room.shape[0])
            if target is not None:
                target = reverberate(target, room[slots[0]])
            parts = [(c, reverberate(w, room[slots[(i + 1) % len(slots)]]), ids) for i, (c, w, ids) in enumerate(parts)]
        # Levels: each interferer sits tir dB below the target (active RMS). A negative query has no
        # target: the first interferer is the reference and the others sit relative to it.
        reference = active_rms(target) if target is not None else 0.0
        scaled, tirs = [], []
        for _c, wav, _ids in parts:
            level = active_rms(wav)
            tir = float(rng.uniform(*self.config.tir_db))
            if level > 0 and reference == 0:
                reference = level
            elif level > 0:
                wav = wav * (reference / level / 10 ** (tir / 20))
            scaled.append(wav)
            tirs.append(tir if target is not None and level > 0 else float("nan"))
        n = self.config.samples
        if aug and aug.noise_rate > 0 and rng.random() < aug.noise_rate and reference > 0:
            # A noise floor under everything: part of the residual, snr dB below the target (or the reference).
            noise, kind = background_noise(rng, n)
            snr = float(rng.uniform(*aug.noise_snr_db))
            scaled.append(noise * (reference / active_rms(noise) / 10 ** (snr / 20)))
            tirs.append(snr if target is not None else float("nan"))
            parts.append((NOISE_CLASS, noise, [f"noise:{kind}"]))
        if aug and aug.device_rate > 0 and rng.random() < aug.device_rate:
            # Heard through one device: the same (linear) filter on every stem keeps the stems exact.
            sos = device_filter(rng)
            target = None if target is None else signal.sosfilt(sos, target).astype(np.float32)
            scaled = [signal.sosfilt(sos, w).astype(np.float32) for w in scaled]
        target64 = np.zeros(n) if target is None else target.astype(np.float64)
        rest64 = np.sum(scaled, axis=0) if scaled else np.zeros(n)
        peak = float(np.abs(target64 + rest64).max())
        gain = 10 ** (rng.uniform(*self.config.peak_dbfs) / 20) / peak if peak > 0 else 1.0
        target32 = (target64 * gain).astype(np.float32)
        residual32 = (rest64 * gain).astype(np.float32)
        return Example(
            mixture=target32 + residual32, target=target32, residual=residual32,
            interferers=[(w * gain).astype(np.float32) for w in scaled], class_name=cls,
            prompt=self._prompt(cls, rng), is_negative=target is None,
            enrollment=None if enrollment is None else _peak_limit(enrollment),
            tir_db=tirs, target_sources=used, interferer_classes=[c for c, _w, _i in parts],
            interferer_sources=[ids for _c, _w, ids in parts], speaker=speaker)


def _peak_limit(wav: np.ndarray, peak: float = 0.9) -> np.ndarray:
    """The enrollment clip keeps its own level, only kept from clipping."""
    m = float(np.abs(wav).max())
    return (wav * (peak / m) if m > peak else wav).astype(np.float32)


# ------------------------------------------------------------------------- torch datasets and shards

def example_to_arrays(ex: Example, enrollment_samples: int) -> dict:
    """Fixed-size fields (numpy) so examples batch and store: enrollment zero-padded, tir_db NaN-padded."""
    enrollment = np.zeros(enrollment_samples, dtype=np.float32)
    if ex.enrollment is not None:
        enrollment[: len(ex.enrollment)] = ex.enrollment[:enrollment_samples]
    tir = np.full(MAX_INTERFERERS, np.nan, dtype=np.float32)
    tir[: len(ex.tir_db)] = ex.tir_db[:MAX_INTERFERERS]
    return {"mixture": ex.mixture, "target": ex.target, "residual": ex.residual, "enrollment": enrollment,
            "has_enrollment": ex.enrollment is not None, "class_name": ex.class_name, "prompt": ex.prompt,
            "is_negative": ex.is_negative, "tir_db": tir, "sources": "|".join(ex.target_sources)}


def _to_torch(arrays: dict) -> dict:
    import torch

    return {k: torch.from_numpy(v) if isinstance(v, np.ndarray) else v for k, v in arrays.items()}


class MixtureDataset(IterableDataset):
    """Endless (or `num_examples`-long) stream of fresh mixtures, as dicts of tensors and strings.

    Keys: mixture, target, residual [T] float32; enrollment [E] float32; has_enrollment, is_negative
    bool; class_name, prompt, sources str; tir_db [3] float32 (NaN-padded). Each DataLoader worker
    (and each `rank`, and each new iteration) gets its own seed, so no two workers repeat a mixture.
    """

    def __init__(self, cache_dir: Path, split: str = "train", config: MixtureConfig = MixtureConfig(),
                 seed: int = 0, num_examples: int | None = None, rank: int = 0):
        super().__init__()
        self.cache_dir, self.split, self.config = Path(cache_dir), split, config
        self.seed, self.num_examples, self.rank = seed, num_examples, rank
        self._generator: MixtureGenerator | None = None
        self._epoch = 0

    def __iter__(self):
        from torch.utils.data import get_worker_info

        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info else (0, 1)
        if self._generator is None:  # built in the worker, after the fork
            self._generator = MixtureGenerator.from_cache(self.cache_dir, self.split, self.config)
        rng = np.random.default_rng([self.seed, self.rank, worker, self._epoch])
        self._epoch += 1
        count = None
        if self.num_examples is not None:
            count = self.num_examples // workers + (1 if worker < self.num_examples % workers else 0)
        produced = 0
        while count is None or produced < count:
            ex = self._generator.example(rng)
            produced += 1
            yield _to_torch(example_to_arrays(ex, self.config.enrollment_samples))


def write_shard(path: Path, cache_dir: Path, n: int, split: str = "train", config: MixtureConfig = MixtureConfig(),
                seed: int = 0) -> Path:
    """Pre-generate n examples into one .npz (target and residual stored; mixture = their sum)."""
    from tqdm import tqdm

    gen = MixtureGenerator.from_cache(cache_dir, split, config)
    rng = np.random.default_rng([seed, 10_007])
    rows = [example_to_arrays(gen.example(rng), config.enrollment_samples)
            for _ in tqdm(range(n), desc="shard", unit="ex", file=sys.stderr)]
    stacked = {k: np.stack([r[k] for r in rows]) for k in rows[0] if k != "mixture"}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, sample_rate=SAMPLE_RATE, split=split, **stacked)
    return path


class ShardDataset:
    """Map-style dataset over a write_shard file; items have the MixtureDataset keys."""

    def __init__(self, path: Path):
        data = np.load(path)
        self.arrays = {k: data[k] for k in data.files if k not in ("sample_rate", "split")}
        self.split = str(data["split"])

    def __len__(self) -> int:
        return len(self.arrays["target"])

    def __getitem__(self, i: int) -> dict:
        item = {k: v[i] for k, v in self.arrays.items()}
        item["mixture"] = item["target"] + item["residual"]  # the same float32 sum as at generation
        for key in ("class_name", "prompt", "sources"):
            item[key] = str(item[key])
        for key in ("has_enrollment", "is_negative"):
            item[key] = bool(item[key])
        return _to_torch(item)
