"""The model worker: one `Batcher` and the state of every session pinned to it, behind the narrow boundary
of boundary.py. Ray Serve runs it as a deployment's replica (deploy.py); it imports no Ray itself, so tests
and a single process can drive it directly.

Order. A front numbers each session's calls; a call waits for its turn (the previous call's number) and
hands the turn on as soon as its effect on the session is in place: a push once its frame is fed to the
session (its output is awaited after), a prompt change once the worker switched prompts. So the session
sees what the client sent, in the client's order, while many pushes are in flight, exactly as a local
`StreamHandle` fed by the WebSocket server does.

Sessions live as long as their `open` call: the front holds it open, the replica answers it when the
session ends (close, abort, a model failure), and aborts a session whose `open` call was cancelled (the
front went away) or that has seen no call for `orphan_timeout_s`.
"""

from __future__ import annotations

import asyncio
import math
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable

import numpy as np

from samstream.model.errors import UserFacingError
from samstream.stream.batcher import Batcher, StreamHandle
from samstream.stream.cluster.boundary import (
    FULL, INPUT, LOST, MODEL, PROMPT, PROMPT_FAILED, SessionInfo, Snapshot, error,
)
from samstream.stream.metrics import FEWER_STEPS, PASS_THROUGH
from samstream.stream.processor import ChunkProcessor, Prompt, StreamInputError

# Seconds a replica spends on one push (turn, buffering, queueing, compute): the replica's share of a hop.
FRAME_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, math.inf)


def load_worker_processor(model: str, text_encoder: str | None = None, speech_expert: bool = True) -> ChunkProcessor:
    """The processor a replica serves: `tiny`, a SAM Audio checkpoint directory, or `random` (the embedded
    architecture with seed-0 random weights: the same model in every process, for tests and benchmarks)."""
    if model == "random":
        import torch

        from samstream.model.embedded import EmbeddedConfig, EmbeddedModel, EmbeddedSeparator
        from samstream.stream.regimes.block_causal import BlockCausalProcessor

        torch.manual_seed(0)
        return BlockCausalProcessor(EmbeddedSeparator(EmbeddedModel(EmbeddedConfig())))
    from samstream.stream.regimes import make_processor

    return make_processor(model, text_encoder, speech_expert=speech_expert)


def replica_name() -> str:
    """This replica's Serve id (its `unique_id`), or "local" outside Serve."""
    if "ray.serve" not in sys.modules:  # a replica process has imported it long before
        return "local"
    try:
        from ray import serve

        return serve.get_replica_context().replica_id.unique_id
    except Exception:  # not in a Serve replica (or no Ray at all)
        return "local"


class _Gone(Exception):
    """The session ended while a call waited for its turn."""


@dataclass
class _Slot:
    handle: StreamHandle
    front: str
    ended: asyncio.Event = field(default_factory=asyncio.Event)
    next_seq: int = 0
    waiting: dict[int, asyncio.Future] = field(default_factory=dict)
    last_call: float = field(default_factory=time.monotonic)


@dataclass
class Histogram:
    """Counts per FRAME_BUCKETS bucket (not cumulative) and the sum, for a Prometheus histogram."""

    counts: list[int] = field(default_factory=lambda: [0] * len(FRAME_BUCKETS))
    sum_s: float = 0.0

    def observe(self, seconds: float) -> None:
        self.sum_s += seconds
        self.counts[next(i for i, bound in enumerate(FRAME_BUCKETS) if seconds <= bound)] += 1


@dataclass
class ReplicaStats:
    """Replica-wide counters (ended sessions' figures are folded in when they end)."""

    opened: int = 0
    audio_in_s: float = 0.0
    compute_s: float = 0.0
    degraded_s: dict[int, float] = field(default_factory=lambda: {FEWER_STEPS: 0.0, PASS_THROUGH: 0.0})
    frames: Histogram = field(default_factory=Histogram)  # seconds the replica spent on each push


class SessionWorker:
    """A replica's body: sessions in, separated PCM out (boundary.py for the calls and answers)."""

    def __init__(self, model: str = "tiny", *, threads: int = 1, max_sessions: int = 32,
                 realtime_budget_s: float | None = None, text_encoder: str | None = None,
                 speech_expert: bool = True, orphan_timeout_s: float = 300.0, warmup: bool = True,
                 processor: ChunkProcessor | None = None) -> None:
        """`threads`: torch CPU threads of this replica (its Ray `num_cpus`); `realtime_budget_s`: the
        batcher's degradation budget (None: its default; math.inf: never degrade); `warmup`: run a text prompt
        once before serving (the first one loads the text encoder, which would stall the first sessions)."""
        self.replica = replica_name()
        if threads:
            import torch

            torch.set_num_threads(threads)
        self.model = model
        self.processor = processor if processor is not None else load_worker_processor(model, text_encoder,
                                                                                        speech_expert)
        if warmup:
            self._warm_up()
        self.max_sessions = max_sessions
        self.orphan_timeout_s = orphan_timeout_s
        self.batcher = Batcher(self.processor, max_batch=max_sessions, realtime_budget_s=realtime_budget_s)
        self.stats = ReplicaStats()
        self._slots: dict[str, _Slot] = {}
        self._opening = 0

    # ---------------------------------------------------------------- the boundary

    def info(self) -> dict:
        processor = self.processor
        return {"model": self.model, "replica": self.replica, "sample_rate": processor.sample_rate,
                "hop_samples": processor.hop_samples, "delay_samples": processor.delay_samples,
                "max_steps": processor.max_steps, "max_sessions": self.max_sessions}

    async def open(self, session: str, prompt: Prompt, client_rate: int, live: bool = True, front: str = ""):
        """Open `session` (`live`: its pacing, stream/batcher.py; `front`: who asks, for the load report) and
        hold it: yields ("ok", SessionInfo fields) or an error first, then returns when the session ends."""
        if session in self._slots:
            yield error(INPUT, f"session {session} is already open on replica {self.replica}")
            return
        if len(self._slots) + self._opening >= self.max_sessions:
            yield error(FULL, f"replica {self.replica} is at its limit of {self.max_sessions} sessions")
            return
        self._opening += 1
        try:
            handle = await self.batcher.open(prompt, client_rate, live=live)
        except UserFacingError as failure:  # e.g. a text prompt for a model without a text encoder
            yield error(PROMPT, str(failure))
            return
        except Exception as failure:
            yield error(MODEL, f"the model could not open a session: {failure}")
            return
        finally:
            self._opening -= 1
        slot = self._slots[session] = _Slot(handle, front)
        self.stats.opened += 1
        stream = handle.session
        backlog = stream.max_backlog_hops * stream.hop * client_rate // stream.model_rate
        session_info = SessionInfo(self.replica, handle.latency_samples, stream.max_frame, client_rate,
                                   stream.model_rate, stream.accepts_video, live, backlog)
        try:
            yield ("ok", session_info.__dict__)
            while not slot.ended.is_set():
                try:
                    await asyncio.wait_for(slot.ended.wait(), timeout=min(30.0, self.orphan_timeout_s))
                except TimeoutError:
                    if time.monotonic() - slot.last_call > self.orphan_timeout_s:
                        break
        finally:  # the session ended, or the front cancelled this call or went silent
            if not slot.ended.is_set():
                handle.abort()
                self._end(session)

    async def push(self, session: str, seq: int, pcm: np.ndarray) -> tuple:
        arrived = time.perf_counter()
        slot, work = await self._in_turn(session, seq, lambda handle: self._submit(handle, pcm))
        if slot is None:
            return work
        try:
            target, residual = await work.result()
        except StreamInputError as failure:
            if slot.handle.error is not None:
                return self._failed(session, slot)
            return error(INPUT, str(failure))
        except Exception:
            return self._failed(session, slot)
        seconds = time.perf_counter() - arrived
        self.stats.frames.observe(seconds)
        return ("ok", target, residual, self._snapshot(slot, seconds))

    async def push_many(self, frames: list[tuple[str, int, np.ndarray]]) -> list[tuple]:
        """Frames of several sessions in one call (a front sends together what queued for this replica while its
        earlier calls were under way): each is a `push`; the answers come back together, in the same order."""
        return list(await asyncio.gather(*(self.push(session, seq, pcm) for session, seq, pcm in frames)))

    async def set_prompt(self, session: str, seq: int, prompt: Prompt) -> tuple:
        slot, work = await self._in_turn(session, seq, lambda handle: handle.set_prompt(prompt))
        if slot is None:
            return work
        try:
            work.result()
        except UserFacingError as failure:
            return error(PROMPT, str(failure))
        except Exception as failure:
            return error(PROMPT_FAILED, str(failure))
        return ("ok",)

    async def push_video(self, session: str, seq: int, frames: np.ndarray, times_s: np.ndarray) -> tuple:
        slot, work = await self._in_turn(session, seq, lambda handle: handle.push_video(frames, times_s))
        if slot is None:
            return work
        try:
            work.result()
        except UserFacingError as failure:
            return error(INPUT, str(failure))
        except Exception as failure:
            return error(MODEL, str(failure))
        return ("ok",)

    async def close(self, session: str, seq: int) -> tuple:
        arrived = time.perf_counter()
        slot, work = await self._in_turn(session, seq, lambda handle: self._finish(handle))
        if slot is None:
            return work
        try:
            target, residual = await work.result()
        except Exception:
            return self._failed(session, slot)
        snapshot = self._snapshot(slot, time.perf_counter() - arrived)
        self._end(session)
        return ("ok", target, residual, snapshot)

    async def abort(self, session: str) -> tuple:
        slot = self._slots.get(session)
        if slot is None:
            return ("ok", 0)
        dropped = slot.handle.abort()
        self._end(session)
        return ("ok", dropped)

    # ---------------------------------------------------------------- Serve hooks and figures

    def record_routing_stats(self) -> dict[str, Any]:
        """Serve passes this to every router (RunningReplica.routing_stats): the replica's load and figures,
        which fronts show in /metrics per replica."""
        live = [slot.handle.metrics for slot in self._slots.values()]
        stats = self.stats
        return {
            "sessions": len(self._slots), "max_sessions": self.max_sessions, "level": self.batcher.level,
            "sessions_by_front": dict(Counter(slot.front for slot in self._slots.values())),
            "opened": stats.opened, "frames": sum(stats.frames.counts),
            "audio_in_s": stats.audio_in_s + sum(m.audio_in_s for m in live),
            "compute_s": stats.compute_s + sum(m.compute_s for m in live),
            "queue_hops": sum(m.queue_depth for m in live),
            "fewer_steps_s": stats.degraded_s[FEWER_STEPS] + sum(m.degraded_s[FEWER_STEPS] for m in live),
            "pass_through_s": stats.degraded_s[PASS_THROUGH] + sum(m.degraded_s[PASS_THROUGH] for m in live),
            "frame_counts": list(stats.frames.counts), "frame_sum_s": stats.frames.sum_s,
        }

    def check_health(self) -> None:
        """Serve's health check: a replica whose batcher thread died cannot serve; Serve replaces it."""
        if not self.batcher._thread.is_alive():
            raise RuntimeError(f"replica {self.replica}: the batcher's worker thread stopped")

    async def describe(self) -> dict:
        """info() and the live figures, for operators and tests (e.g. which process to stop)."""
        import os

        return {**self.info(), **self.record_routing_stats(), "pid": os.getpid(), "sessions_open": list(self._slots)}

    @property
    def sessions(self) -> int:
        return len(self._slots)

    # ---------------------------------------------------------------- internals

    async def _in_turn(self, session: str, seq: int, step: Callable[[StreamHandle], Awaitable[Any]]
                       ) -> tuple[_Slot | None, Any]:
        """Run `step(handle)` in call `seq`'s turn, then pass the turn on. A push's or close's step feeds the
        session and returns the future of its output, awaited outside the turn, so that many frames are in
        flight. Returns (slot, the finished step as a task), or (None, the `lost` answer)."""
        slot = self._slots.get(session)
        if slot is None:
            return None, self._lost(session)
        try:
            await self._take_turn(slot, seq)
        except _Gone:
            return None, self._lost(session)
        try:
            work = asyncio.ensure_future(step(slot.handle))
            await asyncio.wait([work])
        finally:
            self._pass_turn(slot)
        return slot, work

    @staticmethod
    async def _submit(handle: StreamHandle, pcm: np.ndarray) -> asyncio.Future:
        await handle.wait_for_room(len(pcm))  # fronts keep within the backlog; should one not, wait, not refuse
        return handle.submit(pcm)

    @staticmethod
    async def _finish(handle: StreamHandle) -> asyncio.Future:
        return asyncio.ensure_future(handle.close())

    async def _take_turn(self, slot: _Slot, seq: int) -> None:
        slot.last_call = time.monotonic()
        if slot.ended.is_set():
            raise _Gone
        if seq != slot.next_seq:
            turn = slot.waiting[seq] = asyncio.get_running_loop().create_future()
            await turn
        if slot.ended.is_set():
            raise _Gone

    def _pass_turn(self, slot: _Slot) -> None:
        slot.next_seq += 1
        turn = slot.waiting.pop(slot.next_seq, None)
        if turn is not None and not turn.done():
            turn.set_result(None)

    def _warm_up(self) -> None:
        from samstream.stream.session import StreamSession

        rate = self.processor.sample_rate
        try:
            session = StreamSession(self.processor, rate, Prompt(text="speech"))
            session.push(np.zeros(rate // 2, dtype=np.float32))
            session.flush()
        except UserFacingError:  # a model without text prompts: nothing to load
            pass

    def _snapshot(self, slot: _Slot, seconds: float) -> Snapshot:
        metrics = slot.handle.metrics
        return Snapshot(metrics.audio_in_s, metrics.audio_out_s, metrics.compute_s, metrics.queue_depth,
                        self.batcher.level, metrics.degraded_s[FEWER_STEPS], metrics.degraded_s[PASS_THROUGH],
                        seconds, metrics.quality)

    def _failed(self, session: str, slot: _Slot) -> tuple:
        reason = slot.handle.error or RuntimeError("the session failed")
        self._end(session)
        return error(MODEL, str(reason))

    def _lost(self, session: str) -> tuple:
        return error(LOST, f"replica {self.replica} holds no session {session}")

    def _end(self, session: str) -> None:
        slot = self._slots.pop(session, None)
        if slot is None:
            return
        metrics = slot.handle.metrics
        self.stats.audio_in_s += metrics.audio_in_s
        self.stats.compute_s += metrics.compute_s
        for level in self.stats.degraded_s:
            self.stats.degraded_s[level] += metrics.degraded_s[level]
        slot.ended.set()
        for turn in slot.waiting.values():
            if not turn.done():
                turn.set_result(None)  # the call sees `ended` and answers `lost`
        slot.waiting.clear()
