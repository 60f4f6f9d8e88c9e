"""One stream: mono PCM in at the client's rate, (target, residual) out at the same rate, at a fixed latency.

Data path (rates in brackets):

    push/feed ─► resampler in [client → model] ─► input ring [model] ─► one hop at a time
              ─► processor (or the batcher) ─► crossfade stage ─► resampler out [model → client]
              ─► output ring [client] ─► pull

Latency. Output sample n is the separation of input sample n − L, L = `latency_samples`, and the
first L output samples are pre-roll zeros (exactly: the output resampler's kernel reaches a few samples
back in time from the first real output, and those samples, which answer no input, are zeroed). L is
fixed when the session opens and is the sum of
  * the processor's algorithmic delay (`delay_samples`, model rate),
  * hop buffering (a hop is processed only once complete: up to hop − 1 samples),
  * both resamplers' worst-case hold-back (soxr releases its output in blocks, resample.py),
  * a compensation delay of < model_rate / gcd(model_rate, client_rate) model samples, so that the
    processor delay becomes a whole number of client samples (see `plan_latency`).
The output ring starts with enough zeros to cover the worst case of everything that can be owed at
once, so `push` always returns exactly as many samples as it was given. `flush` then returns the
last L samples: over a whole stream the output is the L pre-roll zeros followed by exactly one
output sample per input sample.

Residual. When the processor's residual is by construction the mixture minus its target
(`residual_is_complement`, the block-causal models), the session forms the residual at the client's
rate from the client's own samples: residual[n] = input[n − L] − target[n]. So target + residual is
the input exactly, delayed by L, including what lies above the model's band (a 48 kHz client's 8–24
kHz), and the stream equals an offline run that resamples only the target (e.g.
`CompositeSeparator.separate`). Other processors' residuals (SAM Audio generates both) are resampled
like the target.

Two ways to drive it. Synchronously, `push` feeds a frame, runs the processor on every complete
hop and returns the output (CLI file streaming, a microphone). Through the batcher, `feed` only
buffers; the batcher takes pending hops of many sessions (`begin_hop`), runs one batched
`process`, hands each session its rows (`end_hop`), and the transport `pull`s. A session is not
thread-safe: the batcher serialises access to it.
"""

from __future__ import annotations

import copy
import math
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

import numpy as np

from samstream.stream.crossfade import Crossfader
from samstream.stream.metrics import FULL, SessionMetrics
from samstream.stream.processor import ChunkProcessor, Prompt, StreamInputError, run_processor
from samstream.stream.quality import QualityMonitor
from samstream.stream.resample import DEFAULT_QUALITY, StreamResampler, check_rate
from samstream.stream.ringbuffer import RingBuffer


@dataclass(frozen=True)
class LatencyPlan:
    compensation: int  # model-rate zeros put before the processor output, so L is whole client samples
    preroll: int  # client-rate zeros the output starts with: covers hold-backs and hop buffering
    latency: int  # L = preroll + (processor delay + compensation) in client samples


def plan_latency(
    client_rate: int, model_rate: int, hop: int, delay: int, in_holdback: int, out_holdback: int
) -> LatencyPlan:
    """The fixed latency of a session (all arguments in samples at the rate their stage runs at).

    `in_holdback` is the input resampler's worst-case hold-back (model samples), `out_holdback` the
    output resampler's (client samples).
    """
    # (delay + compensation) model samples must be whole client samples: a multiple of `period`.
    period = model_rate // math.gcd(model_rate, client_rate)
    compensation = -delay % period
    aligned = (delay + compensation) * client_rate // model_rate
    # After n client samples, the model side holds at least n*model/client - in_holdback samples, of which
    # all but at most hop - 1 are processed; `compensation` zeros already stand in front of them; the
    # output resampler owes at most out_holdback. Pre-roll must cover what is left (integer ceil).
    owed_model = in_holdback + hop - 1 - compensation
    preroll = max(0, -(-owed_model * client_rate // model_rate) + out_holdback)
    return LatencyPlan(compensation=compensation, preroll=preroll, latency=preroll + aligned)


def check_frame(pcm: Any) -> np.ndarray:
    """A client frame as a contiguous float32 mono array, or a clear error."""
    if not isinstance(pcm, np.ndarray):
        raise StreamInputError(f"audio frames must be numpy arrays, got {type(pcm).__name__}")
    if pcm.dtype != np.float32:
        raise StreamInputError(
            f"audio frames must be float32 samples in [-1, 1], got {pcm.dtype} "
            "(convert int16 PCM with pcm.astype(np.float32) / 32768)"
        )
    if pcm.ndim != 1:
        raise StreamInputError(f"audio frames must be mono with shape (samples,), got shape {pcm.shape}")
    if not np.isfinite(pcm).all():
        raise StreamInputError("audio frame contains NaN or infinite samples")
    return np.ascontiguousarray(pcm)


@dataclass
class _Fade:
    """A crossfade in progress. A source is a processor state (its output) or None (the mixture)."""

    old: Any | None
    new: Any | None
    position: int = 0  # samples of the fade already played


class StreamSession:
    def __init__(
        self,
        processor: ChunkProcessor,
        client_rate: int,
        prompt: Prompt,
        *,
        quality: str = DEFAULT_QUALITY,
        crossfade_ms: float = 20.0,
        max_frame_s: float = 1.0,
        max_backlog_hops: int | None = None,
        quality_monitor: QualityMonitor | None = None,
        live: bool = True,
    ) -> None:
        """`quality_monitor`: score the output with the Judge now and then, off the audio path (stream/quality.py).
        `live`: the stream's pacing ("live": it may be degraded to keep up with the clock; False: "as fast as
        possible", a file: never degraded, its transport waits for room instead; see stream/batcher.py)."""
        self.processor = processor
        self.live = live
        self.client_rate = check_rate(client_rate, "client sample rate")
        self.model_rate = rate = processor.sample_rate
        self.hop = hop = processor.hop_samples
        self.delay = delay = processor.delay_samples
        self._in = StreamResampler(self.client_rate, rate, quality)
        self._out = StreamResampler(rate, self.client_rate, quality, channels=2)
        self.plan = plan_latency(self.client_rate, rate, hop, delay, self._in.delay_samples, self._out.delay_samples)
        self.latency_samples = self.plan.latency
        self.max_frame = math.ceil(max_frame_s * self.client_rate)
        self.max_backlog_hops = max_backlog_hops or math.ceil(2.0 * rate / hop)  # default: 2 s of audio
        # Zero hops appended at the end: the processor's own flush, then enough for the output
        # resampler's look-ahead, so the tail equals an offline run's.
        self._tail_hops = processor.flush_hops() + math.ceil(self._out.lookahead / hop)

        self.state = processor.init_state(prompt)
        self.prompt = prompt
        self._passthrough = False
        self._fade: _Fade | None = None
        self._crossfade = Crossfader(hop * max(1, math.ceil(crossfade_ms * rate / 1000 / hop)))

        # Input ring: `delay` samples of history in front, so the mixture handed out with each hop
        # lines up with the processor's (delayed) output for that hop.
        most_hops = self.max_backlog_hops + self._tail_hops + 2
        frame_model = math.ceil(self.max_frame * rate / self.client_rate)
        self._input = RingBuffer(delay + hop * most_hops + frame_model + self._in.delay_samples)
        self._input.write(np.zeros(delay, dtype=np.float32))
        out_model = self.plan.compensation + hop * most_hops + self._in.delay_samples + frame_model
        self._output = RingBuffer(
            self.plan.preroll + math.ceil(out_model * self.client_rate / rate) + self._out.delay_samples + 16, channels=2
        )
        self._output.write(np.zeros((self.plan.preroll, 2), dtype=np.float32))
        self._output.write(self._out.process(np.zeros((self.plan.compensation, 2), dtype=np.float32)))
        # The client's own input delayed by L, for a complement residual (module docstring).
        self.complement = bool(getattr(processor, "residual_is_complement", False))
        self._dry = RingBuffer(self.latency_samples + self._output.capacity) if self.complement else None
        if self._dry is not None:
            self._dry.write(np.zeros(self.latency_samples, dtype=np.float32))
        self._dry_scratch = np.empty(self.max_frame, dtype=np.float32)
        self._pulled = 0  # output samples handed out (the first L are pre-roll: zeros)
        self._produced = 0  # model-rate output samples produced (the first `delay` answer no input: zeros)

        self.audio = np.empty(hop, dtype=np.float32)  # the hop being processed, model rate
        # Pass-through output: the mixture as the target and silence as the residual, so target + residual is
        # still the mixture. `_mixture` (the hop's mixture, delayed like the output) is a view of row 0.
        self._mixture_out = np.zeros((2, hop), dtype=np.float32)
        self._mixture = self._mixture_out[0]
        self._frames = np.empty((hop, 2), dtype=np.float32)  # a hop of output, frame-major for the resampler
        self._sync_rows = np.empty((2, hop), dtype=np.float32)
        self._pull_scratch = np.empty((self.max_frame, 2), dtype=np.float32)
        self._fed = 0  # client samples received
        self._first_fed_at: float | None = None  # when the first sample came (the live clock's start)
        self._resampled = 0  # model samples the input resampler has returned for them
        self._hops_taken = 0
        self._ready_since: deque[tuple[int, float]] = deque()  # (hops ready after a feed, when it came)
        self._end_hop: int | None = None  # set by finish(): the hop count at which the stream ends
        self.done = False  # every output sample has been produced
        self.metrics = SessionMetrics(latency_ms=1000.0 * self.latency_samples / self.client_rate)
        self.quality = quality_monitor.tap(self.metrics, prompt, delay) if quality_monitor is not None else None

    # ---------------------------------------------------------------- input side

    @property
    def pending_hops(self) -> int:
        return (self._input.available - self.delay) // self.hop

    def feed(self, pcm: np.ndarray) -> None:
        """Buffer one client frame (at most `max_frame` samples, backlog permitting)."""
        pcm = check_frame(pcm)
        if len(pcm) > self.max_frame:
            raise StreamInputError(
                f"audio frame of {len(pcm)} samples is too long: send at most {self.max_frame} samples "
                f"({self.max_frame / self.client_rate:.2f} s) per frame"
            )
        if not self.has_room(len(pcm)):
            raise StreamInputError(
                f"stream backlog full: {self.pending_hops} hops wait for compute (limit {self.max_backlog_hops}); "
                "wait for output before sending more"
            )
        self._write(pcm)

    @property
    def samples_fed(self) -> int:
        """Client samples the stream has taken."""
        return self._fed

    def has_room(self, samples: int) -> bool:
        """Whether a frame of `samples` client samples fits the backlog now (`feed` would take it)."""
        # At most what the resampler owes once it has seen this frame (it never runs ahead of the input).
        incoming = -(-(self._fed + samples) * self.model_rate // self.client_rate) + 1 - self._resampled
        return (self._input.available - self.delay + incoming) // self.hop <= self.max_backlog_hops

    def lead_s(self, now: float) -> float:
        """Seconds of audio received beyond the wall-clock time since the first sample: > 0 for a client that
        sends faster than real time (a file), ~0 or below for a live source."""
        if self._first_fed_at is None:
            return 0.0
        return self._fed / self.client_rate - (now - self._first_fed_at)

    def _write(self, pcm: np.ndarray) -> None:
        if self._end_hop is not None:
            raise StreamInputError("this stream has ended (flush/close was called): open a new stream")
        resampled = self._in.process(pcm)
        self._input.write(resampled)
        if self._dry is not None:
            self._dry.write(pcm)
        if self._first_fed_at is None and len(pcm):
            self._first_fed_at = time.monotonic()
        self._fed += len(pcm)
        self._resampled += len(resampled)
        self.metrics.audio_in_s = self._fed / self.client_rate
        self._note_ready()

    def _note_ready(self) -> None:
        ready = self._hops_taken + self.pending_hops
        # A hop becomes ready when the audio completing it arrives; a frame that completes none (pending 0)
        # records nothing, or the age of the next hop would run from this frame, up to a frame too old.
        if ready > self._hops_taken and (not self._ready_since or ready > self._ready_since[-1][0]):
            self._ready_since.append((ready, time.monotonic()))
        self.metrics.queue_depth = self.pending_hops

    def backlog_age(self, now: float) -> float:
        """Seconds the oldest pending hop has been waiting for compute."""
        return now - self._ready_since[0][1] if self.pending_hops else 0.0

    def finish(self) -> None:
        """End of input: release the resampler's tail and append the zero hops that push it out."""
        if self._end_hop is not None:
            return
        self._input.write(self._in.flush())
        partial = (self._input.available - self.delay) % self.hop
        self._input.write(np.zeros(-partial % self.hop + self._tail_hops * self.hop, dtype=np.float32))
        self._end_hop = self._hops_taken + self.pending_hops
        self._note_ready()
        if not self.pending_hops:
            self._finish_output()

    # ---------------------------------------------------------------- one hop

    def begin_hop(self, passthrough: bool) -> list[Any]:
        """Take the next pending hop into `self.audio`; return the states to run on it (0, 1 or 2).

        `passthrough` (degradation level 2) switches the output to the mixture; switching either
        way crossfades, which is why a state may still need compute on the first pass-through hop.
        """
        if passthrough != self._passthrough:
            current = None if self._passthrough else self.state
            self._fade = _Fade(old=current, new=None if passthrough else self.state)
            self._passthrough = passthrough
        self._input.peek_into(self.audio, offset=self.delay)
        self._input.peek_into(self._mixture)
        self._input.advance(self.hop)
        self._hops_taken += 1
        while self._ready_since and self._ready_since[0][0] <= self._hops_taken:
            self._ready_since.popleft()
        self.metrics.queue_depth = self.pending_hops
        return [source for source in self._sources() if source is not None]

    def end_hop(self, outputs: np.ndarray | None, level: int = FULL) -> None:
        """Deliver the processor's rows for the states `begin_hop` returned ([rows, 2, hop], or None for none)."""
        rows = iter(() if outputs is None else outputs)
        signals = [self._mixture_out if source is None else next(rows) for source in self._sources()]
        if self._fade is None:
            hop_out = signals[0]
        else:
            hop_out = self._crossfade.mix(signals[0], signals[1], self._fade.position)
            self._fade.position += self.hop
            if self._fade.position == self._crossfade.length:
                self._fade = None
        self._frames[:] = hop_out.T
        if self._produced < self.delay:  # output for input before the stream's start: silence by contract
            self._frames[: self.delay - self._produced] = 0.0
        self._produced += self.hop
        self._output.write(self._out.process(self._frames))
        if self.quality is not None:
            self.quality.observe(self._mixture, hop_out[0])
        self.metrics.level = level
        if level != FULL:
            self.metrics.degraded_s[level] += self.hop / self.model_rate
        if self._hops_taken == self._end_hop:
            self._finish_output()

    def understood(self) -> dict | None:
        """How the model took the current prompt (`processor.describe_state`, e.g. the default model's nearest
        class and branch), or None when the processor does not say."""
        describe = getattr(self.processor, "describe_state", None)
        return describe(self.state) if describe is not None else None

    def release(self) -> None:
        """The stream is over: let the processor free what it holds for each of its states
        (`processor.release_state`, when it has one). Call it when nothing computes the stream any more."""
        release = getattr(self.processor, "release_state", None)
        if release is None:
            return
        for state in {id(s): s for s in (self.state, *self._sources()) if s is not None}.values():
            release(state)

    @property
    def passing_through(self) -> bool:
        """In pass-through with no crossfade under way: the next hops need no compute."""
        return self._passthrough and self._fade is None

    def _sources(self) -> tuple[Any | None, ...]:
        if self._fade is not None:
            return (self._fade.old, self._fade.new)
        return (None if self._passthrough else self.state,)

    def _finish_output(self) -> None:
        self._output.write(self._out.flush())
        self.done = True

    @property
    def accepts_video(self) -> bool:
        """Whether the model uses the stream's video (visual-mask prompts of SAM Audio with a vision tower)."""
        return getattr(self.processor, "accepts_video", False)

    def push_video(self, frames: np.ndarray, times_s: np.ndarray) -> None:
        """Video frames of this stream, uint8 [N, H, W, 3] RGB at increasing stream times (seconds since the
        stream's first sample), each pushed no later than its audio. Every live state gets them: a fade's
        old separation runs on the same video."""
        if not self.accepts_video:
            raise StreamInputError("this model takes no video: visual-mask prompts need a SAM Audio checkpoint "
                                   "with its vision encoder")
        for state in {id(state): state for state in (self.state, *self._sources()) if state is not None}.values():
            self.processor.push_video(state, frames, times_s)

    def set_prompt(self, prompt: Prompt) -> None:
        """Switch to a new prompt from the next hop, crossfading from the old separation to the new one."""
        if self._passthrough:  # the output is the mixture: nothing audible to fade from
            self.processor.set_prompt(self.state, prompt)
        else:
            # Fork the state so the old prompt's separation can keep running under the fade.
            old = copy.deepcopy(self.state)
            self.processor.set_prompt(self.state, prompt)
            self._fade = _Fade(old=old, new=self.state)
        self.prompt = prompt
        if self.quality is not None:
            self.quality.set_prompt(prompt)

    # ---------------------------------------------------------------- output side

    @property
    def output_available(self) -> int:
        return self._output.available

    def pull(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        """The next n output samples as (target, residual)."""
        # Read through a reusable frame-major scratch; the one copy made is the (target, residual) handed out.
        if n > len(self._pull_scratch):
            self._pull_scratch = np.empty((n, 2), dtype=np.float32)
        frames = self._pull_scratch[:n]
        self._output.read_into(frames)
        preroll = min(n, max(0, self.latency_samples - self._pulled))
        if preroll:  # the first L samples answer no input: zeros (the resampler's kernel reaches back into them)
            frames[:preroll] = 0.0
        self._pulled += n
        self.metrics.audio_out_s += n / self.client_rate
        target, residual = frames.T.copy()
        if self._dry is not None:
            if n > len(self._dry_scratch):
                self._dry_scratch = np.empty(n, dtype=np.float32)
            dry = self._dry_scratch[:n]
            self._dry.read_into(dry)
            np.subtract(dry, target, out=residual)
        return target, residual

    # ---------------------------------------------------------------- synchronous use

    def push(self, pcm: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Feed a frame of any length and separate it now; returns exactly len(pcm) samples of each output."""
        pcm = check_frame(pcm)
        targets, residuals = [], []
        for start in range(0, len(pcm), self.max_frame):
            piece = pcm[start : start + self.max_frame]
            self._write(piece)
            self._run_pending()
            target, residual = self.pull(len(piece))
            targets.append(target)
            residuals.append(residual)
        if not targets:
            return self.pull(0)
        return np.concatenate(targets), np.concatenate(residuals)

    def flush(self) -> tuple[np.ndarray, np.ndarray]:
        """End the stream and return the last `latency_samples` samples of each output."""
        if self.done:
            raise StreamInputError("this stream was already flushed: open a new stream")
        self.finish()
        self._run_pending()
        tail = self.pull(self.latency_samples)
        self.release()
        return tail

    def _run_pending(self) -> None:
        while self.pending_hops:
            states = self.begin_hop(passthrough=False)
            rows = self._sync_rows[: len(states)]
            rows[:] = self.audio
            started = time.perf_counter()
            outputs = run_processor(self.processor, states, rows, self.processor.max_steps)
            self.metrics.compute_s += time.perf_counter() - started
            self.end_hop(outputs)
