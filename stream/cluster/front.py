"""The front's side: a stand-in for the local `Batcher` whose sessions live on Ray Serve replicas.

`SeparationServer(..., batcher=await ClusterBatcher.connect())` serves the WebSocket protocol, WebRTC, the
browser page, /health and /metrics exactly as in one process; only where the model runs changes. Each
`RemoteStreamHandle` has the async API of `StreamHandle` (push, set_prompt, push_video, close, abort, error,
metrics, latency_samples) and forwards its calls to the replica that opened the session (router.py).

A replica that dies (or whose sessions are lost in any other way) ends exactly its sessions: their pending
and later calls fail with `ReplicaLost`, whose message starts with `replica_lost` and says how many input
samples had been answered; the WebSocket server reports it as `model_error` ("the session is over: send
start to open a new one", docs/protocol.md), and the client's next `start` lands on a live replica.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import secrets
import socket
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from samstream.model.errors import PromptError
from samstream.stream.cluster.boundary import (
    APP, DEPLOYMENT, FULL, INPUT, LOST, MODEL, PROMPT, SessionInfo, Snapshot, pin,
)
from samstream.stream.cluster.registry import book
from samstream.stream.cluster.worker import FRAME_BUCKETS, Histogram
from samstream.stream.metrics import FEWER_STEPS, PASS_THROUGH, SessionMetrics
from samstream.stream.processor import Prompt, StreamInputError

log = logging.getLogger("samstream.cluster")

class ReplicaLost(RuntimeError):
    """The replica holding a session died or no longer holds it: the session is over."""

    code = "replica_lost"

    def __init__(self, replica: str, answered: int, cause: str) -> None:
        super().__init__(f"replica_lost: model worker {replica} that held this session stopped ({cause}); "
                         f"{answered} input samples of the session had been answered")
        self.replica = replica
        self.answered = answered


@dataclass(frozen=True)
class ProcessorInfo:
    """What the servers read of `batcher.processor`: the model's rates and hop."""

    sample_rate: int
    hop_samples: int
    delay_samples: int
    max_steps: int


@dataclass(frozen=True)
class RemoteSession:
    """What the servers read of `handle.session`."""

    latency_samples: int
    max_frame: int
    client_rate: int
    model_rate: int
    accepts_video: bool
    live: bool
    has_room: Callable[[int], bool] = field(repr=False)  # whether a frame of n samples fits the backlog now


@dataclass
class FrontReplicaFigures:
    """This front's view of one replica: its frames' round trips and what the Ray hop added to them."""

    round_trip: Histogram = field(default_factory=Histogram)  # front sends a frame -> its output is back
    overhead: Histogram = field(default_factory=Histogram)  # round trip minus the replica's own time
    sessions_started: int = 0
    sessions_lost: int = 0


class ClusterBatcher:
    """The `Batcher` API in front of a deployment of `SessionWorker`s (see the module docstring)."""

    def __init__(self, handle: Any, app_name: str, deployment: str, info: dict) -> None:
        self._handle = handle
        self.app_name = app_name
        self.deployment = deployment
        self.model_name = info["model"]
        self.processor = ProcessorInfo(info["sample_rate"], info["hop_samples"], info["delay_samples"],
                                       info["max_steps"])
        self.front = f"{socket.gethostname()}:{os.getpid()}"
        self.figures: dict[str, FrontReplicaFigures] = {}
        self.handles: set[RemoteStreamHandle] = set()
        self._rpcs: dict[tuple[str, str], Any] = {}
        self._outboxes: dict[str, _Outbox] = {}
        self._background: set[asyncio.Task] = set()

    @classmethod
    async def connect(cls, app_name: str = APP, deployment: str = DEPLOYMENT,
                      timeout_s: float = 120.0) -> ClusterBatcher:
        """Attach to a running deployment (Ray must be initialised, deploy.py). Calls go to the replicas as Ray
        actor tasks, Serve's default (its gRPC transport, `_by_reference=False`, measured no better here:
        docs/scaling.md)."""
        from ray import serve

        handle = serve.get_deployment_handle(deployment, app_name=app_name)
        info = await handle.options(method_name="info").remote()
        front = cls(handle, app_name, deployment, info)
        deadline = time.monotonic() + timeout_s
        while not front.sessions_book().replicas():
            if time.monotonic() > deadline:
                raise RuntimeError(f"no replica of {app_name}/{deployment} reached this front in {timeout_s:g} s "
                                   "(its request_router_class must be samstream's SessionAffinityRouter)")
            await asyncio.sleep(0.05)
        return front

    def sessions_book(self):
        """The process's SessionBook for this deployment: replicas, their stats, this front's pins."""
        return book(self.app_name, self.deployment)

    @property
    def level(self) -> int:
        """The worst degradation level among the replicas (0 full quality, 1 fewer steps, 2 pass-through)."""
        return max((stats.get("level", 0) for stats in self.sessions_book().replicas().values()), default=0)

    async def open(self, prompt: Prompt, client_rate: int, *, live: bool = True) -> RemoteStreamHandle:
        """A session on the replica with the fewest sessions; another replica if that one is full or gone.
        `live`: the stream's pacing (stream/batcher.py)."""
        book = self.sessions_book()
        tried: set[str] = set()
        refusals: list[str] = []
        while (replica := self._place(book, tried)) is not None:
            tried.add(replica)
            session = secrets.token_hex(8)
            book.pin(replica)
            try:
                stream = self._rpc(replica, "open", stream=True).remote(session, prompt, client_rate, live, self.front)
                first = await stream.__anext__()
            except Exception as failure:  # the replica died or cannot be reached: try another
                book.unpin(replica)
                refusals.append(f"{replica}: {type(failure).__name__}")
                continue
            if first[0] == "ok":
                handle = RemoteStreamHandle(self, session, SessionInfo(**first[1]), stream)
                self.figures.setdefault(replica, FrontReplicaFigures()).sessions_started += 1
                return handle
            book.unpin(replica)
            kind, message = first[1], first[2]
            if kind in (FULL, LOST):
                refusals.append(message)
                continue
            if kind == PROMPT:
                raise PromptError(message)
            raise RuntimeError(message)
        raise RuntimeError("no replica can take a new session" + (f" ({'; '.join(refusals)})" if refusals else ""))

    async def aclose(self) -> None:
        """Abort the sessions still open (the server flushed those it could) and stop background work. The
        replicas stay: they belong to the deployment, not to this front."""
        for handle in list(self.handles):
            handle.abort()
        if self._background:
            await asyncio.wait(self._background, timeout=5.0)

    # ---------------------------------------------------------------- figures

    def health(self) -> dict:
        book = self.sessions_book()
        replicas = book.replicas()
        return {"cluster": {
            "app": self.app_name, "front": self.front, "lingering": book.lingering(),
            "replicas": {uid: {"sessions": stats.get("sessions", 0), "max_sessions": stats.get("max_sessions"),
                               "level": stats.get("level", 0)} for uid, stats in sorted(replicas.items())},
        }}

    def render_metrics(self) -> str:
        """Per-replica and per-front figures in Prometheus text form (appended to the front's /metrics)."""
        from samstream.stream.server.ops import escape_label, format_value

        book = self.sessions_book()
        replicas, pins, lingering = book.replicas(), book.pins(), set(book.lingering())
        names = sorted(set(replicas) | set(pins) | set(self.figures) | lingering)
        front = escape_label(self.front)
        lines: list[str] = []

        def metric(name: str, kind: str, help_text: str, samples: list[tuple[str, float]]) -> None:
            lines.append(f"# HELP samstream_{name} {help_text}")
            lines.append(f"# TYPE samstream_{name} {kind}")
            lines.extend(f"samstream_{name}{labels} {format_value(value)}" for labels, value in samples)

        def label(uid: str, **extra: str) -> str:
            pairs = [f'replica="{escape_label(uid)}"'] + [f'{key}="{value}"' for key, value in extra.items()]
            return "{" + ",".join(pairs) + "}"

        def histogram(name: str, help_text: str, rows: list[tuple[str, list[int], float]]) -> None:
            lines.append(f"# HELP samstream_{name} {help_text}")
            lines.append(f"# TYPE samstream_{name} histogram")
            for uid, counts, total in rows:
                cumulative = 0
                for bound, count in zip(FRAME_BUCKETS, counts):
                    cumulative += count
                    le = "+Inf" if bound == math.inf else str(bound)
                    lines.append(f'samstream_{name}_bucket{{replica="{escape_label(uid)}",le="{le}"}} {cumulative}')
                lines.append(f"samstream_{name}_sum{label(uid)} {format_value(total)}")
                lines.append(f"samstream_{name}_count{label(uid)} {cumulative}")

        metric("front_info", "gauge", "This front (host:pid) and the deployment it forwards to.",
               [(f'{{front="{front}",app="{escape_label(self.app_name)}",deployment="{escape_label(self.deployment)}"}}', 1)])
        metric("replica_up", "gauge", "1: the replica takes new sessions; 0: it is draining (removed by Serve, "
                                      "finishing its sessions).", [(label(uid), 1 if uid in replicas else 0) for uid in names])
        stats = {uid: replicas.get(uid, {}) for uid in names}
        metric("replica_sessions", "gauge", "Sessions open on the replica (all fronts; as of its last report).",
               [(label(uid), s.get("sessions", 0)) for uid, s in stats.items()])
        metric("replica_degradation_level", "gauge", "0 full quality, 1 fewer sampling steps, 2 pass-through.",
               [(label(uid), s.get("level", 0)) for uid, s in stats.items()])
        metric("replica_degraded_seconds_total", "counter", "Audio the replica produced at a degraded level.",
               [(label(uid, level="fewer_steps"), s.get("fewer_steps_s", 0.0)) for uid, s in stats.items()]
               + [(label(uid, level="pass_through"), s.get("pass_through_s", 0.0)) for uid, s in stats.items()])
        metric("replica_queue_hops", "gauge", "Hops waiting for compute on the replica.",
               [(label(uid), s.get("queue_hops", 0)) for uid, s in stats.items()])
        metric("replica_compute_seconds_total", "counter", "Model compute the replica spent on sessions.",
               [(label(uid), s.get("compute_s", 0.0)) for uid, s in stats.items()])
        metric("replica_audio_seconds_total", "counter", "Client audio the replica received.",
               [(label(uid), s.get("audio_in_s", 0.0)) for uid, s in stats.items()])
        histogram("replica_frame_seconds", "On the replica, from a frame's arrival to its output: its turn, hop "
                                           "buffering, queueing for the batch and compute.",
                  [(uid, s["frame_counts"], s["frame_sum_s"]) for uid, s in stats.items() if "frame_counts" in s])
        metric("front_sessions", "gauge", "Sessions this front holds on the replica.",
               [(label(uid), pins.get(uid, 0)) for uid in names])
        figures = {uid: self.figures.get(uid, FrontReplicaFigures()) for uid in names}
        metric("front_sessions_started_total", "counter", "Sessions this front opened on the replica.",
               [(label(uid), f.sessions_started) for uid, f in figures.items()])
        metric("front_sessions_lost_total", "counter", "Sessions this front lost with the replica (replica_lost).",
               [(label(uid), f.sessions_lost) for uid, f in figures.items()])
        outboxes = {uid: self._outboxes.get(uid) for uid in names}
        metric("front_push_calls_total", "counter", "Calls that carried frames to the replica (several sessions' "
                                                     "frames share a call under load).",
               [(label(uid), box.calls_sent if box else 0) for uid, box in outboxes.items()])
        metric("front_frames_total", "counter", "Frames sent to the replica.",
               [(label(uid), box.frames_sent if box else 0) for uid, box in outboxes.items()])
        histogram("front_hop_seconds", "At this front, from sending a frame to the replica to its output coming back.",
                  [(uid, f.round_trip.counts, f.round_trip.sum_s) for uid, f in figures.items()])
        histogram("front_ray_overhead_seconds", "What the Ray hop added to a frame: the front's round trip minus "
                                                "the replica's own time (routing, serialisation, transport).",
                  [(uid, f.overhead.counts, f.overhead.sum_s) for uid, f in figures.items()])
        return "\n".join(lines) + "\n"

    # ---------------------------------------------------------------- internals

    def _place(self, book, tried: set[str]) -> str | None:
        """The replica with the fewest sessions, not yet tried: this front's own (exact) plus those of other
        fronts (as of the replica's last report)."""
        pins = book.pins()
        load = {}
        for uid, stats in book.replicas().items():
            if uid not in tried:
                reported = stats.get("sessions_by_front", {})
                others = sum(reported.values()) - reported.get(self.front, 0)
                load[uid] = (pins.get(uid, 0) + others, uid)
        return min(load.values())[1] if load else None

    def _rpc(self, replica: str, method: str, stream: bool = False) -> Any:
        key = (replica, method + ("+stream" if stream else ""))
        rpc = self._rpcs.get(key)
        if rpc is None:
            options = {"stream": True} if stream else {}
            rpc = self._rpcs[key] = self._handle.options(method_name=method, session_id=pin(replica), **options)
        return rpc

    def _outbox(self, replica: str) -> _Outbox:
        outbox = self._outboxes.get(replica)
        if outbox is None:
            outbox = self._outboxes[replica] = _Outbox(self._rpc(replica, "push_many"))
        return outbox

    def _spawn(self, awaitable) -> None:
        async def run() -> None:
            try:
                await awaitable
            except Exception:  # fire and forget: a replica that is gone has nothing to abort
                pass

        task = asyncio.ensure_future(run())
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def _answered(self, replica: str, round_trip_s: float, replica_s: float) -> None:
        figures = self.figures.setdefault(replica, FrontReplicaFigures())
        figures.round_trip.observe(round_trip_s)
        figures.overhead.observe(max(0.0, round_trip_s - replica_s))


class _Outbox:
    """The frames bound for one replica. Serve's per-call cost (about 3 ms of CPU on each side here,
    docs/scaling.md) would otherwise be paid for every 20 ms frame of every session: a frame leaves at once
    when fewer than `CALLS_IN_FLIGHT` calls to the replica are under way, else it waits and leaves with the
    others that queued meanwhile, in one `push_many` call. One stream's frames go one per call; many streams'
    frames share calls. Each frame's answer is its own `push` answer."""

    CALLS_IN_FLIGHT = 2
    MOST_FRAMES = 64  # per call

    def __init__(self, rpc: Any) -> None:
        self._rpc = rpc
        self._queue: list[tuple[tuple[str, int, np.ndarray], asyncio.Future]] = []
        self._calls = 0
        self.calls_sent = 0
        self.frames_sent = 0

    def send(self, session: str, seq: int, pcm: np.ndarray) -> asyncio.Future:
        """The replica's answer to this frame (or the exception that stopped its call)."""
        answer = asyncio.get_running_loop().create_future()
        self._queue.append(((session, seq, pcm), answer))
        self._pump()
        return answer

    def _pump(self) -> None:
        while self._queue and self._calls < self.CALLS_IN_FLIGHT:
            batch, self._queue = self._queue[: self.MOST_FRAMES], self._queue[self.MOST_FRAMES :]
            self._calls += 1
            self.calls_sent += 1
            self.frames_sent += len(batch)
            asyncio.ensure_future(self._call(batch))

    async def _call(self, batch: list) -> None:
        try:
            answers = await self._rpc.remote([frame for frame, _ in batch])
        except Exception as failure:  # the replica died or cannot be reached: every frame of the call fails
            for _, answer in batch:
                if not answer.done():
                    answer.set_exception(failure)
        else:
            for (_, answer), reply in zip(batch, answers):
                if not answer.done():
                    answer.set_result(reply)
        finally:
            self._calls -= 1
            self._pump()


class RemoteStreamHandle:
    """One session on a replica, with `StreamHandle`'s API (see the module docstring)."""

    def __init__(self, front: ClusterBatcher, session: str, info: SessionInfo, stream: Any) -> None:
        self.front = front
        self.id = session
        self.replica = info.replica
        self.session = RemoteSession(info.latency_samples, info.max_frame, info.client_rate, info.model_rate,
                                     info.accepts_video, info.live, self._has_room)
        self._backlog = info.backlog_samples
        self.metrics = SessionMetrics(latency_ms=1000.0 * info.latency_samples / info.client_rate)
        self.error: BaseException | None = None
        # Set when the session's `open` call failed (the replica died): the next call fails with it at once, and
        # only then does `error` take it, so that the client hears `replica_lost` as the answer to a request.
        self._lost: ReplicaLost | None = None
        self.answered = 0  # input samples whose output came back
        self._owed = 0  # input samples sent and not answered yet
        self._room: asyncio.Future | None = None  # wait_for_room's waiter, woken when answers come back
        self._seq = 0
        self._closing = False
        self._ended = False  # the replica ended the session normally (close)
        front.handles.add(self)
        self._held = asyncio.ensure_future(self._hold(stream))

    @property
    def latency_samples(self) -> int:
        return self.session.latency_samples

    @property
    def live(self) -> bool:
        return self.session.live

    async def push(self, pcm: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return await self.submit(pcm)

    def submit(self, pcm: np.ndarray) -> asyncio.Future:
        """Send a frame now (the replica takes frames in call order); the future gets its output. Raises
        StreamInputError at once when the frame does not fit the session's backlog (see `wait_for_room`)."""
        self._check_usable()
        if self._owed + len(pcm) > self._backlog:
            raise StreamInputError(f"stream backlog full: {self._owed} samples wait for compute (limit "
                                   f"{self._backlog}); send audio at real-time pace")
        seq = self._next_seq()
        self._owed += len(pcm)
        return asyncio.ensure_future(self._push(seq, pcm))

    def _has_room(self, samples: int) -> bool:
        return self._owed + samples <= self._backlog

    async def wait_for_room(self, samples: int) -> None:
        """Flow control: return once a frame of `samples` samples fits the session's backlog (counting every
        sample not answered yet as still waiting on the replica), or once the session failed or closed."""
        while not (self.error is not None or self._lost is not None or self._closing
                   or self._owed + samples <= self._backlog):
            self._room = self._room or asyncio.get_running_loop().create_future()
            await self._room

    async def _push(self, seq: int, pcm: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        sent = time.perf_counter()
        try:
            _, target, residual, snapshot = await self._answer(self.front._outbox(self.replica).send(self.id, seq, pcm))
        finally:
            self._owed -= len(pcm)
            self._wake()
        self._note(snapshot)
        self.answered += len(pcm)
        self.front._answered(self.replica, time.perf_counter() - sent, snapshot.replica_s)
        return target, residual

    async def set_prompt(self, prompt: Prompt) -> None:
        self._check_usable()
        await self._call("set_prompt", self._next_seq(), prompt)

    async def push_video(self, frames: np.ndarray, times_s: np.ndarray) -> None:
        self._check_usable()
        await self._call("push_video", self._next_seq(), frames, times_s)

    async def close(self) -> tuple[np.ndarray, np.ndarray]:
        self._check_usable()
        self._closing = True
        _, target, residual, snapshot = await self._call("close", self._next_seq())
        self._note(snapshot)
        self._ended = True
        return target, residual

    def abort(self) -> int:
        """Drop the session (its client went away); returns the input samples left unanswered."""
        if self._closing or self.error is not None:
            return 0
        self._closing = True
        self.error = StreamInputError("this stream was aborted: its client went away")
        self._wake()
        self.front._spawn(self.front._rpc(self.replica, "abort").remote(self.id))
        return self._owed

    # ---------------------------------------------------------------- internals

    def _wake(self) -> None:
        room, self._room = self._room, None
        if room is not None and not room.done():
            room.set_result(None)

    def _check_usable(self) -> None:
        if self._lost is not None and self.error is None and not self._closing:
            self.error = self._lost  # the transports report `error` as why the stream is over
            raise StreamInputError(str(self._lost))
        if self.error is not None:
            raise StreamInputError(f"this stream failed and was closed ({self.error}): open a new stream")
        if self._closing:
            raise StreamInputError("this stream was closed: open a new stream")

    def _next_seq(self) -> int:
        seq, self._seq = self._seq, self._seq + 1
        return seq

    async def _call(self, method: str, *args: Any) -> tuple:
        return await self._answer(self.front._rpc(self.replica, method).remote(self.id, *args))

    async def _answer(self, call: Any) -> tuple:
        """The replica's answer to a call, or the exception it stands for."""
        try:
            reply = await call
        except asyncio.CancelledError:
            raise
        except Exception as failure:  # replicas answer errors, never raise: this is Ray saying it failed
            raise self._lose(f"{type(failure).__name__}") from None
        if reply[0] == "ok":
            return reply
        kind, message = reply[1], reply[2]
        if kind == LOST:
            raise self._lose(message)
        if kind == INPUT:
            raise StreamInputError(message)
        if kind == PROMPT:
            raise PromptError(message)
        if kind == MODEL:
            if self.error is None:
                self.error = RuntimeError(message)
            raise self.error
        raise RuntimeError(message)  # PROMPT_FAILED: the old prompt stays

    def _lose(self, cause: str) -> BaseException:
        """A call failed with the replica: the session is over."""
        self._note_lost(cause)
        if self.error is None:
            self.error = self._lost
        self._wake()
        return self.error

    def _note_lost(self, cause: str) -> None:
        self._wake()
        if self._lost is None:
            self._lost = ReplicaLost(self.replica, self.answered, cause)
            self.front.figures.setdefault(self.replica, FrontReplicaFigures()).sessions_lost += 1
            log.warning("session lost with its replica", extra={"fields": {
                "replica": self.replica, "cluster_session": self.id, "samples_answered": self.answered,
                "samples_unanswered": self._owed, "cause": cause}})

    def _note(self, snapshot: Snapshot) -> None:
        metrics = self.metrics
        metrics.audio_in_s, metrics.audio_out_s = snapshot.audio_in_s, snapshot.audio_out_s
        metrics.compute_s, metrics.queue_depth, metrics.level = snapshot.compute_s, snapshot.queue_depth, snapshot.level
        metrics.degraded_s[FEWER_STEPS] = snapshot.fewer_steps_s
        metrics.degraded_s[PASS_THROUGH] = snapshot.pass_through_s
        metrics.quality = snapshot.quality

    async def _hold(self, stream: Any) -> None:
        """Follow the session's `open` call: it ends when the replica ends the session, and fails at once
        when the replica dies (even while the client sends nothing)."""
        try:
            async for _ in stream:
                pass
            if not self._ended and not self._closing and self.error is None:
                self._note_lost("the replica ended the session")
        except asyncio.CancelledError:
            raise
        except Exception as failure:
            if not self._ended:
                self._note_lost(type(failure).__name__)
        finally:
            self.front.handles.discard(self)
            self.front.sessions_book().unpin(self.replica)

