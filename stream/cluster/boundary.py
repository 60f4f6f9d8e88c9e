"""What crosses between a front and a replica: plain tuples of numbers, strings and numpy arrays.

Front -> replica, per session, each call numbered (`seq`) so the replica applies them in the order the
client sent them, whatever order Ray delivers them in:
    open(session, prompt, client_rate, live)    a streaming call held for the session's life
    push(session, seq, pcm)                     -> ("ok", target, residual, Snapshot)
    push_many([(session, seq, pcm), ...])       -> [push's answer, ...]: frames of many sessions, one call
    set_prompt(session, seq, prompt)            -> ("ok",)
    push_video(session, seq, frames, times_s)   -> ("ok",)
    close(session, seq)                         -> ("ok", target tail, residual tail, Snapshot)
    abort(session)                              -> ("ok", input samples dropped unanswered)
Any of them may answer ("error", kind, message) instead; replicas never raise to the front, so an
exception at the front always means the replica (or the way to it) failed.

`open` first yields ("ok", SessionInfo as a dict) or an error, then stays open until the session ends: a
replica being drained by Serve waits for its ongoing requests, so its sessions can finish (tail + end),
and the front learns at once when the replica holding a session dies.
"""

from __future__ import annotations

from dataclasses import dataclass

# The Serve application and deployment names fronts look for unless told otherwise.
APP = "samstream"
DEPLOYMENT = "SessionWorker"

# Error kinds a replica answers with.
INPUT = "input"  # the frame or call was refused (e.g. backlog full); the session goes on
MODEL = "model"  # the model failed on this session: it is over
PROMPT = "prompt"  # a prompt the model cannot use (user-facing): the old prompt stays, or no session
PROMPT_FAILED = "prompt_failed"  # the model failed to switch prompts: the old prompt stays
FULL = "full"  # open: this replica is at its session limit
LOST = "lost"  # the replica does not hold this session (it was opened on a replica that went away)

# The routing key of a session's calls: `handle.options(session_id=pin(replica))` (router.py).
PIN_PREFIX = "samstream-replica:"


def pin(replica: str) -> str:
    return PIN_PREFIX + replica


def pinned_replica(key: str) -> str | None:
    return key[len(PIN_PREFIX):] if key.startswith(PIN_PREFIX) else None


def error(kind: str, message: str) -> tuple[str, str, str]:
    return ("error", kind, message)


@dataclass(frozen=True)
class SessionInfo:
    """What the front needs to know of a session the replica opened."""

    replica: str
    latency_samples: int
    max_frame: int  # client samples per frame at most
    client_rate: int
    model_rate: int
    accepts_video: bool
    live: bool  # pacing: live (may be degraded) or as fast as possible (flow-controlled)
    backlog_samples: int  # client samples the session buffers for compute at most: fronts keep within it


@dataclass(frozen=True)
class Snapshot:
    """A session's metrics as they stood when the replica answered, and how long the replica spent on
    the call (from its arrival to its answer: waiting for its turn, buffering, queueing and compute)."""

    audio_in_s: float
    audio_out_s: float
    compute_s: float
    queue_depth: int
    level: int
    fewer_steps_s: float
    pass_through_s: float
    replica_s: float
    quality: dict | None = None
