"""A live quality score per session: the SAM Audio Judge over the last window of its output, off the audio path.

Every `interval_s` of stream audio, a session whose prompt has text hands a copy of its last `window_s`
seconds of (mixture, target) to one background thread shared by every session. Both signals are taken at
the model rate where the session crossfades its output, so they are aligned exactly as the listener hears
them (the mixture delayed like the output). The thread resamples them to the Judge's rate, scores them
against the prompt text and stores the four scores in the session's metrics (`metrics.quality`), which the
WebSocket `metrics` reply and the browser page show.

The audio path only copies samples into a ring. At most one job per session is in flight and at most
`max_pending` in all; a session whose turn comes while its previous score is still being computed skips
the turn (counted in `skipped`), so a slow Judge lowers the score rate, never the audio. On a CPU the Judge
competes with the separator for cores: give it a long interval, or a GPU.
"""

from __future__ import annotations

import concurrent.futures
import logging
import threading
import time
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch

from samstream.model.audio import resample
from samstream.stream.metrics import SessionMetrics
from samstream.stream.processor import Prompt
from samstream.stream.ringbuffer import RingBuffer

log = logging.getLogger(__name__)


class Scorer(Protocol):
    """What the monitor needs of a Judge (model/judge.py `Judge`)."""

    sample_rate: int

    def score(self, mixtures: list[torch.Tensor], candidates: list[torch.Tensor], prompts: list[str]) -> list:
        ...


@dataclass(frozen=True)
class QualityConfig:
    interval_s: float = 5.0  # a score every this many seconds of stream audio
    window_s: float = 5.0  # over the last this many seconds of output
    max_pending: int = 4  # scoring jobs queued or running, all sessions together

    def __post_init__(self):
        if self.interval_s <= 0 or self.window_s <= 0 or self.max_pending < 1:
            raise ValueError("quality interval_s and window_s must be > 0 and max_pending >= 1")


class MonitorThread:
    """One background thread shared by every session of a monitor, with at most `max_pending` jobs queued or
    running (all sessions together): `submit` says False when there is no room, and the session skips its turn.
    A job is `job(tap, *args)`; it must catch its own errors; `tap.done()` is called after it, whatever happens.
    (Also the base of the voice meter, stream/voice_meter.py.)"""

    def __init__(self, max_pending: int, name: str) -> None:
        self.max_pending = max_pending
        self._executor = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix=name)
        self._lock = threading.Lock()
        self._pending = 0

    def submit_job(self, job, tap, *args) -> bool:
        with self._lock:
            if self._pending >= self.max_pending:
                return False
            self._pending += 1
        self._executor.submit(self._run, job, tap, *args)
        return True

    def _run(self, job, tap, *args) -> None:
        try:
            job(tap, *args)
        finally:
            with self._lock:
                self._pending -= 1
            tap.done()

    def close(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=True)


class QualityMonitor(MonitorThread):
    """Owns the scoring thread; `tap` gives each session its own QualityTap."""

    def __init__(self, judge: Scorer, model_rate: int, config: QualityConfig = QualityConfig()):
        super().__init__(config.max_pending, "samstream-judge")
        self.judge = judge
        self.model_rate = model_rate
        self.config = config

    def tap(self, metrics: SessionMetrics, prompt: Prompt, delay_samples: int = 0) -> "QualityTap":
        return QualityTap(self, metrics, prompt, delay_samples)

    def submit(self, tap: "QualityTap", mixture: np.ndarray, target: np.ndarray, text: str, end_s: float) -> bool:
        return self.submit_job(self._score, tap, mixture, target, text, end_s)

    def _score(self, tap: "QualityTap", mixture: np.ndarray, target: np.ndarray, text: str, end_s: float) -> None:
        started = time.perf_counter()
        try:
            rate = self.judge.sample_rate
            mix, est = (resample(torch.from_numpy(x), self.model_rate, rate) for x in (mixture, target))
            scores = self.judge.score([mix], [est], [text])[0]
            tap.publish({**{k: round(v, 4) for k, v in scores.as_dict().items()}, "prompt": text,
                         "window_end_s": round(end_s, 3), "window_s": self.config.window_s,
                         "compute_s": round(time.perf_counter() - started, 4)})
        except Exception as error:  # a scoring failure must never reach the audio path
            log.warning("live Judge score failed: %s", error)
            tap.publish({"error": f"{type(error).__name__}: {error}"})


class QualityTap:
    """One session's view: `observe` on every output hop (audio path), `set_prompt` when the prompt changes."""

    def __init__(self, monitor: QualityMonitor, metrics: SessionMetrics, prompt: Prompt, delay_samples: int):
        self.monitor = monitor
        self.metrics = metrics
        self.prompt = prompt
        self.delay = delay_samples
        config = monitor.config
        self.window = max(1, round(config.window_s * monitor.model_rate))
        self.interval = max(1, round(config.interval_s * monitor.model_rate))
        self._ring = RingBuffer(self.window, channels=2)
        self._observed = 0  # model samples seen
        self._next = self.delay + self.window  # the first full window of real output (after the pre-roll zeros)
        self._busy = False
        self.skipped = 0

    def observe(self, mixture: np.ndarray, target: np.ndarray) -> None:
        self._ring.write_latest(np.stack([mixture, target], 1))
        self._observed += len(mixture)
        if self._observed < self._next or self.prompt.text is None:
            return
        self._next = self._observed + self.interval
        if self._busy:
            self.skipped += 1
            return
        window = np.empty((self.window, 2), np.float32)
        self._ring.peek_into(window)
        end_s = (self._observed - self.delay) / self.monitor.model_rate
        self._busy = True  # before submitting: the job may finish (and clear it) before submit returns
        if not self.monitor.submit(self, window[:, 0].copy(), window[:, 1].copy(), self.prompt.text, end_s):
            self._busy = False
            self.skipped += 1

    def set_prompt(self, prompt: Prompt) -> None:
        """A new prompt starts a new window: a score must not mix two separations."""
        self.prompt = prompt
        self._ring.advance(self._ring.available)
        self._next = self._observed + self.window

    def publish(self, result: dict) -> None:
        self.metrics.quality = {**result, "skipped": self.skipped}  # one assignment: readers see old or new

    def done(self) -> None:
        self._busy = False
