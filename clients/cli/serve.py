"""`samstream serve [--model tiny|DIR] [--host 127.0.0.1] [--port 8765] [--token T] [--max-sessions N]
[--allowed-origin O ...] [--static DIR]`: the live separation server: the WebSocket
protocol samstream.v1 (docs/protocol.md) with WebRTC signalling on the same socket (docs/webrtc.md),
/health, /metrics and the browser client. Stops gracefully on SIGINT/SIGTERM: open sessions get their tail and `end`.

With a SAM Audio checkpoint: `--predict-spans` predicts "+" spans per window for text prompts without spans
(PE-A-Frame, with hysteresis across windows); `--quality-interval S` scores each session's last
`--quality-window` seconds with the SAM Audio Judge every S seconds of audio, on a background thread, and
reports the scores in its metrics (WebSocket `metrics` replies, the browser page)."""

from __future__ import annotations

import argparse
import os
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default="tiny",
                        help="'tiny' (embedded default), a SAM Audio checkpoint directory, or 'random' (the tiny "
                             "architecture with untrained weights: same speed, no separation; for client and "
                             "load tests)")
    parser.add_argument("--text-encoder", help="local T5 directory for SAM Audio checkpoints (or SAMSTREAM_T5_DIR)")
    parser.add_argument("--no-speech-expert", action="store_true",
                        help="default model: its own networks alone, without the DeepFilterNet3 speech expert")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind; anything but loopback needs --token")
    parser.add_argument("--port", type=int, default=8765, help="port (0: any free port, logged)")
    parser.add_argument("--token", default=os.environ.get("SAMSTREAM_TOKEN"),
                        help="access token clients must send (default: $SAMSTREAM_TOKEN)")
    parser.add_argument("--max-sessions", type=int, default=16, help="concurrent streaming sessions")
    parser.add_argument("--allowed-origin", action="append", default=[], metavar="ORIGIN",
                        help="browser origin allowed to connect besides the server's own, e.g. "
                             "https://app.example.org; repeatable")
    parser.add_argument("--static", type=Path, help="folder of the browser client served at / (default: clients/web)")
    parser.add_argument("--idle-timeout", type=float, default=30.0, help="seconds without a client message "
                                                                        "before its connection is closed")
    parser.add_argument("--max-message-bytes", type=int, default=2**21, help="largest WebSocket message accepted")
    parser.add_argument("--send-timeout", type=float, default=10.0,
                        help="seconds a reply may wait for a client that does not read before it is cut off "
                             "(default 10)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch CPU threads for the model (default 1: on a shared 2-core machine two threads "
                             "made a batch-1 step ~50x slower than one)")
    parser.add_argument("--predict-spans", action="store_true",
                        help="SAM Audio: predict spans of text prompts per window with PE-A-Frame")
    parser.add_argument("--quality-interval", type=float, default=0.0, metavar="S",
                        help="SAM Audio: score each session with the SAM Audio Judge every S seconds of audio "
                             "(off the audio path; 0: never, the default)")
    parser.add_argument("--quality-window", type=float, default=5.0, metavar="S",
                        help="seconds of output the live Judge score covers (default 5)")
    parser.add_argument("--voice-meter", type=float, default=0.5, metavar="S",
                        help="sessions with an enrolled voice: its GE2E similarity to the last 1.6 s of input and of "
                             "output every S seconds of audio, off the audio path, in the metrics (0: off; default 0.5)")
    parser.add_argument("--span-predictor", metavar="DIR", help="PE-A-Frame directory (default: inside the model "
                                                                "directory or $SAMSTREAM_SPAN_PREDICTOR_DIR)")
    parser.add_argument("--judge", metavar="DIR", help="SAM Audio Judge directory (default: inside the model "
                                                       "directory or $SAMSTREAM_JUDGE_DIR)")
    parser.add_argument("--no-warmup", action="store_true",
                        help="skip the start-up run that loads the text encoder before clients arrive")
    from samstream.clients.cli import serve_ray

    serve_ray.add_arguments(parser)  # --ray [ADDRESS]: the model on Ray Serve replicas (serve_ray.py)


def run(args: argparse.Namespace) -> int:
    import asyncio
    import logging
    import time

    import numpy as np
    import torch

    from samstream.model.errors import UserFacingError
    from samstream.stream.processor import Prompt
    from samstream.clients import browser_client_dir
    from samstream.clients.cli import checks
    from samstream.stream.server.app import SeparationServer, listen_socket
    from samstream.stream.server.ops import ServerConfig, configure_logging
    from samstream.stream.server.webrtc import WebRTCService
    from samstream.stream.voice_meter import with_voice_meter

    configure_logging()
    log = logging.getLogger("samstream.server")
    config = ServerConfig(host=args.host, port=args.port, token=args.token, max_sessions=args.max_sessions,
                          allowed_origins=tuple(args.allowed_origin), static_dir=args.static or browser_client_dir(),
                          max_message_bytes=args.max_message_bytes, idle_timeout_s=args.idle_timeout,
                          send_timeout_s=args.send_timeout)
    # Before loading the model (seconds): a refused setting, an unknown model or a busy port is said at once.
    config.check()
    checks.model_name(args.model, extra=("random",))
    if args.ray is not None:  # the model on Ray Serve replicas, this process their front (serve_ray.py)
        from samstream.clients.cli.serve_ray import run_ray

        return run_ray(args, config)
    sock = listen_socket(config.host, config.port)
    torch.set_num_threads(args.threads)
    processor = load_processor(args.model, args.text_encoder, speech_expert=not args.no_speech_expert)
    batcher_options = attach_side_models(processor, args, lambda line: log.info(line))
    batcher_options = with_voice_meter(batcher_options, processor.sample_rate, args.voice_meter)

    async def serve() -> None:
        server = SeparationServer(processor, config, model_name=args.model, **batcher_options)
        WebRTCService(server)  # webrtc_offer / webrtc_candidate / webrtc_ping on the same socket (docs/webrtc.md)
        if not args.no_warmup:
            # The first text prompt loads the text encoder on the batcher's thread (~12 s), which would stall
            # every stream running then; load it now, while no one is listening.
            started = time.perf_counter()
            try:
                handle = await server.batcher.open(Prompt(text="speech"), processor.sample_rate)
                await handle.push(np.zeros(processor.sample_rate // 2, dtype=np.float32))
                await handle.close()
                log.info("warmed up", extra={"fields": {"seconds": round(time.perf_counter() - started, 2)}})
            except UserFacingError as error:
                log.warning("text prompts are unavailable", extra={"fields": {"reason": str(error)}})
        await server.run_until_signal(sock, on_listening=lambda server: print(listening_note(server), flush=True))

    asyncio.run(serve())
    return 0


def listening_note(server) -> str:
    """What `serve` prints once it listens: where the browser client and the WebSocket are."""
    host = server.config.host
    page = server.url("http") + "/"
    if host in ("0.0.0.0", "::"):  # every interface: the browser needs one of this machine's addresses
        page = f"http://THIS-MACHINE:{server.port}/"
    token = "?token=YOUR_TOKEN" if server.config.token is not None else ""
    return (f"samstream serve: listening; open {page}{token} in a browser (WebSocket clients: "
            f"{server.url('ws')}/; stop with Ctrl+C)")


def attach_side_models(processor, args: argparse.Namespace, report) -> dict:
    """Load the side models the flags ask for (and only those), give the span predictor to the processor, and
    return the batcher options (the live Judge monitor)."""
    if not (args.predict_spans or args.quality_interval):
        return {}
    from samstream.model.components import side_models_for
    from samstream.model.errors import PromptError
    from samstream.stream.quality import QualityConfig, QualityMonitor
    from samstream.stream.regimes.sliding_window import SlidingWindowProcessor

    if not isinstance(processor, SlidingWindowProcessor):
        raise PromptError("--predict-spans and --quality-interval need a SAM Audio checkpoint (--model DIR)")
    side = side_models_for(args.model, args.span_predictor, args.judge, report=report)
    if args.predict_spans:
        processor.use_span_predictor(side.span_predictor())
    if not args.quality_interval:
        return {}
    config = QualityConfig(interval_s=args.quality_interval, window_s=args.quality_window)
    return {"quality_monitor": QualityMonitor(side.judge(), processor.sample_rate, config)}


def load_processor(model: str, text_encoder: str | None = None, speech_expert: bool = True):
    """The engine processor for --model, with a clear error when the default model cannot load."""
    from samstream.model.errors import ModelLoadError

    if model == "random":
        import torch

        from samstream.model.embedded import EmbeddedConfig, EmbeddedModel, EmbeddedSeparator
        from samstream.stream.regimes.block_causal import BlockCausalProcessor

        torch.manual_seed(0)
        return BlockCausalProcessor(EmbeddedSeparator(EmbeddedModel(EmbeddedConfig())))
    from samstream.stream.regimes import make_processor

    try:
        return make_processor(model, text_encoder, speech_expert=speech_expert)
    except ModelLoadError as error:
        if model != "tiny":
            raise
        raise ModelLoadError(f"the default model 'tiny' cannot load ({error}); pass --model DIR with a SAM Audio "
                             "checkpoint directory, or train the embedded model (samstream train)") from None
