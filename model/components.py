"""SAM Audio's side models (PE-A-Frame span predictor, the SAM Audio Judge): where they are found, how they
load, and what they cost in memory.

The official `SAMAudio.from_pretrained` builds every ranker and the span predictor at load time, whether a
call uses them or not, which runs 16-32 GB cards out of memory. Here each is loaded only when asked for
(`SideModels.span_predictor()` / `.judge()`, on first use) from, in this order: the directory given
explicitly, `$SAMSTREAM_SPAN_PREDICTOR_DIR` / `$SAMSTREAM_JUDGE_DIR`, or a sub-directory of the SAM Audio
model directory (its own name from config.json, e.g. `pe-a-frame-large/`, or `span_predictor/`,
`sam-audio-judge/`, `judge/`). A component directory holds the official config.json, the weights
(model.safetensors or checkpoint.pt) and the ModernBERT tokenizer files.

Loading is strict like the main model's: every official key with its config shape, nothing else. The
text layers above `nth_text_layer` (and ModernBERT's final norm) are checked and then dropped, since
they never run. The model is built on the meta device and the tensors are assigned (no double RAM).
"""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from samstream.model.errors import ModelLoadError
from samstream.model.judge import Judge, JudgeConfig, SAMAudioJudge
from samstream.model.loading import (key_problems, read_config, read_state_dict, rebuild_buffers,
                                     resolve_model_directory)
from samstream.model.modernbert import ModernBertConfig, text_tower_shapes
from samstream.model.span_predictor import PEAudioFrame, PEAudioFrameConfig, SpanPredictor

log = logging.getLogger(__name__)

TEXT_PREFIX = "text_model."
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json")


@dataclass(frozen=True)
class ComponentKind:
    name: str  # what users read in messages
    environment: str  # variable naming its directory
    subdirectories: tuple[str, ...]  # looked for inside the SAM Audio model directory
    flag: str  # the command-line option that names its directory


SPAN_PREDICTOR = ComponentKind("PE-A-Frame span predictor", "SAMSTREAM_SPAN_PREDICTOR_DIR",
                               ("pe-a-frame-large", "span_predictor"), "--span-predictor")
JUDGE = ComponentKind("SAM Audio Judge", "SAMSTREAM_JUDGE_DIR", ("sam-audio-judge", "judge"), "--judge")


@dataclass
class LoadedComponent:
    kind: str
    directory: Path
    parameters: int  # built and loaded
    bytes: int  # their memory
    dropped_parameters: int  # in the checkpoint, checked, never built (text layers above nth, final norm)
    device: str

    def summary(self) -> str:
        return (f"{self.kind}: {self.parameters / 1e6:.1f} M parameters, {self.bytes / 2**20:.0f} MiB on "
                f"{self.device} (from {self.directory}; {self.dropped_parameters / 1e6:.1f} M unused text-layer "
                "parameters not loaded)")


def find_component(kind: ComponentKind, explicit: str | os.PathLike | None = None,
                   sam_directory: Path | None = None, names: tuple[str, ...] = ()) -> Path:
    """The directory of a side model, or a ModelLoadError that lists every place looked at."""
    candidates = []
    if explicit:
        candidates.append(Path(explicit).expanduser())
    if os.environ.get(kind.environment):
        candidates.append(Path(os.environ[kind.environment]).expanduser())
    if sam_directory is not None:
        candidates += [sam_directory / name for name in dict.fromkeys(names + kind.subdirectories)]
    for path in candidates:
        if (path / "config.json").is_file():
            return path
    if explicit:
        raise ModelLoadError(f"{kind.name}: {explicit} holds no config.json; pass the directory with the official "
                             "config.json, weights and tokenizer files")
    places = ", ".join(str(p) for p in candidates) or "nowhere (no SAM Audio model directory given)"
    raise ModelLoadError(
        f"the {kind.name} is needed but was not found (looked in: {places}). Download it (it is not inside "
        f"checkpoint.pt) and pass its directory with {kind.flag} DIR, set {kind.environment}, or put it in one of "
        "those places"
    )


def load_tokenizer(directory: Path, kind: ComponentKind):
    if not any((directory / name).is_file() for name in TOKENIZER_FILES):
        raise ModelLoadError(f"{kind.name}: {directory} has no tokenizer ({' or '.join(TOKENIZER_FILES)}); copy the "
                             "ModernBERT tokenizer files that come with the model into it")
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(str(directory), local_files_only=True)
    except (OSError, ValueError) as error:
        raise ModelLoadError(f"{kind.name}: cannot load the tokenizer in {directory}: {error}") from None


def official_shapes(model: nn.Module, text_config: ModernBertConfig) -> dict[str, torch.Size]:
    """The built model's keys with the *whole* official text tower in place of the layers that are built."""
    shapes = {}
    for key, value in model.state_dict().items():
        if not key.startswith(TEXT_PREFIX):
            shapes[key] = value.shape
        elif key == TEXT_PREFIX + "embeddings.tok_embeddings.weight":  # the tower's first key: keep official order
            shapes.update({TEXT_PREFIX + k: v for k, v in text_tower_shapes(text_config).items()})
    return shapes


def load_module(directory: Path, kind: ComponentKind, build: Callable[[dict], tuple[nn.Module, ModernBertConfig]],
                dtype: torch.dtype | None = None, device: str | torch.device | None = None
                ) -> tuple[nn.Module, LoadedComponent]:
    """Strictly load an official side-model directory into the module `build(config_dict)` makes on the meta
    device; tensors the module does not use are checked and dropped."""
    config = read_config(directory)
    try:
        with torch.device("meta"):
            model, text_config = build(config)
    except (KeyError, TypeError, ValueError) as error:
        raise ModelLoadError(f"{directory}/config.json does not describe a {kind.name}: {error}") from None
    state, path = read_state_dict(directory)
    problems = key_problems(official_shapes(model, text_config), state)
    if problems:
        raise ModelLoadError(f"{path} does not match its config.json ({kind.name}): " + " | ".join(problems))
    used = model.state_dict().keys()
    dropped = sum(t.numel() for k, t in state.items() if k not in used)
    state = {k: t for k, t in state.items() if k in used}
    if dtype is not None:
        state = {k: t.to(dtype) if t.is_floating_point() else t for k, t in state.items()}
    model.load_state_dict(state, strict=True, assign=True)
    rebuild_buffers(model)
    if device is not None:
        model.to(device)
    model.eval()
    parameters = sum(p.numel() for p in model.parameters())
    memory = sum(p.numel() * p.element_size() for p in model.parameters())
    loaded = LoadedComponent(kind.name, directory, parameters, memory, dropped, str(next(model.parameters()).device))
    log.info("loaded %s", loaded.summary())
    return model, loaded


def build_span_predictor(config: dict) -> tuple[PEAudioFrame, ModernBertConfig]:
    parsed = PEAudioFrameConfig.from_dict(config)
    return PEAudioFrame(parsed), parsed.text_model


def build_judge(config: dict) -> tuple[SAMAudioJudge, ModernBertConfig]:
    parsed = JudgeConfig.from_dict(config)
    return SAMAudioJudge(parsed), parsed.text_model


def load_side_model(directory: str | os.PathLike, kind: ComponentKind, dtype: torch.dtype | None = None,
                    device: str | torch.device | None = None):
    """-> (the model with its tokenizer: SpanPredictor or Judge, LoadedComponent)."""
    directory = Path(directory)
    tokenizer = load_tokenizer(directory, kind)
    build, wrap = {SPAN_PREDICTOR.name: (build_span_predictor, SpanPredictor),
                   JUDGE.name: (build_judge, Judge)}[kind.name]
    model, loaded = load_module(directory, kind, build, dtype, device)
    return wrap(model, tokenizer), loaded


def load_span_predictor(directory: str | os.PathLike, dtype: torch.dtype | None = None,
                        device: str | torch.device | None = None) -> tuple[SpanPredictor, LoadedComponent]:
    return load_side_model(directory, SPAN_PREDICTOR, dtype, device)


def load_judge(directory: str | os.PathLike, dtype: torch.dtype | None = None,
               device: str | torch.device | None = None) -> tuple[Judge, LoadedComponent]:
    return load_side_model(directory, JUDGE, dtype, device)


def is_judge_directory(directory: Path) -> bool:
    """Whether a directory's config.json is a SAM Audio Judge's (it has the Judge's own sections)."""
    config = read_config(directory)
    return "finetune_transformer" in config or "bottleneck_dim" in config


class SideModels:
    """The side models a separator may use, each loaded on first use (thread-safe) and then kept.

    `sam_directory` and `sam_config` (the SAM Audio model's directory and config.json) tell where to look
    besides the explicit directories; `report` receives one line per loaded component (memory, origin)."""

    def __init__(self, sam_directory: Path | None = None, sam_config: dict | None = None,
                 span_predictor_dir: str | os.PathLike | None = None, judge_dir: str | os.PathLike | None = None,
                 dtype: torch.dtype | None = None, device: str | torch.device | None = None,
                 report: Callable[[str], None] | None = None):
        self.sam_directory = sam_directory
        self.sam_config = sam_config or {}
        self.span_predictor_dir = span_predictor_dir
        self.judge_dir = judge_dir
        self.dtype, self.device = dtype, device
        self.report = report
        self.loaded: list[LoadedComponent] = []
        self._lock = threading.Lock()
        self._span_predictor: SpanPredictor | None = None
        self._judge: Judge | None = None

    def _names(self, kind: ComponentKind) -> tuple[str, ...]:
        """Sub-directory names the SAM Audio config.json gives (the span predictor's and the Judge ranker's ids)."""
        if kind is SPAN_PREDICTOR:
            name = self.sam_config.get("span_predictor")
            return (str(name).split("/")[-1],) if name else ()
        rankers = [self.sam_config.get("text_ranker") or {}]
        rankers += [entry[0] for entry in (rankers[0].get("rankers") or {}).values() if isinstance(entry, list)]
        ids = [r.get("checkpoint_or_model_id") for r in rankers if isinstance(r, dict) and r.get("kind") == "judge"]
        return tuple(str(i).split("/")[-1] for i in ids if i)

    def _load(self, kind: ComponentKind, explicit):
        directory = find_component(kind, explicit, self.sam_directory, self._names(kind))
        component, loaded = load_side_model(directory, kind, self.dtype, self.device)
        self.loaded.append(loaded)
        if self.report is not None:
            self.report(loaded.summary())
        return component

    def span_predictor(self) -> SpanPredictor:
        with self._lock:
            if self._span_predictor is None:
                self._span_predictor = self._load(SPAN_PREDICTOR, self.span_predictor_dir)
            return self._span_predictor

    def judge(self) -> Judge:
        with self._lock:
            if self._judge is None:
                self._judge = self._load(JUDGE, self.judge_dir)
            return self._judge


def side_models_for(model: str | os.PathLike, span_predictor_dir: str | os.PathLike | None = None,
                    judge_dir: str | os.PathLike | None = None, **options) -> SideModels:
    """The side models of a SAM Audio model named as on the command line (`--model DIR` or a hub id)."""
    if str(model) in ("tiny", "random"):
        raise ModelLoadError("span prediction and the Judge belong to SAM Audio checkpoints: pass --model DIR with "
                             f"a SAM Audio model directory (not {model!r})")
    directory = resolve_model_directory(model)
    return SideModels(directory, read_config(directory), span_predictor_dir, judge_dir, **options)
