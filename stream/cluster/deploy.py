"""Ray for samstream: start a local cluster on loopback (loopback.py) or join one, and build or deploy the
application of `SessionWorker` replicas (also from a `serve run` YAML file:
`import_path: samstream.stream.cluster.deploy:build_app`, deploy/samstream-serve.yaml).

Serve's HTTP proxy is never started: clients reach the replicas through samstream fronts (front.py), which
call them with deployment handles.
"""

from __future__ import annotations

import logging
import os
from dataclasses import asdict, dataclass, fields
from typing import Any

from samstream.stream.cluster.boundary import APP, DEPLOYMENT
from samstream.stream.cluster.loopback import enter_loopback_mode

log = logging.getLogger("samstream.cluster")

ROUTER = "samstream.stream.cluster.router.SessionAffinityRouter"
# How many calls a replica takes at once, per session it holds: its `open` call and the frames in flight (a
# client may keep up to 2 s of audio unanswered: 100 frames of 20 ms).
CALLS_PER_SESSION = 128


@dataclass
class WorkerOptions:
    """One deployment of SessionWorker replicas (the `args` of a `serve run` config take the same names)."""

    model: str = "tiny"
    replicas: int = 1  # fixed replica count, unless `max_replicas` > `replicas` (autoscaling)
    max_replicas: int = 0  # > replicas: Serve autoscales between `replicas` and this
    target_sessions: int = 8  # autoscaling: sessions per replica to aim at
    threads: int = 1  # CPU cores per replica: its Ray num_cpus and torch threads
    gpus: float = 0.0  # GPUs per replica (Ray num_gpus)
    max_sessions: int = 32  # sessions a replica holds at most (its batch size)
    realtime_budget_s: float | None = None  # the batcher's degradation budget (None: default; inf: never)
    text_encoder: str | None = None
    speech_expert: bool = True
    warmup: bool = True  # run a text prompt once per replica before it serves (loads the text encoder)
    drain_timeout_s: float = 300.0  # how long a removed replica may take to finish its sessions
    stats_period_s: float = 1.0  # how often replicas report their load and figures to the routers

    @classmethod
    def from_args(cls, args: dict[str, Any] | None) -> WorkerOptions:
        args = dict(args or {})
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(args) - known)
        if unknown:
            raise ValueError(f"unknown samstream deployment args {unknown}: use {sorted(known)}")
        options = cls(**args)
        if options.realtime_budget_s is not None:
            options.realtime_budget_s = float(options.realtime_budget_s)  # YAML's .inf, or a number
        return options


def worker_deployment(options: WorkerOptions):
    """The Serve deployment (not bound): session-affine routing, per-replica resources, drain time."""
    from ray import serve
    from ray.serve.config import RequestRouterConfig

    from samstream.stream.cluster.worker import SessionWorker

    if options.max_replicas > options.replicas:
        # Serve counts ongoing requests: a session's `open` call plus about one frame in flight.
        scaling: dict[str, Any] = {"autoscaling_config": {
            "min_replicas": options.replicas, "max_replicas": options.max_replicas,
            "target_ongoing_requests": 2 * options.target_sessions}}
    else:
        scaling = {"num_replicas": options.replicas}
    return serve.deployment(
        SessionWorker, name=DEPLOYMENT,
        ray_actor_options={"num_cpus": options.threads, "num_gpus": options.gpus},
        max_ongoing_requests=CALLS_PER_SESSION * options.max_sessions,
        graceful_shutdown_timeout_s=options.drain_timeout_s, graceful_shutdown_wait_loop_s=1.0,
        request_router_config=RequestRouterConfig(request_router_class=ROUTER,
                                                  request_routing_stats_period_s=options.stats_period_s,
                                                  request_routing_stats_timeout_s=max(5.0, options.stats_period_s)),
        **scaling,
    )


def build_app(args: dict[str, Any] | None = None):
    """The application: `serve run` calls this with the config's `args` (WorkerOptions' names)."""
    options = WorkerOptions.from_args(args)
    return worker_deployment(options).bind(
        options.model, threads=options.threads, max_sessions=options.max_sessions,
        realtime_budget_s=options.realtime_budget_s, text_encoder=options.text_encoder,
        speech_expert=options.speech_expert, warmup=options.warmup)


def start_local_ray(num_cpus: int | None = None) -> None:
    """A one-machine Ray cluster on 127.0.0.1 (loopback.py: GCS, raylet, workers, agents, the Serve controller;
    each Serve replica's unused inter-deployment gRPC server alone listens on [::], which Ray 2.60 offers no
    option to change), without the dashboard's web UI and without usage statistics. Raises RuntimeError when
    this process imported ray before the loopback settings were in its environment."""
    enter_loopback_mode()
    import ray

    ray.init(_node_ip_address="127.0.0.1", include_dashboard=False, num_cpus=num_cpus, log_to_driver=False,
             configure_logging=False)
    address = ray.get_runtime_context().gcs_address
    log.info("ray started", extra={"fields": {"gcs": address, "num_cpus": num_cpus}})
    if not address.startswith("127.0.0.1:"):
        ray.shutdown()
        raise RuntimeError(f"Ray bound {address}, not loopback: refusing to run a cluster reachable from outside")


def stop_local_ray() -> None:
    """Stop Serve's applications and the local cluster start_local_ray started."""
    import ray
    from ray import serve

    try:
        serve.shutdown()
    finally:
        ray.shutdown()


def connect_ray(address: str) -> None:
    """Join a running cluster (`auto`, HOST:PORT of its GCS, or ray://HOST:PORT for Ray Client)."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    import ray

    ray.init(address=address, log_to_driver=False, configure_logging=False)
    log.info("ray joined", extra={"fields": {"address": address}})


def app_running(app_name: str = APP) -> bool:
    from ray import serve

    try:
        status = serve.status()
    except Exception:  # Serve not started on this cluster
        return False
    app = status.applications.get(app_name)
    return app is not None and str(app.status).endswith("RUNNING")


def deploy(options: WorkerOptions, app_name: str = APP) -> None:
    """Start Serve without its HTTP proxy (fronts are samstream servers) and run the application; returns once
    every replica is up."""
    from ray import serve

    serve.start(proxy_location="Disabled")
    log.info("deploying", extra={"fields": {"app": app_name, **asdict(options)}})
    serve.run(build_app(asdict(options)), name=app_name, route_prefix=None, blocking=False)


def undeploy(app_name: str = APP) -> None:
    from ray import serve

    serve.delete(app_name)

