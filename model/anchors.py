"""Span prompts ("anchors") as SAM Audio's processor turns them into per-frame token ids.

Vocabulary: <null>=0, "+"=1, "-"=2, <pad>=3. Each item's id list starts as [<null>, <pad>] and every
anchor (token, start_s, end_s) is appended; the per-frame alignment indexes that list: 0 (<null>) on
valid frames, 1 (<pad>) on padded frames, then each anchor overwrites frames
ceil(start*sr/hop) .. ceil(end*sr/hop)-1 with its own position (later anchors win, spans may run into
padding). Computed in double precision, multiplying by the rate before dividing by the hop, exactly as
the reference does, so frame boundaries match bit for bit.
"""

from __future__ import annotations

import argparse
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

from samstream.model.errors import PromptError

if TYPE_CHECKING:  # torch is imported where tokens are made: command lines parse spans (parse_span) without it
    import torch

NULL, POSITIVE, NEGATIVE, PAD = 0, 1, 2, 3
TOKENS = {"+": POSITIVE, "-": NEGATIVE}

Span = tuple[str, float, float]


@dataclass
class AnchorTokens:
    ids: torch.Tensor  # [B, N] int64
    alignment: torch.Tensor  # [B, T] int64 index into ids


def validate_span(span: Span) -> Span:
    try:
        token, start, end = span
        start, end = float(start), float(end)
    except (TypeError, ValueError):
        raise PromptError(f"span {span!r} must be (\"+\" or \"-\", start_s, end_s)") from None
    if token not in TOKENS:
        raise PromptError(f"span {span!r}: the sign must be '+' (this sound) or '-' (not this sound)")
    if not (math.isfinite(start) and math.isfinite(end)) or start < 0 or end <= start:
        raise PromptError(f"span {span!r}: need 0 <= start < end (seconds)")
    return token, start, end


def parse_span(text: str) -> Span:
    """'+:3.2-4.0' -> ('+', 3.2, 4.0): a span as users write it (`--span` of the command lines and demos).

    Raises argparse.ArgumentTypeError, whose message argparse shows as it is (`type=parse_span`)."""
    try:
        sign, times = text.split(":", 1)
        start, end = (float(x) for x in times.split("-", 1))
    except ValueError:
        raise argparse.ArgumentTypeError(f"span {text!r} must look like +:3.2-4.0 or -:7-8 (sign:start-end seconds)")
    if sign not in ("+", "-") or not 0 <= start < end:
        raise argparse.ArgumentTypeError(f"span {text!r}: sign must be + or -, and 0 <= start < end")
    return sign, start, end


def span_frames(start_s: float, end_s: float, sample_rate: int, hop: int) -> range:
    first = math.ceil(start_s * sample_rate / hop)
    stop = math.ceil(end_s * sample_rate / hop)
    return range(first, stop)


def anchor_tokens(
    anchors: list[list[Span]] | None,
    frames_per_item: list[int],
    total_frames: int,
    sample_rate: int,
    hop: int,
) -> AnchorTokens:
    """Token ids and per-frame alignment for a batch; `anchors=None` is the reference's no-anchor batch."""
    import torch

    batch = len(frames_per_item)
    alignment = torch.ones(batch, total_frames, dtype=torch.long)
    for b, frames in enumerate(frames_per_item):
        alignment[b, :frames] = 0
    if anchors is None:
        return AnchorTokens(torch.tensor([[NULL, PAD]] * batch), alignment)
    if len(anchors) != batch:
        raise PromptError(f"got span lists for {len(anchors)} items but the batch has {batch}")
    id_lists = []
    for b, item_anchors in enumerate(anchors):
        ids = [NULL, PAD]
        for token, start, end in map(validate_span, item_anchors):
            ids.append(TOKENS[token])
            frames = span_frames(start, end, sample_rate, hop)
            alignment[b, frames.start : min(frames.stop, total_frames)] = len(ids) - 1
        id_lists.append(ids)
    width = max(map(len, id_lists))
    ids = torch.tensor([ids + [PAD] * (width - len(ids)) for ids in id_lists])
    return AnchorTokens(ids, alignment)
