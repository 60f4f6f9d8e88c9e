"""The embedded default model ("tiny"): a small block-causal SAM-Audio-style separator that runs on one CPU core.

Codec: a fixed, exactly invertible STFT (16 kHz, n_fft 512, hop 256, sqrt-Hann analysis and synthesis
windows, which overlap-add to perfect reconstruction). Tokens are STFT frames (62.5/s).

Flow matching happens in a mask domain: the state x is 2·mask − 1 per bin (x1 = the ideal ratio mask
|S| / (|S| + |N|) mapped to [−1, 1]); x0 ~ N(0, I). A causal DiT (model/dit.py, frame-local patcher)
predicts the clean state x̂1 = tanh(output) ("x-prediction"), and the velocity is (x̂1 − x_t) / (1 − t): the same
flow, but the network never has to reproduce the noise it is given, and one Euler step from t = 0 returns x̂1 ≈
E[x1 | mixture, prompt], a bounded mask estimate. More steps are optional.
The target is mask ⊙ mixture STFT and the residual is mixture − target, so target + residual == mixture.

Block-causal streaming without a commit pass. Every frame has two tokens that share its RoPE position:
- a *context* token: the projected mixture features (plus anchors), at time 1, with no state input. Context
  tokens attend to context tokens of their own chunk and of the previous `context_chunks − 1` chunks;
- a *state* token: the same features plus the projected noisy state x_t at the chunk's time t. State tokens
  attend to the same context window and to the state tokens of their own chunk only.
Context tokens never see a state, so their keys/values depend on the mixture and prompt alone: streaming
caches them once per chunk (computed in the same forward pass as the chunk's first sampling step), and the
offline run computes all of them in one parallel pass. Both are the same function, so streaming == offline
up to float rounding, and the cost per chunk is constant (bounded window).

Prompts are cross-attention memory tokens: [<null>, text (MiniLM sentence vector), audio example (pooled
encoder of an example clip)], padded by mask when absent. Span prompts add SAM-style gated anchor
embeddings (<null>/+/-/<pad>) to the frame tokens.

Streaming API (moshi-style explicit state): `init_stream(prompt, spans, example) -> StreamState` and
`stream_step(states, chunk [N, chunk_samples], steps) -> [N, 2, chunk_samples]` (target, residual), delayed
by `delay_samples` = STFT overlap (n_fft − hop) + look-ahead.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from samstream.model.anchors import NEGATIVE, NULL, PAD, POSITIVE, Span, span_frames, validate_span
from samstream.model.audio import check_sample_rate, resample, to_mono
from samstream.model.dit import DiT, DiTConfig, FusedDiT, modulate
from samstream.model.errors import AudioInputError, PromptError
from samstream.model.mask_floor import Floor, check_floor, floor_per_bin
from samstream.model.sampling import SolverConfig, solve
from samstream.model.separator import Separation, fit_length
from samstream.model.stft import (active_frames, analysis_frames, clip_spectra, log_magnitude, overlap_add,
                                  state_to_mask, synthesis_frames, with_lookahead)
from samstream.model.weights_file import config_from_dict, load_weights, save_weights

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
MEMORY_SLOTS = 3  # <null>, text, example
TEXT_SLOT, EXAMPLE_SLOT = 1, 2


@dataclass
class EmbeddedConfig:
    sample_rate: int = 16000
    n_fft: int = 512
    hop: int = 256
    chunk_frames: int = 2  # 32 ms chunks
    lookahead_chunks: int = 1  # each chunk also sees the mixture features of the next chunk
    context_chunks: int = 32  # attention window of the context stream (~1 s); receptive field grows per layer
    dim: int = 128
    n_heads: int = 4
    n_layers: int = 4
    anchor_dim: int = 32
    text_dim: int = 384  # all-MiniLM-L6-v2 sentence vectors
    steps: int = 1
    method: str = "euler"
    rope_base: float = 10000.0

    @classmethod
    def from_dict(cls, values: dict) -> "EmbeddedConfig":
        return config_from_dict(cls, values, "embedded-model")

    @property
    def bins(self) -> int:
        return self.n_fft // 2 + 1

    @property
    def lookahead_frames(self) -> int:
        return self.lookahead_chunks * self.chunk_frames

    @property
    def chunk_samples(self) -> int:
        return self.chunk_frames * self.hop

    @property
    def delay_samples(self) -> int:
        return (self.n_fft - self.hop) + self.lookahead_chunks * self.chunk_samples

    def dit_config(self) -> DiTConfig:
        # max_positions only sizes DiT's own RoPE table, which this model does not use (see `rotation`).
        return DiTConfig(dim=self.dim, n_heads=self.n_heads, n_layers=self.n_layers, out_channels=self.bins,
                         dropout=0.0, context_dim=self.dim, causal=True, patch_kernel=1, max_positions=2)


# -- the network --------------------------------------------------------------------------------------------
class ExampleEncoder(nn.Module):
    """An example clip's frames -> one memory vector ("the sound/voice in this clip"): MLP, mean+std pooling."""

    def __init__(self, bins: int, dim: int):
        super().__init__()
        self.frame = nn.Sequential(nn.Linear(bins, 2 * dim), nn.SiLU(), nn.Linear(2 * dim, dim))
        self.out = nn.Linear(2 * dim, dim)

    def forward(self, features: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        """features [B,T,bins], weights [B,T] (1 = pool this frame) -> [B,dim]."""
        h = self.frame(features)
        w = weights.float().unsqueeze(-1)
        total = w.sum(1).clamp_min(1.0)
        mean = (h * w).sum(1) / total
        std = ((h - mean[:, None]).pow(2) * w).sum(1).div(total).add(1e-5).sqrt()
        return self.out(torch.cat([mean, std], dim=-1))


@dataclass
class PromptMemory:
    """Per-layer cross-attention keys/values of the prompt memory, and which memory slots are real."""

    cross_kv: list[tuple[torch.Tensor, torch.Tensor]]  # per layer, each [B,H,MEMORY_SLOTS,hd]
    mask: torch.Tensor  # [B, MEMORY_SLOTS] bool


class EmbeddedModel(nn.Module):
    def __init__(self, config: EmbeddedConfig):
        super().__init__()
        self.config = config
        dim, bins = config.dim, config.bins
        self.dit = DiT(config.dit_config())
        self.feature_proj = nn.Linear(bins * (1 + config.lookahead_frames), dim)
        self.state_proj = nn.Linear(bins, dim, bias=False)
        self.context_embedding = nn.Parameter(torch.zeros(dim))  # stands in for the state on context tokens
        self.anchor_embed = nn.Embedding(4, config.anchor_dim, padding_idx=PAD)
        self.anchor_proj = nn.Linear(config.anchor_dim, dim, bias=False)
        self.anchor_gate = nn.Parameter(torch.zeros(1))
        self.null_memory = nn.Parameter(torch.randn(dim) / dim**0.5)
        self.text_proj = nn.Linear(config.text_dim, dim)
        self.example_encoder = ExampleEncoder(bins, dim)
        head_dim = dim // config.n_heads
        inverse = 1.0 / config.rope_base ** (torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim)
        self.register_buffer("rope_frequencies", inverse, persistent=False)

    # -- conditioning -----------------------------------------------------------------------------------
    def prompt_memory(self, text: torch.Tensor | None, example: torch.Tensor | None,
                      text_valid: torch.Tensor | None = None, example_valid: torch.Tensor | None = None,
                      batch: int | None = None) -> PromptMemory:
        """text [B,text_dim] sentence vectors, example [B,dim] encoded examples; *_valid [B] say which rows have one."""
        batch = batch or (text if text is not None else example).shape[0]
        dim = self.config.dim
        slots = [self.null_memory.expand(batch, dim)]
        mask = torch.zeros(batch, MEMORY_SLOTS, dtype=torch.bool)
        mask[:, 0] = True
        for slot, value, valid, project in ((TEXT_SLOT, text, text_valid, self.text_proj),
                                            (EXAMPLE_SLOT, example, example_valid, None)):
            if value is None:
                slots.append(self.null_memory.new_zeros(batch, dim))
                continue
            slots.append(project(value) if project is not None else value)
            mask[:, slot] = True if valid is None else valid.cpu()
        memory = torch.stack(slots, dim=1)
        return PromptMemory(self.dit.cross_keys_values(memory), mask.to(memory.device))

    def encode_example(self, spectra: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """Example clips' spectra [B,T,bins] (valid [B,T]) -> [B,dim]."""
        return self.example_encoder(log_magnitude(spectra), active_frames(spectra, valid))

    def frame_tokens(self, features: torch.Tensor, anchors: torch.Tensor) -> torch.Tensor:
        """features [B,T,bins*(1+lookahead)], anchor ids [B,T] -> the state-independent part of each token."""
        h = self.feature_proj(features)
        return h + self.anchor_gate.tanh() * self.anchor_proj(self.anchor_embed(anchors))

    def rotation(self, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """RoPE angles for positions [B,T] in float64, so absolute positions of long streams stay exact."""
        angles = positions.double()[..., None] * self.rope_frequencies
        return angles.cos().float()[:, None], angles.sin().float()[:, None]  # [B,1,T,hd/2]

    def network(self, tokens: torch.Tensor, time: torch.Tensor | None, positions: torch.Tensor, prompt: PromptMemory,
                mask: torch.Tensor, past: list[tuple[torch.Tensor, torch.Tensor]] | None = None,
                time_cond: tuple[torch.Tensor, torch.Tensor] | None = None, fused: FusedDiT | None = None):
        """The DiT on tokens [B,T,D] at per-token time [B,T] (or its precomputed `time_cond`); mask [B or 1,1,T,P+T].
        -> (raw output, per-layer self-attention K/V); `clean_state` / `velocity` turn the output into x̂1 / v.
        `fused`: the same blocks with fused weights (inference only, see `FusedDiT`)."""
        dit = self.dit
        e, t_block = time_cond if time_cond is not None else dit.time_conditioning(time)
        rotation = self.rotation(positions)
        cross_mask = prompt.mask[:, None, None, :]
        h = fused.embed(tokens) if fused is not None else dit.x_embedder(tokens)
        own = []
        for index, layer in enumerate(dit.layers):
            inputs = (h, t_block, mask, rotation, prompt.cross_kv[index], cross_mask,
                      past[index] if past is not None else None)
            h, kv = fused.block(index, *inputs) if fused is not None else layer(*inputs)
            own.append(kv)
        shift, scale = (dit.final_layer_scale_shift_table + e.unsqueeze(-2)).unbind(-2)
        return dit.output(modulate(dit.norm(h), shift, scale)), own

    # -- the parallel (training / offline) form -----------------------------------------------------------
    def chunk_index(self, frames: int, device=None) -> torch.Tensor:
        return torch.arange(frames, device=device) // self.config.chunk_frames

    def context_mask(self, frames: int, device=None) -> torch.Tensor:
        """[T,T] context query -> context key: same chunk or one of the `context_chunks − 1` chunks before."""
        chunk = self.chunk_index(frames, device)
        distance = chunk[:, None] - chunk[None, :]
        return (distance >= 0) & (distance < self.config.context_chunks)

    def full_mask(self, frames: int, device=None) -> torch.Tensor:
        """[2T,2T] for tokens [context ‖ state]: state tokens see the context window and their own chunk's states."""
        context = self.context_mask(frames, device)
        chunk = self.chunk_index(frames, device)
        same_chunk = chunk[:, None] == chunk[None, :]
        top = torch.cat([context, torch.zeros_like(context)], dim=1)
        bottom = torch.cat([context, same_chunk], dim=1)
        return torch.cat([top, bottom], dim=0)

    @staticmethod
    def clean_state(output: torch.Tensor) -> torch.Tensor:
        """The network's estimate of x1 (2·mask − 1), bounded like x1."""
        return torch.tanh(output)

    def velocity(self, output: torch.Tensor, state: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Flow velocity implied by the x1 estimate at (x_t, t); t < 1 on every solver grid."""
        return (self.clean_state(output) - state) / (1 - t).clamp_min(1e-3)

    def clean_state_parallel(self, tokens: torch.Tensor, state: torch.Tensor, time: torch.Tensor,
                             prompt: PromptMemory) -> torch.Tensor:
        """Training form: tokens [B,T,D] from `frame_tokens`, state x_t [B,T,bins], time [B,T] -> x̂1 [B,T,bins]."""
        batch, frames, _ = tokens.shape
        context = tokens + self.context_embedding
        noisy = tokens + self.state_proj(state)
        positions = torch.arange(frames, device=tokens.device).repeat(2).expand(batch, -1)
        times = torch.cat([torch.ones_like(time), time], dim=1)
        mask = self.full_mask(frames, tokens.device)[None, None]
        out, _ = self.network(torch.cat([context, noisy], 1), times, positions, prompt, mask)
        return self.clean_state(out[:, frames:])

    def context_keys_values(self, tokens: torch.Tensor, prompt: PromptMemory,
                            fused: FusedDiT | None = None) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Offline: every frame's context-token K/V per layer in one causal pass."""
        batch, frames, _ = tokens.shape
        positions = torch.arange(frames, device=tokens.device).expand(batch, -1)
        mask = self.context_mask(frames, tokens.device)[None, None]
        _, kv = self.network(tokens + self.context_embedding, torch.ones(batch, frames, device=tokens.device),
                             positions, prompt, mask, fused=fused)
        return kv

    def state_velocity(self, tokens: torch.Tensor, state: torch.Tensor, t: torch.Tensor, prompt: PromptMemory,
                       context_kv: list[tuple[torch.Tensor, torch.Tensor]],
                       fused: FusedDiT | None = None) -> torch.Tensor:
        """Offline: state tokens of all chunks at time t against precomputed context K/V -> velocity [B,T,bins]."""
        batch, frames, _ = tokens.shape
        chunk = self.chunk_index(frames, tokens.device)
        mask = torch.cat([self.context_mask(frames, tokens.device), chunk[:, None] == chunk[None, :]], dim=1)
        positions = torch.arange(frames, device=tokens.device).expand(batch, -1)
        out, _ = self.network(tokens + self.state_proj(state), t.expand(batch, frames), positions, prompt,
                              mask[None, None], past=context_kv, fused=fused)
        return self.velocity(out, state, t)


# -- streaming state ------------------------------------------------------------------------------------------
@dataclass
class StreamState:
    """Everything one session carries between `stream_step` calls (explicit, moshi-style)."""

    prompt: PromptMemory  # batch of 1
    anchors: list[tuple[int, range]]  # (anchor id, frames) in the order given; later spans win
    noise: np.random.Generator
    input_tail: np.ndarray  # last n_fft − hop input samples (the next frame's first half)
    mixture_delay: np.ndarray  # the last delay_samples input samples (residual = delayed mixture − target)
    ola_tail: np.ndarray  # overlap-add carry into the next chunk
    pending_spectra: list[torch.Tensor] = field(default_factory=list)  # frames not yet separated, each [bins]
    pending_features: list[torch.Tensor] = field(default_factory=list)
    context_kv: list[tuple[torch.Tensor, torch.Tensor]] | None = None  # per layer [1,H,P,hd], P <= window
    next_frame: int = 0  # index of the first pending frame
    emitted: int = 0  # output samples emitted so far
    mask_floor: Floor = 0.0  # the share of the mixture this session's mask keeps at least (`EmbeddedSeparator._mask`)
    mask_weight: Floor = 1.0  # the share of this network's mask in a blend of general networks (composite.Blend)


class EmbeddedSeparator:
    """The `Separator` for the embedded model, plus the chunk-step streaming API used by the engine."""

    def __init__(self, model: EmbeddedModel, text_encoder=None, noise_seed: int = 0, mask_floor: Floor = 0.0):
        from samstream.model.text import PromptCache

        self.model = model.eval()
        self.fused = FusedDiT(model.dit)  # the network's inference form: built from the weights as they are now
        self.config = model.config
        self.sample_rate = self.config.sample_rate
        self.chunk_samples = self.config.chunk_samples
        self.delay_samples = self.config.delay_samples
        self.noise_seed = noise_seed
        self.mask_floor = check_floor(mask_floor, "mask_floor")
        self._text_encoder = text_encoder
        self._prompts = PromptCache(text_encoder) if text_encoder is not None else None
        self._time_cond: dict[float, tuple[torch.Tensor, torch.Tensor]] = {}

    @torch.inference_mode()
    def time_conditioning(self, t: float, frames: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(e, t_block) for `frames` tokens at time t, [1,frames,·]; cached per t (the solver's grid repeats)."""
        if t not in self._time_cond:
            e, t_block = self.model.dit.time_conditioning(torch.tensor([[t]], dtype=torch.float32))
            self._time_cond[t] = (e, t_block)
        e, t_block = self._time_cond[t]
        return e.expand(1, frames, -1), t_block.expand(1, frames, -1)

    # -- prompts ----------------------------------------------------------------------------------------
    def text_vectors(self, prompts: Sequence[str]) -> torch.Tensor:
        if self._prompts is None:
            from samstream.model.text import MiniLMTextEncoder, PromptCache

            self._text_encoder = MiniLMTextEncoder()
            self._prompts = PromptCache(self._text_encoder)
        features, _ = self._prompts.get(list(prompts))
        return features[:, 0]

    @torch.inference_mode()
    def prompt_memory(self, prompt: str | None, example: np.ndarray | None) -> PromptMemory:
        if prompt is not None and not prompt.strip():
            prompt = None
        text = self.text_vectors([prompt]) if prompt is not None else None
        encoded = None
        if example is not None:
            wav = self._model_rate(example[0], example[1]) if isinstance(example, tuple) else to_mono(example)
            spectra = clip_spectra(wav[None], self.config)
            encoded = self.model.encode_example(spectra, torch.ones(spectra.shape[:2], dtype=torch.bool))
        return self.model.prompt_memory(text, encoded, batch=1)

    def _model_rate(self, audio, sample_rate: int) -> torch.Tensor:
        return resample(to_mono(audio), check_sample_rate(sample_rate), self.sample_rate)

    def anchor_list(self, spans: Sequence[Span]) -> list[tuple[int, range]]:
        ids = {"+": POSITIVE, "-": NEGATIVE}
        out = []
        for token, start, end in map(validate_span, spans):
            out.append((ids[token], span_frames(start, end, self.sample_rate, self.config.hop)))
        return out

    @staticmethod
    def anchor_ids(anchors: list[tuple[int, range]], first: int, count: int) -> torch.Tensor:
        ids = torch.full((count,), NULL, dtype=torch.long)
        for token, frames in anchors:
            lo, hi = max(frames.start, first), min(frames.stop, first + count)
            if lo < hi:
                ids[lo - first : hi - first] = token
        return ids

    # -- offline ----------------------------------------------------------------------------------------
    @torch.inference_mode()
    def separate(self, audio, sample_rate: int, prompt: str | None = None, spans: Sequence[Span] = (),
                 example=None, steps: int | None = None, progress: bool = False) -> Separation:
        """Offline causal run: the same function as streaming over the whole file (one parallel pass per step).

        `example` is an example clip (array at `sample_rate`, or (array, rate)) of the sound to extract.
        """
        sample_rate = check_sample_rate(sample_rate)
        if prompt is None and not spans and example is None:
            raise PromptError("give a prompt: text, a time span, or an audio example")
        mono = to_mono(audio)
        wav = resample(mono, sample_rate, self.sample_rate)
        if isinstance(example, np.ndarray) or torch.is_tensor(example):
            example = (example, sample_rate)
        target = self.separate_model_rate(wav, prompt, spans, example, steps)
        target = resample(torch.from_numpy(target), self.sample_rate, sample_rate)
        target = fit_length(target, mono.shape[-1])
        return Separation(target, mono.numpy() - target, sample_rate)

    @torch.inference_mode()
    def separate_model_rate(self, wav: torch.Tensor, prompt: str | None, spans: Sequence[Span], example,
                            steps: int | None = None) -> np.ndarray:
        """Target waveform [S] for a model-rate mono waveform [S] (numpy float32)."""
        c = self.config
        memory = self.prompt_memory(prompt, example)
        overlap = c.n_fft - c.hop
        total = wav.shape[-1]
        # frames 0..J cover every output sample; round up to whole chunks, plus the look-ahead frames
        frames = -(-(-(-total // c.hop) + 1) // c.chunk_frames) * c.chunk_frames
        needed = frames + c.lookahead_frames
        padded = F.pad(wav[None], (overlap, (needed - 1) * c.hop + c.n_fft - overlap - total))
        spectra = analysis_frames(padded, c.n_fft, c.hop)  # [1, needed, bins]
        features = with_lookahead(log_magnitude(spectra), c.lookahead_frames)
        anchors = self.anchor_ids(self.anchor_list(spans), 0, frames)[None]
        tokens = self.model.frame_tokens(features, anchors)
        noise = torch.from_numpy(np.random.default_rng(self.noise_seed).standard_normal((frames, c.bins),
                                                                                         dtype=np.float32))[None]
        mask = self.solve_mask(tokens, noise, memory, steps)
        out = overlap_add(synthesis_frames(spectra[:, :frames] * mask, c.n_fft), c.hop)
        return out[0, overlap : overlap + total].numpy()

    def solve_mask(self, tokens, noise, memory: PromptMemory, steps: int | None) -> torch.Tensor:
        context_kv = self.model.context_keys_values(tokens, memory, self.fused)
        solver = SolverConfig(self.config.method, steps or self.config.steps)
        final = solve(lambda t, x: self.model.state_velocity(tokens, x, t, memory, context_kv, self.fused), noise,
                      solver)
        return self._mask(final)

    def _mask(self, state: torch.Tensor, floors: list[Floor] | None = None,
              weights: list[Floor] | None = None) -> torch.Tensor:
        """The solver's final state [N, frames, bins] as a mask, lifted to at least each row's floor (default
        `mask_floor` for every row): where the network cannot find the target, a floor keeps that much of the
        mixture instead of a confidently wrong silence; then times each row's weight in a blend, if any."""
        floors = floors or [self.mask_floor] * state.shape[0]
        c = self.config
        floor = torch.stack([floor_per_bin(f, c.bins, self.sample_rate, c.n_fft) for f in floors])[:, None, :]
        mask = floor + (1.0 - floor) * state_to_mask(state)
        if weights is not None and any(weight != 1.0 for weight in weights):
            mask = mask * torch.stack([floor_per_bin(w, c.bins, self.sample_rate, c.n_fft) for w in weights])[:, None]
        return mask

    # -- streaming --------------------------------------------------------------------------------------
    @torch.inference_mode()
    def stream_file(self, wav: np.ndarray, prompt: str | None = None, spans: Sequence[Span] = (), example=None,
                    steps: int | None = None) -> np.ndarray:
        """Model-rate mono [S] through `stream_step` chunk by chunk -> the target [S], realigned by the delay."""
        state = self.init_stream(prompt, spans, example)
        count = -(-(len(wav) + self.delay_samples) // self.chunk_samples)
        padded = np.zeros(count * self.chunk_samples, np.float32)
        padded[: len(wav)] = wav
        chunks = padded.reshape(count, 1, self.chunk_samples)
        out = np.concatenate([self.stream_step([state], chunk, steps)[0, 0] for chunk in chunks])
        return out[self.delay_samples : self.delay_samples + len(wav)]

    def init_stream(self, prompt: str | None = None, spans: Sequence[Span] = (), example=None,
                    example_rate: int | None = None, mask_floor: Floor | None = None,
                    mask_weight: Floor = 1.0) -> StreamState:
        """A fresh session. `example` is an example clip at `example_rate` (default: the model rate), or a
        (clip, rate) pair; `mask_floor` overrides the separator's for this session; `mask_weight` is its mask's
        share in a blend of networks."""
        if prompt is None and not spans and example is None:
            raise PromptError("give a prompt: text, a time span, or an audio example")
        if example is not None and not isinstance(example, tuple):
            example = (example, example_rate or self.sample_rate)
        c = self.config
        return StreamState(
            prompt=self.prompt_memory(prompt, example),
            anchors=self.anchor_list(spans),
            noise=np.random.default_rng(self.noise_seed),
            input_tail=np.zeros(c.n_fft - c.hop, dtype=np.float32),
            mixture_delay=np.zeros(self.delay_samples, dtype=np.float32),
            ola_tail=np.zeros(c.n_fft - c.hop, dtype=np.float32),
            mask_floor=check_floor(self.mask_floor if mask_floor is None else mask_floor, "mask_floor"),
            mask_weight=check_floor(mask_weight, "mask_weight"),
        )

    def set_prompt(self, state: StreamState, prompt: str | None = None, spans: Sequence[Span] = (), example=None,
                   example_rate: int | None = None, mask_floor: Floor | None = None,
                   mask_weight: Floor = 1.0) -> None:
        """Switch a session to a new prompt from its next chunk. Cached context keys/values keep the old prompt's
        influence until they slide out of the attention window (the engine crossfades meanwhile)."""
        fresh = self.init_stream(prompt, spans, example, example_rate, mask_floor, mask_weight)
        state.prompt, state.anchors = fresh.prompt, fresh.anchors
        state.mask_floor, state.mask_weight = fresh.mask_floor, fresh.mask_weight

    @torch.inference_mode()
    def stream_step(self, states: list[StreamState], chunk: np.ndarray, steps: int | None = None) -> np.ndarray:
        """Advance every session by one chunk: chunk [N, chunk_samples] -> [N, 2, chunk_samples] (target, residual).

        Output sample n of a session is its input sample n − delay_samples (zeros before the start).
        """
        c = self.config
        chunk = np.asarray(chunk, dtype=np.float32)
        if chunk.ndim != 2 or chunk.shape != (len(states), self.chunk_samples):
            raise AudioInputError(f"stream_step needs a chunk of shape [{len(states)}, {self.chunk_samples}], "
                                  f"got {tuple(chunk.shape)}")
        # analysis: two new frames per session
        buffers = torch.from_numpy(np.stack([np.concatenate([s.input_tail, x]) for s, x in zip(states, chunk)]))
        spectra = analysis_frames(buffers, c.n_fft, c.hop)  # [N, chunk_frames, bins]
        features = log_magnitude(spectra)
        for i, state in enumerate(states):
            state.input_tail = chunk[i, -(c.n_fft - c.hop):].copy()
            state.pending_spectra.extend(spectra[i])
            state.pending_features.extend(features[i])
        ready = [i for i, s in enumerate(states) if len(s.pending_spectra) >= c.chunk_frames + c.lookahead_frames]
        targets = np.zeros((len(states), self.chunk_samples), dtype=np.float32)
        if ready:
            frames = self._separate_chunk([states[i] for i in ready], steps)
            for row, i in enumerate(ready):
                targets[i] = self._overlap_add(states[i], frames[row])
        out = np.empty((len(states), 2, self.chunk_samples), dtype=np.float32)
        for i, state in enumerate(states):
            delayed = np.concatenate([state.mixture_delay, chunk[i]])
            state.mixture_delay = delayed[self.chunk_samples:]
            mixture = delayed[: self.chunk_samples]
            out[i, 0] = targets[i]
            out[i, 1] = mixture - targets[i]
            state.emitted += self.chunk_samples
        return out

    def _overlap_add(self, state: StreamState, frames: torch.Tensor) -> np.ndarray:
        """Windowed frames [chunk_frames, n_fft] of the chunk just separated -> its chunk_samples finished samples."""
        c = self.config
        span = overlap_add(frames[None], c.hop)[0].numpy()  # [chunk_samples + n_fft − hop]
        span[: c.n_fft - c.hop] += state.ola_tail
        state.ola_tail = span[self.chunk_samples:].copy()
        done = span[: self.chunk_samples].copy()
        # the first n_fft − hop samples of the very first chunk lie before the stream's start
        before_start = self.delay_samples - state.emitted
        if before_start > 0:
            done[:before_start] = 0.0
        return done

    def _separate_chunk(self, states: list[StreamState], steps: int | None) -> torch.Tensor:
        """One chunk for each session (batched): sampling steps + caching its context K/V -> windowed frames."""
        c, model = self.config, self.model
        count, frames_c = len(states), c.chunk_frames
        features = torch.stack([torch.stack(s.pending_features[: frames_c + c.lookahead_frames]) for s in states])
        features = with_lookahead(features, c.lookahead_frames)
        anchors = torch.stack([self.anchor_ids(s.anchors, s.next_frame, frames_c) for s in states])
        tokens = model.frame_tokens(features, anchors)
        positions = torch.stack([torch.arange(s.next_frame, s.next_frame + frames_c) for s in states])
        prompt = states[0].prompt if count == 1 else PromptMemory(
            [tuple(torch.cat([s.prompt.cross_kv[layer][j] for s in states]) for j in range(2))
             for layer in range(c.n_layers)], torch.cat([s.prompt.mask for s in states]))
        past, past_valid = self._gather_past(states)
        noise = torch.from_numpy(np.stack([s.noise.standard_normal((frames_c, c.bins), dtype=np.float32)
                                           for s in states]))
        solver = SolverConfig(c.method, steps or c.steps)
        context = tokens + model.context_embedding
        new_context_kv = None

        def velocity(t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
            nonlocal past, past_valid, new_context_kv
            noisy = tokens + model.state_proj(x)
            state_time = self.time_conditioning(float(t), frames_c)
            if new_context_kv is None:
                # first evaluation: this chunk's context tokens ride along and get cached
                own = torch.ones(frames_c, frames_c, dtype=torch.bool)
                rows_context = torch.cat([own, torch.zeros_like(own)], 1)
                local = torch.cat([rows_context, torch.cat([own, own], 1)], 0)
                mask = torch.cat([past_valid[:, None, None, :].expand(-1, 1, 2 * frames_c, -1),
                                  local.expand(count, 1, -1, -1)], dim=-1)
                context_time = self.time_conditioning(1.0, frames_c)
                time_cond = tuple(torch.cat([a, b], 1) for a, b in zip(context_time, state_time))
                out, kv = model.network(torch.cat([context, noisy], 1), None, positions.repeat(1, 2), prompt, mask,
                                        past, time_cond, self.fused)
                new_context_kv = [(k[:, :, :frames_c], v[:, :, :frames_c]) for k, v in kv]
                past = [(torch.cat([pk, k], 2), torch.cat([pv, v], 2)) for (pk, pv), (k, v) in zip(past, new_context_kv)]
                past_valid = torch.cat([past_valid, torch.ones(count, frames_c, dtype=torch.bool)], 1)
                return model.velocity(out[:, frames_c:], x, t)
            mask = torch.cat([past_valid[:, None, None, :].expand(-1, 1, frames_c, -1),
                              torch.ones(count, 1, frames_c, frames_c, dtype=torch.bool)], dim=-1)
            # the state tokens' own keys come last; `past` already holds this chunk's context tokens
            out, _ = model.network(noisy, None, positions, prompt, mask, past, state_time, self.fused)
            return model.velocity(out, x, t)

        mask = self._mask(solve(velocity, noise, solver), [s.mask_floor for s in states],
                          [s.mask_weight for s in states])
        spectra = torch.stack([torch.stack(s.pending_spectra[:frames_c]) for s in states])
        keep = (c.context_chunks - 1) * frames_c
        for row, state in enumerate(states):
            state.context_kv = [(k[row : row + 1, :, -keep:], v[row : row + 1, :, -keep:]) for k, v in
                                self._trim(past, past_valid[row])] if keep > 0 else None
            del state.pending_spectra[:frames_c], state.pending_features[:frames_c]
            state.next_frame += frames_c
        return synthesis_frames(spectra * mask, c.n_fft)

    def _trim(self, past, valid_row):
        """This session's valid cached frames (drops the left padding added for batching)."""
        count = int(valid_row.sum())
        return [(k[:, :, -count:], v[:, :, -count:]) if count else (k[:, :, :0], v[:, :, :0]) for k, v in past]

    def _gather_past(self, states: list[StreamState]):
        """Batch the sessions' cached context K/V, left-padded to a common length; -> (past, valid [N,P])."""
        c = self.config
        lengths = [0 if s.context_kv is None else s.context_kv[0][0].shape[2] for s in states]
        longest = max(lengths)
        if len(states) == 1 and longest > 0:  # one stream: its cache as it is (no padding to batch)
            return list(states[0].context_kv), torch.ones(1, longest, dtype=torch.bool)
        heads, head_dim = c.n_heads, c.dim // c.n_heads
        past = []
        for layer in range(c.n_layers):
            keys, values = [], []
            for s, length in zip(states, lengths):
                pad = torch.zeros(1, heads, longest - length, head_dim)
                k, v = s.context_kv[layer] if s.context_kv is not None else (pad[:, :, :0], pad[:, :, :0])
                keys.append(torch.cat([pad, k], 2) if longest > length else k)
                values.append(torch.cat([pad, v], 2) if longest > length else v)
            past.append((torch.cat(keys), torch.cat(values)))
        valid = torch.arange(longest)[None] >= (longest - torch.tensor(lengths))[:, None]
        return past, valid


# -- packaged weights ---------------------------------------------------------------------------------------------
def save_embedded(model: EmbeddedModel, path: str | Path, metadata: dict | None = None) -> None:
    """Weights as safetensors + the config as `<stem>.json` beside them."""
    save_weights(model, path, {"config": asdict(model.config), **(metadata or {})})


def load_embedded_model(path: str | Path) -> EmbeddedModel:
    return load_weights(path, "the embedded model", lambda config: EmbeddedModel(EmbeddedConfig.from_dict(config)))


def shipped_weights() -> Path:
    """The packaged general weights (`model/weights/tiny.safetensors`)."""
    return WEIGHTS_DIR / "tiny.safetensors"


def load_embedded(path: str | Path | None = None, text_encoder=None, mask_floor: Floor = 0.0) -> EmbeddedSeparator:
    """The packaged default model (`shipped_weights()`), or a weights file saved by training."""
    return EmbeddedSeparator(load_embedded_model(path or shipped_weights()), text_encoder, mask_floor=mask_floor)
