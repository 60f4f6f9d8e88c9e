"""Training of the embedded model (and of the DATA.md baseline, for a fair comparison).

Resumable: `RUN/checkpoint.pt` (model, optimiser, step, data RNG) is rewritten every `checkpoint_every_s`
seconds and the current weights are exported as `RUN/model.safetensors` (+ .json) each time, so a usable
model exists at any moment. Losses go to `RUN/log.jsonl` and to the progress bar.

Embedded-model objective: flow matching in the mask domain in its x-prediction form (x1 = 2·IRM − 1,
per-chunk time, diffusion forcing style; MSE on x̂1, which is the velocity MSE reweighted by (1 − t)²)
+ `sisdr_weight` × −SI-SDR of the waveform of the estimate x̂1 after the iSTFT.
Whole examples are put at t = 0 with probability `t0_probability`: that is the default 1-step inference regime.
"""

from __future__ import annotations

import contextlib
import json
import math
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from samstream.model.anchors import NEGATIVE, NULL, POSITIVE
from samstream.model.composite import file_sha256
from samstream.model.embedded import EmbeddedConfig, EmbeddedModel, save_embedded
from samstream.model.errors import ModelLoadError, UserFacingError
from samstream.model.masknet import Conditioning, MaskNet, MaskNetConfig, save_masknet
from samstream.model.stft import (analysis_frames, clip_spectra, ideal_ratio_mask, log_magnitude, mask_to_state,
                                  overlap_add, state_to_mask, synthesis_frames, with_lookahead)
from samstream.model.training.baseline import BaselineConfig, BaselineModel, save_baseline
from samstream.model.training.common import DataError


@dataclass
class TrainingExample:
    """One on-the-fly mixture at 16 kHz: the target stem and the mixture (target + interferers)."""

    mixture: np.ndarray  # [S] float32
    target: np.ndarray  # [S] float32 (zeros for a negative query)
    prompt: str | None  # the text prompt (a training paraphrase), None for audio-only prompting
    example: np.ndarray | None = None  # an enrollment clip of the target (other utterances of the same speaker)
    example_required: bool = False  # voice-pick examples: only the clip says which voice is the target
    expert: np.ndarray | None = None  # [S] the speech expert's estimate of the mixture (speech-refiner examples)


class ExampleSource(Protocol):
    def sample(self, rng: np.random.Generator) -> TrainingExample:
        ...


# "standard": MixtureConfig's defaults (what every run before this option used); "heavy": MixtureConfig.heavy()
# (wider EQ and speed, more reverb, level rides, clipping, devices, noise floors, quieter mixtures).
AUGMENT_RECIPES = ("standard", "heavy")
MAX_BAD_STEPS_IN_A_ROW = 20  # non-finite steps skipped before a run is declared diverged


class MixtureSource:
    """Examples from the data pipeline's on-the-fly generator (model/training/mixtures.py), train split only."""

    def __init__(self, cache_dir: Path, seconds: float, speaker_pair_rate: float = 0.15, augment: str = "standard",
                 mixture: dict | None = None):
        from dataclasses import fields

        from samstream.model.training.mixtures import MixtureConfig, MixtureGenerator

        if augment not in AUGMENT_RECIPES:
            raise DataError(f"unknown augmentation {augment!r}: use one of {', '.join(AUGMENT_RECIPES)}")
        settings = {"seconds": seconds, "speaker_pair_rate": speaker_pair_rate, **(mixture or {})}
        unknown = sorted(set(settings) - ({f.name for f in fields(MixtureConfig)} - {"augment"}))
        if unknown:
            raise DataError(f"unknown mixture setting(s) {', '.join(unknown)}: see MixtureConfig in "
                            "model/training/mixtures.py (the augmentation is chosen with --augment)")
        config = MixtureConfig.heavy(**settings) if augment == "heavy" else MixtureConfig(**settings)
        self.generator = MixtureGenerator.from_cache(cache_dir, "train", config)

    def sample(self, rng: np.random.Generator) -> TrainingExample:
        from samstream.model.training.mixtures import SPEAKER_CLASS

        for attempt in range(10):
            try:
                ex = self.generator.example(rng)
                break
            except (OSError, RuntimeError) as error:
                # the data pipeline may re-render stems while a long run reads them: draw another example
                print(f"skipping an example: {error}", file=sys.stderr)
        else:
            raise DataError("10 examples in a row could not be read; is the data cache being rebuilt?")
        return TrainingExample(ex.mixture, ex.target, ex.prompt, ex.enrollment,
                               example_required=ex.class_name == SPEAKER_CLASS)


@dataclass
class TrainConfig:
    arch: str = "embedded"  # or "masknet", "baseline"
    task: str = "general"  # "general" (text / span / example prompts) or "voice" (pick one voice: model/training/voices.py)
    steps: int = 200_000
    batch_size: int = 8
    seconds: float = 3.0  # crop length (rounded to whole chunks)
    lr: float = 1e-3
    warmup: int = 300
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    sisdr_weight: float = 0.1  # per dB, against the x1 MSE (~1 at the start)
    t0_probability: float = 0.5
    worse_weight: float = 0.0  # weight of the "worse than the mixture" calibration term (per dB)
    # > 0 (mask networks): -SI-SDR + level_weight x |output level - target level| (dB) instead of a general
    # network's -SNR: the shape scale-invariant, as the voice picker's, the level still right for the floors
    level_weight: float = 0.0
    example_probability: float = 0.25  # use the example clip as a prompt (when the example has one)
    text_drop_probability: float = 0.1  # with an example clip, drop the text
    span_probability: float = 0.15
    augment: str = "standard"  # --task general: the mixtures' augmentation recipe (AUGMENT_RECIPES)
    mixture: dict = field(default_factory=dict)  # MixtureConfig (--task general) / VoiceConfig (--task voice) overrides
    # --task general from a general speech pool (--pool): the network hears the mixture less the speech expert's
    # estimate for the classes the default model separates that way, as it does inside the default model
    speech_removed: bool = False
    checkpoint_every_s: float = 180.0
    snapshot_every_cpu_minutes: float = 0.0  # > 0: weights kept in RUN/snapshots/ (learning curves per CPU time)
    log_every: int = 20
    seed: int = 0
    device: str = "cpu"
    threads: int = 1
    workers: int = 0  # data processes; 0 = make each batch in the training loop (see BatchStream)
    amp: bool = False  # bf16 autocast of the embedded model's network (on CUDA; works on CPU, slowly)
    model: dict = field(default_factory=dict)  # EmbeddedConfig / BaselineConfig overrides
    # A new run's starting weights (`--init`: shipped or another run's weights; path, sha256, their step and CPU
    # seconds): the network starts from them, the optimiser and the schedule start afresh. A run with a checkpoint
    # resumes from it instead.
    init: dict = field(default_factory=dict)


# -- batching ------------------------------------------------------------------------------------------------
@dataclass
class Batch:
    mixture: torch.Tensor  # [B,S]
    target: torch.Tensor  # [B,S]
    text: torch.Tensor  # [B,text_dim]
    text_valid: torch.Tensor  # [B] bool
    example: torch.Tensor  # [B,Se] (zero padded)
    example_valid: torch.Tensor  # [B] bool
    example_lengths: torch.Tensor  # [B]
    anchors: torch.Tensor  # [B,T] anchor ids per frame
    speaker: torch.Tensor  # [B,speaker_dim] speaker embeddings of the example clips (zeros where none / unused)
    speaker_valid: torch.Tensor  # [B] bool
    expert: torch.Tensor  # [B,S] the speech expert's estimates ([B,0] when the examples carry none)


def crop_samples(config: TrainConfig, chunk_samples: int) -> int:
    return max(1, round(config.seconds * 16000 / chunk_samples)) * chunk_samples


def span_anchors(target: np.ndarray, mixture: np.ndarray, frames: int, hop: int, rng: np.random.Generator) -> np.ndarray:
    """A random span labelled "+" where the target dominates, "-" where the rest dominates, else nothing."""
    ids = np.full(frames, NULL, dtype=np.int64)
    length = int(rng.integers(frames // 10 + 1, frames // 2 + 2))
    start = int(rng.integers(0, max(1, frames - length)))
    lo, hi = start * hop, min(len(target), (start + length) * hop)
    s = float(np.sum(target[lo:hi] ** 2)) + 1e-9
    n = float(np.sum((mixture[lo:hi] - target[lo:hi]) ** 2)) + 1e-9
    ratio = 10 * math.log10(s / n)
    if ratio > 3:
        ids[start : start + length] = POSITIVE
    elif ratio < -3:
        ids[start : start + length] = NEGATIVE
    return ids


def make_batch(examples: list[TrainingExample], text_vectors: dict[str, torch.Tensor], config: TrainConfig,
               samples: int, hop: int, rng: np.random.Generator, speaker_embedder=None) -> Batch:
    """Crops, prompt choices (text / example clip / span) and tensors for one training batch.

    With a `speaker_embedder` (list of clips -> [N, dim]; models conditioned on speaker embeddings), example clips
    become speaker embeddings instead of audio examples."""
    count, frames = len(examples), samples // hop
    mixture, target = np.zeros((count, samples), np.float32), np.zeros((count, samples), np.float32)
    expert = np.zeros((count, samples if examples[0].expert is not None else 0), np.float32)
    text = torch.zeros(count, next(iter(text_vectors.values())).shape[-1])
    text_valid = torch.zeros(count, dtype=torch.bool)
    example_valid = torch.zeros(count, dtype=torch.bool)
    clips, anchors = [], np.full((count, frames), NULL, dtype=np.int64)
    for i, ex in enumerate(examples):
        start = int(rng.integers(0, max(1, len(ex.mixture) - samples + 1)))
        n = min(samples, len(ex.mixture) - start)
        mixture[i, :n], target[i, :n] = ex.mixture[start : start + n], ex.target[start : start + n]
        if expert.shape[1]:
            expert[i, :n] = ex.expert[start : start + n]
        use_example = ex.example is not None and (ex.prompt is None or ex.example_required
                                                  or rng.random() < config.example_probability)
        use_text = ex.prompt is not None and not (use_example and rng.random() < config.text_drop_probability)
        if use_text:
            text[i], text_valid[i] = text_vectors[ex.prompt], True
        if use_example:
            clips.append(ex.example)
            example_valid[i] = True
        else:
            clips.append(np.zeros(0, np.float32))
        if rng.random() < config.span_probability or not (use_text or use_example):
            anchors[i] = span_anchors(target[i], mixture[i], frames, hop, rng)
    speaker, speaker_valid = torch.zeros(count, 1), torch.zeros(count, dtype=torch.bool)
    if speaker_embedder is not None:
        rows = [i for i in range(count) if example_valid[i]]
        embedded = speaker_embedder([clips[i] for i in rows]) if rows else None
        speaker = torch.zeros(count, embedded.shape[-1] if embedded is not None else 256)
        for j, i in enumerate(rows):
            speaker[i], speaker_valid[i] = embedded[j], True
        clips, example_valid = [np.zeros(0, np.float32)] * count, torch.zeros(count, dtype=torch.bool)
    longest = max(1, max(len(c) for c in clips))
    example = np.zeros((count, longest), np.float32)
    for i, clip in enumerate(clips):
        example[i, : len(clip)] = clip
    return Batch(torch.from_numpy(mixture), torch.from_numpy(target), text, text_valid, torch.from_numpy(example),
                 example_valid, torch.tensor([len(c) for c in clips]), torch.from_numpy(anchors), speaker,
                 speaker_valid, torch.from_numpy(expert))


BATCH_STREAM = 0xBA7C4  # keeps the workers' seeds apart from every other seed derived from TrainConfig.seed


class BatchStream(IterableDataset):
    """Endless training batches made in DataLoader worker processes (`TrainConfig.workers` > 0).

    Worker w of a loader started at step s draws everything (examples, crops, prompt choices) from
    `np.random.default_rng([seed, s, w, BATCH_STREAM])`, and the loader hands out the workers' batches
    round-robin. So a run resumed from a checkpoint at step s with the same seed and worker count sees
    the same batches every time; it does not see the batches an uninterrupted run would have seen past s
    (that run's workers were seeded at its own start step), and a different worker count gives other
    batches. The flow-matching time and noise stay in the training process (its generator is in the
    checkpoint). With workers = 0 the loop makes batches itself from the checkpointed rng, as always.
    """

    def __init__(self, source: ExampleSource, text_vectors: dict[str, torch.Tensor], config: TrainConfig,
                 samples: int, hop: int, start_step: int, speakers: bool = False):
        super().__init__()
        self.source, self.text_vectors, self.config = source, text_vectors, config
        self.samples, self.hop, self.start_step = samples, hop, start_step
        self.speakers = speakers  # embed example clips as speakers (made in the worker: the encoder is not picklable)

    def __iter__(self):
        info = get_worker_info()
        rng = np.random.default_rng([self.config.seed, self.start_step, info.id if info else 0, BATCH_STREAM])
        embedder = speaker_embedder() if self.speakers else None
        while True:
            examples = [self.source.sample(rng) for _ in range(self.config.batch_size)]
            yield vars(make_batch(examples, self.text_vectors, self.config, self.samples, self.hop, rng, embedder))


def speaker_embedder():
    """GE2E embeddings of a list of 16 kHz clips -> [N, 256] (the voice picker's conditioning)."""
    from samstream.model.speaker_encoder import load_speaker_encoder

    encoder = load_speaker_encoder()
    return lambda clips: torch.as_tensor(np.asarray(encoder.embed_batch(clips), np.float32))


def worker_batches(source: ExampleSource, text_vectors: dict[str, torch.Tensor], config: TrainConfig, samples: int,
                   hop: int, start_step: int, device: torch.device, speakers: bool = False):
    """Batches from `config.workers` processes, moved to `device` (pinned, non-blocking on CUDA)."""
    cuda = device.type == "cuda"
    loader = DataLoader(BatchStream(source, text_vectors, config, samples, hop, start_step, speakers), batch_size=None,
                        num_workers=config.workers, pin_memory=cuda, prefetch_factor=2)
    for fields in loader:
        yield Batch(**{k: v.to(device, non_blocking=cuda) for k, v in fields.items()})


# -- losses --------------------------------------------------------------------------------------------------
def si_sdr(estimate: torch.Tensor, reference: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Scale-invariant SDR in dB per row ([B,S] in, [B] out)."""
    reference = reference - reference.mean(-1, keepdim=True)
    estimate = estimate - estimate.mean(-1, keepdim=True)
    scale = (estimate * reference).sum(-1, keepdim=True) / (reference.pow(2).sum(-1, keepdim=True) + eps)
    projection = scale * reference
    noise = estimate - projection
    return 10 * torch.log10((projection.pow(2).sum(-1) + eps) / (noise.pow(2).sum(-1) + eps))


def snr(estimate: torch.Tensor, reference: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Signal-to-noise ratio of an estimate in dB per row: unlike SI-SDR, a wrong level counts as error."""
    return 10 * torch.log10((reference.pow(2).sum(-1) + eps) / ((estimate - reference).pow(2).sum(-1) + eps))


def sisdr_rows(target: torch.Tensor, mixture: torch.Tensor) -> torch.Tensor:
    """Rows whose target is audible (negative queries have a silent target and no defined SI-SDR)."""
    return target.pow(2).sum(-1) > 1e-4 * mixture.pow(2).sum(-1) + 1e-8


def below_mixture_db(score: torch.Tensor, mixture: torch.Tensor, target: torch.Tensor, weight: float) -> torch.Tensor:
    """Mean dB by which estimates (their SI-SDR `score`) fall below passing the mixture through: the calibration
    term (0 when its weight is 0, so the default objective costs nothing extra)."""
    if not weight or not len(score):
        return score.new_zeros(())
    with torch.no_grad():
        floor = si_sdr(mixture, target)
    return F.relu(floor - score).mean()


def embedded_loss(model: EmbeddedModel, batch: Batch, config: TrainConfig, generator: torch.Generator):
    c = model.config
    device = batch.mixture.device
    count, samples = batch.mixture.shape
    frames, overlap = samples // c.hop, c.n_fft - c.hop
    padded = F.pad(batch.mixture, (overlap, overlap + c.lookahead_frames * c.hop))
    spectra = analysis_frames(padded, c.n_fft, c.hop)[:, : frames + c.lookahead_frames]
    target_spectra = analysis_frames(F.pad(batch.target, (overlap, overlap)), c.n_fft, c.hop)[:, :frames]
    mix = spectra[:, :frames]
    x1 = mask_to_state(ideal_ratio_mask(target_spectra, mix))

    chunks = frames // c.chunk_frames
    on = generator.device  # a CUDA generator draws on the GPU; the CPU one draws here and copies
    t = torch.rand(count, chunks, generator=generator, device=on).to(device)
    t = torch.where(torch.rand(count, 1, generator=generator, device=on).to(device) < config.t0_probability, 0.0, t)
    t = t.repeat_interleave(c.chunk_frames, dim=1)
    x0 = torch.randn(x1.shape, generator=generator, device=on).to(device)
    xt = (1 - t[..., None]) * x0 + t[..., None] * x1

    # Spectra, masks and the SI-SDR stay float32; with amp only the network runs in bf16.
    amp = torch.autocast(device.type, dtype=torch.bfloat16) if config.amp else contextlib.nullcontext()
    example_spectra = valid = None
    if bool(batch.example_valid.any()):
        example_spectra = clip_spectra(batch.example, c)
        valid = (torch.arange(example_spectra.shape[1], device=device)[None] * c.hop
                 < batch.example_lengths[:, None].to(device))
    features = with_lookahead(log_magnitude(spectra), c.lookahead_frames)
    with amp:
        example = model.encode_example(example_spectra, valid) if example_spectra is not None else None
        prompt = model.prompt_memory(batch.text, example, batch.text_valid, batch.example_valid, batch=count)
        tokens = model.frame_tokens(features, batch.anchors)
        clean = model.clean_state_parallel(tokens, xt, t, prompt)
    clean = clean.float()
    flow = F.mse_loss(clean, x1)

    estimate = state_to_mask(clean)
    wav = overlap_add(synthesis_frames(mix * estimate, c.n_fft), c.hop)[:, overlap : overlap + samples - c.hop]
    reference = batch.target[:, : samples - c.hop]
    rows = sisdr_rows(reference, batch.mixture[:, : samples - c.hop])
    score = si_sdr(wav, reference)[rows]
    sisdr = score.mean() if len(score) else wav.new_zeros(())
    worse = below_mixture_db(score, batch.mixture[:, : samples - c.hop][rows], reference[rows], config.worse_weight)
    loss = flow - config.sisdr_weight * sisdr + config.worse_weight * worse
    return loss, {"loss": loss.item(), "flow": flow.item(), "si_sdr": sisdr.item(), "worse_db": worse.item()}


def masknet_loss(model: MaskNet, batch: Batch, config: TrainConfig, generator: torch.Generator):
    """-SI-SDR of the masked waveform; a negative query's (silent target's) output energy is penalised."""
    cond = Conditioning(text=batch.text, text_valid=batch.text_valid, speaker=batch.speaker,
                        speaker_valid=batch.speaker_valid, example=batch.example,
                        example_lengths=batch.example_lengths, example_valid=batch.example_valid)
    if not bool(batch.example_valid.any()):
        cond.example = None
    if model.speaker_proj is None:
        cond.speaker = None
    prompt = model.condition(cond, batch.mixture.shape[0])
    expert = batch.expert if model.config.expert_input else None
    estimate = model.separate_waveform(batch.mixture, batch.anchors, prompt, expert)
    # The default model's residual is the mixture minus the target, and its floors mix the mixture back in, so an
    # estimate's level must be right, which SI-SDR does not ask for: trained on SI-SDR, the speech refiner's output
    # sat 4-7 dB below the target, and a general band-split network's ~40 dB below its input (pushed down by the
    # negative queries' leak term), so that a floor of 0.15 returned the mixture. The voice picker keeps the
    # SI-SDR it was trained on (its output sits 1-4 dB below the target: docs/model_card.md). SNR lets a network
    # hedge (an output near silence scores ~0 dB where a wrong guess scores below), so a general network may instead
    # keep the SI-SDR and learn its level from a term of its own (`level_weight`).
    scale_invariant = config.task == "voice" or config.level_weight > 0
    return waveform_loss(estimate, batch, config.worse_weight, scale_invariant, config.level_weight)


def waveform_loss(estimate: torch.Tensor, batch: Batch, worse_weight: float = 0.0, scale_invariant: bool = True,
                  level_weight: float = 0.0):
    """-SI-SDR (or -SNR: `scale_invariant` False) on rows with an audible target, + `level_weight` x the dB by which
    the estimate's level misses the target's, + `worse_weight` x how far (dB) an estimate falls below the mixture
    itself (a calibration term: where the network cannot find the target, passing the mixture through costs nothing
    and guessing wrong costs twice), + 0.1 x the output energy of negative queries."""
    rows = sisdr_rows(batch.target, batch.mixture)
    score = (si_sdr if scale_invariant else snr)(estimate, batch.target)[rows]
    objective = score.mean() if len(score) else estimate.new_zeros(())
    figures, sisdr = {}, objective
    if not scale_invariant:  # the SI-SDR is still reported beside the SNR the loss uses
        figures["snr"] = objective.item()
        sisdr = si_sdr(estimate, batch.target)[rows].mean() if len(score) else objective
    level = estimate.new_zeros(())
    if level_weight and len(score):
        level = (10 * torch.log10((estimate[rows].pow(2).sum(-1) + 1e-8) / (batch.target[rows].pow(2).sum(-1) + 1e-8))
                 ).abs().mean()
        figures["level_db"] = level.item()
    worse = below_mixture_db(score, batch.mixture[rows], batch.target[rows], worse_weight)
    # a negative query's target is silence: penalise output energy relative to the mixture
    silent = ~rows
    leak = (10 * torch.log10(estimate[silent].pow(2).sum(-1) / (batch.mixture[silent].pow(2).sum(-1) + 1e-8) + 1e-4)
            ).mean() if bool(silent.any()) else estimate.new_zeros(())
    loss = -objective + level_weight * level + worse_weight * worse + 0.1 * leak
    return loss, {"loss": loss.item(), "si_sdr": sisdr.item(), "worse_db": worse.item(), **figures}


def baseline_loss(model: BaselineModel, batch: Batch, config: TrainConfig, generator: torch.Generator):
    return waveform_loss(model.separate_waveform(batch.mixture, batch.text), batch)


# -- the loop ------------------------------------------------------------------------------------------------
def build_model(config: TrainConfig):
    if config.arch == "embedded":
        return EmbeddedModel(EmbeddedConfig(**config.model))
    if config.arch == "masknet":
        return MaskNet(MaskNetConfig.from_dict(config.model))
    if config.arch == "baseline":
        return BaselineModel(BaselineConfig(**config.model))
    raise ValueError(f"unknown arch {config.arch!r} (embedded, masknet or baseline)")


LOSSES = {"embedded": embedded_loss, "masknet": masknet_loss, "baseline": baseline_loss}
SAVERS = {"embedded": save_embedded, "masknet": save_masknet, "baseline": save_baseline}


def learning_rate(config: TrainConfig, step: int) -> float:
    warm = min(1.0, (step + 1) / max(1, config.warmup))
    progress = min(1.0, step / max(1, config.steps))
    return config.lr * warm * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


def export(model, run_dir: Path, step: int, config: TrainConfig) -> Path:
    path = run_dir / "model.safetensors"
    meta = {"arch": config.arch, "task": config.task, "step": step}
    SAVERS[config.arch](model, path, meta)
    return path


def train(config: TrainConfig, source: ExampleSource, text_vectors: dict[str, torch.Tensor], run_dir: Path,
          progress: bool = True, max_seconds: float | None = None, fit_horizon: bool = False,
          max_cpu_seconds: float | None = None) -> dict:
    """Train (or resume) in `run_dir` until `config.steps`, `max_seconds` of wall time or `max_cpu_seconds` of this
    process's CPU time (all its threads; summed over resumed runs in `RUN/cpu_seconds`: the fair budget for
    comparing candidates on a shared machine); returns the last logged figures.

    `fit_horizon` (with `max_seconds`): the cosine schedule's horizon `config.steps` is re-estimated from
    the measured step rate at every tenth of the time budget (until the last tenth), so the learning rate
    reaches its floor when the time runs out; the fitted value is written to config.json each time.
    """
    from tqdm import tqdm

    torch.set_num_threads(config.threads)
    run_dir.mkdir(parents=True, exist_ok=True)
    device = torch.device(config.device)
    if device.type == "cuda":
        torch.set_float32_matmul_precision("high")  # TF32 matrix products where amp is off
    model = build_model(config).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    step, rng = 0, np.random.default_rng(config.seed)
    generator = torch.Generator(device=device).manual_seed(config.seed)
    checkpoint = run_dir / "checkpoint.pt"
    if checkpoint.is_file():
        state = torch.load(checkpoint, map_location=device, weights_only=False)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        step = state["step"]
        rng.bit_generator.state = state["rng"]
        try:
            generator.set_state(state["generator"].cpu())
        except RuntimeError:  # a CPU generator's state does not fit a CUDA one (and back): reseed
            generator.manual_seed(config.seed * 1_000_003 + step)
            print(f"resuming on {device.type}: the noise generator is reseeded", file=sys.stderr)
    elif config.init:
        start_from(model, Path(config.init["path"]), config.init["sha256"])
    if fit_horizon and max_seconds and config.steps <= step:
        config.steps = 2 * step + 1  # a finished schedule restarts at its middle until the first fit
    config_path = run_dir / "config.json"
    config_path.write_text(json.dumps(asdict(config), indent=1))
    chunk = model.config.chunk_samples if config.arch != "baseline" else 512
    samples = crop_samples(config, chunk)
    loss_fn = LOSSES[config.arch]
    embedder = speaker_embedder() if getattr(model.config, "speaker_dim", 0) else None
    hop = model.config.hop
    batches = (worker_batches(source, text_vectors, config, samples, hop, step, device, embedder is not None)
               if config.workers > 0 else None)
    started = last_save = time.monotonic()
    cpu_file = run_dir / "cpu_seconds"
    cpu_before = float(cpu_file.read_text()) if cpu_file.is_file() else 0.0
    cpu_start = time.process_time()
    period = 60 * config.snapshot_every_cpu_minutes
    next_snapshot = (cpu_before // period + 1) * period if period else math.inf
    first_step = step
    rate_start: float | None = None  # when the first step finished (loader start-up excluded from the rate)
    fits = 0
    skipped = bad_steps = 0
    averages: dict[str, float] = {}
    bar = tqdm(total=config.steps, initial=step, desc=f"train {config.arch}", unit="step", disable=not progress)
    model.train()
    try:
        with open(run_dir / "log.jsonl", "a") as log:
            while step < config.steps:
                if batches is None:
                    examples = [source.sample(rng) for _ in range(config.batch_size)]
                    batch = make_batch(examples, text_vectors, config, samples, hop, rng, embedder)
                    batch = Batch(*(v.to(device) for v in vars(batch).values()))
                else:
                    batch = next(batches)
                for group in optimizer.param_groups:
                    group["lr"] = learning_rate(config, step)
                loss, figures = loss_fn(model, batch, config, generator)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                norm = torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
                if torch.isfinite(loss) and torch.isfinite(norm):
                    optimizer.step()
                    bad_steps = 0
                else:  # one non-finite step would turn every weight into NaN (runs/voice_deep did at step 770)
                    skipped, bad_steps = skipped + 1, bad_steps + 1
                    print(f"\nstep {step}: the loss or its gradient is not finite; step skipped ({skipped} so far)",
                          file=sys.stderr)
                    if bad_steps >= MAX_BAD_STEPS_IN_A_ROW:
                        raise UserFacingError(f"{bad_steps} steps in a row had a non-finite loss or gradient: the "
                                              f"run diverged at step {step}; resume it with a lower --lr")
                    figures = {}  # the running averages skip it too
                step += 1
                for key, value in figures.items():
                    averages[key] = value if key not in averages else 0.95 * averages[key] + 0.05 * value
                bar.update()
                bar.set_postfix({k: f"{v:.3f}" for k, v in averages.items()}, refresh=False)
                if step % config.log_every == 0:
                    cpu = cpu_before + time.process_time() - cpu_start
                    log.write(json.dumps({"step": step, "time": time.time(), "cpu_s": round(cpu, 1), **averages,
                                          **({"skipped_steps": skipped} if skipped else {})}) + "\n")
                    log.flush()
                now = time.monotonic()
                if rate_start is None:
                    rate_start, first_step = now, step
                elapsed = now - started
                if fit_horizon and max_seconds and fits < 9 and elapsed > (fits + 1) * max_seconds / 10:
                    fits = int(elapsed / (max_seconds / 10))
                    rate = (step - first_step) / max(now - rate_start, 1e-9)
                    if step > first_step:
                        config.steps = max(step + 1, step + int(rate * (max_seconds - elapsed)))
                        config_path.write_text(json.dumps(asdict(config), indent=1))
                        bar.total = config.steps
                        print(f"\nhorizon: {rate:.2f} steps/s -> --steps {config.steps}", file=sys.stderr)
                cpu_used = cpu_before + time.process_time() - cpu_start
                out_of_time = ((max_seconds is not None and elapsed > max_seconds)
                               or (max_cpu_seconds is not None and cpu_used > max_cpu_seconds))
                if config.snapshot_every_cpu_minutes and cpu_used >= next_snapshot:
                    snapshot = run_dir / "snapshots" / f"cpu{round(cpu_used / 60):05d}min-step{step}.safetensors"
                    SAVERS[config.arch](model, snapshot, {"arch": config.arch, "task": config.task, "step": step,
                                                          "cpu_s": round(cpu_used, 1)})
                    next_snapshot += 60 * config.snapshot_every_cpu_minutes
                if now - last_save > config.checkpoint_every_s or step == config.steps or out_of_time:
                    save_checkpoint(checkpoint, model, optimizer, step, rng, generator)
                    export(model, run_dir, step, config)
                    cpu_file.write_text(f"{cpu_used:.1f}")
                    last_save = now
                if out_of_time:
                    break
    finally:
        if batches is not None:
            batches.close()  # stops the loader's worker processes
    bar.close()
    return {"step": step, **averages}


def weights_info(path: Path) -> dict:
    """What `--init` takes from a weights file: its arch, task and network config (the `<stem>.json` beside it, as
    every saver here writes it), its SHA-256, and the step and CPU seconds it was trained for."""
    config_path = path.with_suffix(".json")
    if not path.is_file() or not config_path.is_file():
        raise ModelLoadError(f"--init {path}: no weights there (a .safetensors file with its .json config beside "
                             "it, e.g. model/weights/tiny.safetensors or RUN/model.safetensors)")
    try:
        info = json.loads(config_path.read_text())
        config = info["config"]
    except (json.JSONDecodeError, KeyError) as error:
        raise ModelLoadError(f"--init {path}: {config_path.name} holds no network config ({error})") from None
    return {"path": str(path.resolve()), "sha256": file_sha256(path),
            "arch": info.get("arch", "embedded"), "task": info.get("task", "general"), "config": config,
            "step": info.get("step"), "cpu_s": info.get("cpu_s")}


def start_from(model: torch.nn.Module, path: Path, sha256: str) -> None:
    """Load a new run's starting weights, exactly the file its config.json names."""
    from safetensors.torch import load_file

    from samstream.model.masknet import MaskNet, load_deeper

    if not path.is_file() or file_sha256(path) != sha256:
        raise ModelLoadError(f"the run starts from {path}, which is gone or changed since the run was made: "
                             "restore it or start another --run")
    if isinstance(model, MaskNet) and model.config.body == "fullband":
        load_deeper(model, load_file(str(path)))  # as deep as the file (strict), or deeper (--model-config layers)
    else:
        model.load_state_dict(load_file(str(path)))  # strict: the config came from the same file


def save_checkpoint(path: Path, model, optimizer, step: int, rng: np.random.Generator,
                    generator: torch.Generator) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(), "step": step,
                "rng": rng.bit_generator.state, "generator": generator.get_state()}, tmp)
    tmp.replace(path)  # atomic: an interrupted save never leaves a broken checkpoint


def embed_prompts(prompts: list[str], cache_path: Path | None = None, encoder=None) -> dict[str, torch.Tensor]:
    """MiniLM vectors of every training wording, cached on disk (loading the encoder takes ~12 s)."""
    from safetensors.torch import load_file, save_file

    if cache_path is not None and cache_path.is_file():
        stored = load_file(str(cache_path))
        names = json.loads(cache_path.with_suffix(".json").read_text())
        if set(prompts) <= set(names):
            return {name: stored["vectors"][i] for i, name in enumerate(names)}
    if encoder is None:
        from samstream.model.text import MiniLMTextEncoder

        encoder = MiniLMTextEncoder()
    vectors, _ = encoder.encode(prompts)
    if cache_path is not None:
        cache_path.parent.mkdir(parents=True, exist_ok=True)
        save_file({"vectors": vectors[:, 0].contiguous()}, str(cache_path))
        cache_path.with_suffix(".json").write_text(json.dumps(prompts))
    return {name: vectors[i, 0] for i, name in enumerate(prompts)}
