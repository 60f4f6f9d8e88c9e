"""Training examples with the speech expert's estimate beside them: speech-class mixtures for the speech refiner,
or every class's mixtures for the general separator as the default model feeds it.

The refiner (model/masknet.py with `expert_input`) corrects DeepFilterNet3's speech estimate: it hears the mixture
and the estimate and keeps what the prompt asks for ("speech", "man speaking", "woman speaking"). Running the
expert costs ~0.1 s per second of audio on one core, 8x what a refiner training step costs per second of audio, so a
writer process (`samstream data speech-pool`) keeps adding shards of finished examples to a pool folder while the
training (`samstream train --task speech --pool DIR`) reads the shards written so far and reuses each example a
few times, with fresh crops.

Every example is heard as the default model hears it: the whole mixture through the level normaliser
(model/level.py, a fresh state per example, the target scaled by the same per-sample gains), then the expert.
The expert's state is made once per writer and carries on from example to example (a state takes ~0.6 s to make,
more than an example costs): each example starts on a warm state, as a prompt change inside a live stream does.

A general pool (`--targets general`) holds the general generator's draws of every class (MixtureConfig's defaults,
no voice-pick pairs: they need enrollment clips), so that the general separator can be trained on what it hears
inside the default model: for the classes the composite separates with speech taken out first, the mixture less
the expert's estimate, artefacts included (`SpeechPoolSource(pool, targets="general")`).
"""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from samstream.model.training.common import SAMPLE_RATE, DataError

SPEECH_TARGETS = ("speech", "man speaking", "woman speaking")
POOL_TARGETS = ("speech", "general")  # speech-class mixtures (the refiner's) or every class's (the general DiT's)
HOP = 512  # the default model's hop: the level normaliser's steps


@dataclass(frozen=True)
class SpeechPoolConfig:
    seconds: float = 4.0
    shard_examples: int = 64
    negative_rate: float = 0.05  # no speech at all: the refiner must pass nothing
    class_weights: tuple[float, ...] = (0.3, 0.35, 0.35)  # in SPEECH_TARGETS order: the genders are the hard part
    targets: str = "speech"  # POOL_TARGETS; "general" draws as the general training does (negative_rate unused)


def normalized_example(mixture: np.ndarray, target: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The mixture and target scaled hop by hop by the level normaliser's gains (a fresh state)."""
    from samstream.model.level import LevelNormalizer, LevelState

    normalizer, state = LevelNormalizer(), LevelState()
    gains = np.empty(len(mixture), np.float32)
    for start in range(0, len(mixture), HOP):
        _, gains[start : start + HOP] = normalizer.normalize(state, mixture[start : start + HOP])
    return (mixture * gains).astype(np.float32), (target * gains).astype(np.float32)


class ExpertRunner:
    """One expert stream, fed example after example: the estimate of each, aligned with it."""

    def __init__(self) -> None:
        from samstream.model.speech_expert import SpeechExpertStream

        self.stream = SpeechExpertStream(SAMPLE_RATE)
        self.delay = self.stream.delay_samples

    def estimate(self, mixture: np.ndarray) -> np.ndarray:
        out = self.stream.process(np.concatenate([mixture, np.zeros(self.delay, np.float32)]))
        return out[self.delay :].astype(np.float32)


def make_example(generator, runner: ExpertRunner, config: SpeechPoolConfig, rng: np.random.Generator) -> dict:
    if config.targets == "general":
        ex = generator.example(rng)
    elif rng.random() < config.negative_rate:
        cls = SPEECH_TARGETS[rng.integers(len(SPEECH_TARGETS))]
        ex = generator.negative(rng, cls)
    else:
        weights = np.asarray(config.class_weights) / sum(config.class_weights)
        ex = generator.example_for_class(SPEECH_TARGETS[rng.choice(len(SPEECH_TARGETS), p=weights)], rng)
    mixture, target = normalized_example(ex.mixture, ex.target)
    return {"mixture": mixture, "target": target, "expert": runner.estimate(mixture), "prompt": ex.prompt,
            "class_name": ex.class_name}


def write_pool(cache_dir: Path, out_dir: Path, shards: int, config: SpeechPoolConfig = SpeechPoolConfig(),
               seed: int = 0, progress: bool = True) -> int:
    """Add `shards` shards to `out_dir` (numbered after the ones there; each shard's seed is its number, so a
    stopped writer resumes without repeating examples). Returns the number of shards in the folder."""
    from tqdm import tqdm

    from samstream.model.training.mixtures import MixtureConfig, MixtureGenerator

    if config.targets not in POOL_TARGETS:
        raise DataError(f"unknown pool targets {config.targets!r}: use one of {', '.join(POOL_TARGETS)}")
    out_dir.mkdir(parents=True, exist_ok=True)
    generator = MixtureGenerator.from_cache(cache_dir, "train", MixtureConfig(seconds=config.seconds,
                                                                              speaker_pair_rate=0.0))
    missing = [c for c in SPEECH_TARGETS if not generator.pool.available(c)]
    if missing and config.targets == "speech":
        raise DataError(f"the train split has no sources for {missing}: run `samstream data index` / `render` first")
    runner = ExpertRunner()
    first = len(shard_paths(out_dir))
    for number in tqdm(range(first, first + shards), desc=f"{config.targets} pool", unit="shard",
                       disable=not progress):
        rng = np.random.default_rng([seed, number])
        examples = [make_example(generator, runner, config, rng) for _ in range(config.shard_examples)]
        # float16 on disk (rounding at -66 dB, far below what the refiner resolves): a shard is 25 MB, not 50
        arrays = {key: np.stack([e[key] for e in examples]).astype(np.float16) for key in ("mixture", "target", "expert")}
        meta = {"prompts": [e["prompt"] for e in examples], "classes": [e["class_name"] for e in examples],
                "seconds": config.seconds, "seed": [seed, number], "targets": config.targets}
        path = out_dir / f"shard{number:05d}.npz"
        tmp = path.with_suffix(".tmp.npz")
        np.savez(tmp, meta=np.frombuffer(json.dumps(meta).encode(), np.uint8), **arrays)
        os.replace(tmp, path)  # readers never see half a shard
    return len(shard_paths(out_dir))


def shard_paths(out_dir: Path) -> list[Path]:
    return sorted(p for p in Path(out_dir).glob("shard*.npz") if not p.name.endswith(".tmp.npz"))


class SpeechPoolSource:
    """`samstream train --task speech` (targets "speech": the mixture with the expert's estimate beside it) or
    `--task general --pool` (targets "general": the mixture as the default model feeds the general separator, less
    the expert's estimate for the classes it separates with speech taken out): random examples of the shards
    written so far (looked for again every `rescan_s`, so a writer can run beside the training)."""

    def __init__(self, pool_dir: Path, targets: str = "speech", rescan_s: float = 60.0, wait_s: float = 600.0,
                 max_shards: int = 200):
        self.pool_dir, self.targets, self.rescan_s, self.max_shards = Path(pool_dir), targets, rescan_s, max_shards
        self.shards: dict[str, dict] = {}
        self._scanned = -float("inf")
        deadline = time.monotonic() + wait_s
        while not self._scan():
            if time.monotonic() > deadline:
                raise DataError(f"no speech-pool shards in {self.pool_dir}: start `samstream data speech-pool "
                                f"--out {self.pool_dir} --targets {self.targets}` first")
            time.sleep(5)

    def _scan(self) -> bool:
        self._scanned = time.monotonic()
        for path in shard_paths(self.pool_dir)[-self.max_shards :]:  # the newest: 25 MB of memory each
            if path.name not in self.shards:
                with np.load(path) as data:
                    meta = json.loads(bytes(data["meta"]).decode())
                    if meta.get("targets", "speech") != self.targets:  # shards written before "targets" are speech
                        raise DataError(f"{path} holds {meta.get('targets', 'speech')} examples, this training "
                                        f"needs {self.targets} ones: give the pool written with --targets "
                                        f"{self.targets}")
                    self.shards[path.name] = {"meta": meta, **{k: data[k] for k in ("mixture", "target", "expert")}}
                print(f"{self.targets} pool: {len(self.shards)} shards", file=sys.stderr)
        for name in sorted(self.shards)[: max(0, len(self.shards) - self.max_shards)]:
            del self.shards[name]
        return bool(self.shards)

    def sample(self, rng: np.random.Generator):
        from samstream.model.training.train import TrainingExample

        if time.monotonic() - self._scanned > self.rescan_s:
            self._scan()
        names = sorted(self.shards)
        shard = self.shards[names[rng.integers(len(names))]]
        i = int(rng.integers(len(shard["meta"]["prompts"])))
        gain = np.float32(10 ** (rng.uniform(-3, 3) / 20))  # around the working level, as the normaliser leaves it
        audio = {k: shard[k][i].astype(np.float32) * gain for k in ("mixture", "target", "expert")}
        prompt = shard["meta"]["prompts"][i]
        if self.targets == "speech":
            return TrainingExample(audio["mixture"], audio["target"], prompt, expert=audio["expert"])
        heard = audio["mixture"] - audio["expert"] if removes_speech(shard["meta"]["classes"][i]) else audio["mixture"]
        return TrainingExample(heard, audio["target"], prompt)


def removes_speech(class_name: str) -> bool:
    """Whether the default model separates this class with the expert's speech estimate taken out first."""
    from samstream.model.prompt_routing import Route

    return Route(class_name, 1.0).remove_speech
