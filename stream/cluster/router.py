"""Session-affine routing for the SessionWorker deployment: Ray Serve's request-router extension point.

Serve builds one router per deployment handle, in the process that calls (a front). Every call of a
session carries the routing key `pin(replica)` (`handle.options(session_id=...)`, boundary.py), and this
router sends it to that replica and nowhere else. Which replica a new session goes to is the front's choice
(front.py: the one with the fewest sessions), made from `replicas()`, so it is pinned from its first call.

Serve's own routers do not fit: power-of-two-choices spreads calls by queue length, multiplexing falls back
to other replicas under load, and the experimental consistent-hash router moves keys when the replica set
changes, while a session's state (ring buffers, caches, KV cache) exists on one replica only.

Draining. When Serve removes a replica (scale-down, redeploy) it stops sending it new work and waits for its
ongoing requests, up to `graceful_shutdown_timeout_s`. Each session's `open` call stays ongoing for the
session's life, so the replica stays up; this router keeps routing the pinned sessions' calls to it (it
"lingers") until they end or it dies, while new sessions go elsewhere. Its sessions thus finish normally.

A pinned call whose replica is gone goes to any live replica, which answers `lost` (it holds no such session):
the front then ends the session with its documented error.

Serve pickles this module by value to ship the router, and builds one router per deployment handle: what
the routers and fronts of a process share lives in registry.py (a SessionBook per deployment), and nothing
here may hold a lock or other unpicklable global.
"""

from __future__ import annotations

from ray.serve.request_router import PendingRequest, ReplicaID, RequestRouter, RunningReplica

from samstream.stream.cluster import registry
from samstream.stream.cluster.boundary import pinned_replica

class SessionAffinityRouter(RequestRouter):
    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._book = registry.book(self._deployment_id.app_name, self._deployment_id.name)
        self._known: dict[str, RunningReplica] = {}  # every replica this router routes to, by unique id

    def update_replicas(self, replicas: list[RunningReplica]) -> None:
        serving = {r.replica_id.unique_id: r for r in replicas}
        keep = self._book.update(serving, set(self._known) - set(serving))
        self._known = {**{uid: self._known[uid] for uid in keep if uid in self._known}, **serving}
        super().update_replicas(list(self._known.values()))

    def on_replica_actor_died(self, replica_id: ReplicaID) -> None:
        self._book.died(replica_id.unique_id)
        self._known.pop(replica_id.unique_id, None)
        super().on_replica_actor_died(replica_id)

    async def choose_replicas(self, candidate_replicas: list[RunningReplica],
                              pending_request: PendingRequest | None = None) -> list[list[RunningReplica]]:
        target = pinned_replica(pending_request.metadata.session_id) if pending_request is not None else None
        if target is not None:
            for replica in candidate_replicas:
                if replica.replica_id.unique_id == target:
                    return [[replica]]
        # Unpinned calls (info, describe) go to a replica that takes new work; so does a pinned call whose
        # replica is gone: the replica that gets it answers `lost`.
        serving = self._book.replicas()
        return [[r for r in candidate_replicas if r.replica_id.unique_id in serving] or list(candidate_replicas)]
