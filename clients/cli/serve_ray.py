"""`samstream serve --ray [ADDRESS]`: the live server as a transport front, the model as Ray Serve replicas.

Without ADDRESS a one-machine Ray cluster is started on 127.0.0.1 (each replica's unused Serve gRPC listener
excepted: Ray 2.60 binds it to [::], docs/scaling.md) and stopped on exit; with one
(`auto`, the GCS HOST:PORT, or ray://HOST:PORT) the front joins that cluster. The application `--ray-app`
is deployed (`--replicas`, `--max-replicas`, `--threads` per replica, `--replica-gpus`,
`--replica-sessions`) unless it runs already, e.g. from `serve run deploy/samstream-serve.yaml`: then this
process is one more front for it. Everything the single-process server offers (WebSocket protocol, WebRTC,
browser page, /health, /metrics) is served here; /health and /metrics add the replicas' figures
(docs/scaling.md)."""

from __future__ import annotations

import argparse
import os

LOCAL = "local"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("scale-out on Ray Serve (docs/scaling.md)")
    group.add_argument("--ray", nargs="?", const=LOCAL, metavar="ADDRESS",
                       help="serve the model from Ray Serve replicas: alone, start a local Ray cluster bound to "
                            "127.0.0.1; with ADDRESS (auto, HOST:PORT, ray://HOST:PORT) join that cluster")
    group.add_argument("--ray-app", default="samstream", help="Serve application name (default samstream)")
    group.add_argument("--replicas", type=int, default=1, help="model replicas to deploy (default 1)")
    group.add_argument("--max-replicas", type=int, default=0,
                       help="autoscale between --replicas and this many replicas (default: no autoscaling)")
    group.add_argument("--replica-sessions", type=int, default=32, help="sessions one replica holds at most")
    group.add_argument("--replica-gpus", type=float, default=0.0, help="GPUs reserved per replica (Ray num_gpus)")


def run_ray(args: argparse.Namespace, config) -> int:
    """Called by `samstream serve` when --ray is given, with its checked ServerConfig."""
    import asyncio
    import logging

    from samstream.model.errors import UserFacingError
    from samstream.stream.server.app import listen_socket

    log = logging.getLogger("samstream.server")
    if args.replicas < 1 or args.replica_sessions < 1:
        raise UserFacingError("--replicas and --replica-sessions must be at least 1")
    local = args.ray == LOCAL
    if local:  # Ray reads the loopback settings when it is imported: set them before (stream/cluster/loopback.py)
        from samstream.stream.cluster.loopback import enter_loopback_mode

        enter_loopback_mode()
    try:
        from ray import serve  # noqa: F401
    except ImportError:
        raise UserFacingError("--ray needs Ray Serve: pip install -e '.[ray]' (bash install.sh test installs it)") \
            from None
    sock = listen_socket(config.host, config.port)  # before anything slow: a busy port is said at once
    from samstream.stream.cluster import deploy
    from samstream.stream.cluster.front import ClusterBatcher
    from samstream.stream.server.app import SeparationServer
    from samstream.stream.server.webrtc import WebRTCService

    options = deploy.WorkerOptions(
        model=args.model, replicas=args.replicas, max_replicas=args.max_replicas, threads=args.threads,
        gpus=args.replica_gpus, max_sessions=args.replica_sessions, text_encoder=args.text_encoder,
        speech_expert=not getattr(args, "no_speech_expert", False), warmup=not args.no_warmup)
    if local:
        deploy.start_local_ray(num_cpus=max(os.cpu_count() or 1, args.replicas * args.threads))
    else:
        deploy.connect_ray(args.ray)
    try:
        if deploy.app_running(args.ray_app):
            log.info("joining the running application", extra={"fields": {"app": args.ray_app}})
        else:
            deploy.deploy(options, args.ray_app)

        async def serve() -> None:
            batcher = await ClusterBatcher.connect(args.ray_app)
            server = SeparationServer(batcher.processor, config, model_name=batcher.model_name, batcher=batcher)
            server.health_sources.append(batcher.health)
            server.metrics_sources.append(batcher.render_metrics)
            WebRTCService(server)  # WebRTC calls work through the front as well (docs/webrtc.md)
            await server.run_until_signal(sock, on_listening=lambda server: print(
                f"samstream serve --ray: listening; open {server.url('http')}/ in a browser (WebSocket clients: "
                f"{server.url('ws')}/; replicas: {', '.join(batcher.sessions_book().replicas())}; stop with Ctrl+C)",
                flush=True))

        asyncio.run(serve())
    finally:
        if local:
            deploy.stop_local_ray()
    return 0
