"""Sliding-window regeneration: streaming with the bidirectional official SAM Audio checkpoints.

Every hop, the latest `window` latent frames are separated from scratch (the DiT sees the whole window in
both directions), and the `hop` frames that lie just behind the `lookahead` are committed:

    frames:  ... [window start ............ committed hop ......... lookahead ) <- newest final frame
    output:                                 decoded with the decoder's latent context on each side

What keeps it cheap and seamless (SAM_AUDIO.md §8):
- streaming codec encode: a latent frame is final once `c` frames of audio exist on each side of it
  (c = ceil(encoder_context_samples / hop)); each step encodes only the new frames plus that context,
  so finished frames equal a whole-file encode;
- the mixture part of the input projection (W_mix·[z‖z] + bias + the constant no-video term) is
  computed once per frame and kept with the frame; only W_noise·x_t changes per evaluation;
- frame-indexed noise: the initial noise of absolute frame n is the same in every window;
- per-prompt cross-attention K/V and per-time modulation tables are computed once and cached;
- the committed hop is decoded with `decoder_context_frames` of generated latents on each side (taken
  from the same window) and its first `crossfade` frames are crossfaded (equal power) with the
  previous window's decoding of the same samples.
The watermark branch of the decoder is causal with unbounded LSTM history and is not used here
(`watermark=False`): the streamed output is the decoder's main (tanh) path.

Visual-mask prompts (checkpoints with the PE-Core vision tower): video frames come in beside the audio
through `push_video(state, frames, times)` (stream time in seconds, on the model-rate audio clock) and are
buffered raw. When a latent frame becomes final, it takes the buffered frame nearest in time (the offline
rule, model/video.py); the prompt's `visual_mask` is applied, the vision encoder runs once per chosen video
frame (features cached on the buffered frame), and the gated video term joins that latent frame's cached
conditioning. So streaming equals the offline windowed reference whenever every video frame is pushed no
later than the audio hop that finalises the latent frames around its time; a lagging video falls back to
the latest frame it has (or to the no-video term before the first frame). A mask change applies to latent
frames finalised after it; older frames of the window keep their conditioning until they slide out.

Predicted spans (a `SpanPredictor`, PE-A-Frame, given to the processor): for a text prompt without spans of its
own, the predictor runs once per window on the window's cached latents (the text embedding is cached per
prompt), batched across the streams of a step. A frame's "+" anchor follows a per-stream hysteresis over
the windows that contain it: it turns on when its probability exceeds the official threshold (0.3) and
off only when it falls below threshold - `span_hysteresis`, so frames near the threshold do not flicker
from window to window as the context shifts. Frames are used directly as anchor frames; the offline
path's float32-seconds round trip (which shifts some boundaries by a frame, the official behaviour) has
no meaning in a stream and is not reproduced.

`windowed_reference` runs the same windows over a whole-file encoding: the streaming output equals it
(tests/test_sliding_window.py). How far both lie from one whole-file separation is measured by
`samstream bench window` (docs/streaming.md).
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from dataclasses import dataclass, field

import numpy as np
import torch

from samstream.model.anchors import NEGATIVE, NULL, POSITIVE, span_frames
from samstream.model.errors import PromptError
from samstream.model.sampling import SolverConfig, solve
from samstream.model.separator import SAMAudioSeparator
from samstream.model.span_predictor import SpanPredictor
from samstream.model.video import MaskedVideo, apply_mask
from samstream.stream.crossfade import Crossfader
from samstream.stream.processor import Prompt


PROMPT_CACHE_SIZE = 64
# Raw frames kept per stream (1 s at 60 fps): frames behind the final latent frames are dropped anyway; this
# bounds a video pushed far ahead of its audio (the oldest frames go first).
MAX_BUFFERED_VIDEO_FRAMES = 64


@dataclass
class VideoFrame:
    """A buffered video frame; its vision feature is computed once, when a latent frame first uses it."""

    time: np.float32  # seconds of stream time (float32, as the offline frame-selection rule compares times)
    image: torch.Tensor  # uint8 [H, W, 3] RGB
    feature: torch.Tensor | None = None  # [vision_dim], computed with the visual mask whose digest is `mask_key`
    mask_key: str | None = None


@dataclass(frozen=True)
class WindowConfig:
    window_frames: int = 250  # 10 s at 25 frames/s: the reported training clip length
    hop_frames: int = 25  # 1 s committed per window
    lookahead_frames: int = 13  # 0.52 s: covers the decoder's 8-frame right context
    crossfade_frames: int = 2
    steps: int = 16
    method: str = "midpoint"
    seed: int = 0
    span_hysteresis: float = 0.1  # predicted spans: a "+" frame turns off below threshold - this

    def __post_init__(self):
        if not 0 < self.hop_frames <= self.window_frames - self.lookahead_frames:
            raise ValueError("need 0 < hop_frames <= window_frames - lookahead_frames")
        if self.lookahead_frames < 0 or self.crossfade_frames < 0:
            raise ValueError("lookahead_frames and crossfade_frames must be >= 0")

    @classmethod
    def from_seconds(cls, frame_rate: float, window_s: float = 10.0, hop_s: float = 1.0, lookahead_s: float = 0.5,
                     **kwargs) -> "WindowConfig":
        return cls(round(window_s * frame_rate), max(1, round(hop_s * frame_rate)),
                   math.ceil(lookahead_s * frame_rate), **kwargs)


@dataclass
class StreamState:
    prompt: Prompt
    audio: np.ndarray  # model-rate samples from absolute sample `audio_start`: encoder context + pending
    audio_start: int = 0
    samples_in: int = 0
    frames_done: int = 0  # latent frames final so far (absolute)
    z: torch.Tensor | None = None  # [T,C] latest final frames
    base: torch.Tensor | None = None  # [T,D] their mixture conditioning
    frames_start: int = 0  # absolute index of z[0]
    tail: np.ndarray | None = None  # [2, crossfade samples] previous window's decoding past its hop
    video: list[VideoFrame] = field(default_factory=list)  # frames not yet behind every final latent frame
    video_pushed_until: float = -math.inf  # time of the last pushed frame
    predicted: "PredictedSpans | None" = None  # predicted-span decisions of the frames in the window


@dataclass
class PredictedSpans:
    """Per-frame "+" decisions of one stream's predicted spans, with hysteresis across windows."""

    on_threshold: float
    off_threshold: float
    first: int = 0  # absolute frame of decisions[0]
    decisions: torch.Tensor = field(default_factory=lambda: torch.zeros(0, dtype=torch.bool))

    def update(self, first: int, probabilities: torch.Tensor) -> torch.Tensor:
        """A window's probabilities of absolute frames [first, first + T) -> its bool "+" frames. A frame seen
        for the first time follows the official rule (p > threshold); a known one keeps its state unless p
        crosses the other threshold."""
        known = self.decisions[first - self.first:] if first >= self.first else self.decisions[:0]
        known = known[: probabilities.shape[0]]
        on = probabilities > self.on_threshold
        stays_on = known & (probabilities[: known.shape[0]] >= self.off_threshold)
        on[: known.shape[0]] = stays_on | on[: known.shape[0]]
        self.first, self.decisions = first, on
        return on


class SlidingWindowProcessor:
    """ChunkProcessor for SAM Audio checkpoints (model-rate hops of `hop_frames` codec frames)."""

    def __init__(self, separator: SAMAudioSeparator, config: WindowConfig = WindowConfig(),
                 span_predictor: SpanPredictor | None = None):
        """`span_predictor`: predict "+" spans for text prompts that carry no spans (PE-A-Frame)."""
        self.separator = separator
        self.span_predictor = None
        if span_predictor is not None:
            self.use_span_predictor(span_predictor)
        self.span_seconds = 0.0  # time spent predicting spans, and in how many windows (the cost per window)
        self.span_windows = 0
        self.model = separator.model
        self.config = config
        codec = self.model.audio_codec
        self.frame = codec.hop_length
        self.sample_rate = separator.sample_rate
        self.context_frames = math.ceil(codec.encoder_context_samples / self.frame)
        self.decoder_context = codec.decoder_context_frames
        self.hop_samples = config.hop_frames * self.frame
        self.delay_samples = (self.context_frames + config.lookahead_frames) * self.frame
        self.max_steps = config.steps
        self.crossfade = Crossfader(config.crossfade_frames * self.frame) if config.crossfade_frames else None
        # text -> encoded tokens [L, text_dim]; (text, t) -> per-layer cross K/V; t -> time tables. Bounded LRUs.
        self._prompt_cache: OrderedDict[str | None, torch.Tensor | None] = OrderedDict()
        self._cross_cache: OrderedDict[tuple, list] = OrderedDict()
        self._time_cache: dict[float, tuple] = {}
        self._noise_cache: dict[int, torch.Tensor] = {}
        with torch.inference_mode():
            video = torch.zeros(1, self.model.config.vision_dim, 1, dtype=self._dtype)
            self._video_term = self.model.align_masked_video(video)[0, 0]  # what the reference adds without video
            anchors = self.model.embed_anchors
            self._anchor_rows = anchors.gate.tanh() * anchors.proj(anchors.embed.weight)  # [4, D] per token

    def use_span_predictor(self, span_predictor: SpanPredictor) -> None:
        frame_seconds = self.separator.hop / self.separator.sample_rate
        if abs(span_predictor.seconds_per_frame - frame_seconds) > 1e-9:
            raise PromptError("the span predictor and the SAM Audio model have different frame rates")
        if span_predictor.latent_channels != self.separator.model.config.latent_channels:
            raise PromptError(f"the span predictor reads {span_predictor.latent_channels}-channel latents but this "
                              f"SAM Audio model makes {self.separator.model.config.latent_channels}")
        self.span_predictor = span_predictor

    @property
    def _dtype(self) -> torch.dtype:
        return self.model.proj.weight.dtype

    # -- ChunkProcessor ----------------------------------------------------------------------------------
    def init_state(self, prompt: Prompt) -> StreamState:
        self._prompt_features(prompt)  # validate early: a text prompt without a text encoder fails here
        if prompt.visual_mask is not None:
            self.separator.require_vision()
        return StreamState(prompt=prompt, audio=np.zeros(0, np.float32))

    def set_prompt(self, state: StreamState, prompt: Prompt) -> None:
        self._prompt_features(prompt)
        if prompt.text != state.prompt.text or prompt.spans:
            state.predicted = None  # decisions belong to the text they were predicted for
        if prompt.visual_mask is not None:
            self.separator.require_vision()
            if state.video and tuple(state.video[-1].image.shape[:2]) != prompt.visual_mask.shape:
                raise PromptError(_mask_mismatch(prompt.visual_mask.shape, state.video[-1].image.shape))
        state.prompt = prompt

    @property
    def accepts_video(self) -> bool:
        return self.separator.has_vision

    def push_video(self, state: StreamState, frames: np.ndarray, times) -> None:
        """Buffer video frames for the visual-mask prompt: uint8 [N,H,W,3] RGB at stream times `times` (seconds
        on the model-rate audio clock, increasing). Push each frame no later than the audio it belongs to."""
        self.separator.require_vision()
        video = MaskedVideo(frames, times=times)  # validates shapes and dtype
        times = video.times.numpy()
        if times[0] <= state.video_pushed_until or np.any(np.diff(times) <= 0):
            raise PromptError("video frame times must increase, also across push_video calls")
        mask = state.prompt.visual_mask
        if mask is not None and tuple(video.frames.shape[1:3]) != mask.shape:
            raise PromptError(_mask_mismatch(mask.shape, video.frames.shape[1:3]))
        state.video.extend(VideoFrame(t, image.clone()) for t, image in zip(times, video.frames))  # own copies
        state.video_pushed_until = float(times[-1])
        del state.video[:-MAX_BUFFERED_VIDEO_FRAMES]

    def flush_hops(self) -> int:
        return math.ceil(self.delay_samples / self.hop_samples) + 1

    @torch.inference_mode()
    def process(self, states: list[StreamState], hops: np.ndarray, steps: int) -> np.ndarray:
        out = np.zeros((len(states), 2, self.hop_samples), np.float32)
        self._encode(states, hops)
        # Group the windows by length (only start-up windows differ): batches need no padding, and every
        # window of a group has the same commit and decode geometry.
        windows = {}
        for index, state in enumerate(states):
            first, end = self._window_frames(state)
            if end - self.config.lookahead_frames > 0:
                windows.setdefault(end - first, []).append(index)
        for indices in windows.values():
            group = [states[i] for i in indices]
            final = self._separate_windows(group, steps)
            spans = [self._window_frames(state) for state in group]
            for i, row in zip(indices, self.commit_windows(group, spans, final)):
                out[i] = row
        return out

    # -- streaming codec encode ----------------------------------------------------------------------------
    def _encode(self, states: list[StreamState], hops: np.ndarray) -> None:
        """Append each hop and encode the frames that became final, batching streams of equal chunk geometry."""
        plans = {}
        for state, hop in zip(states, hops):
            state.audio = np.concatenate([state.audio, hop.astype(np.float32)])
            state.samples_in += hop.shape[0]
            ready = state.samples_in // self.frame - self.context_frames  # frames with full right context
            if ready <= state.frames_done:
                continue
            first = max(0, state.frames_done - self.context_frames)  # chunk start (frames), with left context
            start = first * self.frame - state.audio_start
            stop = (ready + self.context_frames) * self.frame - state.audio_start
            take = (state.frames_done - first, ready - first)
            plans.setdefault((stop - start, take), []).append((state, start, stop, ready))
        for (_, (lo, hi)), members in plans.items():
            chunks = torch.from_numpy(np.stack([state.audio[start:stop] for state, start, stop, _ in members]))
            z = self.model.audio_codec.encode_frames(chunks.to(self._dtype)[:, None]).transpose(1, 2)[:, lo:hi]
            for (state, _, _, ready), frames in zip(members, z):
                self._append_frames(state, frames, self._video_features(state, state.frames_done, ready))
                state.frames_done = ready
                keep_from = max(0, ready - self.context_frames) * self.frame  # left context of the next chunk
                state.audio = state.audio[keep_from - state.audio_start:]
                state.audio_start = keep_from

    def frame_base(self, z: torch.Tensor, video_features: torch.Tensor | None = None) -> torch.Tensor:
        """The noise-independent part of the projected input for frames z [T,C]: mixture term, bias and the
        gated video term (of `video_features` [T,vision_dim], or the reference's no-video term)."""
        width = self.model.config.transformer.out_channels
        mixture_weight = self.model.proj.weight[:, 2 * width:]
        base = torch.nn.functional.linear(torch.cat([z, z], -1), mixture_weight, self.model.proj.bias)
        if video_features is None:
            return base + self._video_term
        return base + self.model.align_masked_video(video_features.to(self._dtype).T[None])[0]

    def _video_features(self, state: StreamState, first: int, end: int) -> torch.Tensor | None:
        """Vision features [end-first, vision_dim] for latent frames [first, end), or None (no visual prompt or
        no frame yet): each takes the buffered frame nearest in time; frames are encoded once, on first use."""
        if not state.video or end <= first:
            return None
        buffered = torch.tensor(np.array([frame.time for frame in state.video], np.float32))
        mask = state.prompt.visual_mask
        features = None
        if mask is not None:
            targets = torch.arange(first, end) * self.frame / self.sample_rate  # float32, as offline
            chosen = (targets[None] - buffered[:, None]).abs().argmin(dim=0).tolist()
            mask_key = state.prompt.key[3]  # the mask's digest
            todo = sorted({i for i in chosen if state.video[i].mask_key != mask_key})
            if todo:
                images = torch.stack([state.video[i].image for i in todo])
                images = apply_mask(images, torch.tensor(mask)[None], "keep")
                for i, feature in zip(todo, self.model.vision_encoder.encode_frames(images)):
                    state.video[i].feature, state.video[i].mask_key = feature, mask_key
            features = torch.stack([state.video[i].feature for i in chosen])
        # Frames before the last one at or before the next latent frame's time can no longer be nearest.
        next_time = torch.tensor(end) * self.frame / self.sample_rate
        keep_from = max(0, int((buffered <= next_time).sum()) - 1)
        del state.video[:keep_from]
        return features

    def _append_frames(self, state: StreamState, z: torch.Tensor, video_features: torch.Tensor | None = None) -> None:
        base = self.frame_base(z, video_features)
        if state.z is None:
            state.z, state.base = z, base
        else:
            state.z, state.base = torch.cat([state.z, z]), torch.cat([state.base, base])
        excess = state.z.shape[0] - self.config.window_frames
        if excess > 0:
            state.z, state.base = state.z[excess:], state.base[excess:]
            state.frames_start += excess

    def _window_frames(self, state: StreamState) -> tuple[int, int]:
        end = state.frames_done
        return max(0, end - self.config.window_frames), end

    # -- one batch of equally long windows --------------------------------------------------------------------
    def _separate_windows(self, group: list[StreamState], steps: int) -> torch.Tensor:
        windows, latents = [], []
        for state in group:
            first, end = self._window_frames(state)
            local = slice(first - state.frames_start, end - state.frames_start)
            windows.append((first, end, state.base[local], state.prompt))
            latents.append(state.z[local])
        predicted = self.predict_window_spans(group, [w[0] for w in windows], latents)
        return self.separate_windows(windows, steps, predicted)

    def predicts_spans(self, prompt: Prompt) -> bool:
        return self.span_predictor is not None and prompt.text is not None and not prompt.spans

    def predict_window_spans(self, states: list[StreamState], firsts: list[int], latents: list[torch.Tensor]
                             ) -> list[torch.Tensor | None]:
        """Predicted "+" frames of equally long windows (None for streams whose prompt does not ask for them): one
        batched span-predictor pass, then each stream's hysteresis."""
        asking = [i for i, state in enumerate(states) if self.predicts_spans(state.prompt)]
        out: list[torch.Tensor | None] = [None] * len(states)
        if not asking:
            return out
        started = time.perf_counter()
        probabilities = self.span_predictor.probabilities(torch.stack([latents[i] for i in asking]), None,
                                                          [states[i].prompt.text for i in asking])
        for row, i in enumerate(asking):
            state = states[i]
            if state.predicted is None:
                threshold = self.span_predictor.threshold
                state.predicted = PredictedSpans(threshold, threshold - self.config.span_hysteresis)
            out[i] = state.predicted.update(firsts[i], probabilities[row])
        self.span_seconds += time.perf_counter() - started
        self.span_windows += len(asking)
        return out

    def separate_windows(self, windows: list[tuple[int, int, torch.Tensor, Prompt]], steps: int,
                         predicted: list[torch.Tensor | None] | None = None) -> torch.Tensor:
        """Sample equally long windows: (first frame, end frame, base conditioning [T,D], prompt) each -> [B,T,2C].
        `predicted`: per window, bool "+" frames from the span predictor that replace the prompt's spans."""
        model = self.model
        solver = SolverConfig(self.config.method, steps)
        predicted = predicted or [None] * len(windows)
        conditioning = torch.stack([base + self._anchor_term(first, end, prompt, spans)
                                    for (first, end, base, prompt), spans in zip(windows, predicted)])
        noise = torch.stack([self._noise(first, end) for first, end, _, _ in windows]).to(self._dtype)
        text, text_mask = self._batch_prompts([prompt for *_, prompt in windows])
        per_time = {float(t): self._time_tables(t, len(windows)) for t in solver.evaluation_times()}
        cross = {float(t): self._cross_kv([prompt for *_, prompt in windows], text, t) for t in solver.evaluation_times()}

        from samstream.model.sam_audio import FrameConditioning

        frames = FrameConditioning(conditioning)

        def velocity(t, x):
            return model.velocity(x, t.expand(x.shape[0]), frames, None, text_mask, None,
                                  cross_kv=cross[float(t)], time_cond=per_time[float(t)])

        return solve(velocity, noise, solver).float()

    def _anchor_term(self, first: int, end: int, prompt: Prompt, predicted: torch.Tensor | None = None
                     ) -> torch.Tensor:
        """Per-frame anchor embedding for absolute frames [first, end): <null>, or + / - inside spans (or + on the
        predicted frames)."""
        if predicted is not None:
            return self._anchor_rows[torch.where(predicted, POSITIVE, NULL)]
        tokens = torch.full((end - first,), NULL, dtype=torch.long)
        for sign, start_s, end_s in prompt.spans:  # later spans overwrite earlier ones, as in the reference
            frames = span_frames(start_s, end_s, self.sample_rate, self.frame)
            lo, hi = max(frames.start, first), min(frames.stop, end)
            if lo < hi:
                tokens[lo - first:hi - first] = POSITIVE if sign == "+" else NEGATIVE
        return self._anchor_rows[tokens]

    def _noise(self, first: int, end: int) -> torch.Tensor:
        """Initial noise of absolute frames [first, end): the same for a frame in every window."""
        width = self.model.config.transformer.out_channels
        rows = []
        for frame in range(first, end):
            row = self._noise_cache.get(frame)
            if row is None:
                generator = torch.Generator().manual_seed(self.config.seed * 1_000_003 + frame)
                row = torch.randn(width, generator=generator)
                self._noise_cache[frame] = row
                if len(self._noise_cache) > 4 * self.config.window_frames:
                    self._noise_cache.pop(next(iter(self._noise_cache)))
            rows.append(row)
        return torch.stack(rows)

    # -- prompt and time caches -------------------------------------------------------------------------------
    def _prompt_features(self, prompt: Prompt) -> torch.Tensor | None:
        key = prompt.text
        if key not in self._prompt_cache:
            features, mask = self.separator.encode_text([prompt.text]) if prompt.text else (None, None)
            self._prompt_cache[key] = features[0][mask[0]] if features is not None else None
            _trim(self._prompt_cache, PROMPT_CACHE_SIZE)
        self._prompt_cache.move_to_end(key)
        return self._prompt_cache[key]

    def _batch_prompts(self, prompts: list[Prompt]) -> tuple[list, torch.Tensor | None]:
        rows = [self._prompt_features(p) for p in prompts]
        if all(r is None for r in rows):
            return rows, None
        width = max(r.shape[0] if r is not None else 1 for r in rows)
        mask = torch.zeros(len(rows), width, dtype=torch.bool)
        for i, r in enumerate(rows):
            mask[i, : (r.shape[0] if r is not None else 1)] = True
        return rows, mask

    def _cross_kv(self, prompts: list[Prompt], rows: list, t: torch.Tensor):
        """Per-layer cross-attention K/V for a batch: each prompt's (cached) entry, padded to the longest."""
        per_prompt = []
        for prompt, row in zip(prompts, rows):
            key = (prompt.text, float(t))
            if key not in self._cross_cache:
                text = row[None].to(self._dtype) if row is not None else None
                memory = self.model.memory(text, t.reshape(1))
                self._cross_cache[key] = self.model.transformer.cross_keys_values(memory)
                _trim(self._cross_cache, PROMPT_CACHE_SIZE * 2 * self.config.steps)
            per_prompt.append(self._cross_cache[key])
        width = max(kv[0][0].shape[2] for kv in per_prompt)
        layers = []
        for layer in range(len(per_prompt[0])):
            keys = torch.cat([_pad_tokens(kv[layer][0], width) for kv in per_prompt])
            values = torch.cat([_pad_tokens(kv[layer][1], width) for kv in per_prompt])
            layers.append((keys, values))
        return layers

    def _time_tables(self, t: torch.Tensor, batch: int):
        key = float(t)
        if key not in self._time_cache:
            self._time_cache[key] = self.model.transformer.time_conditioning(t.reshape(1))
        e, t_block = self._time_cache[key]
        return e.expand(batch, -1), t_block.expand(batch, -1)

    # -- commit and decode ------------------------------------------------------------------------------------
    def commit_windows(self, states: list, spans: list[tuple[int, int]], final: torch.Tensor) -> list[np.ndarray]:
        """Decode the committed hops of equally long separated windows (one batched decode) and crossfade
        each onto its stream's previous hop -> per stream [2, hop samples] (zeros before time 0)."""
        config = self.config
        first, end = spans[0]
        stop = end - config.lookahead_frames
        start = stop - config.hop_frames
        lo = max(first, start - self.decoder_context)
        hi = min(end, stop + self.decoder_context)
        latents = final[:, lo - first:hi - first]  # [B, n, 2C]: the same relative range in every window
        batch, frames, width = latents.shape
        pairs = latents.transpose(1, 2).reshape(2 * batch, width // 2, frames)  # target, residual per stream
        wav = self.model.audio_codec.decode(pairs.to(self._dtype), watermark=False)
        wav = wav.float().numpy().reshape(batch, 2, -1)  # samples of frames [lo, hi) relative to each window
        begin = max(start, 0)
        fade = self.crossfade.length if self.crossfade is not None else 0
        tail_from = (stop - lo) * self.frame
        outputs = []
        for state, decoded in zip(states, wav):
            out = np.zeros((2, self.hop_samples), np.float32)
            out[:, (begin - start) * self.frame:] = decoded[:, (begin - lo) * self.frame:tail_from]
            if fade:
                if state.tail is not None and begin == start:
                    out[:, :fade] = self.crossfade.mix(state.tail, out[:, :fade])
                state.tail = decoded[:, tail_from:tail_from + fade].copy() if (hi - stop) * self.frame >= fade else None
            outputs.append(out)
        return outputs

    def _decode(self, latents: torch.Tensor) -> np.ndarray:
        """[n, 2C] latents -> [2, n*frame] (target, residual), main path only."""
        channels = latents.shape[1] // 2
        pair = latents.T.reshape(2, channels, -1)
        wav = self.model.audio_codec.decode(pair.to(self._dtype), watermark=False)
        return wav[:, 0].float().numpy()


def _trim(cache: OrderedDict, capacity: int) -> None:
    while len(cache) > capacity:
        cache.popitem(last=False)


def _pad_tokens(x: torch.Tensor, width: int) -> torch.Tensor:
    """[1,H,L,hd] -> [1,H,width,hd] with zero keys/values (masked out by the memory mask)."""
    missing = width - x.shape[2]
    return torch.nn.functional.pad(x, (0, 0, 0, missing)) if missing else x


def _mask_mismatch(mask_shape, frame_shape) -> str:
    return (f"the visual mask is {mask_shape[1]}x{mask_shape[0]} (width x height) but the video frames are "
            f"{frame_shape[1]}x{frame_shape[0]}; give a mask at the video's resolution")


@torch.inference_mode()
def windowed_reference(processor: SlidingWindowProcessor, audio: np.ndarray, prompt: Prompt,
                       video: tuple[np.ndarray, np.ndarray] | None = None) -> np.ndarray:
    """The offline windowed reference: whole-file encode, then exactly the windows and commits that streaming
    runs (one per hop, the same frame-indexed noise, decode context and crossfades). -> [2, samples].
    `video`: (uint8 frames [N,H,W,3], times [N]) for the prompt's visual mask, as pushed to the stream."""
    config = processor.config
    hop = processor.hop_samples
    n_hops = -(-audio.shape[0] // hop) + processor.flush_hops()
    padded = np.zeros(n_hops * hop, np.float32)
    padded[: audio.shape[0]] = audio
    z = processor.model.audio_codec.encode_frames(torch.from_numpy(padded).to(processor._dtype)[None, None])[0].T
    features = None
    if video is not None and prompt.visual_mask is not None:
        masked = MaskedVideo(video[0], prompt.visual_mask, "keep", times=video[1])
        frames = masked.frames_for_latents(z.shape[0], processor.frame, processor.sample_rate)
        features = processor.model.vision_encoder.encode_frames(frames)
    base = processor.frame_base(z, features)
    state = StreamState(prompt=prompt, audio=np.zeros(0, np.float32))
    out = []
    for step in range(n_hops):
        end = (step + 1) * config.hop_frames - processor.context_frames
        first = max(0, end - config.window_frames)
        if end - config.lookahead_frames <= 0:
            out.append(np.zeros((2, hop), np.float32))
            continue
        predicted = processor.predict_window_spans([state], [first], [z[first:end]])
        final = processor.separate_windows([(first, end, base[first:end], prompt)], config.steps, predicted)
        out.append(processor.commit_windows([state], [(first, end)], final)[0])
    return np.concatenate(out, axis=1)
