"""Keeping a one-machine Ray cluster (deploy.start_local_ray) on 127.0.0.1, through documented settings only:
samstream changes nothing inside Ray.

- Ray resolves a node IP of 127.0.0.1 to the machine's outward address unless it believes multi-node
  clusters are off: RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0, read once, when ray is imported. With it off, the
  GCS, raylet, object manager, core workers, agents and the Serve controller all listen on 127.0.0.1. So the
  variable must be in the environment before the first `import ray` of the process: `enter_loopback_mode()`
  sets it (and the children of the process -- raylet, workers, replicas -- inherit it), and refuses with a
  clear error when ray was imported earlier without it, instead of starting a cluster on the outward address.
- One listener remains beyond loopback, and Ray 2.60 has no option for it: every Serve replica starts an
  "inter-deployment" gRPC server on [::]:<ephemeral port> (ray/serve/_private/replica.py binds "[::]:0"
  unconditionally). Nothing of samstream uses it: fronts call replicas as Ray actor tasks, over the loopback
  cluster. samstream does not patch Ray to move it; on a shared or production host, firewall it
  (docs/scaling.md).
tests/test_ray_serve.py checks every listening socket of the cluster's processes (that gRPC listener of each
replica being the only one beyond loopback) and that none of their connections goes beyond loopback.
"""

from __future__ import annotations

import os
import sys

CLUSTER_VAR = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"  # Ray's documented switch; read when ray is imported
LOOPBACK_ENV = {CLUSTER_VAR: "0", "RAY_USAGE_STATS_ENABLED": "0"}


def enter_loopback_mode() -> None:
    """Before starting the local cluster, and before this process imports ray: the environment Ray and the
    cluster's processes must see. Raises RuntimeError when ray was imported without it (too late to set)."""
    if "ray" in sys.modules and os.environ.get(CLUSTER_VAR) != "0":
        raise RuntimeError(
            f"ray was imported before {CLUSTER_VAR}=0 was set (Ray reads it once, on import), so a local Ray "
            "cluster would listen on this machine's outward address rather than on 127.0.0.1. Set "
            f"{CLUSTER_VAR}=0 in the environment before starting (e.g. `export {CLUSTER_VAR}=0`), or call "
            "samstream.stream.cluster.loopback.enter_loopback_mode() before anything imports ray.")
    os.environ.update(LOOPBACK_ENV)
