"""Loading official SAM Audio checkpoints from a local directory (config.json + checkpoint.pt/model.safetensors).

Behaviour, compared with the official `from_pretrained`:
- dimensions always come from config.json; the DACVAE watermark widths (hard-coded upstream) are read
  from the checkpoint's tensor shapes;
- loading is strict: every expected key must be present with the expected shape, and nothing else,
  except the prefixes the official loader skips (text_encoder, visual_ranker, text_ranker,
  span_predictor); of `vision_encoder.model.*` (PE-Core CLIP, optional) the visual tower is loaded and the
  text tower, which SAM Audio never runs, is checked and dropped;
- rankers and the span predictor are not built here (the official loader builds them all and runs out of
  memory on 16-32 GB cards): model/components.py loads each from its own directory when a call needs it;
- the model is built on the meta device and the checkpoint tensors are assigned, so a 3B checkpoint
  does not cost twice its size in RAM.
"""

from __future__ import annotations

import json
import logging
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path

import torch

from samstream.model.dacvae import infer_watermark_widths
from samstream.model.errors import ModelLoadError
from samstream.model.sam_audio import SAMAudio, SAMAudioConfig
from samstream.model.vision import clip_state_shapes

log = logging.getLogger(__name__)

SKIPPED_PREFIXES = ("text_encoder.", "visual_ranker.", "text_ranker.", "span_predictor.")
VISION_PREFIX = "vision_encoder.model."
VISUAL_PREFIX = VISION_PREFIX + "visual."
TEXT_TOWER = "vision_encoder.model. (PE text tower, unused)"  # its key in LoadedCheckpoint.set_aside
CHECKPOINT_FILES = ("model.safetensors", "checkpoint.pt")


@dataclass
class LoadedCheckpoint:
    model: SAMAudio
    directory: Path
    set_aside: dict[str, int]  # prefix -> number of tensors not loaded (rankers, the PE text tower...)


def resolve_model_directory(name: str | os.PathLike) -> Path:
    """A local directory, or a Hugging Face id fetched with huggingface_hub when it is installed and reachable."""
    path = Path(name).expanduser()
    if path.exists():
        if not path.is_dir():
            raise ModelLoadError(f"{path} is a file; pass the directory that holds config.json and checkpoint.pt")
        return path
    text = str(name)
    if text.count("/") == 1 and not text.startswith((".", "/")):
        try:
            from huggingface_hub import snapshot_download
        except ImportError:
            raise ModelLoadError(
                f"{text!r} is not a local directory, and huggingface_hub is not installed to fetch it as a "
                "Hugging Face id; download the model and pass its directory"
            ) from None
        try:
            return Path(snapshot_download(text, allow_patterns=["config.json", "checkpoint.pt"]))
        except Exception as error:  # network, auth (gated repo), missing repo
            raise ModelLoadError(f"could not fetch {text!r} from the Hugging Face hub ({error}); "
                                 "download it elsewhere and pass the local directory") from None
    raise ModelLoadError(f"model directory {path} does not exist")


def read_config(directory: Path) -> dict:
    config_path = directory / "config.json"
    if not config_path.is_file():
        present = sorted(p.name for p in directory.iterdir())[:20]
        raise ModelLoadError(
            f"{directory} has no config.json (found: {', '.join(present) or 'nothing'}); a SAM Audio model "
            "directory holds the official config.json and checkpoint.pt (or model.safetensors)"
        )
    try:
        return json.loads(config_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ModelLoadError(f"{config_path} is not valid JSON ({error})") from None


def read_state_dict(directory: Path) -> tuple[dict[str, torch.Tensor], Path]:
    for name in CHECKPOINT_FILES:
        path = directory / name
        if path.is_file():
            break
    else:
        raise ModelLoadError(f"{directory} holds no checkpoint: expected one of {', '.join(CHECKPOINT_FILES)}")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except (RuntimeError, OSError, EOFError, ValueError, zipfile.BadZipFile, Exception) as error:
        raise ModelLoadError(
            f"{path} cannot be read: it is corrupt or truncated ({type(error).__name__}: {error}); "
            "download it again"
        ) from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ModelLoadError(f"{path} does not hold a state dict of tensors")
    return state, path


def build_model(config: dict, state: dict[str, torch.Tensor]) -> SAMAudio:
    """The model on the meta device, with the PE-Core vision tower when the checkpoint has one."""
    vision = any(k.startswith(VISION_PREFIX) for k in state)
    try:
        widths = infer_watermark_widths({k[len("audio_codec."):]: v for k, v in state.items()
                                         if k.startswith("audio_codec.")})
        sam_config = SAMAudioConfig.from_dict(config, codec_overrides=widths)
        with torch.device("meta"):
            return SAMAudio(sam_config, vision=vision)
    except (KeyError, TypeError, ValueError) as error:
        raise ModelLoadError(f"config.json does not describe a SAM Audio model: {error}") from None


def split_checkpoint(state: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, int]]:
    kept, set_aside = {}, {}
    for key, tensor in state.items():
        prefix = next((p for p in SKIPPED_PREFIXES if key.startswith(p)), None)
        if prefix is None:
            kept[key] = tensor
        else:
            set_aside[prefix] = set_aside.get(prefix, 0) + 1
    return kept, set_aside


def expected_shapes(model: SAMAudio) -> dict[str, torch.Size]:
    """Every key the checkpoint must hold, with its shape: the model's state dict, plus the PE text tower
    (`vision_encoder.model.*` outside `visual.`) when the model has a vision tower."""
    expected = {k: v.shape for k, v in model.state_dict().items()}
    if model.vision_encoder is not None:
        vision, text = model.config.vision_encoder.towers()
        expected.update({VISION_PREFIX + k: shape for k, shape in clip_state_shapes(vision, text).items()
                         if not k.startswith("visual.")})
    return expected


def drop_text_tower(state: dict[str, torch.Tensor], set_aside: dict[str, int]) -> dict[str, torch.Tensor]:
    """The CLIP text tower's tensors (checked by `check_keys`) leave the state dict unread; counted in set_aside."""
    text = {k for k in state if k.startswith(VISION_PREFIX) and not k.startswith(VISUAL_PREFIX)}
    if text:
        set_aside[TEXT_TOWER] = len(text)
    return {k: v for k, v in state.items() if k not in text}


def key_problems(expected: dict[str, torch.Size], state: dict[str, torch.Tensor]) -> list[str]:
    """Wrong shapes, missing and unexpected keys of a state dict, each as one readable sentence (empty: all fine)."""
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    wrong_shape = [
        f"{k}: checkpoint {tuple(state[k].shape)} vs config {tuple(v)}"
        for k, v in expected.items() if k in state and state[k].shape != v
    ]
    problems = []
    if wrong_shape:
        problems.append(
            f"{len(wrong_shape)} tensors have another shape than config.json implies (is the checkpoint of "
            f"another model size than its config?): " + "; ".join(wrong_shape[:8])
        )
    if missing:
        problems.append(f"{len(missing)} missing keys: " + ", ".join(missing[:12]) + (" ..." if len(missing) > 12 else ""))
    if unexpected:
        problems.append(
            f"{len(unexpected)} unexpected keys: " + ", ".join(unexpected[:12]) + (" ..." if len(unexpected) > 12 else "")
        )
    return problems


def check_keys(model: SAMAudio, state: dict[str, torch.Tensor]) -> None:
    expected = expected_shapes(model)
    problems = key_problems(expected, state)
    if problems:
        message = "checkpoint does not match config.json: " + " | ".join(problems)
        vision_keys = [k for k in set(expected) ^ set(state) if k.startswith(VISION_PREFIX)]
        vision_shapes = [k for k in expected if k.startswith(VISION_PREFIX) and k in state
                         and state[k].shape != expected[k]]
        if vision_keys or vision_shapes:
            message += (f" | vision_encoder.model.* must be the complete PE-Core CLIP "
                        f"'{model.config.vision_encoder.name}' that config.json's vision_encoder names; to use the "
                        "checkpoint without visual prompts, remove every vision_encoder.model.* tensor from it")
        raise ModelLoadError(message)


def rebuild_buffers(model: torch.nn.Module, everything: bool = False) -> None:
    """Non-persistent buffers (RoPE tables...) are not in checkpoints: recompute them off the meta device.
    `everything`: also those that are not on the meta device (after `to_empty` they hold garbage)."""
    for module in model.modules():
        for name, buffer in list(module.named_buffers(recurse=False)):
            if buffer.is_meta or (everything and name in module._non_persistent_buffers_set):
                if not hasattr(module, "rebuild_buffers"):
                    raise RuntimeError(f"{type(module).__name__}.{name} is not in the checkpoint and cannot be rebuilt")
                module.rebuild_buffers()
                break


def load_sam_audio(name: str | os.PathLike, dtype: torch.dtype | None = None, progress: bool = True) -> LoadedCheckpoint:
    """Load an official SAM Audio model directory (or Hugging Face id) for inference (eval mode, CPU)."""
    from tqdm import tqdm

    steps = tqdm(total=4, desc="loading SAM Audio", unit="step", disable=not progress)
    directory = resolve_model_directory(name)
    config = read_config(directory)
    steps.update()
    steps.set_postfix_str("reading checkpoint")
    state, _ = read_state_dict(directory)
    steps.update()
    state, set_aside = split_checkpoint(state)
    model = build_model(config, state)
    if model.vision_encoder is not None:
        steps.set_postfix_str(f"with the {model.config.vision_encoder.name} vision tower")
    check_keys(model, state)
    state = drop_text_tower(state, set_aside)
    steps.update()
    if dtype is not None:
        state = {k: v.to(dtype) if v.is_floating_point() else v for k, v in state.items()}
    model.load_state_dict(state, strict=True, assign=True)
    rebuild_buffers(model)
    model.eval()
    steps.update()
    steps.close()
    if model.vision_encoder is None:
        log.info("%s has no vision_encoder.model.* (PE-Core) tensors: visual-mask prompts are unavailable; text "
                 "and span prompts work", directory)
    return LoadedCheckpoint(model, directory, set_aside)
