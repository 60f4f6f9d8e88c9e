"""Many streams, one processor: batched compute on a worker thread, with declared degradation.

Each round the worker takes the next pending hop of every session that has one (at most
`max_batch` sessions, taking turns when more are waiting) and makes ONE `processor.process` call
for all of them. Streams are desynchronised: a session with no complete hop simply sits the round
out, like a stream masked off by moshi's execution mask.

Threads. The asyncio event loop only buffers input (validation and resampling of one frame) and
hands out finished output; everything that calls the processor (`init_state` when a stream opens,
`set_prompt`, `process`) runs on the worker thread, one control call (open, prompt change) at a time with a
round between them, so that a burst of streams opening does not stall the ones already running (and
processors that can prepare for a burst, `processor.prepare(n)`, are asked to at once). One lock serialises
access to the sessions' buffers; compute runs outside it. Queues are bounded: a stream's backlog is capped
at `max_queue_hops` (feeding more raises `StreamInputError`) and its buffers are preallocated.

Pacing. Each stream says how it is paced when it opens (`live`):
  live                 a source with a clock (a microphone, a call): its output must keep up with it, so
                       when compute falls behind the stream is degraded in the declared order below;
  as fast as possible  (live=False) a producer with its own pace (a file): it is never degraded; the
                       transport waits for room in its backlog instead (`wait_for_room`: flow control,
                       which reaches the client as TCP backpressure). It takes its turn in the rounds like
                       any stream (one hop per round), so it shares the compute fairly with live streams.

Degradation, when compute falls behind real time. The signal is the age of the oldest pending hop of
the live streams: how long the audio that completed it has waited for the round that takes it (a live
stream whose client sends faster than real time, i.e. more than `LEAD_SLACK_S` ahead of the wall clock,
is not counted: its backlog is of its own making and flow control holds it). With `budget` =
`realtime_budget_s`, each live stream is at one of:
  level 0  full quality: `processor.max_steps` sampling steps;
  level 1  fewer steps (`reduced_steps`); only for models with steps to spare (`max_steps` >
           `reduced_steps`: the default model samples in one step and goes straight to level 2), and a hop
           is counted as degraded only when fewer steps changes its output (`processor.steps_matter(state)`,
           when the processor says);
  level 2  pass-through: the processor is not run and the target carries the input mixture itself and the
           residual is silent (their sum stays the mixture), delayed by the processor delay so the stream
           keeps its latency L; the switch into and out of pass-through is an equal-power crossfade (the first
           pass-through hop still runs the processor, at reduced steps, to have something to fade from). The
           processor state skips the passed-through hops: its context has a gap when it resumes. A round
           passes through every pending hop of such a stream at once (no compute), so a backlog drains at once.
Falling behind is answered at once and for every live stream: a hop older than `budget` puts them all at
level 1 or above, one older than 2 x `budget` at level 2. Recovery is gradual, like TCP's slow start: once
the oldest hop waits less than budget/2 and nothing changed for the recovery wait, a batch of the degraded
streams steps down one level (1 stream, then 2, 4, ... while that holds). Falling behind again within two
recovery waits of a step puts back only the streams that step recovered, halves nothing but restarts the
batch at 1 and doubles the recovery wait (up to `MAX_RECOVER_FACTOR` x `recover_s`, at most 30 s): so a load
the machine cannot hold settles with as many streams at full quality as it holds and the others passed
through, instead of flapping through full-quality rounds of every stream (each one a latency spike). A level
held at 0 by every stream for four recovery waits resets the wait; with no live stream open it is reset
at once. A new live stream starts at the highest level of the streams already open. `level` is the highest
level of any live stream; each stream's metrics say its own level and count the seconds it spent at each.
Load never ends a stream: a backlog that is full makes the transport wait (`wait_for_room`), and the
degradation drains it.

Transports should feed frames as they arrive (call `push` again before the previous call has
returned; frames are taken in call order), so that a backlog shows up here as waiting hops rather
than in the transport's buffers. One stream's error (bad frame, failing prompt, processor error)
is raised to that stream only; the others go on. A transport whose client went away calls `abort()`:
the stream leaves the rounds at once and its queued hops are never computed.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import math
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from samstream.stream.metrics import FEWER_STEPS, FULL, PASS_THROUGH, Histogram, SessionMetrics
from samstream.stream.processor import ChunkProcessor, Prompt, StreamInputError, run_processor
from samstream.stream.quality import QualityMonitor
from samstream.stream.resample import DEFAULT_QUALITY
from samstream.stream.session import StreamSession

LEAD_SLACK_S = 1.0  # a live stream this far ahead of the wall clock is sending faster than real time
MAX_RECOVER_FACTOR = 32  # the recovery wait backs off to at most this many recover_s (and 30 s)
PREPARED_STREAMS = 8  # streams a processor makes ready to open at once (`processor.prepare`, if it has one)


@dataclass
class _Waiter:
    samples: int  # output samples owed to this call
    future: asyncio.Future


class StreamHandle:
    """One client stream served by a `Batcher`; get one with `await batcher.open(prompt, client_rate)`."""

    def __init__(self, batcher: Batcher, session: StreamSession, loop: asyncio.AbstractEventLoop) -> None:
        self._batcher = batcher
        self.session = session
        self._loop = loop
        self._waiters: deque[_Waiter] = deque()
        self.error: BaseException | None = None  # set when the stream failed; it is then out of the rounds
        self.level = FULL  # this stream's degradation level (live streams only; see the module docstring)
        self._closing = False
        self._room: asyncio.Future | None = None  # wait_for_room's waiter, woken by _resolve
        self._notified_at: float | None = None  # when the worker last said output was ready (hand-off timing)

    @property
    def latency_samples(self) -> int:
        return self.session.latency_samples

    @property
    def metrics(self) -> SessionMetrics:
        return self.session.metrics

    @property
    def live(self) -> bool:
        """The stream's pacing: True "live" (may be degraded), False "as fast as possible" (never degraded)."""
        return self.session.live

    async def push(self, pcm: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Feed a frame; returns exactly len(pcm) samples of (target, residual) once they are computed."""
        return await self.submit(pcm)

    def submit(self, pcm: np.ndarray) -> asyncio.Future:
        """Feed a frame now (frames are taken in call order); the future gets its len(pcm) samples of
        (target, residual) once they are computed. Raises StreamInputError at once for a frame the stream
        refuses (bad frame, full backlog: see `wait_for_room`)."""
        self._check_usable()
        with self._batcher._lock:
            self.session.feed(pcm)
            return self._expect(len(pcm))

    async def wait_for_room(self, samples: int) -> None:
        """Flow control: return once a frame of `samples` samples fits the stream's backlog (at once if it
        does), or once the stream failed or closed (`submit` then says why)."""
        while True:
            with self._batcher._lock:
                if self.error is not None or self._closing or self.session.has_room(samples):
                    return
                self._room = self._loop.create_future()
                waiter = self._room
            await waiter

    async def set_prompt(self, prompt: Prompt) -> None:
        """Switch prompts, crossfading, from the next hop the worker takes (hops already queued may still
        use the old prompt). Runs on the worker, since the processor may encode text."""
        self._check_usable()
        await self._batcher._call(lambda: self.session.set_prompt(prompt))

    async def push_video(self, frames: np.ndarray, times_s: np.ndarray) -> None:
        """Hand video frames to the stream's model (see `StreamSession.push_video`); on the worker, between
        rounds, since the processor reads its video buffer while it computes."""
        self._check_usable()
        await self._batcher._call(lambda: self.session.push_video(frames, times_s))

    async def close(self) -> tuple[np.ndarray, np.ndarray]:
        """End the stream; returns its last `latency_samples` samples of (target, residual)."""
        self._check_usable()
        self._closing = True
        with self._batcher._lock:
            self.session.finish()
            future = self._expect(self.session.latency_samples)
        try:
            return await future
        finally:
            self._batcher._forget(self)

    def abort(self) -> int:
        """Drop the stream at once, for a client that hung up: its queued hops are never computed and
        calls still waiting fail. Returns how many input samples (client rate) were dropped unanswered,
        so the caller can log them."""
        with self._batcher._lock:
            if self._closing or self.error is not None:
                return 0
            self._closing = True
            self.error = StreamInputError("this stream was aborted: its client went away")
            self._batcher._forget(self)
            owed = sum(waiter.samples for waiter in self._waiters)
        self._resolve()
        return owed

    def _check_usable(self) -> None:
        if self.error is not None:
            raise StreamInputError(f"this stream failed and was closed ({self.error}): open a new stream")
        if self._closing:
            raise StreamInputError("this stream was closed: open a new stream")

    def _expect(self, samples: int) -> asyncio.Future:
        """Queue a claim on the next `samples` output samples (caller holds the lock)."""
        future = self._loop.create_future()
        self._waiters.append(_Waiter(samples, future))
        self._batcher._lock.notify()
        self._loop.call_soon(self._resolve)
        return future

    def _resolve(self) -> None:
        """On the event loop: hand out output to the waiting calls, in call order."""
        notified, self._notified_at = self._notified_at, None
        if notified is not None:
            self._batcher.timings["handoff"].observe(time.perf_counter() - notified)
        with self._batcher._lock:
            room = self._room
            if room is not None and (self.error is not None or self._closing or self.session.has_room(1)):
                self._room = None
                if not room.done():
                    room.set_result(None)
            while self._waiters:
                waiter = self._waiters[0]
                if self.error is None and self.session.output_available < waiter.samples:
                    return
                self._waiters.popleft()
                if self.error is not None:
                    if not waiter.future.done():
                        waiter.future.set_exception(self.error)
                    continue
                output = self.session.pull(waiter.samples)  # pulled even if cancelled: keeps the accounting
                if not waiter.future.done():
                    waiter.future.set_result(output)

    def _notify(self) -> None:
        """From the worker: new output or an error may be waiting."""
        if self._notified_at is None:
            self._notified_at = time.perf_counter()
        if not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._resolve)


class Batcher:
    """Serves many `StreamHandle`s with one processor (see the module docstring for rounds and degradation)."""

    def __init__(
        self,
        processor: ChunkProcessor,
        max_batch: int = 16,
        max_queue_hops: int | None = None,
        *,
        reduced_steps: int | None = None,
        realtime_budget_s: float | None = None,
        recover_s: float = 1.0,
        quality: str = DEFAULT_QUALITY,
        crossfade_ms: float = 20.0,
        max_frame_s: float = 1.0,
        quality_monitor: QualityMonitor | None = None,
    ) -> None:
        hop = processor.hop_samples
        hop_s = hop / processor.sample_rate
        self.processor = processor
        self.max_batch = max_batch
        self.reduced_steps = reduced_steps or max(1, processor.max_steps // 2)
        self.has_fewer_steps = self.reduced_steps < processor.max_steps  # else level 1 would change nothing
        self._steps_matter = getattr(processor, "steps_matter", None)
        self.budget_s = realtime_budget_s if realtime_budget_s is not None else max(0.1, 4 * hop_s)
        self.recover_s = recover_s
        self._session_options = dict(
            quality=quality,
            crossfade_ms=crossfade_ms,
            max_frame_s=max_frame_s,
            max_backlog_hops=max_queue_hops or math.ceil(2.0 / hop_s),
            quality_monitor=quality_monitor,
        )
        self.level = FULL  # the highest level of any live stream
        self._changed_at = time.monotonic()  # the last escalation or recovery step
        self._full_since = time.monotonic()  # every live stream at level 0 since
        self._recover_wait = recover_s  # backs off while recovery fails (module docstring)
        self._recover_batch = 1  # streams stepped down at the next recovery step (slow start)
        self._last_step: list[tuple[StreamHandle, int]] = []  # the last recovery step: (stream, level before)
        # Where a hop's time goes (exposed by the server's /metrics, read by `samstream bench e2e`): waiting
        # for the round that takes it, the round's processor call, the worker -> event loop hand-off.
        self.timings = {"hop_wait": Histogram(), "round": Histogram(), "handoff": Histogram()}
        self._lock = threading.Condition()
        self._handles: list[StreamHandle] = []
        self._controls: deque[tuple[Callable[[], Any], concurrent.futures.Future]] = deque()
        self._turn = 0  # round-robin start, for when more than max_batch sessions wait
        self._hops = np.empty((2 * max_batch, hop), dtype=np.float32)  # a fade runs two states on one hop
        self._stopping = False
        prepare = getattr(processor, "prepare", None)  # e.g. native states made ahead for a burst of opens
        if prepare is not None:
            prepare(min(max_batch, PREPARED_STREAMS))
        self._thread = threading.Thread(target=self._work, name="samstream-batcher", daemon=True)
        self._thread.start()

    async def __aenter__(self) -> Batcher:
        return self

    async def __aexit__(self, *exc_info) -> None:
        await self.aclose()

    async def open(self, prompt: Prompt, client_rate: int, *, live: bool = True) -> StreamHandle:
        """Start a stream (the processor's `init_state` runs on the worker); `live=False` for a stream paced
        "as fast as possible" (never degraded; see the module docstring)."""
        session = await self._call(
            lambda: StreamSession(self.processor, client_rate, prompt, live=live, **self._session_options)
        )
        handle = StreamHandle(self, session, asyncio.get_running_loop())
        with self._lock:
            if live:  # joins at the level the others are at: its compute would only make things worse
                handle.level = self.level
            self._handles.append(handle)
        return handle

    async def aclose(self) -> None:
        """Stop the worker; streams still open fail with an error."""
        with self._lock:
            self._stopping = True
            self._lock.notify()
        await asyncio.to_thread(self._thread.join)
        closed = RuntimeError("the batcher was closed")
        for _, future in self._controls:
            future.set_exception(closed)
        for handle in self._handles:
            handle.error = closed
            handle._resolve()

    async def _call(self, fn: Callable[[], Any]) -> Any:
        """Run fn on the worker thread between rounds."""
        future: concurrent.futures.Future = concurrent.futures.Future()
        with self._lock:
            if self._stopping:
                raise RuntimeError("the batcher was closed")
            self._controls.append((fn, future))
            self._lock.notify()
        return await asyncio.wrap_future(future)

    def _forget(self, handle: StreamHandle) -> None:
        """Take a stream out of the rounds, and let the processor free what it holds for it (native memory
        that Python's garbage collector does not see: the default model's speech expert keeps ~11 MB per
        stream) on the worker, between rounds, where no compute can be using it."""
        with self._lock:
            if handle in self._handles:
                self._handles.remove(handle)
                self._controls.append((handle.session.release, concurrent.futures.Future()))
                self._lock.notify()

    # ---------------------------------------------------------------- worker thread

    def _work(self) -> None:
        while True:
            with self._lock:
                # While degraded, wake up now and then even with nothing to do, so an idle server recovers.
                self._lock.wait_for(lambda: self._stopping or self._controls or self._waiting(),
                                    timeout=self._recover_wait if self.level != FULL else None)
                if self._stopping:
                    return
                # One control call (a stream opening, a prompt change) between rounds: a burst of them (16
                # clients connecting at once; the default model's speech expert takes ~0.5 s to open a stream)
                # must not stall the streams already running for the whole burst.
                controls = [self._controls.popleft()] if self._controls else []
                if not self._waiting():
                    self._update_levels(0.0, time.monotonic())
            for fn, future in controls:
                if future.set_running_or_notify_cancel():
                    try:
                        future.set_result(fn())
                    except BaseException as error:  # handed to the caller, whatever it is
                        future.set_exception(error)
            self._round()

    def _waiting(self) -> list[StreamHandle]:
        return [h for h in self._handles if h.error is None and h.session.pending_hops]

    def _lateness(self, waiting: list[StreamHandle], now: float) -> float:
        """The degradation signal: how long the oldest pending hop of a live stream (one that keeps to the
        clock) has waited."""
        return max((h.session.backlog_age(now) for h in waiting
                    if h.session.live and h.session.lead_s(now) < LEAD_SLACK_S), default=0.0)

    def _stream_level(self, handle: StreamHandle) -> int:
        """The level a stream's next hop runs at: streams paced as fast as possible are never degraded, and
        level 1 exists only where fewer steps change something."""
        level = handle.level if handle.session.live else FULL
        if level == FEWER_STEPS and not self.has_fewer_steps:
            return FULL
        return level

    def _round(self) -> None:
        with self._lock:
            waiting = self._waiting()
            if not waiting:
                return
            self._turn = (self._turn + 1) % len(waiting)
            now = time.monotonic()
            self._update_levels(self._lateness(waiting, now), now)
            groups: dict[int, list[tuple[StreamHandle, int, int]]] = {}  # steps -> (stream, states, level)
            states: dict[int, list[Any]] = {}
            hops: dict[int, list[np.ndarray]] = {}
            for handle in (waiting[self._turn :] + waiting[: self._turn])[: self.max_batch]:
                level = self._stream_level(handle)
                session = handle.session
                self.timings["hop_wait"].observe(session.backlog_age(now))
                try:
                    if level == PASS_THROUGH and session.passing_through:
                        while session.pending_hops:  # no compute: drain the whole backlog now
                            session.begin_hop(passthrough=True)
                            session.end_hop(None, PASS_THROUGH)
                        handle._notify()
                        continue
                    taken = session.begin_hop(passthrough=level == PASS_THROUGH)
                except Exception as error:  # a broken stream must not stop the round
                    self._fail(handle, error)
                    continue
                steps = self.processor.max_steps if level == FULL else self.reduced_steps
                if level == FEWER_STEPS and self._steps_matter is not None and taken \
                        and not any(self._steps_matter(state) for state in taken):
                    level = FULL  # computed as it would be at full quality: not degraded
                groups.setdefault(steps, []).append((handle, len(taken), level))
                states.setdefault(steps, []).extend(taken)
                hops.setdefault(steps, []).extend([session.audio.copy()] * len(taken))
        for steps, batch in groups.items():
            self._run_group(batch, states[steps], hops[steps], steps)

    def _run_group(self, batch: list[tuple[StreamHandle, int, int]], states: list[Any], hops: list[np.ndarray],
                   steps: int) -> None:
        """One processor call for the streams of a round that run at the same number of steps."""
        counts = [count for _, count, _ in batch]
        rows = len(states)
        if rows:
            self._hops[:rows] = np.stack(hops)
        started = time.perf_counter()
        results = self._compute(states, counts, steps)
        elapsed = time.perf_counter() - started
        per_row = elapsed / max(1, rows)
        if rows:
            self.timings["round"].observe(elapsed)
        with self._lock:
            for (handle, count, level), result in zip(batch, results):
                if isinstance(result, Exception):
                    self._fail(handle, result)
                    continue
                try:
                    handle.session.end_hop(result, level)
                except Exception as error:  # an engine fault in one stream must not stop the others
                    self._fail(handle, error)
                    continue
                handle.session.metrics.compute_s += per_row * count
                handle._notify()

    def _fail(self, handle: StreamHandle, error: Exception) -> None:
        handle.error = error
        self._forget(handle)
        handle._notify()

    def _compute(self, states: list[Any], counts: list[int], steps: int) -> list[np.ndarray | None | Exception]:
        """Each stream's rows of one batched call. If the call fails, each stream runs alone, so only
        the streams that fail again are failed."""
        bounds = list(zip(np.cumsum([0] + counts[:-1]), np.cumsum(counts)))
        if not states:
            return [None] * len(counts)
        try:
            out = run_processor(self.processor, states, self._hops[: len(states)], steps)
        except Exception as error:
            if sum(1 for count in counts if count) == 1:
                return [error if count else None for count in counts]
            return [self._compute_alone(states[a:b], self._hops[a:b], steps) for a, b in bounds]
        return [out[a:b] if b > a else None for a, b in bounds]

    def _compute_alone(self, states: list[Any], hops: np.ndarray, steps: int) -> np.ndarray | None | Exception:
        if not states:
            return None
        try:
            return run_processor(self.processor, states, hops, steps)
        except Exception as error:
            return error

    def _update_levels(self, age: float, now: float) -> None:
        """Escalate every live stream at once, or recover a batch of them (the module docstring)."""
        live = [h for h in self._handles if h.session.live and h.error is None]
        if not live:  # no one to protect: full quality, and a fresh start for the next load
            self.level, self._recover_wait, self._recover_batch, self._last_step = FULL, self.recover_s, 1, []
            self._full_since = now
            return
        if age > 2 * self.budget_s:
            floor = PASS_THROUGH
        elif age > self.budget_s and self.has_fewer_steps:
            floor = FEWER_STEPS
        else:
            floor = None
        since_change = now - self._changed_at
        if floor is not None and any(h.level < floor for h in live):
            if self._last_step and since_change < 2 * self._recover_wait:
                # The last recovery step was too much: undo it only, and wait longer before the next one.
                for handle, before in self._last_step:
                    handle.level = max(handle.level, before)
                self._recover_wait = min(2 * self._recover_wait, MAX_RECOVER_FACTOR * self.recover_s,
                                         max(30.0, self.recover_s))
                self._last_step, self._changed_at = [], now
            elif since_change >= 4 * self.budget_s or age > 4 * self.budget_s:
                # A new load (not the backlog of the last change draining): everyone, at once.
                for handle in live:
                    handle.level = max(handle.level, floor)
                self._last_step, self._changed_at = [], now
            self._recover_batch = 1
        elif age < self.budget_s / 2 and since_change >= self._recover_wait:
            degraded = sorted((h for h in live if h.level > FULL), key=lambda h: -h.level)
            step = degraded[: self._recover_batch]
            if step:
                self._last_step = [(h, h.level) for h in step]
                for handle in step:
                    stepped = handle.level - 1
                    handle.level = FULL if stepped == FEWER_STEPS and not self.has_fewer_steps else stepped
                self._recover_batch *= 2
                self._changed_at = now
        self.level = max(h.level for h in live)
        if self.level != FULL:
            self._full_since = now
        elif now - self._full_since >= 4 * self._recover_wait:
            self._recover_wait, self._recover_batch = self.recover_s, 1  # full quality a good while: load gone
