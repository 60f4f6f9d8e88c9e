"""Offline separation: `separate(audio, sample_rate, prompt)` -> target and residual.

`Separation` and the `Separator` protocol are what every command, the evaluator and the streaming
engine's offline references use; `SAMAudioSeparator` implements them for official SAM Audio
checkpoints, reproducing the reference `SAMAudio.separate()` (parity-tested) and adding what users need:
mono downmix, resampling to the model rate and back, output of the input's exact length, batching,
span prompts in seconds, visual-mask prompts (`MaskedVideo`, model/video.py), a choice of ODE solver and
step count, and progress. With side models (model/components.py, loaded on first use):
- `predict_spans=True`: PE-A-Frame turns the text prompt into "+" anchors on the mixture latents, exactly
  as the official pipeline with the upstream fix of PR #100 (the January 2026 release computed them and
  then ignored them); spans the user gives take precedence, as upstream;
- `candidates=K`: K separations from different noise, the best by the SAM Audio Judge's overall score,
  as the official release reranks text prompts (the Judge is its text ranker; CLAP and the ensemble
  weights are not implemented). K times the DiT and decoder cost, plus one Judge pass over K pairs.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import TYPE_CHECKING, Protocol, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from samstream.model.anchors import Span, anchor_tokens
from samstream.model.audio import check_sample_rate, resample, to_mono
from samstream.model.errors import AudioInputError, PromptError
from samstream.model.sam_audio import SAMAudio
from samstream.model.sampling import SolverConfig, solve
from samstream.model.text import PromptCache, TextEncoder
from samstream.model.video import MaskedVideo

if TYPE_CHECKING:
    from samstream.model.components import SideModels

NO_SIDE_MODELS = ("{what} needs the {component}, and no side models were configured for this separator; "
                  "load it with side models (e.g. the command line's {flag} DIR)")
NO_VISION_ENCODER = (
    "this SAM Audio model has no vision encoder: its checkpoint holds no vision_encoder.model.* (PE-Core) "
    "tensors, so visual-mask prompts cannot be used. Use a checkpoint that includes them (the official "
    "checkpoint.pt files do), or prompt with text or spans instead"
)


@dataclass
class Separation:
    target: np.ndarray  # [samples] float32 at `sample_rate`
    residual: np.ndarray
    sample_rate: int
    predicted_spans: list[Span] | None = None  # the "+" anchors the span predictor made (predict_spans)
    candidate_scores: list[float] | None = None  # the Judge's overall score of each candidate (candidates > 1)


class Separator(Protocol):
    sample_rate: int  # the model's own rate

    def separate(self, audio, sample_rate: int, prompt: str | None = None, spans: Sequence[Span] = ()) -> Separation:
        ...


@dataclass
class SamplingInputs:
    """Everything one SAM Audio sampling run conditions on, at the model's frame rate."""

    audio_features: torch.Tensor  # [B,T,2C] = z_mix ‖ z_mix
    pad_mask: torch.Tensor  # [B,T] True = valid frame
    text_features: torch.Tensor | None  # [B,L,text_dim]
    text_mask: torch.Tensor | None  # [B,L]
    anchor_ids: torch.Tensor  # [B,N]
    anchor_alignment: torch.Tensor  # [B,T]
    video_features: torch.Tensor  # [B,vision_dim,T] (zeros when no video, as the reference feeds)


class SAMAudioSeparator:
    def __init__(
        self,
        model: SAMAudio,
        text_encoder: TextEncoder | None = None,
        solver: SolverConfig = SolverConfig(),
        missing_text_encoder: str | None = None,
        side_models: "SideModels | None" = None,
    ):
        """`missing_text_encoder` is the message to give when a text prompt arrives without an encoder;
        `side_models` supplies the span predictor and the Judge when a call asks for them."""
        self.model = model
        self.side_models = side_models
        self.prompts = PromptCache(text_encoder) if text_encoder is not None else None
        self.solver = solver
        self.missing_text_encoder = missing_text_encoder or (
            "this model has no text encoder loaded, so text prompts cannot be used; span prompts work without it"
        )
        self.sample_rate = model.config.audio_codec.sample_rate
        self.hop = model.audio_codec.hop_length

    # -- the reference pipeline, at the model rate --------------------------------------------------------
    def encode_text(self, prompts: Sequence[str | None]) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        if all(p is None for p in prompts):
            return None, None
        if self.prompts is None:
            raise PromptError(self.missing_text_encoder)
        # The reference encodes "" for items without a description (T5 then yields only the EOS token).
        return self.prompts.get([p if p is not None else "" for p in prompts])

    @property
    def has_vision(self) -> bool:
        return self.model.vision_encoder is not None

    def require_vision(self) -> None:
        if not self.has_vision:
            raise PromptError(NO_VISION_ENCODER)

    @torch.inference_mode()
    def video_features(self, videos: Sequence[MaskedVideo | None] | None, frames: Sequence[int],
                       total: int, progress: bool = False) -> torch.Tensor:
        """[B, vision_dim, total]: PE-Core features of each item's masked frames, one per latent frame; zeros for
        items without video and for padded frames (what the reference feeds when there is no video)."""
        weight = self.model.proj.weight
        out = torch.zeros(len(frames), self.model.config.vision_dim, total, dtype=weight.dtype, device=weight.device)
        if videos is None or all(v is None for v in videos):
            return out
        self.require_vision()
        for row, (video, count) in enumerate(zip(videos, frames)):
            if video is not None:
                chosen = video.frames_for_latents(count, self.hop, self.sample_rate)
                out[row, :, :count] = self.model.vision_encoder.encode_frames(chosen, progress=progress).T
        return out

    @torch.inference_mode()
    def prepare(
        self,
        waveforms: Sequence[torch.Tensor],
        prompts: Sequence[str | None],
        spans: Sequence[Sequence[Span]] | None,
        videos: Sequence[MaskedVideo | None] | None = None,
        progress: bool = False,
    ) -> SamplingInputs:
        """Zero-pad a batch of model-rate waveforms, encode the mixture, prompts, spans and masked videos."""
        lengths = [w.shape[-1] for w in waveforms]
        # A test-size codec can only decode frame counts that are multiples of decode_frame_multiple (1 for the
        # released codec, which therefore pads exactly like the reference): extra frames are padding.
        multiple = self.model.audio_codec.decode_frame_multiple
        frames_total = -(-max(lengths) // self.hop)
        if frames_total % multiple:
            length = -(-frames_total // multiple) * multiple * self.hop
        else:
            length = max(lengths)
        padded = torch.zeros(len(waveforms), 1, length)
        for i, wav in enumerate(waveforms):
            padded[i, 0, : wav.shape[-1]] = wav
        latent = self.model.audio_codec.encode(padded.to(self.model.proj.weight.dtype))  # [B,C,T]
        frames = [-(-n // self.hop) for n in lengths]
        total = latent.shape[-1]
        pad_mask = torch.arange(total)[None] < torch.tensor(frames)[:, None]
        z = latent.transpose(1, 2)
        tokens = anchor_tokens(
            [list(s) for s in spans] if spans is not None else None, frames, total, self.sample_rate, self.hop
        )
        text_features, text_mask = self.encode_text(prompts)
        video = self.video_features(videos, frames, total, progress)
        return SamplingInputs(torch.cat([z, z], -1), pad_mask, text_features, text_mask, tokens.ids,
                              tokens.alignment, video)

    @torch.inference_mode()
    def sample(
        self,
        inputs: SamplingInputs,
        noise: torch.Tensor | None = None,
        solver: SolverConfig | None = None,
        generator: torch.Generator | None = None,
        progress: bool = False,
    ) -> torch.Tensor:
        """Integrate the flow from noise to the [B,T,2C] target ‖ residual latents."""
        solver = solver or self.solver
        model = self.model
        dtype = model.proj.weight.dtype
        if noise is None:
            noise = torch.randn(inputs.audio_features.shape, generator=generator)
        conditioning = model.frame_conditioning(
            inputs.audio_features, inputs.video_features, inputs.anchor_ids, inputs.anchor_alignment
        )
        text = inputs.text_features.to(dtype) if inputs.text_features is not None else None
        batch = noise.shape[0]
        # Time- and prompt-dependent pieces are computed once per evaluation time, not per evaluation.
        per_time = {}
        for t in solver.evaluation_times():
            times = t.expand(batch)
            memory = model.memory(text, times)
            per_time[float(t)] = (model.transformer.cross_keys_values(memory), model.transformer.time_conditioning(times))

        from tqdm import tqdm

        bar = tqdm(total=solver.steps, desc="sampling", unit="step", disable=not progress, leave=False)

        def velocity(t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
            cross_kv, time_cond = per_time[float(t)]
            return model.velocity(x, t.expand(batch), conditioning, None, inputs.text_mask, inputs.pad_mask,
                                  cross_kv=cross_kv, time_cond=time_cond)

        final = solve(velocity, noise.to(dtype), solver, on_step=lambda k, x: bar.update())
        bar.close()
        return final.float()

    @torch.inference_mode()
    def decode(self, state: torch.Tensor, message: torch.Tensor | None = None) -> torch.Tensor:
        """[B,T,2C] -> [B,2,T*hop] waveforms (target, residual), decoded in one interleaved batch."""
        batch, frames, width = state.shape
        latents = state.transpose(1, 2).reshape(2 * batch, width // 2, frames)
        wav = self.model.audio_codec.decode(latents.to(self.model.proj.weight.dtype), message=message)
        return wav.float().view(batch, 2, -1)

    # -- span prediction and reranking -------------------------------------------------------------------
    def side_model(self, component: str, what: str):
        from samstream.model.components import JUDGE, SPAN_PREDICTOR

        kind = {"span predictor": SPAN_PREDICTOR, "judge": JUDGE}[component]
        if self.side_models is None:
            raise PromptError(NO_SIDE_MODELS.format(what=what, component=kind.name, flag=kind.flag))
        return self.side_models.span_predictor() if component == "span predictor" else self.side_models.judge()

    @torch.inference_mode()
    def predict_spans(self, inputs: SamplingInputs, prompts: Sequence[str | None], lengths: Sequence[int]
                      ) -> tuple[SamplingInputs, list[list[Span]]]:
        """PE-A-Frame on the mixture latents and the prompt -> the inputs with "+" anchors in place of <null>,
        and the anchors. The official processor's conversion is kept: float32 seconds -> ceil(t*sr/hop) frames."""
        if any(not p for p in prompts):
            raise PromptError("span prediction (--predict-spans) needs a text prompt for every clip")
        predictor = self.side_model("span predictor", "span prediction (--predict-spans)")
        if abs(predictor.seconds_per_frame - self.hop / self.sample_rate) > 1e-9:
            raise PromptError(f"the span predictor works at {1 / predictor.seconds_per_frame:g} frames/s but this "
                              f"SAM Audio model at {self.sample_rate / self.hop:g}: they do not belong together")
        frames = [-(-n // self.hop) for n in lengths]
        official = max(frames)  # the reference's frame count (a test codec may have padded further)
        channels = self.model.config.latent_channels
        latents = inputs.audio_features[:, :official, :channels]
        anchors = predictor.predict(latents, inputs.pad_mask[:, :official], list(prompts)).anchor_spans()
        total = inputs.audio_features.shape[1]
        tokens = anchor_tokens(anchors, frames, total, self.sample_rate, self.hop)
        return replace(inputs, anchor_ids=tokens.ids, anchor_alignment=tokens.alignment), anchors

    @torch.inference_mode()
    def rerank(self, wav: torch.Tensor, mixtures: Sequence[torch.Tensor], prompts: Sequence[str], candidates: int
               ) -> tuple[torch.Tensor, torch.Tensor]:
        """wav [B*K,2,S] (rows b0c0, b0c1, ...) -> the best candidate's [B,2,S] by the Judge's overall score, and all
        scores [B,K]. As upstream: each candidate target is cut to its clip's whole latent frames, each mixture is
        the zero-padded batch input cut likewise, and all B*K pairs are scored in one Judge batch."""
        judge = self.side_model("judge", "reranking (--candidates)")
        width = max(m.shape[-1] for m in mixtures)
        pairs_mix, pairs_target = [], []
        for index, mixture in enumerate(mixtures):
            size = -(-mixture.shape[-1] // self.hop) * self.hop
            cut = F.pad(mixture, (0, min(size, width) - mixture.shape[-1]))
            for k in range(candidates):
                pairs_mix.append(resample(cut, self.sample_rate, judge.sample_rate))
                pairs_target.append(resample(wav[index * candidates + k, 0, :size], self.sample_rate, judge.sample_rate))
        texts = [p for p in prompts for _ in range(candidates)]
        scores = judge.score_tensor(pairs_mix, pairs_target, texts)[:, 0].view(len(mixtures), candidates)
        best = scores.argmax(1)
        return wav.view(len(mixtures), candidates, *wav.shape[1:])[torch.arange(len(mixtures)), best], scores

    # -- the user-facing API ---------------------------------------------------------------------------
    def separate(self, audio, sample_rate: int, prompt: str | None = None, spans: Sequence[Span] = (),
                 noise: torch.Tensor | None = None, solver: SolverConfig | None = None, seed: int = 0,
                 progress: bool = False, masked_video: MaskedVideo | np.ndarray | torch.Tensor | None = None,
                 predict_spans: bool = False, candidates: int = 1) -> Separation:
        """`masked_video`: a visual prompt (`MaskedVideo(frames, mask)`; a bare uint8 [T,H,W,3] array is taken as
        frames already masked, spread evenly over the audio). Needs a checkpoint with the PE-Core vision tower.
        `predict_spans`, `candidates`: see the module docstring (they need `side_models`)."""
        return self.separate_batch([audio], sample_rate, [prompt], [spans], noise=noise, solver=solver,
                                   seed=seed, progress=progress, masked_videos=[masked_video],
                                   predict_spans=predict_spans, candidates=candidates)[0]

    def separate_batch(self, audios: Sequence, sample_rate: int, prompts: Sequence[str | None],
                       spans: Sequence[Sequence[Span]] | None = None, noise: torch.Tensor | None = None,
                       solver: SolverConfig | None = None, seed: int = 0, progress: bool = False,
                       masked_videos: Sequence[MaskedVideo | np.ndarray | torch.Tensor | None] | None = None,
                       predict_spans: bool = False, candidates: int = 1) -> list[Separation]:
        """Separate several clips at once (padded to the longest); each result has its input's length and rate.
        `masked_videos`: one visual prompt or None per clip (clips without one get the no-video features).
        `noise`, when given, has one row per clip and candidate ([B*K,T,2C], rows b0c0, b0c1, ...)."""
        sample_rate = check_sample_rate(sample_rate)
        if candidates < 1:
            raise PromptError(f"candidates must be at least 1, got {candidates}")
        if candidates > 1 and any(not p for p in prompts):
            raise PromptError("reranking (--candidates) scores the separations against the text prompt; give one "
                              "for every clip")
        if len(prompts) != len(audios):
            raise PromptError(f"{len(audios)} audio clips but {len(prompts)} prompts")
        if masked_videos is not None:
            if len(masked_videos) != len(audios):
                raise PromptError(f"{len(audios)} audio clips but {len(masked_videos)} masked videos")
            masked_videos = [v if v is None or isinstance(v, MaskedVideo) else MaskedVideo(v) for v in masked_videos]
            if any(v is not None for v in masked_videos):
                self.require_vision()
        mono = [to_mono(a) for a in audios]
        model_rate = [resample(w, sample_rate, self.sample_rate) for w in mono]
        for original, wav in zip(mono, model_rate):
            if wav.shape[-1] < 2 * self.hop:
                raise AudioInputError(
                    f"audio of {original.shape[-1]} samples ({original.shape[-1] / sample_rate * 1000:.1f} ms) is too "
                    f"short: SAM Audio needs at least {2 * self.hop / self.sample_rate * 1000:.0f} ms"
                )
        if spans is not None and not any(spans):
            spans = None  # no spans anywhere: the reference's no-anchor batch
        inputs = self.prepare(model_rate, prompts, spans, masked_videos, progress=progress)
        predicted = None
        if predict_spans and spans is None:  # spans the user gave win, as upstream
            inputs, predicted = self.predict_spans(inputs, prompts, [w.shape[-1] for w in model_rate])
        if candidates > 1:
            self.side_model("judge", "reranking (--candidates)")  # fail before sampling, not after
            inputs = SamplingInputs(*(None if value is None else value.repeat_interleave(candidates, 0)
                                      for value in (getattr(inputs, f.name) for f in fields(SamplingInputs))))
        generator = torch.Generator().manual_seed(seed)
        state = self.sample(inputs, noise=noise, solver=solver, generator=generator, progress=progress)
        wav = self.decode(state)
        scores = None
        if candidates > 1:
            wav, scores = self.rerank(wav, model_rate, prompts, candidates)
        results = []
        for i, original in enumerate(mono):
            n_model = model_rate[i].shape[-1]
            target, residual = (resample(wav[i, j, :n_model], self.sample_rate, sample_rate) for j in range(2))
            results.append(Separation(fit_length(target, original.shape[-1]), fit_length(residual, original.shape[-1]),
                                      sample_rate, predicted[i] if predicted is not None else None,
                                      scores[i].tolist() if scores is not None else None))
        return results


def fit_length(wav: torch.Tensor, length: int) -> np.ndarray:
    """Trim or zero-pad to exactly `length` samples (resampling round trips may be off by one)."""
    out = np.zeros(length, dtype=np.float32)
    n = min(length, wav.shape[-1])
    out[:n] = wav[:n].numpy()
    return out
