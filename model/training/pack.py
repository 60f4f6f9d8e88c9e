"""`samstream data pack OUT` / `samstream data unpack PACK OUT`: a small, self-contained training-data pack.

A GPU machine lent for a training burst has no network and no Debian packages: whatever it trains on
travels with the working tree, under a size cap (64 MiB, wheels and code included). A pack is a
folder in the data cache's own layout — `index.json` (same schema, every entry `split: train`),
`stems/NNNNN-name.opus` (one flat folder), `rirs/` and the cached MiniLM prompt vectors — so
`MixtureSource` reads it unchanged (`samstream train --data PACK`).

What goes in, within `max_mb` (the sum of the pack's file sizes):
- train-split entries only (`split.py` assigned them; held-out sources never enter a pack);
- clips chosen by a weighted fair queue that mirrors how `mixtures.py` draws: every class gets minutes in
  proportion to its class weight (17 required classes 1, extras `extra_class_weight`); within a class,
  real recordings get `real_weight` of them and rendered/procedural stems the rest; within that, each
  package gets a share in proportion to sqrt(its minutes). A class, kind or package that runs out of
  audio hands its share to its siblings. Within a package, folders/speakers are visited round-robin in
  a seeded order, `SPEAKER_RUN` utterances at a time for a known speaker, so speaker ids survive with
  enough utterances for speaker pairs and enrollment clips;
- recordings longer than `clip_seconds` are cut into windows (`pack_offset` says where; the entry keeps
  its id): one window of every file of a package comes before any file's second window;
- audio as Ogg/Opus at `kbps` (libsndfile), about 7x smaller than the cache's 16-bit FLAC;
- the room impulse response bank as float16 (`load_rir_bank` casts it back), the prompt vectors.

Opus decodes at only a few hundred times real time per core, so a burst first runs `unpack`: every stem
to 16-bit WAV (seconds on 16 cores) and a float32 bank, and trains from that copy.
"""

from __future__ import annotations

import math
import os
import re
import shutil
import sys
import zlib
from collections import defaultdict, deque
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from samstream.model.classes import REQUIRED_CLASSES
from samstream.model.training.common import SAMPLE_RATE, DataError, read_json, write_json
from samstream.model.training.index import INDEX_NAME, load_index, summarize
from samstream.model.training.split import TRAIN

PACK_VERSION = 1
SPEAKER_RUN = 3  # utterances taken per visit of a known speaker: pairs and enrollment need several
OGG_HEADER_BYTES = 400  # Ogg/Opus headers per file (only for the first size estimate; sizes are measured)
INDEX_BYTES_PER_ENTRY = 700  # index.json per entry, reserved before the index is written
VECTORS_NAME = "prompt_vectors.safetensors"


@dataclass(frozen=True)
class PackConfig:
    max_mb: float = 48.0  # MiB, the whole pack (audio, index, RIR bank, prompt vectors)
    kbps: float = 24.0  # Opus bitrate
    clip_seconds: float = 12.0  # longer recordings are cut into windows of this length
    seed: int = 0
    real_weight: float = 0.75  # as MixtureConfig.real_weight
    extra_class_weight: float = 0.5  # as MixtureConfig.extra_class_weight
    workers: int = 1  # encoding processes

    @property
    def budget_bytes(self) -> int:
        return int(self.max_mb * 1024 * 1024)


@dataclass
class Clip:
    entry: dict
    offset: float  # s into the source stem
    seconds: float
    path: str = ""  # in the pack: stems/NNNNN-<name>.opus, one flat folder (fewer files to carry than a tree)


# --------------------------------------------------------------------------------------------- selection
class _Queue:
    """A weighted fair queue: take() serves the child with the least seconds per unit of weight."""

    def __init__(self, weight: float, children: list[_Queue] | None = None, clips: list[Clip] | None = None):
        self.weight, self.children, self.clips = weight, children, deque(clips or [])
        self.filled, self.exhausted = 0.0, False

    def take(self) -> Clip | None:
        if self.children is None:
            clip = self.clips.popleft() if self.clips else None
        else:
            clip = None
            while clip is None:
                open_children = [c for c in self.children if not c.exhausted]
                if not open_children:
                    break
                child = min(open_children, key=lambda c: c.filled / c.weight)
                clip = child.take()
                if clip is None:
                    child.exhausted = True
        if clip is None:
            self.exhausted = True
        else:
            self.filled += clip.seconds
        return clip


def _stable_seed(*parts) -> int:
    return zlib.crc32("|".join(map(str, parts)).encode())


def _group_of(entry: dict) -> str:
    from samstream.model.training.mixtures import SourcePool

    return SourcePool.group_of(entry)


def _windows(entry: dict, config: PackConfig, rng: np.random.Generator) -> list[Clip]:
    """A short stem whole; a long one as non-overlapping clip_seconds windows at a random phase, shuffled."""
    if entry["duration"] <= config.clip_seconds:
        return [Clip(entry, 0.0, entry["duration"])]
    count = int(entry["duration"] // config.clip_seconds)
    phase = float(rng.uniform(0, entry["duration"] - count * config.clip_seconds))
    return [Clip(entry, round(phase + k * config.clip_seconds, 3), config.clip_seconds)
            for k in rng.permutation(count)]


def _package_clips(entries: list[dict], config: PackConfig, rng: np.random.Generator) -> list[Clip]:
    """One package's clips in the order they should enter the pack: its groups (speakers, folders)
    round-robin in a shuffled order, one window of every file first, then second windows of long files..."""
    groups: dict[str, list[dict]] = defaultdict(list)
    for e in entries:
        groups[_group_of(e)].append(e)
    order = [groups[k] for k in sorted(groups)]
    rng.shuffle(order)
    queues = [deque(g[i] for i in rng.permutation(len(g))) for g in order]
    files: list[list[Clip]] = []
    while any(queues):
        for queue in queues:
            run = SPEAKER_RUN if queue and queue[0].get("speaker") else 1
            files += [_windows(queue.popleft(), config, rng) for _ in range(min(run, len(queue)))]
    return [windows[k] for k in range(max(map(len, files), default=0)) for windows in files if k < len(windows)]


def selection_queue(entries: list[dict], config: PackConfig) -> _Queue:
    """The train entries as a class -> real/synthetic -> package weighted fair queue."""
    tree: dict[str, dict[bool, dict[str, list[dict]]]] = defaultdict(lambda: defaultdict(lambda: defaultdict(list)))
    for e in entries:
        if e["split"] == TRAIN:
            tree[e["class"]][e["origin"] == "real"][e["package"]].append(e)
    classes = []
    for cls in sorted(tree):
        kinds = []
        for real in sorted(tree[cls], reverse=True):
            packages = []
            for package in sorted(tree[cls][real]):
                members = tree[cls][real][package]
                rng = np.random.default_rng(_stable_seed(config.seed, cls, real, package))
                minutes = sum(e["duration"] for e in members) / 60
                packages.append(_Queue(math.sqrt(max(minutes, 1e-6)), clips=_package_clips(members, config, rng)))
            share = config.real_weight if real else 1 - config.real_weight
            kinds.append(_Queue(share if len(tree[cls]) == 2 else 1.0, children=packages))
        weight = 1.0 if cls in REQUIRED_CLASSES else config.extra_class_weight
        classes.append(_Queue(weight, children=kinds))
    return _Queue(1.0, children=classes)


# ---------------------------------------------------------------------------------------------- encoding
def opus_compression_level(kbps: float) -> float:
    """libsndfile maps compression level 0..1 linearly onto Opus bitrates 256..6 kbit/s."""
    return float(np.clip((256.0 - kbps) / 250.0, 0.0, 1.0))


def clip_path(path: str, suffix: str) -> str:
    """A stem's path in a pack or an unpacked pack: the cache path with its audio suffix replaced."""
    for old in (".flac", ".opus", ".wav"):
        if path.endswith(old):
            return path[: -len(old)] + suffix
    return path + suffix


def _encode_one(job: tuple[str, str, float, float, float]) -> tuple[str, int, int]:
    """Worker: cut one clip from its stem and write it as Ogg/Opus; -> (path, bytes, decoded frames)."""
    import soundfile as sf

    src, dst, offset, seconds, level = job
    start, frames = round(offset * SAMPLE_RATE), round(seconds * SAMPLE_RATE)
    wav, sr = sf.read(src, start=start, frames=frames, dtype="float32", always_2d=True)
    if sr != SAMPLE_RATE:
        raise DataError(f"{src}: {sr} Hz, expected {SAMPLE_RATE} (rebuild the cache with `samstream data index`)")
    Path(dst).parent.mkdir(parents=True, exist_ok=True)
    tmp = f"{dst}.part"
    sf.write(tmp, wav.mean(axis=1), SAMPLE_RATE, format="OGG", subtype="OPUS", compression_level=level)
    os.replace(tmp, dst)
    return dst, os.path.getsize(dst), sf.info(dst).frames


def _encode(cache_dir: Path, out: Path, clips: list[Clip], config: PackConfig, progress) -> list[tuple[int, int]]:
    level = opus_compression_level(config.kbps)
    jobs = [(str(cache_dir / c.entry["path"]), str(out / c.path), c.offset, c.seconds, level) for c in clips]
    results = []
    if config.workers > 1:
        with ProcessPoolExecutor(max_workers=config.workers) as pool:
            for (_, size, frames), clip in zip(pool.map(_encode_one, jobs, chunksize=8), clips):
                results.append((size, frames))
                progress.update(clip.seconds / 60)
    else:
        for job, clip in zip(jobs, clips):
            _, size, frames = _encode_one(job)
            results.append((size, frames))
            progress.update(clip.seconds / 60)
    return results


def _fixed_files(cache_dir: Path, out: Path, vectors, encoder) -> list[str]:
    """The RIR banks (float16) and the prompt vectors; returns notes for the report."""
    notes = []
    banks = sorted((cache_dir / "rirs").glob("bank_*.npy")) if (cache_dir / "rirs").is_dir() else []
    for bank in banks:
        if bank.name.endswith(".tmp.npy"):
            continue
        (out / "rirs").mkdir(parents=True, exist_ok=True)
        np.save(out / "rirs" / bank.name, np.load(bank).astype(np.float16))
    if not banks:
        notes.append(f"no RIR bank in {cache_dir / 'rirs'}: training from this pack computes one "
                     "(needs pyroomacoustics, which the GPU machine does not have)")
    if vectors:
        from samstream.model.class_prompts import all_train_prompts
        from samstream.model.training.train import embed_prompts

        for name in (VECTORS_NAME, Path(VECTORS_NAME).with_suffix(".json").name):
            if (cache_dir / name).is_file():  # vectors kept in the cache: reused when they cover every wording
                shutil.copyfile(cache_dir / name, out / name)
        embed_prompts(all_train_prompts(), out / VECTORS_NAME, encoder=encoder)
    return notes


def folder_bytes(folder: Path) -> tuple[int, int]:
    """(sum of file sizes, number of files) under folder."""
    total = count = 0
    for root, _dirs, files in os.walk(folder):
        for name in files:
            total += os.path.getsize(os.path.join(root, name))
            count += 1
    return total, count


def _pack_entry(clip: Clip, size_frames: tuple[int, int]) -> dict:
    entry = dict(clip.entry)
    entry["path"] = clip.path
    entry["duration"] = round(size_frames[1] / SAMPLE_RATE, 4)
    entry["pack_offset"] = clip.offset
    entry["pack_source_duration"] = clip.entry["duration"]
    return entry


def build_pack(cache_dir: Path, out: Path, config: PackConfig = PackConfig(), force: bool = False,
               vectors: bool = True, encoder=None, progress: bool = True) -> dict:
    """Write the pack to `out`; returns its index (with a "pack" summary)."""
    from tqdm import tqdm

    cache_dir, out = Path(cache_dir), Path(out)
    source = load_index(cache_dir)  # verifies the split
    if out.exists() and any(out.iterdir()):
        if not force:
            raise DataError(f"{out} is not empty: pass --force to replace it")
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    notes = _fixed_files(cache_dir, out, vectors, encoder)
    fixed, _ = folder_bytes(out)
    budget = config.budget_bytes
    if fixed >= budget:
        raise DataError(f"the RIR bank and prompt vectors alone take {fixed / 2**20:.1f} MiB: raise --max-mb")

    queue = selection_queue(source["entries"], config)
    available = sum(e["duration"] for e in source["entries"] if e["split"] == TRAIN) / 60
    rate = config.kbps * 125.0  # bytes per second of audio, corrected by what the encoder really writes
    clips: list[Clip] = []
    sizes: list[tuple[int, int]] = []
    bar = tqdm(desc="pack", unit="min", total=round(budget / (rate * 60), 1), file=sys.stderr, disable=not progress,
               bar_format="{l_bar}{bar}| {n:.1f}/{total:.1f} min [{elapsed}<{remaining}]")
    exhausted = False
    while not exhausted:
        used = fixed + sum(s for s, _ in sizes) + INDEX_BYTES_PER_ENTRY * len(clips)
        batch: list[Clip] = []
        estimate = used
        while estimate < budget:
            clip = queue.take()
            if clip is None:
                exhausted = True
                break
            name = re.sub(r"[^A-Za-z0-9._-]+", "_", clip_path(Path(clip.entry["path"]).name, ""))[:60]
            clip.path = f"stems/{len(clips) + len(batch):05d}-{name}.opus"
            batch.append(clip)
            estimate += clip.seconds * rate + OGG_HEADER_BYTES + INDEX_BYTES_PER_ENTRY
        if not batch:
            break
        sizes += _encode(cache_dir, out, batch, config, bar)
        clips += batch
        audio_seconds = sum(c.seconds for c in clips)
        rate = max(1.0, (sum(s for s, _ in sizes) - OGG_HEADER_BYTES * len(sizes)) / max(audio_seconds, 1e-9))
        used = fixed + sum(s for s, _ in sizes) + INDEX_BYTES_PER_ENTRY * len(clips)
        if used >= budget or budget - used < 0.005 * budget:
            break
    bar.close()

    # Trim the last-chosen clips (the queue order keeps the classes balanced) until the pack fits.
    while True:
        entries = [_pack_entry(c, s) for c, s in zip(clips, sizes)]
        summary = {"version": PACK_VERSION, "source": str(cache_dir), "config": asdict(config), "clips": len(clips),
                   "minutes": round(sum(e["duration"] for e in entries) / 60, 2),
                   "train_minutes_available": round(available, 2), "notes": notes,
                   "speakers": len({e["speaker"] for e in entries if e.get("speaker")}),
                   "classes": {cls: cells[TRAIN] for cls, cells in summarize(entries).items()}}
        index = {"version": 1, "sample_rate": SAMPLE_RATE, "entries": entries, "pack": summary}
        write_json(out / INDEX_NAME, index)
        total, files = folder_bytes(out)
        if total <= budget or not clips:
            break
        excess = total - budget
        while clips and excess > 0:
            clip, (size, _) = clips.pop(), sizes.pop()
            (out / clip.path).unlink()
            excess -= size + INDEX_BYTES_PER_ENTRY
    if not clips:
        raise DataError(f"nothing fits in {config.max_mb} MiB")
    summary["bytes"], summary["files"] = total, files  # the file sizes, as measured before these two numbers
    return index


# ---------------------------------------------------------------------------------------------- unpacking
def _decode_one(job: tuple[str, str]) -> int:
    import soundfile as sf

    src, dst = job
    if os.path.exists(dst):
        return sf.info(dst).frames
    wav, _ = sf.read(src, dtype="float32")
    Path(dst).parent.mkdir(parents=True, exist_ok=True)
    tmp = f"{dst}.part"
    sf.write(tmp, np.clip(wav, -1.0, 1.0), SAMPLE_RATE, format="WAV", subtype="PCM_16")
    os.replace(tmp, dst)
    return len(wav)


def unpack(pack: Path, out: Path, workers: int = 1, progress: bool = True) -> dict:
    """Decode a pack into a cache folder of 16-bit WAV stems (fast to seek), float32 RIR banks and the
    prompt vectors; returns the new index. Idempotent: stems already decoded are kept."""
    from tqdm import tqdm

    pack, out = Path(pack), Path(out)
    index = read_json(pack / INDEX_NAME)
    if "pack" not in index:
        raise DataError(f"{pack} is not a pack (its index.json has no 'pack' summary): build one with "
                        "`samstream data pack`")
    entries = [dict(e) for e in index["entries"]]
    jobs = [(str(pack / e["path"]), str(out / clip_path(e["path"], ".wav"))) for e in entries]
    with ProcessPoolExecutor(max_workers=max(1, workers)) as pool:
        frames = list(tqdm(pool.map(_decode_one, jobs, chunksize=16), total=len(jobs), desc="unpack", unit="file",
                           file=sys.stderr, disable=not progress))
    for e, n in zip(entries, frames):
        e["path"] = clip_path(e["path"], ".wav")
        e["duration"] = round(n / SAMPLE_RATE, 4)
    for bank in sorted((pack / "rirs").glob("bank_*.npy")) if (pack / "rirs").is_dir() else []:
        (out / "rirs").mkdir(parents=True, exist_ok=True)
        np.save(out / "rirs" / bank.name, np.load(bank).astype(np.float32))
    for name in (VECTORS_NAME, Path(VECTORS_NAME).with_suffix(".json").name):
        if (pack / name).is_file():
            shutil.copyfile(pack / name, out / name)
    unpacked = {**index, "entries": entries, "pack": {**index["pack"], "unpacked_from": str(pack)}}
    write_json(out / INDEX_NAME, unpacked)
    return unpacked
