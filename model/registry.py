"""Turn a `--model` value into a separator: `tiny` (the embedded default), or a SAM Audio checkpoint
directory / Hugging Face id."""

from __future__ import annotations

import os

from samstream.model.errors import ModelLoadError, PromptError
from samstream.model.separator import Separator

DEFAULT_MODEL = "tiny"


def load_separator(name: str = DEFAULT_MODEL, text_encoder: str | os.PathLike | None = None,
                   progress: bool = True, speech_expert: bool = True) -> Separator:
    """`speech_expert=False` runs the default model's own networks alone (no DeepFilterNet3)."""
    if name == DEFAULT_MODEL:
        try:
            from samstream.model.composite import load_default
        except ImportError:
            raise ModelLoadError("the embedded default model is not part of this build; pass --model DIR with a "
                                 "SAM Audio checkpoint directory") from None
        return load_default(speech_expert)
    from samstream.model.loading import load_sam_audio
    from samstream.model.separator import SAMAudioSeparator
    from samstream.model.text import find_t5_encoder

    loaded = load_sam_audio(name, progress=progress)
    try:
        encoder = find_t5_encoder(loaded.model.config.text_dim, loaded.directory, text_encoder)
        return SAMAudioSeparator(loaded.model, encoder)
    except PromptError as missing:
        # Span-only use needs no text encoder: report the problem only when a text prompt arrives.
        return SAMAudioSeparator(loaded.model, missing_text_encoder=str(missing))
