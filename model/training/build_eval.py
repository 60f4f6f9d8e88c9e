"""`samstream data build-eval OUT`: an evaluation set in the DESIGN.md layout.

One folder per item: mixture.wav, target.wav, interferer1..3.wav (16 kHz, 32-bit float so that
mixture = target + interferers holds in the files too) and meta.json with target_class, prompts
(the first is the one to use: the canonical training wording; the rest are held-out wordings),
split, source ids, levels. Held-out sources only (default), or training sources with fresh seeds
(--in-distribution). Plus a "pick one voice out of two" subset: two speakers, target_class
"speaker", meta "enrollment" naming a clip of the target speaker from other utterances.
"""

from __future__ import annotations

import re
import shutil
import sys
from pathlib import Path

import numpy as np
from tqdm import tqdm

from samstream.model.training.augment import AugmentConfig
from samstream.model.training.common import SAMPLE_RATE, DataError, write_json
from samstream.model.training.mixtures import SPEAKER_CLASS, Example, MixtureConfig, MixtureGenerator
from samstream.model.class_prompts import prompts_for
from samstream.model.training.split import HELDOUT, TRAIN

# Evaluation mixtures: the training recipe, lighter augmentation, real recordings whenever a class has
# them, no negative queries (SI-SDR of a silent target is undefined).
EVAL_CONFIG = MixtureConfig(real_weight=1.0, negative_rate=0.0, speaker_pair_rate=0.0,
                            augment=AugmentConfig(speed_rate=0.0, eq_rate=0.3, reverb_rate=0.2))
IN_DISTRIBUTION_SEED_OFFSET = 1_000_003  # fresh mixtures of training sources, never the training stream


def _write_wav(path: Path, wav: np.ndarray) -> None:
    import soundfile as sf

    sf.write(str(path), wav.astype(np.float32), SAMPLE_RATE, subtype="FLOAT")


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def _write_item(folder: Path, ex: Example, split: str, origins: dict[str, str], extra: dict | None = None) -> dict:
    folder.mkdir(parents=True)
    _write_wav(folder / "mixture.wav", ex.mixture)
    _write_wav(folder / "target.wav", ex.target)
    for k, wav in enumerate(ex.interferers, start=1):
        _write_wav(folder / f"interferer{k}.wav", wav)
    wordings = prompts_for(ex.class_name)
    meta = {
        "target_class": ex.class_name,
        "prompts": [wordings.train[0], *wordings.heldout],
        "heldout_prompts": list(wordings.heldout),
        "split": split,
        "sample_rate": SAMPLE_RATE,
        "seconds": len(ex.mixture) / SAMPLE_RATE,
        "target_sources": ex.target_sources,
        "target_origin": origins.get(ex.target_sources[0], "unknown") if ex.target_sources else None,
        "interferer_classes": ex.interferer_classes,
        "interferer_sources": ex.interferer_sources,
        "tir_db": [None if np.isnan(t) else round(t, 3) for t in ex.tir_db],
        "speaker": ex.speaker,
        **(extra or {}),
    }
    write_json(folder / "meta.json", meta)
    return meta


def audible_example(gen: MixtureGenerator, cls: str, rng: np.random.Generator, attempts: int = 20) -> Example:
    """An example whose every interferer is audible: a crop of a recording can be silence, and an item whose
    mixture is its target has nothing to separate (its SI-SDR improvement is meaningless)."""
    for _ in range(attempts):
        ex = gen.example_for_class(cls, rng)
        if all(np.isfinite(t) for t in ex.tir_db):
            return ex
    raise DataError(f"no {cls!r} example with audible interferers in {attempts} draws")


def build_eval(cache_dir: Path, out_dir: Path, n_per_class: int = 10, seed: int = 0, in_distribution: bool = False,
               voice_pairs: int = 30, force: bool = False, config: MixtureConfig = EVAL_CONFIG,
               entries: list[dict] | None = None) -> dict:
    """Write the set; returns the manifest (also written to OUT/manifest.json)."""
    out_dir = Path(out_dir)
    if out_dir.exists() and any(out_dir.iterdir()):
        if not force:
            raise DataError(f"{out_dir} is not empty: choose another folder or pass --force to replace it")
        shutil.rmtree(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    split = TRAIN if in_distribution else HELDOUT
    if entries is None:
        from samstream.model.training.index import load_index

        entries = load_index(Path(cache_dir))["entries"]
    gen = MixtureGenerator(entries, cache_dir, split, config)
    origins = {e["id"]: e["origin"] for e in gen.pool.entries}
    base_seed = seed + (IN_DISTRIBUTION_SEED_OFFSET if in_distribution else 0)
    counts: dict[str, int] = {}
    target_origins: dict[str, dict[str, int]] = {}
    bar = tqdm(total=len(gen.classes) * n_per_class + voice_pairs, desc="build-eval", unit="item", file=sys.stderr)
    for c, cls in enumerate(gen.classes):
        rng = np.random.default_rng([base_seed, c])
        for i in range(n_per_class):
            meta = _write_item(out_dir / f"{_slug(cls)}-{i:03d}", audible_example(gen, cls, rng), split, origins)
            counts[cls] = counts.get(cls, 0) + 1
            by_origin = target_origins.setdefault(cls, {})
            by_origin[meta["target_origin"]] = by_origin.get(meta["target_origin"], 0) + 1
            bar.update()
    speakers = gen.pair_speakers
    if not in_distribution:  # voices never heard in training (fillets' two voices also speak in training)
        trained = {e.get("speaker") for e in entries if e["split"] == TRAIN}
        speakers = [s for s in speakers if s not in trained]
    real_speakers = [s for s in speakers if all(e["origin"] == "real" for e in gen.pool.by_speaker[s])]
    if voice_pairs and len(speakers) < 2:
        raise DataError(f"the {split} split has fewer than two speakers with two utterances: no voice pairs")
    rng = np.random.default_rng([base_seed, 99_991])
    for i in range(voice_pairs):
        pool = real_speakers if len(real_speakers) >= 2 and rng.random() < 0.8 else speakers
        a, b = (str(s) for s in rng.choice(pool, size=2, replace=False))
        ex = gen.speaker_pair(rng, (a, b))
        for _attempt in range(50):  # the target speaker needs an utterance left for the enrollment clip
            if ex.enrollment is not None:
                break
            a, b = (str(s) for s in rng.choice(pool, size=2, replace=False))
            ex = gen.speaker_pair(rng, (a, b))
        else:
            raise DataError(f"no {split} speaker has an utterance left for an enrollment clip")
        folder = out_dir / f"voice-pair-{i:03d}"
        _write_item(folder, ex, split, origins, {"enrollment": "enrollment.wav", "target_speaker": a,
                                                 "interferer_speaker": b})
        _write_wav(folder / "enrollment.wav", ex.enrollment)
        counts[SPEAKER_CLASS] = counts.get(SPEAKER_CLASS, 0) + 1
        bar.update()
    bar.close()
    manifest = {"split": split, "seed": seed, "in_distribution": in_distribution, "n_per_class": n_per_class,
                "voice_pairs": voice_pairs, "items": sum(counts.values()), "per_class": counts,
                "target_origin_per_class": target_origins, "sample_rate": SAMPLE_RATE,
                "seconds": config.seconds}
    write_json(out_dir / "manifest.json", manifest)
    return manifest
