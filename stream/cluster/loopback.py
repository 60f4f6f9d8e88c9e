"""Keeping a one-machine Ray cluster on 127.0.0.1 (deploy.start_local_ray): nothing of it may be reachable
from another machine.

Two things stand in the way in Ray 2.60, and each is dealt with here:
- Ray resolves a node IP of 127.0.0.1 to the machine's outward address unless it believes multi-node
  clusters are off (RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0, read when ray is imported). With it off, the GCS,
  raylet, object manager, core workers and agents all listen on 127.0.0.1.
- Every Serve replica starts an "inter-deployment" gRPC server on [::]:0 (all interfaces, no option). On
  one machine nothing needs it beyond loopback (handles call replicas as Ray actors), so replicas of a
  loopback cluster bind it to 127.0.0.1 instead.
The children of the process that starts the cluster (raylet, workers, replicas) inherit LOOPBACK_ENV.
tests/test_ray_serve.py checks every listening socket of the cluster's processes.
"""

from __future__ import annotations

import os
import sys

LOOPBACK_FLAG = "SAMSTREAM_RAY_LOOPBACK"
LOOPBACK_ENV = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_USAGE_STATS_ENABLED": "0", LOOPBACK_FLAG: "1"}


def enter_loopback_mode() -> None:
    """Before starting the local cluster: the environment its processes will inherit."""
    os.environ.update(LOOPBACK_ENV)
    if "ray" in sys.modules:  # imported before: its constant was read from the environment already
        from ray._private import ray_constants

        ray_constants.ENABLE_RAY_CLUSTER = False


def keep_replica_on_loopback() -> None:
    """In a replica of a loopback cluster, before Serve starts the replica's gRPC server (it does so right
    after the deployment's constructor returns): bind it to 127.0.0.1 rather than [::]."""
    if os.environ.get(LOOPBACK_FLAG) != "1":
        return
    from ray.serve._private import replica

    bind = replica.add_port_to_grpc_server
    if getattr(bind, "samstream_loopback", False):
        return

    def bind_loopback(server, address: str):
        return bind(server, address.replace("[::]", "127.0.0.1").replace("0.0.0.0", "127.0.0.1"))

    bind_loopback.samstream_loopback = True
    replica.add_port_to_grpc_server = bind_loopback
