"""A live voice similarity meter per session with an enrolled voice: is the enrolled person talking now?

Every `interval_s` (0.5 s) of stream audio, a session whose prompt has an audio example (an enrollment: a
clip file, or the last seconds of its own input) hands a copy of the last 1.6 s of its input (the mixture)
and of its output (the target) to one background thread shared by every session. That thread embeds both
with the GE2E speaker encoder (model/speaker_encoder.py, `embed_recent`) and stores their cosine similarity
to the enrollment's embedding (computed once per enrollment, on the same thread) in the session's metrics
(`metrics.voice`), which the WebSocket `metrics` reply, the WebRTC data channel and the browser page show:

    {"input": 0.81, "output": 0.86, "window_end_s": 12.5, "window_s": 1.6, "enrolled_s": 3.0,
     "compute_s": 0.04, "skipped": 0}

`input` answers "is the enrolled person talking now?" (the mixture), `output` "is what I hear that person?".
A signal too quiet to say anything about a voice is reported as null, not scored: the encoder raises every
input to -30 dBFS, which would turn silence into loud noise (the mixture below `SILENCE_DBFS`; the output
more than `OUTPUT_GATE_DB` below the mixture, i.e. the picker let nothing through).

Both signals are taken where the session crossfades its output (the same tap as stream/quality.py), at the
model rate, so the input window is the mixture delayed like the output: the two windows cover the same
audio. The audio path only copies samples into a ring. At most one job per session is in flight and at most
`max_pending` in all; a session whose turn comes while its previous job still runs skips the turn (counted
in `skipped`), so a busy machine lowers the meter's rate, never the audio's. Cost on this 2-core machine:
two 1.6 s embeddings per turn, ~40 ms, i.e. ~8 % of one core per enrolled session at the default interval.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass

import numpy as np

from samstream.stream.metrics import SessionMetrics
from samstream.stream.processor import Prompt
from samstream.stream.quality import MonitorThread
from samstream.stream.ringbuffer import RingBuffer

log = logging.getLogger(__name__)

SILENCE_DBFS = -60.0  # a mixture window quieter than this has no voice to compare
OUTPUT_GATE_DB = 30.0  # an output this far below its mixture: the picker let nothing through
WINDOW_S = 1.6  # what GE2E embeds at once (one partial utterance)


@dataclass(frozen=True)
class VoiceMeterConfig:
    interval_s: float = 0.5  # a reading every this many seconds of stream audio
    max_pending: int = 4  # jobs queued or running, all sessions together

    def __post_init__(self):
        if self.interval_s <= 0 or self.max_pending < 1:
            raise ValueError("voice meter interval_s must be > 0 and max_pending >= 1")


def level_dbfs(x: np.ndarray) -> float:
    rms = math.sqrt(float(np.mean(np.square(x, dtype=np.float64)))) if len(x) else 0.0
    return 20.0 * math.log10(rms) if rms > 0 else -math.inf


class VoiceMeter(MonitorThread):
    """Owns the meter's thread; `tap` gives each session its own VoiceTap (the `quality_monitor` interface of
    stream/session.py, so a `Batcher(quality_monitor=...)` takes it; `monitors` combines it with the Judge)."""

    def __init__(self, model_rate: int, config: VoiceMeterConfig = VoiceMeterConfig(), encoder=None) -> None:
        from samstream.model.speaker_encoder import N_FFT, PARTIAL_SAMPLES, SAMPLE_RATE

        super().__init__(config.max_pending, "samstream-voice")
        self.model_rate = model_rate
        self.config = config
        self._encoder = encoder  # loaded on the meter's thread (a missing file is reported by every reading)
        context = PARTIAL_SAMPLES + N_FFT // 2  # what embed_recent reads at 16 kHz
        if model_rate != SAMPLE_RATE:  # and the margin it keeps for its resampler
            context = math.ceil((context + SAMPLE_RATE // 10) * model_rate / SAMPLE_RATE)
        self.window = context
        if encoder is None:  # load it now, before any stream runs: loading holds the GIL for ~0.1 s at a time,
            # which would otherwise happen at the first enrollment, beside running streams
            self._executor.submit(self._warm_up)

    def tap(self, metrics: SessionMetrics, prompt: Prompt, delay_samples: int = 0) -> VoiceTap:
        return VoiceTap(self, metrics, prompt, delay_samples)

    @property
    def encoder(self):
        if self._encoder is None:
            from samstream.model.speaker_encoder import load_speaker_encoder

            self._encoder = load_speaker_encoder()
        return self._encoder

    def _warm_up(self) -> None:
        try:
            self.encoder.embed_recent(np.zeros(self.window, np.float32), self.model_rate)
        except Exception as error:  # reported by every reading instead (e.g. the weights are missing)
            log.warning("voice meter: the speaker encoder does not load: %s", error)

    def measure(self, tap: VoiceTap, job: dict) -> None:
        started = time.perf_counter()
        try:
            from samstream.model.speaker_encoder import similarity

            encoder = self.encoder
            enrollment = job["enrollment"]
            if enrollment is None:  # the first turn of this enrollment: embed the clip once
                enrollment = encoder.embed_utterance(job["clip"], self.model_rate)
                tap.remember_enrollment(job["generation"], enrollment)
            mixture, target = job["mixture"], job["target"]
            recent = mixture[-round(WINDOW_S * self.model_rate):]
            mixture_db = level_dbfs(recent)
            output_db = level_dbfs(target[-len(recent):])
            result = {"input": None, "output": None}
            if mixture_db >= SILENCE_DBFS:
                result["input"] = round(similarity(encoder.embed_recent(mixture, self.model_rate), enrollment), 4)
                if output_db >= mixture_db - OUTPUT_GATE_DB:
                    result["output"] = round(similarity(encoder.embed_recent(target, self.model_rate), enrollment), 4)
            tap.publish(job["generation"], {
                **result, "window_end_s": round(job["end_s"], 3), "window_s": WINDOW_S,
                "enrolled_s": round(len(job["clip"]) / self.model_rate, 3),
                "compute_s": round(time.perf_counter() - started, 4)})
        except Exception as error:  # a failure must never reach the audio path
            log.warning("voice meter failed: %s", error)
            tap.publish(job["generation"], {"error": f"{type(error).__name__}: {error}"})


class VoiceTap:
    """One session's view: `observe` on every output hop (audio path), `set_prompt` when the prompt changes."""

    def __init__(self, meter: VoiceMeter, metrics: SessionMetrics, prompt: Prompt, delay_samples: int) -> None:
        self.meter = meter
        self.metrics = metrics
        self.delay = delay_samples
        self.window = meter.window
        self.interval = max(1, round(meter.config.interval_s * meter.model_rate))
        self._ring = RingBuffer(self.window, channels=2)
        self._observed = 0  # model samples seen
        self._next = self.delay + round(WINDOW_S * meter.model_rate)  # the first full window of real input
        self._busy = False
        self.skipped = 0
        self.generation = 0  # one per enrollment: a reading for an older one is dropped
        self._clip: np.ndarray | None = None
        self._enrollment: tuple[int, np.ndarray] | None = None  # (generation, embedding)
        self.set_prompt(prompt)

    def observe(self, mixture: np.ndarray, target: np.ndarray) -> None:
        self._ring.write_latest(np.stack([mixture, target], 1))
        self._observed += len(mixture)
        if self._observed < self._next or self._clip is None:
            return
        self._next = self._observed + self.interval
        if self._busy:
            self.skipped += 1
            return
        window = np.empty((self._ring.available, 2), np.float32)
        self._ring.peek_into(window)
        enrollment = self._enrollment
        job = {"generation": self.generation, "clip": self._clip, "mixture": window[:, 0].copy(),
               "target": window[:, 1].copy(), "end_s": (self._observed - self.delay) / self.meter.model_rate,
               "enrollment": enrollment[1] if enrollment is not None and enrollment[0] == self.generation else None}
        self._busy = True  # before submitting: the job may finish (and clear it) before submit returns
        if not self.meter.submit_job(self.meter.measure, self, job):
            self._busy = False
            self.skipped += 1

    def set_prompt(self, prompt: Prompt) -> None:
        """A new enrollment (or none: the meter stops and reports null) from the next hop."""
        if self._clip is not None and prompt.example is not None and np.array_equal(prompt.example, self._clip):
            return  # the same voice (e.g. only the text changed): keep its embedding and readings
        self.generation += 1
        self._clip = prompt.example
        self.metrics.voice = None

    def remember_enrollment(self, generation: int, embedding: np.ndarray) -> None:
        if generation == self.generation:
            self._enrollment = (generation, embedding)

    def publish(self, generation: int, result: dict) -> None:
        if generation == self.generation:  # a reading of an enrollment that was replaced meanwhile is dropped
            self.metrics.voice = {**result, "skipped": self.skipped}  # one assignment: readers see old or new

    def done(self) -> None:
        self._busy = False


class MonitorGroup:
    """Several monitors on each session, behind the one `quality_monitor` a Batcher takes (the live Judge
    score and the voice meter)."""

    def __init__(self, *monitors) -> None:
        self.monitors = monitors

    def tap(self, metrics: SessionMetrics, prompt: Prompt, delay_samples: int = 0) -> TapGroup:
        return TapGroup([monitor.tap(metrics, prompt, delay_samples) for monitor in self.monitors])

    def close(self) -> None:
        for monitor in self.monitors:
            monitor.close()


class TapGroup:
    def __init__(self, taps: list) -> None:
        self.taps = taps

    def observe(self, mixture: np.ndarray, target: np.ndarray) -> None:
        for tap in self.taps:
            tap.observe(mixture, target)

    def set_prompt(self, prompt: Prompt) -> None:
        for tap in self.taps:
            tap.set_prompt(prompt)


def monitors(*candidates):
    """The monitors given (None skipped) as one `quality_monitor`: None, the only one, or a MonitorGroup."""
    present = [monitor for monitor in candidates if monitor is not None]
    if len(present) <= 1:
        return present[0] if present else None
    return MonitorGroup(*present)


def with_voice_meter(batcher_options: dict, model_rate: int, interval_s: float) -> dict:
    """Batcher options with a voice meter beside any monitor they hold already (`interval_s` 0: none)."""
    if interval_s <= 0:
        return batcher_options
    meter = VoiceMeter(model_rate, VoiceMeterConfig(interval_s=interval_s))
    return {**batcher_options, "quality_monitor": monitors(batcher_options.get("quality_monitor"), meter)}
