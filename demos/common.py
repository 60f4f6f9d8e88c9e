"""Shared by the demos: load a model and start a samstream server (WebSocket + WebRTC + the browser page)
in this process, or point at one that already runs."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def add_server_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--server", metavar="URL", help="use a running server (ws://host:port/) instead of "
                                                        "starting one in this process")
    parser.add_argument("--model", default="tiny", help="model for the server started here: 'tiny' (default), a "
                                                        "SAM Audio checkpoint directory, or a .safetensors file")
    parser.add_argument("--port", type=int, default=0, help="port of the server started here (0: any free port)")


def load_processor(model: str):
    import torch

    from samstream.model.errors import UserFacingError
    from samstream.clients.cli.mic import make_processor

    torch.set_num_threads(1)  # batch-1 steps on a small CPU: one thread is fastest (see `samstream serve --threads`)
    try:
        return make_processor(model)
    except UserFacingError as error:
        sys.exit(f"cannot load the model {model!r}: {error}")


async def start_server(model: str, port: int = 0, realtime_budget_s: float | None = None):
    """A SeparationServer on 127.0.0.1 with the WebRTC service, the browser client and the voice meter (as
    `samstream serve` has them); returns (server, url)."""
    from samstream.clients import browser_client_dir
    from samstream.stream.server.app import SeparationServer
    from samstream.stream.server.ops import ServerConfig
    from samstream.stream.server.webrtc import WebRTCService
    from samstream.stream.voice_meter import with_voice_meter

    processor = load_processor(model)
    options = {} if realtime_budget_s is None else {"realtime_budget_s": realtime_budget_s}
    options = with_voice_meter(options, processor.sample_rate, 0.5)
    server = SeparationServer(processor, ServerConfig(port=port, static_dir=browser_client_dir()),
                              model_name=model, **options)
    WebRTCService(server)
    await server.start()
    return server, f"ws://127.0.0.1:{server.port}/"


def si_sdr_aligned(estimate, reference, scored: slice, expected_lag: int, search: int = 4800) -> float:
    """SI-SDR (dB) of `estimate` against `reference[scored]`, the estimate lagging by `expected_lag` plus up to
    `search` samples more (codecs and jitter buffers add a few milliseconds): the best-matching lag is used."""
    import numpy as np

    target = reference[scored].astype(np.float64)
    start = scored.start + expected_lag
    window = np.pad(estimate[start : start + len(target) + search].astype(np.float64),
                    (0, max(0, start + len(target) + search - len(estimate))))
    size = 1 << (len(window) + len(target)).bit_length()
    correlation = np.fft.irfft(np.fft.rfft(window, size) * np.conj(np.fft.rfft(target, size)), size)[: search + 1]
    lag = int(np.argmax(correlation))
    heard = window[lag : lag + len(target)]
    alpha = np.dot(heard, target) / np.dot(target, target)
    return float(10 * np.log10(np.sum((alpha * target) ** 2) / np.sum((heard - alpha * target) ** 2)))
