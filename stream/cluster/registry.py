"""What the session-affinity routers and the fronts of one process share, per (application, deployment).

Serve builds a router for every deployment handle (a front's, `serve.run`'s, ...), from a copy of router.py
that it pickles by value, so that copy's module globals are not router.py's. The routers and fronts of a
process therefore meet here, in a module imported by reference: which replicas take new sessions (with their
routing stats), which removed replicas still hold sessions of this process, and how many.
"""

from __future__ import annotations

import threading
from collections import Counter
from typing import Any

_BOOKS: dict[tuple[str, str], SessionBook] = {}
_LOCK = threading.Lock()


class SessionBook:
    """Sessions of this process per replica, and the replica set as the routers last saw it. Thread-safe:
    Serve runs routers on their own event loop thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pins: Counter[str] = Counter()
        self._serving: dict[str, Any] = {}  # unique id -> RunningReplica: replicas that take new sessions
        self._lingering: set[str] = set()  # removed by Serve, still holding sessions of this process
        self._dead: set[str] = set()

    def pin(self, replica: str) -> None:
        with self._lock:
            self._pins[replica] += 1

    def unpin(self, replica: str) -> None:
        with self._lock:
            self._pins[replica] -= 1
            if self._pins[replica] <= 0:
                del self._pins[replica]
                self._lingering.discard(replica)

    def pins(self) -> dict[str, int]:
        with self._lock:
            return dict(self._pins)

    def replicas(self) -> dict[str, dict[str, Any]]:
        """Replicas that take new sessions: unique id -> the replica's routing stats (worker.py)."""
        with self._lock:
            return {uid: dict(replica.routing_stats or {}) for uid, replica in self._serving.items()}

    def lingering(self) -> list[str]:
        with self._lock:
            return sorted(self._lingering)

    def update(self, serving: dict[str, Any], removed: set[str]) -> set[str]:
        """A router's new replica set; returns the removed replicas it must keep routing to (they hold
        sessions of this process and are not known dead)."""
        with self._lock:
            self._serving = dict(serving)
            keep = {uid for uid in removed | self._lingering
                    if uid not in serving and self._pins[uid] > 0 and uid not in self._dead}
            self._lingering = keep
            return keep

    def died(self, replica: str) -> None:
        with self._lock:
            self._dead.add(replica)
            self._lingering.discard(replica)
            self._serving.pop(replica, None)


def book(app_name: str, deployment: str) -> SessionBook:
    with _LOCK:
        return _BOOKS.setdefault((app_name, deployment), SessionBook())
